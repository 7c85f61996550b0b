//! Floating-point arithmetic as PTX defines it: every rounding mode exact (results computed
//! as an exact `hi + lo` pair in f64, then rounded once), `.ftz`, `.sat`, canonical NaNs, and
//! bf16/f16 results rounded from the exact value.

use crate::ptx::decode::Rnd;

/// The NaN every f32 arithmetic instruction returns.
const CANONICAL_NAN_F32: u32 = 0x7fff_ffff;
/// The NaN every f64 arithmetic instruction returns.
const CANONICAL_NAN_F64: u64 = 0x7fff_ffff_ffff_ffff;

/// `x + y` as an exact pair (Knuth's TwoSum).
fn two_sum(x: f64, y: f64) -> (f64, f64) {
    let s = x + y;
    let bb = s - x;
    let err = (x - (s - bb)) + (y - bb);
    (s, err)
}

/// Next f32 toward +∞ (`up`) or −∞.
fn step_f32(r: f32, up: bool) -> f32 {
    if r.is_nan() || (r.is_infinite() && (r > 0.0) == up) {
        return r;
    }
    if r == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = r.to_bits();
    let away = (r > 0.0) == up;
    f32::from_bits(if away { bits + 1 } else { bits - 1 })
}

/// Rounds the exact value `hi + lo` (|lo| ≤ ulp(hi)/2) to f32 with `rnd`.
pub fn round_f32(hi: f64, lo: f64, rnd: Rnd) -> f32 {
    if hi.is_nan() {
        return f32::from_bits(CANONICAL_NAN_F32);
    }
    let mut r = hi as f32;
    if r.is_infinite() && hi.is_finite() {
        // Overflow: RN gives ∞; directed modes may give MAX.
        return match rnd {
            Rnd::Rn => r,
            Rnd::Rz => f32::MAX.copysign(r),
            Rnd::Rm if r > 0.0 => f32::MAX,
            Rnd::Rp if r < 0.0 => f32::MIN,
            _ => r,
        };
    }
    // The exact error of r against hi + lo, signed: d = (hi - r) + lo.
    let (d_hi, d_lo) = two_sum(hi - f64::from(r), lo);
    let d = d_hi + d_lo;
    match rnd {
        Rnd::Rn => {
            // `hi as f32` rounded hi correctly; only a tie in hi broken the wrong way by lo
            // (or lo pushing past the midpoint) needs a fix.
            if d != 0.0 {
                let other = step_f32(r, d > 0.0);
                let half = (f64::from(other) - f64::from(r)).abs() / 2.0;
                if d.abs() > half || (d.abs() == half && other.to_bits() & 1 == 0) {
                    r = other;
                }
            }
            r
        }
        Rnd::Rz => {
            if d != 0.0 && (d > 0.0) != (f64::from(r) > 0.0) && r != 0.0 {
                step_f32(r, d > 0.0)
            } else if r == 0.0 {
                0f32.copysign(hi as f32)
            } else {
                r
            }
        }
        Rnd::Rm => {
            if d < 0.0 {
                step_f32(r, false)
            } else {
                r
            }
        }
        Rnd::Rp => {
            if d > 0.0 {
                step_f32(r, true)
            } else {
                r
            }
        }
    }
}

/// Flushes an f32 subnormal to zero (sign kept).
pub fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0f32.copysign(x)
    } else {
        x
    }
}

/// Canonicalizes an f32 result's NaN.
pub fn canon(x: f32) -> f32 {
    if x.is_nan() {
        f32::from_bits(CANONICAL_NAN_F32)
    } else {
        x
    }
}

/// Canonicalizes an f64 result's NaN.
pub fn canon64(x: f64) -> f64 {
    if x.is_nan() {
        f64::from_bits(CANONICAL_NAN_F64)
    } else {
        x
    }
}

/// `.sat`: clamps to [0, 1], NaN to 0.
pub fn saturate(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// `a + b` with rounding.
pub fn add_f32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn {
        return canon(a + b);
    }
    let (hi, lo) = two_sum(f64::from(a), f64::from(b));
    canon(round_f32(hi, lo, rnd))
}

/// `a * b` with rounding (the product is exact in f64).
pub fn mul_f32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn {
        return canon(a * b);
    }
    canon(round_f32(f64::from(a) * f64::from(b), 0.0, rnd))
}

/// `a * b + c` fused, with rounding.
pub fn fma_f32(a: f32, b: f32, c: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn {
        return canon(a.mul_add(b, c));
    }
    let p = f64::from(a) * f64::from(b);
    let (hi, lo) = two_sum(p, f64::from(c));
    canon(round_f32(hi, lo, rnd))
}

/// `a / b` correctly rounded.
pub fn div_f32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite() && b.is_finite() && b != 0.0) {
        return canon(a / b);
    }
    let (a64, b64) = (f64::from(a), f64::from(b));
    let q = a64 / b64;
    // The residual a - q·b is exact with an FMA; its sign (times b's) says where the exact
    // quotient lies relative to q.
    let r = (-q).mul_add(b64, a64);
    canon(round_f32(q, r / b64, rnd))
}

/// `sqrt(a)` correctly rounded.
pub fn sqrt_f32(a: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a.is_finite() && a > 0.0) {
        return canon(a.sqrt());
    }
    let a64 = f64::from(a);
    let s = a64.sqrt();
    let r = (-s).mul_add(s, a64);
    canon(round_f32(s, r / (2.0 * s), rnd))
}

/// `1 / a` correctly rounded.
pub fn rcp_f32(a: f32, rnd: Rnd) -> f32 {
    div_f32(1.0, a, rnd)
}

