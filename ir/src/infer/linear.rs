//! Type rules of the dense matrix products: `linear` (`x · wᵀ`, optional bias) and `matmul`.

use super::{Inferred, Result, free, named, need_float, need_min_rank, need_rank};
use crate::TensorType;
use crate::attr::Attrs;
use crate::operands::LinearOperands;

/// Which GEMM of a training step a `linear` is (`gemm` attribute; DESIGN.md §8): the forward
/// product, or the backward's input gradient (`dgrad`: dY · W) or weight gradient (`wgrad`:
/// dYᵀ · X, whose second operand is an activation, tiled along tokens like the first).
pub const LINEAR_GEMMS: [&str; 3] = ["fprop", "dgrad", "wgrad"];

/// `linear`: `x [.., K]` · `w [N, K]`ᵀ (+ `bias [N]`) → `[.., N]`.
pub(super) fn linear(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
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
