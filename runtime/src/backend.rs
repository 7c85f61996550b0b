//! What a session needs of a backend: take the weights once, run the plan on named inputs, and
//! time each step. The CPU backend ([`crate::cpu::CpuBackend`]) and the CUDA backend
//! ([`crate::cuda::CudaBackend`]) implement it.

use std::collections::HashMap;

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
    /// Seconds (CUDA events on the GPU, wall clock on the CPU).
    pub seconds: f64,
    /// Matrix-product FLOPs (0 for other ops).
    pub flops: u64,
    /// Bytes the step reads and writes at least once.
    pub bytes: u64,
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
}
