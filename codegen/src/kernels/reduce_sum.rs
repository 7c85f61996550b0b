//! `reduce_sum` over one axis: `x` as `[outer, len, inner]` → `[outer, inner]`, each sum in f64
//! and rounded to the output dtype once (so within about half an ulp of the exact sum; the CPU
//! reference's f32 pairwise tree is within a few ulps of it: results agree within a tolerance).
//!
//! A block takes `cols` adjacent columns of one outer index (32, or fewer when `inner` is
//! smaller) and splits the axis among `THREADS / cols` groups of threads: group `g` sums rows
//! `g, g + groups, …` (a warp reads `cols` adjacent elements of a row, or with one column,
//! adjacent rows); the groups' sums are then added in group order. Deterministic.

use dsc_ir::DType;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type};
use serde::Serialize;

use super::grid_reduce::f64_const;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// Threads per block.
pub const THREADS: u32 = 256;

/// Sum of `[outer, len, inner]` over its middle axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReduceSum {
    /// Product of the dims before the axis.
    pub outer: u64,
    /// The axis.
    pub len: u64,
    /// Product of the dims after the axis.
    pub inner: u64,
    /// Input dtype.
    pub input: DType,
    /// Output dtype.
    pub output: DType,
}

impl ReduceSum {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "reduce_sum"
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.input, self.outer * self.len * self.inner),
            Param::new("out", self.output, self.outer * self.inner),
        ]
    }

    /// Columns per block: 32, or the next power of two of a smaller `inner`.
    fn cols(&self) -> u64 {
        self.inner.next_power_of_two().clamp(1, 32)
    }

    /// Column tiles per outer index.
    fn tiles(&self) -> u64 {
        self.inner.div_ceil(self.cols())
    }

    /// One block per tile of columns of each outer index.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.outer * self.tiles(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Vec<Type> = vec![
            MemRefType::new(
                Type::float64(context),
                &[i64::from(THREADS)],
                None,
                workgroup,
            )
            .into(),
        ];
        let cols = self.cols();
        let groups = u64::from(THREADS) / cols;
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (x, out, sums) = (args[0], args[1], args[2]);
            let f64_type = Type::float64(context);

            let tid = e.thread_x()?;
            let bid = e.block_index(Dimension::X)?;
            let tiles = e.index(self.tiles() as i64)?;
            let o = e.divui(bid, tiles)?;
            let tile = e.remui(bid, tiles)?;
            let cols_v = e.index(cols as i64)?;
            let lane = e.remui(tid, cols_v)?;
            let group = e.divui(tid, cols_v)?;
            let first_col = e.muli(tile, cols_v)?;
            let j = e.addi(first_col, lane)?;
            let inner = e.index(self.inner as i64)?;
            let in_range = e.lt(j, inner)?;

            let zero = f64_const(&e, 0.0)?;
            let acc = e.cell(zero)?;
            e.if_then(in_range, |e| {
                let len = e.index(self.len as i64)?;
                let groups_v = e.index(groups as i64)?;
                let plane = e.index((self.len * self.inner) as i64)?;
                let base = e.muli(o, plane)?;
                let base = e.addi(base, j)?;
                e.for_range(group, len, groups_v, |e, a| {
                    let row = e.muli(a, inner)?;
                    let v = e.load_f32(x, base, row)?;
                    let v = e.extf(v, f64_type)?;
                    e.accumulate(acc, v)
                })
            })?;
            let own = e.get(acc)?;
            e.store(own, sums, tid);
            e.barrier();

            let first_group = e.lt(tid, cols_v)?;
            let write = e.andi(first_group, in_range)?;
            e.if_then(write, |e| {
                let first = e.load(sums, tid)?;
                let total = e.cell(first)?;
                let start = e.addi(tid, cols_v)?;
                let end = e.index(i64::from(THREADS))?;
                e.for_range(start, end, cols_v, |e, at| {
                    let part = e.load(sums, at)?;
                    e.accumulate(total, part)
                })?;
                let total = e.get(total)?;
                let total = e.truncf(total, e.f32_type())?;
                let total = e.round_to(total, self.output)?;
                let plane = e.muli(o, inner)?;
                let at = e.addi(plane, j)?;
                e.store(total, out, at);
                Ok(())
            })
        })
    }
}
