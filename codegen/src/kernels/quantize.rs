//! `quantize` (1 × tile activation groups) and `swiglu_quant`: one thread per 16-byte chunk of
//! input ([`super::row_chunks`]) where rows and groups split into whole chunks, else one warp per
//! group (always for the emulated E5M6, whose codes are 16-bit: a training step's o_proj input
//! cache, docs/e5m6.md).
//!
//! For row r and group g: `amax` over the group's elements (NaN skipped), `s = max(amax, 1e-4) /
//! fp8_max` (UE8M0: rounded up to a power of two), codes `fp8(x / s)` with a true division,
//! round to nearest even, saturating (DESIGN.md §3) — bit-identical to the CPU reference.
//! `swiglu_quant` first forms `round(round(silu(gate)) · up)` in the dtype the unfused `swiglu`
//! would have stored.

use dsc_ir::{DType, ScaleFormat};
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::row_chunks::{RowChunks, load_elements, quantize_chunk};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted, Reduction};
use crate::mlir::{KernelModule, global_thread_index};

/// Threads per block of [`ActQuant`] (8 warps: 8 groups per block).
pub const THREADS: u32 = 256;

/// How a quantizing kernel writes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuantSpec {
    /// Elements per group along the last axis.
    pub tile: u64,
    /// FP8 format of the codes.
    pub format: DType,
    /// Scale representation.
    pub scale_format: ScaleFormat,
}

impl QuantSpec {
    /// Groups per row of `dim`.
    pub fn groups(&self, dim: u64) -> u64 {
        dim.div_ceil(self.tile)
    }

    /// `(codes, scales)` for `rows` rows of `dim`.
    pub fn output_params(&self, rows: u64, dim: u64) -> [Param; 2] {
        [
            Param::new("codes", self.format, rows * dim),
            Param::new("scales", DType::F32, rows * self.groups(dim)),
        ]
    }
}

/// Where the quantized values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantSource {
    /// A stored activation of this dtype.
    Plain(DType),
    /// `swiglu(gate, up)` of these dtypes, rounded to `activation` as the unfused op stores it.
    Swiglu {
        /// Dtype of both inputs.
        input: DType,
        /// Dtype the unfused swiglu stores.
        activation: DType,
    },
}

impl QuantSource {
    /// The dtype read from memory.
    pub fn input(&self) -> DType {
        match *self {
            QuantSource::Plain(dtype) => dtype,
            QuantSource::Swiglu { input, .. } => input,
        }
    }

    /// The value quantized from the elements read (`[x]` or `[gate, up]`), as the unfused ops
    /// would have stored it.
    fn value<'c, 'a>(&self, e: &Emit<'c, 'a>, read: &[Value<'c, 'a>]) -> Emitted<'c, 'a> {
        match *self {
            QuantSource::Plain(_) => Ok(read[0]),
            QuantSource::Swiglu { activation, .. } => {
                let act = e.silu(read[0])?;
                let act = e.round_through(act, activation)?;
                let h = e.mulf(act, read[1])?;
                e.round_through(h, activation)
            }
        }
    }
}

/// Quantization of `rows` rows of `dim`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActQuant {
    /// Rows.
    pub rows: u64,
    /// Row width (K).
    pub dim: u64,
    /// The input.
    pub source: QuantSource,
    /// The output.
    pub quant: QuantSpec,
}

