//! Warp-level matrix instructions of the `wmma` family, shape m16n16k16 with f16 A and B and an
//! f16 or f32 accumulator: `wmma.load.{a,b,c}`, `wmma.mma` and `wmma.store.d`.
//!
//! The PTX ISA leaves the distribution of a fragment's elements over the lanes of the warp
//! unspecified ("implementation-defined"): a program may only load a fragment with
//! `wmma.load`, pass it to `wmma.mma` and store it with `wmma.store`, or apply the same
//! element-wise operation to every element. The emulator therefore chooses its own layout, used
//! consistently by the three instructions (so results are what the hardware gives whatever
//! its layout is):
//!
//! | fragment | registers per lane | element `i` of lane `l` is |
//! |---|---|---|
//! | A (16×16, M×K), f16 | 8 × f16x2 | `A[l % 16][i]`, i = 0..16 |
//! | B (16×16, K×N), f16 | 8 × f16x2 | `B[i][l % 16]`, i = 0..16 |
//! | C / D (16×16, M×N), f16 | 4 × f16x2 | `C[l / 2][8 (l % 2) + i]`, i = 0..8 |
//! | C / D (16×16, M×N), f32 | 8 × f32 | `C[l / 2][8 (l % 2) + i]`, i = 0..8 |
//!
//! Packed halves: element `2j` in the low 16 bits of register `j`. A and B hold 256 elements in
//! 512 slots, so lanes 16..31 hold copies of lanes 0..15 (`wmma.mma` reads lanes 0..15).
//!
//! Memory layout (`.row` / `.col`, PTX ISA "wmma.load"): element (r, c) of the matrix lies at
//! `p + (r · stride + c) · size` for `.row` and `p + (c · stride + r) · size` for `.col`, with
//! `stride` in elements (the optional last operand; 16 when absent).
//!
//! Numerics of `wmma.mma` (not specified by the ISA either): every f16 product is exact in f64,
//! the products and C are summed in f64 and the sum is rounded once (to nearest even) to D's
//! type. That is the correctly rounded result whenever the sum's bits fit 53 bits, which holds
//! for all but pathological mixes of magnitudes.
//!
//! Not implemented (an error naming the instruction, never a guess): other shapes (m8n32k16,
//! m32n8k16, …), bf16/tf32/integer/sub-byte operands, `.satfinite`.

use super::access::Place;
use super::context::CtaContext;
use super::float::{f16_value, to_f16_bits};
use super::hopper::operand;
use super::operand::write;
use super::warp::full_warp;
use super::warp::{WARP, Warp};
use crate::error::EmuError;
use crate::ptx::decode::{Wmma, WmmaFrag};
use crate::ptx::{Inst, Operand, Space, Ty};

/// Rows and columns of every m16n16k16 fragment.
const N: usize = 16;

/// The (row, column) of element `i` of lane `lane`'s fragment (see the module table).
fn element_position(frag: WmmaFrag, lane: usize, i: usize) -> (usize, usize) {
    match frag {
        WmmaFrag::A => (lane % N, i),
        WmmaFrag::B => (i, lane % N),
        WmmaFrag::Acc => (lane / 2, 8 * (lane % 2) + i),
    }
}

/// Elements per lane of a fragment.
fn elements(frag: WmmaFrag) -> usize {
    match frag {
        WmmaFrag::A | WmmaFrag::B => 16,
        WmmaFrag::Acc => 8,
    }
}

/// Registers per lane of a fragment of element type `ty`.
fn registers(frag: WmmaFrag, ty: Ty) -> usize {
    elements(frag) / if ty == Ty::F16 { 2 } else { 1 }
}

/// Element `i` (its bits) of a fragment held in `regs`.
fn get(regs: &[u64], ty: Ty, i: usize) -> u64 {
    if ty == Ty::F16 {
        (regs[i / 2] >> (16 * (i % 2))) & 0xffff
    } else {
        regs[i] & 0xffff_ffff
    }
}

/// Sets element `i` (its bits) of a fragment held in `regs`.
fn set(regs: &mut [u64], ty: Ty, i: usize, bits: u64) {
    if ty == Ty::F16 {
        let shift = 16 * (i % 2);
        regs[i / 2] = (regs[i / 2] & !(0xffff << shift)) | (bits << shift);
    } else {
        regs[i] = bits;
    }
}

