//! `matmul`: batched `out[b, m, n] = Σ_k x[b, m, k] · y[b, k, n]` (or `y[b, n, k]` with
//! `transpose_b`), one output per thread, f32 accumulation of exact products, rounded once to
//! the output dtype.

use dsc_ir::DType;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// A batched matrix product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matmul {
    /// Product of the batch dims.
    pub batch: u64,
    /// Rows of x.
    pub m: u64,
    /// Contraction length.
    pub k: u64,
    /// Columns of the output.
    pub n: u64,
    /// Whether y is `[.., n, k]`.
    pub transpose_b: bool,
    /// x dtype.
    pub x: DType,
    /// y dtype.
    pub y: DType,
    /// Output dtype.
    pub output: DType,
}

impl Matmul {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "matmul"
    }

    fn out_len(&self) -> u64 {
        self.batch * self.m * self.n
    }

    /// `(x, y, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.x, self.batch * self.m * self.k),
            Param::new("y", self.y, self.batch * self.k * self.n),
            Param::new("out", self.output, self.out_len()),
        ]
    }

    /// One thread per output.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.out_len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.out_len(),
            |e, args, i| {
                let x = args[0];
                let y = args[1];
                let out = args[2];
                let n = e.index(self.n as i64)?;
                let m = e.index(self.m as i64)?;
                let col = e.remui(i, n)?;
                let rest = e.divui(i, n)?;
                let row = e.remui(rest, m)?;
                let b = e.divui(rest, m)?;
                let mk = e.index((self.m * self.k) as i64)?;
                let kn = e.index((self.k * self.n) as i64)?;
                let k = e.index(self.k as i64)?;
                let x_base = e.muli(b, mk)?;
                let x_row = e.muli(row, k)?;
                let x_base = e.addi(x_base, x_row)?;
                let y_base = e.muli(b, kn)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.k as i64, 1, |e, kk| {
                    let xv = e.load_f32(x, x_base, kk)?;
                    // y[b, kk, col] or y[b, col, kk].
                    let offset = if self.transpose_b {
                        let at = e.muli(col, k)?;
                        e.addi(at, kk)?
                    } else {
                        let at = e.muli(kk, n)?;
                        e.addi(at, col)?
                    };
                    let yv = e.load_f32(y, y_base, offset)?;
                    let product = e.mulf(xv, yv)?;
                    e.accumulate(acc, product)
                })?;
                let value = e.get(acc)?;
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}
