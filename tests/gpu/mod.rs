//! GPU tests: every launch step of compiled models against the CPU reference of its op, and
//! whole models against the CPU backend (DESIGN.md §7), for both targets (`sm_90a`, `sm_89`).
//!
//! Every test runs on the PTX emulator (`--device emu`: the artifact's own PTX and launch plan
//! on the CPU) in every test run, no GPU needed; and also on CUDA device 0 where a driver and a
//! GPU able to run the target are present. Where CUDA cannot run a target the test prints
//! `SKIPPED: <test> on cuda (<target>): <why>` to stderr (shown with
//! `cargo nextest run -p dsc gpu --success-output immediate` or `cargo test gpu -- --nocapture`).
//! With `DSC_GPU_TESTS=1` a test that ran on no GPU at all fails instead, so a GPU CI job cannot
//! pass by skipping.

mod elementwise;
mod flash_attention;
mod fp8_gemm_profile;
mod fp8_gemm_scale_layouts;
mod fp8_gemm_sm89_profile;
mod in_place_rows;
mod kernel_run;
mod models;
mod moe_routing;
mod residual_norm;
mod steps;
mod training_kernels;
mod training_steps;

use std::fmt;

use crate::support::{TempDir, dsc, streams};
use dsc_runtime::cuda::{DeviceInfo, check_target, probe};
use dsc_runtime::{Artifact, Device, RuntimeError};

/// The targets every GPU test compiles for.
pub const TARGETS: [&str; 2] = ["sm_90a", "sm_89"];

/// True when `DSC_GPU_TESTS=1`: GPU tests must run on a GPU.
fn required() -> bool {
    std::env::var("DSC_GPU_TESTS").is_ok_and(|v| v == "1")
}

/// Where one comparison runs.
#[derive(Debug, Clone)]
pub enum On {
    /// The PTX emulator.
    Emulator,
    /// A CUDA device.
    Cuda(DeviceInfo),
}

impl On {
    /// The session device.
    pub fn device(&self) -> Device {
        match self {
            On::Emulator => Device::Emulator,
            On::Cuda(info) => Device::Cuda(info.ordinal),
        }
    }
}

impl fmt::Display for On {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            On::Emulator => f.write_str("emu"),
            On::Cuda(info) => write!(f, "{info}"),
        }
    }
}

/// CUDA device 0 as found once per test, and whether any comparison ran on it.
pub struct Gpu {
    device: Result<DeviceInfo, String>,
    ran: bool,
}

impl Gpu {
    /// Probes for CUDA device 0.
    pub fn probe() -> Gpu {
        let device = match probe() {
            Ok(devices) => devices
                .into_iter()
                .next()
                .ok_or_else(|| "the driver reports no device".to_string()),
            Err(RuntimeError::NoDriver) => Err("no CUDA driver".to_string()),
            Err(error) => Err(error.to_string()),
        };
        Gpu { device, ran: false }
    }

    /// Where `artifact` runs in `test`: the emulator always, then the GPU when it can run the
    /// artifact's target (else a `SKIPPED` line says why).
    pub fn backends(&mut self, test: &str, artifact: &Artifact) -> Vec<On> {
        let target = &artifact.manifest.target;
        let mut on = vec![On::Emulator];
        let why = match &self.device {
            Ok(info) => match check_target(target, info) {
                Ok(()) => {
                    self.ran = true;
                    on.push(On::Cuda(info.clone()));
                    return on;
                }
                Err(error) => error.to_string(),
            },
            Err(why) => why.clone(),
        };
        eprintln!(
            "SKIPPED: {test} on cuda ({target}): {why} (it ran on the emulator; set \
             DSC_GPU_TESTS=1 to require a GPU)"
        );
        on
    }

    /// Fails under `DSC_GPU_TESTS=1` when no comparison of `test` ran on a GPU.
    pub fn finish(&self, test: &str) {
        if required() && !self.ran {
            let why = match &self.device {
                Ok(info) => format!("{info} runs none of the targets {TARGETS:?}"),
                Err(why) => why.clone(),
            };
            panic!("DSC_GPU_TESTS=1 but {test} ran on no GPU: {why}");
        }
    }
}

/// Compiles `model` (a path under the workspace root) for `target` into `tmp` and loads it.
pub fn compiled(tmp: &TempDir, model: &str, target: &str) -> Artifact {
    let dir = tmp.join(target);
    let out = dsc(&[
        "compile",
        model,
        "--target",
        target,
        "-o",
        &dir.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{model} ({target}): {}",
        streams(&out).1
    );
    let artifact = Artifact::load(&dir).unwrap_or_else(|e| panic!("{model} ({target}): {e}"));
    assert!(
        artifact.has_launch_plan(),
        "{model} ({target}): the manifest has no launch steps"
    );
    artifact
}
