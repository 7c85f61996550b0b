//! Scalar math every kernel shares, built from `arith` and inline PTX only.
//!
//! `convert-gpu-to-nvvm` lowers `math.exp`, `math.sin`, … to libdevice calls (`__nv_expf`),
//! which `gpu-module-to-binary` leaves unresolved without a CUDA toolkit; so the few functions
//! the kernels need are written here: a Cephes-style `exp` and `sincos` (range reduction plus
//! minimax polynomials, within 2 ulp of the CPU reference's `f32::exp`/`cos`/`sin`), and the
//! exact conversions (FP8 encoding with `cvt.rn.satfinite`, UE8M0 scale rounding on the bits).

use dsc_ir::{DType, ScaleFormat};
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::Value;

use super::emit::{Emit, Emitted};
use crate::error::CodegenError;

/// Largest magnitude of each FP8 format (E4M3: 448, E5M2: 57344) and of the emulated E5M6
/// (65024).
pub fn fp8_max(format: DType) -> f32 {
    match format {
        DType::F12E5M6 => dsc_kernels::numerics::e5m6::MAX,
        _ => format.fp8_max().expect("an FP8 format or E5M6"),
    }
}

impl<'c, 'a> Emit<'c, 'a> {
    /// `max(a, b)` that skips a NaN `b` (as the CPU reference's `f32::max` in `amax`): a NaN stays
    /// confined to its own element.
    pub fn max_skip_nan(&self, a: Value<'c, 'a>, b: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let greater = self.cmpf(CmpfPredicate::Ogt, b, a)?;
        self.select(greater, b, a)
    }

    /// `x` rounded to the nearest integer, ties to even, as an f32 (PTX `cvt.rni`).
    fn round_even(&self, x: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.inline_asm("cvt.rni.f32.f32 $0, $1;", "=f,f", &[x], self.f32_type())
    }

    /// `2^n` for an integer-valued f32 `n` in [-126, 127], built on the bits.
    fn pow2(&self, n: Value<'c, '_>) -> Emitted<'c, 'a> {
        let i32_type = self.int_type(32);
        let n = self.fptosi(n, i32_type)?;
        let bias = self.int(32, 127)?;
        let biased = self.addi(n, bias)?;
        let shift = self.int(32, 23)?;
        let bits = self.shli(biased, shift)?;
        self.bitcast(bits, self.f32_type())
    }

    /// `e^x` in f32: `x = n ln2 + r`, a degree-6 polynomial for `e^r`, scaled by `2^n` in two
    /// halves (so n = 128 does not overflow the exponent field). Below -87.34 the result is 0
    /// (also for -inf), above 88.72 +inf; NaN stays NaN.
    pub fn exp(&self, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let low = self.f32(-87.336_55)?;
        let high = self.f32(88.722_84)?;
        let clamped_low = self.maxf(x, low)?;
        let too_high = self.cmpf(CmpfPredicate::Ogt, x, high)?;
        let clamped = self.select(too_high, high, clamped_low)?;

        let log2e = self.f32(std::f32::consts::LOG2_E)?;
        let scaled = self.mulf(clamped, log2e)?;
        let n = self.round_even(scaled)?;
        // ln 2 = C1 + C2 with C1 exact in 9 bits, so n·C1 is exact for |n| < 2^15.
        let c1 = self.f32(0.693_359_4)?;
        let c2 = self.f32(-2.121_944_4e-4)?;
        let nc1 = self.mulf(n, c1)?;
        let r = self.subf(clamped, nc1)?;
        let nc2 = self.mulf(n, c2)?;
        let r = self.subf(r, nc2)?;

        let coefficients = [
            1.987_569_1e-4f32,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ];
        let mut p = self.f32(coefficients[0])?;
        for &c in &coefficients[1..] {
            let pr = self.mulf(p, r)?;
            let c = self.f32(c)?;
            p = self.addf(pr, c)?;
        }
        let rr = self.mulf(r, r)?;
        let p = self.mulf(p, rr)?;
        let p = self.addf(p, r)?;
        let one = self.f32(1.0)?;
        let p = self.addf(p, one)?;

        let two = self.f32(2.0)?;
        let half_n = self.divf(n, two)?;
        let half_n = self.inline_asm(
            "cvt.rmi.f32.f32 $0, $1;",
            "=f,f",
            &[half_n],
            self.f32_type(),
        )?;
        let rest = self.subf(n, half_n)?;
        let a = self.pow2(half_n)?;
        let b = self.pow2(rest)?;
        let p = self.mulf(p, a)?;
        let result = self.mulf(p, b)?;

        let below = self.cmpf(CmpfPredicate::Olt, x, low)?;
        let zero = self.f32(0.0)?;
        let result = self.select(below, zero, result)?;
        let inf = self.f32(f32::INFINITY)?;
        self.select(too_high, inf, result)
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let minus = self.negf(x)?;
        let e = self.exp(minus)?;
        let one = self.f32(1.0)?;
        let denominator = self.addf(one, e)?;
        self.divf(one, denominator)
    }

