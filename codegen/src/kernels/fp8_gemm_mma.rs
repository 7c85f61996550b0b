//! The tensor-core form of the dense `fp8_gemm`: one warp per 16 × 8 output tile, FP8 products
//! summed by `mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32` (PTX ≥ 8.4, sm_89 and
//! sm_90a; emitted as inline PTX because MLIR 22's `nvvm.mma.sync` rejects dense e4m3 k32), and
//! every promotion interval the tile's partial sums scaled by `s_x · s_w` and added into f32
//! accumulators on the CUDA cores (DESIGN.md §3).
//!
//! Fragment layout (PTX ISA, `mma.m16n8k32` with 8-bit A/B): with `g = lane / 4` and
//! `q = lane % 4`, A register `r` holds row `g + 8·(r % 2)`, columns `16·(r / 2) + 4q .. + 3`
//! (lowest byte first); B register `r` holds column `g`, rows `16·r + 4q .. + 3`; D element `i`
//! is row `g + 8·(i / 2)`, column `2q + i % 2`. Rows past M, columns past N and K past its end
//! read as the code of +0.

use melior::dialect::llvm;
use melior::ir::attribute::DenseI64ArrayAttribute;
use melior::ir::{BlockLike, Value};

use super::fp8_gemm::Fp8Gemm;
use super::{Launch, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Warps (16 × 8 tiles) per block.
pub const WARPS: u32 = 4;
/// Rows and columns of a warp's tile.
pub const TILE_M: u64 = 16;
/// Columns of a warp's tile.
pub const TILE_N: u64 = 8;
/// K consumed by one MMA.
pub const MMA_K: u64 = 32;

/// The launch: one warp per tile.
pub fn launch(gemm: &Fp8Gemm) -> Launch {
    let tiles = gemm.rows.div_ceil(TILE_M) * gemm.n.div_ceil(TILE_N);
    Launch::blocks(tiles.div_ceil(u64::from(WARPS)), 32 * WARPS)
}

/// Builds the dense tensor-core kernel.
pub fn build(gemm: &Fp8Gemm, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let types = param_types(context, &gemm.params());
    module.add_kernel(entry, &types, |block, location| {
        let e = Emit::new(context, block, location);
        let arg = |i: usize| -> Result<Value, CodegenError> { Ok(block.argument(i)?.into()) };
        let operands = Operands {
            x: arg(0)?,
            x_scale: arg(1)?,
            w: arg(2)?,
            w_scale: arg(3)?,
            out: arg(4)?,
        };

        let thread = e.thread_x()?;
        let block_index = e.block_index(Dimension::X)?;
        let thirty_two = e.index(32)?;
        let warp = e.divui(thread, thirty_two)?;
        let lane = e.remui(thread, thirty_two)?;
        let warps = e.index(i64::from(WARPS))?;
        let tile = e.muli(block_index, warps)?;
        let tile = e.addi(tile, warp)?;
        let tiles_n = gemm.n.div_ceil(TILE_N);
        let tiles = e.index((gemm.rows.div_ceil(TILE_M) * tiles_n) as i64)?;
        let active = e.lt(tile, tiles)?;
        // Whole warps exit together, so every lane of a running warp reaches the MMA.
        e.if_then(active, |e| {
            let tiles_n = e.index(tiles_n as i64)?;
            let tm = e.divui(tile, tiles_n)?;
            let tn = e.remui(tile, tiles_n)?;
            let four = e.index(4)?;
            let g = e.divui(lane, four)?;
            let q = e.remui(lane, four)?;
            let tile_m = e.index(TILE_M as i64)?;
            let tile_n = e.index(TILE_N as i64)?;
            let row0 = e.muli(tm, tile_m)?;
            let row0 = e.addi(row0, g)?;
            let eight = e.index(8)?;
            let row1 = e.addi(row0, eight)?;
            let col = e.muli(tn, tile_n)?;
            let col_b = e.addi(col, g)?;
            let two = e.index(2)?;
            let qc = e.muli(q, two)?;
            let col_d = e.addi(col, qc)?;
            let one = e.index(1)?;
            let col_d1 = e.addi(col_d, one)?;
            let lanes = Lanes {
                q,
                rows: [row0, row1],
                col_b,
                cols_d: [col_d, col_d1],
            };
            tile_body(gemm, &e, &operands, &lanes)
        })
    })
}

/// The kernel's buffers.
struct Operands<'c, 'x> {
    x: Value<'c, 'x>,
    x_scale: Value<'c, 'x>,
    w: Value<'c, 'x>,
    w_scale: Value<'c, 'x>,
    out: Value<'c, 'x>,
}

/// This lane's coordinates in its warp's tile.
struct Lanes<'c, 'x> {
    q: Value<'c, 'x>,
    /// Rows of A and D: `g` and `g + 8` of the tile.
    rows: [Value<'c, 'x>; 2],
    /// Column of B.
    col_b: Value<'c, 'x>,
    /// Columns of D: `2q`, `2q + 1`.
    cols_d: [Value<'c, 'x>; 2],
}

fn tile_body<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    ops: &Operands<'c, '_>,
    lanes: &Lanes<'c, '_>,
) -> Result<(), CodegenError> {
    let zero = e.f32(0.0)?;
    let acc = [e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?];
    let partial = [e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?];
    let interval = gemm.promote_interval as i64;
    e.for_const(0, gemm.k as i64, interval, |e, k0| {
        for cell in partial {
            let zero = e.f32(0.0)?;
            e.set(cell, zero)?;
        }
        for step in 0..(gemm.promote_interval / MMA_K) as i64 {
            let offset = e.index(step * MMA_K as i64)?;
            let kc = e.addi(k0, offset)?;
            mma_step(gemm, &e, ops, lanes, kc, &partial)?;
        }
        promote(gemm, &e, ops, lanes, k0, &partial, &acc)
    })?;
    // Store D.
    for (i, cell) in acc.iter().enumerate() {
        let row = lanes.rows[i / 2];
        let col = lanes.cols_d[i % 2];
        let rows = e.index(gemm.rows as i64)?;
        let n = e.index(gemm.n as i64)?;
        let row_ok = e.lt(row, rows)?;
        let col_ok = e.lt(col, n)?;
        let ok = e.andi(row_ok, col_ok)?;
        let value = e.get(*cell)?;
        let value = e.round_to(value, gemm.output)?;
        e.if_then(ok, |e| {
            let at = e.muli(row, n)?;
            let at = e.addi(at, col)?;
            e.store(value, ops.out, at);
            Ok(())
        })?;
    }
    Ok(())
}

