//! The CPU backend: executes a compiled graph op by op, each op through the CPU reference of
//! its kernel in `dsc-kernels` — the very steps the GPU plan launches — so GPU kernels can be
//! checked against it step by step. Results are rounded to their storage dtype at every op
//! boundary, as a GPU kernel writing BF16 would.

mod backend;
mod dispatch;
mod fp8;
mod training;

pub use backend::CpuBackend;

use crate::RuntimeError;
use crate::inputs::check_inputs;
use crate::tensor::HostTensor;
use crate::weights::Weights;
use dsc_ir::{Graph, Op, ValueId};
use dsc_kernels::Accumulator;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Options of a CPU run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuOptions {
    /// How FP8 products are summed inside a promotion interval (DESIGN.md §3).
    pub accumulator: Accumulator,
}

/// A value during a run: a weight borrowed from the loaded set, or an owned result.
enum Slot<'w> {
    Empty,
    Weight(&'w HostTensor),
    Owned(HostTensor),
}

impl Slot<'_> {
    fn get(&self) -> Option<&HostTensor> {
        match self {
            Slot::Empty => None,
            Slot::Weight(t) => Some(t),
            Slot::Owned(t) => Some(t),
        }
    }
}

/// Runs `graph` on named `inputs`; returns the graph outputs by name, in output order.
pub fn run(
    graph: &Graph,
    weights: &Weights,
    inputs: &HashMap<String, HostTensor>,
    options: &CpuOptions,
) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
    run_observed(graph, weights, inputs, options, &mut |_, _, _| {})
}

/// Sees each op after it ran: the op, its results and how long it took.
pub type OpObserver<'o> = dyn FnMut(&Op, &[HostTensor], Duration) + 'o;

/// [`run`], calling `observer` after every op (for timings and step-by-step comparisons).
pub fn run_observed(
    graph: &Graph,
    weights: &Weights,
    inputs: &HashMap<String, HostTensor>,
    options: &CpuOptions,
    observer: &mut OpObserver<'_>,
) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
    check_inputs(graph, inputs)?;
    let mut slots: Vec<Slot<'_>> = (0..graph.values.len()).map(|_| Slot::Empty).collect();
    for &v in &graph.inputs {
        slots[v.index()] = Slot::Owned(inputs[graph.name(v)].clone());
    }
    for &p in &graph.params {
        let t = weights.get(p).ok_or_else(|| RuntimeError::Graph {
            graph: graph.name.clone(),
            message: format!("weight `{}` was not loaded", graph.name(p)),
        })?;
        slots[p.index()] = Slot::Weight(t);
    }
    // Free each intermediate after its last reader: peak memory stays near one layer's.
    let mut remaining = graph.use_counts();
    for op in &graph.ops {
        let ins: Vec<&HostTensor> = op
            .operands
            .iter()
            .map(|&v| {
                slots[v.index()]
                    .get()
                    .expect("the verifier orders definitions first")
            })
            .collect();
        let start = Instant::now();
        let results = execute_op(graph, op, &ins, options)?;
        observer(op, &results, start.elapsed());
        for (&r, t) in op.results.iter().zip(results) {
            slots[r.index()] = Slot::Owned(t);
        }
        for &v in &op.operands {
            release(&mut slots, &mut remaining, v);
        }
    }
    graph
        .outputs
        .iter()
        .map(|&v| {
            let t = slots[v.index()].get().expect("outputs are defined").clone();
            Ok((graph.name(v).to_string(), t))
        })
        .collect()
}

fn release(slots: &mut [Slot<'_>], remaining: &mut [u32], v: ValueId) {
    let left = &mut remaining[v.index()];
    *left = left.saturating_sub(1);
    if *left == 0 && matches!(slots[v.index()], Slot::Owned(_)) {
        slots[v.index()] = Slot::Empty;
    }
}

/// Runs one op of `graph` on `operands` through its kernel's CPU reference; the results are
/// rounded to their storage dtypes. The GPU tests feed it a step's own GPU operands.
pub fn execute_op(
    graph: &Graph,
    op: &Op,
    operands: &[&HostTensor],
    options: &CpuOptions,
) -> Result<Vec<HostTensor>, RuntimeError> {
    dispatch::execute(graph, op, operands, options).map_err(|message| RuntimeError::Op {
        op: graph.op_name(op).to_string(),
        kind: op.kind.name(),
        message,
    })
}

#[cfg(test)]
mod tests;
