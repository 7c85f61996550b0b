//! Errors of the reference kernels: operands whose sizes disagree with the stated shape, and
//! parameters outside what the FP8 recipe allows.

/// Why a reference kernel refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// An operand's length is not what the shape implies.
    #[error("{operand}: expected {expected} elements, got {got}")]
    Length {
        operand: &'static str,
        expected: usize,
        got: usize,
    },
    /// A tiling or promotion parameter breaks a rule of DESIGN.md §3.
    #[error("invalid kernel parameters: {0}")]
    Params(String),
}

/// Checks that `operand` holds exactly `expected` elements.
pub(crate) fn check_len(
    operand: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length {
            operand,
            expected,
            got,
        })
    }
}
