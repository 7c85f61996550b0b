//! The launch plan on the emulator: each manifest step resolved once into its kernel entry,
//! launch shape (the manifest's `shared_bytes` as dynamic shared memory) and pointer arguments,
//! then run by the emulator.

use dsc_emulator::{LaunchConfig, LaunchOptions, LaunchProfile, Module, ParamValue};
use dsc_kernels::manifest::Manifest;

use super::memory::EmuMemory;
use super::options::EmuOptions;
use crate::error::RuntimeError;

/// One step, ready to launch.
#[derive(Debug, Clone)]
pub(crate) struct PreparedStep {
    /// The kernel entry.
    pub entry: String,
    /// The op it computes.
    pub op: String,
    /// Grid, block and dynamic shared memory.
    pub config: LaunchConfig,
    /// Device addresses of the step's tensors, in the entry's parameter order.
    pub params: Vec<ParamValue>,
    /// How the emulator runs it (CTA sampling applies only to grids larger than the sample).
    pub options: LaunchOptions,
}

/// Resolves every step of `manifest` against the allocated buffers.
pub(crate) fn prepare(
    manifest: &Manifest,
    memory: &EmuMemory,
    options: &EmuOptions,
) -> Result<Vec<PreparedStep>, RuntimeError> {
    // The default reads DSC_EMU_STEP_BUDGET once per session.
    let defaults = LaunchOptions::default();
    manifest
        .steps
        .iter()
        .map(|step| {
            let params = step
                .args
                .iter()
                .map(|name| memory.pointer(name).map(ParamValue::U64))
                .collect::<Result<_, _>>()?;
            let mut config = LaunchConfig::new(step.grid, step.block);
            config.dynamic_shared_bytes = step.shared_bytes;
            let ctas: u64 = step.grid.iter().map(|&d| u64::from(d)).product();
            Ok(PreparedStep {
                entry: step.kernel.clone(),
                op: step.op.clone(),
                config,
                params,
                options: LaunchOptions {
                    accumulator: options.accumulator,
                    sample_ctas: options.sample_ctas.map(u64::from).filter(|&n| n < ctas),
                    ..defaults.clone()
                },
            })
        })
        .collect()
}

/// Runs step `index` on the emulator; an error names the step, its op and kernel.
pub(crate) fn launch(
    module: &Module,
    memory: &EmuMemory,
    index: usize,
    step: &PreparedStep,
) -> Result<LaunchProfile, RuntimeError> {
    dsc_emulator::launch(
        module,
        &step.entry,
        memory.global(),
        &step.config,
        &step.params,
        &step.options,
    )
    .map_err(|e| RuntimeError::Emulator {
        step: index,
        op: step.op.clone(),
        kernel: step.entry.clone(),
        message: e.to_string(),
    })
}