fn value(ty: Ty, bits: u64) -> f64 {
    if ty == Ty::F16 {
        f16_value(bits)
    } else {
        f64::from(f32::from_bits(bits as u32))
    }
}

fn round_to(ty: Ty, x: f64) -> u64 {
    if ty == Ty::F16 {
        u64::from(to_f16_bits(x))
    } else {
        u64::from((x as f32).to_bits())
    }
}

/// The `len` register operands of vector operand `i`.
fn vector<'a>(
    ctx: &CtaContext,
    inst: &'a Inst,
    i: usize,
    len: usize,
) -> Result<&'a [Operand], EmuError> {
    match operand(inst, i) {
        Operand::Vector(items) if items.len() == len => Ok(items),
        _ => Err(ctx.unsupported(inst)),
    }
}

/// Every lane's values of the `len` registers of vector operand `i`.
fn fragment(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    i: usize,
    len: usize,
) -> Result<Vec<Vec<u64>>, EmuError> {
    let regs = vector(ctx, inst, i, len)?;
    Ok((0..WARP)
        .map(|l| regs.iter().map(|r| ctx.read(warp, r, l, Ty::B32)).collect())
        .collect())
}

/// Executes a `wmma` instruction for lanes `exec` of `warp` (all 32 must take part).
pub(crate) fn wmma(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    op: &Wmma,
) -> Result<(), EmuError> {
    full_warp(ctx, warp, inst, exec)?;
    match *op {
        Wmma::Load {
            frag,
            row,
            space,
            ty,
        } => {
            let regs = vector(ctx, inst, 0, registers(frag, ty))?;
            let values = access(ctx, warp, inst, frag, row, space, ty, 1, None)?;
            for (lane, vals) in values.iter().enumerate() {
                for (r, v) in regs.iter().zip(vals) {
                    write(warp, r, lane, *v);
                }
            }
        }
        Wmma::Store { row, space, ty } => {
            let values = fragment(ctx, warp, inst, 1, registers(WmmaFrag::Acc, ty))?;
            access(
                ctx,
                warp,
                inst,
                WmmaFrag::Acc,
                row,
                space,
                ty,
                0,
                Some(&values),
            )?;
        }
        Wmma::Mma { d, c } => {
            let fa = fragment(ctx, warp, inst, 1, registers(WmmaFrag::A, Ty::F16))?;
            let fb = fragment(ctx, warp, inst, 2, registers(WmmaFrag::B, Ty::F16))?;
            let fc = fragment(ctx, warp, inst, 3, registers(WmmaFrag::Acc, c))?;
            let dst = vector(ctx, inst, 0, registers(WmmaFrag::Acc, d))?;
            let mut a = [[0f64; N]; N];
            let mut b = [[0f64; N]; N];
            let mut acc = [[0f64; N]; N];
            // Lanes 16..31 hold copies of A and B: lanes 0..15 give them whole.
            for lane in 0..N {
                for i in 0..elements(WmmaFrag::A) {
                    let (r, k) = element_position(WmmaFrag::A, lane, i);
                    a[r][k] = f16_value(get(&fa[lane], Ty::F16, i));
                    let (k, n) = element_position(WmmaFrag::B, lane, i);
                    b[k][n] = f16_value(get(&fb[lane], Ty::F16, i));
                }
            }
            for (lane, regs) in fc.iter().enumerate() {
                for i in 0..elements(WmmaFrag::Acc) {
                    let (r, n) = element_position(WmmaFrag::Acc, lane, i);
                    acc[r][n] = value(c, get(regs, c, i));
                }
            }
            for lane in 0..WARP {
                let mut out = vec![0u64; dst.len()];
                for i in 0..elements(WmmaFrag::Acc) {
                    let (r, n) = element_position(WmmaFrag::Acc, lane, i);
                    let sum = (0..N).fold(acc[r][n], |s, k| s + a[r][k] * b[k][n]);
                    set(&mut out, d, i, round_to(d, sum));
                }
                for (o, v) in dst.iter().zip(out) {
                    write(warp, o, lane, v);
                }
            }
        }
    }
    Ok(())
}