impl ActQuant {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        match self.source {
            QuantSource::Plain(_) => "quantize",
            QuantSource::Swiglu { .. } => "swiglu_quant",
        }
    }

    /// `(x, codes, scales)` or `(gate, up, codes, scales)`.
    pub fn params(&self) -> Vec<Param> {
        let len = self.rows * self.dim;
        let mut params = match self.source {
            QuantSource::Plain(dtype) => vec![Param::new("x", dtype, len)],
            QuantSource::Swiglu { input, .. } => {
                vec![Param::new("gate", input, len), Param::new("up", input, len)]
            }
        };
        params.extend(self.quant.output_params(self.rows, self.dim));
        params
    }

    /// The 16-byte chunk form's layout, when rows and groups split into whole chunks.
    fn chunks(&self) -> Option<RowChunks> {
        // The chunked form packs one-byte codes.
        if self.quant.format == DType::F12E5M6 {
            return None;
        }
        RowChunks::for_groups(self.dim, self.source.input(), &self.quant)
    }

    /// One thread per 16-byte chunk of input (a group's chunks in consecutive threads), else
    /// one warp per group.
    pub fn launch(&self) -> Launch {
        let groups = self.rows * self.quant.groups(self.dim);
        match self.chunks() {
            Some(chunks) => Launch::blocks((groups * chunks.lanes).div_ceil(256), THREADS),
            None => Launch::blocks(groups.div_ceil(u64::from(THREADS / 32)), THREADS),
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(chunks) = self.chunks() {
            return self.build_chunked(chunks, module, entry);
        }
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, types.len())?;
            let (codes, scales) = (args[args.len() - 2], args[args.len() - 1]);
            let thread = global_thread_index(context, block, location)?;
            let thirty_two = e.index(32)?;
            let group = e.divui(thread, thirty_two)?;
            let lane = e.remui(thread, thirty_two)?;
            let groups_per_row = self.quant.groups(self.dim);
            let total = e.index((self.rows * groups_per_row) as i64)?;
            let in_bounds = e.lt(group, total)?;
            e.if_then(in_bounds, |e| {
                let per_row = e.index(groups_per_row as i64)?;
                let row = e.divui(group, per_row)?;
                let g = e.remui(group, per_row)?;
                let dim = e.index(self.dim as i64)?;
                let base = e.muli(row, dim)?;
                let load = ActRow {
                    source: self.source,
                    args: &args,
                    base,
                };
                quantize_group(
                    &e,
                    &self.quant,
                    self.dim,
                    row,
                    g,
                    lane,
                    &load,
                    codes,
                    scales,
                )
            })
        })
    }

    /// The 16-byte chunk form: thread `t` holds chunk `t % lanes` of group `t / lanes`.
    fn build_chunked(
        &self,
        chunks: RowChunks,
        module: &KernelModule<'_>,
        entry: &str,
    ) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, types.len())?;
            let (codes, scales) = (args[args.len() - 2], args[args.len() - 1]);
            let inputs = &args[..args.len() - 2];
            let thread = global_thread_index(context, block, location)?;
            let lanes = e.index(chunks.lanes as i64)?;
            let group = e.divui(thread, lanes)?;
            let lane = e.remui(thread, lanes)?;
            let per_row = e.index(self.quant.groups(self.dim) as i64)?;
            let row = e.divui(group, per_row)?;
            let g = e.remui(group, per_row)?;
            let group_start = e.muli(g, e.index(self.quant.tile as i64)?)?;
            let offset = e.muli(lane, e.index(chunks.per_chunk as i64)?)?;
            let within = e.addi(group_start, offset)?;
            let dim = e.index(self.dim as i64)?;
            let in_row = e.lt(within, dim)?;
            let real_row = e.lt(row, e.index(self.rows as i64)?)?;
            let ok = e.andi(in_row, real_row)?;
            let row_start = e.muli(row, dim)?;
            let first = e.addi(row_start, within)?;
            let read = inputs
                .iter()
                .map(|&input| {
                    load_elements(&e, input, self.source.input(), first, chunks.per_chunk, ok)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let values = (0..chunks.per_chunk as usize)
                .map(|i| {
                    let elements: Vec<_> = read.iter().map(|chunk| chunk[i]).collect();
                    self.source.value(&e, &elements)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let scale_at = e.muli(row, per_row)?;
            let scale_at = e.addi(scale_at, g)?;
            quantize_chunk(
                &e,
                &self.quant,
                chunks,
                &values,
                lane,
                ok,
                first,
                scale_at,
                codes,
                scales,
            )
        })
    }
}

