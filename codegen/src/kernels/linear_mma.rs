//! The tensor-core form of a BF16 `linear` (the output head): one warp per 16 × 8 output tile,
//! `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (exact bf16 products, f32 sums), then
//! the bias in f32 and one rounding to the output dtype.
//!
//! Fragment layout (PTX ISA, `mma.m16n8k16` with 16-bit A/B): with `g = lane / 4` and
//! `q = lane % 4`, A register `r` holds row `g + 8·(r % 2)`, columns `8·(r / 2) + 2q, + 1` (lower
//! column in the low half); B register `r` holds column `g`, rows `8r + 2q, + 1`; D element `i`
//! is row `g + 8·(i / 2)`, column `2q + i % 2`. Outside the matrix, elements read as +0.

use dsc_ir::DType;
use melior::dialect::llvm;
use melior::ir::attribute::DenseI64ArrayAttribute;
use melior::ir::{BlockLike, Value};

use super::linear::Linear;
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Warps (16 × 8 tiles) per block.
pub const WARPS: u32 = 4;
const TILE_M: u64 = 16;
const TILE_N: u64 = 8;
const MMA_K: i64 = 16;

/// Whether `linear` can take the tensor-core form: BF16 operands, not grouped.
pub fn applies(linear: &Linear) -> bool {
    linear.x == DType::Bf16 && linear.w == DType::Bf16 && linear.grouped.is_none()
}

/// One warp per tile.
pub fn launch(linear: &Linear) -> Launch {
    let tiles = linear.m.div_ceil(TILE_M) * linear.n.div_ceil(TILE_N);
    Launch::blocks(tiles.div_ceil(u64::from(WARPS)), 32 * WARPS)
}

/// Builds the kernel.
pub fn build(linear: &Linear, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let params = linear.params();
    let types = param_types(context, &params);
    module.add_kernel(entry, &types, |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, block.argument_count())?;
        let (x, w) = (args[0], args[1]);
        let bias = if linear.bias.is_some() { Some(args[2]) } else { None };
        let out = args[params.len() - 1];

        let thread = e.thread_x()?;
        let block_index = e.block_index(Dimension::X)?;
        let thirty_two = e.index(32)?;
        let warp = e.divui(thread, thirty_two)?;
        let lane = e.remui(thread, thirty_two)?;
        let warps = e.index(i64::from(WARPS))?;
        let tile = e.muli(block_index, warps)?;
        let tile = e.addi(tile, warp)?;
        let tiles_n = linear.n.div_ceil(TILE_N);
        let tiles = e.index((linear.m.div_ceil(TILE_M) * tiles_n) as i64)?;
        let active = e.lt(tile, tiles)?;
        e.if_then(active, |e| {
            let tiles_n = e.index(tiles_n as i64)?;
            let tm = e.divui(tile, tiles_n)?;
            let tn = e.remui(tile, tiles_n)?;
            let four = e.index(4)?;
            let g = e.divui(lane, four)?;
            let q = e.remui(lane, four)?;
            let sixteen = e.index(TILE_M as i64)?;
            let eight = e.index(TILE_N as i64)?;
            let row0 = e.muli(tm, sixteen)?;
            let row0 = e.addi(row0, g)?;
            let row1 = e.addi(row0, eight)?;
            let col = e.muli(tn, eight)?;
            let col_b = e.addi(col, g)?;
            let two = e.index(2)?;
            let q2 = e.muli(q, two)?;
            let col_d0 = e.addi(col, q2)?;
            let one = e.index(1)?;
            let col_d1 = e.addi(col_d0, one)?;

            let zero = e.f32(0.0)?;
            let acc = [e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?];
            e.for_const(0, linear.k as i64, MMA_K, |e, kc| {
                let low = e.addi(kc, q2)?;
                let eight = e.index(8)?;
                let high = e.addi(low, eight)?;
                let a = [
                    pack2(linear, &e, x, row0, linear.m, low)?,
                    pack2(linear, &e, x, row1, linear.m, low)?,
                    pack2(linear, &e, x, row0, linear.m, high)?,
                    pack2(linear, &e, x, row1, linear.m, high)?,
                ];
                let b = [
                    pack2(linear, &e, w, col_b, linear.n, low)?,
                    pack2(linear, &e, w, col_b, linear.n, high)?,
                ];
                let mut operands: Vec<Value> = a.to_vec();
                operands.extend(b);
                for cell in acc {
                    operands.push(e.get(cell)?);
                }
                let f32_type = e.f32_type();
                let result_type = llvm::r#type::r#struct(e.context, &[f32_type; 4], false);
                let op = e.inline_asm_op(
                    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9}, {$10,$11,$12,$13};",
                    "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
                    &operands,
                    &[result_type],
                )?;
                let d = e.push(op)?;
                for (i, &cell) in acc.iter().enumerate() {
                    let position = DenseI64ArrayAttribute::new(e.context, &[i as i64]);
                    let value =
                        e.push(llvm::extract_value(e.context, d, position, f32_type, e.location))?;
                    e.set(cell, value)?;
                }
                Ok(())
            })?;

            let rows = e.index(linear.m as i64)?;
            let n = e.index(linear.n as i64)?;
            for (i, cell) in acc.iter().enumerate() {
                let row = if i / 2 == 0 { row0 } else { row1 };
                let col = if i % 2 == 0 { col_d0 } else { col_d1 };
                let row_ok = e.lt(row, rows)?;
                let col_ok = e.lt(col, n)?;
                let ok = e.andi(row_ok, col_ok)?;
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

/// Two consecutive bf16 elements `m[row, k .. k + 2]` of a `[rows, K]` matrix as one `i32`
/// (lower K in the low half), +0 outside the matrix.
fn pack2<'c, 'a>(
    linear: &Linear,
    e: &Emit<'c, 'a>,
    matrix: Value<'c, '_>,
    row: Value<'c, '_>,
    rows: u64,
    k: Value<'c, 'a>,
) -> Emitted<'c, 'a> {
    let i16_type = e.int_type(16);
    let i32_type = e.int_type(32);
    let rows = e.index(rows as i64)?;
    let kk = e.index(linear.k as i64)?;
    let row_ok = e.lt(row, rows)?;
    let zero_index = e.index(0)?;
    let safe_row = e.select(row_ok, row, zero_index)?;
    let base = e.muli(safe_row, kk)?;
    let mut packed = e.int(32, 0)?;
    for j in 0..2 {
        let offset = e.index(j)?;
        let kj = e.addi(k, offset)?;
        let k_ok = e.lt(kj, kk)?;
        let ok = e.andi(row_ok, k_ok)?;
        let safe_k = e.select(ok, kj, zero_index)?;
        let at = e.addi(base, safe_k)?;
        let value = e.load(matrix, at)?;
        let bits = e.bitcast(value, i16_type)?;
        let bits = e.extui(bits, i32_type)?;
        let zero = e.int(32, 0)?;
        let bits = e.select(ok, bits, zero)?;
        let shift = e.int(32, 16 * j)?;
        let bits = e.shli(bits, shift)?;
        packed = e.ori(packed, bits)?;
    }
    Ok(packed)
}
