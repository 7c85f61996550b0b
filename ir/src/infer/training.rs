//! Type rules of the kinds a training step adds: the loss, the gradients the forward kinds'
//! VJP rules emit (`passes/src/autodiff`), and the optimizer.

use super::{
    Inferred, Result, axis_of, dims_eq, fixed, free, named, need_float, need_int, need_min_rank,
    need_rank,
};
use crate::attr::Attrs;
use crate::operands::{
    AdamWOperands, BalanceLossGradOperands, BalanceLossOperands, ExpertBiasUpdateOperands,
    GroupedLinearWgradOperands, MoeCombineGradOperands, MoeTopkGradOperands, RmsNormGradOperands,
};
use crate::{DType, OpKind, TensorType};

/// Checks that `labels` has the shape of `logits` without its vocabulary axis.
fn labels_match(logits: &TensorType, labels: &TensorType) -> Result<()> {
    need_float("logits", logits)?;
    need_int("labels", labels)?;
    need_min_rank("logits", logits, 1)?;
    let rows = &logits.shape.0[..logits.shape.rank() - 1];
    if labels.shape.0 != rows {
        return Err(format!(
            "labels {labels} must have the shape of logits {logits} without its last axis"
        ));
    }
    Ok(())
}

fn need_scalar(what: &str, t: &TensorType, len: u64) -> Result<()> {
    if t.dtype == DType::F32 && t.shape.0 == [len] {
        Ok(())
    } else {
        Err(format!("{what} must be f32[{len}], got {t}"))
    }
}

/// `cross_entropy`: logits `[.., V]`, labels `[..]` → the mean loss, f32 `[1]`.
pub(super) fn cross_entropy(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    labels_match(ins[0], ins[1])?;
    Ok(vec![fixed(DType::F32, vec![1])])
}

/// `cross_entropy_grad`: logits, labels, dloss `[1]` → f32 logits-shaped.
pub(super) fn cross_entropy_grad(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    labels_match(ins[0], ins[1])?;
    need_scalar("dloss", ins[2], 1)?;
    Ok(vec![fixed(DType::F32, ins[0].shape.0.clone())])
}

/// `rms_norm_grad`: x `[.., D]`, w `[D]`, dy (x's shape) → dx, dw f32 `[D]`.
pub(super) fn rms_norm_grad(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let RmsNormGradOperands { x, w, dy } = named(RmsNormGradOperands::from_slice(ins))?;
    super::norm::rms_norm(attrs, &[x, w])?;
    need_float("dy", dy)?;
    dims_eq("rms_norm_grad dy", x, dy)?;
    Ok(vec![
        free(dy.dtype, x.shape.0.clone()),
        fixed(DType::F32, w.shape.0.clone()),
    ])
}

/// `softmax_grad`, `silu_grad`: two same-shaped float operands → their shape.
pub(super) fn binary_grad(
    kind: OpKind,
    attrs: &Attrs,
    ins: &[&TensorType],
) -> Result<Vec<Inferred>> {
    need_float("lhs", ins[0])?;
    need_float("dy", ins[1])?;
    dims_eq(kind.name(), ins[0], ins[1])?;
    if kind == OpKind::SoftmaxGrad {
        axis_of(kind, attrs, ins[0])?;
    }
    Ok(vec![free(ins[1].dtype, ins[0].shape.0.clone())])
}

/// `swiglu_grad`: gate, up, dy of one shape → dgate, dup.
pub(super) fn swiglu_grad(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    for (what, t) in ["gate", "up", "dy"].into_iter().zip(ins) {
        need_float(what, t)?;
    }
    dims_eq("swiglu_grad gate/up", ins[0], ins[1])?;
    dims_eq("swiglu_grad gate/dy", ins[0], ins[2])?;
    let dims = ins[0].shape.0.clone();
    Ok(vec![
        free(ins[2].dtype, dims.clone()),
        free(ins[2].dtype, dims),
    ])
}

