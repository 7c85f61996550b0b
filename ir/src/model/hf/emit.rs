//! Writing model.toml text: `[model]` keys in order, then optional tables.

use super::ImportOptions;
use std::fmt::Write;

/// A model.toml under construction.
#[derive(Debug, Clone)]
pub struct Toml {
    text: String,
    /// Tables after `[model]`'s own keys (`[model.rope_scaling]`, `[precision]`).
    tables: String,
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
        };
        t.str("name", &opts.name);
        t.int("batch", opts.batch);
        t.int("seq_len", opts.seq_len);
        t
    }

    /// `key = "value"` in the current table.
    pub fn str(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.text, "{key} = {}", string(value));
    }

    /// `key = value` for an integer.
    pub fn int(&mut self, key: &str, value: u64) {
        let _ = writeln!(self.text, "{key} = {value}");
    }

    /// `key = value` for a float.
    pub fn float(&mut self, key: &str, value: f64) {
        let _ = writeln!(self.text, "{key} = {}", float(value));
    }

    /// `key = true|false`.
    pub fn bool(&mut self, key: &str, value: bool) {
        let _ = writeln!(self.text, "{key} = {value}");
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
