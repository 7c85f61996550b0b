//! The roofline time model: a [`LaunchProfile`] and a [`DeviceModel`] give a modeled time.
//! (Being written; see docs/emulator.md.)

use serde::Serialize;

use crate::profile::LaunchProfile;

/// Peak rates of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceModel {
    /// Name (`H100 SXM`, …).
    pub name: &'static str,
}

/// What bounds a launch in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Tensor-core throughput.
    TensorCore,
    /// CUDA-core instruction issue.
    Issue,
    /// DRAM bandwidth.
    Dram,
    /// Shared-memory bandwidth.
    SharedMemory,
    /// Launch overhead / latency (tiny launches).
    Latency,
}

/// A modeled time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Modeled {
    /// Modeled seconds.
    pub seconds: f64,
    /// Fraction of the relevant peak (of the bound's resource) achieved.
    pub peak_fraction: f64,
    /// The binding resource.
    pub bound: Bound,
}

/// Models `profile` on `device`.
pub fn model(profile: &LaunchProfile, device: &DeviceModel) -> Modeled {
    let _ = (profile, device);
    Modeled {
        seconds: 0.0,
        peak_fraction: 0.0,
        bound: Bound::Latency,
    }
}
