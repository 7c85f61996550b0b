//! The tensor-core form of `fp8_gemm`: one warp per 16 × 8 output tile, FP8 products
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
//!
//! Grouped (routed experts), the M dimension is the padded, expert-contiguous layout built by
//! [`super::moe_dispatch`]: tile `tm` belongs to expert `tiles[tm]` (a warp with −1 exits), its
//! row `p` computes routed row `r = rows[p]` (padding, −1, reads zeros and stores nothing) from
//! x row `r` or `r / top_k`, and writes output row `r`, so results land in (token, slot) order.

use melior::ir::{BlockLike, Value};

use super::fp8_gemm::{Fp8Gemm, Operands, TileRow, tile_row};
use super::mma::{TILE_M, fp8_mma_instruction, mma_into, pack_k, tile_lane};
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// K consumed by one MMA.
pub const MMA_K: u64 = 32;

/// The launch: one warp per tile.
pub fn launch(gemm: &Fp8Gemm) -> Launch {
    super::mma::launch(m_tiles(gemm), gemm.n)
}

/// Tiles along M: of the output rows (dense) or of the dispatch's padded layout (grouped).
fn m_tiles(gemm: &Fp8Gemm) -> u64 {
    match gemm.grouped {
        None => gemm.rows.div_ceil(TILE_M),
        Some(g) => gemm.dispatch(g).capacity() / TILE_M,
    }
}

/// Builds the tensor-core kernel.
pub fn build(gemm: &Fp8Gemm, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let types = param_types(context, &gemm.params());
    module.add_kernel(entry, &types, |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, block.argument_count())?;
        let operands = Operands::of(gemm, &args);

        let lane = tile_lane(&e, m_tiles(gemm), gemm.n)?;
        e.if_then(lane.active, |e| {
            let expert = match operands.dispatch {
                None => e.int(32, 0)?,
                Some((_, tile_experts)) => e.load(tile_experts, lane.tm)?,
            };
            let zero_i = e.int(32, 0)?;
            let has_expert = e.cmpi(melior::dialect::arith::CmpiPredicate::Sge, expert, zero_i)?;
            // Whole warps skip an unused tile together.
            e.if_then(has_expert, |e| {
                let expert = e.index_cast(expert, e.index_type())?;
                let rows = [
                    tile_row(gemm, &e, operands.dispatch.map(|d| d.0), lane.rows[0])?,
                    tile_row(gemm, &e, operands.dispatch.map(|d| d.0), lane.rows[1])?,
                ];
                let lanes = Lanes {
                    q: lane.q,
                    rows,
                    expert,
                    col_b: lane.col_b,
                    cols_d: lane.cols_d,
                };
                tile_body(gemm, &e, &operands, &lanes)
            })
        })
    })
}

/// This lane's coordinates in its warp's tile.
struct Lanes<'c, 'x> {
    q: Value<'c, 'x>,
    /// Rows of A and D: `g` and `g + 8` of the tile.
    rows: [TileRow<'c, 'x>; 2],
    /// The expert whose weights the tile reads (0 when dense).
    expert: Value<'c, 'x>,
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
        let n = e.index(gemm.n as i64)?;
        let col_ok = e.lt(col, n)?;
        let ok = e.andi(row.real, col_ok)?;
        let row = row.out;
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
    let kk = e.index(gemm.k as i64)?;
    let mut a = Vec::with_capacity(4);
    for r in 0..4 {
        let row = lanes.rows[r % 2];
        let k = if r / 2 == 0 { base_k } else { high_k };
        let row_base = e.muli(row.x, kk)?;
        a.push(pack_k(e, ops.x, row_base, row.real, k, gemm.k, 8)?);
    }
    // Expert `expert`'s row `col_b` of w: (expert · N + col_b) · K.
    let n = e.index(gemm.n as i64)?;
    let col_ok = e.lt(lanes.col_b, n)?;
    let zero_index = e.index(0)?;
    let col = e.select(col_ok, lanes.col_b, zero_index)?;
    let w_row = e.muli(lanes.expert, n)?;
    let w_row = e.addi(w_row, col)?;
    let w_base = e.muli(w_row, kk)?;
    let b = [
        pack_k(e, ops.w, w_base, col_ok, base_k, gemm.k, 8)?,
        pack_k(e, ops.w, w_base, col_ok, high_k, gemm.k, 8)?,
    ];
    let a: [Value; 4] = a.try_into().expect("four A registers");
    mma_into(e, &fp8_mma_instruction(gemm.format), a, b, partial)
}

/// `acc[i] += partial[i] · (s_x[row_i, k0 / tile] · s_w[col_i / block, k0 / block])` (with
/// the scale layouts' row divisors, [`Fp8Gemm::x_scale_rows`] and [`Fp8Gemm::w_scale_rows`]).
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
    let n = e.index(gemm.n as i64)?;
    let n_max = e.index(gemm.n as i64 - 1)?;
    let n_blocks = e.index(gemm.n.div_ceil(gemm.w_scale_rows()) as i64)?;
    let w_scale_rows = e.index(gemm.w_scale_rows() as i64)?;
    let x_scale_rows = e.index(gemm.x_scale_rows() as i64)?;
    let expert_blocks = e.muli(n_blocks, k_blocks)?;
    let expert_base = e.muli(lanes.expert, expert_blocks)?;
    for i in 0..4 {
        // Rows that are not real read row 0's scale (`x` is 0 for them); nothing is stored.
        let row = lanes.rows[i / 2].x;
        let col = lanes.cols_d[i % 2];
        let col_ok = e.lt(col, n)?;
        let col = e.select(col_ok, col, n_max)?;
        let x_scale_row = e.divui(row, x_scale_rows)?;
        let sx_at = e.muli(x_scale_row, k_tiles)?;
        let sx_at = e.addi(sx_at, group)?;
        let sx = e.load(ops.x_scale, sx_at)?;
        let n_block = e.divui(col, w_scale_rows)?;
        let sw_at = e.muli(n_block, k_blocks)?;
        let sw_at = e.addi(sw_at, k_block)?;
        let sw_at = e.addi(expert_base, sw_at)?;
        let sw = e.load(ops.w_scale, sw_at)?;
        let s = e.mulf(sx, sw)?;
        let p = e.get(partial[i])?;
        let scaled = e.mulf(p, s)?;
        e.accumulate(acc[i], scaled)?;
    }
    Ok(())
}
