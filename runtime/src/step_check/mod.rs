//! Every launch step of a GPU backend (emulator or device) checked against the CPU reference of
//! its op, fed the very operands the step read, so that errors do not accumulate across steps:
//! what the GPU tests and `scripts/gpu-check.sh` both run. [`tolerance`] says how close each op
//! kind must be.

pub mod tolerance;

use std::collections::HashMap;

use dsc_ir::{Graph, Op};
use dsc_kernels::manifest::LaunchStep;

use crate::cpu::{CpuOptions, execute_op};
use crate::cuda::{CudaBackend, DeviceInfo};
use crate::{
    Artifact, Backend, EmuBackend, EmuOptions, HostTensor, RuntimeError, StepPhase, Weights,
};

pub use tolerance::{Rule, compare, rule_for};

/// Compares each op's results after its last step with the CPU reference run on the operands
/// read before its first step, collecting every mismatch.
pub struct StepChecker<'a> {
    graph: &'a Graph,
    ops: HashMap<&'a str, &'a Op>,
    steps: &'a [LaunchStep],
    operands: Vec<HostTensor>,
    failures: Vec<String>,
    compared: usize,
}

impl<'a> StepChecker<'a> {
    /// A checker of `artifact`'s steps.
    pub fn new(artifact: &'a Artifact) -> Self {
        let graph = &artifact.graph;
        StepChecker {
            graph,
            ops: graph.ops.iter().map(|op| (graph.op_name(op), op)).collect(),
            steps: &artifact.manifest.steps,
            operands: Vec::new(),
            failures: Vec::new(),
            compared: 0,
        }
    }

    /// The step-by-step observer (`run_step_by_step`'s): `read` reads the backend's tensors.
    pub fn observe(
        &mut self,
        i: usize,
        phase: StepPhase,
        read: &mut dyn FnMut(&str) -> Result<HostTensor, RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let steps = self.steps;
        let graph = self.graph;
        let op = self.ops[steps[i].op.as_str()];
        // An op may take several launches: read operands before its first, compare after its last.
        let first = i == 0 || steps[i - 1].op != steps[i].op;
        let last = i + 1 == steps.len() || steps[i + 1].op != steps[i].op;
        match phase {
            StepPhase::Before if first => {
                self.operands = op
                    .operands
                    .iter()
                    .map(|&v| read(graph.name(v)))
                    .collect::<Result<_, _>>()?;
            }
            StepPhase::After if last => {
                let refs: Vec<&HostTensor> = self.operands.iter().collect();
                let expected = execute_op(graph, op, &refs, &CpuOptions::default())?;
                for (k, (&r, want)) in op.results.iter().zip(&expected).enumerate() {
                    let got = read(graph.name(r))?;
                    let rule = rule_for(op.kind, k, want.dtype);
                    if let Err(why) = compare(rule, &got, want) {
                        self.failures.push(format!(
                            "step {i} op `{}` ({}, kernel `{}`) result `{}` [{rule:?}]: {why}",
                            steps[i].op,
                            op.kind.name(),
                            steps[i].kernel,
                            graph.name(r)
                        ));
                    }
                }
                self.compared += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// The ops compared, or every mismatch as a sentence naming the step, op and kernel.
    pub fn finish(self) -> Result<usize, Vec<String>> {
        if self.failures.is_empty() {
            Ok(self.compared)
        } else {
            Err(self.failures)
        }
    }
}

/// Which GPU backend [`check_steps`] runs on.
#[derive(Debug, Clone)]
pub enum StepBackend {
    /// The PTX emulator.
    Emulator,
    /// A CUDA device.
    Cuda(DeviceInfo),
}

/// Runs `artifact` step by step on `backend` with `weights` and `inputs`, every op checked by a
/// [`StepChecker`]: the ops compared, or every mismatch (and a failed run) as sentences naming
/// the step, op and kernel.
pub fn check_steps(
    artifact: &Artifact,
    backend: &StepBackend,
    weights: Weights,
    inputs: &HashMap<String, HostTensor>,
) -> Result<usize, Vec<String>> {
    let mut checker = StepChecker::new(artifact);
    let ran = match backend {
        StepBackend::Emulator => {
            EmuBackend::new(artifact, EmuOptions::default()).and_then(|mut b| {
                b.set_weights(weights)?;
                b.run_step_by_step(inputs, &mut |i, phase, b| {
                    checker.observe(i, phase, &mut |name| b.read_tensor(name))
                })
            })
        }
        StepBackend::Cuda(device) => CudaBackend::new(artifact, device).and_then(|mut b| {
            b.set_weights(weights)?;
            b.run_step_by_step(inputs, &mut |i, phase, b| {
                checker.observe(i, phase, &mut |name| b.read_tensor(name))
            })
        }),
    };
    let checked = checker.finish();
    match ran {
        Ok(()) => checked,
        Err(error) => {
            let mut failures = checked.err().unwrap_or_default();
            failures.push(format!("the plan failed: {error}"));
            Err(failures)
        }
    }
}
