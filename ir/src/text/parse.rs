//! Parses the text format (placeholder until the parser lands).

use crate::Graph;

/// A parse error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses text into a graph.
pub fn parse(_text: &str) -> Result<Graph, ParseError> {
    Err(ParseError {
        line: 1,
        col: 1,
        message: "not yet implemented".into(),
    })
}
