//! Static tensor shapes and tensor types.

use crate::DType;
use std::fmt;

/// Largest element count a tensor may have (2^48): beyond it byte offsets overflow planners.
pub const MAX_ELEMENTS: u64 = 1 << 48;

/// A static shape: the size of each dimension, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<u64>);

impl Shape {
    /// Builds a shape from dimension sizes.
    pub fn new(dims: impl Into<Vec<u64>>) -> Self {
        Shape(dims.into())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimension sizes.
    pub fn dims(&self) -> &[u64] {
        &self.0
    }

    /// The last dimension (1 for a scalar).
    pub fn last(&self) -> u64 {
        self.0.last().copied().unwrap_or(1)
    }

    /// Element count, or `None` when it overflows [`MAX_ELEMENTS`].
    pub fn checked_numel(&self) -> Option<u64> {
        self.0
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
    }

    /// Element count; saturates for shapes the verifier would reject.
    pub fn numel(&self) -> u64 {
        self.checked_numel().unwrap_or(u64::MAX)
    }

    /// Resolves a possibly negative axis against this rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        let rank = self.rank() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        (0..rank).contains(&a).then_some(a as usize)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a tensor value: dtype and static shape, printed as `bf16[1, 64, 256]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    /// Builds a tensor type.
    pub fn new(dtype: DType, dims: impl Into<Vec<u64>>) -> Self {
        TensorType {
            dtype,
            shape: Shape::new(dims),
        }
    }

    /// Storage size in bytes (saturating).
    pub fn size_bytes(&self) -> u64 {
        self.shape.numel().saturating_mul(self.dtype.size_bytes())
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
