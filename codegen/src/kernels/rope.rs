//! `rope`: rotary position embedding of `x[batch, seq, heads, d]` at positions `0..seq`: one
//! thread per (token, pair index), which computes its cos/sin once and rotates that pair in
//! every head (adjacent threads take adjacent pairs, so each head's row is read contiguously).
//!
//! The inverse frequencies are computed on the host exactly as the CPU reference computes them
//! (`RopeParams::inv_freq`, f32 as torch does) and baked into the kernel; the angle is
//! `position · inv_freq` in f32 and cos/sin come from [`Emit::sincos`]; every product is rounded
//! to the activation dtype as the reference (and Hugging Face) rounds it.

use dsc_ir::DType;
use dsc_kernels::ops::rope::RopeStyle;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// Rotation of `[batch, seq, heads, dim]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rope {
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
    /// Input, intermediate and output dtype.
    pub dtype: DType,
}

pub(super) fn style_name<S: serde::Serializer>(
    style: &RopeStyle,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(style.name())
}

impl Rope {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "rope"
    }

    /// Elements of the rotated tensor.
    pub(super) fn len(&self) -> u64 {
        self.batch * self.seq * self.heads * self.dim
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.dtype, self.len()),
            Param::new("out", self.dtype, self.len()),
        ]
    }

    /// Threads: one per (token, pair index).
    pub(super) fn threads(&self) -> u64 {
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
                let x = args[0];
                let out = args[1];
                let Rotation {
                    token,
                    cos,
                    sin,
                    a,
                    b,
                } = self.rotation(&e, i)?;
                let cos = e.round_through(cos, self.dtype)?;
                let sin = e.round_through(sin, self.dtype)?;
                self.for_each_head(&e, token, |e, base| {
                    let a = e.addi(base, a)?;
                    let b = e.addi(base, b)?;
                    let x1 = e.load(x, a)?;
                    let x1 = e.to_f32(x1)?;
                    let x2 = e.load(x, b)?;
                    let x2 = e.to_f32(x2)?;
                    let round = |v| e.round_through(v, self.dtype);
                    let x1c = round(e.mulf(x1, cos)?)?;
                    let x2s = round(e.mulf(x2, sin)?)?;
                    let x2c = round(e.mulf(x2, cos)?)?;
                    let x1s = round(e.mulf(x1, sin)?)?;
                    let first = e.subf(x1c, x2s)?;
                    let second = e.addf(x2c, x1s)?;
                    let first = e.round_to(first, self.dtype)?;
                    let second = e.round_to(second, self.dtype)?;
                    e.store(first, out, a);
                    e.store(second, out, b);
                    Ok(())
                })
            },
        )
    }
}

/// What the thread of one (token, pair index) of `[batch, seq, heads, dim]` rotates by.
pub(super) struct Rotation<'c, 'a> {
    /// The (batch, position) row.
    pub token: Value<'c, 'a>,
    /// `cos(angle) · scaling`, f32, unrounded.
    pub cos: Value<'c, 'a>,
    /// `sin(angle) · scaling`, f32, unrounded.
    pub sin: Value<'c, 'a>,
    /// The pair's first element within a head.
    pub a: Value<'c, 'a>,
    /// Its second element.
    pub b: Value<'c, 'a>,
}

/// The rotation of thread `i` (one per (token, pair index)), shared by `rope` and `rope_grad`
/// so that both take the same angles: `position · inv_freq[j]` in f32, cos/sin from
/// [`Emit::sincos`], times `scaling`.
impl Rope {
    /// The rotation of thread `i` (its token, pair and angle).
    pub(super) fn rotation<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        i: Value<'c, '_>,
    ) -> Result<Rotation<'c, 'a>, CodegenError> {
        rotation(
            e,
            i,
            self.seq,
            self.dim,
            self.style,
            &self.inv_freq,
            self.scaling,
        )
    }

    /// `body(e, base)` for each head of `token`, `base` the index of the head's first element.
    pub(super) fn for_each_head<'c>(
        &self,
        e: &Emit<'c, '_>,
        token: Value<'c, '_>,
        body: impl for<'b> FnOnce(Emit<'c, 'b>, Value<'c, 'b>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let heads = e.index(self.heads as i64)?;
        let first_row = e.muli(token, heads)?;
        let dim = e.index(self.dim as i64)?;
        e.for_const(0, self.heads as i64, 1, |e, h| {
            let row = e.addi(first_row, h)?;
            let base = e.muli(row, dim)?;
            body(e, base)
        })
    }
}

fn rotation<'c, 'a>(
    e: &Emit<'c, 'a>,
    i: Value<'c, '_>,
    seq: u64,
    dim: u64,
    style: RopeStyle,
    inv_freq: &[f32],
    scaling: f32,
) -> Result<Rotation<'c, 'a>, CodegenError> {
    let half_v = e.index((dim / 2) as i64)?;
    let j = e.remui(i, half_v)?;
    let token = e.divui(i, half_v)?;
    let seq = e.index(seq as i64)?;
    let position = e.remui(token, seq)?;
    let position = e.index_cast(position, e.int_type(32))?;
    let position = e.sitofp(position, e.f32_type())?;
    let frequency = inv_freq_at(e, inv_freq, j)?;
    let angle = e.mulf(position, frequency)?;
    let (cos, sin) = e.sincos(angle)?;
    let scaling = e.f32(scaling)?;
    let cos = e.mulf(cos, scaling)?;
    let sin = e.mulf(sin, scaling)?;
    let (a, b) = match style {
        RopeStyle::Interleaved => {
            let a = e.muli(j, e.index(2)?)?;
            (a, e.addi(a, e.index(1)?)?)
        }
        RopeStyle::Half => (j, e.addi(j, half_v)?),
    };
    Ok(Rotation {
        token,
        cos,
        sin,
        a,
        b,
    })
}

/// `inv_freq[j]` for a dynamic `j`: a chain of selects over the baked constants.
fn inv_freq_at<'c, 'a>(e: &Emit<'c, 'a>, inv_freq: &[f32], j: Value<'c, 'a>) -> Emitted<'c, 'a> {
    let mut value = e.f32(inv_freq.first().copied().unwrap_or(0.0))?;
    for (i, &f) in inv_freq.iter().enumerate().skip(1) {
        let at = e.index(i as i64)?;
        let hit = e.cmpi(CmpiPredicate::Eq, j, at)?;
        let f = e.f32(f)?;
        value = e.select(hit, f, value)?;
    }
    Ok(value)
}
