//! The `verify` pass: the verifier as a pipeline step.

use crate::{PassError, PassOptions};
use dsc_ir::{Graph, verify};

/// Fails with every verifier finding when the graph is malformed.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    verify(graph).map_err(|errors| PassError::Verify {
        pass: "verify".to_string(),
        errors,
    })
}
