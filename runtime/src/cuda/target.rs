//! Whether a GPU can run PTX built for an artifact's target (DESIGN.md §4): `sm_90a` uses
//! Hopper-only instructions (wgmma, TMA) and runs on compute capability 9.0 exactly; `sm_89`
//! (Ada FP8 `mma.sync`) runs on 8.9 and newer. FP8 needs 8.9 at least, whatever the target.

use super::probe::DeviceInfo;
use crate::error::RuntimeError;

/// The compute capabilities a target runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Requirement {
    /// The target's own compute capability.
    capability: (u32, u32),
    /// `sm_XYa`: arch-specific features, that capability exactly.
    exact: bool,
}

impl Requirement {
    /// The requirement of `target` (`sm_XY` or `sm_XYa`), or why there is none.
    fn of(target: &str) -> Result<Requirement, String> {
        let unknown = || format!("unknown target `{target}` (expected sm_XY or sm_XYa)");
        let digits = target.strip_prefix("sm_").ok_or_else(unknown)?;
        let (digits, exact) = match digits.strip_suffix('a') {
            Some(d) => (d, true),
            None => (digits, false),
        };
        let number: u32 = digits.parse().map_err(|_| unknown())?;
        let capability = (number / 10, number % 10);
        // FP8 tensor-core instructions and `cvt` to e4m3 exist from sm_89 on.
        if capability < (8, 9) {
            return Err(format!(
                "target `{target}` predates FP8 (compute capability 8.9, Ada, or newer)"
            ));
        }
        Ok(Requirement { capability, exact })
    }

    fn admits(self, cc: (u32, u32)) -> bool {
        if self.exact {
            cc == self.capability
        } else {
            cc >= self.capability
        }
    }

    fn describe(self) -> String {
        let (major, minor) = self.capability;
        if self.exact {
            format!("compute capability exactly {major}.{minor}")
        } else {
            format!("compute capability {major}.{minor} or newer")
        }
    }
}

/// Ok when `device` can run PTX built for `target`; else why not.
pub fn check_target(target: &str, device: &DeviceInfo) -> Result<(), RuntimeError> {
    let mismatch = |need: String| RuntimeError::TargetMismatch {
        device: device.to_string(),
        target: target.to_string(),
        need,
    };
    let requirement = Requirement::of(target).map_err(mismatch)?;
    if requirement.admits(device.compute_capability) {
        Ok(())
    } else {
        Err(mismatch(format!("it needs {}", requirement.describe())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(major: u32, minor: u32) -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: "GPU".into(),
            compute_capability: (major, minor),
            total_memory_bytes: 1 << 30,
        }
    }

    #[test]
    fn hopper_targets_need_exactly_hopper() {
        assert!(check_target("sm_90a", &gpu(9, 0)).is_ok());
        let e = check_target("sm_90a", &gpu(8, 9)).unwrap_err().to_string();
        assert!(
            e.contains("cannot run kernels built for sm_90a")
                && e.contains("exactly 9.0")
                && e.contains("compute capability 8.9"),
            "{e}"
        );
        // wgmma PTX for sm_90a does not run on Blackwell either.
        let e = check_target("sm_90a", &gpu(10, 0)).unwrap_err().to_string();
        assert!(
            e.contains("exactly 9.0") && e.contains("compute capability 10.0"),
            "{e}"
        );
    }

    #[test]
    fn ada_targets_run_on_ada_and_newer() {
        assert!(check_target("sm_89", &gpu(8, 9)).is_ok());
        assert!(check_target("sm_89", &gpu(9, 0)).is_ok());
        let e = check_target("sm_89", &gpu(8, 0)).unwrap_err().to_string();
        assert!(e.contains("8.9 or newer"), "{e}");
    }

    #[test]
    fn pre_fp8_and_unknown_targets_are_refused() {
        let e = check_target("sm_80", &gpu(9, 0)).unwrap_err().to_string();
        assert!(e.contains("predates FP8"), "{e}");
        let e = check_target("gfx90a", &gpu(9, 0)).unwrap_err().to_string();
        assert!(e.contains("unknown target `gfx90a`"), "{e}");
    }
}
