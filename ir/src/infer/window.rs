//! Column windows: an op that reads only `[start, end]` of its operand's last axis, a slice of
//! that axis folded into it so that the slice's copy is never made (`fold-slices`; fused
//! attention's q, k and v windows are [`super::ATTENTION_WINDOWS`]).
//!
//! `rope`, `rms_norm` and `rms_norm_quant` take `x_cols = [start, end]`: their rule, kernel and
//! CPU reference see x's window (MLA's q_pe and k_pe read in place by rope, its compressed kv
//! by the kv norm), the results being what they would be over the slice.

use super::Result;
use crate::attr::Attrs;
use crate::{OpKind, Shape, TensorType};

/// The attribute of a `rope` or norm that reads a column window of its x (operand 0).
pub const X_COLS: &str = "x_cols";

/// The kinds that take [`X_COLS`].
pub const X_WINDOWED: [OpKind; 3] = [OpKind::Rope, OpKind::RmsNorm, OpKind::RmsNormQuant];

/// The type of what an op with `attrs` reads from an operand of type `ty` whose window
/// attribute is `key`: the operand's, or with the attribute its window `[start, end]` of the
/// last axis.
pub fn window_type(attrs: &Attrs, key: &str, ty: &TensorType) -> Result<TensorType> {
    let Some(cols) = attrs.ints(key) else {
        return Ok(ty.clone());
    };
    let last = ty.shape.last();
    match *cols {
        [start, end] if 0 <= start && start < end && end as u64 <= last => {
            let mut dims = ty.shape.dims().to_vec();
            if let Some(d) = dims.last_mut() {
                *d = (end - start) as u64;
            }
            Ok(TensorType {
                dtype: ty.dtype,
                shape: Shape(dims),
            })
        }
        _ => Err(format!(
            "{key} must be [start, end] with 0 <= start < end <= {last} (the operand is {ty}), got {cols:?}"
        )),
    }
}

/// The type of what a `rope` or norm with `attrs` reads from its x of type `x`: x's, or with
/// [`X_COLS`] its window.
pub fn x_window_type(attrs: &Attrs, x: &TensorType) -> Result<TensorType> {
    window_type(attrs, X_COLS, x)
}
