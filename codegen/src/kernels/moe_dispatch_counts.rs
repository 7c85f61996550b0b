//! `moe_dispatch_counts`: the first of the two launches of a multi-block
//! [`super::moe_dispatch`]. Each block counts, per expert, the routed rows of its chunk (the
//! chunk the dispatch's block of the same index scatters) in shared memory and writes the counts
//! to its row of `counts[blocks × experts]`. Counts are integers, so the order the shared
//! atomics land in changes nothing: the result is deterministic.

use dsc_ir::DType;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, Type};
use serde::Serialize;

use super::moe_dispatch::{DispatchGrid, THREADS, atomic_add, expert_at};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// The per-block expert histogram of `tokens · top_k` routed rows over `experts` experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MoeDispatchCounts {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Experts.
    pub experts: u64,
}

impl MoeDispatchCounts {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        dsc_kernels::ops::moe_dispatch::COUNTS_SPEC
    }

    /// The blocks and their chunks of routed rows (the dispatch's).
    pub fn grid(&self) -> DispatchGrid {
        DispatchGrid::new(self.tokens * self.top_k)
    }

    /// Elements of `counts`: one per block and expert.
    pub fn counts_len(&self) -> u64 {
        self.grid().blocks * self.experts
    }

    /// `(indices, counts)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("indices", DType::I32, self.tokens * self.top_k),
            Param::new("counts", DType::I32, self.counts_len()),
        ]
    }

    /// The dispatch's grid: one block per chunk.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.grid().blocks, THREADS as u32)
    }

    /// Builds the kernel: zero the block's histogram, count its chunk (thread `t` takes rows
    /// `t, t + THREADS, …` of the chunk), write the histogram out.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let params = self.params();
        let types = param_types(context, &params);
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let experts = self.experts as i64;
        let i32_type = IntegerType::new(context, 32).into();
        let shared: Vec<Type> = vec![MemRefType::new(i32_type, &[experts], None, workgroup).into()];
        let routed = (self.tokens * self.top_k) as i64;
        let chunk = self.grid().block_rows as i64;
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, params.len() + shared.len())?;
            let (indices, counts, histogram) = (args[0], args[1], args[2]);
            let tid = e.thread_x()?;
            let bid = e.block_index(Dimension::X)?;
            let threads = e.index(THREADS)?;
            let experts_v = e.index(experts)?;
            let zero = e.int(32, 0)?;
            e.for_range(tid, experts_v, threads, |e, x| {
                e.store(zero, histogram, x);
                Ok(())
            })?;
            e.barrier();

            let chunk_v = e.index(chunk)?;
            let first = e.muli(bid, chunk_v)?;
            let first = e.addi(first, tid)?;
            e.for_const(0, chunk, THREADS, |e, i| {
                let r = e.addi(first, i)?;
                let (x, valid) = expert_at(&e, indices, experts, routed, r)?;
                e.if_then(valid, |e| {
                    let one = e.int(32, 1)?;
                    atomic_add(&e, histogram, x, one)
                })
            })?;
            e.barrier();

            let row = e.muli(bid, experts_v)?;
            e.for_range(tid, experts_v, threads, |e, x| {
                let count = e.load(histogram, x)?;
                let at = e.addi(row, x)?;
                e.store(count, counts, at);
                Ok(())
            })
        })
    }
}
