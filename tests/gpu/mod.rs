//! GPU tests: every launch step of compiled models against the CPU reference of its op, and
//! whole models against the CPU backend (DESIGN.md §7).
//!
//! They run where a CUDA driver and a GPU able to run the artifact are present. Elsewhere each
//! prints `SKIPPED: <test>: <why>` to stderr and returns (shown with
//! `cargo nextest run -p dsc gpu --success-output immediate` or `cargo test gpu -- --nocapture`).
//! With `DSC_GPU_TESTS=1` a missing GPU is a failure instead, so a GPU CI job cannot pass by
//! skipping.

mod models;
mod steps;
pub mod tolerance;

use crate::support::{TempDir, dsc, streams};
use dsc_runtime::cuda::{DeviceInfo, check_target, probe};
use dsc_runtime::{Artifact, RuntimeError};

/// True when `DSC_GPU_TESTS=1`: GPU tests must run.
fn required() -> bool {
    std::env::var("DSC_GPU_TESTS").is_ok_and(|v| v == "1")
}

/// Skips (prints why and returns `None`) or, under `DSC_GPU_TESTS=1`, fails.
fn skip<T>(test: &str, why: &str) -> Option<T> {
    assert!(!required(), "DSC_GPU_TESTS=1 but {test} cannot run: {why}");
    eprintln!("SKIPPED: {test}: {why} (set DSC_GPU_TESTS=1 to make this a failure)");
    None
}

/// CUDA device 0, or `None` after saying why there is none.
pub fn gpu_or_skip(test: &str) -> Option<DeviceInfo> {
    match probe() {
        Ok(devices) => devices.into_iter().next(),
        Err(RuntimeError::NoDriver) => skip(test, "no CUDA driver"),
        Err(error) => skip(test, &error.to_string()),
    }
}

/// Compiles `model` (a path under the workspace root) for `device`'s target into `tmp` and
/// loads it, or `None` after saying why it cannot run there (a GPU older than sm_89).
pub fn compiled_for(
    test: &str,
    tmp: &TempDir,
    model: &str,
    device: &DeviceInfo,
) -> Option<Artifact> {
    let dir = tmp.join("artifact");
    // Hopper gets its own target; Ada and anything newer the portable sm_89 module.
    let target = if device.compute_capability == (9, 0) {
        "sm_90a"
    } else {
        "sm_89"
    };
    let out = dsc(&[
        "compile",
        model,
        "--target",
        target,
        "-o",
        &dir.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{model}: {}", streams(&out).1);
    let artifact = Artifact::load(&dir).unwrap_or_else(|e| panic!("{model}: {e}"));
    assert!(
        artifact.has_launch_plan(),
        "{model}: the manifest has no launch steps"
    );
    if let Err(error) = check_target(&artifact.manifest.target, device) {
        return skip(test, &error.to_string());
    }
    Some(artifact)
}
