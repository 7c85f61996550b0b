//! A strict reader over a Hugging Face `config.json` object.
//!
//! `serde_json` keeps no positions, so an error finds its key in the source text: the first
//! `"key":` at or after the start of the enclosing object's key. Every key read is marked; what
//! is left at the end is either a field known not to change the math (listed as ignored) or an
//! error, because dsc cannot know what an unknown field does to the numbers.

use super::ImportError;
use super::emit::Origin;
use crate::model::toml::line_col;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// One JSON object of the config (the root, `rope_scaling`, `quantization_config`).
pub struct Object<'a> {
    text: &'a str,
    map: &'a Map<String, Value>,
    /// Where to start looking for this object's keys in `text`.
    base: usize,
    /// How messages name the object: `config.json`, `rope_scaling`.
    pub what: String,
    used: RefCell<BTreeSet<&'a str>>,
}

/// A JSON value for messages: `"silu"`, `true`, `[128, 128]`.
pub fn show(v: &Value) -> String {
    v.to_string()
}

impl<'a> Object<'a> {
    /// The root object of `text`, which `root` was parsed from.
    pub fn root(text: &'a str, root: &'a Map<String, Value>) -> Self {
        Object {
            text,
            map: root,
            base: 0,
            what: "config.json".into(),
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The byte offset of `"key"` followed by `:`, searched from this object's start.
    fn find(&self, key: &str) -> Option<usize> {
        let needle = format!("\"{key}\"");
        let mut from = self.base;
        while let Some(i) = self.text.get(from..)?.find(&needle) {
            let at = from + i;
            let rest = self.text[at + needle.len()..].trim_start();
            if rest.starts_with(':') {
                return Some(at);
            }
            from = at + needle.len();
        }
        None
    }

    /// An error at `key` (at the object's start when the key cannot be found).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ImportError {
        let at = self.find(key).unwrap_or(self.base);
        let (line, col) = line_col(self.text, at);
        ImportError {
            line,
            col,
            message: message.into(),
        }
    }

    /// The value of `key`, marked as read; JSON `null` reads as absent (HF writes `null` for
    /// "not set").
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.used.borrow_mut().insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// Whether `key` is present and not null (does not mark it).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn typed<T>(
        &self,
        key: &str,
        want: &str,
        get: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, ImportError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        get(v).map(Some).ok_or_else(|| {
            self.error(
                key,
                format!("`{key}` in {} must be {want}, not {}", self.what, show(v)),
            )
        })
    }

    /// A non-negative integer.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, ImportError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// A required non-negative integer.
    pub fn req_uint(&self, key: &str) -> Result<u64, ImportError> {
        self.uint(key)?.ok_or_else(|| self.missing(key))
    }

    /// A number.
    pub fn float(&self, key: &str) -> Result<Option<f64>, ImportError> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ImportError> {
        self.typed(key, "a string", Value::as_str)
    }

    /// A nested object, read with the same rules.
    pub fn object(&self, key: &str) -> Result<Option<Object<'a>>, ImportError> {
        let Some(map) = self.typed(key, "an object", Value::as_object)? else {
            return Ok(None);
        };
        Ok(Some(Object {
            text: self.text,
            map,
            base: self.find(key).unwrap_or(self.base),
            what: format!("`{key}`"),
            used: RefCell::new(BTreeSet::new()),
        }))
    }

    /// Where `key` is in the config, for a model.toml key read from it (`None` when absent).
    pub fn origin(&self, key: &str) -> Option<Origin> {
        Some(Origin {
            key: key.to_string(),
            at: self.find(key)?,
        })
    }

    /// The error for a required key that is absent.
    pub fn missing(&self, key: &str) -> ImportError {
        self.error(key, format!("missing `{key}` in {}", self.what))
    }

    /// The error for a field whose value dsc cannot compute with.
    pub fn unsupported(&self, key: &str, why: &str) -> ImportError {
        let value = self.map.get(key).map_or_else(String::new, show);
        self.error(
            key,
            format!("unsupported `{key}` = {value} in {}: {why}", self.what),
        )
    }

    /// Requires `key`, when present, to have the value `want` (the only one dsc computes);
    /// absent means the HF default, which is `want`.
    pub fn require_value(&self, key: &str, want: &Value, why: &str) -> Result<(), ImportError> {
        match self.get(key) {
            Some(v) if v != want => Err(self.unsupported(key, why)),
            _ => Ok(()),
        }
    }

    /// Marks the keys of `harmless` as read, returning a note for each one present:
    /// `key = value` and why it does not change the math.
    pub fn ignore(&self, harmless: &[(&str, &str)]) -> Vec<String> {
        let mut notes = Vec::new();
        for &(key, why) in harmless {
            if let Some((k, v)) = self.map.get_key_value(key) {
                self.used.borrow_mut().insert(k.as_str());
                notes.push(format!("`{key}` = {} ({why})", short(v)));
            }
        }
        notes
    }

    /// Fails on the first key nobody read: dsc does not know what it does to the math.
    pub fn finish(&self) -> Result<(), ImportError> {
        let used = self.used.borrow();
        match self.map.keys().find(|k| !used.contains(k.as_str())) {
            Some(key) => Err(self.error(
                key,
                format!(
                    "unknown field `{key}` = {} in {}: dsc does not know whether it changes \
                     the math, so it does not guess",
                    short(&self.map[key]),
                    self.what
                ),
            )),
            None => Ok(()),
        }
    }
}

/// A value for a note, cut short when long (`id2label`, `auto_map`).
fn short(v: &Value) -> String {
    let s = show(v);
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The RoPE fields of a config: `rope_theta` plus an optional `rope_scaling` object
/// (transformers 4), or one `rope_parameters` object that holds `rope_theta`, `rope_type` and
/// the scaling fields (transformers 5 writes this). Returns the base and the object to read the
/// scaling from (`rope_parameters` always, when present: its `rope_theta` is already read).
pub fn rope_fields<'a>(root: &Object<'a>) -> Result<(f64, Option<Object<'a>>), ImportError> {
    let top_theta = root.float("rope_theta")?;
    let Some(params) = root.object("rope_parameters")? else {
        return Ok((top_theta.unwrap_or(10000.0), root.object("rope_scaling")?));
    };
    // `get` marks the key read: a `null` beside `rope_parameters` is harmless.
    if root.get("rope_scaling").is_some() {
        return Err(root.error(
            "rope_scaling",
            "`rope_scaling` and `rope_parameters` are both given: transformers 5 reads only \
             `rope_parameters`; keep one",
        ));
    }
    let theta = match (params.float("rope_theta")?, top_theta) {
        (Some(inner), Some(top)) if inner != top => {
            return Err(root.error(
                "rope_theta",
                format!(
                    "`rope_theta` = {top} disagrees with `rope_parameters.rope_theta` = {inner}"
                ),
            ));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => 10000.0,
    };
    Ok((theta, Some(params)))
}
