//! The VJP of RMS normalization over the last axis (the forward is
//! [`rms_norm`](fn@crate::ops::rms_norm)), recomputing the statistics from `x` as the recipe
//! does (DESIGN.md §8: RMSNorm recomputed in backward).

use super::reduce::sum_rows_pairwise;
use crate::ops::error::{OpError, check_len, check_shape};
use crate::ops::pairwise_sum;
use rayon::prelude::*;

/// The VJP of `y = w ⊙ x · r`, `r = 1/sqrt(mean(x²) + eps)`, for x and dy `[rows, d]` and w
/// `[d]`: `(dx, dw)` with `dx = r·(w⊙dy) − x·r³·mean(x⊙w⊙dy)` per row and
/// `dw = Σ_rows dy ⊙ x·r` (pairwise over rows in index order); f32, eps rounded to f32.
pub fn rms_norm_grad(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    rows: usize,
    d: usize,
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>), OpError> {
    check_shape("x", x.len(), &[rows, d])?;
    check_len("weight", w.len(), d)?;
    check_len("dy", dy.len(), x.len())?;
    if eps.is_nan() || eps <= 0.0 {
        return Err(OpError::Shape(format!(
            "rms_norm_grad eps must be positive, got {eps}"
        )));
    }
    let mut dx = vec![0.0f32; x.len()];
    let mut dw = vec![0.0f32; d];
    if d == 0 {
        return Ok((dx, dw));
    }
    // As the forward: torch adds the Python float eps to an f32 tensor in f32.
    let eps = eps as f32;
    // Each row's share of dw, dy ⊙ (x·r), summed over rows below in a fixed tree.
    let mut dw_rows = vec![0.0f32; x.len()];
    dx.par_chunks_mut(d)
        .zip(dw_rows.par_chunks_mut(d))
        .zip(x.par_chunks(d))
        .zip(dy.par_chunks(d))
        .for_each(|(((dxr, dwr), xr), gr)| {
            let variance = pairwise_sum(xr, |v| v * v) / d as f32;
            let r = 1.0 / (variance + eps).sqrt();
            // dwr holds x ⊙ (w ⊙ dy) first, so its mean is summed pairwise like the variance.
            for ((p, &xv), (&wv, &g)) in dwr.iter_mut().zip(xr).zip(w.iter().zip(gr)) {
                *p = xv * (wv * g);
            }
            let mean = pairwise_sum(dwr, |v| v) / d as f32;
            let r3_mean = r * r * r * mean;
            for (k, o) in dxr.iter_mut().enumerate() {
                *o = r * (w[k] * gr[k]) - xr[k] * r3_mean;
                dwr[k] = gr[k] * (xr[k] * r);
            }
        });
    sum_rows_pairwise(&dw_rows, rows, d, &mut dw);
    Ok((dx, dw))
}
