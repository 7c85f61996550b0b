//! Type rules of the mixture-of-experts kinds: routing (`moe_topk`), the grouped expert GEMM
//! and the weighted combination of the experts' outputs.

use super::{Inferred, Result, fixed, free, named, need_float, need_int, need_rank};
use crate::attr::Attrs;
use crate::operands::{GroupedLinearOperands, MoeCombineOperands, MoeTopkOperands};
use crate::{DType, TensorType};

/// `moe_topk`: gate logits `[T, E]` (+ bias `[E]`) → weights f32 `[T, k]`, indices i32 `[T, k]`.
pub(super) fn moe_topk(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let MoeTopkOperands { logits, bias } = named(MoeTopkOperands::from_slice(ins))?;
    need_float("logits", logits)?;
    need_rank("logits", logits, 2)?;
    let [t, e] = logits.shape.0[..] else {
        unreachable!()
    };
    if let Some(bias) = bias {
        need_float("bias", bias)?;
        if bias.shape.0 != [e] {
            return Err(format!("bias {bias} must have shape [{e}]"));
        }
    }
    let top_k = attrs.int("top_k").unwrap_or(0);
    let groups = attrs.int("n_groups").unwrap_or(0);
    let topk_groups = attrs.int("topk_groups").unwrap_or(0);
    if top_k <= 0 || top_k as u64 > e {
        return Err(format!("top_k {top_k} must be in 1..={e}"));
    }
    if groups <= 0 || !e.is_multiple_of(groups as u64) {
        return Err(format!("n_groups {groups} must divide the {e} experts"));
    }
    if topk_groups <= 0 || topk_groups > groups {
        return Err(format!("topk_groups {topk_groups} must be in 1..={groups}"));
    }
    if (topk_groups as u64) * (e / groups as u64) < top_k as u64 {
        return Err(format!(
            "{topk_groups} groups of {} experts cannot supply top_k = {top_k}",
            e / groups as u64
        ));
    }
    match attrs.str("score_func") {
        Some("sigmoid" | "softmax") => {}
        other => {
            return Err(format!(
                "score_func must be \"sigmoid\" or \"softmax\", got {other:?}"
            ));
        }
    }
    let k = top_k as u64;
    Ok(vec![
        fixed(DType::F32, vec![t, k]),
        fixed(DType::I32, vec![t, k]),
    ])
}

/// `grouped_linear`: `x [T, K]` or `[T, k, K]` through the experts `w [E, N, K]` chosen by `indices [T, k]` → `[T, k, N]`.
pub(super) fn grouped_linear(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let GroupedLinearOperands { x, w, indices: idx } =
        named(GroupedLinearOperands::from_slice(ins))?;
    need_float("input", x)?;
    need_float("weight", w)?;
    need_int("indices", idx)?;
    need_rank("weight", w, 3)?;
    need_rank("indices", idx, 2)?;
    let [t, k] = idx.shape.0[..] else {
        unreachable!()
    };
    let (n, kk) = (w.shape.0[1], w.shape.0[2]);
    let ok = match x.shape.0[..] {
        [xt, xk] => xt == t && xk == kk,
        [xt, xs, xk] => xt == t && xs == k && xk == kk,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "input {x} must be [{t}, {kk}] or [{t}, {k}, {kk}] for weight {w} and indices {idx}"
        ));
    }
    Ok(vec![free(x.dtype, vec![t, k, n])])
}

/// `moe_combine`: expert outputs `[T, k, D]` weighted by `[T, k]` (+ shared `[T, D]`) → `[T, D]`.
pub(super) fn moe_combine(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let MoeCombineOperands {
        y,
        weights: w,
        shared,
    } = named(MoeCombineOperands::from_slice(ins))?;
    need_float("expert outputs", y)?;
    need_float("weights", w)?;
    need_rank("expert outputs", y, 3)?;
    if w.shape.0[..] != y.shape.0[..2] {
        return Err(format!(
            "weights {w} must match expert outputs {y} in [T, k]"
        ));
    }
    let (t, d) = (y.shape.0[0], y.shape.0[2]);
    if let Some(s) = shared {
        need_float("shared", s)?;
        if s.shape.0 != [t, d] {
            return Err(format!("shared {s} must have shape [{t}, {d}]"));
        }
    }
    Ok(vec![free(y.dtype, vec![t, d])])
}
