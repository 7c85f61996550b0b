//! `linear` kept in high precision (the output head, the MoE gate): `y[m, n] = Σ_k x[m, k] ·
//! w[n, k] (+ bias[n])`, one output per thread, f32 accumulation of exact products.
//!
//! BF16 operands (the head) run on the tensor cores ([`super::linear_mma`]); others (the MoE
//! gate, whose logits the recipe computes in f32) take the SIMT form, one output per thread.
//! The same kernel computes `grouped_linear` (routed experts kept in high precision by the
//! policy): row `r = t·top_k + slot` uses expert `indices[r]`'s weights and x row `r` or `t`.

use dsc_ir::DType;
use serde::Serialize;

use super::fp8_gemm::Grouped;
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

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
    /// Present for `grouped_linear`: `m` is then tokens × top_k, w is `[E, n, k]`.
    pub grouped: Option<Grouped>,
}

impl Linear {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        if self.grouped.is_some() {
            "grouped_linear"
        } else {
            "linear"
        }
    }

    fn x_rows(&self) -> u64 {
        match self.grouped {
            Some(g) if !g.x_per_slot => g.tokens,
            _ => self.m,
        }
    }

    /// `(x, w, [bias,] [indices,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let experts = self.grouped.map_or(1, |g| g.experts);
        let mut params = vec![
            Param::new("x", self.x, self.x_rows() * self.k),
            Param::new("w", self.w, experts * self.n * self.k),
        ];
        if let Some(bias) = self.bias {
            params.push(Param::new("bias", bias, self.n));
        }
        if let Some(g) = self.grouped {
            params.push(Param::new("indices", DType::I32, g.tokens * g.top_k));
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
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.m * self.n,
            |e, args, i| {
                let (x, w, out) = (args[0], args[1], *args.last().expect("out"));
                let n = e.index(self.n as i64)?;
                let k = e.index(self.k as i64)?;
                let row = e.divui(i, n)?;
                let col = e.remui(i, n)?;
                let (x_row, w_row) = match self.grouped {
                    None => (row, col),
                    Some(g) => {
                        let indices = args[args.len() - 2];
                        let expert = e.load(indices, row)?;
                        // An index outside 0..experts (the CPU reference's error) reads expert 0.
                        let (expert, _) = e.checked_index(expert, g.experts as i64)?;
                        let x_row = if g.x_per_slot {
                            row
                        } else {
                            let top_k = e.index(g.top_k as i64)?;
                            e.divui(row, top_k)?
                        };
                        let w_row = e.muli(expert, n)?;
                        (x_row, e.addi(w_row, col)?)
                    }
                };
                let x_base = e.muli(x_row, k)?;
                let w_base = e.muli(w_row, k)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.k as i64, 1, |e, kk| {
                    let xv = e.load_f32(x, x_base, kk)?;
                    let wv = e.load_f32(w, w_base, kk)?;
                    let product = e.mulf(xv, wv)?;
                    e.accumulate(acc, product)
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
            },
        )
    }
}
