//! `rms_norm_grad`: the VJP of RMS normalization over the last axis in one launch, `dx` row by
//! row and the weight's gradient `dw = Σ_rows dy ⊙ (x·r)` summed over every row.
//!
//! Block `b` of [`RmsNormGrad::blocks`] takes rows `b, b + G, …` in order. Each row's
//! statistics are recomputed from `x` in f32 as the CPU reference does (`r = 1/sqrt(Σx²/d +
//! eps)`, `mean = Σ x·(w·dy) / d`, summed in a fixed tree of another order than its pairwise
//! one), `dx = r·(w·dy) − x·(r³·mean)` is rounded to its dtype once, and the row's `dy·(x·r)`
//! is added to the block's own f64 partial of each column in a module-scope scratch (thread `t`
//! owns columns `t, t + THREADS, …` of every row, so a slot has one writer and needs no atomic).
//! The last block to finish (counted in with an integer atomic, as [`super::grid_reduce`]'s
//! kernels) sums each column's partials in block order and rounds once to the output dtype.
//! No float atomics: the result depends only on the shapes, and the f64 sum of `dw` is within
//! half an ulp of the exact one where the reference's f32 pairwise tree is within a few.

use dsc_ir::DType;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::grid_reduce::{
    GridScratch, SLOTS_AT, count_in, f64_const, fence, load_slot, reset_counter,
};
use super::norm::block_reduce;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block ([`block_reduce`]'s block).
pub const THREADS: u32 = super::norm::THREADS;
/// Most blocks of the grid (the scratch holds `blocks × dim` f64 partials).
pub const MAX_BLOCKS: u64 = 128;

/// The gradient of `rms_norm` over `rows` rows of `dim`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RmsNormGrad {
    /// Rows.
    pub rows: u64,
    /// Row width.
    pub dim: u64,
    /// Epsilon, as the f32 the reference adds.
    pub eps: f32,
    /// Dtype of `x`.
    pub input: DType,
    /// Dtype of the weight.
    pub weight: DType,
    /// Dtype of `dy`.
    pub grad: DType,
    /// Dtype of `dx`.
    pub output: DType,
    /// Dtype of the weight's gradient.
    pub weight_grad: DType,
}