/// `embedding_grad`: ids `[..]`, dy `[.., D]` → f32 `[vocab, D]`.
pub(super) fn embedding_grad(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let (ids, dy) = (ins[0], ins[1]);
    need_int("ids", ids)?;
    need_float("dy", dy)?;
    need_min_rank("dy", dy, 1)?;
    if dy.shape.0[..dy.shape.rank() - 1] != *ids.shape.dims() {
        return Err(format!("dy {dy} must be ids {ids} with one more axis"));
    }
    let vocab = attrs.int("vocab").expect("checked");
    if vocab <= 0 {
        return Err(format!(
            "embedding_grad vocab must be positive, got {vocab}"
        ));
    }
    Ok(vec![fixed(DType::F32, vec![vocab as u64, dy.shape.last()])])
}

/// `reduce_sum` over `axis`, which is dropped.
pub(super) fn reduce_sum(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    need_float("input", x)?;
    let axis = axis_of(OpKind::ReduceSum, attrs, x)?;
    let mut dims = x.shape.0.clone();
    dims.remove(axis);
    Ok(vec![free(x.dtype, dims)])
}

/// `scale` and `rope_grad`: one float operand, same shape.
pub(super) fn same_shape(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    need_float("input", ins[0])?;
    Ok(vec![free(ins[0].dtype, ins[0].shape.0.clone())])
}

/// `global_norm`: float tensors → f32 `[1]`.
pub(super) fn global_norm(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    for t in ins {
        need_float("gradient", t)?;
    }
    Ok(vec![fixed(DType::F32, vec![1])])
}

/// `adamw`: param, grad (its shape), m, v (its shape, any float storage), norm `[1]`,
/// schedule `[2]` → param', m', v' of the operands' types.
pub(super) fn adamw(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let AdamWOperands {
        param: p,
        grad: g,
        m,
        v,
        norm,
        schedule,
    } = named(AdamWOperands::from_slice(ins))?;
    for (what, t) in [("param", p), ("grad", g), ("m", m), ("v", v)] {
        need_float(what, t)?;
        dims_eq(&format!("adamw {what}"), p, t)?;
    }
    need_scalar("norm", norm, 1)?;
    need_scalar("schedule (lr, step)", schedule, 2)?;
    for key in ["beta1", "beta2"] {
        let b = attrs.float(key).expect("checked");
        if !(0.0..1.0).contains(&b) {
            return Err(format!("adamw {key} must be in [0, 1), got {b}"));
        }
    }
    if attrs.float("eps").expect("checked") <= 0.0 {
        return Err("adamw eps must be positive".into());
    }
    for key in ["weight_decay", "max_grad_norm"] {
        if attrs.float(key).expect("checked") < 0.0 {
            return Err(format!("adamw {key} must not be negative"));
        }
    }
    Ok(vec![
        fixed(p.dtype, p.shape.0.clone()),
        fixed(m.dtype, p.shape.0.clone()),
        fixed(v.dtype, p.shape.0.clone()),
    ])
}

/// `pad`: zeros around x along `axis`, `before` and `after` of them (both ≥ 0) → x's dtype.
pub(super) fn pad(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    let axis = axis_of(kind, attrs, x)?;
    let (before, after) = (
        attrs.int("before").expect("checked"),
        attrs.int("after").expect("checked"),
    );
    if before < 0 || after < 0 {
        return Err(format!(
            "pad before ({before}) and after ({after}) must not be negative"
        ));
    }
    let mut dims = x.shape.0.clone();
    dims[axis] += (before + after) as u64;
    Ok(vec![fixed(x.dtype, dims)])
}

/// On an FP8 `grouped_linear_wgrad` (DESIGN.md §8): the rows of each expert, in row order, per
/// group of both operands' scales (each column of dy and of x gets one scale per `tile` rows).
pub const WGRAD_TILE: &str = "tile";
/// On an FP8 `grouped_linear_wgrad`: the rows per partial sum (a multiple of 32 dividing the
/// tile), each promoted into the FP32 accumulator.
pub const WGRAD_INTERVAL: &str = "interval";

