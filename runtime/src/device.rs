//! Which device a session runs on, and why: the request (`auto`, `cpu`, `emu`, `cuda:N`) and
//! the resolved choice with its reason, so `dsc run --device auto` can say what it picked.

use std::fmt;

use crate::artifact::Artifact;
use crate::cuda::{DeviceInfo, check_target, probe};
use crate::emu::EmulatorInfo;
use crate::error::RuntimeError;

/// The device a session is asked to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA device 0 when a driver and a GPU able to run the artifact are present, else the CPU.
    #[default]
    Auto,
    /// The CPU backend (the kernels' reference implementations).
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
    /// The PTX emulator (the artifact's own PTX and launch plan on the CPU, times modeled).
    /// [`Device::Auto`] never picks it: it is for checking and modeling, not for speed.
    Emulator,
}

/// The device a session resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// The CPU backend.
    Cpu,
    /// A CUDA device.
    Cuda(DeviceInfo),
    /// The PTX emulator.
    Emulator(EmulatorInfo),
}

/// The resolved device and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    /// Where the session runs.
    pub device: ResolvedDevice,
    /// Why: the request, and for `auto` what was found.
    pub reason: String,
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.device {
            ResolvedDevice::Cpu => write!(f, "cpu ({})", self.reason),
            ResolvedDevice::Cuda(info) => write!(f, "{info} ({})", self.reason),
            ResolvedDevice::Emulator(info) => write!(f, "{info} ({})", self.reason),
        }
    }
}

impl DeviceChoice {
    /// A short name: `cpu`, `emu` or `cuda:N`.
    pub fn short_name(&self) -> String {
        match &self.device {
            ResolvedDevice::Cpu => "cpu".to_string(),
            ResolvedDevice::Emulator(_) => "emu".to_string(),
            ResolvedDevice::Cuda(info) => format!("cuda:{}", info.ordinal),
        }
    }
}

/// Resolves `request` for `artifact`. `Cuda(n)` fails with the reason it cannot run (no driver,
/// no such device, a GPU older than the target, no launch plan); `Auto` falls back to the CPU
/// with that reason (never to the emulator). `Emulator` needs a launch plan.
pub fn choose_device(artifact: &Artifact, request: Device) -> Result<DeviceChoice, RuntimeError> {
    match request {
        Device::Cpu => Ok(DeviceChoice {
            device: ResolvedDevice::Cpu,
            reason: "requested".to_string(),
        }),
        Device::Emulator => {
            require_launch_plan(artifact)?;
            Ok(DeviceChoice {
                device: ResolvedDevice::Emulator(EmulatorInfo::for_target(
                    &artifact.manifest.target,
                )),
                reason: "requested".to_string(),
            })
        }
        Device::Cuda(ordinal) => cuda_device(artifact, ordinal).map(|info| DeviceChoice {
            device: ResolvedDevice::Cuda(info),
            reason: "requested".to_string(),
        }),
        Device::Auto => Ok(match cuda_device(artifact, 0) {
            Ok(info) => DeviceChoice {
                device: ResolvedDevice::Cuda(info),
                reason: "auto: a CUDA driver and a GPU able to run the artifact".to_string(),
            },
            Err(why) => DeviceChoice {
                device: ResolvedDevice::Cpu,
                reason: format!("auto: {why}"),
            },
        }),
    }
}

/// CUDA device `ordinal`, if it exists and can run the artifact's kernels.
fn cuda_device(artifact: &Artifact, ordinal: usize) -> Result<DeviceInfo, RuntimeError> {
    let devices = probe()?;
    let info = devices
        .get(ordinal)
        .cloned()
        .ok_or(RuntimeError::NoSuchDevice {
            ordinal,
            count: devices.len(),
        })?;
    check_target(&artifact.manifest.target, &info)?;
    require_launch_plan(artifact)?;
    Ok(info)
}

/// Ok when the artifact's manifest has launch steps (the CUDA and emulator backends run them).
pub(crate) fn require_launch_plan(artifact: &Artifact) -> Result<(), RuntimeError> {
    artifact.require_launch_plan()
}
