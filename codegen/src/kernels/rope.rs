//! `rope`: rotary position embedding of `x[batch, seq, heads, d]` at positions `0..seq`: one
//! thread per (token, pair index), which computes its cos/sin once and rotates that pair in
//! every head (adjacent threads take adjacent pairs, so each head's row is read contiguously).
//! Where a head's pairs split into 16-byte chunks (f32 or bf16), a thread takes a chunk of
//! consecutive pairs (`interleaved`) or the matching chunks of both halves (`half`) instead,
//! with one 16-byte load and store per chunk and head, and the same arithmetic per pair; a
//! token's heads are then split into sets of at most 16 (a thread per set) to keep enough
//! threads in the launch (V3's 128 heads: 8 sets, twice the one-pair form's threads).
//!
//! x may be read in place from a wider tensor (`x_row`: MLA's q_pe and k_pe, folded slices):
//! each (token, head) row of it is `dim` elements at an offset in a row of that tensor; the
//! output is contiguous. The 16-byte form then needs the offset and the wider row in whole
//! chunks too.
//!
//! The inverse frequencies are computed on the host exactly as the CPU reference computes them
//! (`RopeParams::inv_freq`, f32 as torch does) and baked into the kernel; the angle is
//! `position · inv_freq` in f32 and cos/sin come from [`Emit::sincos`]; every product is rounded
//! to the activation dtype as the reference (and Hugging Face) rounds it.

use dsc_ir::DType;
use dsc_kernels::ops::rope::{RopeParams, RopeStyle};
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::row_window::RowWindow;
use super::wide_access::{element_address, load_f32s, per_access, store_f32s};
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// Heads one thread of the 16-byte form rotates at most: a token's heads are split into the
/// fewest sets of at most this many (the cos/sin of a chunk are computed once per set), so that
/// a launch at V3's shapes (128 heads) has 8 threads per (token, chunk), enough loads in flight.
const HEADS_PER_THREAD: u64 = 16;

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
    /// x read in place from a wider tensor; `None`: x is its own tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_row: Option<RowWindow>,
}

pub(super) fn style_name<S: serde::Serializer>(
    style: &RopeStyle,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(style.name())
}

