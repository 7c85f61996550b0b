//! The embedded API: a [`Session`] runs one loaded [`Artifact`] on one device.
//!
//! ```no_run
//! use dsc_runtime::{Artifact, Device, Session};
//! use dsc_runtime::inputs::random_inputs;
//!
//! let artifact = Artifact::load("build/tiny-moe")?;
//! let mut session = Session::new(&artifact, Device::Auto)?;
//! println!("device: {}", session.device());
//! session.load_random_weights(0)?;
//! let outputs = session.run(&random_inputs(&artifact.graph, 0))?;
//! for (name, tensor) in &outputs {
//!     println!("{name}: {}{:?}", tensor.dtype, tensor.shape);
//! }
//! for step in session.timings() {
//!     println!("{} {} {:.3} ms", step.op, step.kernel, step.seconds * 1e3);
//! }
//! # Ok::<(), dsc_runtime::RuntimeError>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::artifact::Artifact;
use crate::backend::{Backend, StepTiming};
use crate::checkpoint::Checkpoint;
use crate::cpu::{CpuBackend, CpuOptions};
use crate::cuda::CudaBackend;
use crate::device::{Device, DeviceChoice, ResolvedDevice, choose_device};
use crate::emu::{EmuBackend, EmuOptions};
use crate::error::RuntimeError;
use crate::host_memory::{MemoryNeed, available_bytes};
use crate::inputs::{check_given_inputs, check_inputs};
use crate::random_weights::random_weights;
use crate::tensor::HostTensor;
use crate::weights::{Weights, load_weights};

/// Options of a session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    /// Options of the CPU backend (its accumulator model); unused elsewhere.
    pub cpu: CpuOptions,
    /// Options of the emulator backend (its tensor cores' accumulator model, CTA sampling);
    /// unused elsewhere. [`SessionOptions::with_accumulator`] sets both accumulators.
    pub emulator: EmuOptions,
}

impl SessionOptions {
    /// The same options with `accumulator` as the accumulator model of the CPU reference and
    /// of the emulator's tensor cores (CUDA's tensor cores have their own).
    pub fn with_accumulator(mut self, accumulator: dsc_kernels::Accumulator) -> Self {
        self.cpu.accumulator = accumulator;
        self.emulator.accumulator = accumulator;
        self
    }
}

/// One artifact on one device, with its weights: run it as often as needed. On CUDA the module,
/// the weights, the arena and the input buffers live on the device for the session's life, so
/// repeated runs allocate no device memory.
pub struct Session<'a> {
    artifact: &'a Artifact,
    device: DeviceChoice,
    backend: Box<dyn Backend + 'a>,
    timings: Vec<StepTiming>,
}

impl<'a> Session<'a> {
    /// A session for `artifact` on `device`, with default options.
    pub fn new(artifact: &'a Artifact, device: Device) -> Result<Self, RuntimeError> {
        Self::with_options(artifact, device, SessionOptions::default())
    }

    /// A session for `artifact` on `device`. On CUDA and on the emulator this loads the PTX
    /// and allocates every device buffer; errors say why the device cannot run the artifact.
    pub fn with_options(
        artifact: &'a Artifact,
        device: Device,
        options: SessionOptions,
    ) -> Result<Self, RuntimeError> {
        let device = choose_device(artifact, device)?;
        // Host memory is checked before the backend allocates any (CUDA checks its own).
        let host_need = match &device.device {
            ResolvedDevice::Cpu => Some(MemoryNeed::cpu(&artifact.graph)),
            ResolvedDevice::Emulator(_) => {
                Some(MemoryNeed::emulator(&artifact.graph, &artifact.manifest))
            }
            ResolvedDevice::Cuda(_) => None,
        };
        if let Some(need) = host_need {
            need.check(&device.short_name(), available_bytes())?;
        }
        if !matches!(device.device, ResolvedDevice::Cpu) && !options.emulator.accumulator.promotes()
        {
            return Err(RuntimeError::UnpromotedOnGpu {
                device: device.short_name(),
            });
        }
        let backend: Box<dyn Backend + 'a> = match &device.device {
            ResolvedDevice::Cpu => Box::new(CpuBackend::new(&artifact.graph, options.cpu)),
            ResolvedDevice::Cuda(info) => Box::new(CudaBackend::new(artifact, info)?),
            ResolvedDevice::Emulator(_) => Box::new(EmuBackend::new(artifact, options.emulator)?),
        };
        Ok(Session {
            artifact,
            device,
            backend,
            timings: Vec::new(),
        })
    }

    /// The device the session runs on, and why it was chosen.
    pub fn device(&self) -> &DeviceChoice {
        &self.device
    }

    /// The artifact.
    pub fn artifact(&self) -> &Artifact {
        self.artifact
    }

    /// Loads weights from a `.safetensors` file or a Hugging Face checkpoint directory;
    /// BF16/F32 weights are quantized on load where the graph wants FP8.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<(), RuntimeError> {
        self.load_checkpoint(&Checkpoint::open(path)?)
    }

    /// Loads weights from an opened checkpoint, as [`Session::load_weights`] does.
    pub fn load_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), RuntimeError> {
        let weights = load_weights(&self.artifact.graph, checkpoint)?;
        self.backend.set_weights(weights)
    }

    /// Deterministic random weights from `seed` (see [`crate::random_weights`]).
    pub fn load_random_weights(&mut self, seed: u64) -> Result<(), RuntimeError> {
        let weights = random_weights(&self.artifact.graph, seed)?;
        self.backend.set_weights(weights)
    }

    /// Weights already in memory; every parameter of the graph must be present and fit.
    pub fn set_weights(&mut self, weights: Weights) -> Result<(), RuntimeError> {
        weights.check(&self.artifact.graph)?;
        self.backend.set_weights(weights)
    }

    /// Runs one forward pass. `inputs` must name every graph input with its dtype and shape
    /// and nothing else (the error lists every problem); returns the outputs by name, in the
    /// graph's output order.
    pub fn run(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        if !self.backend.has_weights() {
            return Err(RuntimeError::NoWeights);
        }
        check_inputs(&self.artifact.graph, inputs)?;
        self.backend.run(inputs, &mut self.timings)
    }

    /// Runs like [`Session::run`] with state kept on the device: copies in only the inputs
    /// `inputs` holds (each checked against the graph; the others keep what the device holds
    /// from an earlier run or [`Session::copy_tensors`]) and reads back only the tensors `read`,
    /// in that order. A training step runs so: its weights and moments stay on the device.
    /// Not on the CPU, which has no device.
    pub fn run_given(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        read: &[String],
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        if !self.backend.has_weights() {
            return Err(RuntimeError::NoWeights);
        }
        check_given_inputs(&self.artifact.graph, inputs)?;
        self.backend.run_given(inputs, read, &mut self.timings)
    }

    /// Copies each pair's tensor `from` (an output, say) onto the weight or input `to` on the
    /// device, in order, without a host round trip (a training step's updated weights onto the
    /// weights). Not on the CPU.
    pub fn copy_tensors(&mut self, pairs: &[(String, String)]) -> Result<(), RuntimeError> {
        self.backend.copy_tensors(pairs)
    }

    /// Reads any tensor of the plan back from the device (not on the CPU).
    pub fn read_back(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        self.backend.read_back(name)
    }

    /// Per-step timings of the last successful run, in launch order.
    pub fn timings(&self) -> &[StepTiming] {
        &self.timings
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
