//! Which GPU the emulator's roofline models for an artifact, and a launch's profile as a
//! [`ModeledTiming`]. The one place that picks a `DeviceModel`.

use std::fmt;

use dsc_emulator::LaunchProfile;
use dsc_emulator::roofline::{self, DeviceModel};

use crate::backend::ModeledTiming;

/// The GPU whose peaks model the steps of an artifact built for `target`: Hopper (H100 SXM)
/// for `sm_90a`, Ada (L40S) otherwise.
pub(crate) fn device_model(target: &str) -> DeviceModel {
    if target.starts_with("sm_90") {
        DeviceModel::h100_sxm()
    } else {
        DeviceModel::l40s()
    }
}

/// The modeled time of one launch on `device`; `unique_bytes` (the step's operands, each read or
/// written once: the manifest's `bytes`) is its DRAM traffic when known, as with perfect L2
/// reuse: the same assumption `dsc emulate` and the DeepGEMM calibration make.
pub(crate) fn modeled(
    profile: &LaunchProfile,
    device: &DeviceModel,
    unique_bytes: Option<u64>,
) -> ModeledTiming {
    let options = roofline::ModelOptions {
        dram_bytes: unique_bytes.filter(|&b| b > 0),
        ..roofline::ModelOptions::default()
    };
    let m = roofline::model_with(profile, device, options);
    // The bound's name as the emulator serializes it (`tensor_core`, `dram`, …), so that new
    // bounds need no change here.
    let bound = serde_json::to_value(m.bound)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", m.bound));
    ModeledTiming {
        seconds: m.seconds,
        serial_seconds: m.serial_seconds,
        peak_fraction: m.peak_fraction,
        bound,
        device: device.name.to_string(),
    }
}

/// What `--device emu` resolved to: the PTX emulator for the artifact's target, with times
/// modeled on a GPU of that target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorInfo {
    /// The artifact's target (`sm_90a`, `sm_89`).
    pub target: String,
    /// The GPU the roofline models (`H100 SXM`, `L40S`).
    pub model: String,
}

impl EmulatorInfo {
    /// The emulator for an artifact built for `target`.
    pub fn for_target(target: &str) -> EmulatorInfo {
        EmulatorInfo {
            target: target.to_string(),
            model: device_model(target).name.to_string(),
        }
    }
}

impl fmt::Display for EmulatorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "emu: PTX emulator for {}, times modeled on {}",
            self.target, self.model
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_is_modeled_on_a_gpu_of_its_architecture() {
        assert_eq!(
            EmulatorInfo::for_target("sm_90a").to_string(),
            "emu: PTX emulator for sm_90a, times modeled on H100 SXM"
        );
        assert_eq!(EmulatorInfo::for_target("sm_89").model, "L40S");
    }

    #[test]
    fn a_profile_becomes_a_modeled_timing_with_a_named_bound() {
        let t = modeled(&LaunchProfile::default(), &device_model("sm_90a"), None);
        assert_eq!(t.device, "H100 SXM");
        assert!(t.seconds >= 0.0 && t.peak_fraction >= 0.0);
        assert!(
            t.bound.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{}",
            t.bound
        );
    }
}
