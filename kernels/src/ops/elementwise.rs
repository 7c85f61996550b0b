//! Elementwise kernels: SiLU, product, sum, and the SwiGLU of gated MLPs.

use super::cast::FloatFormat;
use super::error::{OpError, check_len};

/// `silu(x) = x · sigmoid(x)`, evaluated as torch does: `x / (1 + exp(-x))`.
#[inline]
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `silu` of every element: `[n]` → `[n]`.
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| silu_scalar(v)).collect()
}

/// Applies `f` to same-length operands, refusing a length mismatch.
fn zip_with(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Result<Vec<f32>, OpError> {
    check_len("rhs", b.len(), a.len())?;
    Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect())
}

/// `a ⊙ b`: two `[n]` operands → `[n]`.
pub fn mul(a: &[f32], b: &[f32]) -> Result<Vec<f32>, OpError> {
    zip_with(a, b, |x, y| x * y)
}

/// `a + b`: `a` `[n]` and `b` `[n]`, or `b` `[p]` with `p` dividing `n` repeated over `a`
/// (`a[i] + b[i % p]`: the IR's `[.., N] + [N]`, a bias added to every row) → `[n]`.
pub fn add(a: &[f32], b: &[f32]) -> Result<Vec<f32>, OpError> {
    if b.len() == a.len() {
        return zip_with(a, b, |x, y| x + y);
    }
    if b.is_empty() || !a.len().is_multiple_of(b.len()) {
        check_len("rhs", b.len(), a.len())?;
    }
    Ok(a.chunks(b.len())
        .flat_map(|row| row.iter().zip(b).map(|(&x, &y)| x + y))
        .collect())
}

/// `round(silu(gate)) ⊙ up`: two `[n]` operands → `[n]`; `act` is the dtype HF rounds the
/// activation to before the product (`act_fn(gate_proj(x))` is a tensor of the model's dtype;
/// [`FloatFormat::F32`] for none).
pub fn swiglu(gate: &[f32], up: &[f32], act: FloatFormat) -> Result<Vec<f32>, OpError> {
    zip_with(gate, up, |g, u| act.round(silu_scalar(g)) * u)
}
