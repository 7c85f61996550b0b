//! Type rules of the dense matrix products: `linear` (`x · wᵀ`, optional bias) and `matmul`.

use super::{Inferred, Result, free, named, need_float, need_min_rank, need_rank};
use crate::TensorType;
use crate::attr::Attrs;
use crate::operands::LinearOperands;

/// Which GEMM of a training step a `linear` is (`gemm` attribute; DESIGN.md §8): the forward
/// product, or the backward's input gradient (`dgrad`: dY · W) or weight gradient (`wgrad`:
/// dYᵀ · X, whose second operand is an activation, tiled along tokens like the first).
pub const LINEAR_GEMMS: [&str; 3] = ["fprop", "dgrad", "wgrad"];

/// The training recipe's per-tensor formats (DESIGN.md §8), set on a training step's GEMMs by
/// the step builder and read by quantize-linears; without them every operand gets the policy's.
/// `x_scale_format` / `w_scale_format`: the scale format (`f32`, `ue8m0`) x / w are quantized
/// with (a Wgrad's w is the activation xᵀ).
pub const X_SCALE_FORMAT: &str = "x_scale_format";
/// See [`X_SCALE_FORMAT`].
pub const W_SCALE_FORMAT: &str = "w_scale_format";
/// On a forward GEMM: the scale format its output's gradient dY gets in the backward's Dgrad
/// and Wgrad (autodiff gives those GEMMs `x_scale_format`).
pub const DY_SCALE_FORMAT: &str = "dy_scale_format";
/// On a forward GEMM: the dtype its input is cached in for the backward (`f12e5m6`, the
/// emulated E5M6): quantize-linears adds that copy, and requantize-transposed makes the Wgrad's
/// xᵀ from it.
pub const X_CACHE: &str = "x_cache";

/// Checks the recipe attributes of a `linear` or `grouped_linear`.
pub(super) fn check_recipe_attrs(attrs: &Attrs) -> Result<()> {
    for key in [X_SCALE_FORMAT, W_SCALE_FORMAT, DY_SCALE_FORMAT] {
        if let Some(s) = attrs.str(key)
            && crate::ScaleFormat::parse(s).is_none()
        {
            return Err(format!("{key} must be \"f32\" or \"ue8m0\", not \"{s}\""));
        }
    }
    if let Some(d) = attrs.dtype(X_CACHE)
        && !d.is_block_quantized()
    {
        return Err(format!(
            "{X_CACHE} must be an FP8 type or f12e5m6 (a quantized copy), not {d}"
        ));
    }
    Ok(())
}

/// `linear`: `x [.., K]` · `w [N, K]`ᵀ (+ `bias [N]`) → `[.., N]`.
pub(super) fn linear(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    check_recipe_attrs(attrs)?;
    if let Some(g) = attrs.str("gemm")
        && !LINEAR_GEMMS.contains(&g)
    {
        return Err(format!(
            "linear gemm must be one of {}, not \"{g}\"",
            LINEAR_GEMMS.join(", ")
        ));
    }
    let LinearOperands { x, w, bias } = named(LinearOperands::from_slice(ins))?;
    need_float("input", x)?;
    need_float("weight", w)?;
    need_min_rank("input", x, 1)?;
    need_rank("weight", w, 2)?;
    if attrs.bool(super::X_SQUARE_BLOCKS) == Some(true) {
        need_rank("input", x, 2)?;
    }
    let (n, k) = (w.shape.0[0], w.shape.0[1]);
    if x.shape.last() != k {
        return Err(format!(
            "input {x} has {} features but weight {w} expects {k}",
            x.shape.last()
        ));
    }
    if let Some(b) = bias {
        need_float("bias", b)?;
        if b.shape.0 != [n] {
            return Err(format!("bias {b} must have shape [{n}]"));
        }
    }
    let mut dims = x.shape.0.clone();
    *dims.last_mut().expect("rank checked") = n;
    Ok(vec![free(x.dtype, dims)])
}

/// `matmul`: batched `x [.., M, K]` · `y [.., K, N]` (or `[.., N, K]` with `transpose_b`).
pub(super) fn matmul(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let (x, y) = (ins[0], ins[1]);
    need_float("lhs", x)?;
    need_float("rhs", y)?;
    need_min_rank("lhs", x, 2)?;
    if x.shape.rank() != y.shape.rank() {
        return Err(format!("matmul operands differ in rank: {x} vs {y}"));
    }
    let r = x.shape.rank();
    if x.shape.0[..r - 2] != y.shape.0[..r - 2] {
        return Err(format!("matmul batch dimensions differ: {x} vs {y}"));
    }
    let tb = attrs.bool("transpose_b").unwrap_or(false);
    let (yk, yn) = if tb {
        (y.shape.0[r - 1], y.shape.0[r - 2])
    } else {
        (y.shape.0[r - 2], y.shape.0[r - 1])
    };
    if x.shape.0[r - 1] != yk {
        return Err(format!(
            "matmul contraction sizes differ: {x} vs {y} (transpose_b = {tb})"
        ));
    }
    let mut dims = x.shape.0.clone();
    dims[r - 1] = yn;
    Ok(vec![free(x.dtype, dims)])
}