/// One `m16n8k32` MMA at K offset `kc`, accumulating into the `partial` cells.
fn mma_step<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    ops: &Operands<'c, '_>,
    lanes: &Lanes<'c, '_>,
    kc: Value<'c, 'a>,
    partial: &[Value<'c, 'a>; 4],
) -> Result<(), CodegenError> {
    let four = e.index(4)?;
    let q4 = e.muli(lanes.q, four)?;
    let base_k = e.addi(kc, q4)?;
    let sixteen = e.index(16)?;
    let high_k = e.addi(base_k, sixteen)?;
    let mut a = Vec::with_capacity(4);
    for r in 0..4 {
        let row = lanes.rows[r % 2];
        let k = if r / 2 == 0 { base_k } else { high_k };
        a.push(pack4(gemm, e, ops.x, row, gemm.rows, k)?);
    }
    let b = [
        pack4(gemm, e, ops.w, lanes.col_b, gemm.n, base_k)?,
        pack4(gemm, e, ops.w, lanes.col_b, gemm.n, high_k)?,
    ];
    let c: Vec<Value> = partial
        .iter()
        .map(|&cell| e.get(cell))
        .collect::<Result<_, _>>()?;
    let mut operands = a.clone();
    operands.extend(b);
    operands.extend(c);
    let f32_type = e.f32_type();
    let result_type = llvm::r#type::r#struct(e.context, &[f32_type; 4], false);
    let kind = match gemm.format {
        dsc_ir::DType::F8E5M2 => "e5m2",
        _ => "e4m3",
    };
    let op = e.inline_asm_op(
        &format!(
            "mma.sync.aligned.m16n8k32.row.col.f32.{kind}.{kind}.f32 {{$0,$1,$2,$3}}, {{$4,$5,$6,$7}}, {{$8,$9}}, {{$10,$11,$12,$13}};"
        ),
        "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
        &operands,
        &[result_type],
    )?;
    let d = e.push(op)?;
    for (i, &cell) in partial.iter().enumerate() {
        let position = DenseI64ArrayAttribute::new(e.context, &[i as i64]);
        let value = e.push(llvm::extract_value(
            e.context, d, position, f32_type, e.location,
        ))?;
        e.set(cell, value)?;
    }
    Ok(())
}