/// Checks the FP8 attributes of a `grouped_linear_wgrad`: its tile and interval together, and
/// the scale formats (which autodiff may copy from the forward GEMM before it is FP8).
fn check_wgrad_fp8_attrs(attrs: &Attrs) -> Result<()> {
    use super::{DY_SCALE_FORMAT, X_SCALE_FORMAT};
    for key in [DY_SCALE_FORMAT, X_SCALE_FORMAT] {
        if let Some(s) = attrs.str(key)
            && crate::ScaleFormat::parse(s).is_none()
        {
            return Err(format!("{key} must be \"f32\" or \"ue8m0\", not \"{s}\""));
        }
    }
    match (attrs.int(WGRAD_TILE), attrs.int(WGRAD_INTERVAL)) {
        (None, None) => Ok(()),
        (Some(tile), Some(interval)) => {
            if tile <= 0 || interval <= 0 || interval % 32 != 0 || tile % interval != 0 {
                return Err(format!(
                    "grouped_linear_wgrad {WGRAD_INTERVAL} ({interval}) must be a positive \
                     multiple of 32 that divides the {WGRAD_TILE} ({tile})"
                ));
            }
            Ok(())
        }
        _ => Err(format!(
            "grouped_linear_wgrad in FP8 needs both {WGRAD_TILE} and {WGRAD_INTERVAL}"
        )),
    }
}

/// `grouped_linear_wgrad`: dy `[T, k, N]`, x `[T, K]` or `[T, k, K]`, indices `[T, k]` → f32
/// `[experts, N, K]`.
pub(super) fn grouped_linear_wgrad(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    check_wgrad_fp8_attrs(attrs)?;
    let GroupedLinearWgradOperands {
        dy,
        x,
        indices: idx,
    } = named(GroupedLinearWgradOperands::from_slice(ins))?;
    need_float("dy", dy)?;
    need_float("x", x)?;
    need_int("indices", idx)?;
    need_rank("indices", idx, 2)?;
    need_rank("dy", dy, 3)?;
    if dy.shape.0[..2] != idx.shape.0[..] {
        return Err(format!("dy {dy} must be [T, k, N] for indices {idx}"));
    }
    let (t, k, n) = (dy.shape.0[0], dy.shape.0[1], dy.shape.0[2]);
    let kk = match x.shape.0[..] {
        [xt, xk] if xt == t => xk,
        [xt, xs, xk] if xt == t && xs == k => xk,
        _ => {
            return Err(format!(
                "x {x} must be [{t}, K] or [{t}, {k}, K] for indices {idx}"
            ));
        }
    };
    let experts = attrs.int("experts").expect("checked");
    if experts <= 0 {
        return Err(format!(
            "grouped_linear_wgrad experts must be positive, got {experts}"
        ));
    }
    Ok(vec![fixed(DType::F32, vec![experts as u64, n, kk])])
}

/// `moe_combine_grad`: y `[T, k, D]`, weights `[T, k]`, dout `[T, D]` → dy `[T, k, D]`,
/// dweights f32 `[T, k]`.
pub(super) fn moe_combine_grad(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let MoeCombineGradOperands {
        y,
        weights: w,
        dout,
    } = named(MoeCombineGradOperands::from_slice(ins))?;
    super::moe::moe_combine(&[y, w])?;
    need_float("dout", dout)?;
    let (t, k, d) = (y.shape.0[0], y.shape.0[1], y.shape.0[2]);
    if dout.shape.0 != [t, d] {
        return Err(format!("dout {dout} must have shape [{t}, {d}]"));
    }
    Ok(vec![
        free(dout.dtype, vec![t, k, d]),
        fixed(DType::F32, vec![t, k]),
    ])
}

