//! `recompute`: DeepSeek-V3's recomputation in back-propagation (report §3.2.3): the outputs
//! of RMSNorm and SwiGLU (plain or fused with their quantization) are not kept from the forward
//! pass for the backward. Each such forward op that a backward op reads is copied to just
//! before its first backward reader, and every backward reader reads the copy:
//!
//! ```text
//! %h = rms_norm(%x, @w)                 forward: %h's readers up to the loss
//! ...  %loss = cross_entropy(...)
//! %h.recomputed = rms_norm(%x, @w)      backward: before the first reader of %h
//! %dw = linear(%dy_t, %h.recomputed…)
//! ```
//!
//! A `quantize` of such an output (its FP8 copy for the Wgrad, which `requantize-transposed`
//! reads) is recomputed too, from the recomputed output, so neither is kept.
//!
//! The copy computes the same bits from the same operands (which the backward keeps anyway:
//! `rms_norm_grad` reads the norm's input, `swiglu_grad` the gate and up projections), so
//! the step's results do not change; the forward's copy dies at its last forward reader.
//! A graph without a loss (`cross_entropy` named `loss`) is not a training step and is left as
//! it is. Run it last: `cse` would merge the copies back.
//!
//! `recompute-full` ([`run_full`], `[train] recompute = "full"`) recomputes every forward op
//! whose results depend on the tokens, except the residual stream (the `add`s of role
//! residual: each layer's input and its attention half's output, the checkpoints) and the
//! head (the vocabulary GEMM): the backward keeps only the checkpoints, the token ids and
//! what the loss reads, and each layer's ops run again, from its checkpoint, before their
//! first backward reader. A copy reading another recomputed value reads that value's copy,
//! placed before it.

use crate::train_step::loss_op;
use crate::{PassError, PassOptions};
use dsc_ir::{Graph, Op, OpKind, Role, ValueDef, ValueId};
use std::collections::{BTreeMap, HashMap};

/// The op kinds whose outputs the backward recomputes.
pub const RECOMPUTED: [OpKind; 4] = [
    OpKind::RmsNorm,
    OpKind::RmsNormQuant,
    OpKind::Swiglu,
    OpKind::SwigluQuant,
];

/// Copies every [`RECOMPUTED`] forward op the backward reads (and the quantizes of their
/// outputs) to before its first backward reader.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    recompute(graph, |graph, def_op, recomputed, f| {
        let op = &graph.ops[f];
        RECOMPUTED.contains(&op.kind)
            || (op.kind == OpKind::Quantize
                && def_op(op.operands[0]).is_some_and(|g: usize| recomputed[g]))
    })
}

/// Copies every forward op that depends on the tokens, except the residual stream's `add`s
/// and the head, to before its first backward reader (whole-layer recomputation).
pub fn run_full(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let tokens = crate::train_step::token_dependent(graph);
    recompute(graph, |graph, _, _, f| {
        let op = &graph.ops[f];
        op.results.iter().any(|r| tokens[r.index()])
            && !(op.kind == OpKind::Add && op.role == Role::Residual)
            && op.role != Role::Head
    })
}

/// Copies the forward ops `chosen` picks (given the graph, the forward definer of a value,
/// the choices so far in forward order, and the op's position) to before their first backward
/// reader, each copy reading the copies of the chosen values it reads.
fn recompute(
    graph: &mut Graph,
    chosen: impl Fn(&Graph, &dyn Fn(ValueId) -> Option<usize>, &[bool], usize) -> bool,
) -> Result<(), PassError> {
    let Some(loss_at) = loss_op(graph) else {
        return Ok(());
    };
    let defs = graph.defs();
    let def_op = |v: ValueId| match defs.get(&v) {
        Some(ValueDef::OpResult { op, .. }) if *op < loss_at => Some(*op),
        _ => None,
    };
    let mut recomputed = vec![false; loss_at];
    for f in 0..loss_at {
        recomputed[f] = chosen(graph, &def_op, &recomputed, f);
    }
    // Forward op → the first backward op that needs it: one that reads one of its results, or
    // (for a recomputed output) the copy of a quantize that reads it.
    let mut needed: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, op) in graph.ops.iter().enumerate().skip(loss_at + 1) {
        for &v in &op.operands {
            if let Some(f) = def_op(v).filter(|&f| recomputed[f]) {
                needed.entry(f).or_insert(i);
            }
        }
    }
    // A copy needs the copies of the recomputed values it reads before it.
    for f in (0..loss_at).rev() {
        let Some(&at) = needed.get(&f) else { continue };
        for &v in &graph.ops[f].operands {
            if let Some(g) = def_op(v).filter(|&g| recomputed[g]) {
                let e = needed.entry(g).or_insert(at);
                *e = (*e).min(at);
            }
        }
    }
    if needed.is_empty() {
        return Ok(());
    }
    // Copies in forward order at each position, so a source's copy precedes its quantize's.
    let mut copies_at: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&f, &i) in &needed {
        copies_at.entry(i).or_default().push(f);
    }
    let mut renamed: HashMap<ValueId, ValueId> = HashMap::new();
    let old_ops = std::mem::take(&mut graph.ops);
    let mut ops = Vec::with_capacity(old_ops.len() + needed.len());
    for (i, mut op) in old_ops.iter().cloned().enumerate() {
        for &f in copies_at.get(&i).into_iter().flatten() {
            let original = &old_ops[f];
            let results = original
                .results
                .iter()
                .map(|&r| {
                    let name = format!("{}.recomputed", graph.name(r));
                    let copy = graph.add_value(name, graph.ty(r).clone());
                    renamed.insert(r, copy);
                    copy
                })
                .collect();
            let operands = original
                .operands
                .iter()
                .map(|v| renamed.get(v).copied().unwrap_or(*v))
                .collect();
            ops.push(Op {
                operands,
                results,
                ..original.clone()
            });
        }
        if i > loss_at {
            for v in &mut op.operands {
                if let Some(&copy) = renamed.get(v) {
                    *v = copy;
                }
            }
        }
        ops.push(op);
    }
    graph.ops = ops;
    Ok(())
}
