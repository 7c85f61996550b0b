//! Softmax along one axis, in f32: `exp(x - max) / Σ exp(x - max)`.

use super::error::{OpError, check_shape};
use super::pairwise_sum;
use rayon::prelude::*;

/// Softmax of one contiguous row in place; a row whose every element is -inf (fully masked)
/// becomes zeros instead of the NaNs of 0/0.
pub(crate) fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    for v in row.iter_mut() {
        *v = (*v - max).exp();
    }
    let sum = pairwise_sum(row, |v| v);
    // A true division, as torch's CUDA kernel does (its CPU kernel multiplies by 1 / sum).
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Softmax of `x` (shape `dims`, row-major) along `axis` (non-negative, `< dims.len()`),
/// max-subtracted, f32; rows that are entirely -inf give zeros.
pub fn softmax(x: &[f32], dims: &[usize], axis: usize) -> Result<Vec<f32>, OpError> {
    check_shape("x", x.len(), dims)?;
    if axis >= dims.len() {
        return Err(OpError::Shape(format!(
            "softmax axis {axis} is out of range for shape {dims:?}"
        )));
    }
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = x.to_vec();
    if out.is_empty() {
        return Ok(out);
    }
    if inner == 1 {
        out.par_chunks_mut(len).for_each(softmax_row);
        return Ok(out);
    }
    // Strided rows: each block of `len · inner` holds `inner` rows of stride `inner`; gather
    // each into a contiguous buffer, normalize, and scatter it back.
    out.par_chunks_mut(len * inner).for_each(|block| {
        let mut row = vec![0.0f32; len];
        for j in 0..inner {
            for (a, r) in row.iter_mut().enumerate() {
                *r = block[a * inner + j];
            }
            softmax_row(&mut row);
            for (a, &r) in row.iter().enumerate() {
                block[a * inner + j] = r;
            }
        }
    });
    Ok(out)
}
