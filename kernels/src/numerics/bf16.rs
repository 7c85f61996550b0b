//! BF16: f32 → bf16 rounding to nearest even, and the exact widening back.
//!
//! `half::bf16::from_f32` is exactly this conversion (round bit set and any of sticky or lsb set
//! rounds up; NaN keeps its sign and gets the quiet bit; overflow past bf16's max rounds to ±inf
//! as IEEE RNE does), and the test table of `shared/testdata` confirms it bit for bit, so these
//! functions only name the semantics DESIGN.md §3 relies on.

use half::bf16;

/// Rounds `x` to the nearest bf16, ties to even; NaN stays NaN.
pub fn to_bf16(x: f32) -> bf16 {
    bf16::from_f32(x)
}

/// Rounds every element of `xs` as [`to_bf16`] does.
pub fn to_bf16_slice(xs: &[f32]) -> Vec<bf16> {
    xs.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// The exact f32 value of a bf16 (its bits shifted into the top half).
pub fn from_bf16(x: bf16) -> f32 {
    x.to_f32()
}

/// The exact f32 value of a bf16 given as raw bits, as checkpoints and test vectors store them.
pub fn from_bf16_bits(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)).to_bits(), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: goes up.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)).to_bits(), 0x3f82);
        assert_eq!(to_bf16(f32::MAX).to_bits(), 0x7f80);
        assert!(to_bf16(f32::NAN).is_nan());
        assert_eq!(from_bf16_bits(0xc040), -3.0);
        assert_eq!(from_bf16(to_bf16(-3.0)), -3.0);
    }
}
