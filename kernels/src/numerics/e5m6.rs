//! E5M6: the 12-bit float DeepSeek-V3 caches the attention output projection's inputs in
//! (report §3.3, "a customized E5M6 data format"), emulated on the CPU. DESIGN.md §3 and
//! docs/e5m6.md fix these semantics.
//!
//! **Layout.** 1 sign bit, 5 exponent bits (bias 15), 6 mantissa bits, IEEE-style: exponent 0
//! holds zero and the subnormals `m · 2^-20`, exponent 31 holds ±inf (mantissa 0) and NaN
//! (mantissa ≠ 0). It is FP16 with the 4 low mantissa bits dropped: code `c` is the FP16 bit
//! pattern `c << 4`, so every E5M6 value is exactly an FP16 (and f32) value, exactly as E5M2 is
//! FP16 with 8 bits dropped. A code lives in the low 12 bits of a `u16` (bit 11 the sign).
//!
//! | | value |
//! |---|---|
//! | largest finite | `2^15 · (1 + 63/64)` = 65024 (code 0x7bf) |
//! | smallest normal | `2^-14` (code 0x040) |
//! | smallest subnormal | `2^-20` (code 0x001) |
//! | NaN written | 0x7e0, sign kept (FP16's canonical quiet NaN, 0x7e00) |
//!
//! **Encoding** is the FP8 formats' `cvt.rn.satfinite` rule: round to nearest, ties to even
//! (subnormals rounded exactly); a finite value beyond 65024 — and ±inf — becomes ±65024
//! (saturating: the encoder never writes the inf codes, though it decodes them); NaN stays NaN
//! with its sign; -0 keeps its sign.
//!
//! **Emulated**: the CPU runtime holds an E5M6 tensor as f32 values that are exactly E5M6
//! values (the codes' values, like BF16 tensors are held as exact f32 values); [`encode`] /
//! [`decode`] give the 12-bit codes for storage or tests. No GPU kernel reads or writes it
//! (codegen refuses such an op by name).

/// Mantissa bits.
const MANT_BITS: u32 = 6;
/// Exponent bias.
const BIAS: u32 = 15;
/// The sign bit of a code.
pub const SIGN: u16 = 0x800;
/// The largest finite code, positive.
pub const MAX_CODE: u16 = 0x7bf;
/// The code written for NaN inputs, positive (the sign is kept).
pub const NAN_CODE: u16 = 0x7e0;
/// Number of codes (12 bits).
pub const CODES: usize = 1 << 12;
/// The largest finite value, `2^15 · (1 + 63/64)`.
pub const MAX: f32 = 65024.0;

/// The value of every code, indexed by code (only the low 12 bits of a code are meaningful).
static TABLE: [f32; CODES] = build_table();

/// Decodes every code from the bit layout (evaluated at compile time).
const fn build_table() -> [f32; CODES] {
    let mut t = [0.0f32; CODES];
    let mut c = 0;
    while c < CODES {
        let code = c as u32;
        let exp = (code >> MANT_BITS) & 0x1f;
        let mant = code & ((1 << MANT_BITS) - 1);
        let magnitude = if exp == 0 {
            // Subnormal: mant · 2^(1 - bias - mant_bits) = mant · 2^-20, an exact product.
            mant as f32 * f32::from_bits((127 + 1 - BIAS - MANT_BITS) << 23)
        } else if exp == 0x1f {
            if mant == 0 { f32::INFINITY } else { f32::NAN }
        } else {
            f32::from_bits(((exp + 127 - BIAS) << 23) | (mant << (23 - MANT_BITS)))
        };
        t[c] = if code & SIGN as u32 != 0 {
            -magnitude
        } else {
            magnitude
        };
        c += 1;
    }
    t
}

/// Decodes one code (its low 12 bits) to its exact f32 value; inf codes give ±inf.
pub fn decode(code: u16) -> f32 {
    TABLE[(code as usize) & (CODES - 1)]
}

/// True for the codes that are NaN.
pub fn is_nan_code(code: u16) -> bool {
    decode(code).is_nan()
}

