//! `softmax` over the last axis in f32: one block per row (max, `exp(x - max)`, sum, divide),
//! a fully masked row (all -inf) gives zeros, as the CPU reference. Rows of causal attention
//! scores read only their visible keys (the rest are −inf, their outputs exact zeros).

use dsc_ir::DType;
use melior::dialect::arith::CmpfPredicate;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::norm::block_reduce;
use super::{Launch, Param, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block.
pub const THREADS: u32 = super::norm::THREADS;

/// Softmax of `rows` rows of `len`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Softmax {
    /// Rows.
    pub rows: u64,
    /// Row length.
    pub len: u64,
    /// Input dtype.
    pub input: DType,
    /// Output dtype.
    pub output: DType,
    /// The rows are causal attention scores `[…, q_len, len]`: in row `r`, entries past
    /// `r mod q_len + len − q_len` are −inf, so they are not read and their outputs are 0.
    pub causal_q_len: Option<u64>,
}

impl Softmax {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "softmax"
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.input, self.rows * self.len),
            Param::new("out", self.output, self.rows * self.len),
        ]
    }

    /// One block per row.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.rows, THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Vec<Type> = vec![
            MemRefType::new(
                Type::float32(context),
                &[i64::from(THREADS / 32)],
                None,
                workgroup,
            )
            .into(),
        ];
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let x: Value = block.argument(0)?.into();
            let out: Value = block.argument(1)?.into();
            let partials: Value = block.argument(2)?.into();
            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let len = e.index(self.len as i64)?;
            let base = e.muli(row, len)?;
            let step = e.index(i64::from(THREADS))?;
            // The entries that can be finite: all, or a causal row's visible keys.
            let end = match self.causal_q_len {
                None => len,
                Some(q_len) => {
                    let q_len_v = e.index(q_len as i64)?;
                    let s = e.remui(row, q_len_v)?;
                    let offset = e.index((self.len.saturating_sub(q_len) + 1) as i64)?;
                    let last = e.addi(s, offset)?;
                    e.minui(last, len)?
                }
            };
            let neg_inf = e.f32(f32::NEG_INFINITY)?;
            let max_cell = e.cell(neg_inf)?;
            e.for_range(tid, end, step, |e, j| {
                let v = e.load_f32(x, base, j)?;
                let m = e.get(max_cell)?;
                let m = e.maxf(m, v)?;
                e.set(max_cell, m)
            })?;
            let own = e.get(max_cell)?;
            let max = block_reduce(&e, own, Reduction::Max, tid, partials)?;

            let zero = e.f32(0.0)?;
            let sum_cell = e.cell(zero)?;
            e.for_range(tid, end, step, |e, j| {
                let v = e.load_f32(x, base, j)?;
                let shifted = e.subf(v, max)?;
                let p = e.exp(shifted)?;
                e.accumulate(sum_cell, p)
            })?;
            let own = e.get(sum_cell)?;
            let sum = block_reduce(&e, own, Reduction::Sum, tid, partials)?;
            let masked = e.cmpf(CmpfPredicate::Oeq, max, neg_inf)?;

            e.for_range(tid, len, step, |e, j| {
                let at = e.addi(base, j)?;
                let visible = e.lt(j, end)?;
                e.if_then(visible, |e| {
                    let v = e.load_f32(x, base, j)?;
                    let shifted = e.subf(v, max)?;
                    let p = e.exp(shifted)?;
                    let p = e.divf(p, sum)?;
                    let zero = e.f32(0.0)?;
                    let p = e.select(masked, zero, p)?;
                    let p = e.round_to(p, self.output)?;
                    e.store(p, out, at);
                    Ok(())
                })?;
                let hidden = e.cmpi(melior::dialect::arith::CmpiPredicate::Uge, j, end)?;
                e.if_then(hidden, |e| {
                    let zero = e.f32(0.0)?;
                    let zero = e.round_to(zero, self.output)?;
                    e.store(zero, out, at);
                    Ok(())
                })
            })
        })
    }
}
