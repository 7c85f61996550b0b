//! `embedding_grad`: the VJP of `embedding`, `dw[vocab, D]` whose row `v` is the sum of the
//! `dy` rows of every token whose id is `v`. One block per (vocabulary row, chunk of
//! [`THREADS`] columns); each thread owns one column and scans the ids in token order, adding
//! the `dy` element of each token of its row.
//!
//! Deterministic without atomics: every output element is one f32 sum from +0 in token order,
//! the order of the CPU reference (`dsc_kernels::ops::grad::embedding_grad`), so the two agree
//! bit for bit. An id outside `0..vocab` equals no row and is skipped (the reference refuses
//! the whole op): it is only ever compared, never used as an address. The scan costs
//! `tokens` id loads per block (warp-wide broadcasts), work proportional to
//! `vocab · tokens`, the price of a fixed order without a sort of the ids.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::BlockLike;
use serde::Serialize;

use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// Threads per block: the columns one block sums.
pub const THREADS: u32 = 128;

/// The embedding table's gradient from `tokens` ids and their `dy` rows of `dim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingGrad {
    /// Ids (and `dy` rows).
    pub tokens: u64,
    /// Rows of the table.
    pub vocab: u64,
    /// Columns.
    pub dim: u64,
    /// Dtype of `dy` (the ids are i32, the gradient f32).
    pub grad: DType,
}

impl EmbeddingGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "embedding_grad"
    }

    /// `(ids, dy, dw)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("ids", DType::I32, self.tokens),
            Param::new("dy", self.grad, self.tokens * self.dim),
            Param::new("dw", DType::F32, self.vocab * self.dim),
        ]
    }

    /// Column chunks per row (at least one, so that a row of no columns still has a block).
    fn chunks(&self) -> u64 {
        self.dim.div_ceil(u64::from(THREADS)).max(1)
    }

    /// One block of [`THREADS`] per (row, column chunk).
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.vocab * self.chunks(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (ids, dy, dw) = (args[0], args[1], args[2]);
            let tid = e.thread_x()?;
            let b = e.block_index(Dimension::X)?;
            let chunks = e.index(self.chunks() as i64)?;
            let row = e.divui(b, chunks)?;
            let chunk = e.remui(b, chunks)?;
            let col = e.muli(chunk, e.index(i64::from(THREADS))?)?;
            let col = e.addi(col, tid)?;
            let dim = e.index(self.dim as i64)?;
            let in_col = e.lt(col, dim)?;
            let in_row = e.lt(row, e.index(self.vocab as i64)?)?;
            let owned = e.andi(in_col, in_row)?;
            e.if_then(owned, |e| {
                let zero = e.f32(0.0)?;
                let sum = e.cell(zero)?;
                let tokens = e.index(self.tokens as i64)?;
                e.for_range(e.index(0)?, tokens, e.index(1)?, |e, t| {
                    let id = e.load(ids, t)?;
                    // Sign-extended: a negative id is no row's index.
                    let id = e.index_cast(id, e.index_type())?;
                    let hit = e.cmpi(CmpiPredicate::Eq, id, row)?;
                    e.if_then(hit, |e| {
                        let base = e.muli(t, dim)?;
                        let g = e.load_f32(dy, base, col)?;
                        e.accumulate(sum, g)
                    })
                })?;
                let at = e.muli(row, dim)?;
                let at = e.addi(at, col)?;
                let total = e.get(sum)?;
                e.store(total, dw, at);
                Ok(())
            })
        })
    }
}
