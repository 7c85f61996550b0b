//! Errors of passes and of the pass manager.

use dsc_ir::VerifyErrors;

/// What went wrong while running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A pipeline string named a pass that does not exist.
    #[error("unknown pass `{name}` (known passes: {known})")]
    UnknownPass { name: String, known: String },
    /// A pipeline string was empty or had an empty entry.
    #[error("empty pass name in pipeline `{pipeline}`")]
    EmptyPassName { pipeline: String },
    /// The graph failed verification after a pass (or in the `verify` pass itself).
    #[error("verification failed after pass `{pass}`:\n{errors}")]
    Verify { pass: String, errors: VerifyErrors },
    /// A pass could not transform an op.
    #[error("pass `{pass}`: op `{op}`: {message}")]
    Op {
        pass: &'static str,
        op: String,
        message: String,
    },
    /// A pass failed as a whole.
    #[error("pass `{pass}`: {message}")]
    Failed { pass: &'static str, message: String },
}
