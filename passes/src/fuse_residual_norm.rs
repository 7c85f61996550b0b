//! `fuse-residual-norm`: a residual `add` whose sum an `rms_norm` or `rms_norm_quant` reads
//! becomes part of that norm: `add_rms_norm(x, residual, w)` or `add_rms_norm_quant(x,
//! residual, w)`, whose last result is the sum (the same value, so every other reader of it,
//! the next residual add or a graph output, is unchanged). One kernel reads `x` and `residual`
//! once and writes the sum and the norm, where the pair read the sum back after writing it
//! and launched twice (what vLLM's `fused_add_rms_norm` does).
//!
//! The numbers are the pair's: the sum rounded to its dtype as `add` rounds it, the norm over
//! that. An add fuses into the first norm that reads it, when both operands have the sum's
//! type (no broadcast bias) and the norm's weight exists where the add is (the fused op takes
//! the add's place, so readers of the sum between the two keep their order).

use crate::{PassError, PassOptions};
use dsc_ir::{Graph, OpKind, ValueDef};

/// Fuses each residual add into the norm of its sum.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let defs = graph.defs();
    // Where each value is defined: the index of its op, or none for inputs and parameters.
    let defined_at = |v| match defs.get(&v) {
        Some(&ValueDef::OpResult { op, .. }) => Some(op),
        _ => None,
    };
    let mut add_taken = vec![false; graph.ops.len()];
    let mut fused = Vec::new();
    for (i, norm) in graph.ops.iter().enumerate() {
        let kind = match norm.kind {
            OpKind::RmsNorm => OpKind::AddRmsNorm,
            OpKind::RmsNormQuant => OpKind::AddRmsNormQuant,
            _ => continue,
        };
        // A norm reading a column window (`x_cols`, fold-slices) reads a slice's source.
        if norm.attrs.get(dsc_ir::infer::X_COLS).is_some() {
            continue;
        }
        let (Some(&sum), Some(&w)) = (norm.operands.first(), norm.operands.get(1)) else {
            continue;
        };
        let Some(j) = defined_at(sum) else { continue };
        let add = &graph.ops[j];
        let same_type =
            add.operands.len() == 2 && add.operands.iter().all(|&v| graph.ty(v) == graph.ty(sum));
        let weight_ready = defined_at(w).is_none_or(|at| at < j);
        if add.kind == OpKind::Add && !add_taken[j] && same_type && weight_ready {
            add_taken[j] = true;
            fused.push((j, i, kind));
        }
    }
    let mut dead = vec![false; graph.ops.len()];
    for (j, i, kind) in fused {
        let norm = graph.ops[i].clone();
        let add = &mut graph.ops[j];
        let sum = add.results[0];
        add.kind = kind;
        add.operands.push(norm.operands[1]);
        add.results = norm.results.iter().copied().chain([sum]).collect();
        add.attrs = norm.attrs;
        add.role = norm.role;
        add.precision = norm.precision;
        dead[i] = true;
    }
    graph.remove_ops(&dead);
    Ok(())
}
