//! `dequantize`: `decode(code) · s` per element (FP8, or the emulated E5M6 in its 16-bit
//! container), with `s` the scale of the element's
//! `br × bc` block of its matrix (1 × 128 activation tiles, 128 × 128 weight blocks), in f32
//! and rounded once to the output dtype, as the CPU reference
//! (`dsc_kernels::quantized::dequantize_blocks`) computes it. One element per thread.

use dsc_ir::DType;
use serde::Serialize;

use super::fp8_gemm::decode_fp8;
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// Dequantization of `matrices` matrices of `rows × cols` FP8 codes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dequantize {
    /// Matrices, each on its own block grid.
    pub matrices: u64,
    /// Rows of a matrix.
    pub rows: u64,
    /// Columns of a matrix.
    pub cols: u64,
    /// Rows and columns of a scale's block.
    pub block: [u64; 2],
    /// FP8 format of the codes.
    pub format: DType,
    /// Output dtype.
    pub output: DType,
}

impl Dequantize {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "dequantize"
    }

    fn len(&self) -> u64 {
        self.matrices * self.rows * self.cols
    }

    fn scale_grid(&self) -> (u64, u64) {
        (
            self.rows.div_ceil(self.block[0]),
            self.cols.div_ceil(self.block[1]),
        )
    }

    /// `(codes, scales, out)`.
    pub fn params(&self) -> Vec<Param> {
        let (sr, sc) = self.scale_grid();
        vec![
            Param::new("codes", self.format, self.len()),
            Param::new("scales", DType::F32, self.matrices * sr * sc),
            Param::new("out", self.output, self.len()),
        ]
    }

    /// One element per thread.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let (sr, sc) = self.scale_grid();
        add_per_element_kernel(module, entry, &self.params(), self.len(), |e, args, i| {
            let (codes, scales, out) = (args[0], args[1], args[2]);
            let cols = e.index(self.cols as i64)?;
            let rows = e.index(self.rows as i64)?;
            let row_index = e.divui(i, cols)?;
            let col = e.remui(i, cols)?;
            let matrix = e.divui(row_index, rows)?;
            let row = e.remui(row_index, rows)?;
            let scale_row = e.muli(matrix, e.index(sr as i64)?)?;
            let scale_row = e.addi(scale_row, e.divui(row, e.index(self.block[0] as i64)?)?)?;
            let at = e.muli(scale_row, e.index(sc as i64)?)?;
            let at = e.addi(at, e.divui(col, e.index(self.block[1] as i64)?)?)?;
            let s = e.load(scales, at)?;
            let code = e.load(codes, i)?;
            let v = match self.format {
                DType::F12E5M6 => e.decode_e5m6(code)?,
                format => decode_fp8(&e, code, format)?,
            };
            let value = e.round_to(e.mulf(v, s)?, self.output)?;
            e.store(value, out, i);
            Ok(())
        })
    }
}