/// Quantizes group `g` of `row` with one warp (`lane` in 0..32): `load(j)` gives element `j`
/// of the row.
#[allow(clippy::too_many_arguments)]
fn quantize_group<'c, 'a>(
    e: &Emit<'c, 'a>,
    quant: &QuantSpec,
    dim: u64,
    row: Value<'c, '_>,
    g: Value<'c, '_>,
    lane: Value<'c, '_>,
    load: &dyn RowSource<'c>,
    codes: Value<'c, '_>,
    scales: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let tile = e.index(quant.tile as i64)?;
    let dim_v = e.index(dim as i64)?;
    let start = e.muli(g, tile)?;
    let end = e.addi(start, tile)?;
    let end = e.minui(end, dim_v)?;
    let first = e.addi(start, lane)?;
    let thirty_two = e.index(32)?;

    // A group of up to 256 elements is held in registers (element `lane + 32k` in slot k):
    // read (and, for swiglu, computed) once. Wider groups are read twice.
    let slots = quant.tile.div_ceil(32);
    let held = slots <= 8;
    let zero = e.f32(0.0)?;
    let mut values = Vec::new();
    let amax = if held {
        let mut amax = zero;
        for k in 0..slots {
            let j = e.addi(first, e.index((32 * k) as i64)?)?;
            let ok = e.lt(j, end)?;
            let safe = e.select(ok, j, start)?;
            let v = load.element(*e, safe)?;
            let v = e.select(ok, v, zero)?;
            let magnitude = e.absf(v)?;
            amax = e.max_skip_nan(amax, magnitude)?;
            values.push((j, ok, v));
        }
        amax
    } else {
        let amax_cell = e.cell(zero)?;
        e.for_range(first, end, thirty_two, |e, j| {
            let v = load.element(e, j)?;
            let magnitude = e.absf(v)?;
            let amax = e.get(amax_cell)?;
            let amax = e.max_skip_nan(amax, magnitude)?;
            e.set(amax_cell, amax)
        })?;
        e.get(amax_cell)?
    };
    let amax = e.warp_reduce(amax, Reduction::Max)?;
    let s = e.scale_for(amax, quant.format, quant.scale_format)?;

    let zero_index = e.index(0)?;
    let first_lane = e.cmpi(CmpiPredicate::Eq, lane, zero_index)?;
    let groups = e.index(quant.groups(dim) as i64)?;
    let scale_at = e.muli(row, groups)?;
    let scale_at = e.addi(scale_at, g)?;
    e.if_then(first_lane, |e| {
        e.store(s, scales, scale_at);
        Ok(())
    })?;
    let base = e.muli(row, dim_v)?;
    if held {
        for (j, ok, v) in values {
            let q = e.divf(v, s)?;
            let code = e.encode_code(q, quant.format)?;
            e.if_then(ok, |e| {
                let at = e.addi(base, j)?;
                e.store(code, codes, at);
                Ok(())
            })?;
        }
        return Ok(());
    }
    e.for_range(first, end, thirty_two, |e, j| {
        let v = load.element(e, j)?;
        let q = e.divf(v, s)?;
        let code = e.encode_code(q, quant.format)?;
        let at = e.addi(base, j)?;
        e.store(code, codes, at);
        Ok(())
    })
}

/// Quantizes one row with the whole block: warp `w` takes groups `w, w + 8, …` (used by
/// `rms_norm_quant`, whose row comes from shared memory or is recomputed).
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_row_groups<'c, 'a>(
    e: &Emit<'c, 'a>,
    quant: &QuantSpec,
    load: &dyn RowSource<'c>,
    row: Value<'c, '_>,
    dim: u64,
    tid: Value<'c, '_>,
    codes: Value<'c, '_>,
    scales: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let thirty_two = e.index(32)?;
    let lane = e.remui(tid, thirty_two)?;
    let warp = e.divui(tid, thirty_two)?;
    let groups = e.index(quant.groups(dim) as i64)?;
    let warps = e.index(i64::from(super::norm::THREADS / 32))?;
    e.for_range(warp, groups, warps, |e, g| {
        quantize_group(&e, quant, dim, row, g, lane, load, codes, scales)
    })
}

/// Element `j` of the row being quantized.
pub(crate) trait RowSource<'c> {
    /// Emits the load (and any arithmetic) of element `j`, as an f32.
    fn element<'b>(&self, e: Emit<'c, 'b>, j: Value<'c, 'b>) -> Emitted<'c, 'b>;
}

/// A row held in an f32 shared-memory buffer.
pub(crate) struct SharedRow<'c, 'x> {
    pub(crate) buffer: Value<'c, 'x>,
}

impl<'c> RowSource<'c> for SharedRow<'c, '_> {
    fn element<'b>(&self, e: Emit<'c, 'b>, j: Value<'c, 'b>) -> Emitted<'c, 'b> {
        e.load(self.buffer, j)
    }
}

/// A row of an activation in global memory, or of `swiglu(gate, up)` formed on the fly.
struct ActRow<'c, 'x, 's> {
    source: QuantSource,
    args: &'s [Value<'c, 'x>],
    base: Value<'c, 'x>,
}

impl<'c> RowSource<'c> for ActRow<'c, '_, '_> {
    fn element<'b>(&self, e: Emit<'c, 'b>, j: Value<'c, 'b>) -> Emitted<'c, 'b> {
        let at = e.addi(self.base, j)?;
        match self.source {
            QuantSource::Plain(_) => {
                let v = e.load(self.args[0], at)?;
                e.to_f32(v)
            }
            QuantSource::Swiglu { .. } => {
                let gate = e.load(self.args[0], at)?;
                let gate = e.to_f32(gate)?;
                let up = e.load(self.args[1], at)?;
                let up = e.to_f32(up)?;
                self.source.value(&e, &[gate, up])
            }
        }
    }
}
