//! `rope_grad`: the VJP of `rope`, `dy[batch, seq, heads, d]` rotated back by each position's
//! angle (`dx₁ = dy₁·cos + dy₂·sin`, `dx₂ = dy₂·cos − dy₁·sin`), laid out as `rope`'s kernel:
//! one thread per (token, pair index), which rotates that pair in every head.
//!
//! The angles are `rope`'s ([`super::rope::rotation`]: the same baked inverse frequencies and
//! scaling); unlike the forward, the CPU reference (`dsc_kernels::ops::grad::rope_grad`) runs
//! in f32 with unrounded cos and sin, so only `dx` is rounded to its dtype, once.

use dsc_ir::DType;
use dsc_kernels::ops::rope::RopeStyle;
use serde::Serialize;

use super::rope::{Rotation, rotation, style_name};
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// The inverse rotation of `[batch, seq, heads, dim]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeGrad {
    /// Batch.
    pub batch: u64,
    /// Positions.
    pub seq: u64,
    /// Heads.
    pub heads: u64,
    /// Rotated dims per head (even).
    pub dim: u64,
    /// Which elements pair up.
    #[serde(serialize_with = "style_name")]
    pub style: RopeStyle,
    /// `dim / 2` inverse frequencies.
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    pub scaling: f32,
    /// Dtype of `dy` and `dx`.
    pub dtype: DType,
}

impl RopeGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "rope_grad"
    }

    fn len(&self) -> u64 {
        self.batch * self.seq * self.heads * self.dim
    }

    /// `(dy, dx)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("dy", self.dtype, self.len()),
            Param::new("dx", self.dtype, self.len()),
        ]
    }

    /// Threads: one per (token, pair index).
    fn threads(&self) -> u64 {
        self.batch * self.seq * (self.dim / 2)
    }

    /// One thread per (token, pair index).
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.threads())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.threads(),
            |e, args, i| {
                let (dy, dx) = (args[0], args[1]);
                let Rotation {
                    token,
                    cos,
                    sin,
                    a,
                    b,
                } = rotation(
                    &e,
                    i,
                    self.seq,
                    self.dim,
                    self.style,
                    &self.inv_freq,
                    self.scaling,
                )?;
                let heads = e.index(self.heads as i64)?;
                let first_row = e.muli(token, heads)?;
                let dim = e.index(self.dim as i64)?;
                e.for_const(0, self.heads as i64, 1, |e, h| {
                    let row = e.addi(first_row, h)?;
                    let base = e.muli(row, dim)?;
                    let a = e.addi(base, a)?;
                    let b = e.addi(base, b)?;
                    let g1 = e.load(dy, a)?;
                    let g1 = e.to_f32(g1)?;
                    let g2 = e.load(dy, b)?;
                    let g2 = e.to_f32(g2)?;
                    let first = e.addf(e.mulf(g1, cos)?, e.mulf(g2, sin)?)?;
                    let second = e.subf(e.mulf(g2, cos)?, e.mulf(g1, sin)?)?;
                    let first = e.round_to(first, self.dtype)?;
                    let second = e.round_to(second, self.dtype)?;
                    e.store(first, dx, a);
                    e.store(second, dx, b);
                    Ok(())
                })
            },
        )
    }
}
