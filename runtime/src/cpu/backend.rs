//! The CPU backend behind the [`Backend`] trait: the graph executed op by op through the
//! kernels' CPU references, each op timed by the wall clock.

use std::collections::HashMap;

use dsc_ir::Graph;
use dsc_kernels::cost::op_cost;

use super::{CpuOptions, run_observed};
use crate::backend::{Backend, StepTiming};
use crate::error::RuntimeError;
use crate::tensor::HostTensor;
use crate::weights::Weights;

/// Runs a graph on the CPU.
pub struct CpuBackend<'a> {
    graph: &'a Graph,
    weights: Option<Weights>,
    options: CpuOptions,
}

impl<'a> CpuBackend<'a> {
    /// A backend for `graph`, without weights yet.
    pub fn new(graph: &'a Graph, options: CpuOptions) -> Self {
        CpuBackend {
            graph,
            weights: None,
            options,
        }
    }
}

impl Backend for CpuBackend<'_> {
    fn set_weights(&mut self, weights: Weights) -> Result<(), RuntimeError> {
        self.weights = Some(weights);
        Ok(())
    }

    fn has_weights(&self) -> bool {
        self.weights.is_some()
    }

    fn run(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        let weights = self.weights.as_ref().ok_or(RuntimeError::NoWeights)?;
        let graph = self.graph;
        timings.clear();
        run_observed(
            graph,
            weights,
            inputs,
            &self.options,
            &mut |op, _, elapsed| {
                let cost = op_cost(graph, op);
                timings.push(StepTiming {
                    op: graph.op_name(op).to_string(),
                    kernel: format!("cpu:{}", op.kind.name()),
                    seconds: elapsed.as_secs_f64(),
                    flops: cost.flops,
                    bytes: cost.bytes,
                    modeled: None,
                });
            },
        )
    }
}
