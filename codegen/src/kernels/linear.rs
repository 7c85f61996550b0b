//! `linear` kept in high precision (the output head, the MoE gate): `y[m, n] = Σ_k x[m, k] ·
//! w[n, k] (+ bias[n])`, one output per thread, f32 accumulation of exact products.
//!
//! BF16 operands (the head) run on the tensor cores ([`super::linear_mma`]); others (the MoE
//! gate, whose logits the recipe computes in f32) take the SIMT form, one output per thread.

use dsc_ir::DType;
use melior::ir::{BlockLike, Value};
use serde::Serialize;

use super::elementwise::global_index;
use super::{Launch, Param, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// `[m, k] · [n, k]ᵀ`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linear {
    /// Rows of x.
    pub m: u64,
    /// Rows of w (outputs per row).
    pub n: u64,
    /// Reduction length.
    pub k: u64,
    /// x dtype.
    pub x: DType,
    /// w dtype.
    pub w: DType,
    /// Bias dtype, when there is one.
    pub bias: Option<DType>,
    /// Output dtype.
    pub output: DType,
}

impl Linear {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "linear"
    }

    /// `(x, w, [bias,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![
            Param::new("x", self.x, self.m * self.k),
            Param::new("w", self.w, self.n * self.k),
        ];
        if let Some(bias) = self.bias {
            params.push(Param::new("bias", bias, self.n));
        }
        params.push(Param::new("out", self.output, self.m * self.n));
        params
    }

    /// One warp per 16 × 8 tile (BF16) or one thread per output.
    pub fn launch(&self) -> Launch {
        if super::linear_mma::applies(self) {
            super::linear_mma::launch(self)
        } else {
            Launch::per_element(self.m * self.n)
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if super::linear_mma::applies(self) {
            return super::linear_mma::build(self, module, entry);
        }
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args: Vec<Value> = (0..types.len())
                .map(|i| block.argument(i).map(Into::into))
                .collect::<Result<_, _>>()?;
            let (x, w, out) = (args[0], args[1], *args.last().expect("out"));
            let i = global_index(&e)?;
            let total = e.index((self.m * self.n) as i64)?;
            let in_bounds = e.lt(i, total)?;
            e.if_then(in_bounds, |e| {
                let n = e.index(self.n as i64)?;
                let k = e.index(self.k as i64)?;
                let row = e.divui(i, n)?;
                let col = e.remui(i, n)?;
                let x_base = e.muli(row, k)?;
                let w_base = e.muli(col, k)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.k as i64, 1, |e, kk| {
                    let xv = e.load_f32(x, x_base, kk)?;
                    let wv = e.load_f32(w, w_base, kk)?;
                    let product = e.mulf(xv, wv)?;
                    let sum = e.get(acc)?;
                    let sum = e.addf(sum, product)?;
                    e.set(acc, sum)
                })?;
                let mut value = e.get(acc)?;
                if self.bias.is_some() {
                    let zero_index = e.index(0)?;
                    let b = e.load_f32(args[2], zero_index, col)?;
                    value = e.addf(value, b)?;
                }
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            })
        })
    }
}
