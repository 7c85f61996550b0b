//! The one error type of dsc's text front ends: a message at a 1-based line and column of the
//! input. The textual IR's parser ([`crate::text::ParseError`]), the model.toml reader
//! ([`crate::model::ModelError`]) and the config.json importer
//! ([`crate::model::hf::ImportError`]) all return it, under those names; the `dsc` binary
//! renders it one way (`error: FILE:LINE:COL: message`, the source line and a caret).

/// An error at a 1-based line and column of a text input. `Display` writes
/// `line:col: message`; the input's file name is the caller's to add.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct LocatedError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters (a tab is one).
    pub col: usize,
    /// What is wrong, without the position.
    pub message: String,
}

impl LocatedError {
    /// An error at `line:col` (1-based).
    pub fn new(line: usize, col: usize, message: impl Into<String>) -> Self {
        LocatedError {
            line,
            col,
            message: message.into(),
        }
    }
}
