//! Floating-point instructions per type: f32 (every rounding, `.ftz`, `.sat`), f64, and the
//! 16-bit bf16/f16 types and their packed x2 forms (computed exactly, rounded once).

use super::float::{
    add_f32, bf16_value, canon, canon64, div_f32, f16_value, fma_f32, ftz, min_max_f32, mul_f32,
    rcp_f32, saturate, sqrt_f32, to_bf16_bits, to_f16_bits,
};
use crate::ptx::Ty;
use crate::ptx::decode::{Cmp, FOp, FUnOp, Rnd};

/// Modifiers of a float instruction.
#[derive(Debug, Clone, Copy)]
pub struct FMods {
    /// Rounding.
    pub rnd: Rnd,
    /// `.ftz`.
    pub ftz: bool,
    /// `.sat`.
    pub sat: bool,
    /// `.NaN` (min/max).
    pub nan: bool,
}

fn f32_of(bits: u64, m: &FMods) -> f32 {
    let x = f32::from_bits(bits as u32);
    if m.ftz { ftz(x) } else { x }
}

fn f32_out(x: f32, m: &FMods) -> u64 {
    let x = if m.ftz { ftz(x) } else { x };
    let x = if m.sat { saturate(x) } else { x };
    u64::from(x.to_bits())
}

/// A 16-bit float type's value and rounding.
fn half_value(ty: Ty, bits: u64) -> f64 {
    if matches!(ty, Ty::Bf16 | Ty::Bf16x2) {
        bf16_value(bits)
    } else {
        f16_value(bits)
    }
}

fn half_round(ty: Ty, x: f64, rnd: Rnd) -> u64 {
    let bits = if matches!(ty, Ty::Bf16 | Ty::Bf16x2) {
        round_half(x, rnd, true)
    } else {
        round_half(x, rnd, false)
    };
    u64::from(bits)
}

/// Rounds `x` (exact in f64) to bf16 (`bf`) or f16 bits.
fn round_half(x: f64, rnd: Rnd, bf: bool) -> u16 {
    let to = |v: f64| if bf { to_bf16_bits(v) } else { to_f16_bits(v) };
    let from = |b: u16| {
        if bf {
            bf16_value(u64::from(b))
        } else {
            f16_value(u64::from(b))
        }
    };
    let r = to(x);
    if rnd == Rnd::Rn || x.is_nan() {
        return r;
    }
    let rv = from(r);
    let step = |b: u16, up: bool| -> u16 {
        let v = from(b);
        let away = (v > 0.0 || (v == 0.0 && b & 0x8000 == 0)) == up;
        if v == 0.0 {
            return if up { 1 } else { 0x8001 };
        }
        if away { b + 1 } else { b - 1 }
    };
    match rnd {
        Rnd::Rz if rv.abs() > x.abs() => step(r, rv < 0.0),
        Rnd::Rm if rv > x => step(r, false),
        Rnd::Rp if rv < x => step(r, true),
        _ => r,
    }
}

/// A packed-or-scalar 16-bit op: applies `f` to each half.
fn halves(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(f64, f64, f64) -> f64, rnd: Rnd) -> u64 {
    let one = |a: u64, b: u64, c: u64| {
        let r = f(half_value(ty, a), half_value(ty, b), half_value(ty, c));
        half_round(ty, r, rnd)
    };
    if matches!(ty, Ty::Bf16x2 | Ty::F16x2) {
        let lo = one(a & 0xffff, b & 0xffff, c & 0xffff);
        let hi = one((a >> 16) & 0xffff, (b >> 16) & 0xffff, (c >> 16) & 0xffff);
        (hi << 16) | lo
    } else {
        one(a & 0xffff, b & 0xffff, c & 0xffff)
    }
}

