//! User-facing errors: a message with an optional source location, rendered like rustc's
//! (`error: path:line:col: message`, then the source line and a caret).

use std::fmt;
use std::path::{Path, PathBuf};

/// A located problem in an input file.
#[derive(Debug, Clone)]
pub struct SourceLocation {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    /// The text of the offending line, for the snippet.
    pub line_text: Option<String>,
}

/// An error the binary reports with `error:` and exit code 1.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<SourceLocation>,
}

impl Diagnostic {
    /// An error without a source location (the message names the op or file).
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
        }
    }

    /// A front end's error (textual IR, model.toml, config.json: a [`dsc_ir::LocatedError`]
    /// at a 1-based `line:col`) in `source`, read from `path`.
    pub fn located(path: &Path, source: &str, e: dsc_ir::LocatedError) -> Self {
        Diagnostic {
            message: e.message,
            location: Some(SourceLocation {
                path: path.to_path_buf(),
                line: e.line,
                col: e.col,
                line_text: source
                    .lines()
                    .nth(e.line.saturating_sub(1))
                    .map(str::to_string),
            }),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(loc) = &self.location else {
            return write!(f, "error: {}", self.message);
        };
        writeln!(
            f,
            "error: {}:{}:{}: {}",
            loc.path.display(),
            loc.line,
            loc.col,
            self.message
        )?;
        if let Some(text) = &loc.line_text {
            let gutter = loc.line.to_string().len();
            // Tabs become spaces so the caret lines up.
            let text = text.replace('\t', " ");
            let caret = loc.col.clamp(1, text.chars().count() + 1);
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", loc.line, text)?;
            write!(f, "{:gutter$} | {}^", "", " ".repeat(caret - 1))?;
        }
        Ok(())
    }
}

/// Reads a text input file, with errors for a missing, unreadable, binary or non-UTF-8 file.
pub fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", path.display())))?;
    if bytes.contains(&0) {
        return Err(Diagnostic::new(format!(
            "{} is a binary file, not text",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Diagnostic::new(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