/// `moe_topk_grad`: logits `[T, E]`, indices `[T, k]` (k ≤ E), dweights `[T, k]` → f32
/// `[T, E]`.
pub(super) fn moe_topk_grad(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let MoeTopkGradOperands {
        logits,
        indices: idx,
        dweights: dw,
    } = named(MoeTopkGradOperands::from_slice(ins))?;
    need_float("logits", logits)?;
    need_rank("logits", logits, 2)?;
    need_int("indices", idx)?;
    need_rank("indices", idx, 2)?;
    need_float("dweights", dw)?;
    let (t, e) = (logits.shape.0[0], logits.shape.0[1]);
    let k = idx.shape.0[1];
    if idx.shape.0[0] != t || k == 0 || k > e {
        return Err(format!(
            "indices {idx} must be [{t}, k] with 1 ≤ k ≤ {e} for logits {logits}"
        ));
    }
    dims_eq("moe_topk_grad indices/dweights", idx, dw)?;
    match attrs.str("score_func") {
        Some("sigmoid" | "softmax") => {}
        other => {
            return Err(format!(
                "score_func must be \"sigmoid\" or \"softmax\", got {other:?}"
            ));
        }
    }
    Ok(vec![fixed(DType::F32, vec![t, e])])
}

/// `expert_bias_update`: bias `[E]`, indices `[T, k]`, `speed` ≥ 0 → bias' (the bias's type).
pub(super) fn expert_bias_update(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let ExpertBiasUpdateOperands { bias, indices: idx } =
        named(ExpertBiasUpdateOperands::from_slice(ins))?;
    need_float("bias", bias)?;
    need_rank("bias", bias, 1)?;
    need_int("indices", idx)?;
    need_rank("indices", idx, 2)?;
    let speed = attrs.float("speed").expect("checked");
    if speed < 0.0 {
        return Err(format!(
            "expert_bias_update speed must not be negative, got {speed}"
        ));
    }
    Ok(vec![fixed(bias.dtype, bias.shape.0.clone())])
}

/// `balance_loss`: logits `[T, E]`, indices `[T, k]` (k ≤ E), `sequences` dividing T, `alpha` ≥
/// 0 → f32 `[1]`; `balance_loss_grad` (`grad`) takes the loss's cotangent f32 `[1]` too and
/// gives f32 `[T, E]`.
pub(super) fn balance_loss(
    attrs: &Attrs,
    ins: &[&TensorType],
    grad: bool,
) -> Result<Vec<Inferred>> {
    let (logits, idx) = if grad {
        let o = named(BalanceLossGradOperands::from_slice(ins))?;
        if o.dloss.dtype != DType::F32 || o.dloss.shape.0 != [1] {
            return Err(format!("dloss must be f32[1], got {}", o.dloss));
        }
        (o.logits, o.indices)
    } else {
        let o = named(BalanceLossOperands::from_slice(ins))?;
        (o.logits, o.indices)
    };
    need_float("logits", logits)?;
    need_rank("logits", logits, 2)?;
    need_int("indices", idx)?;
    need_rank("indices", idx, 2)?;
    let (t, e) = (logits.shape.0[0], logits.shape.0[1]);
    let k = idx.shape.0[1];
    if idx.shape.0[0] != t || k == 0 || k > e {
        return Err(format!(
            "indices {idx} must be [{t}, k] with 1 ≤ k ≤ {e} for logits {logits}"
        ));
    }
    let sequences = attrs.int("sequences").expect("checked");
    if sequences <= 0 || t % sequences as u64 != 0 {
        return Err(format!(
            "sequences must be positive and divide the {t} tokens, got {sequences}"
        ));
    }
    let alpha = attrs.float("alpha").expect("checked");
    if !(alpha >= 0.0 && alpha.is_finite()) {
        return Err(format!("alpha must be zero or positive, got {alpha}"));
    }
    match attrs.str("score_func") {
        Some("sigmoid" | "softmax") => {}
        other => {
            return Err(format!(
                "score_func must be \"sigmoid\" or \"softmax\", got {other:?}"
            ));
        }
    }
    Ok(vec![if grad {
        fixed(DType::F32, vec![t, e])
    } else {
        fixed(DType::F32, vec![1])
    }])
}
