//! RMS normalization over the last axis, as Hugging Face's `LlamaRMSNorm` /
//! `DeepseekV3RMSNorm` compute it:
//!
//! ```text
//! variance = x.float().pow(2).mean(-1)          # f32
//! x = x * torch.rsqrt(variance + eps)           # f32
//! return weight * x.to(input_dtype)             # normalized x rounded first, then × weight
//! ```

use super::cast::FloatFormat;
use super::error::{OpError, check_len, check_shape};
use super::pairwise_sum;
use rayon::prelude::*;

/// `y[r, :] = w · round(x[r, :] · rsqrt(mean(x[r, :]²) + eps))`: x `[rows, d]`, w `[d]` →
/// `[rows, d]`, statistics in f32; `normalized` is the dtype HF rounds the normalized row to
/// before the weight multiply (the input's dtype; [`FloatFormat::F32`] for none).
pub fn rms_norm(
    x: &[f32],
    w: &[f32],
    rows: usize,
    d: usize,
    eps: f64,
    normalized: FloatFormat,
) -> Result<Vec<f32>, OpError> {
    check_shape("x", x.len(), &[rows, d])?;
    check_len("weight", w.len(), d)?;
    if eps.is_nan() || eps <= 0.0 {
        return Err(OpError::Shape(format!(
            "rms_norm eps must be positive, got {eps}"
        )));
    }
    let mut y = vec![0.0f32; x.len()];
    if d == 0 {
        return Ok(y);
    }
    // torch adds the Python float eps to an f32 tensor in f32.
    let eps = eps as f32;
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| {
            // torch's CPU mean is sum / n (the CUDA kernel multiplies by 1/n: ≤ 1 ulp apart).
            let variance = pairwise_sum(xr, |v| v * v) / d as f32;
            let inv = 1.0 / (variance + eps).sqrt();
            for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *o = wv * normalized.round(xv * inv);
            }
        });
    Ok(y)
}
