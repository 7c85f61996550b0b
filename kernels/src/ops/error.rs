//! Errors of the high-precision reference kernels, and the size checks they share.

/// Why a reference kernel refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// An operand's length is not what its stated shape implies.
    #[error("{operand}: expected {expected} elements, got {got}")]
    Length {
        operand: &'static str,
        expected: usize,
        got: usize,
    },
    /// Sizes or attributes that do not fit together (what the IR verifier would reject).
    #[error("{0}")]
    Shape(String),
    /// A data-dependent index (token id, expert index) outside its table.
    #[error("{0}")]
    OutOfRange(String),
    /// A conversion this module does not define (FP8 casts belong to `numerics`).
    #[error("{0}")]
    Unsupported(String),
}

/// Checks that `operand` holds exactly `expected` elements.
pub(crate) fn check_len(operand: &'static str, got: usize, expected: usize) -> Result<(), OpError> {
    if got == expected {
        Ok(())
    } else {
        Err(OpError::Length {
            operand,
            expected,
            got,
        })
    }
}

/// The element count of `dims`, refusing products that overflow `usize` (the verifier caps
/// tensors at 2^48 elements, so only a caller's mistake gets here).
pub(crate) fn numel(operand: &'static str, dims: &[usize]) -> Result<usize, OpError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::Shape(format!("{operand}: shape {dims:?} overflows")))
}

/// Checks that `operand` holds exactly the product of `dims` elements.
pub(crate) fn check_shape(
    operand: &'static str,
    got: usize,
    dims: &[usize],
) -> Result<(), OpError> {
    check_len(operand, got, numel(operand, dims)?)
}
