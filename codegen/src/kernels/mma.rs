//! What the tensor-core kernels share: a warp per 16 × 8 output tile, the lane's place in it,
//! the packing of A/B fragments from memory, and one `mma.sync` (inline PTX; MLIR 22's
//! `nvvm.mma.sync` rejects dense e4m3 k32) accumulating into four f32 cells.
//!
//! With `g = lane / 4` and `q = lane % 4`, a lane's D elements are rows `g`, `g + 8` and columns
//! `2q`, `2q + 1` of the tile, and its B fragment is column `g` (PTX ISA, `mma.m16n8k*`).

use dsc_ir::DType;
use melior::dialect::llvm;
use melior::ir::Value;
use melior::ir::attribute::DenseI64ArrayAttribute;

use super::Launch;
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Warps (tiles) per block.
pub const WARPS: u32 = 4;
/// Rows of a warp's tile.
pub const TILE_M: u64 = 16;
/// Columns of a warp's tile.
pub const TILE_N: u64 = 8;

/// One warp per tile of an `m_tiles × ceil(n / 8)` grid of tiles.
pub fn launch(m_tiles: u64, n: u64) -> Launch {
    let tiles = m_tiles * n.div_ceil(TILE_N);
    Launch::blocks(tiles.div_ceil(u64::from(WARPS)), 32 * WARPS)
}

/// This lane's tile and its coordinates in it.
#[derive(Clone, Copy)]
pub struct TileLane<'c, 'a> {
    /// Whether the warp's tile exists (warp-uniform, so whole warps skip together and every
    /// lane of a running warp reaches the MMA).
    pub active: Value<'c, 'a>,
    /// The tile's row of tiles.
    pub tm: Value<'c, 'a>,
    /// `lane % 4`.
    pub q: Value<'c, 'a>,
    /// The lane's two D rows within the M extent: `16 tm + g`, `16 tm + g + 8`.
    pub rows: [Value<'c, 'a>; 2],
    /// The lane's B column: `8 tn + g`.
    pub col_b: Value<'c, 'a>,
    /// The lane's two D columns: `8 tn + 2q`, `+ 1`.
    pub cols_d: [Value<'c, 'a>; 2],
}

/// The tile of this warp (`block · WARPS + warp`) among `m_tiles × ceil(n / 8)` tiles, and the
/// lane's coordinates.
pub fn tile_lane<'c, 'a>(
    e: &Emit<'c, 'a>,
    m_tiles: u64,
    n: u64,
) -> Result<TileLane<'c, 'a>, CodegenError> {
    let thread = e.thread_x()?;
    let block_index = e.block_index(Dimension::X)?;
    let thirty_two = e.index(32)?;
    let warp = e.divui(thread, thirty_two)?;
    let lane = e.remui(thread, thirty_two)?;
    let warps = e.index(i64::from(WARPS))?;
    let tile = e.muli(block_index, warps)?;
    let tile = e.addi(tile, warp)?;
    let n_tiles = n.div_ceil(TILE_N);
    let tiles = e.index((m_tiles * n_tiles) as i64)?;
    let active = e.lt(tile, tiles)?;
    let n_tiles = e.index(n_tiles as i64)?;
    let tm = e.divui(tile, n_tiles)?;
    let tn = e.remui(tile, n_tiles)?;
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
    let q2 = e.muli(q, two)?;
    let col_d0 = e.addi(col, q2)?;
    let one = e.index(1)?;
    let col_d1 = e.addi(col_d0, one)?;
    Ok(TileLane {
        active,
        tm,
        q,
        rows: [row0, row1],
        col_b,
        cols_d: [col_d0, col_d1],
    })
}

