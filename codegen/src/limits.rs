//! What the driver refuses at launch, checked when the artifact is generated, so that
//! `dsc compile` fails naming the op and the limit instead of writing an artifact that cannot
//! run: the static shared memory a kernel declares, static plus dynamic shared memory against
//! what the target lets a kernel opt into, threads per block, and grid dimensions
//! (a grid too large for `Launch::blocks` saturates at `u32::MAX`, which no target allows).
//! Both targets (sm_90a, sm_89) have the same limits for these, but for the opt-in shared memory.

use std::collections::HashMap;

use dsc_kernels::manifest::Manifest;

use crate::Target;
use crate::error::CodegenError;

/// Static (`.shared` declared in the kernel) shared memory per block: 48 KiB; more needs
/// dynamic shared memory and an opt-in attribute.
const STATIC_SHARED_BYTES: u64 = 48 * 1024;

/// Shared memory per block, static plus dynamic, that a kernel may opt into
/// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`): 227 KiB on sm_90a, 99 KiB on sm_89.
fn opt_in_shared_bytes(target: Target) -> u64 {
    match target {
        Target::Sm90a => 227 * 1024,
        Target::Sm89 => 99 * 1024,
    }
}

use dsc_kernels::manifest::launch_limits::{MAX_GRID, MAX_THREADS_PER_BLOCK};

/// Bytes of static shared memory each entry of `ptx` declares (`.shared` variables in its
/// body, each at its alignment).
fn static_shared_bytes(ptx: &str) -> HashMap<String, u64> {
    let mut bytes: HashMap<String, u64> = HashMap::new();
    let mut entry: Option<String> = None;
    for line in ptx.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix(".visible .entry ")
            .or_else(|| line.strip_prefix(".entry "))
        {
            let name = rest.split('(').next().unwrap_or(rest).trim().to_string();
            bytes.entry(name.clone()).or_default();
            entry = Some(name);
            continue;
        }
        let (Some(name), Some(decl)) = (&entry, line.strip_prefix(".shared ")) else {
            continue;
        };
        let align = decl
            .split_whitespace()
            .skip_while(|w| *w != ".align")
            .nth(1)
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        let size = decl
            .rsplit_once('[')
            .and_then(|(_, n)| n.split(']').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let total = bytes.entry(name.clone()).or_default();
        *total = total.next_multiple_of(align) + size;
    }
    bytes
}

/// Checks every launch step of `manifest` (whose kernels are in `ptx`) against `target`'s
/// limits; the error names the op, its kernel and the limit.
pub fn check(manifest: &Manifest, ptx: &str, target: Target) -> Result<(), CodegenError> {
    let shared = static_shared_bytes(ptx);
    for step in &manifest.steps {
        let fail = |message: String| CodegenError::Resources {
            op: step.op.clone(),
            kernel: step.kernel.clone(),
            message,
        };
        let bytes = shared.get(&step.kernel).copied().unwrap_or(0);
        if bytes > STATIC_SHARED_BYTES {
            return Err(fail(format!(
                "needs {bytes} bytes of static shared memory per block; {target} allows {} \
                 ({} KiB) without dynamic shared memory, which this kernel does not use",
                STATIC_SHARED_BYTES,
                STATIC_SHARED_BYTES / 1024
            )));
        }
        let total = bytes + u64::from(step.shared_bytes);
        if total > opt_in_shared_bytes(target) {
            return Err(fail(format!(
                "needs {total} bytes of shared memory per block ({bytes} static, {} dynamic); \
                 {target} allows {} ({} KiB)",
                step.shared_bytes,
                opt_in_shared_bytes(target),
                opt_in_shared_bytes(target) / 1024
            )));
        }
        let threads: u64 = step.block.iter().map(|&d| u64::from(d)).product();
        if threads > MAX_THREADS_PER_BLOCK {
            return Err(fail(format!(
                "block {:?} has {threads} threads; {target} allows {MAX_THREADS_PER_BLOCK}",
                step.block
            )));
        }
        for (i, (&blocks, &max)) in step.grid.iter().zip(&MAX_GRID).enumerate() {
            if u64::from(blocks) > max {
                return Err(fail(format!(
                    "needs {} blocks along grid dimension {}; {target} allows {max}",
                    if blocks == u32::MAX {
                        "more than 4294967294".to_string()
                    } else {
                        blocks.to_string()
                    },
                    ["x", "y", "z"][i]
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_declarations_are_summed_per_entry_at_their_alignment() {
        let ptx = ".version 8.4\n.target sm_90a\n\n.visible .entry a(\n\t.param .u64 x\n)\n{\n\
                   \t.shared .align 4 .b8 __wg_a_0[6];\n\t.shared .align 16 .b8 __wg_a_1[2048];\n\
                   \tret;\n}\n.visible .entry b(\n)\n{\n\tret;\n}\n";
        let bytes = static_shared_bytes(ptx);
        assert_eq!(bytes["a"], 16 + 2048);
        assert_eq!(bytes["b"], 0);
    }

    #[test]
    fn dynamic_shared_memory_is_checked_against_each_targets_opt_in_limit() {
        use dsc_kernels::manifest::{ArenaInfo, LaunchStep};
        let manifest = |shared_bytes: u32| Manifest {
            schema_version: 1,
            model: "m".into(),
            target: "sm_90a".into(),
            tensors: Vec::new(),
            arena: ArenaInfo {
                bytes: 0,
                no_reuse_bytes: 0,
                alignment: 256,
            },
            kernels: Vec::new(),
            steps: vec![LaunchStep {
                op: "up".into(),
                kernel: "k".into(),
                grid: [1, 1, 1],
                block: [384, 1, 1],
                shared_bytes,
                args: Vec::new(),
                flops: 0,
                bytes: 0,
                tensor_maps: Vec::new(),
            }],
        };
        let ptx = ".visible .entry k(\n)\n{\n\t.shared .align 16 .b8 s[1024];\n\tret;\n}\n";
        // 150 KiB fit Hopper's 227 KiB but not Ada's 99 KiB.
        check(&manifest(150 * 1024), ptx, Target::Sm90a).unwrap();
        let error = check(&manifest(150 * 1024), ptx, Target::Sm89)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "op `up` (kernel `k`): needs 154624 bytes of shared memory per block (1024 static, \
             153600 dynamic); sm_89 allows 101376 (99 KiB)"
        );
        let error = check(&manifest(227 * 1024), ptx, Target::Sm90a)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sm_90a allows 232448 (227 KiB)"), "{error}");
    }
}
