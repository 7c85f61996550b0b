//! The memory a training step needs, from its lowered graph (DESIGN.md §8): bytes per
//! parameter (master weight, gradient, moments and the per-step working copies of the weight)
//! and activation bytes per token (what the forward leaves for the backward).

use crate::train_step::loss_op;
use dsc_ir::{Graph, ValueDef, ValueId};
use std::collections::HashSet;

/// A training step's memory, by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainMemory {
    /// Parameters the optimizer updates.
    pub params: u64,
    /// Bytes of FP32 master weights, gradients and moments, per parameter.
    pub state_bytes_per_param: f64,
    /// Bytes of the weights' per-step copies (BF16 casts, FP8 codes and scales, their
    /// transposes), per parameter.
    pub working_bytes_per_param: f64,
    /// Tokens per step (the product of the token ids' dims).
    pub tokens: u64,
    /// Bytes of forward values the backward reads, per token.
    pub saved_activation_bytes_per_token: f64,
}

impl TrainMemory {
    /// All bytes per parameter.
    pub fn bytes_per_param(&self) -> f64 {
        self.state_bytes_per_param + self.working_bytes_per_param
    }
}

/// Measures a training step built by `train_step::build` and lowered by its pipeline.
pub fn measure(step: &Graph) -> TrainMemory {
    // By the formats' bits: the emulated E5M6 counts 1.5 bytes an element, as packed 12-bit
    // codes would take (the CPU holds it in 16 bits).
    let bytes = |v: ValueId| {
        let ty = step.ty(v);
        ty.shape.numel() as f64 * ty.dtype.size_bits() as f64 / 8.0
    };
    let params: Vec<ValueId> = step
        .params
        .iter()
        .copied()
        .filter(|&p| step.ty(p).dtype.is_float())
        .collect();
    let numel: u64 = params.iter().map(|&p| step.ty(p).shape.numel()).sum();
    let names: HashSet<String> = params.iter().map(|&p| step.name(p).to_string()).collect();
    // Master weights, their gradients (outputs `{p}.grad`) and moments (inputs `{p}.adam_*`).
    let mut state: f64 = params.iter().map(|&p| bytes(p)).sum();
    for &o in &step.outputs {
        if let Some(p) = step.name(o).strip_suffix(".grad")
            && names.contains(p)
        {
            state += bytes(o);
        }
    }
    for &i in &step.inputs {
        let name = step.name(i);
        if let Some(p) = name
            .strip_suffix(".adam_m")
            .or_else(|| name.strip_suffix(".adam_v"))
            && names.contains(p)
        {
            state += bytes(i);
        }
    }
    // Values computed from weights alone are the weights' working copies; values depending on
    // the token ids are activations.
    let defs = step.defs();
    let from_tokens = crate::train_step::token_dependent(step);
    let mut from_weights = vec![false; step.values.len()];
    for &p in &params {
        from_weights[p.index()] = true;
    }
    let loss_at = loss_op(step).unwrap_or(step.ops.len());
    let mut working = 0.0;
    for op in &step.ops[..loss_at] {
        let weights = op.operands.iter().all(|v| from_weights[v.index()]);
        for &r in &op.results {
            from_weights[r.index()] = !from_tokens[r.index()] && weights;
            if from_weights[r.index()] {
                working += bytes(r);
            }
        }
    }
    // Forward activations the backward (every op after the loss) reads.
    let mut saved = HashSet::new();
    for op in &step.ops[loss_at..] {
        for &v in &op.operands {
            let forward =
                matches!(defs.get(&v), Some(ValueDef::OpResult { op, .. }) if *op < loss_at);
            if forward && from_tokens[v.index()] {
                saved.insert(v);
            }
        }
    }
    let tokens = step
        .inputs
        .first()
        .map_or(1, |&i| step.ty(i).shape.numel())
        .max(1);
    let saved_bytes: f64 = saved.iter().map(|&v| bytes(v)).sum();
    let per_param = |b: f64| if numel == 0 { 0.0 } else { b / numel as f64 };
    TrainMemory {
        params: numel,
        state_bytes_per_param: per_param(state),
        working_bytes_per_param: per_param(working),
        tokens,
        saved_activation_bytes_per_token: saved_bytes / tokens as f64,
    }
}