/// `add sub mul div min max copysign` on floats; `None` for a combination not implemented.
pub fn float_binary(op: FOp, ty: Ty, m: &FMods, approx: bool, a: u64, b: u64) -> Option<u64> {
    match ty {
        Ty::F32 => {
            let (x, y) = (f32_of(a, m), f32_of(b, m));
            let r = match op {
                FOp::Add => add_f32(x, y, m.rnd),
                FOp::Sub => add_f32(x, -y, m.rnd),
                FOp::Mul => mul_f32(x, y, m.rnd),
                // `.approx`/`.full` are within 2 ulp; the exact quotient is within that.
                FOp::Div => div_f32(x, y, if approx { Rnd::Rn } else { m.rnd }),
                FOp::Min => min_max_f32(x, y, false, m.nan),
                FOp::Max => min_max_f32(x, y, true, m.nan),
                FOp::Copysign => y.copysign(x),
            };
            Some(f32_out(r, m))
        }
        Ty::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            if m.rnd != Rnd::Rn && !matches!(op, FOp::Min | FOp::Max | FOp::Copysign) {
                return None;
            }
            let r = match op {
                FOp::Add => canon64(x + y),
                FOp::Sub => canon64(x - y),
                FOp::Mul => canon64(x * y),
                FOp::Div => canon64(x / y),
                FOp::Min | FOp::Max => {
                    let max = op == FOp::Max;
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => canon64(f64::NAN),
                        (true, false) | (false, true) if m.nan => canon64(f64::NAN),
                        (true, false) => y,
                        (false, true) => x,
                        _ if max => x.max(y),
                        _ => x.min(y),
                    }
                }
                FOp::Copysign => y.copysign(x),
            };
            Some(r.to_bits())
        }
        Ty::Bf16 | Ty::Bf16x2 | Ty::F16 | Ty::F16x2 => {
            if m.sat || m.ftz {
                return None;
            }
            let nan = m.nan;
            let f: Box<dyn Fn(f64, f64, f64) -> f64> = match op {
                FOp::Add => Box::new(|x, y, _| x + y),
                FOp::Sub => Box::new(|x, y, _| x - y),
                FOp::Mul => Box::new(|x, y, _| x * y),
                FOp::Min | FOp::Max => {
                    let max = op == FOp::Max;
                    Box::new(move |x: f64, y: f64, _| {
                        f64::from(min_max_f32(x as f32, y as f32, max, nan))
                    })
                }
                _ => return None,
            };
            Some(halves(ty, a, b, 0, f, m.rnd))
        }
        _ => None,
    }
}

/// `fma` on floats.
pub fn float_fma(ty: Ty, m: &FMods, a: u64, b: u64, c: u64) -> Option<u64> {
    match ty {
        Ty::F32 => {
            let r = fma_f32(f32_of(a, m), f32_of(b, m), f32_of(c, m), m.rnd);
            Some(f32_out(r, m))
        }
        Ty::F64 if m.rnd == Rnd::Rn => {
            Some(canon64(f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(c))).to_bits())
        }
        Ty::Bf16 | Ty::Bf16x2 | Ty::F16 | Ty::F16x2 if !m.ftz => {
            // The product of two 16-bit floats is exact in f64 and so is the sum, unless the
            // exponents are over 40 apart, where rounding once from f64 is still correct.
            let r = halves(ty, a, b, c, |x, y, z| x * y + z, m.rnd);
            Some(if m.sat {
                let sat = |h: u64| {
                    let v = half_value(ty, h);
                    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                    half_round(ty, v, Rnd::Rn)
                };
                if matches!(ty, Ty::Bf16x2 | Ty::F16x2) {
                    (sat(r >> 16) << 16) | sat(r & 0xffff)
                } else {
                    sat(r)
                }
            } else {
                r
            })
        }
        _ => None,
    }
}

/// `neg abs sqrt rcp rsqrt ex2 lg2 sin cos tanh` on floats.
pub fn float_unary(op: FUnOp, ty: Ty, rnd: Option<Rnd>, ftz_mode: bool, a: u64) -> Option<u64> {
    let m = FMods {
        rnd: rnd.unwrap_or(Rnd::Rn),
        ftz: ftz_mode,
        sat: false,
        nan: false,
    };
    match ty {
        Ty::F32 => {
            let x = f32_of(a, &m);
            let r = match op {
                FUnOp::Neg => -x,
                FUnOp::Abs => x.abs(),
                FUnOp::Sqrt => sqrt_f32(x, m.rnd),
                FUnOp::Rcp => rcp_f32(x, m.rnd),
                // The `.approx` forms: computed exactly (in f64) and rounded, which is within
                // every documented error bound.
                FUnOp::Rsqrt => canon((1.0 / f64::from(x).sqrt()) as f32),
                FUnOp::Ex2 => canon(f64::from(x).exp2() as f32),
                FUnOp::Lg2 => canon(f64::from(x).log2() as f32),
                FUnOp::Sin => canon(f64::from(x).sin() as f32),
                FUnOp::Cos => canon(f64::from(x).cos() as f32),
                FUnOp::Tanh => canon(f64::from(x).tanh() as f32),
            };
            Some(f32_out(r, &m))
        }
        Ty::F64 => {
            let x = f64::from_bits(a);
            let r = match op {
                FUnOp::Neg => -x,
                FUnOp::Abs => x.abs(),
                FUnOp::Sqrt if m.rnd == Rnd::Rn => canon64(x.sqrt()),
                FUnOp::Rcp if m.rnd == Rnd::Rn => canon64(1.0 / x),
                _ => return None,
            };
            Some(r.to_bits())
        }
        Ty::Bf16 | Ty::Bf16x2 | Ty::F16 | Ty::F16x2 => {
            let flip = |h: u64| match op {
                FUnOp::Neg => Some(h ^ 0x8000),
                FUnOp::Abs => Some(h & 0x7fff),
                _ => None,
            };
            if matches!(ty, Ty::Bf16x2 | Ty::F16x2) {
                Some((flip((a >> 16) & 0xffff)? << 16) | flip(a & 0xffff)?)
            } else {
                flip(a & 0xffff)
            }
        }
        _ => None,
    }
}