    /// `e^x` on the special-function unit: `ex2.approx.f32(x · log2 e)`, two instructions
    /// instead of [`Emit::exp`]'s ~30. Its relative error is the product's rounding times
    /// `|x · ln 2|` plus ex2's ~2 ulp: under 1e-5 over the whole f32 range, 2^-17 of a bf16
    /// ulp, so a value rounded to bf16 afterwards is within one ulp of the CPU reference's.
    /// ±inf and NaN go through as `exp` gives them; above 88.72 it is +inf.
    pub fn exp_approx(&self, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let log2e = self.f32(std::f32::consts::LOG2_E)?;
        let scaled = self.mulf(x, log2e)?;
        self.inline_asm("ex2.approx.f32 $0, $1;", "=f,f", &[scaled], self.f32_type())
    }

    /// `x / (1 + e^-x)`, as the CPU reference's `silu_scalar`, with [`Emit::exp_approx`]:
    /// SwiGLU's activation is rounded to bf16 (or compared at 1e-5 in f32) before anything
    /// reads it, and the memory-bound kernels that form it were issue-bound on the exact `exp`.
    pub fn silu(&self, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
        let minus = self.negf(x)?;
        let e = self.exp_approx(minus)?;
        let one = self.f32(1.0)?;
        let denominator = self.addf(one, e)?;
        self.divf(x, denominator)
    }

    /// `(cos x, sin x)` in f32: `x = k·π/2 + r` with a three-part π/2 (exact products for
    /// |k| < 2^12, so angles up to a few thousand radians stay accurate), then Cephes' minimax
    /// polynomials on [-π/4, π/4] and the quadrant's swap and signs.
    pub fn sincos(&self, x: Value<'c, 'a>) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
        let two_over_pi = self.f32(std::f32::consts::FRAC_2_PI)?;
        let scaled = self.mulf(x, two_over_pi)?;
        let k = self.round_even(scaled)?;
        // π/2 = P1 + P2 + P3, P1 and P2 with 12 significant bits.
        let mut r = x;
        for part in [1.570_312_5f32, 4.837_513e-4, 7.549_79e-8] {
            let part = self.f32(part)?;
            let kp = self.mulf(k, part)?;
            r = self.subf(r, kp)?;
        }
        let z = self.mulf(r, r)?;
        let horner = |coefficients: &[f32]| -> Emitted<'c, 'a> {
            let mut p = self.f32(coefficients[0])?;
            for &c in &coefficients[1..] {
                let pz = self.mulf(p, z)?;
                let c = self.f32(c)?;
                p = self.addf(pz, c)?;
            }
            Ok(p)
        };
        // sin r = r + r z (s0 + z (s1 + z s2))
        let ps = horner(&[-1.951_529_6e-4, 8.332_161e-3, -0.166_666_55])?;
        let rz = self.mulf(r, z)?;
        let t = self.mulf(rz, ps)?;
        let sin_r = self.addf(r, t)?;
        // cos r = 1 - z/2 + z² (c0 + z (c1 + z c2))
        let pc = horner(&[2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2])?;
        let zz = self.mulf(z, z)?;
        let t = self.mulf(zz, pc)?;
        let half = self.f32(0.5)?;
        let hz = self.mulf(half, z)?;
        let one = self.f32(1.0)?;
        let c = self.subf(one, hz)?;
        let cos_r = self.addf(c, t)?;

