//! `softmax` over the last axis in f32: one block per row (max, `exp(x - max)`, sum, divide),
//! a fully masked row (all -inf) gives zeros, as the CPU reference.

use dsc_ir::DType;
use melior::dialect::arith::CmpfPredicate;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::norm::block_sum;
use super::{Launch, Param, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
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
            let neg_inf = e.f32(f32::NEG_INFINITY)?;
            let max_cell = e.cell(neg_inf)?;
            e.for_range(tid, len, step, |e, j| {
                let v = e.load_f32(x, base, j)?;
                let m = e.get(max_cell)?;
                let m = e.maxf(m, v)?;
                e.set(max_cell, m)
            })?;
            let own = e.get(max_cell)?;
            let max = block_max(&e, own, tid, partials)?;

            let zero = e.f32(0.0)?;
            let sum_cell = e.cell(zero)?;
            e.for_range(tid, len, step, |e, j| {
                let v = e.load_f32(x, base, j)?;
                let shifted = e.subf(v, max)?;
                let p = e.exp(shifted)?;
                let s = e.get(sum_cell)?;
                let s = e.addf(s, p)?;
                e.set(sum_cell, s)
            })?;
            let own = e.get(sum_cell)?;
            let sum = block_sum(&e, own, tid, partials)?;
            let masked = e.cmpf(CmpfPredicate::Oeq, max, neg_inf)?;

            e.for_range(tid, len, step, |e, j| {
                let v = e.load_f32(x, base, j)?;
                let shifted = e.subf(v, max)?;
                let p = e.exp(shifted)?;
                let p = e.divf(p, sum)?;
                let zero = e.f32(0.0)?;
                let p = e.select(masked, zero, p)?;
                let p = e.round_to(p, self.output)?;
                let at = e.addi(base, j)?;
                e.store(p, out, at);
                Ok(())
            })
        })
    }
}

/// The maximum of `own` over the block (NaN-propagating), the same in every thread.
fn block_max<'c, 'a>(
    e: &Emit<'c, 'a>,
    own: Value<'c, 'a>,
    tid: Value<'c, 'a>,
    partials: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let warp_max = e.warp_max(own)?;
    let thirty_two = e.index(32)?;
    let lane = e.remui(tid, thirty_two)?;
    let warp = e.divui(tid, thirty_two)?;
    let zero_index = e.index(0)?;
    let first_lane = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, lane, zero_index)?;
    e.if_then(first_lane, |e| {
        e.store(warp_max, partials, warp);
        Ok(())
    })?;
    e.barrier();
    let mut total = e.load(partials, zero_index)?;
    for w in 1..i64::from(THREADS / 32) {
        let at = e.index(w)?;
        let part = e.load(partials, at)?;
        total = e.maxf(total, part)?;
    }
    e.barrier();
    Ok(total)
}