/// The value of a float of type `ty` (for comparisons).
pub fn float_value(ty: Ty, bits: u64, ftz_mode: bool) -> f64 {
    match ty {
        Ty::F32 => {
            let x = f32::from_bits(bits as u32);
            f64::from(if ftz_mode { ftz(x) } else { x })
        }
        Ty::F64 => f64::from_bits(bits),
        _ => half_value(ty, bits),
    }
}

/// A `setp` comparison of two floats.
pub fn float_compare(cmp: Cmp, x: f64, y: f64) -> bool {
    let unordered = x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => !unordered && x == y,
        Cmp::Ne => !unordered && x != y,
        Cmp::Lt => !unordered && x < y,
        Cmp::Le => !unordered && x <= y,
        Cmp::Gt => !unordered && x > y,
        Cmp::Ge => !unordered && x >= y,
        Cmp::Equ => unordered || x == y,
        Cmp::Neu => unordered || x != y,
        Cmp::Ltu => unordered || x < y,
        Cmp::Leu => unordered || x <= y,
        Cmp::Gtu => unordered || x > y,
        Cmp::Geu => unordered || x >= y,
        Cmp::Num => !unordered,
        Cmp::Nan => unordered,
    }
}

/// A `setp` comparison of two integers of type `ty`.
pub fn int_compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> Option<bool> {
    use super::operand::{mask_bits, sext};
    let bits = ty.bits();
    let ord = if ty.is_signed() {
        sext(a, bits).cmp(&sext(b, bits))
    } else {
        mask_bits(a, bits).cmp(&mask_bits(b, bits))
    };
    Some(match cmp {
        Cmp::Eq => ord.is_eq(),
        Cmp::Ne => ord.is_ne(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Le => ord.is_le(),
        Cmp::Gt => ord.is_gt(),
        Cmp::Ge => ord.is_ge(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RN: FMods = FMods {
        rnd: Rnd::Rn,
        ftz: false,
        sat: false,
        nan: false,
    };

    #[test]
    fn bf16_arithmetic_rounds_once_from_the_exact_value() {
        let one = 0x3f80u64; // 1.0
        let eps = 0x3b80u64; // 2^-8, half an ulp of 1.0 in bf16 (ulp 2^-7)
        // 1 + 2^-8 is a tie: to even (1.0).
        assert_eq!(
            float_binary(FOp::Add, Ty::Bf16, &RN, false, one, eps),
            Some(one)
        );
        let three_eps = 0x3c40; // 3·2^-8 → 1.0117 → rounds up to 1 + 2^-6 (0x3f82)
        assert_eq!(
            float_binary(FOp::Add, Ty::Bf16, &RN, false, one, three_eps),
            Some(0x3f82)
        );
        // fma: 1·1 + 2^-8 with the tie again.
        assert_eq!(float_fma(Ty::Bf16, &RN, one, one, eps), Some(one));
        // packed halves are independent.
        let packed = (one << 16) | 0x4000; // {1.0, 2.0}
        assert_eq!(
            float_binary(FOp::Mul, Ty::Bf16x2, &RN, false, packed, packed),
            Some((one << 16) | 0x4080)
        );
        assert_eq!(
            float_unary(FUnOp::Abs, Ty::Bf16, None, false, 0xbf80),
            Some(0x3f80)
        );
    }

    #[test]
    fn saturation_and_flush() {
        let m = FMods { sat: true, ..RN };
        let two = u64::from(2f32.to_bits());
        assert_eq!(
            float_binary(FOp::Add, Ty::F32, &m, false, two, two),
            Some(u64::from(1f32.to_bits()))
        );
        let sub = u64::from(f32::from_bits(1).to_bits());
        let f = FMods { ftz: true, ..RN };
        assert_eq!(float_binary(FOp::Add, Ty::F32, &f, false, sub, 0), Some(0));
        assert!(float_compare(Cmp::Neu, f64::NAN, 1.0));
        assert!(!float_compare(Cmp::Ne, f64::NAN, 1.0));
    }
}