/// Four consecutive FP8 codes `m[row, k .. k + 4]` of a `[rows, K]` operand as one `i32`
/// (lowest K in the lowest byte), zero outside the matrix.
fn pack4<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    matrix: Value<'c, '_>,
    row: Value<'c, '_>,
    rows: u64,
    k: Value<'c, 'a>,
) -> Emitted<'c, 'a> {
    let i32_type = e.int_type(32);
    let rows = e.index(rows as i64)?;
    let kk = e.index(gemm.k as i64)?;
    let row_ok = e.lt(row, rows)?;
    let zero_index = e.index(0)?;
    let safe_row = e.select(row_ok, row, zero_index)?;
    let base = e.muli(safe_row, kk)?;
    let mut packed = e.int(32, 0)?;
    for j in 0..4 {
        let offset = e.index(j)?;
        let kj = e.addi(k, offset)?;
        let k_ok = e.lt(kj, kk)?;
        let ok = e.andi(row_ok, k_ok)?;
        let safe_k = e.select(ok, kj, zero_index)?;
        let at = e.addi(base, safe_k)?;
        let code = e.load(matrix, at)?;
        let code = e.extui(code, i32_type)?;
        let zero = e.int(32, 0)?;
        let code = e.select(ok, code, zero)?;
        let shift = e.int(32, 8 * j)?;
        let code = e.shli(code, shift)?;
        packed = e.ori(packed, code)?;
    }
    Ok(packed)
}

/// `acc[i] += partial[i] · (s_x[row_i, k0 / tile] · s_w[col_i / block, k0 / block])`.
fn promote<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    ops: &Operands<'c, '_>,
    lanes: &Lanes<'c, '_>,
    k0: Value<'c, 'a>,
    partial: &[Value<'c, 'a>; 4],
    acc: &[Value<'c, 'a>; 4],
) -> Result<(), CodegenError> {
    let tile = e.index(gemm.act_tile as i64)?;
    let block = e.index(gemm.weight_block as i64)?;
    let group = e.divui(k0, tile)?;
    let k_block = e.divui(k0, block)?;
    let k_tiles = e.index(gemm.k.div_ceil(gemm.act_tile) as i64)?;
    let k_blocks = e.index(gemm.k.div_ceil(gemm.weight_block) as i64)?;
    let rows = e.index(gemm.rows as i64)?;
    let n = e.index(gemm.n as i64)?;
    let n_max = e.index(gemm.n as i64 - 1)?;
    let row_max = e.index(gemm.rows as i64 - 1)?;
    for i in 0..4 {
        let row = lanes.rows[i / 2];
        let col = lanes.cols_d[i % 2];
        // Clamp the scale reads of out-of-range lanes (their results are never stored).
        let row_ok = e.lt(row, rows)?;
        let row = e.select(row_ok, row, row_max)?;
        let col_ok = e.lt(col, n)?;
        let col = e.select(col_ok, col, n_max)?;
        let sx_at = e.muli(row, k_tiles)?;
        let sx_at = e.addi(sx_at, group)?;
        let sx = e.load(ops.x_scale, sx_at)?;
        let n_block = e.divui(col, block)?;
        let sw_at = e.muli(n_block, k_blocks)?;
        let sw_at = e.addi(sw_at, k_block)?;
        let sw = e.load(ops.w_scale, sw_at)?;
        let s = e.mulf(sx, sw)?;
        let p = e.get(partial[i])?;
        let scaled = e.mulf(p, s)?;
        let total = e.get(acc[i])?;
        let total = e.addf(total, scaled)?;
        e.set(acc[i], total)?;
    }
    Ok(())
}
