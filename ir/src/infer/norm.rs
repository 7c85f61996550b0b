//! Type rules of the normalizations: `rms_norm`, its residual-fused forms and `softmax`.

use super::{Inferred, Result, axis_of, fixed, fp8, free, need_float, need_min_rank};
use crate::attr::Attrs;
use crate::{OpKind, TensorType};

/// `rms_norm`: `x [.., D]` scaled by `weight [D]`.
pub(super) fn rms_norm(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let (x, w) = (ins[0], ins[1]);
    need_float("input", x)?;
    need_float("weight", w)?;
    need_min_rank("input", x, 1)?;
    if w.shape.0 != [x.shape.last()] {
        return Err(format!(
            "weight {w} must have shape [{}] to match input {x}",
            x.shape.last()
        ));
    }
    if attrs.float("eps").is_some_and(|e| e <= 0.0) {
        return Err("eps must be positive".into());
    }
    Ok(vec![free(x.dtype, x.shape.0.clone())])
}

/// `add_rms_norm` and `add_rms_norm_quant`: x and residual of one type, summed, then the
/// norm's (or the quantized norm's) results, then the sum in their dtype.
pub(super) fn add_rms_norm(
    kind: OpKind,
    attrs: &Attrs,
    ins: &[&TensorType],
) -> Result<Vec<Inferred>> {
    let (x, residual, w) = (ins[0], ins[1], ins[2]);
    need_float("input", x)?;
    if residual != x {
        return Err(format!(
            "{kind}: residual {residual} must have the type of x {x}"
        ));
    }
    let mut out = match kind {
        OpKind::AddRmsNorm => rms_norm(attrs, &[x, w])?,
        _ => fp8::infer(OpKind::RmsNormQuant, attrs, &[x, w])?,
    };
    out.push(fixed(x.dtype, x.shape.0.clone()));
    Ok(out)
}

/// `softmax` along `axis`.
pub(super) fn softmax(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    need_float("input", x)?;
    axis_of(kind, attrs, x)?;
    Ok(vec![free(x.dtype, x.shape.0.clone())])
}
