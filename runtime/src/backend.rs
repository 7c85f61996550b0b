//! What a session needs of a backend: take the weights once, run the plan on named inputs, and
//! time each step. The CPU backend ([`crate::cpu::CpuBackend`]), the CUDA backend
//! ([`crate::cuda::CudaBackend`]) and the emulator backend ([`crate::emu::EmuBackend`])
//! implement it.

use std::collections::HashMap;

use dsc_kernels::manifest::LaunchStep;

use crate::error::RuntimeError;
use crate::tensor::HostTensor;
use crate::weights::Weights;

/// How long one step of a run took, and the work it did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    /// The op of the graph the step computes.
    pub op: String,
    /// The kernel it ran: the PTX entry on CUDA, the op kind's CPU reference on the CPU.
    pub kernel: String,
    /// Seconds (CUDA events on the GPU, wall clock on the CPU; on the emulator the modeled
    /// time, as in [`StepTiming::modeled`]).
    pub seconds: f64,
    /// Matrix-product FLOPs (0 for other ops).
    pub flops: u64,
    /// Bytes the step reads and writes at least once.
    pub bytes: u64,
    /// On the emulator: the roofline model's view of the step (always labelled modeled: no
    /// GPU ran it). `None` on the CPU and on CUDA, which measure.
    pub modeled: Option<ModeledTiming>,
}

impl StepTiming {
    /// The timing of a manifest launch step that took `seconds` (its op, kernel, FLOPs and
    /// bytes from the step).
    pub(crate) fn launched(
        step: &LaunchStep,
        seconds: f64,
        modeled: Option<ModeledTiming>,
    ) -> StepTiming {
        StepTiming {
            op: step.op.clone(),
            kernel: step.kernel.clone(),
            seconds,
            flops: step.flops,
            bytes: step.bytes,
            modeled,
        }
    }
}

/// A step's time as the emulator's roofline model predicts it from the launch's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeledTiming {
    /// Modeled seconds on the device model (resources overlapping perfectly).
    pub seconds: f64,
    /// Modeled seconds if no resource overlapped another (the model's upper bound).
    pub serial_seconds: f64,
    /// Fraction of the binding resource's peak the step achieves in the model.
    pub peak_fraction: f64,
    /// The binding resource, as the emulator names it (`tensor_core`, `issue`, `dram`, …).
    pub bound: String,
    /// The device model (`H100 SXM`, …).
    pub device: String,
}

/// When a step-by-step run calls its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// Before the step is launched (its operands are ready).
    Before,
    /// After the step finished.
    After,
}

/// A backend executing an artifact's plan.
pub trait Backend {
    /// Takes the weights (every graph parameter, checked against the graph by the caller).
    /// The CUDA backend uploads them into buffers allocated when it was created.
    fn set_weights(&mut self, weights: Weights) -> Result<(), RuntimeError>;

    /// True once [`Backend::set_weights`] has succeeded.
    fn has_weights(&self) -> bool;

    /// Runs one forward pass on `inputs` (already checked against the graph); returns the
    /// graph's outputs by name, in output order, and fills `timings` with one entry per step.
    fn run(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError>;

    /// Runs like [`Backend::run`], but copies in only the inputs `inputs` holds (the others
    /// keep what the device holds, e.g. a training step's moments put there by
    /// [`Backend::copy_tensors`]) and reads back only the tensors `read`, in that order.
    fn run_given(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        read: &[String],
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let _ = (inputs, read, timings);
        Err(no_device_state())
    }

    /// Copies each pair's tensor `from` onto the weight or input `to` on the device, in order.
    fn copy_tensors(&mut self, pairs: &[(String, String)]) -> Result<(), RuntimeError> {
        let _ = pairs;
        Err(no_device_state())
    }

    /// Reads any tensor of the plan (a weight, an input, an arena tensor) back from the device.
    fn read_back(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        let _ = name;
        Err(no_device_state())
    }
}

/// What a backend without device buffers (the CPU's) answers to the device-state calls.
fn no_device_state() -> RuntimeError {
    RuntimeError::Tensor {
        message: "this backend keeps no tensors on a device between runs".into(),
    }
}
