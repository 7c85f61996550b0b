//! Computes `DSC_CODEGEN_VERSION`: a hash of everything that decides the PTX of a kernel spec —
//! this crate's sources, those of the crates it builds kernels from (`dsc-ir`, `dsc-kernels`),
//! the locked dependency versions (melior, mlir-sys) and the LLVM/MLIR it links. The PTX cache
//! keys every entry with it, so a change to any of them can never reuse a stale entry.

use std::path::{Path, PathBuf};

/// FNV-1a: dsc-kernels' own definition, included as source because a build script cannot use
/// the crates its package depends on (only build-dependencies, and making dsc-kernels one would
/// compile it a second time for every build of codegen).
#[allow(dead_code)]
mod fnv {
    include!("../kernels/src/fnv.rs");
}

use fnv::Fnv1a;
use std::hash::Hasher;

/// Every Rust file under `dir`, sorted, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("..");
    let mut hash = Fnv1a::default();
    let mut inputs = Vec::new();
    for dir in ["codegen/src", "kernels/src", "ir/src"] {
        // A new file is always named by an edit to an existing one (its `mod`), so watching
        // each file is enough; watching the directories would also rerun this on every
        // pending snapshot.
        rust_files(&root.join(dir), &mut inputs);
    }
    // (kernels/src/fnv.rs, included above, is among them.)
    inputs.push(root.join("codegen/Cargo.toml"));
    inputs.push(root.join("Cargo.lock"));
    for path in inputs {
        println!("cargo:rerun-if-changed={}", path.display());
        // Tests do not change the PTX, but hashing them too errs on the safe side.
        if let Ok(bytes) = std::fs::read(&path) {
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            hash.write(relative.to_string_lossy().as_bytes());
            hash.write(&(bytes.len() as u64).to_le_bytes());
            hash.write(&bytes);
        }
    }

    // The LLVM/MLIR melior links, as mlir-sys finds it.
    println!("cargo:rerun-if-env-changed=MLIR_SYS_220_PREFIX");
    let llvm_config = std::env::var("MLIR_SYS_220_PREFIX")
        .map(|prefix| PathBuf::from(prefix).join("bin/llvm-config"))
        .unwrap_or_else(|_| PathBuf::from("llvm-config"));
    let llvm = std::process::Command::new(&llvm_config)
        .args(["--version", "--libdir"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_else(|| "unknown".to_string());
    hash.write(llvm.as_bytes());
    // The NVPTX back end's library itself: a rebuilt LLVM of the same version changes it.
    if let Some(libdir) = llvm.lines().nth(1) {
        for library in ["libLLVMNVPTXCodeGen.a", "libMLIRNVVMTarget.a"] {
            let path = Path::new(libdir).join(library);
            if let Ok(metadata) = std::fs::metadata(&path) {
                println!("cargo:rerun-if-changed={}", path.display());
                hash.write(&metadata.len().to_le_bytes());
                if let Ok(modified) = metadata.modified()
                    && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
                {
                    hash.write(&since.as_nanos().to_le_bytes());
                }
            }
        }
    }
    let version = llvm.lines().next().unwrap_or("unknown").trim().to_string();
    println!(
        "cargo:rustc-env=DSC_CODEGEN_VERSION={:016x}-llvm{version}",
        hash.finish()
    );
}
