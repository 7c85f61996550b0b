//! `fuse-attention`: `attn_values(softmax(attn_scores(q, k[, q_pe, k_pe])), v)` becomes one
//! `attention(q, k, v[, q_pe, k_pe])` when the scores and probabilities have no other reader,
//! the operands and the probabilities are BF16 (the fused op's probabilities are BF16, as the
//! unfused graph's are) and the head dims suit the fused kernel
//! (`dsc_kernels::ops::attention_fusable`). No `[B, H, S, T]` tensor is left: the scores live
//! in the kernel's registers. F32 attention stays unfused (exact f32 products on CUDA cores).

use crate::{PassError, PassOptions};
use dsc_ir::{DType, Graph, Op, OpKind, ValueDef};

/// Fuses every eligible attention core.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let uses = graph.use_counts();
    let defs = graph.defs();
    let producer = |v, kind| match defs.get(&v) {
        Some(&ValueDef::OpResult { op, .. })
            if graph.ops[op].kind == kind && uses[v.index()] == 1 =>
        {
            Some(op)
        }
        _ => None,
    };
    let mut fused = Vec::new();
    for (i, op) in graph.ops.iter().enumerate() {
        if op.kind != OpKind::AttnValues {
            continue;
        }
        let Some(softmax) = producer(op.operands[0], OpKind::Softmax) else {
            continue;
        };
        let Some(scores) = producer(graph.ops[softmax].operands[0], OpKind::AttnScores) else {
            continue;
        };
        if fusable(graph, &graph.ops[scores], &graph.ops[softmax], op) {
            fused.push((i, softmax, scores));
        }
    }
    let mut dead = vec![false; graph.ops.len()];
    for &(values, softmax, scores) in &fused {
        let scores_op = &graph.ops[scores];
        let (attrs, qk) = (scores_op.attrs.clone(), scores_op.operands.clone());
        let op = &mut graph.ops[values];
        let v = op.operands[1];
        op.kind = OpKind::Attention;
        op.operands = [qk[0], qk[1], v]
            .into_iter()
            .chain(qk[2..].iter().copied())
            .collect();
        op.attrs = attrs;
        dead[softmax] = true;
        dead[scores] = true;
    }
    let mut dead = dead.into_iter();
    graph.ops.retain(|_| !dead.next().unwrap_or(false));
    Ok(())
}

/// BF16 operands and probabilities, softmax over the keys, head dims the kernel takes.
fn fusable(graph: &Graph, scores: &Op, softmax: &Op, values: &Op) -> bool {
    let ty = |v| graph.ty(v);
    let bf16 = scores
        .operands
        .iter()
        .chain([&values.operands[1], &softmax.results[0]])
        .all(|&v| ty(v).dtype == DType::Bf16);
    let axis = softmax.attrs.int("axis");
    let last_axis = matches!(axis, Some(-1 | 3));
    let dim = |v, axis: usize| ty(v).shape.0.get(axis).copied().unwrap_or(0) as usize;
    let head_dim = dim(scores.operands[0], 3);
    let rope_dim = scores.operands.get(2).map_or(0, |&v| dim(v, 3));
    let v_dim = dim(values.operands[1], 3);
    bf16 && last_axis && dsc_kernels::ops::attention_fusable(head_dim, rope_dim, v_dim).is_ok()
}
