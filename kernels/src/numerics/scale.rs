//! Block scales: `s = max(amax, 1e-4) / fp8_max` in f32, optionally rounded up to a power of two.
//!
//! The scale is the multiplier (`x ≈ q · s`, DeepSeek-V3's `weight_scale_inv`); quantization
//! divides by it. The 1e-4 floor keeps an all-zero group from producing a zero scale (and a 0/0).
//! The UE8M0 form rounds `s` *up* to `2^ceil(log2 s)`, so `x / s` never exceeds the FP8 maximum.

use super::fp8::Fp8Format;
use dsc_ir::ScaleFormat;

/// The least amax a scale is computed from.
const AMAX_FLOOR: f32 = 1e-4;

/// The largest magnitude in `xs`; NaN elements are skipped (as CUDA's `fmaxf` skips them), so a
/// NaN stays confined to its own element instead of poisoning its whole group.
pub fn amax<'a>(xs: impl IntoIterator<Item = &'a f32>) -> f32 {
    xs.into_iter().fold(0.0f32, |a, &v| a.max(v.abs()))
}

/// The scale of a group whose largest magnitude is `amax`, in the given representation.
pub fn scale_for(amax: f32, fmt: Fp8Format, scale_format: ScaleFormat) -> f32 {
    scale_for_max(amax, fmt.max(), scale_format)
}

/// The scale of a group whose largest magnitude is `amax`, for a format whose largest finite
/// value is `format_max` (E5M6's 65024 as well as the FP8 formats').
pub fn scale_for_max(amax: f32, format_max: f32, scale_format: ScaleFormat) -> f32 {
    // A true f32 division, as on the GPU: not a multiplication by a rounded reciprocal.
    let s = amax.max(AMAX_FLOOR) / format_max;
    match scale_format {
        ScaleFormat::F32 => s,
        ScaleFormat::Ue8m0 => ceil_pow2(s),
    }
}

/// The least power of two `>= s` for positive finite `s`, computed on the bits (no `log2`, which
/// rounds); other inputs come back unchanged, and a result past f32's range is +inf.
pub fn ceil_pow2(s: f32) -> f32 {
    if !s.is_finite() || s <= 0.0 {
        return s;
    }
    let bits = s.to_bits();
    let (exp, mant) = (bits & 0x7f80_0000, bits & 0x007f_ffff);
    if exp == 0 {
        // Subnormal: the value is mant · 2^-149, so the answer's bits are mant rounded up to a
        // power of two (2^23 lands exactly on the smallest normal).
        return f32::from_bits(mant.next_power_of_two());
    }
    if mant == 0 {
        s
    } else {
        f32::from_bits(exp + 0x0080_0000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two() {
        assert_eq!(ceil_pow2(1.0), 1.0);
        assert_eq!(ceil_pow2(1.000_000_1), 2.0);
        assert_eq!(ceil_pow2(0.75), 1.0);
        assert_eq!(ceil_pow2(f32::from_bits(3)), f32::from_bits(4));
        assert_eq!(ceil_pow2(f32::from_bits(0x007f_ffff)), f32::MIN_POSITIVE);
        assert_eq!(ceil_pow2(f32::MAX), f32::INFINITY);
        assert!(ceil_pow2(f32::NAN).is_nan());
    }

    #[test]
    fn scales() {
        let e4 = Fp8Format::E4M3;
        assert_eq!(scale_for(448.0, e4, ScaleFormat::F32), 1.0);
        assert_eq!(scale_for(0.0, e4, ScaleFormat::F32), 1e-4f32 / 448.0);
        assert_eq!(scale_for(448.0, e4, ScaleFormat::Ue8m0), 1.0);
        assert_eq!(scale_for(449.0, e4, ScaleFormat::Ue8m0), 2.0);
        assert_eq!(amax(&[1.0, -3.0, f32::NAN, 2.0]), 3.0);
    }
}