/// `32 / bits` consecutive elements `m[row_base + k ..]` of a matrix with `k_len` columns,
/// packed into one `i32` (lowest K in the lowest bits); an element reads as +0 when the row is
/// not `real` or its K is past `k_len`. FP8 codes are 8 bits, bf16 16. When `k_len` is a whole
/// number of registers (so `k`, a multiple of `32 / bits`, is all in or all out, and the word is
/// 4-byte aligned) it is one predicated 32-bit load, else one load per element.
pub fn pack_k<'c, 'a>(
    e: &Emit<'c, 'a>,
    matrix: Value<'c, '_>,
    row_base: Value<'c, '_>,
    real: Value<'c, '_>,
    k: Value<'c, '_>,
    k_len: u64,
    bits: u32,
) -> Emitted<'c, 'a> {
    let i32_type = e.int_type(32);
    let per_register = u64::from(32 / bits);
    let k_len_v = e.index(k_len as i64)?;
    if k_len.is_multiple_of(per_register) {
        let k_ok = e.lt(k, k_len_v)?;
        let ok = e.andi(real, k_ok)?;
        let at = e.addi(row_base, k)?;
        let bytes = e.index(i64::from(bits / 8))?;
        let at = e.muli(at, bytes)?;
        let at = e.index_cast(at, e.int_type(64))?;
        let base = e.address_of(matrix)?;
        let at = e.addi(base, at)?;
        let ok = e.extui(ok, i32_type)?;
        return e.inline_asm(
            "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $2, 0;\n\tmov.b32 $0, 0;\n\t@p ld.global.u32 $0, [$1];\n\t}",
            "=r,l,r",
            &[at, ok],
            i32_type,
        );
    }
    let zero_index = e.index(0)?;
    let mut packed = e.int(32, 0)?;
    for j in 0..i64::from(32 / bits) {
        let offset = e.index(j)?;
        let kj = e.addi(k, offset)?;
        let k_ok = e.lt(kj, k_len_v)?;
        let ok = e.andi(real, k_ok)?;
        let safe_k = e.select(ok, kj, zero_index)?;
        let at = e.addi(row_base, safe_k)?;
        let element = e.load(matrix, at)?;
        let element = if bits == 8 {
            element
        } else {
            e.bitcast(element, e.int_type(bits))?
        };
        let element = e.extui(element, i32_type)?;
        let zero = e.int(32, 0)?;
        let element = e.select(ok, element, zero)?;
        let shift = e.int(32, i64::from(bits) * j)?;
        let element = e.shli(element, shift)?;
        packed = e.ori(packed, element)?;
    }
    Ok(packed)
}

/// The `mma.sync m16n8k32` that multiplies two tiles of FP8 codes in `format` (E5M2, else
/// E4M3) into f32 accumulators.
pub fn fp8_mma_instruction(format: DType) -> String {
    let kind = match format {
        DType::F8E5M2 => "e5m2",
        _ => "e4m3",
    };
    format!("mma.sync.aligned.m16n8k32.row.col.f32.{kind}.{kind}.f32")
}

/// `a · b + c` by one `mma.sync.aligned.<shape>.row.col.f32.<ab>.<ab>.f32` (`instruction`
/// names it whole): four A registers, two B registers, four f32 C values; the four D values.
pub fn mma<'c, 'a>(
    e: &Emit<'c, 'a>,
    instruction: &str,
    a: [Value<'c, 'a>; 4],
    b: [Value<'c, 'a>; 2],
    c: [Value<'c, 'a>; 4],
) -> Result<[Value<'c, 'a>; 4], CodegenError> {
    let mut operands: Vec<Value> = a.to_vec();
    operands.extend(b);
    operands.extend(c);
    let f32_type = e.f32_type();
    let result_type = llvm::r#type::r#struct(e.context, &[f32_type; 4], false);
    let op = e.inline_asm_op(
        &format!("{instruction} {{$0,$1,$2,$3}}, {{$4,$5,$6,$7}}, {{$8,$9}}, {{$10,$11,$12,$13}};"),
        "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
        &operands,
        &[result_type],
    )?;
    let d = e.push(op)?;
    let element = |i: i64| {
        let position = DenseI64ArrayAttribute::new(e.context, &[i]);
        e.push(llvm::extract_value(
            e.context, d, position, f32_type, e.location,
        ))
    };
    Ok([element(0)?, element(1)?, element(2)?, element(3)?])
}

/// `cells += a · b` by one [`mma`] accumulating into four f32 cells.
pub fn mma_into<'c, 'a>(
    e: &Emit<'c, 'a>,
    instruction: &str,
    a: [Value<'c, 'a>; 4],
    b: [Value<'c, 'a>; 2],
    cells: &[Value<'c, '_>; 4],
) -> Result<(), CodegenError> {
    let c = [
        e.get(cells[0])?,
        e.get(cells[1])?,
        e.get(cells[2])?,
        e.get(cells[3])?,
    ];
    let d = mma(e, instruction, a, b, c)?;
    for (&cell, value) in cells.iter().zip(d) {
        e.set(cell, value)?;
    }
    Ok(())
}
