//! `softmax_grad`: the VJP of softmax from its output, `dx = y ⊙ (dy − Σ_axis dy ⊙ y)`, along
//! any axis of `[outer, len, inner]`, one block per row of the axis (`outer · inner` rows, a
//! row's elements `inner` apart: contiguous for the last axis).
//!
//! In f32 as the CPU reference (`dsc_kernels::ops::grad::softmax_grad`): the dot product is
//! summed in a fixed tree of another order than its pairwise one (each thread in order, warp
//! butterflies, warps in order), then each `dx` is rounded to its dtype once. Deterministic.

use dsc_ir::DType;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type};
use serde::Serialize;

use super::norm::block_reduce;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block ([`block_reduce`]'s block).
pub const THREADS: u32 = super::norm::THREADS;

/// The softmax gradient of `[outer, len, inner]` along its middle axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SoftmaxGrad {
    /// Product of the dims before the axis.
    pub outer: u64,
    /// The axis.
    pub len: u64,
    /// Product of the dims after the axis.
    pub inner: u64,
    /// Dtype of `y`.
    pub probs: DType,
    /// Dtype of `dy`.
    pub grad: DType,
    /// Dtype of `dx`.
    pub output: DType,
}

impl SoftmaxGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "softmax_grad"
    }

    /// `(y, dy, dx)`.
    pub fn params(&self) -> Vec<Param> {
        let n = self.outer * self.len * self.inner;
        vec![
            Param::new("y", self.probs, n),
            Param::new("dy", self.grad, n),
            Param::new("dx", self.output, n),
        ]
    }

    /// One block of [`THREADS`] per row of the axis.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.outer * self.inner, THREADS)
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
            let args = kernel_args(block, block.argument_count())?;
            let (y, dy, dx, partials) = (args[0], args[1], args[2], args[3]);
            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            // Row `row` is (o, i): its elements are at o·len·inner + i + a·inner.
            let inner = e.index(self.inner as i64)?;
            let o = e.divui(row, inner)?;
            let i = e.remui(row, inner)?;
            let plane = e.index((self.len * self.inner) as i64)?;
            let base = e.muli(o, plane)?;
            let base = e.addi(base, i)?;
            let len = e.index(self.len as i64)?;
            let step = e.index(i64::from(THREADS))?;

            let zero = e.f32(0.0)?;
            let dots = e.cell(zero)?;
            e.for_range(tid, len, step, |e, a| {
                let offset = e.muli(a, inner)?;
                let g = e.load_f32(dy, base, offset)?;
                let p = e.load_f32(y, base, offset)?;
                let gp = e.mulf(g, p)?;
                e.accumulate(dots, gp)
            })?;
            let own = e.get(dots)?;
            let dot = block_reduce(&e, own, Reduction::Sum, tid, partials)?;

            e.for_range(tid, len, step, |e, a| {
                let offset = e.muli(a, inner)?;
                let at = e.addi(base, offset)?;
                let g = e.load_f32(dy, base, offset)?;
                let p = e.load_f32(y, base, offset)?;
                let centered = e.subf(g, dot)?;
                let d = e.mulf(p, centered)?;
                let d = e.round_to(d, self.output)?;
                e.store(d, dx, at);
                Ok(())
            })
        })
    }
}
