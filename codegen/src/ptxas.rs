//! Locating and running `ptxas`, NVIDIA's PTX assembler, to check emitted PTX.
//!
//! dsc never needs ptxas to *produce* PTX (MLIR does that), but every PTX module it emits must
//! assemble for its target with no register spills (DESIGN.md §4). ptxas comes from the PyPI
//! package `nvidia-cuda-nvcc-cu12`, installed by `scripts/setup.sh` into the git-ignored
//! `.tools/cuda-nvcc` folder of the workspace; `DSC_PTXAS` overrides the location.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::CodegenError;
use crate::target::Target;

/// The environment variable naming the ptxas binary to use.
const PTXAS_ENV: &str = "DSC_PTXAS";

/// Where `scripts/setup.sh` installs ptxas, relative to the workspace root.
const LOCAL_PTXAS: &str = ".tools/cuda-nvcc/nvidia/cuda_nvcc/bin/ptxas";

/// The workspace root this crate was built in (the parent of `codegen/`).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Finds ptxas: `$DSC_PTXAS` when set (it must exist), else the project-local install.
pub fn locate() -> Result<PathBuf, CodegenError> {
    match std::env::var_os(PTXAS_ENV) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(CodegenError::PtxasNotFound(format!(
                    "{PTXAS_ENV}={} does not exist",
                    path.display()
                )))
            }
        }
        _ => {
            let path = workspace_root().join(LOCAL_PTXAS);
            if path.is_file() {
                Ok(path)
            } else {
                Err(CodegenError::PtxasNotFound(format!(
                    "{PTXAS_ENV} is not set and {} does not exist",
                    path.display()
                )))
            }
        }
    }
}

/// What `ptxas -v` reports about one entry function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionReport {
    /// The entry (or device function) name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of stack frame.
    pub stack_frame_bytes: u64,
    /// Bytes of register spill stores.
    pub spill_store_bytes: u64,
    /// Bytes of register spill loads.
    pub spill_load_bytes: u64,
}

/// The result of assembling one PTX module with `ptxas -v`.
#[derive(Debug, Clone, Default)]
pub struct PtxasReport {
    /// One entry per function ptxas compiled, in its order.
    pub functions: Vec<FunctionReport>,
    /// Performance notes of the `(C7xxx)` kind (e.g. `(C7510)`: wgmma serialized), verbatim.
    pub notes: Vec<String>,
    /// Everything ptxas printed.
    pub output: String,
}

impl PtxasReport {
    /// Parses the output of `ptxas -v`.
    pub fn parse(output: &str) -> PtxasReport {
        let mut report = PtxasReport {
            output: output.to_string(),
            ..PtxasReport::default()
        };
        for line in output.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("ptxas info    : Compiling entry function '") {
                let name = rest.split('\'').next().unwrap_or_default();
                report.functions.push(FunctionReport {
                    name: name.to_string(),
                    ..FunctionReport::default()
                });
            } else if let Some(rest) = line.strip_prefix("ptxas info    : Function properties for ")
            {
                // Device functions get properties without a "Compiling entry function" line.
                let name = rest.trim();
                if report.functions.last().is_none_or(|f| f.name != name) {
                    report.functions.push(FunctionReport {
                        name: name.to_string(),
                        ..FunctionReport::default()
                    });
                }
            } else if line.contains("bytes spill stores")
                && let Some(function) = report.functions.last_mut()
            {
                function.stack_frame_bytes = number_before(line, "bytes stack frame");
                function.spill_store_bytes = number_before(line, "bytes spill stores");
                function.spill_load_bytes = number_before(line, "bytes spill loads");
            } else if line.contains("Used ")
                && line.contains(" registers")
                && let Some(function) = report.functions.last_mut()
            {
                function.registers = number_before(line, "registers") as u32;
            }
            if line.contains("(C7") {
                report.notes.push(line.to_string());
            }
        }
        report
    }

    /// Total bytes of spill stores over every function.
    pub fn spill_store_bytes(&self) -> u64 {
        self.functions.iter().map(|f| f.spill_store_bytes).sum()
    }

    /// Total bytes of spill loads over every function.
    pub fn spill_load_bytes(&self) -> u64 {
        self.functions.iter().map(|f| f.spill_load_bytes).sum()
    }
}

/// The number just before `unit` in `line` (`"… 0 bytes spill stores, …"` → 0); 0 if absent.
fn number_before(line: &str, unit: &str) -> u64 {
    line.find(unit)
        .and_then(|end| line[..end].split_whitespace().next_back())
        .and_then(|word| word.parse().ok())
        .unwrap_or(0)
}

/// Assembles `ptx` for `target` with `ptxas -arch=<chip> -v` and returns what it reported.
/// Fails when ptxas cannot run or rejects the PTX; spills are reported, not rejected.
pub fn assemble(ptxas: &Path, ptx: &str, target: Target) -> Result<PtxasReport, CodegenError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = format!(
        "dsc-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        target.chip()
    );
    let dir = std::env::temp_dir();
    let ptx_path = dir.join(format!("{stem}.ptx"));
    let cubin_path = dir.join(format!("{stem}.cubin"));
    std::fs::write(&ptx_path, ptx).map_err(|source| CodegenError::Io {
        context: format!("writing {}", ptx_path.display()),
        source,
    })?;

    let result = Command::new(ptxas)
        .arg(format!("-arch={}", target.chip()))
        .arg("-v")
        .arg(&ptx_path)
        .arg("-o")
        .arg(&cubin_path)
        .output();
    let _ = std::fs::remove_file(&ptx_path);
    let _ = std::fs::remove_file(&cubin_path);

    let error = |status: Option<i32>, output: String| CodegenError::Ptxas {
        path: ptxas.to_path_buf(),
        arch: target.chip().to_string(),
        status,
        output,
    };
    let output = result.map_err(|e| error(None, e.to_string()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(error(output.status.code(), text));
    }
    Ok(PtxasReport::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'add_f32' for 'sm_90a'
ptxas info    : Function properties for add_f32
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
ptxas info    : (C7510) Potential Performance Loss: wgmma.mma_async instructions are serialized
ptxas info    : Compile time = 10.463 ms
";

    #[test]
    fn parses_verbose_output() {
        let report = PtxasReport::parse(SAMPLE);
        assert_eq!(
            report.functions,
            vec![FunctionReport {
                name: "add_f32".into(),
                registers: 12,
                stack_frame_bytes: 0,
                spill_store_bytes: 8,
                spill_load_bytes: 4,
            }]
        );
        assert_eq!(report.spill_store_bytes(), 8);
        assert_eq!(report.spill_load_bytes(), 4);
        assert_eq!(report.notes.len(), 1);
    }
}
