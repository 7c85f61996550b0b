//! Integer and bit instructions: `add sub mul mad div rem min max and or xor not shl shr neg
//! abs popc clz brev bfe bfi prmt lop3 selp setp`, at the width and signedness of their type.

use super::operand::{mask_bits, sext};
use crate::ptx::Ty;
use crate::ptx::decode::{IntOp, IntUnOp};

/// A binary integer operation on `bits`-wide values (`.pred` values are 0 or 1).
pub fn int_binary(op: IntOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let signed = ty.is_signed();
    let (ua, ub) = (mask_bits(a, bits), mask_bits(b, bits));
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let r = match op {
        IntOp::Add => ua.wrapping_add(ub),
        IntOp::Sub => ua.wrapping_sub(ub),
        IntOp::MulLo => ua.wrapping_mul(ub),
        IntOp::MulHi => {
            let p = if signed {
                (i128::from(sa) * i128::from(sb)) as u128
            } else {
                u128::from(ua) * u128::from(ub)
            };
            return mask_bits((p >> bits) as u64, bits);
        }
        IntOp::MulWide => {
            return if signed {
                (sa.wrapping_mul(sb)) as u64
            } else {
                ua.wrapping_mul(ub)
            };
        }
        IntOp::Div => {
            if ub == 0 {
                u64::MAX
            } else if signed {
                sa.wrapping_div(sb) as u64
            } else {
                ua / ub
            }
        }
        IntOp::Rem => {
            if ub == 0 {
                ua
            } else if signed {
                sa.wrapping_rem(sb) as u64
            } else {
                ua % ub
            }
        }
        IntOp::Min => {
            if signed {
                sa.min(sb) as u64
            } else {
                ua.min(ub)
            }
        }
        IntOp::Max => {
            if signed {
                sa.max(sb) as u64
            } else {
                ua.max(ub)
            }
        }
        IntOp::And => ua & ub,
        IntOp::Or => ua | ub,
        IntOp::Xor => ua ^ ub,
        IntOp::Shl => {
            let s = mask_bits(b, 32);
            if s >= u64::from(bits) { 0 } else { ua << s }
        }
        IntOp::Shr => {
            let s = mask_bits(b, 32).min(u64::from(bits));
            if signed {
                if s >= u64::from(bits) {
                    (sa >> 63) as u64
                } else {
                    (sa >> s) as u64
                }
            } else if s >= u64::from(bits) {
                0
            } else {
                ua >> s
            }
        }
    };
    mask_bits(r, bits)
}

/// `mad.{lo,hi,wide}`.
pub fn int_mad(mode: IntOp, ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    match mode {
        IntOp::MulWide => int_binary(IntOp::MulWide, ty, a, b).wrapping_add(c),
        _ => mask_bits(int_binary(mode, ty, a, b).wrapping_add(c), bits),
    }
}

/// A unary integer operation.
pub fn int_unary(op: IntUnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let ua = mask_bits(a, bits);
    let r = match op {
        IntUnOp::Neg => ua.wrapping_neg(),
        IntUnOp::Abs => sext(a, bits).unsigned_abs(),
        IntUnOp::Not => !ua,
        IntUnOp::Popc => return u64::from(ua.count_ones()),
        IntUnOp::Clz => return u64::from(ua.leading_zeros() - (64 - bits)),
        IntUnOp::Brev => ua.reverse_bits() >> (64 - bits),
    };
    mask_bits(r, bits)
}

/// `bfe`: extracts `len` bits at `pos`, sign-extending for signed types.
pub fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let bits = u64::from(ty.bits());
    let msb = bits - 1;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let sbit = if ty.is_signed() && len > 0 {
        (a >> (pos + len - 1).min(msb)) & 1
    } else {
        0
    };
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

/// `bfi`: inserts the low `len` bits of `a` into `b` at `pos`.
pub fn bfi(ty: Ty, a: u64, b: u64, pos: u64, len: u64) -> u64 {
    let msb = u64::from(ty.bits()) - 1;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let mut d = mask_bits(b, ty.bits());
    let mut i = 0;
    while i < len && pos + i <= msb {
        d = (d & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
        i += 1;
    }
    d
}

/// `prmt.b32` (default mode): four bytes picked from `{b, a}` by the nibbles of `c`, bit 3 of
/// a nibble replicating the picked byte's sign.
pub fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = (mask_bits(b, 32) << 32) | mask_bits(a, 32);
    let mut d = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = (bytes >> (8 * (sel & 7))) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 { 0xff } else { 0 }
        } else {
            byte
        };
        d |= byte << (8 * i);
    }
    d
}

/// `lop3.b32`: bitwise lookup table `lut` over (a, b, c) with a = 0xF0, b = 0xCC, c = 0xAA.
pub fn lop3(a: u64, b: u64, c: u64, lut: u64) -> u64 {
    let mut d = 0u64;
    for i in 0..32 {
        let idx = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1);
        d |= ((lut >> idx) & 1) << i;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_signedness() {
        assert_eq!(int_binary(IntOp::Add, Ty::U32, 0xffff_ffff, 1), 0);
        assert_eq!(
            int_binary(IntOp::MulWide, Ty::S32, (-3i32) as u32 as u64, 5),
            (-15i64) as u64
        );
        assert_eq!(
            int_binary(IntOp::MulWide, Ty::U32, 0xffff_ffff, 2),
            0x1_ffff_fffe
        );
        assert_eq!(int_binary(IntOp::MulHi, Ty::U32, 0x8000_0000, 4), 2);
        assert_eq!(
            int_binary(IntOp::Shr, Ty::S32, 0x8000_0000, 31),
            0xffff_ffff
        );
        assert_eq!(int_binary(IntOp::Shr, Ty::U32, 0x8000_0000, 40), 0);
        assert_eq!(int_binary(IntOp::Shl, Ty::B32, 1, 32), 0);
        assert_eq!(int_binary(IntOp::Min, Ty::S32, 0xffff_ffff, 0), 0xffff_ffff);
        assert_eq!(int_binary(IntOp::Min, Ty::U32, 0xffff_ffff, 0), 0);
        assert_eq!(int_unary(IntUnOp::Clz, Ty::B32, 1), 31);
        assert_eq!(int_unary(IntUnOp::Brev, Ty::B32, 1), 0x8000_0000);
        assert_eq!(bfe(Ty::U64, 0b1011_0100, 2, 3), 0b101);
        assert_eq!(bfe(Ty::S32, 0b1011_0100, 2, 3), 0xffff_fffd);
        assert_eq!(bfi(Ty::B32, 0b11, 0, 4, 2), 0b11_0000);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x3210), 0x4433_2211);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x7654), 0x8877_6655);
        assert_eq!(prmt(0x0000_0080, 0, 0x0008), 0x8080_80ff);
        assert_eq!(lop3(0xf0, 0xcc, 0xaa, 0x80), 0x80 & 0xf0 & 0xcc & 0xaa);
    }
}
