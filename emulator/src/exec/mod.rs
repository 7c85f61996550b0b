//! The interpreter. (Stub; being written.)

use crate::error::EmuError;
use crate::launch::{LaunchConfig, LaunchOptions, ParamValue};
use crate::memory::GlobalMemory;
use crate::profile::LaunchProfile;
use crate::ptx::{Kernel, Module};

/// Runs every CTA of a launch.
pub(crate) fn run_grid(
    module: &Module,
    kernel: &Kernel,
    memory: &GlobalMemory,
    config: &LaunchConfig,
    params: &[ParamValue],
    options: &LaunchOptions,
) -> Result<LaunchProfile, EmuError> {
    let _ = (module, memory, config, params, options);
    Err(EmuError::NoSuchKernel(kernel.name.clone()))
}
