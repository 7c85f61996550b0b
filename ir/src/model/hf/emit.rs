//! Writing model.toml text: `[model]` keys in order, then optional tables.

use super::ImportOptions;
use std::fmt::Write;

/// A model.toml under construction.
#[derive(Debug, Clone)]
pub struct Toml {
    text: String,
    /// Tables after `[model]`'s own keys (`[model.rope_scaling]`, `[precision]`).
    tables: String,
    /// The config field the next `[model]` key is read from, set by [`Toml::from`].
    pending: Option<Origin>,
    /// The config field of each `[model]` key that has one.
    origins: Vec<KeyOrigin>,
}

/// A config.json field: its key and the byte offset of `"key"` in the config's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub key: String,
    pub at: usize,
}

/// A `[model]` key of the model.toml, its 1-based line, and the config field it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrigin {
    pub line: usize,
    pub key: String,
    pub origin: Origin,
}

/// A TOML float that reads back as the same f64 (`2.5`, `1e-6`, `10000.0`).
fn float(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Toml {
    /// Starts `[model]` with the name, batch and seq_len of `opts`.
    pub fn new(opts: &ImportOptions, model_type: &str) -> Self {
        let mut t = Toml {
            text: format!(
                "# Written by `dsc import` from a Hugging Face config (model_type \"{model_type}\").\n\
                 [model]\n"
            ),
            tables: String::new(),
            pending: None,
            origins: Vec::new(),
        };
        t.str("name", &opts.name);
        t.int("batch", opts.batch);
        t.int("seq_len", opts.seq_len);
        t
    }

    /// Says which config field the next key is read from, so that an error model.toml's
    /// checks find in it points at that field of config.json.
    pub fn from(&mut self, origin: Option<Origin>) -> &mut Self {
        self.pending = origin;
        self
    }

    /// `key = value` (already TOML) in `[model]`, with the pending origin.
    fn line(&mut self, key: &str, value: &str) {
        if let Some(origin) = self.pending.take() {
            self.origins.push(KeyOrigin {
                line: self.text.lines().count() + 1,
                key: key.to_string(),
                origin,
            });
        }
        let _ = writeln!(self.text, "{key} = {value}");
    }

    /// `key = "value"` in the current table.
    pub fn str(&mut self, key: &str, value: &str) {
        self.line(key, &string(value));
    }

    /// `key = value` for an integer.
    pub fn int(&mut self, key: &str, value: u64) {
        self.line(key, &value.to_string());
    }

    /// `key = value` for a float.
    pub fn float(&mut self, key: &str, value: f64) {
        self.line(key, &float(value));
    }

    /// `key = true|false`.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.line(key, &value.to_string());
    }

    /// The config field of each `[model]` key that has one.
    pub fn origins(&self) -> &[KeyOrigin] {
        &self.origins
    }

    /// Appends a table `[name]` of `(key, value)` pairs already written as TOML values.
    pub fn table(&mut self, name: &str, entries: &[(&str, TomlValue)]) {
        let _ = writeln!(self.tables, "\n[{name}]");
        for (k, v) in entries {
            let v = match v {
                TomlValue::Str(s) => string(s),
                TomlValue::Int(i) => i.to_string(),
                TomlValue::Float(f) => float(*f),
            };
            let _ = writeln!(self.tables, "{k} = {v}");
        }
    }

    /// The whole file.
    pub fn finish(self) -> String {
        self.text + &self.tables
    }
}

/// A value of [`Toml::table`].
#[derive(Debug, Clone)]
pub enum TomlValue {
    Str(String),
    Int(u64),
    Float(f64),
}