/// PTX `min.f32`/`max.f32`: a NaN operand yields the other; `.NaN` yields NaN; −0 < +0.
pub fn min_max_f32(a: f32, b: f32, max: bool, nan: bool) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return f32::from_bits(CANONICAL_NAN_F32),
        (true, false) | (false, true) if nan => return f32::from_bits(CANONICAL_NAN_F32),
        (true, false) => return b,
        (false, true) => return a,
        _ => {}
    }
    if a == b {
        // ±0: min prefers −0, max +0.
        let a_neg = a.is_sign_negative();
        return if a_neg == max { b } else { a };
    }
    if (a < b) != max { a } else { b }
}

/// bf16 bits of `x` rounded to nearest even (NaN → canonical 0x7fff): `x` rounded to f32 by
/// round-to-odd (exact when `x` is an f32; else truncated with the last bit set, which keeps
/// the information a second rounding needs, f32 having more than two bits beyond bf16's), then
/// f32 → bf16 to nearest even. (`half::bf16::from_f64` misrounds some values: 0x44aa8005 as an
/// f64 gives 0x44aa, not 0x44ab.)
pub fn to_bf16_bits(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let mut f = x as f32;
    if f64::from(f) != x {
        let mut bits = f.to_bits();
        if f64::from(f).abs() > x.abs() {
            bits -= 1; // toward zero: magnitudes are monotonic in the bits
        }
        f = f32::from_bits(bits | 1);
    }
    half::bf16::from_f32(f).to_bits()
}

/// f16 bits of `x` rounded to nearest even (NaN → canonical 0x7fff).
pub fn to_f16_bits(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    half::f16::from_f64(x).to_bits()
}

/// The value of bf16 bits.
pub fn bf16_value(bits: u64) -> f64 {
    f64::from(half::bf16::from_bits(bits as u16).to_f32())
}

/// The value of f16 bits.
pub fn f16_value(bits: u64) -> f64 {
    f64::from(half::f16::from_bits(bits as u16).to_f32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even_from_f32_and_f64() {
        // An f32 just above a halfway point rounds up (half's from_f64 gives 0x44aa).
        assert_eq!(to_bf16_bits(f64::from(f32::from_bits(0x44aa_8005))), 0x44ab);
        // Exact ties go to even; below the halfway point, down.
        assert_eq!(to_bf16_bits(f64::from(f32::from_bits(0x3f80_8000))), 0x3f80);
        assert_eq!(to_bf16_bits(f64::from(f32::from_bits(0x3f81_8000))), 0x3f82);
        assert_eq!(to_bf16_bits(f64::from(f32::from_bits(0x3f80_7fff))), 0x3f80);
        // An f64 a hair above a tie (not an f32): up, where rounding to f32 first would tie.
        let tie = f64::from(f32::from_bits(0x3f80_8000));
        assert_eq!(to_bf16_bits(tie + tie * 2f64.powi(-40)), 0x3f81);
        assert_eq!(to_bf16_bits(-(tie + tie * 2f64.powi(-40))), 0xbf81);
        assert_eq!(to_bf16_bits(tie - tie * 2f64.powi(-40)), 0x3f80);
        // Beyond bf16's range: infinity; NaN canonical.
        assert_eq!(to_bf16_bits(1e300), 0x7f80);
        assert_eq!(to_bf16_bits(f64::NAN), 0x7fff);
        // Every f32 of a sweep: what half's f32 conversion (RNE) gives.
        let mut s: u32 = 0x1234_5677;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if !x.is_nan() {
                assert_eq!(
                    to_bf16_bits(f64::from(x)),
                    half::bf16::from_f32(x).to_bits(),
                    "{s:08x}"
                );
            }
        }
    }

    #[test]
    fn directed_rounding_of_sums_and_quotients() {
        let one = 1.0f32;
        let tiny = f32::from_bits(1);
        assert_eq!(add_f32(one, tiny, Rnd::Rn), one);
        assert_eq!(add_f32(one, tiny, Rnd::Rp), step_f32(one, true));
        assert_eq!(add_f32(one, tiny, Rnd::Rz), one);
        assert_eq!(add_f32(one, -tiny, Rnd::Rz), step_f32(one, false));
        assert_eq!(add_f32(one, -tiny, Rnd::Rm), step_f32(one, false));
        let third_down = div_f32(1.0, 3.0, Rnd::Rz);
        let third_up = div_f32(1.0, 3.0, Rnd::Rp);
        assert_eq!(step_f32(third_down, true), third_up);
        assert_eq!(div_f32(1.0, 3.0, Rnd::Rn), 1.0 / 3.0);
        assert_eq!(div_f32(1.0, 4.0, Rnd::Rz), 0.25);
        assert_eq!(sqrt_f32(4.0, Rnd::Rm), 2.0);
        assert_eq!(
            step_f32(sqrt_f32(2.0, Rnd::Rm), true),
            sqrt_f32(2.0, Rnd::Rp)
        );
    }

    #[test]
    fn min_max_follow_ptx_nan_and_zero_rules() {
        let nan = f32::NAN;
        assert_eq!(min_max_f32(nan, 2.0, true, false), 2.0);
        assert!(min_max_f32(nan, 2.0, true, true).is_nan());
        assert!(min_max_f32(-0.0, 0.0, false, false).is_sign_negative());
        assert!(min_max_f32(-0.0, 0.0, true, false).is_sign_positive());
        assert_eq!(add_f32(nan, 1.0, Rnd::Rn).to_bits(), CANONICAL_NAN_F32);
    }
}
