//! VJPs of the elementwise kernels: SiLU and the SwiGLU of gated MLPs; and a scalar multiply
//! (loss scaling, the mean's `1/n`).

use crate::ops::elementwise::silu_scalar;
use crate::ops::error::{OpError, check_len};

/// `silu'(x) · dy` as torch's `silu_backward` writes it: `dy · σ · (1 + x · (1 − σ))` with
/// `σ = 1 / (1 + exp(−x))`.
#[inline]
fn silu_backward(dy: f32, x: f32) -> f32 {
    let s = 1.0 / (1.0 + (-x).exp());
    dy * s * (1.0 + x * (1.0 - s))
}

/// The VJP of `silu`: `dy · σ(x)(1 + x(1 − σ(x)))`, `x` and `dy` `[n]` → `[n]`.
pub fn silu_grad(x: &[f32], dy: &[f32]) -> Result<Vec<f32>, OpError> {
    check_len("dy", dy.len(), x.len())?;
    Ok(x.iter()
        .zip(dy)
        .map(|(&v, &g)| silu_backward(g, v))
        .collect())
}

/// The VJP of `y = silu(gate) ⊙ up` (all `[n]`): `(dgate, dup) = (silu'(gate) · dy · up,
/// dy · silu(gate))`, the activation unrounded (the recipe recomputes it in FP32).
pub fn swiglu_grad(gate: &[f32], up: &[f32], dy: &[f32]) -> Result<(Vec<f32>, Vec<f32>), OpError> {
    check_len("up", up.len(), gate.len())?;
    check_len("dy", dy.len(), gate.len())?;
    // As autograd splits it: the product's gradient dy · up flows into silu's backward.
    let dgate = gate
        .iter()
        .zip(up)
        .zip(dy)
        .map(|((&g, &u), &d)| silu_backward(d * u, g))
        .collect();
    let dup = gate
        .iter()
        .zip(dy)
        .map(|(&g, &d)| d * silu_scalar(g))
        .collect();
    Ok((dgate, dup))
}

/// `x · factor` elementwise: `[n]` → `[n]`.
pub fn scale(x: &[f32], factor: f32) -> Vec<f32> {
    x.iter().map(|&v| v * factor).collect()
}
