//! The launch plan on the emulator: each manifest step resolved once into its kernel entry,
//! launch shape (the manifest's `shared_bytes` as dynamic shared memory) and pointer arguments
//! (a tensor's address, or for a parameter of the step's `tensor_maps` the address of its TMA
//! tensor map in emulated global memory), then run by the emulator.

use dsc_emulator::{LaunchConfig, LaunchOptions, LaunchProfile, Module, ParamValue};
use dsc_kernels::manifest::Manifest;

use super::memory::EmuMemory;
use super::options::EmuOptions;
use crate::error::RuntimeError;
use crate::tensor_maps::{TENSOR_MAP_BYTES, emulator_map};

/// Specs the emulator always runs whole, even when it samples CTAs: the MoE dispatch layout's
/// two launches. Later launches take addresses from the `rows` and `tiles` they write (a gather,
/// an expert's weights), so a sampled grid, leaving parts of them unwritten, would send those
/// launches outside their buffers or skew their work. Their grids are small (at most 128
/// blocks).
pub(crate) const UNSAMPLED_SPECS: &[&str] = &[
    dsc_kernels::ops::moe_dispatch::COUNTS_SPEC,
    dsc_kernels::ops::moe_dispatch::SPEC,
];

/// One step, ready to launch.
#[derive(Debug, Clone)]
pub(crate) struct PreparedStep {
    /// The kernel entry.
    pub entry: String,
    /// The op it computes.
    pub op: String,
    /// Grid, block and dynamic shared memory.
    pub config: LaunchConfig,
    /// Device addresses of the step's tensors (or of their tensor maps), in the entry's
    /// parameter order.
    pub params: Vec<ParamValue>,
    /// How the emulator runs it (CTA sampling applies only to grids larger than the sample).
    pub options: LaunchOptions,
}

/// Resolves every step of `manifest` against the allocated buffers, encoding the steps' TMA
/// tensor maps (the emulator's encoding) into one allocation of emulated global memory, once: a
/// map parameter receives its map's address.
pub(crate) fn prepare(
    manifest: &Manifest,
    memory: &mut EmuMemory,
    options: &EmuOptions,
) -> Result<Vec<PreparedStep>, RuntimeError> {
    // The default reads DSC_EMU_STEP_BUDGET once per session.
    let defaults = LaunchOptions::default();
    let mut maps: Vec<[u8; TENSOR_MAP_BYTES]> = Vec::new();
    // Per step: (parameter, index into `maps`) of each of its tensor maps.
    let mut map_params: Vec<Vec<(usize, usize)>> = Vec::with_capacity(manifest.steps.len());
    let mut steps: Vec<PreparedStep> = manifest
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let pointers = step
                .args
                .iter()
                .map(|name| memory.pointer(name))
                .collect::<Result<Vec<u64>, _>>()?;
            let mut slots = Vec::with_capacity(step.tensor_maps.len());
            for (k, map) in step.tensor_maps.iter().enumerate() {
                let refused = |message: String| RuntimeError::Emulator {
                    step: index,
                    op: step.op.clone(),
                    kernel: step.kernel.clone(),
                    message: format!("tensor_maps[{k}].{message}"),
                };
                let base = *pointers.get(map.param).ok_or_else(|| {
                    refused(format!(
                        "param: {} is not a parameter of the step's {} arguments",
                        map.param,
                        pointers.len()
                    ))
                })?;
                let encoded = emulator_map(map, base).map_err(refused)?;
                slots.push((map.param, maps.len()));
                maps.push(encoded.to_bytes());
            }
            map_params.push(slots);
            let mut config = LaunchConfig::new(step.grid, step.block);
            config.dynamic_shared_bytes = step.shared_bytes;
            let ctas: u64 = step.grid.iter().map(|&d| u64::from(d)).product();
            let whole = manifest
                .kernel(&step.kernel)
                .is_some_and(|kernel| UNSAMPLED_SPECS.contains(&kernel.spec.as_str()));
            Ok(PreparedStep {
                entry: step.kernel.clone(),
                op: step.op.clone(),
                config,
                params: pointers.into_iter().map(ParamValue::U64).collect(),
                options: LaunchOptions {
                    accumulator: options.accumulator,
                    sample_ctas: options
                        .sample_ctas
                        .map(u64::from)
                        .filter(|&n| n < ctas && !whole),
                    ..defaults.clone()
                },
            })
        })
        .collect::<Result<_, RuntimeError>>()?;
    if let Some(table) = memory.store_tensor_maps(&maps)? {
        for (step, slots) in steps.iter_mut().zip(&map_params) {
            for &(param, slot) in slots {
                step.params[param] = ParamValue::U64(table + (slot * TENSOR_MAP_BYTES) as u64);
            }
        }
    }
    Ok(steps)
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
