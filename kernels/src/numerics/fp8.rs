//! FP8 E4M3 and E5M2: encoding f32 → code (u8) and decoding code → f32, bit-exact.
//!
//! Encoding is PTX `cvt.rn.satfinite`: round to nearest, ties to even; a finite value beyond the
//! largest finite code and ±inf both become ±max; NaN becomes a NaN code (sign kept). Subnormal
//! FP8 values are produced and rounded exactly. DESIGN.md §3 fixes these semantics.
//!
//! Both formats share one branch-free encoder, parameterized by the format's constants, so the
//! scalar function and the slice function are the same arithmetic (the slice loop only hoists
//! the format out and lets the compiler vectorize). Decoding goes through a 256-entry table
//! built at compile time from the bit layout.

use dsc_ir::DType;

/// An FP8 storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// 1 sign, 4 exponent (bias 7), 3 mantissa bits; max 448; no infinities; NaN = S.1111.111.
    E4M3,
    /// 1 sign, 5 exponent (bias 15), 2 mantissa bits; max 57344; IEEE-style inf and NaN.
    E5M2,
}

/// The constants that define a format's bit layout.
#[derive(Clone, Copy)]
struct Layout {
    mant_bits: u32,
    bias: u32,
    /// The largest finite code, positive.
    max_code: u8,
    /// The code written for NaN inputs, positive (the sign is kept).
    nan_code: u8,
}

impl Fp8Format {
    /// Both formats, for tests and tables.
    pub const ALL: [Fp8Format; 2] = [Fp8Format::E4M3, Fp8Format::E5M2];

    const fn layout(self) -> Layout {
        match self {
            Fp8Format::E4M3 => Layout {
                mant_bits: 3,
                bias: 7,
                max_code: 0x7e,
                nan_code: 0x7f,
            },
            Fp8Format::E5M2 => Layout {
                mant_bits: 2,
                bias: 15,
                max_code: 0x7b,
                nan_code: 0x7e,
            },
        }
    }

    /// The largest finite value (448 or 57344).
    pub const fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }

    /// The IR dtype of this format.
    pub fn dtype(self) -> DType {
        match self {
            Fp8Format::E4M3 => DType::F8E4M3,
            Fp8Format::E5M2 => DType::F8E5M2,
        }
    }

    /// The format of an FP8 IR dtype; `None` for any other dtype.
    pub fn from_dtype(d: DType) -> Option<Self> {
        match d {
            DType::F8E4M3 => Some(Fp8Format::E4M3),
            DType::F8E5M2 => Some(Fp8Format::E5M2),
            _ => None,
        }
    }

    /// The value of every code, indexed by code.
    pub fn table(self) -> &'static [f32; 256] {
        match self {
            Fp8Format::E4M3 => &E4M3_TABLE,
            Fp8Format::E5M2 => &E5M2_TABLE,
        }
    }

    /// True for the codes that are NaN.
    pub fn is_nan_code(self, code: u8) -> bool {
        self.table()[code as usize].is_nan()
    }
}

static E4M3_TABLE: [f32; 256] = build_table(Fp8Format::E4M3);
static E5M2_TABLE: [f32; 256] = build_table(Fp8Format::E5M2);

/// Decodes every code from the bit layout (evaluated at compile time).
const fn build_table(fmt: Fp8Format) -> [f32; 256] {
    let l = fmt.layout();
    let exp_max = (1u32 << (7 - l.mant_bits)) - 1;
    let mut t = [0.0f32; 256];
    let mut c = 0;
    while c < 256 {
        let code = c as u32;
        let exp = (code >> l.mant_bits) & exp_max;
        let mant = code & ((1 << l.mant_bits) - 1);
        let magnitude = if exp == 0 {
            // Subnormal: mant · 2^(1 - bias - mant_bits); the product of small exact values is exact.
            mant as f32 * f32::from_bits((127 + 1 - l.bias - l.mant_bits) << 23)
        } else if exp == exp_max && matches!(fmt, Fp8Format::E5M2) {
            if mant == 0 { f32::INFINITY } else { f32::NAN }
        } else if exp == exp_max && mant == (1 << l.mant_bits) - 1 {
            f32::NAN // E4M3 spends only S.1111.111 on NaN and has no infinity.
        } else {
            f32::from_bits(((exp + 127 - l.bias) << 23) | (mant << (23 - l.mant_bits)))
        };
        t[c] = if code & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        };
        c += 1;
    }
    t
}

/// Decodes one FP8 code to its exact f32 value (NaN codes give NaN; E5M2's inf codes give ±inf).
pub fn decode(fmt: Fp8Format, code: u8) -> f32 {
    fmt.table()[code as usize]
}

/// Encodes one f32 as the nearest FP8 code (ties to even), saturating to ±max; NaN stays NaN.
pub fn encode(fmt: Fp8Format, x: f32) -> u8 {
    encode_with(fmt.layout(), x)
}

/// Decodes `codes` into `out` (equal lengths), as [`decode`] does element by element.
pub fn decode_slice(fmt: Fp8Format, codes: &[u8], out: &mut [f32]) {
    assert_eq!(codes.len(), out.len(), "decode_slice: length mismatch");
    let t = fmt.table();
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = t[c as usize];
    }
}