/// Encodes one f32 as the nearest E5M6 code (ties to even), saturating to ±max; NaN stays NaN.
///
/// The same branch-free scheme as the FP8 encoder (`fp8::encode`): in the normal range the f32
/// bit pattern is rounded to 6 mantissa bits (a carry bumps the exponent) and rebiased, clamped
/// to the largest finite code (which also catches inf); below `2^-14`, `|x| · 2^20` is exact and
/// adding 2^23 rounds it to the integer that is the subnormal code, ties to even.
#[inline(always)]
pub fn encode(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 20) & SIGN as u32) as u16;
    let abs = bits & 0x7fff_ffff;

    let shift = 23 - MANT_BITS;
    let rounded = (abs + ((1 << (shift - 1)) - 1) + ((abs >> shift) & 1)) >> shift;
    let rebias = (127 - BIAS) << MANT_BITS;
    let normal = rounded.wrapping_sub(rebias).min(MAX_CODE as u32);

    let to_integer = f32::from_bits((127 + MANT_BITS + BIAS - 1) << 23);
    let scaled = f32::from_bits(abs) * to_integer + 8_388_608.0;
    let subnormal = scaled.to_bits().wrapping_sub(0x4b00_0000);

    let min_normal_bits = (127 + 1 - BIAS) << 23;
    let code = if abs < min_normal_bits {
        subnormal
    } else {
        normal
    };
    let code = if abs > 0x7f80_0000 {
        NAN_CODE as u32
    } else {
        code
    };
    sign | code as u16
}

/// `x` rounded to the nearest E5M6 value (ties to even, saturating): `decode(encode(x))`.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    decode(encode(x))
}

