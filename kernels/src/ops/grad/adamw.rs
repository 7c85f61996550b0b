//! The AdamW update with decoupled weight decay (`torch.optim.AdamW`, one tensor at a time) and
//! the global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`) that feeds it.
//!
//! The order of operations is torch's single-tensor AdamW: decay `p · (1 − lr·wd)` first, then
//! `m ← lerp(m, g, 1 − β1)`, `v ← v·β2 + (1 − β2)·g·g`, then
//! `p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)` with `bc = 1 − β^step`. The
//! hyperparameter scalars (`1 − β`, `bc`, `lr / bc1`, `sqrt(bc2)`, `1 − lr·wd`) are Python
//! floats in torch, so they are computed in f64 here and rounded to f32 where they meet a
//! tensor; the elementwise work is f32. The moments are rounded to their storage format once
//! per update (a fused kernel's rounding, not torch's after each in-place op).

use crate::ops::cast::FloatFormat;
use crate::ops::error::{OpError, check_len};
use rayon::prelude::*;

/// AdamW's hyperparameters for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// The learning rate of this step (after the schedule).
    pub lr: f32,
    /// The first moment's decay.
    pub beta1: f32,
    /// The second moment's decay.
    pub beta2: f32,
    /// Added to the bias-corrected `sqrt(v)`.
    pub eps: f32,
    /// Decoupled weight decay: the parameter is multiplied by `1 − lr · weight_decay`.
    pub weight_decay: f32,
    /// The step number, 1-based (the bias corrections use it).
    pub step: u32,
    /// The gradient's multiplier, from [`clip_scale`] (1 when not clipping).
    pub grad_scale: f32,
}

impl AdamW {
    /// Refuses what torch.optim.AdamW refuses (negative lr, eps, weight decay; β outside
    /// [0, 1)), non-finite values, step 0 (the bias correction 1 − β⁰ is 0) and a negative
    /// gradient scale.
    fn check(&self) -> Result<(), OpError> {
        let bad = |what: String| Err(OpError::Shape(format!("adamw: {what}")));
        let named = [
            ("lr", self.lr),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("grad_scale", self.grad_scale),
        ];
        for (name, v) in named {
            if !v.is_finite() {
                return bad(format!("{name} must be finite, got {v}"));
            }
            if v < 0.0 {
                return bad(format!("{name} must not be negative, got {v}"));
            }
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if v >= 1.0 {
                return bad(format!("{name} must be below 1, got {v}"));
            }
        }
        if self.step == 0 {
            return bad("step is 1-based, got 0".into());
        }
        Ok(())
    }
}

/// One AdamW update of `param` with `grad` (times `hp.grad_scale`) and the moments `m`, `v`
/// (all `[n]`), as `torch.optim.AdamW` (see the module doc for the order); returns
/// `(param', m', v')` with the moments rounded to `moments` (BF16 in the recipe).
// The (param', m', v') triple is the optimizer's whole state for a tensor; a named type would
// only hide it.
#[allow(clippy::type_complexity)]
pub fn adamw(
    param: &[f32],
    grad: &[f32],
    m: &[f32],
    v: &[f32],
    hp: &AdamW,
    moments: FloatFormat,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>), OpError> {
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    check_len("m", m.len(), n)?;
    check_len("v", v.len(), n)?;
    hp.check()?;
    let (lr, beta1, beta2) = (hp.lr as f64, hp.beta1 as f64, hp.beta2 as f64);
    // Steps beyond i32 are far past where β^step underflows to 0 anyway.
    let step = i32::try_from(hp.step).unwrap_or(i32::MAX);
    let decay = (1.0 - lr * hp.weight_decay as f64) as f32;
    let w1 = (1.0 - beta1) as f32;
    let w2 = (1.0 - beta2) as f32;
    let step_size = (lr / (1.0 - beta1.powi(step))) as f32;
    let bc2_sqrt = (1.0 - beta2.powi(step)).sqrt() as f32;
    let (b2, eps, gs) = (hp.beta2, hp.eps, hp.grad_scale);

    let (mut p_out, mut m_out, mut v_out) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    (
        p_out.par_iter_mut(),
        m_out.par_iter_mut(),
        v_out.par_iter_mut(),
        param.par_iter(),
        grad.par_iter(),
        m.par_iter(),
        v.par_iter(),
    )
        .into_par_iter()
        .for_each(|(po, mo, vo, &p, &g, &m0, &v0)| {
            // clip_grad_norm_ scales the gradient in place before the step.
            let g = g * gs;
            // torch's lerp, whose formula switches at weight 1/2 (β1 = 0.9 takes the first).
            let m1 = moments.round(if w1 < 0.5 {
                m0 + w1 * (g - m0)
            } else {
                g - (g - m0) * (1.0 - w1)
            });
            // torch's addcmul: v·β2 + value·g·g, evaluated left to right.
            let v1 = moments.round(v0 * b2 + w2 * g * g);
            let denom = v1.sqrt() / bc2_sqrt + eps;
            // torch's addcdiv with value −step_size: p + (−step_size · m) / denom.
            *po = p * decay + (-step_size * m1) / denom;
            *mo = m1;
            *vo = v1;
        });
    Ok((p_out, m_out, v_out))
}

/// `sqrt(Σ x²)` over every element of every tensor in `grads`, accumulated in f64 in order and
/// returned as f32 (the norm `clip_grad_norm_` compares with its maximum).
pub fn global_norm(grads: &[&[f32]]) -> f32 {
    let mut acc = 0.0f64;
    for g in grads {
        for &x in g.iter() {
            acc += x as f64 * x as f64;
        }
    }
    acc.sqrt() as f32
}

/// The gradient multiplier of global-norm clipping: `max_norm / (norm + 1e-6)` when
/// `max_norm > 0` and `norm > max_norm`, else 1 (no clipping; `max_norm` ≤ 0 turns it off).
pub fn clip_scale(norm: f32, max_norm: f32) -> f32 {
    if max_norm > 0.0 && norm > max_norm {
        // torch's clip_coef, in f32 as its tensors are.
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}
