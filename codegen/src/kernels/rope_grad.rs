//! `rope_grad`: the VJP of `rope`, `dy[batch, seq, heads, d]` rotated back by each position's
//! angle (`dx₁ = dy₁·cos + dy₂·sin`, `dx₂ = dy₂·cos − dy₁·sin`), laid out as `rope`'s kernel:
//! one thread per (token, pair index), which rotates that pair in every head.
//!
//! The angles and layout are `rope`'s (the spec holds a [`Rope`]: the same baked inverse
//! frequencies and scaling); unlike the forward, the CPU reference (`dsc_kernels::ops::grad::rope_grad`) runs
//! in f32 with unrounded cos and sin, so only `dx` is rounded to its dtype, once.

use serde::Serialize;

use super::rope::{Rope, Rotation};
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// The inverse rotation of `[batch, seq, heads, dim]`: `rope`'s spec, `dtype` that of `dy` and
/// `dx`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeGrad {
    /// The rotation it undoes.
    #[serde(flatten)]
    pub rope: Rope,
}

impl RopeGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "rope_grad"
    }

    /// `(dy, dx)`.
    pub fn params(&self) -> Vec<Param> {
        let (dtype, len) = (self.rope.dtype, self.rope.len());
        vec![Param::new("dy", dtype, len), Param::new("dx", dtype, len)]
    }

    /// One thread per (token, pair index).
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.rope.threads())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let rope = &self.rope;
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            rope.threads(),
            |e, args, i| {
                let (dy, dx) = (args[0], args[1]);
                let Rotation {
                    token,
                    cos,
                    sin,
                    a,
                    b,
                } = rope.rotation(&e, i)?;
                rope.for_each_head(&e, token, |e, _, base| {
                    let a = e.addi(base, a)?;
                    let b = e.addi(base, b)?;
                    let g1 = e.load(dy, a)?;
                    let g1 = e.to_f32(g1)?;
                    let g2 = e.load(dy, b)?;
                    let g2 = e.to_f32(g2)?;
                    let first = e.addf(e.mulf(g1, cos)?, e.mulf(g2, sin)?)?;
                    let second = e.subf(e.mulf(g2, cos)?, e.mulf(g1, sin)?)?;
                    let first = e.round_to(first, rope.dtype)?;
                    let second = e.round_to(second, rope.dtype)?;
                    e.store(first, dx, a);
                    e.store(second, dx, b);
                    Ok(())
                })
            },
        )
    }
}