impl RmsNormGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "rms_norm_grad"
    }

    /// `(x, w, dy, dx, dw)`.
    pub fn params(&self) -> Vec<Param> {
        let n = self.rows * self.dim;
        vec![
            Param::new("x", self.input, n),
            Param::new("w", self.weight, self.dim),
            Param::new("dy", self.grad, n),
            Param::new("dx", self.output, n),
            Param::new("dw", self.weight_grad, self.dim),
        ]
    }

    /// Blocks of the grid: about `√rows`, at most [`MAX_BLOCKS`]. Each block reads `rows / G`
    /// rows and the last one reads `G` partials of every column alone, so `G ≈ √rows` balances
    /// the two.
    pub fn blocks(&self) -> u64 {
        (self.rows as f64)
            .sqrt()
            .ceil()
            .clamp(1.0, MAX_BLOCKS as f64) as u64
    }

    /// [`RmsNormGrad::blocks`] blocks of [`THREADS`].
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.blocks(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let blocks = self.blocks();
        let scratch = GridScratch::declare(module, entry, blocks * self.dim)?;
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Vec<Type> = vec![
            MemRefType::new(
                Type::float32(context),
                &[i64::from(THREADS / 32)],
                None,
                workgroup,
            )
            .into(),
            MemRefType::new(IntegerType::new(context, 32).into(), &[1], None, workgroup).into(),
        ];
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (dw, partials, flag) = (args[4], args[5], args[6]);
            let tid = e.thread_x()?;
            let dim = e.index(self.dim as i64)?;
            let step = e.index(i64::from(THREADS))?;
            if self.rows == 0 {
                // No rows: the sum is empty (one block, nothing in the scratch).
                return e.for_range(tid, dim, step, |e, j| {
                    let zero = e.f32(0.0)?;
                    let zero = e.round_to(zero, self.weight_grad)?;
                    e.store(zero, dw, j);
                    Ok(())
                });
            }
            let at = scratch.address(&e)?;
            let bid = e.block_index(Dimension::X)?;
            let rows = e.index(self.rows as i64)?;
            let grid = e.index(blocks as i64)?;
            e.for_range(bid, rows, grid, |e, row| {
                self.row(&e, &args, at, partials, row)
            })?;

            // Every thread's partials are visible device-wide before its block counts in.
            fence(&e)?;
            e.barrier();
            let last = count_in(&e, at, blocks, tid, flag)?;
            e.if_then(last, |e| {
                fence(&e)?;
                e.for_range(tid, dim, step, |e, j| {
                    let zero = f64_const(&e, 0.0)?;
                    let acc = e.cell(zero)?;
                    e.for_const(0, blocks as i64, 1, |e, b| {
                        let slot = partial_address(&e, at, b, self.dim, j)?;
                        let v = load_slot(&e, slot)?;
                        e.accumulate(acc, v)
                    })?;
                    let total = e.get(acc)?;
                    let total = e.truncf(total, e.f32_type())?;
                    let total = e.round_to(total, self.weight_grad)?;
                    e.store(total, dw, j);
                    Ok(())
                })?;
                reset_counter(&e, at, tid)
            })
        })
    }

    /// Row `row`: its statistics, `dx`, and its share of `dw` added to the block's partials
    /// (stored, on the block's first row, so no launch reads a previous one's).
    fn row<'c>(
        &self,
        e: &Emit<'c, '_>,
        args: &[Value<'c, '_>],
        scratch: Value<'c, '_>,
        partials: Value<'c, '_>,
        row: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (x, w, dy, dx) = (args[0], args[1], args[2], args[3]);
        let tid = e.thread_x()?;
        let bid = e.block_index(Dimension::X)?;
        let dim = e.index(self.dim as i64)?;
        let base = e.muli(row, dim)?;
        let step = e.index(i64::from(THREADS))?;

        let zero = e.f32(0.0)?;
        let squares = e.cell(zero)?;
        let dots = e.cell(zero)?;
        e.for_range(tid, dim, step, |e, j| {
            let xv = e.load_f32(x, base, j)?;
            let xx = e.mulf(xv, xv)?;
            e.accumulate(squares, xx)?;
            let wv = e.load(w, j)?;
            let wv = e.to_f32(wv)?;
            let g = e.load_f32(dy, base, j)?;
            let wg = e.mulf(wv, g)?;
            let p = e.mulf(xv, wg)?;
            e.accumulate(dots, p)
        })?;
        let own = e.get(squares)?;
        let squares = block_reduce(e, own, Reduction::Sum, tid, partials)?;
        let own = e.get(dots)?;
        let dot = block_reduce(e, own, Reduction::Sum, tid, partials)?;

        // The reference's order: r = 1 / sqrt(Σx²/d + eps), r³·mean as ((r·r)·r)·mean.
        let n = e.f32(self.dim as f32)?;
        let variance = e.divf(squares, n)?;
        let eps = e.f32(self.eps)?;
        let shifted = e.addf(variance, eps)?;
        let root = e.sqrt_rn(shifted)?;
        let one = e.f32(1.0)?;
        let r = e.divf(one, root)?;
        let mean = e.divf(dot, n)?;
        let r2 = e.mulf(r, r)?;
        let r3 = e.mulf(r2, r)?;
        let r3_mean = e.mulf(r3, mean)?;

        let blocks = e.index(self.blocks() as i64)?;
        let first_row = e.lt(row, blocks)?;
        e.for_range(tid, dim, step, |e, j| {
            let at = e.addi(base, j)?;
            let xv = e.load_f32(x, base, j)?;
            let wv = e.load(w, j)?;
            let wv = e.to_f32(wv)?;
            let g = e.load_f32(dy, base, j)?;
            let wg = e.mulf(wv, g)?;
            let a = e.mulf(r, wg)?;
            let b = e.mulf(xv, r3_mean)?;
            let d = e.subf(a, b)?;
            let d = e.round_to(d, self.output)?;
            e.store(d, dx, at);

            let xr = e.mulf(xv, r)?;
            let share = e.mulf(g, xr)?;
            let share = e.extf(share, Type::float64(e.context))?;
            let slot = partial_address(&e, scratch, bid, self.dim, j)?;
            let old = e.inline_asm(
                "ld.global.f64 $0, [$1];",
                "=d,l",
                &[slot],
                Type::float64(e.context),
            )?;
            let sum = e.addf(old, share)?;
            let sum = e.select(first_row, share, sum)?;
            e.push_void(e.inline_asm_op("st.global.f64 [$0], $1;", "l,d", &[slot, sum], &[])?);
            Ok(())
        })?;
        // The whole warp finishes this row before any lane shuffles for the next: LLVM may lay
        // the row loop's latch out before the shuffles, and the emulator runs divergent lanes
        // lowest pc first (the hardware reconverges at `shfl.sync` by itself; a barrier per row
        // costs little next to block_reduce's).
        e.barrier();
        Ok(())
    }
}

/// The address (an `i64`) of block `block`'s partial of column `column` (both `index`) in the
/// scratch at `scratch`: `[blocks, dim]` f64 slots after the counter.
fn partial_address<'c, 'a>(
    e: &Emit<'c, 'a>,
    scratch: Value<'c, '_>,
    block: Value<'c, '_>,
    dim: u64,
    column: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let dim = e.index(dim as i64)?;
    let slot = e.muli(block, dim)?;
    let slot = e.addi(slot, column)?;
    let slot = e.index_cast(slot, e.int_type(64))?;
    let eight = e.int(64, 8)?;
    let offset = e.muli(slot, eight)?;
    let first = e.int(64, SLOTS_AT as i64)?;
    let offset = e.addi(offset, first)?;
    e.addi(scratch, offset)
}