/// Loads (`store` is `None`; returns each lane's fragment registers) or stores (`store` holds
/// each lane's registers) a fragment. `addr_i` is the address operand's index; the stride is
/// operand `2` when present.
#[allow(clippy::too_many_arguments)]
fn access(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    frag: WmmaFrag,
    row: bool,
    space: Space,
    ty: Ty,
    addr_i: usize,
    store: Option<&[Vec<u64>]>,
) -> Result<Vec<Vec<u64>>, EmuError> {
    if !matches!(space, Space::Global | Space::Shared | Space::Generic) {
        return Err(ctx.unsupported(inst));
    }
    let Some(Operand::Addr(a)) = inst.operands.get(addr_i) else {
        return Err(ctx.unsupported(inst));
    };
    let width = if ty == Ty::F16 { 2u32 } else { 4 };
    let mut out = vec![vec![0u64; registers(frag, ty)]; WARP];
    for (lane, regs) in out.iter_mut().enumerate() {
        let base = ctx.address(warp, a, lane);
        let stride = match inst.operands.get(2) {
            Some(o) if !matches!(o, Operand::Sink) => ctx.read(warp, o, lane, Ty::U32),
            _ => N as u64,
        };
        for i in 0..elements(frag) {
            let (r, c) = element_position(frag, lane, i);
            let (r, c) = (r as u64, c as u64);
            let offset = if row { r * stride + c } else { c * stride + r };
            let address = base.wrapping_add(offset * u64::from(width));
            let first_thread = warp.first_thread;
            let fault = |ctx: &CtaContext, m: String| {
                ctx.memory_fault(inst, first_thread, lane, address, m)
            };
            let place = ctx
                .place(space, address, a.base)
                .map_err(|m| fault(ctx, m))?;
            let place = match place {
                p @ (Place::Global(_) | Place::Shared(_)) => p,
                _ => return Err(fault(ctx, "wmma needs a global or shared address".into())),
            };
            match store {
                None => {
                    let v = ctx
                        .load(warp, lane, place, width)
                        .map_err(|m| fault(ctx, m))?;
                    set(regs, ty, i, v);
                }
                Some(values) => {
                    let v = get(&values[lane], ty, i);
                    ctx.store(warp, lane, place, width, v)
                        .map_err(|m| fault(ctx, m))?;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of each 16×16 matrix is held by some lane, and the accumulator layout
    /// holds each exactly once.
    #[test]
    fn layouts_cover_the_matrices() {
        for frag in [WmmaFrag::A, WmmaFrag::B, WmmaFrag::Acc] {
            let mut seen = [[0u32; N]; N];
            for lane in 0..WARP {
                for i in 0..elements(frag) {
                    let (r, c) = element_position(frag, lane, i);
                    seen[r][c] += 1;
                }
            }
            let copies = if frag == WmmaFrag::Acc { 1 } else { 2 };
            assert!(seen.iter().flatten().all(|&n| n == copies), "{frag:?}");
        }
    }

    #[test]
    fn decodes_the_m16n16k16_f16_forms_only() {
        use crate::ptx::decode::{Op, decode};
        assert_eq!(
            decode("wmma.load.a.sync.aligned.col.m16n16k16.shared.f16"),
            Op::Wmma(Wmma::Load {
                frag: WmmaFrag::A,
                row: false,
                space: Space::Shared,
                ty: Ty::F16
            })
        );
        assert_eq!(
            decode("wmma.mma.sync.aligned.row.col.m16n16k16.f32.f16"),
            Op::Wmma(Wmma::Mma {
                d: Ty::F32,
                c: Ty::F16
            })
        );
        assert_eq!(
            decode("wmma.store.d.sync.aligned.row.m16n16k16.global.f32"),
            Op::Wmma(Wmma::Store {
                row: true,
                space: Space::Global,
                ty: Ty::F32
            })
        );
        for unsupported in [
            "wmma.load.a.sync.aligned.row.m16n16k16.bf16",
            "wmma.load.a.sync.aligned.row.m8n32k16.f16",
            "wmma.mma.sync.aligned.row.col.m16n16k16.f32.f32.satfinite",
            "wmma.load.a.sync.aligned.m16n16k16.f16",
        ] {
            assert_eq!(decode(unsupported), Op::Unsupported, "{unsupported}");
        }
    }
}
