//! The CPU backend: executes a compiled graph op by op, each op through the CPU reference of
//! its kernel in `dsc-kernels` — the very steps the GPU plan launches — so GPU kernels can be
//! checked against it step by step. Results are rounded to their storage dtype at every op
//! boundary, as a GPU kernel writing BF16 would.

mod dispatch;
mod fp8;

use crate::RuntimeError;
use crate::tensor::HostTensor;
use crate::weights::Weights;
use dsc_ir::{Graph, ValueId};
use dsc_kernels::Accumulator;
use std::collections::HashMap;

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
        let results =
            dispatch::execute(graph, op, &ins, options).map_err(|message| RuntimeError::Op {
                op: graph.op_name(op).to_string(),
                kind: op.kind.name(),
                message,
            })?;
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

/// Every input present with its declared dtype and shape; nothing unexpected.
fn check_inputs(graph: &Graph, inputs: &HashMap<String, HostTensor>) -> Result<(), RuntimeError> {
    let mut problems = Vec::new();
    for &v in &graph.inputs {
        let (name, ty) = (graph.name(v), graph.ty(v));
        match inputs.get(name) {
            None => problems.push(format!("missing input `{name}` ({ty})")),
            Some(t) => {
                let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                if t.dtype != ty.dtype || shape != ty.shape.dims() {
                    problems.push(format!(
                        "input `{name}` is {}{:?}, expected {ty}",
                        t.dtype, t.shape
                    ));
                }
            }
        }
    }
    for name in inputs.keys() {
        if !graph.inputs.iter().any(|&v| graph.name(v) == name) {
            problems.push(format!("unexpected input `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort();
        Err(RuntimeError::Inputs {
            message: problems.join("; "),
        })
    }
}

#[cfg(test)]
mod tests;
