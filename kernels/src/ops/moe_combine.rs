//! Combining routed expert outputs: `Σ_k w[t, k] · y[t, k, :]`, plus the shared experts.

use super::cast::FloatFormat;
use super::error::{OpError, check_shape, ranked};
use dsc_ir::Shape;

/// Sizes of `moe_combine` (and its gradient): the routed outputs y `[tokens, top_k, dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CombineDims {
    pub tokens: usize,
    pub top_k: usize,
    pub dim: usize,
}

impl CombineDims {
    /// The sizes of the op whose routed outputs have this shape (rank 3).
    pub fn from_shapes(y: &Shape) -> Result<Self, OpError> {
        let [tokens, top_k, dim] = ranked("expert outputs", y)?;
        Ok(CombineDims { tokens, top_k, dim })
    }
}

/// `out[t, :] = round(Σ_j weights[t, j] · y[t, j, :]) (+ shared[t, :])`: y `[t, k, d]`,
/// weights `[t, k]`, shared `[t, d]` → `[t, d]`, products and sums in f32 over slots in order.
/// `routed` is the dtype HF rounds the routed sum to before adding the shared experts (its
/// `moe()` returns the model's dtype; [`FloatFormat::F32`] for none).
pub fn moe_combine(
    y: &[f32],
    weights: &[f32],
    shared: Option<&[f32]>,
    t: usize,
    k: usize,
    d: usize,
    routed: FloatFormat,
) -> Result<Vec<f32>, OpError> {
    check_shape("expert outputs", y.len(), &[t, k, d])?;
    check_shape("weights", weights.len(), &[t, k])?;
    if let Some(s) = shared {
        check_shape("shared", s.len(), &[t, d])?;
    }
    let mut out = vec![0.0f32; t * d];
    for tok in 0..t {
        let o = &mut out[tok * d..][..d];
        for j in 0..k {
            let w = weights[tok * k + j];
            for (acc, &v) in o.iter_mut().zip(&y[(tok * k + j) * d..][..d]) {
                *acc += w * v;
            }
        }
        routed.round_slice(o);
        if let Some(s) = shared {
            for (acc, &v) in o.iter_mut().zip(&s[tok * d..][..d]) {
                *acc += v;
            }
        }
    }
    Ok(out)
}