        let quadrant = self.fptosi(k, self.int_type(32))?;
        let three = self.int(32, 3)?;
        let quadrant = self.andi(quadrant, three)?;
        let one_i = self.int(32, 1)?;
        let two_i = self.int(32, 2)?;
        let odd_bit = self.andi(quadrant, one_i)?;
        let zero_i = self.int(32, 0)?;
        let odd = self.cmpi(CmpiPredicate::Ne, odd_bit, zero_i)?;
        let sin_base = self.select(odd, cos_r, sin_r)?;
        let cos_base = self.select(odd, sin_r, cos_r)?;
        // sin is negated in quadrants 2 and 3, cos in quadrants 1 and 2.
        let q2 = self.andi(quadrant, two_i)?;
        let sin_negative = self.cmpi(CmpiPredicate::Ne, q2, zero_i)?;
        let q_plus_1 = self.addi(quadrant, one_i)?;
        let q_plus_1 = self.andi(q_plus_1, two_i)?;
        let cos_negative = self.cmpi(CmpiPredicate::Ne, q_plus_1, zero_i)?;
        let neg_sin = self.negf(sin_base)?;
        let neg_cos = self.negf(cos_base)?;
        let sin = self.select(sin_negative, neg_sin, sin_base)?;
        let cos = self.select(cos_negative, neg_cos, cos_base)?;
        Ok((cos, sin))
    }

    /// The FP8 code (an `i8`) of `x`, rounded to nearest even and saturated to ±max; NaN stays
    /// NaN (PTX `cvt.rn.satfinite.{e4m3,e5m2}x2.f32`, which packs its second operand low).
    pub fn encode_fp8(&self, x: Value<'c, '_>, format: DType) -> Emitted<'c, 'a> {
        let instruction = match format {
            DType::F8E5M2 => "cvt.rn.satfinite.e5m2x2.f32 $0, $1, $2;",
            _ => "cvt.rn.satfinite.e4m3x2.f32 $0, $1, $2;",
        };
        let zero = self.f32(0.0)?;
        let pair = self.inline_asm(instruction, "=h,f,f", &[zero, x], self.int_type(16))?;
        self.trunci(pair, self.int_type(8))
    }

    /// The code of `x` in `format`: an FP8 code (`i8`, [`Self::encode_fp8`]) or an E5M6 one
    /// in its 16-bit container ([`Self::encode_e5m6`]).
    pub fn encode_code(&self, x: Value<'c, '_>, format: DType) -> Emitted<'c, 'a> {
        match format {
            DType::F12E5M6 => self.encode_e5m6(x),
            _ => self.encode_fp8(x, format),
        }
    }

    /// The emulated E5M6 code of `x` (docs/e5m6.md) in its container, the FP16 bit pattern (an
    /// `i16`, `code << 4`): rounded to nearest even straight from f32 (not through FP16, which
    /// would round twice), saturated to ±65024, NaN kept. Normal magnitudes round on the f32
    /// bits (17 of the 23 mantissa bits dropped); below 2^−14 the spacing is fixed at 2^−20, so
    /// `rni(|x| · 2^20) · 2^−20`. The rounded value is an FP16 value: the final `cvt.rn.f16` is
    /// exact.
    pub fn encode_e5m6(&self, x: Value<'c, '_>) -> Emitted<'c, 'a> {
        let i32_type = self.int_type(32);
        let magnitude = self.absf(x)?;
        let bits = self.bitcast(magnitude, i32_type)?;
        let lsb = self.andi(self.shrui(bits, self.int(32, 17)?)?, self.int(32, 1)?)?;
        let bias = self.addi(lsb, self.int(32, 0xffff)?)?;
        let rounded = self.andi(self.addi(bits, bias)?, self.int(32, !0x1_ffff)?)?;
        let normal = self.bitcast(rounded, self.f32_type())?;
        let scaled = self.mulf(magnitude, self.f32(2f32.powi(20))?)?;
        let subnormal = self.mulf(self.round_even(scaled)?, self.f32(2f32.powi(-20))?)?;
        let tiny = self.cmpf(CmpfPredicate::Olt, magnitude, self.f32(2f32.powi(-14))?)?;
        let r = self.select(tiny, subnormal, normal)?;
        let max = self.f32(dsc_kernels::numerics::e5m6::MAX)?;
        let over = self.cmpf(CmpfPredicate::Ogt, r, max)?;
        let r = self.select(over, max, r)?;
        // The sign back on (−0 and negative NaNs included).
        let sign = self.andi(self.bitcast(x, i32_type)?, self.int(32, i32::MIN as i64)?)?;
        let signed = self.ori(self.bitcast(r, i32_type)?, sign)?;
        let signed = self.bitcast(signed, self.f32_type())?;
        // A NaN as it is: its mantissa plus the rounding bias could carry into the sign bit
        // (LLVM makes the magnitude an `abs.f32`, which may return the canonical all-ones NaN).
        let nan = self.cmpf(CmpfPredicate::Uno, x, x)?;
        let signed = self.select(nan, x, signed)?;
        self.inline_asm(
            "cvt.rn.f16.f32 $0, $1;",
            "=h,f",
            &[signed],
            self.int_type(16),
        )
    }

    /// The f32 value of an E5M6 code in its 16-bit container (exact: FP16 → f32).
    pub fn decode_e5m6(&self, code: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.inline_asm("cvt.f32.f16 $0, $1;", "=f,h", &[code], self.f32_type())
    }

    /// The scale of a group with largest magnitude `amax`: `max(amax, 1e-4) / fp8_max` (a true
    /// division), rounded up to a power of two for UE8M0 (on the bits: normal scales only, which
    /// every scale is, being at least 1e-4 / 57344).
    pub fn scale_for(
        &self,
        amax: Value<'c, 'a>,
        format: DType,
        scale_format: ScaleFormat,
    ) -> Emitted<'c, 'a> {
        let floor = self.f32(1e-4)?;
        let clamped = self.maxf(amax, floor)?;
        let max = self.f32(fp8_max(format))?;
        let s = self.divf(clamped, max)?;
        match scale_format {
            ScaleFormat::F32 => Ok(s),
            ScaleFormat::Ue8m0 => {
                let i32_type = self.int_type(32);
                let bits = self.bitcast(s, i32_type)?;
                let mantissa_mask = self.int(32, 0x007f_ffff)?;
                let exponent_mask = self.int(32, 0x7f80_0000)?;
                let mantissa = self.andi(bits, mantissa_mask)?;
                let exponent = self.andi(bits, exponent_mask)?;
                let one_exponent = self.int(32, 0x0080_0000)?;
                let up = self.addi(exponent, one_exponent)?;
                let zero = self.int(32, 0)?;
                let exact = self.cmpi(CmpiPredicate::Eq, mantissa, zero)?;
                let rounded = self.select(exact, bits, up)?;
                let finite = self.cmpi(CmpiPredicate::Ne, exponent, exponent_mask)?;
                let result = self.select(finite, rounded, bits)?;
                self.bitcast(result, self.f32_type())
            }
        }
    }

    /// `value` (an f32) as stored in a buffer of `dtype`: rounded to nearest even for bf16.
    pub fn round_to(&self, value: Value<'c, 'a>, dtype: DType) -> Emitted<'c, 'a> {
        match dtype {
            DType::Bf16 => self.truncf(value, self.bf16_type()),
            _ => Ok(value),
        }
    }

    /// `value` (an f32) rounded through `dtype` and back: bf16 rounding as an f32 value.
    pub fn round_through(&self, value: Value<'c, 'a>, dtype: DType) -> Emitted<'c, 'a> {
        match dtype {
            DType::Bf16 => {
                let narrow = self.truncf(value, self.bf16_type())?;
                self.extf(narrow, self.f32_type())
            }
            _ => Ok(value),
        }
    }
}
