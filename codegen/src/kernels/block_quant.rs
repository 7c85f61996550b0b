//! `quantize` in square blocks: `b × b` tiles of each matrix of a `[matrices, rows, cols]`
//! tensor, one scale per tile (the weights of a training step, quantized from their FP32
//! masters every step, and the ablation's activation gradients in 128 × 128 blocks).
//!
//! One block of [`THREADS`] threads per tile: consecutive threads read consecutive columns of
//! a tile row (coalesced), the tile's `amax` is reduced over the block (NaN skipped), then
//! `s = max(amax, 1e-4) / fp8_max` (UE8M0: rounded up to a power of two) and the codes
//! `fp8(x / s)` with a true division, round to nearest even, saturating — bit-identical to the
//! CPU reference (`dsc_kernels::weight_quant_128x128`). The tile is read twice, the second
//! time from L2: holding 128 × 128 values would take 64 registers a thread.

use dsc_ir::DType;
use melior::ir::attribute::Attribute;
use melior::ir::r#type::MemRefType;
use melior::ir::{BlockLike, Type, Value};
use serde::Serialize;

use super::norm::block_reduce;
use super::quantize::QuantSpec;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block (the block reduction's size).
pub const THREADS: u32 = super::norm::THREADS;

/// Square-block quantization of `matrices` matrices of `rows × cols`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockQuant {
    /// Matrices (experts), each on its own block grid.
    pub matrices: u64,
    /// Rows of a matrix.
    pub rows: u64,
    /// Columns of a matrix.
    pub cols: u64,
    /// Dtype of the input.
    pub input: DType,
    /// The output; `quant.tile` is the block edge.
    pub quant: QuantSpec,
}

impl BlockQuant {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "quantize"
    }

    fn row_blocks(&self) -> u64 {
        self.rows.div_ceil(self.quant.tile)
    }

    fn col_blocks(&self) -> u64 {
        self.cols.div_ceil(self.quant.tile)
    }

    /// `(x, codes, scales)`.
    pub fn params(&self) -> Vec<Param> {
        let len = self.matrices * self.rows * self.cols;
        vec![
            Param::new("x", self.input, len),
            Param::new("codes", self.quant.format, len),
            Param::new(
                "scales",
                DType::F32,
                self.matrices * self.row_blocks() * self.col_blocks(),
            ),
        ]
    }

    /// One block per tile.
    pub fn launch(&self) -> Launch {
        Launch::blocks(
            self.matrices * self.row_blocks() * self.col_blocks(),
            THREADS,
        )
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let partials: Type = MemRefType::new(
            Type::float32(context),
            &[i64::from(THREADS / 32)],
            None,
            workgroup,
        )
        .into();
        let n_args = types.len();
        module.add_kernel_with_shared(entry, &types, &[partials], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (x, codes, scales) = (args[0], args[1], args[2]);
            let partials = args[n_args];
            let tid = e.thread_x()?;
            let tile_index = e.block_index(Dimension::X)?;
            let b = self.quant.tile;
            let per_matrix = e.index((self.row_blocks() * self.col_blocks()) as i64)?;
            let matrix = e.divui(tile_index, per_matrix)?;
            let within = e.remui(tile_index, per_matrix)?;
            let col_blocks = e.index(self.col_blocks() as i64)?;
            let row0 = e.muli(e.divui(within, col_blocks)?, e.index(b as i64)?)?;
            let col0 = e.muli(e.remui(within, col_blocks)?, e.index(b as i64)?)?;
            let rows = e.index(self.rows as i64)?;
            let cols = e.index(self.cols as i64)?;
            let matrix_base = e.muli(matrix, e.index((self.rows * self.cols) as i64)?)?;
            let tile_len = e.index((b * b) as i64)?;
            let step = e.index(i64::from(THREADS))?;
            let b_index = e.index(b as i64)?;
            let tile = Tile {
                row0,
                col0,
                rows,
                cols,
                matrix_base,
                edge: b_index,
            };

            let zero = e.f32(0.0)?;
            let amax_cell = e.cell(zero)?;
            e.for_range(tid, tile_len, step, |e, j| {
                let (at, ok) = tile.element(&e, j)?;
                e.if_then(ok, |e| {
                    let v = e.load(x, at)?;
                    let magnitude = e.absf(e.to_f32(v)?)?;
                    let amax = e.max_skip_nan(e.get(amax_cell)?, magnitude)?;
                    e.set(amax_cell, amax)
                })
            })?;
            let own = e.get(amax_cell)?;
            let amax = block_reduce(&e, own, Reduction::Max, tid, partials)?;
            let s = e.scale_for(amax, self.quant.format, self.quant.scale_format)?;
            let first = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, tid, e.index(0)?)?;
            e.if_then(first, |e| {
                e.store(s, scales, tile_index);
                Ok(())
            })?;
            e.for_range(tid, tile_len, step, |e, j| {
                let (at, ok) = tile.element(&e, j)?;
                e.if_then(ok, |e| {
                    let v = e.to_f32(e.load(x, at)?)?;
                    let code = e.encode_fp8(e.divf(v, s)?, self.quant.format)?;
                    e.store(code, codes, at);
                    Ok(())
                })
            })
        })
    }
}

/// Where a block's tile lies in its matrix.
struct Tile<'c, 'x> {
    row0: Value<'c, 'x>,
    col0: Value<'c, 'x>,
    rows: Value<'c, 'x>,
    cols: Value<'c, 'x>,
    matrix_base: Value<'c, 'x>,
    edge: Value<'c, 'x>,
}

impl<'c> Tile<'c, '_> {
    /// Element `j` of the tile (row-major): its flat position in x and whether it is in the
    /// matrix.
    fn element<'a>(
        &self,
        e: &Emit<'c, 'a>,
        j: Value<'c, '_>,
    ) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
        let row = e.addi(self.row0, e.divui(j, self.edge)?)?;
        let col = e.addi(self.col0, e.remui(j, self.edge)?)?;
        let ok = e.andi(e.lt(row, self.rows)?, e.lt(col, self.cols)?)?;
        let at = e.addi(self.matrix_base, e.addi(e.muli(row, self.cols)?, col)?)?;
        Ok((at, ok))
    }
}
