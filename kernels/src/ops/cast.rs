//! Rounding f32 values to a narrower float storage format (round to nearest even), for `cast`
//! ops and for the intermediates that Hugging Face rounds to a bf16 model's dtype.
//!
//! FP8 casts are not here: they saturate and belong to [`crate::numerics::fp8`].

use super::error::OpError;
use crate::numerics::bf16::{from_bf16, to_bf16};
use dsc_ir::DType;
use half::f16;

/// A float format that f32 values are rounded to and widened back from (exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FloatFormat {
    /// No rounding.
    #[default]
    F32,
    /// bfloat16, round to nearest even ([`crate::numerics::bf16::to_bf16`]).
    Bf16,
    /// IEEE half, round to nearest even; overflow goes to ±inf as torch's `.to(float16)` does.
    F16,
}

impl FloatFormat {
    /// The format of a float dtype; `None` for FP8 (saturating, see `numerics`) and non-floats.
    pub fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(FloatFormat::F32),
            DType::Bf16 => Some(FloatFormat::Bf16),
            DType::F16 => Some(FloatFormat::F16),
            _ => None,
        }
    }

    /// `x` rounded to this format (RNE) and widened back to f32; NaN stays NaN.
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            FloatFormat::F32 => x,
            FloatFormat::Bf16 => from_bf16(to_bf16(x)),
            FloatFormat::F16 => f16::from_f32(x).to_f32(),
        }
    }

    /// Rounds every element of `xs` in place.
    pub fn round_slice(self, xs: &mut [f32]) {
        if self != FloatFormat::F32 {
            for x in xs {
                *x = self.round(*x);
            }
        }
    }
}

/// Rounds `xs` in place to the values `dtype` can hold: identity for f32, RNE for bf16/f16;
/// an error for FP8 (a numerics concern) and for integer/bool dtypes.
pub fn round_to(dtype: DType, xs: &mut [f32]) -> Result<(), OpError> {
    match FloatFormat::of(dtype) {
        Some(fmt) => {
            fmt.round_slice(xs);
            Ok(())
        }
        None => Err(OpError::Unsupported(format!(
            "rounding to {dtype} is not a high-precision cast (FP8 casts live in numerics::fp8)"
        ))),
    }
}