/// Encodes `xs` into `out` (equal lengths), bit-identical to [`encode`] element by element.
pub fn encode_slice(fmt: Fp8Format, xs: &[f32], out: &mut [u8]) {
    assert_eq!(xs.len(), out.len(), "encode_slice: length mismatch");
    // One monomorphic loop per format: the layout becomes constants and the body vectorizes.
    match fmt {
        Fp8Format::E4M3 => encode_loop(Fp8Format::E4M3.layout(), xs, out),
        Fp8Format::E5M2 => encode_loop(Fp8Format::E5M2.layout(), xs, out),
    }
}

#[inline(always)]
fn encode_loop(l: Layout, xs: &[f32], out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = encode_with(l, x);
    }
}

/// The encoder. Every candidate is computed and the right one selected, without branches:
///
/// - normal range (|x| ≥ 2^(1-bias)): round the f32 bit pattern itself to `mant_bits` with the
///   add-half-minus-one-plus-lsb trick (a mantissa carry correctly bumps the exponent), then
///   rebias the exponent. Anything past the largest finite code — including inf, whose bits
///   sort above every finite value — clamps to `max_code`, which is satfinite.
/// - subnormal range: `|x| · 2^(mant_bits + bias - 1)` is exact (a power-of-two scale upwards)
///   and below 2^mant_bits; adding 2^23 rounds it to an integer, ties to even (f32 addition
///   rounds that way), and that integer is the code — 2^mant_bits is exactly the smallest
///   normal code, so rounding up across the boundary needs no special case.
#[inline(always)]
fn encode_with(l: Layout, x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7fff_ffff;

    let shift = 23 - l.mant_bits;
    let rounded = (abs + ((1 << (shift - 1)) - 1) + ((abs >> shift) & 1)) >> shift;
    let rebias = (127 - l.bias) << l.mant_bits;
    let normal = rounded.wrapping_sub(rebias).min(l.max_code as u32);

    let to_integer = f32::from_bits((127 + l.mant_bits + l.bias - 1) << 23);
    let scaled = f32::from_bits(abs) * to_integer + 8_388_608.0;
    let subnormal = scaled.to_bits().wrapping_sub(0x4b00_0000);

    let min_normal_bits = (127 + 1 - l.bias) << 23;
    let code = if abs < min_normal_bits {
        subnormal
    } else {
        normal
    };
    let code = if abs > 0x7f80_0000 {
        l.nan_code as u32
    } else {
        code
    };
    sign | code as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code nearest to `x` by exhaustive search in f64, ties to the even code; saturating.
    fn nearest_by_search(fmt: Fp8Format, x: f32) -> u8 {
        let x = x as f64;
        let max = fmt.max() as f64;
        let (sign, a) = (
            if x.is_sign_negative() { 0x80 } else { 0 },
            x.abs().min(max),
        );
        let mut best: Option<(f64, u8)> = None;
        for c in 0u8..0x80 {
            let v = decode(fmt, c) as f64;
            if !v.is_finite() {
                continue;
            }
            let d = (v - a).abs();
            best = match best {
                Some((bd, bc)) if bd < d || (bd == d && bc & 1 == 0) => Some((bd, bc)),
                _ => Some((d, c)),
            };
        }
        sign | best.unwrap().1
    }

    #[test]
    fn encoder_matches_exhaustive_search() {
        // Every f32 whose magnitude is within (and a little beyond) the FP8 range, strided so
        // that all round-to-nearest ties and all exponent boundaries are visited.
        for fmt in Fp8Format::ALL {
            let top = (fmt.max() * 1.2).to_bits();
            let mut bits = 0u32;
            while bits < top {
                for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                    assert_eq!(encode(fmt, x), nearest_by_search(fmt, x), "{fmt:?} {x:e}");
                }
                bits += 0x1_3fff; // odd stride: low mantissa bits vary as well
            }
            // Exact midpoints between consecutive codes: ties must go to the even code.
            for c in 0u8..fmt.layout().max_code {
                let (a, b) = (decode(fmt, c) as f64, decode(fmt, c + 1) as f64);
                let mid = ((a + b) / 2.0) as f32;
                assert_eq!(
                    encode(fmt, mid),
                    nearest_by_search(fmt, mid),
                    "{fmt:?} tie {mid:e}"
                );
            }
        }
    }

    #[test]
    fn specials() {
        for fmt in Fp8Format::ALL {
            let max = fmt.layout().max_code;
            assert_eq!(encode(fmt, f32::INFINITY), max);
            assert_eq!(encode(fmt, f32::NEG_INFINITY), 0x80 | max);
            assert_eq!(encode(fmt, f32::MAX), max);
            assert!(fmt.is_nan_code(encode(fmt, f32::NAN)));
            assert!(fmt.is_nan_code(encode(fmt, -f32::NAN)));
            assert_eq!(encode(fmt, -0.0), 0x80);
            assert_eq!(encode(fmt, f32::from_bits(1)), 0); // the smallest f32 subnormal
            assert_eq!(decode(fmt, max), fmt.max());
        }
    }

    #[test]
    fn slice_path_is_bit_identical() {
        let xs: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9e37_79b9)))
            .collect();
        for fmt in Fp8Format::ALL {
            let mut out = vec![0u8; xs.len()];
            encode_slice(fmt, &xs, &mut out);
            for (&x, &c) in xs.iter().zip(&out) {
                assert_eq!(c, encode(fmt, x), "{fmt:?} {x:e}");
            }
        }
    }
}