/// Rounds every element of `xs` to E5M6 in place, as [`round`] does.
pub fn round_slice(xs: &mut [f32]) {
    for x in xs {
        *x = round(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of a code from its fields, in f64, written independently of the encoder and
    /// the table: `(-1)^s · 2^(e-15) · (1 + m/64)`, `(-1)^s · 2^-14 · m/64` when e = 0.
    fn reference_value(code: u16) -> f64 {
        let s = if code & 0x800 != 0 { -1.0 } else { 1.0 };
        let e = i32::from((code >> 6) & 0x1f);
        let m = f64::from(code & 0x3f);
        match e {
            0 => s * m / 64.0 * 2f64.powi(-14),
            31 if m == 0.0 => s * f64::INFINITY,
            31 => f64::NAN,
            _ => s * (1.0 + m / 64.0) * 2f64.powi(e - 15),
        }
    }

    /// The code nearest to `x` by exhaustive search in f64 over every finite code, ties to the
    /// even code; beyond the largest finite value, ±max (satfinite); NaN → the NaN code.
    fn reference_encode(x: f32) -> u16 {
        let sign = if x.is_sign_negative() { SIGN } else { 0 };
        if x.is_nan() {
            return sign | NAN_CODE;
        }
        let a = f64::from(x).abs().min(f64::from(MAX));
        let mut best: Option<(f64, u16)> = None;
        for c in 0..0x800u16 {
            let v = reference_value(c);
            if !v.is_finite() {
                continue;
            }
            let d = (v - a).abs();
            best = match best {
                Some((bd, bc)) if bd < d || (bd == d && bc & 1 == 0) => Some((bd, bc)),
                _ => Some((d, c)),
            };
        }
        sign | best.expect("finite codes").1
    }

    #[test]
    fn every_code_decodes_to_its_reference_value_and_round_trips() {
        for code in 0..CODES as u16 {
            let (got, want) = (decode(code), reference_value(code));
            if want.is_nan() {
                assert!(got.is_nan() && is_nan_code(code), "{code:#05x}");
                // NaN comes back as the NaN code with the same sign.
                assert_eq!(encode(got) & SIGN, code & SIGN, "{code:#05x}");
                assert!(is_nan_code(encode(got)));
                continue;
            }
            assert_eq!(f64::from(got), want, "{code:#05x}");
            if got.is_infinite() {
                // Saturating: inf codes decode to inf but ±inf encodes to ±max.
                assert_eq!(encode(got), (code & SIGN) | MAX_CODE);
            } else {
                assert_eq!(encode(got), code, "{code:#05x} = {got:e}");
            }
            // E5M6 is FP16 without its 4 low mantissa bits.
            let f16 = half::f16::from_bits(code << 4).to_f32();
            assert!(f16.to_bits() == got.to_bits(), "{code:#05x}: fp16 {f16:e}");
        }
    }

    #[test]
    fn the_documented_constants() {
        assert_eq!(decode(MAX_CODE), MAX);
        assert_eq!(f64::from(MAX), (1.0 + 63.0 / 64.0) * 32768.0);
        assert_eq!(decode(0x040), 2f32.powi(-14));
        assert_eq!(decode(0x001), 2f32.powi(-20));
        assert!(decode(0x7c0).is_infinite() && decode(0xfc0) == f32::NEG_INFINITY);
        assert!(is_nan_code(NAN_CODE) && is_nan_code(SIGN | NAN_CODE));
    }

    #[test]
    fn ties_round_to_the_even_code() {
        for c in 0..MAX_CODE {
            let (a, b) = (reference_value(c), reference_value(c + 1));
            let mid = (a + b) / 2.0;
            // Every midpoint of two E5M6 values is exact in f32 (7 significant bits).
            assert_eq!(f64::from(mid as f32), mid);
            let even = if c & 1 == 0 { c } else { c + 1 };
            assert_eq!(
                encode(mid as f32),
                even,
                "tie {mid:e} between {c:#05x}, {:#05x}",
                c + 1
            );
            assert_eq!(encode(-mid as f32), SIGN | even, "tie -{mid:e}");
            // Just off the tie, the nearer code wins.
            let below = f32::from_bits((mid as f32).to_bits() - 1);
            let above = f32::from_bits((mid as f32).to_bits() + 1);
            if mid > 0.0 {
                assert_eq!(encode(below), c, "below {mid:e}");
                assert_eq!(encode(above), c + 1, "above {mid:e}");
            }
        }
        // Concretely: 1 + 1/128 lies halfway between 1 (0x3c0, even) and 1 + 1/64 (0x3c1).
        assert_eq!(encode(1.0 + 1.0 / 128.0), 0x3c0);
        assert_eq!(encode(1.0 + 3.0 / 128.0), 0x3c2);
    }

    #[test]
    fn encoder_matches_exhaustive_search() {
        // f32s across the whole E5M6 range and past it, strided so low mantissa bits vary.
        let top = (MAX * 1.5).to_bits();
        let mut bits = 0u32;
        while bits < top {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(encode(x), reference_encode(x), "{x:e}");
            }
            bits += 0x3_fff1;
        }
    }

    #[test]
    fn saturation_and_specials() {
        // Past the largest finite value everything saturates, however large; max + half an
        // ulp (65280) would round to inf in IEEE round-to-nearest, here it is max.
        for x in [
            65024.0f32,
            65100.0,
            65280.0,
            65536.0,
            1e9,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(encode(x), MAX_CODE, "{x:e}");
            assert_eq!(encode(-x), SIGN | MAX_CODE, "-{x:e}");
            assert_eq!(round(x), MAX);
        }
        assert!(is_nan_code(encode(f32::NAN)));
        assert_eq!(encode(-f32::NAN) & SIGN, SIGN);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(encode(0.0), 0);
        assert_eq!(encode(-0.0), SIGN);
        // Below half the smallest subnormal: zero; just above it: the smallest subnormal.
        assert_eq!(
            encode(2f32.powi(-21)),
            0,
            "a tie with zero goes to the even code 0"
        );
        assert_eq!(encode(2f32.powi(-21) * 1.001), 1);
        assert_eq!(encode(f32::from_bits(1)), 0);
        // The subnormal/normal boundary: 63.5 · 2^-20 rounds up to 2^-14 (code 0x40).
        assert_eq!(encode(63.5 * 2f32.powi(-20)), 0x040);
        let mut xs = [1.0 + 1.0 / 128.0, 70000.0, -5.2 * 2f32.powi(-20)];
        round_slice(&mut xs);
        assert_eq!(xs, [1.0, MAX, -(5.0 * 2f32.powi(-20))]);
    }
}
