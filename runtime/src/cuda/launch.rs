//! The launch plan on the device: each manifest step resolved once into its kernel, launch
//! shape and pointer arguments, then launched on the session's stream.

use std::sync::Arc;

use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};
use dsc_kernels::manifest::Manifest;

use super::memory::DeviceMemory;
use super::module::KernelModule;
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
    pub args: Vec<u64>,
}

/// Resolves every step of `manifest` against the allocated buffers.
pub(crate) fn prepare(
    manifest: &Manifest,
    memory: &DeviceMemory,
    stream: &CudaStream,
) -> Result<Vec<PreparedStep>, RuntimeError> {
    manifest
        .steps
        .iter()
        .map(|step| {
            let args = step
                .args
                .iter()
                .map(|name| memory.pointer(stream, name))
                .collect::<Result<_, _>>()?;
            Ok(PreparedStep {
                entry: step.kernel.clone(),
                op: step.op.clone(),
                config: LaunchConfig {
                    grid_dim: (step.grid[0], step.grid[1], step.grid[2]),
                    block_dim: (step.block[0], step.block[1], step.block[2]),
                    shared_mem_bytes: step.shared_bytes,
                },
                args,
            })
        })
        .collect()
}

/// Launches step `index` on `stream` (asynchronously).
pub(crate) fn launch(
    stream: &Arc<CudaStream>,
    module: &KernelModule,
    index: usize,
    step: &PreparedStep,
) -> Result<(), RuntimeError> {
    let failed = |message: String| RuntimeError::Driver {
        call: "cuLaunchKernel",
        message: format!(
            "kernel `{}` (step {index}, op `{}`): {message}",
            step.entry, step.op
        ),
    };
    let function = module
        .function(&step.entry)
        .ok_or_else(|| failed("not loaded".to_string()))?;
    let mut builder = stream.launch_builder(function);
    for arg in &step.args {
        builder.arg(arg);
    }
    // SAFETY: the artifact's checks guarantee that the entry takes exactly one pointer
    // parameter per argument (kernels are specialized to static shapes and take only buffer
    // pointers), and that every argument is the address of a tensor of the manifest's size
    // inside a buffer allocated for it; the buffers belong to the backend and outlive the
    // launch (it synchronizes before reading results or dropping them).
    unsafe { builder.launch(step.config) }
        .map(|_| ())
        .map_err(|e| failed(e.to_string()))
}
