//! GPU targets: the chip name MLIR and ptxas take, and the PTX ISA version emitted for it.

use std::fmt;
use std::str::FromStr;

use crate::error::CodegenError;

/// A GPU architecture dsc emits PTX for. PTX for one target does not assemble for the other,
/// so an artifact holds one module per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// Hopper (H100/H200) with the architecture-specific features (`wgmma`, TMA); needs PTX ≥ 8.0.
    #[default]
    Sm90a,
    /// Ada (L4, L40, RTX 40xx): FP8 `mma.sync` needs PTX ≥ 8.4, FP8 `cvt` PTX ≥ 8.1.
    Sm89,
}

impl Target {
    /// Every supported target, the default first.
    pub const ALL: [Target; 2] = [Target::Sm90a, Target::Sm89];

    /// The chip name, as `nvvm-attach-target{chip=…}` and `ptxas -arch=…` spell it.
    pub fn chip(self) -> &'static str {
        match self {
            Target::Sm90a => "sm_90a",
            Target::Sm89 => "sm_89",
        }
    }

    /// The LLVM NVPTX target features: the PTX ISA version to emit (`.version 8.4`).
    pub fn features(self) -> &'static str {
        "+ptx84"
    }

    /// The compute capability a device must report to run this target's code.
    pub fn compute_capability(self) -> (u32, u32) {
        match self {
            Target::Sm90a => (9, 0),
            Target::Sm89 => (8, 9),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.chip())
    }
}

impl FromStr for Target {
    type Err = CodegenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|target| target.chip() == s)
            .ok_or_else(|| CodegenError::UnknownTarget(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_target() {
        for target in Target::ALL {
            assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
        }
        assert_eq!(Target::default(), Target::Sm90a);
    }

    #[test]
    fn the_manifest_schema_lists_the_same_targets() {
        // The runtime refuses a manifest whose target is not in this list.
        assert_eq!(
            Target::ALL.map(Target::chip),
            dsc_kernels::manifest::TARGETS
        );
    }

    #[test]
    fn rejects_unknown_targets() {
        let error = "sm_80".parse::<Target>().unwrap_err();
        assert!(matches!(error, CodegenError::UnknownTarget(ref name) if name == "sm_80"));
        assert!(error.to_string().contains("sm_90a, sm_89"));
    }
}
