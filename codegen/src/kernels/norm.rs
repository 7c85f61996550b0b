//! `rms_norm` and `rms_norm_quant`: one block per row.
//!
//! `y = w · round(x · 1/sqrt(mean(x²) + eps))` with the statistics in f32 (DESIGN.md §3b), the
//! normalized activation rounded to the input dtype before the weight (as Hugging Face does).
//! The fused form quantizes the normalized row in 1 × tile groups, one warp per group, exactly
//! as `quantize` would quantize the stored `rms_norm` output: a row of up to
//! [`ROW_IN_SHARED`] elements is kept in shared memory (f32), a wider one is recomputed from
//! `x` and `w` per group (the same two roundings), so there is no limit on the hidden size.

use dsc_ir::DType;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::quantize::{QuantSpec, RowSource, SharedRow, quantize_row_groups};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block.
pub const THREADS: u32 = 256;
/// The widest row `rms_norm_quant` keeps in shared memory (32 KiB of f32).
pub const ROW_IN_SHARED: u64 = 8192;
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
}

impl RmsNorm {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        if self.quant.is_some() {
            "rms_norm_quant"
        } else {
            "rms_norm"
        }
    }

    /// `(x, w, out)` or `(x, w, codes, scales)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![
            Param::new("x", self.input, self.rows * self.dim),
            Param::new("w", self.weight, self.dim),
        ];
        match &self.quant {
            None => params.push(Param::new("out", self.output, self.rows * self.dim)),
            Some(q) => params.extend(q.output_params(self.rows, self.dim)),
        }
        params
    }

    /// Whether the fused form keeps its row in shared memory.
    fn row_in_shared(&self) -> bool {
        self.quant.is_some() && self.dim <= ROW_IN_SHARED
    }

    /// One block of [`THREADS`] per row.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.rows, THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
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
            let (x, w) = (args[0], args[1]);
            let partials = args[n_args];

            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let dim = e.index(self.dim as i64)?;
            let base = e.muli(row, dim)?;
            let step = e.index(i64::from(THREADS))?;

            let zero = e.f32(0.0)?;
            let squares = e.cell(zero)?;
            e.for_range(tid, dim, step, |e, j| {
                let at = e.addi(base, j)?;
                let v = e.load(x, at)?;
                let v = e.to_f32(v)?;
                let vv = e.mulf(v, v)?;
                e.accumulate(squares, vv)
            })?;
            let own = e.get(squares)?;
            let total = block_reduce(&e, own, Reduction::Sum, tid, partials)?;
            let n = e.f32(self.dim as f32)?;
            let mean = e.divf(total, n)?;
            let eps = e.f32(self.eps)?;
            let shifted = e.addf(mean, eps)?;
            let root = e.sqrt_rn(shifted)?;
            let one = e.f32(1.0)?;
            let inv = e.divf(one, root)?;

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
                    base,
                    inv,
                    dtype: self.input,
                };
                return quantize_row_groups(&e, q, &load, row, self.dim, tid, args[2], args[3]);
            }
            e.for_range(tid, dim, step, |e, j| {
                let at = e.addi(base, j)?;
                let v = e.load(x, at)?;
                let v = e.to_f32(v)?;
                let scaled = e.mulf(v, inv)?;
                let scaled = e.round_through(scaled, normalized)?;
                let wv = e.load(w, j)?;
                let wv = e.to_f32(wv)?;
                let y = e.mulf(wv, scaled)?;
                match row_buffer {
                    None => {
                        let y = e.round_to(y, self.output)?;
                        e.store(y, args[2], at);
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
                quantize_row_groups(&e, q, &load, row, self.dim, tid, args[2], args[3])?;
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
    for w in 1..WARPS {
        let at = e.index(w)?;
        let part = e.load(partials, at)?;
        total = e.combine(op, total, part)?;
    }
    // The partials are read by every thread before any later write to them.
    e.barrier();
    Ok(total)
}
