//! Element types of tensors.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    Bf16,
    F16,
    F8E4M3,
    F8E5M2,
    /// The emulated 12-bit E5M6 float (1 sign, 5 exponent bits bias 15, 6 mantissa bits: FP16
    /// without its 4 low mantissa bits; max 65024): DeepSeek-V3's cache format for the attention
    /// output projection's inputs (DESIGN.md §8, docs/e5m6.md). Only `quantize` / `dequantize`
    /// make and read it, in a 16-bit container; the CPU runtime emulates it, no GPU kernel does.
    F12E5M6,
    I32,
    I64,
    Bool,
}

impl DType {
    /// Every dtype, in the order the IR documents them.
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::Bf16,
        DType::F16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::F12E5M6,
        DType::I32,
        DType::I64,
        DType::Bool,
    ];

    /// The spelling used in the text format, model.toml and reports.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F8E4M3 => "f8e4m3",
            DType::F8E5M2 => "f8e5m2",
            DType::F12E5M6 => "f12e5m6",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    /// Storage size of one element in bytes.
    pub fn size_bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            // E5M6's 12 bits are held in a 16-bit container.
            DType::Bf16 | DType::F16 | DType::F12E5M6 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::Bool => 1,
        }
    }

    /// Bits of one element as the format defines it: 8 × [`DType::size_bytes`], except E5M6's 12
    /// (held in 16). The training memory report counts these, as the recipe would store it.
    pub fn size_bits(self) -> u64 {
        match self {
            DType::F12E5M6 => 12,
            d => 8 * d.size_bytes(),
        }
    }

    /// True for floating-point types, FP8 included.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::Bf16 | DType::F16 | DType::F8E4M3 | DType::F8E5M2 | DType::F12E5M6
        )
    }

    /// True for the two 8-bit float formats.
    pub fn is_fp8(self) -> bool {
        matches!(self, DType::F8E4M3 | DType::F8E5M2)
    }

    /// True for the dtypes of block-quantized codes, which `quantize` makes and `dequantize`
    /// reads: the two FP8 formats and the emulated E5M6.
    pub fn is_block_quantized(self) -> bool {
        self.is_fp8() || self == DType::F12E5M6
    }

    /// True for float types wide enough to be a `high` precision (bf16, f16, f32).
    pub fn is_high_float(self) -> bool {
        self.is_float() && !self.is_block_quantized()
    }

    /// True for the float types dsc's GPU kernels read and write as values: f32 and bf16.
    /// f16 and FP8 are IR types too (the CPU reference computes in them), but FP8 only ever
    /// appears as the codes the FP8 passes make, and no kernel takes f16. The model.toml
    /// checker refuses other float dtypes where a value would need them (`high`, overrides,
    /// graph inputs, casts), and codegen's selection relies on it.
    pub fn is_kernel_float(self) -> bool {
        matches!(self, DType::F32 | DType::Bf16)
    }

    /// True for integer types (usable as indices).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    /// Largest finite value of an FP8 format (448 for E4M3, 57344 for E5M2).
    pub fn fp8_max(self) -> Option<f32> {
        match self {
            DType::F8E4M3 => Some(448.0),
            DType::F8E5M2 => Some(57344.0),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a string that names no dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dtype `{0}` (expected one of f32, bf16, f16, f8e4m3, f8e5m2, f12e5m6, i32, i64, bool)"
)]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

/// Serialized as the IR spells it (`bf16`, `f8e4m3`, …): the manifest and reports use it.
impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
        }
        let e = "float8".parse::<DType>().unwrap_err().to_string();
        assert!(e.contains("unknown dtype `float8`"), "{e}");
    }
}
