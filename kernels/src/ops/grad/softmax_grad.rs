//! The VJP of softmax along one axis, from the forward's output (as torch's
//! `_softmax_backward_data`): `dx = y ⊙ (dy − Σ_axis dy ⊙ y)`.

use crate::ops::error::{OpError, check_len, check_shape};
use crate::ops::pairwise_sum;
use rayon::prelude::*;

/// `dx = y ⊙ (dy − Σ_axis(dy ⊙ y))` for `y = softmax(x)` along `axis` of `dims` (row-major,
/// any axis); `y` and `dy` have shape `dims`, and so does the result.
pub fn softmax_grad(
    y: &[f32],
    dy: &[f32],
    dims: &[usize],
    axis: usize,
) -> Result<Vec<f32>, OpError> {
    check_shape("y", y.len(), dims)?;
    check_len("dy", dy.len(), y.len())?;
    if axis >= dims.len() {
        return Err(OpError::Shape(format!(
            "softmax_grad axis {axis} is out of range for shape {dims:?}"
        )));
    }
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut dx = vec![0.0f32; y.len()];
    // An empty tensor has a zero in `dims`, so the chunk size below is never 0.
    if dx.is_empty() {
        return Ok(dx);
    }
    // Each block of `len · inner` holds `inner` rows of stride `inner` (contiguous when
    // inner = 1); the products of a row are gathered so the dot product is summed pairwise.
    dx.par_chunks_mut(len * inner)
        .zip(y.par_chunks(len * inner))
        .zip(dy.par_chunks(len * inner))
        .for_each(|((o, yb), gb)| {
            let mut prod = vec![0.0f32; len];
            for j in 0..inner {
                for (a, p) in prod.iter_mut().enumerate() {
                    let k = a * inner + j;
                    *p = gb[k] * yb[k];
                }
                let dot = pairwise_sum(&prod, |v| v);
                for a in 0..len {
                    let k = a * inner + j;
                    o[k] = yb[k] * (gb[k] - dot);
                }
            }
        });
    Ok(dx)
}