impl Rope {
    /// The rope of a contiguous `x[dims]` (`[batch, seq, heads, dim]`) in `dtype`, with
    /// `params`' frequencies (computed on the host as the CPU reference computes them) and
    /// scaling.
    pub fn new(dims: [u64; 4], params: &RopeParams, dtype: DType) -> Self {
        Rope {
            batch: dims[0],
            seq: dims[1],
            heads: dims[2],
            dim: dims[3],
            style: params.style,
            inv_freq: params.inv_freq(dims[3] as usize),
            scaling: params.attention_scaling(),
            dtype,
            x_row: None,
        }
    }

    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "rope"
    }

    /// Elements of the rotated tensor.
    pub(super) fn len(&self) -> u64 {
        self.batch * self.seq * self.heads * self.dim
    }

    /// `(x, out)`; x is the wider tensor when read in place.
    pub fn params(&self) -> Vec<Param> {
        let rows = self.batch * self.seq * self.heads;
        let x_len = self.x_row.map_or(self.len(), |r| rows * r.stride);
        vec![
            Param::new("x", self.dtype, x_len),
            Param::new("out", self.dtype, self.len()),
        ]
    }

    /// The index of the first element of (token, head) row `row` in x and in the output.
    fn row_bases<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        row: Value<'c, 'a>,
    ) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
        let out = RowWindow::row_start(None, e, row, self.dim)?;
        let x = match self.x_row {
            None => out,
            window => RowWindow::row_start(window, e, row, self.dim)?,
        };
        Ok((x, out))
    }

    /// Threads: one per (token, pair index).
    pub(super) fn threads(&self) -> u64 {
        self.batch * self.seq * (self.dim / 2)
    }

    /// Pairs each thread of the 16-byte form rotates in every head: a chunk of 16 bytes of
    /// consecutive pairs for `interleaved` (4 of bf16, 2 of f32), or the matching 16-byte chunks
    /// of both halves for `half` (8 of bf16, 4 of f32), when a head's pairs split into whole
    /// chunks (so every chunk is 16-byte aligned); `None` for one pair per thread.
    fn pairs_per_thread(&self) -> Option<u64> {
        if !matches!(self.dtype, DType::F32 | DType::Bf16) {
            return None;
        }
        let per = per_access(self.dtype);
        let pairs = match self.style {
            RopeStyle::Interleaved => per / 2,
            RopeStyle::Half => per,
        };
        let half = self.dim / 2;
        // Read in place, every chunk of x must be aligned in the wider rows too.
        let aligned = RowWindow::whole_chunks(self.x_row, per);
        (half > 0 && half.is_multiple_of(pairs) && aligned).then_some(pairs)
    }

    /// Head sets of a token in the 16-byte form: the fewest (a divisor of `heads`) of at most
    /// [`HEADS_PER_THREAD`] heads each.
    fn head_sets(&self) -> u64 {
        (1..=self.heads)
            .find(|&s| self.heads.is_multiple_of(s) && self.heads / s <= HEADS_PER_THREAD)
            .unwrap_or(1)
    }

    /// One thread per (token, head set, chunk of pairs), or per (token, pair index).
    pub fn launch(&self) -> Launch {
        Launch::per_element(match self.pairs_per_thread() {
            Some(pairs) => self.threads() / pairs * self.head_sets(),
            None => self.threads(),
        })
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(pairs) = self.pairs_per_thread() {
            return self.build_chunked(module, entry, pairs);
        }
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
                self.for_each_head(&e, token, |e, x_base, base| {
                    let x1 = e.load(x, e.addi(x_base, a)?)?;
                    let x1 = e.to_f32(x1)?;
                    let x2 = e.load(x, e.addi(x_base, b)?)?;
                    let x2 = e.to_f32(x2)?;
                    let a = e.addi(base, a)?;
                    let b = e.addi(base, b)?;
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

impl Rope {
    /// Thread `c = (token · sets + set) · half/pairs + j0/pairs` rotates pairs `j0 .. j0 + pairs`
    /// in heads `set, set + sets, ..` of its token (at each step the threads of a warp cover
    /// adjacent heads): the cos/sin of each pair once, as the one-pair form computes them, then
    /// per head one or two 16-byte loads, the one-pair form's products and roundings for each
    /// pair, and the same stores.
    fn build_chunked(
        &self,
        module: &KernelModule<'_>,
        entry: &str,
        pairs: u64,
    ) -> Result<(), CodegenError> {
        let half = self.dim / 2;
        let groups = half / pairs;
        let sets = self.head_sets();
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.threads() / pairs * sets,
            |e, args, c| {
                let (x, out) = (args[0], args[1]);
                let groups_v = e.index(groups as i64)?;
                let g = e.remui(c, groups_v)?;
                let rest = e.divui(c, groups_v)?;
                let sets_v = e.index(sets as i64)?;
                let set = e.remui(rest, sets_v)?;
                let token = e.divui(rest, sets_v)?;
                let position = e.remui(token, e.index(self.seq as i64)?)?;
                let position = e.index_cast(position, e.int_type(32))?;
                let position = e.sitofp(position, e.f32_type())?;
                let scaling = e.f32(self.scaling)?;
                let mut cos = Vec::with_capacity(pairs as usize);
                let mut sin = Vec::with_capacity(pairs as usize);
                for p in 0..pairs {
                    // inv_freq[g · pairs + p]: a chain over the chunk's `groups` candidates.
                    let candidates: Vec<f32> = (0..groups)
                        .map(|q| self.inv_freq[(q * pairs + p) as usize])
                        .collect();
                    let frequency = inv_freq_at(&e, &candidates, g)?;
                    let angle = e.mulf(position, frequency)?;
                    let (c, s) = e.sincos(angle)?;
                    let c = e.mulf(c, scaling)?;
                    let s = e.mulf(s, scaling)?;
                    cos.push(e.round_through(c, self.dtype)?);
                    sin.push(e.round_through(s, self.dtype)?);
                }
                let j0 = e.muli(g, e.index(pairs as i64)?)?;
                let (per, dtype) = (per_access(self.dtype), self.dtype);
                let first_row = e.muli(token, e.index(self.heads as i64)?)?;
                let first_row = e.addi(first_row, set)?;
                e.for_const(0, (self.heads / sets) as i64, 1, |e, k| {
                    let row = e.addi(first_row, e.muli(k, sets_v)?)?;
                    let (x_base, base) = self.row_bases(&e, row)?;
                    let rotate = |x1, x2, p: usize| {
                        let round = |v| e.round_through(v, dtype);
                        let x1c = round(e.mulf(x1, cos[p])?)?;
                        let x2s = round(e.mulf(x2, sin[p])?)?;
                        let x2c = round(e.mulf(x2, cos[p])?)?;
                        let x1s = round(e.mulf(x1, sin[p])?)?;
                        Ok::<_, CodegenError>((e.subf(x1c, x2s)?, e.addf(x2c, x1s)?))
                    };
                    match self.style {
                        RopeStyle::Interleaved => {
                            let j = e.muli(j0, e.index(2)?)?;
                            let at = element_address(&e, x, dtype, e.addi(x_base, j)?)?;
                            let v = load_f32s(&e, at, dtype, per)?;
                            let mut rotated = Vec::with_capacity(per as usize);
                            for (p, pair) in v.chunks(2).enumerate() {
                                let (a, b) = rotate(pair[0], pair[1], p)?;
                                rotated.extend([a, b]);
                            }
                            let at = element_address(&e, out, dtype, e.addi(base, j)?)?;
                            store_f32s(&e, &rotated, at, dtype)
                        }
                        RopeStyle::Half => {
                            let half = e.index(half as i64)?;
                            let x_low = e.addi(x_base, j0)?;
                            let x_high = e.addi(x_low, half)?;
                            let x1 =
                                load_f32s(&e, element_address(&e, x, dtype, x_low)?, dtype, per)?;
                            let x2 =
                                load_f32s(&e, element_address(&e, x, dtype, x_high)?, dtype, per)?;
                            let low = e.addi(base, j0)?;
                            let high = e.addi(low, half)?;
                            let mut firsts = Vec::with_capacity(per as usize);
                            let mut seconds = Vec::with_capacity(per as usize);
                            for p in 0..per as usize {
                                let (a, b) = rotate(x1[p], x2[p], p)?;
                                firsts.push(a);
                                seconds.push(b);
                            }
                            store_f32s(&e, &firsts, element_address(&e, out, dtype, low)?, dtype)?;
                            store_f32s(&e, &seconds, element_address(&e, out, dtype, high)?, dtype)
                        }
                    }
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

    /// `body(e, x_base, base)` for each head of `token`: the indices of the head's first
    /// element in x and in the output (the same unless x is read in place).
    pub(super) fn for_each_head<'c>(
        &self,
        e: &Emit<'c, '_>,
        token: Value<'c, '_>,
        body: impl for<'b> FnOnce(
            Emit<'c, 'b>,
            Value<'c, 'b>,
            Value<'c, 'b>,
        ) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let heads = e.index(self.heads as i64)?;
        let first_row = e.muli(token, heads)?;
        e.for_const(0, self.heads as i64, 1, |e, h| {
            let row = e.addi(first_row, h)?;
            let (x_base, base) = self.row_bases(&e, row)?;
            body(e, x_base, base)
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
