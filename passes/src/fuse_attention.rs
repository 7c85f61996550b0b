//! `fuse-attention`: `attn_values(softmax(attn_scores(q, k[, q_pe, k_pe])), v)` becomes one
//! `attention(q, k, v[, q_pe, k_pe])` when the scores and probabilities have no other reader,
//! the operands and the probabilities are BF16 (the fused op's probabilities are BF16, as the
//! unfused graph's are) and the head dims suit the fused kernel
//! (`dsc_kernels::ops::attention_fusable`). No `[B, H, S, T]` tensor is left: the scores live
//! in the kernel's registers. F32 attention stays unfused (exact f32 products on CUDA cores).
//! A fused attention whose q, k or v is a slice of the last axis then reads it in place
//! (`q_cols`, `k_cols`, `v_cols`: [`fold_slices`]).

use crate::{PassError, PassOptions};
use dsc_ir::operands::AttentionOperands;
use dsc_ir::{Attr, DType, Graph, Op, OpKind, OperandError, ValueDef};

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
    fold_slices(graph, &mut dead);
    graph.remove_ops(&dead);
    Ok(())
}

/// An attention whose q, k or v is a slice of the last axis read by nothing else reads the
/// sliced tensor in place (`q_cols`, `k_cols`, `v_cols`; MLA's q_nope out of the q
/// projection's output, k_nope and the values out of `kv_b_proj`'s), so the slice's copy is
/// never made. The window starts at, and the tensor's rows are, a multiple of 8 elements: the
/// kernels read q in aligned pairs and stage k and v in 16-byte chunks.
fn fold_slices(graph: &mut Graph, dead: &mut [bool]) {
    // Readers among the ops that stay (the fused scores still read q until removed).
    let mut uses = vec![0u32; graph.values.len()];
    let live = graph.ops.iter().zip(dead.iter()).filter(|(_, d)| !**d);
    for v in live.flat_map(|(op, _)| &op.operands).chain(&graph.outputs) {
        uses[v.index()] += 1;
    }
    let defs = graph.defs();
    for i in 0..graph.ops.len() {
        if graph.ops[i].kind != OpKind::Attention || dead[i] {
            continue;
        }
        for (operand, key) in dsc_ir::infer::ATTENTION_WINDOWS {
            let op = &graph.ops[i];
            if op.attrs.ints(key).is_some() {
                continue;
            }
            let Some(&x) = op.operands.get(operand) else {
                continue;
            };
            let Some(&ValueDef::OpResult { op: s, .. }) = defs.get(&x) else {
                continue;
            };
            let slice = &graph.ops[s];
            let source = slice.operands[0];
            let rank = graph.ty(source).shape.rank() as i64;
            let axis = slice
                .attrs
                .int("axis")
                .map(|a| if a < 0 { a + rank } else { a });
            let (Some(start), Some(end)) = (slice.attrs.int("start"), slice.attrs.int("end"))
            else {
                continue;
            };
            let row = graph.ty(source).shape.last();
            let aligned = start % 8 == 0 && row.is_multiple_of(8);
            if slice.kind != OpKind::Slice
                || dead[s]
                || uses[x.index()] != 1
                || axis != Some(rank - 1)
                || !aligned
            {
                continue;
            }
            let op = &mut graph.ops[i];
            op.operands[operand] = source;
            op.attrs.set(key, Attr::Ints(vec![start, end]));
            dead[s] = true;
        }
    }
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
