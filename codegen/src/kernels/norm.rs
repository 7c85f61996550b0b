//! `rms_norm` and `rms_norm_quant`, and their residual-fused forms `add_rms_norm` and
//! `add_rms_norm_quant`: one block per row.
//!
//! `y = w · round(x · 1/sqrt(mean(x²) + eps))` with the statistics in f32 (DESIGN.md §3b), the
//! normalized activation rounded to the input dtype before the weight (as Hugging Face does).
//! The fused form quantizes the normalized row in 1 × tile groups exactly as `quantize` would
//! quantize the stored `rms_norm` output.
//!
//! Where the row splits into whole 16-byte chunks (and, fused, each group too) and has at most
//! [`MAX_CHUNKS_PER_THREAD`] a thread, the row is held in registers: read once with 16-byte
//! loads, written (or quantized) with 16- or 8-byte stores ([`super::row_chunks`]). Otherwise
//! the fused form quantizes one group per warp from a row of up to [`ROW_IN_SHARED`] elements
//! kept in shared memory (f32), or, wider, recomputed from `x` and `w` per group (the same two
//! roundings), so there is no limit on the hidden size.
//!
//! x may be read in place from a wider tensor (`x_row`: MLA's compressed kv, the first 512
//! of each 576-wide row of `kv_a_proj_with_mqa`'s output, a folded slice): each row of it is
//! `dim` elements at an offset in a row of that tensor; the outputs are contiguous. The
//! register form then needs the offset and the wider row in whole chunks too.
//!
//! The residual-fused forms read `x` and `residual`, add them in f32 and round the sum to the
//! input dtype, as `add` does, store it (the residual stream goes on) and normalize it: one
//! read of each operand instead of the add's two reads, its write and the norm's read. The
//! loop forms then read the stored sum back where they would read `x` (each thread its own
//! elements, or, per group, after the block's barrier).

use dsc_ir::DType;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::quantize::{QuantSpec, RowSource, SharedRow, quantize_row_groups};
use super::row_chunks::{RowChunks, load_elements, quantize_chunk, store_elements};
use super::row_window::RowWindow;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block.
pub const THREADS: u32 = 256;
/// The widest row `rms_norm_quant` keeps in shared memory (32 KiB of f32).
pub const ROW_IN_SHARED: u64 = 8192;
/// Most 16-byte chunks a thread of the register form holds: rows of up to 16384 bf16 (8192
/// f32) elements.
pub const MAX_CHUNKS_PER_THREAD: u64 = 8;
const WARPS: i64 = THREADS as i64 / 32;

/// RMS normalization of `rows` rows of `dim`, optionally quantized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RmsNorm {
    /// Rows.
    pub rows: u64,
    /// Row width.
    pub dim: u64,
    /// Epsilon, as the f32 torch adds.
    pub eps: f32,
    /// Input dtype (also what the normalized activation is rounded to).
    pub input: DType,
    /// Weight dtype.
    pub weight: DType,
    /// Output dtype of the plain form (the fused form rounds to `input` before quantizing).
    pub output: DType,
    /// Present for `rms_norm_quant`.
    pub quant: Option<QuantSpec>,
    /// The fused residual add: a `residual` operand of `input`'s dtype and a stored `sum`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub residual: bool,
    /// x read in place from a wider tensor; `None`: x is its own tensor (always, fused with
    /// the residual add).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_row: Option<RowWindow>,
}

