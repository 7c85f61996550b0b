//! `fuse-attention`: `attn_values(softmax(attn_scores(q, k[, q_pe, k_pe])), v)` becomes one
//! `attention(q, k, v[, q_pe, k_pe])` when the scores and probabilities have no other reader,
//! the operands and the probabilities are BF16 (the fused op's probabilities are BF16, as the
//! unfused graph's are) and the head dims suit the fused kernel
//! (`dsc_kernels::ops::attention_fusable`). No `[B, H, S, T]` tensor is left: the scores live
//! in the kernel's registers. F32 attention stays unfused (exact f32 products on CUDA cores).

use crate::{PassError, PassOptions};
use dsc_ir::operands::AttentionOperands;
use dsc_ir::{DType, Graph, Op, OpKind, OperandError, ValueDef};

/// The error of an op whose operands do not fit its kind (the verifier rules it out).
fn op_error(graph: &Graph, op: &Op, e: OperandError) -> PassError {
    PassError::Op {
        pass: "fuse-attention",
        op: graph.op_name(op).to_string(),
        message: e.to_string(),
    }
}

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
        let attrs = scores_op.attrs.clone();
        let qk = scores_op
            .attn_scores_operands()
            .map_err(|e| op_error(graph, scores_op, e))?;
        let values_op = &graph.ops[values];
        let v = values_op
            .attn_values_operands()
            .map_err(|e| op_error(graph, values_op, e))?
            .v;
        let fused = AttentionOperands {
            q: qk.q,
            k: qk.k,
            v,
            q_pe: qk.q_pe,
            k_pe: qk.k_pe,
        };
        let op = &mut graph.ops[values];
        op.kind = OpKind::Attention;
        op.operands = fused.to_vec();
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
    let (Ok(qk), Ok(pv)) = (scores.attn_scores_operands(), values.attn_values_operands()) else {
        return false;
    };
    let ty = |v| graph.ty(v);
    let bf16 = qk
        .to_vec()
        .into_iter()
        .chain([pv.v, softmax.results[0]])
        .all(|v| ty(v).dtype == DType::Bf16);
    let axis = softmax.attrs.int("axis");
    let last_axis = matches!(axis, Some(-1 | 3));
    let dim = |v, axis: usize| ty(v).shape.0.get(axis).copied().unwrap_or(0) as usize;
    let head_dim = dim(qk.q, 3);
    let rope_dim = qk.q_pe.map_or(0, |v| dim(v, 3));
    let v_dim = dim(pv.v, 3);
    bf16 && last_axis && dsc_kernels::ops::attention_fusable(head_dim, rope_dim, v_dim).is_ok()
}
