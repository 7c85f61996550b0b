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

/// The sizes of `operand`'s shape when it has rank `N`, as `usize` (the verifier caps tensors
/// at 2^48 elements, so every size fits): how each kernel's `from_shapes` reads the operand
/// shapes of its op (codegen's selection and the CPU backend alike).
pub(crate) fn ranked<const N: usize>(
    operand: &'static str,
    shape: &dsc_ir::Shape,
) -> Result<[usize; N], OpError> {
    let dims = shape.dims();
    let sizes: [u64; N] = dims
        .try_into()
        .map_err(|_| OpError::Shape(format!("{operand} must be rank {N}, got {shape}")))?;
    let mut out = [0usize; N];
    for (o, &d) in out.iter_mut().zip(&sizes) {
        *o = usize::try_from(d)
            .map_err(|_| OpError::Shape(format!("{operand}: shape {shape} overflows")))?;
    }
    Ok(out)
}