impl RmsNorm {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        match (self.residual, self.quant.is_some()) {
            (false, false) => "rms_norm",
            (false, true) => "rms_norm_quant",
            (true, false) => "add_rms_norm",
            (true, true) => "add_rms_norm_quant",
        }
    }

    /// `(x, w, out)` or `(x, w, codes, scales)`; fused with the residual add, `(x, residual,
    /// w, …, sum)`.
    pub fn params(&self) -> Vec<Param> {
        let len = self.rows * self.dim;
        let x_len = self.x_row.map_or(len, |r| self.rows * r.stride);
        let mut params = vec![Param::new("x", self.input, x_len)];
        if self.residual {
            params.push(Param::new("residual", self.input, len));
        }
        params.push(Param::new("w", self.weight, self.dim));
        match &self.quant {
            None => params.push(Param::new("out", self.output, len)),
            Some(q) => params.extend(q.output_params(self.rows, self.dim)),
        }
        if self.residual {
            params.push(Param::new("sum", self.input, len));
        }
        params
    }

    /// The index of row `row`'s first element in x.
    fn x_base<'c, 'a>(&self, e: &Emit<'c, 'a>, row: Value<'c, 'a>) -> Emitted<'c, 'a> {
        RowWindow::row_start(self.x_row, e, row, self.dim)
    }

    /// The index of the weight parameter (the first output's is one more).
    fn weight_param(&self) -> usize {
        if self.residual { 2 } else { 1 }
    }

    /// `round(x + residual)` in the input dtype, widened: the stored sum, as `add` rounds it.
    fn sum<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        x: Value<'c, 'a>,
        residual: Value<'c, 'a>,
    ) -> Emitted<'c, 'a> {
        let sum = e.addf(x, residual)?;
        e.round_through(sum, self.input)
    }

    /// `1 / sqrt(Σx² / dim + eps)` from the row's sum of squares, as the reference rounds it.
    fn inverse_rms<'c, 'a>(&self, e: &Emit<'c, 'a>, squares: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let n = e.f32(self.dim as f32)?;
        let mean = e.divf(squares, n)?;
        let eps = e.f32(self.eps)?;
        let shifted = e.addf(mean, eps)?;
        let root = e.sqrt_rn(shifted)?;
        let one = e.f32(1.0)?;
        e.divf(one, root)
    }

    /// The register form's layout: the row in whole 16-byte chunks of `x` (and, fused, each
    /// group in whole chunks), at most [`MAX_CHUNKS_PER_THREAD`] a thread.
    fn chunks(&self) -> Option<RowChunks> {
        let chunks = match &self.quant {
            None => RowChunks::for_rows(self.dim, self.input)?,
            Some(q) => RowChunks::for_groups(self.dim, self.input, q)?,
        };
        let wide = |dtype| matches!(dtype, DType::F32 | DType::Bf16);
        let fits = chunks.per_row(self.dim).div_ceil(u64::from(THREADS)) <= MAX_CHUNKS_PER_THREAD;
        // Read in place, every chunk of x must be aligned in the wider rows too.
        let aligned = RowWindow::whole_chunks(self.x_row, chunks.per_chunk);
        (fits && aligned && wide(self.weight) && (self.quant.is_some() || wide(self.output)))
            .then_some(chunks)
    }

    /// Whether the fused form keeps its row in shared memory.
    fn row_in_shared(&self) -> bool {
        self.quant.is_some() && self.dim <= ROW_IN_SHARED
    }

    /// One block per row: of [`THREADS`], or in the register form of the row's chunks rounded
    /// up to whole warps when fewer (a 512-wide bf16 row is 64 chunks: two warps, not eight
    /// mostly idle ones).
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.rows, self.threads())
    }

    /// Threads per block.
    fn threads(&self) -> u32 {
        match self.chunks() {
            Some(chunks) => {
                let warps = chunks
                    .per_row(self.dim)
                    .div_ceil(32)
                    .min(u64::from(THREADS / 32));
                32 * warps as u32
            }
            None => THREADS,
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(chunks) = self.chunks() {
            return self.build_in_registers(chunks, module, entry);
        }
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared_type = |len: i64| -> Type<'_> {
            MemRefType::new(Type::float32(context), &[len], None, workgroup).into()
        };
        let mut shared = vec![shared_type(WARPS)];
        if self.row_in_shared() {
            shared.push(shared_type(self.dim as i64));
        }
        let n_args = types.len();
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let w = args[self.weight_param()];
            let outs = &args[self.weight_param() + 1..];
            // Fused with the residual add, the first loop stores the sum and the later ones
            // read it where they would read `x`.
            let (first_x, sum_out) = if self.residual {
                (Some((args[0], args[1])), Some(args[n_args - 1]))
            } else {
                (None, None)
            };
            let x = sum_out.unwrap_or(args[0]);
            let partials = args[n_args];

            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let dim = e.index(self.dim as i64)?;
            let base = e.muli(row, dim)?;
            // Where the row is read: in x (maybe in place in a wider row), or in the sum.
            let x_base = if self.residual {
                base
            } else {
                self.x_base(&e, row)?
            };
            let step = e.index(i64::from(THREADS))?;

            let zero = e.f32(0.0)?;
            let squares = e.cell(zero)?;
            e.for_range(tid, dim, step, |e, j| {
                let at = e.addi(x_base, j)?;
                let v = match first_x {
                    None => e.to_f32(e.load(x, at)?)?,
                    Some((a, b)) => {
                        let a = e.to_f32(e.load(a, at)?)?;
                        let b = e.to_f32(e.load(b, at)?)?;
                        let v = self.sum(&e, a, b)?;
                        e.store(e.round_to(v, self.input)?, x, at);
                        v
                    }
                };
                let vv = e.mulf(v, v)?;
                e.accumulate(squares, vv)
            })?;
            let own = e.get(squares)?;
            let total = block_reduce(&e, own, Reduction::Sum, tid, partials)?;
            let inv = self.inverse_rms(&e, total)?;

            let normalized = if self.quant.is_some() {
                self.input
            } else {
                self.output
            };
            let row_buffer = self.row_in_shared().then(|| args[n_args + 1]);
            if let Some(q) = &self.quant
                && row_buffer.is_none()
            {
                // Too wide for shared memory: each group recomputes its elements.
                let load = NormalizedRow {
                    x,
                    w,
                    base: x_base,
                    inv,
                    dtype: self.input,
                };
                return quantize_row_groups(&e, q, &load, row, self.dim, tid, outs[0], outs[1]);
            }
            e.for_range(tid, dim, step, |e, j| {
                let v = e.load(x, e.addi(x_base, j)?)?;
                let v = e.to_f32(v)?;
                let at = e.addi(base, j)?;
                let scaled = e.mulf(v, inv)?;
                let scaled = e.round_through(scaled, normalized)?;
                let wv = e.load(w, j)?;
                let wv = e.to_f32(wv)?;
                let y = e.mulf(wv, scaled)?;
                match row_buffer {
                    None => {
                        let y = e.round_to(y, self.output)?;
                        e.store(y, outs[0], at);
                    }
                    Some(buffer) => {
                        let y = e.round_through(y, self.input)?;
                        e.store(y, buffer, j);
                    }
                }
                Ok(())
            })?;

            if let (Some(q), Some(buffer)) = (&self.quant, row_buffer) {
                e.barrier();
                let load = SharedRow { buffer };
                quantize_row_groups(&e, q, &load, row, self.dim, tid, outs[0], outs[1])?;
            }
            Ok(())
        })
    }

    /// The register form: with `T` threads (whole warps), thread `t` holds chunks `t`,
    /// `t + T`, … of the row (read once, 16 bytes at a time), sums their squares, and after the
    /// block's reduction normalizes, weights and stores or quantizes them; a quantization group
    /// is `lanes` consecutive threads (a warp is a multiple of it, so chunk `k`'s place in its
    /// group is `t % lanes`).
    fn build_in_registers(
        &self,
        chunks: RowChunks,
        module: &KernelModule<'_>,
        entry: &str,
    ) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let threads = self.threads();
        let warps = i64::from(threads / 32);
        let partials_type: Type<'_> =
            MemRefType::new(Type::float32(context), &[warps], None, workgroup).into();
        let n_args = types.len();
        module.add_kernel_with_shared(entry, &types, &[partials_type], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (x, w) = (args[0], args[self.weight_param()]);
            let outs = &args[self.weight_param() + 1..];
            let partials = args[n_args];
            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let dim = e.index(self.dim as i64)?;
            let base = e.muli(row, dim)?;
            let x_base = self.x_base(&e, row)?;
            let per_chunk = chunks.per_chunk;

            // (offset in the row, whether the chunk is in it, its x values).
            let mut held = Vec::new();
            for c in 0..chunks.per_row(self.dim).div_ceil(u64::from(threads)) {
                let k = e.addi(tid, e.index((c * u64::from(threads)) as i64)?)?;
                let within = e.muli(k, e.index(per_chunk as i64)?)?;
                let ok = e.lt(within, dim)?;
                let first = e.addi(base, within)?;
                let x_first = e.addi(x_base, within)?;
                let mut values = load_elements(&e, x, self.input, x_first, per_chunk, ok)?;
                if self.residual {
                    let residual = load_elements(&e, args[1], self.input, first, per_chunk, ok)?;
                    for (v, r) in values.iter_mut().zip(residual) {
                        *v = self.sum(&e, *v, r)?;
                    }
                    store_elements(&e, &values, args[n_args - 1], self.input, first, ok)?;
                }
                held.push((within, ok, values));
            }
            let mut own = e.f32(0.0)?;
            for (_, _, values) in &held {
                for &v in values {
                    let vv = e.mulf(v, v)?;
                    own = e.addf(own, vv)?;
                }
            }
            let total = block_reduce_warps(&e, own, Reduction::Sum, tid, partials, warps)?;
            let inv = self.inverse_rms(&e, total)?;

            let normalized = if self.quant.is_some() {
                self.input
            } else {
                self.output
            };
            let lane = e.remui(tid, e.index(chunks.lanes as i64)?)?;
            for (within, ok, values) in held {
                let weights = load_elements(&e, w, self.weight, within, per_chunk, ok)?;
                let mut ys = Vec::with_capacity(values.len());
                for (&v, &wv) in values.iter().zip(&weights) {
                    let scaled = e.mulf(v, inv)?;
                    let scaled = e.round_through(scaled, normalized)?;
                    ys.push(e.mulf(wv, scaled)?);
                }
                let first = e.addi(base, within)?;
                match &self.quant {
                    None => store_elements(&e, &ys, outs[0], self.output, first, ok)?,
                    Some(q) => {
                        let ys = ys
                            .into_iter()
                            .map(|y| e.round_through(y, self.input))
                            .collect::<Result<Vec<_>, _>>()?;
                        let groups = e.index(q.groups(self.dim) as i64)?;
                        let g = e.divui(within, e.index(q.tile as i64)?)?;
                        let scale_at = e.muli(row, groups)?;
                        let scale_at = e.addi(scale_at, g)?;
                        quantize_chunk(
                            &e, q, chunks, &ys, lane, ok, first, scale_at, outs[0], outs[1],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Element `j` of the normalized row recomputed from global memory: `round(w_j ·
/// round(x_j · inv))` in `dtype`, as the shared-memory form stores it.
struct NormalizedRow<'c, 'x> {
    x: Value<'c, 'x>,
    w: Value<'c, 'x>,
    base: Value<'c, 'x>,
    inv: Value<'c, 'x>,
    dtype: DType,
}

impl<'c> RowSource<'c> for NormalizedRow<'c, '_> {
    fn element<'b>(&self, e: Emit<'c, 'b>, j: Value<'c, 'b>) -> Emitted<'c, 'b> {
        let at = e.addi(self.base, j)?;
        let v = e.load(self.x, at)?;
        let v = e.to_f32(v)?;
        let scaled = e.mulf(v, self.inv)?;
        let scaled = e.round_through(scaled, self.dtype)?;
        let wv = e.load(self.w, j)?;
        let wv = e.to_f32(wv)?;
        let y = e.mulf(wv, scaled)?;
        e.round_through(y, self.dtype)
    }
}

/// `own` reduced by `op` over the block's [`THREADS`] threads, the same in every thread: warp
/// butterflies, one partial per warp in shared memory, then every thread combines the partials
/// in warp order.
pub(crate) fn block_reduce<'c, 'a>(
    e: &Emit<'c, 'a>,
    own: Value<'c, 'a>,
    op: Reduction,
    tid: Value<'c, 'a>,
    partials: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    block_reduce_warps(e, own, op, tid, partials, WARPS)
}

/// [`block_reduce`] over a block of `warps` warps.
fn block_reduce_warps<'c, 'a>(
    e: &Emit<'c, 'a>,
    own: Value<'c, 'a>,
    op: Reduction,
    tid: Value<'c, 'a>,
    partials: Value<'c, '_>,
    warps: i64,
) -> Emitted<'c, 'a> {
    let warp_total = e.warp_reduce(own, op)?;
    let thirty_two = e.index(32)?;
    let lane = e.remui(tid, thirty_two)?;
    let warp = e.divui(tid, thirty_two)?;
    let zero_index = e.index(0)?;
    let first_lane = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, lane, zero_index)?;
    e.if_then(first_lane, |e| {
        e.store(warp_total, partials, warp);
        Ok(())
    })?;
    e.barrier();
    let mut total = e.load(partials, zero_index)?;
    for w in 1..warps {
        let at = e.index(w)?;
        let part = e.load(partials, at)?;
        total = e.combine(op, total, part)?;
    }
    // The partials are read by every thread before any later write to them.
    e.barrier();
    Ok(total)
}
