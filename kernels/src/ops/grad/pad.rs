//! Padding with zeros along one axis: the VJP of `slice` (the slice's gradient put back in
//! place, zeros where the slice did not read).

use crate::ops::error::{OpError, check_shape, numel};

/// `x` (shape `dims`) with `before` copies of `zero` ahead of it and `after` behind it along
/// `axis`, every other axis whole: the result has `dims[axis] + before + after` there.
pub fn pad<T: Copy>(
    x: &[T],
    dims: &[usize],
    axis: usize,
    before: usize,
    after: usize,
    zero: T,
) -> Result<Vec<T>, OpError> {
    check_shape("x", x.len(), dims)?;
    if axis >= dims.len() {
        return Err(OpError::Shape(format!(
            "pad axis {axis} is out of range for shape {dims:?}"
        )));
    }
    let inner = numel("pad output", &dims[axis + 1..])?;
    let outer = numel("pad output", &dims[..axis])?;
    let len = dims[axis]
        .checked_add(before)
        .and_then(|l| l.checked_add(after))
        .ok_or_else(|| OpError::Shape("pad output is too large".into()))?;
    let total = numel("pad output", &[outer, len, inner])?;
    let mut out = Vec::with_capacity(total);
    let take = dims[axis] * inner;
    for o in 0..outer {
        out.extend(std::iter::repeat_n(zero, before * inner));
        out.extend_from_slice(&x[o * take..][..take]);
        out.extend(std::iter::repeat_n(zero, after * inner));
    }
    Ok(out)
}
