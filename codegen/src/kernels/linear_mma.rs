//! The tensor-core form of a BF16 `linear` (the output head): one warp per 16 × 8 output tile,
//! `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (exact bf16 products, f32 sums), then
//! the bias in f32 and one rounding to the output dtype.
//!
//! Fragment layout (PTX ISA, `mma.m16n8k16` with 16-bit A/B): with `g = lane / 4` and
//! `q = lane % 4`, A register `r` holds row `g + 8·(r % 2)`, columns `8·(r / 2) + 2q, + 1` (lower
//! column in the low half); B register `r` holds column `g`, rows `8r + 2q, + 1`; D as in
//! [`super::mma`]. Outside the matrix, elements read as +0.

use dsc_ir::DType;

use super::linear::Linear;
use super::mma::{TILE_M, mma_into, pack_k, tile_lane};
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

const MMA_K: i64 = 16;
const INSTRUCTION: &str = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";

/// Whether `linear` can take the tensor-core form: BF16 operands, not grouped.
pub fn applies(linear: &Linear) -> bool {
    linear.x == DType::Bf16 && linear.w == DType::Bf16 && linear.grouped.is_none()
}

/// One warp per tile.
pub fn launch(linear: &Linear) -> Launch {
    super::mma::launch(linear.m.div_ceil(TILE_M), linear.n)
}

/// Builds the kernel.
pub fn build(linear: &Linear, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let params = linear.params();
    let types = param_types(context, &params);
    module.add_kernel(entry, &types, |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, types.len())?;
        let (x, w) = (args[0], args[1]);
        let bias = linear.bias.map(|_| args[2]);
        let out = args[params.len() - 1];
        let lane = tile_lane(&e, linear.m.div_ceil(TILE_M), linear.n)?;
        e.if_then(lane.active, |e| {
            let m = e.index(linear.m as i64)?;
            let n = e.index(linear.n as i64)?;
            let k = e.index(linear.k as i64)?;
            let zero_index = e.index(0)?;
            // Row starts and validity of the lane's two A rows and its B row.
            let mut a_rows = Vec::with_capacity(2);
            for row in lane.rows {
                let real = e.lt(row, m)?;
                let safe = e.select(real, row, zero_index)?;
                a_rows.push((e.muli(safe, k)?, real));
            }
            let b_real = e.lt(lane.col_b, n)?;
            let b_row = e.select(b_real, lane.col_b, zero_index)?;
            let b_base = e.muli(b_row, k)?;

            let zero = e.f32(0.0)?;
            let acc = [e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?];
            e.for_const(0, linear.k as i64, MMA_K, |e, kc| {
                let two = e.index(2)?;
                let q2 = e.muli(lane.q, two)?;
                let low = e.addi(kc, q2)?;
                let eight = e.index(8)?;
                let high = e.addi(low, eight)?;
                let pack =
                    |matrix, (base, real), k| pack_k(&e, matrix, base, real, k, linear.k, 16);
                let a = [
                    pack(x, a_rows[0], low)?,
                    pack(x, a_rows[1], low)?,
                    pack(x, a_rows[0], high)?,
                    pack(x, a_rows[1], high)?,
                ];
                let b = [
                    pack(w, (b_base, b_real), low)?,
                    pack(w, (b_base, b_real), high)?,
                ];
                mma_into(&e, INSTRUCTION, a, b, &acc)
            })?;

            for (i, cell) in acc.iter().enumerate() {
                let row = lane.rows[i / 2];
                let col = lane.cols_d[i % 2];
                let col_ok = e.lt(col, n)?;
                let ok = e.andi(a_rows[i / 2].1, col_ok)?;
                e.if_then(ok, |e| {
                    let mut value = e.get(*cell)?;
                    if let Some(bias) = bias {
                        let zero_index = e.index(0)?;
                        let b = e.load_f32(bias, zero_index, col)?;
                        value = e.addf(value, b)?;
                    }
                    let value = e.round_to(value, linear.output)?;
                    let at = e.muli(row, n)?;
                    let at = e.addi(at, col)?;
                    e.store(value, out, at);
                    Ok(())
                })?;
            }
            Ok(())
        })
    })
}
