//! `global_norm`: `sqrt(Σ x²)` over every element of every operand (the gradients), as f32 — the
//! norm that gradient clipping compares with its maximum.
//!
//! The squares are summed in f64, as the CPU reference sums them (a square of an f32 is exact in
//! f64), over a grid of up to [`MAX_BLOCKS`] blocks: each thread walks its share of every
//! operand in 16-byte accesses (the ragged tail of each operand element by element), each block
//! sums its threads in a fixed tree, and the last block to finish sums the blocks' totals in
//! block order ([`super::grid_reduce`]), takes the f64 square root and rounds it to f32 once.
//! Deterministic; it differs from the reference's sequential f64 sum only in the order of the
//! f64 additions, which moves the f32 result by at most one ulp.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::{BlockLike, Type, Value};
use serde::Serialize;

use super::grid_reduce::{self, GridScratch, THREADS, f64_const};
use super::wide_access::{load_f32s, per_access};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// Most blocks of the grid (every block's total is one slot the last block sums).
pub const MAX_BLOCKS: u64 = 256;
/// Average 16-byte accesses per thread below which the grid gets no more blocks.
const ACCESSES_PER_THREAD: u64 = 4;

/// One operand of [`GlobalNorm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NormInput {
    /// Element dtype (f32 or bf16).
    pub dtype: DType,
    /// Elements.
    pub len: u64,
}

impl NormInput {
    /// Whole 16-byte accesses.
    fn accesses(&self) -> u64 {
        self.len / per_access(self.dtype)
    }
}

/// The norm of `inputs`, all together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalNorm {
    /// The operands, in order.
    pub inputs: Vec<NormInput>,
}

impl GlobalNorm {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "global_norm"
    }

    /// `(g…, out)`: every operand, then the f32 `[1]` norm.
    pub fn params(&self) -> Vec<Param> {
        let mut params: Vec<Param> = self
            .inputs
            .iter()
            .map(|i| Param::new("g", i.dtype, i.len))
            .collect();
        params.push(Param::new("out", DType::F32, 1));
        params
    }

    /// Blocks of the grid: enough for [`ACCESSES_PER_THREAD`] accesses per thread, at most
    /// [`MAX_BLOCKS`].
    pub fn blocks(&self) -> u64 {
        let accesses: u64 = self.inputs.iter().map(NormInput::accesses).sum();
        accesses
            .div_ceil(u64::from(THREADS) * ACCESSES_PER_THREAD)
            .clamp(1, MAX_BLOCKS)
    }

    /// [`GlobalNorm::blocks`] blocks of [`THREADS`].
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.blocks(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let blocks = self.blocks();
        let scratch = if blocks > 1 {
            Some(GridScratch::declare(module, entry, blocks)?)
        } else {
            None
        };
        let shared = grid_reduce::shared_types(context);
        let n = self.inputs.len();
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (out, sums, flag) = (args[n], args[n + 1], args[n + 2]);

            let tid = e.thread_x()?;
            let bid = e.block_index(Dimension::X)?;
            let threads = e.index(i64::from(THREADS))?;
            let first = e.muli(bid, threads)?;
            let gid = e.addi(first, tid)?;
            let stride = e.index((blocks * u64::from(THREADS)) as i64)?;

            let zero = f64_const(&e, 0.0)?;
            let acc = e.cell(zero)?;
            for (k, input) in self.inputs.iter().enumerate() {
                let buffer = args[k];
                let per = per_access(input.dtype);
                let accesses = input.accesses();
                if accesses > 0 {
                    let end = e.index(accesses as i64)?;
                    e.for_range(gid, end, stride, |e, c| {
                        let base = e.address_of(buffer)?;
                        let c = e.index_cast(c, e.int_type(64))?;
                        let sixteen = e.int(64, 16)?;
                        let offset = e.muli(c, sixteen)?;
                        let at = e.addi(base, offset)?;
                        for v in load_f32s(&e, at, input.dtype, per)? {
                            add_square(&e, acc, v)?;
                        }
                        Ok(())
                    })?;
                }
                let tail = input.len % per;
                if tail > 0 {
                    let tail_v = e.index(tail as i64)?;
                    let in_tail = e.lt(gid, tail_v)?;
                    e.if_then(in_tail, |e| {
                        let start = e.index((accesses * per) as i64)?;
                        let at = e.addi(start, gid)?;
                        let v = e.load(buffer, at)?;
                        let v = e.to_f32(v)?;
                        add_square(&e, acc, v)
                    })?;
                }
            }

            let own = e.get(acc)?;
            let total = grid_reduce::block_sum_f64(&e, own, tid, sums)?;
            match &scratch {
                None => write_norm(&e, tid, out, total),
                Some(scratch) => {
                    let at = scratch.address(&e)?;
                    let last = grid_reduce::arrive(&e, at, bid, total, blocks, tid, flag)?;
                    e.if_then(last, |e| {
                        let sum = grid_reduce::sum_slots(&e, at, blocks, tid, sums)?;
                        write_norm(&e, tid, out, sum)
                    })
                }
            }
        })
    }
}

/// `acc += f64(v)²` (the square exact in f64).
fn add_square<'c>(
    e: &Emit<'c, '_>,
    acc: Value<'c, '_>,
    v: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let wide = e.extf(v, Type::float64(e.context))?;
    let square = e.mulf(wide, wide)?;
    e.accumulate(acc, square)
}

/// Thread 0 stores `sqrt(sum)` (`sum` an f64), rounded to f32 once, in `out`.
fn write_norm<'c>(
    e: &Emit<'c, '_>,
    tid: Value<'c, '_>,
    out: Value<'c, '_>,
    sum: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let zero = e.index(0)?;
    let first_thread = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
    e.if_then(first_thread, |e| {
        let root = grid_reduce::sqrt_f64(&e, sum)?;
        let root = e.truncf(root, e.f32_type())?;
        let zero = e.index(0)?;
        e.store(root, out, zero);
        Ok(())
    })
}
