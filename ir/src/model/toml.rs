//! A small, strict reader over `toml_edit`'s spanned document.
//!
//! `toml_edit` keeps the byte span of every key and value when a document is parsed (and not
//! edited), so each typed getter here can report the line:col of the offending key or value.
//! The getters never guess: a wrong type is an error, a missing required key is an error, and
//! `check_keys` rejects keys a table does not know.

use super::ModelError;
use toml_edit::{Item, TableLike, Value};

/// A byte offset into the source, kept so that errors can point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct At(pub usize);

/// A value with the position of the TOML value it was read from.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<T> {
    pub value: T,
    pub at: At,
}

/// The source text, which turns byte offsets into 1-based line:col (columns count characters).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    text: &'a str,
}

impl<'a> Source<'a> {
    /// Wraps the text the document was parsed from.
    pub fn new(text: &'a str) -> Self {
        Source { text }
    }

    /// An error at `at`.
    pub fn error(&self, at: At, message: impl Into<String>) -> ModelError {
        let (line, col) = line_col(self.text, at.0);
        ModelError {
            line,
            col,
            message: message.into(),
        }
    }
}

/// 1-based line and character column of byte `offset` (clamped into the text).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses `text`, mapping a syntax error to the position `toml_edit` reports.
pub fn parse(text: &str) -> Result<toml_edit::Document<&str>, ModelError> {
    toml_edit::Document::parse(text).map_err(|e| {
        let at = At(e.span().map_or(0, |s| s.start));
        let message = e.message().trim().replace('\n', "; ");
        Source::new(text).error(at, format!("invalid TOML: {message}"))
    })
}

fn start(span: Option<std::ops::Range<usize>>) -> Option<At> {
    span.map(|s| At(s.start))
}

/// "an integer", "a string", … for the type found where another was expected.
fn found(item: &Item) -> String {
    let name = match item {
        Item::Value(v) => v.type_name(),
        other => other.type_name(),
    };
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// One table of the document (a `[header]` table, an inline table, or the root), with what
/// errors call it and where to point when a key is missing.
#[derive(Clone)]
pub struct Table<'a> {
    src: Source<'a>,
    inner: &'a dyn TableLike,
    at: At,
    what: String,
}

impl<'a> Table<'a> {
    /// The document's root table.
    pub fn root(src: Source<'a>, doc: &'a toml_edit::Document<&'a str>) -> Self {
        Table {
            src,
            inner: doc.as_table(),
            at: At(0),
            what: "the file".into(),
        }
    }

    /// The same table under another name in errors (`[[op]] `up``).
    pub fn named(mut self, what: String) -> Self {
        self.what = what;
        self
    }

    /// The position of the table's header (where missing-key errors point).
    pub fn at(&self) -> At {
        self.at
    }

    /// An error at `at`.
    pub fn error(&self, at: At, message: impl Into<String>) -> ModelError {
        self.src.error(at, message)
    }

    /// The 1-based line:col of `at`, for messages that point at a second place.
    pub fn line_col(&self, at: At) -> String {
        let (line, col) = line_col(self.src.text, at.0);
        format!("{line}:{col}")
    }

    fn entry(&self, key: &str) -> Option<(At, &'a Item)> {
        let (k, item) = self.inner.get_key_value(key)?;
        Some((start(k.span()).unwrap_or(self.at), item))
    }

    /// Where the value of `key` is (its key's position when the value has no span).
    pub fn value_at(&self, key: &str) -> Option<At> {
        let (k, item) = self.entry(key)?;
        Some(start(item.span()).unwrap_or(k))
    }

    /// The keys in document order, with their positions.
    pub fn keys(&self) -> Vec<(&'a str, At)> {
        let inner: &'a dyn TableLike = self.inner;
        inner
            .iter()
            .map(|(k, _)| {
                let at = self.entry(k).map_or(self.at, |(at, _)| at);
                (k, at)
            })
            .collect()
    }

    /// The error for a key this table does not take.
    pub fn unknown_key(&self, key: &str, at: At, allowed: &[&str]) -> ModelError {
        self.error(
            at,
            format!(
                "unknown key `{key}` in {} (allowed: {})",
                self.what,
                allowed.join(", ")
            ),
        )
    }

    /// Rejects the first key not in `allowed`, listing the allowed ones.
    pub fn check_keys(&self, allowed: &[&str]) -> Result<(), ModelError> {
        match self.keys().into_iter().find(|(k, _)| !allowed.contains(k)) {
            Some((key, at)) => Err(self.unknown_key(key, at, allowed)),
            None => Ok(()),
        }
    }

    /// The error for a required key that is absent.
    pub fn missing(&self, key: &str) -> ModelError {
        self.error(self.at, format!("missing key `{key}` in {}", self.what))
    }

    /// `value`, or the missing-key error for `key`.
    pub fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, ModelError> {
        value.ok_or_else(|| self.missing(key))
    }

    /// The value of `key` converted by `get`, or an error saying it must be `want`.
    fn typed<T>(
        &self,
        key: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Spanned<T>>, ModelError> {
        let Some((key_at, item)) = self.entry(key) else {
            return Ok(None);
        };
        let at = start(item.span()).unwrap_or(key_at);
        match item.as_value().and_then(&get) {
            Some(value) => Ok(Some(Spanned { value, at })),
            None => Err(self.error(at, format!("`{key}` must be {want}, found {}", found(item)))),
        }
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Result<Option<Spanned<&'a str>>, ModelError> {
        self.typed(key, "a string", Value::as_str)
    }

    /// An integer value.
    pub fn int(&self, key: &str) -> Result<Option<Spanned<i64>>, ModelError> {
        self.typed(key, "an integer", Value::as_integer)
    }

    /// A boolean value.
    pub fn bool(&self, key: &str) -> Result<Option<Spanned<bool>>, ModelError> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// A finite float value; TOML integers are accepted (`theta = 10000`).
    pub fn float(&self, key: &str) -> Result<Option<Spanned<f64>>, ModelError> {
        let v = self.typed(key, "a number", |v| {
            v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
        })?;
        if let Some(f) = v
            && !f.value.is_finite()
        {
            return Err(self.error(f.at, format!("`{key}` must be finite, not {}", f.value)));
        }
        Ok(v)
    }

    /// A float that must be positive (eps, theta, scales).
    pub fn positive_float(&self, key: &str) -> Result<Option<Spanned<f64>>, ModelError> {
        let v = self.float(key)?;
        if let Some(f) = v
            && f.value <= 0.0
        {
            return Err(self.error(f.at, format!("`{key}` must be positive, not {}", f.value)));
        }
        Ok(v)
    }

    /// An integer that must be positive: a size.
    pub fn size(&self, key: &str) -> Result<Option<Spanned<u64>>, ModelError> {
        self.bounded(key, 1, "positive")
    }

    /// An integer that must not be negative: a count that may be zero.
    pub fn count(&self, key: &str) -> Result<Option<Spanned<u64>>, ModelError> {
        self.bounded(key, 0, "zero or positive")
    }

    fn bounded(&self, key: &str, min: i64, what: &str) -> Result<Option<Spanned<u64>>, ModelError> {
        let Some(v) = self.int(key)? else {
            return Ok(None);
        };
        if v.value < min {
            return Err(self.error(v.at, format!("`{key}` must be {what}, not {}", v.value)));
        }
        Ok(Some(Spanned {
            value: v.value as u64,
            at: v.at,
        }))
    }

    /// An array whose elements `get` converts; a wrong element is reported where it stands.
    fn array<T>(
        &self,
        key: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Spanned<Vec<Spanned<T>>>>, ModelError> {
        let Some(arr) = self.typed(key, &format!("an array of {want}"), Value::as_array)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(arr.value.len());
        for (i, v) in arr.value.iter().enumerate() {
            let at = start(v.span()).unwrap_or(arr.at);
            match get(v) {
                Some(value) => out.push(Spanned { value, at }),
                None => {
                    return Err(self.error(
                        at,
                        format!(
                            "`{key}` must be an array of {want}; element {} is {}",
                            i + 1,
                            found(&Item::Value(v.clone()))
                        ),
                    ));
                }
            }
        }
        Ok(Some(Spanned {
            value: out,
            at: arr.at,
        }))
    }

    /// An array of strings.
    pub fn strs(&self, key: &str) -> Result<Option<Spanned<Vec<Spanned<&'a str>>>>, ModelError> {
        self.array(key, "strings", Value::as_str)
    }

    /// An array of integers.
    pub fn ints(&self, key: &str) -> Result<Option<Spanned<Vec<Spanned<i64>>>>, ModelError> {
        self.array(key, "integers", Value::as_integer)
    }

    /// A sub-table (`[a.b]` or an inline table) called `what` in errors.
    pub fn table(&self, key: &str, what: &str) -> Result<Option<Table<'a>>, ModelError> {
        let Some((key_at, item)) = self.entry(key) else {
            return Ok(None);
        };
        let Some(inner) = item.as_table_like() else {
            let at = start(item.span()).unwrap_or(key_at);
            return Err(self.error(
                at,
                format!("`{key}` must be a table, found {}", found(item)),
            ));
        };
        Ok(Some(Table {
            src: self.src,
            inner,
            // An implicit table (`[[precision.override]]` without `[precision]`) has no header.
            at: start(item.span()).unwrap_or(key_at),
            what: what.to_string(),
        }))
    }

    /// An array of tables (`[[key]]`, or an array of inline tables), empty when absent.
    pub fn tables(&self, key: &str, what: &str) -> Result<Vec<Table<'a>>, ModelError> {
        let Some((key_at, item)) = self.entry(key) else {
            return Ok(Vec::new());
        };
        let at_of = |item: &Item| start(item.span()).unwrap_or(key_at);
        let wrap = |inner: &'a dyn TableLike, at| Table {
            src: self.src,
            inner,
            at,
            what: what.to_string(),
        };
        if let Some(aot) = item.as_array_of_tables() {
            return Ok(aot
                .iter()
                .map(|t| wrap(t, start(t.span()).unwrap_or(key_at)))
                .collect());
        }
        if let Some(arr) = item.as_array() {
            let mut out = Vec::with_capacity(arr.len());
            for v in arr.iter() {
                let at = start(v.span()).unwrap_or(key_at);
                match v.as_inline_table() {
                    Some(t) => out.push(wrap(t, at)),
                    None => {
                        return Err(self.error(
                            at,
                            format!("`{key}` must be an array of tables, found an element of another type"),
                        ));
                    }
                }
            }
            return Ok(out);
        }
        Err(self.error(
            at_of(item),
            format!(
                "`{key}` must be an array of tables ([[{key}]]), found {}",
                found(item)
            ),
        ))
    }
}
