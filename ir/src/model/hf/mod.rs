//! Hugging Face `config.json` → model.toml (`dsc import`, DESIGN.md §6).
//!
//! One file per family: [`deepseek`] (`deepseek_v2`, `deepseek_v3`) and [`llama`] (`llama`,
//! `mistral`, `qwen2`). Every field is either mapped onto a preset key, checked to have the one
//! value dsc computes, listed as ignored because it does not change the math (training knobs,
//! token ids, …), or an error naming it. The model.toml written is read back with
//! [`crate::model::load_model`] before it is returned, so an import always compiles.

mod config;
mod deepseek;
mod emit;
mod llama;
mod quantization;

use config::Object;
pub use emit::Toml;

/// An error in a config.json, at a 1-based line and column.
pub type ImportError = crate::LocatedError;

/// What the config does not say: the shapes of the compiled graph's input and its name.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The model's name in model.toml (the default output directory of `dsc compile`).
    pub name: String,
    pub batch: u64,
    pub seq_len: u64,
}

/// The batch and sequence length when none is given.
pub const DEFAULT_BATCH: u64 = 1;
/// See [`DEFAULT_BATCH`].
pub const DEFAULT_SEQ_LEN: u64 = 128;

/// A converted config.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The config's `model_type`.
    pub model_type: String,
    /// The model.toml text (accepted by [`crate::model::load_model`]).
    pub toml: String,
    /// One line per field that was read and does not change the math, with why.
    pub ignored: Vec<String>,
}

/// The model types dsc imports, and the family that reads each.
pub const MODEL_TYPES: [&str; 5] = ["deepseek_v3", "deepseek_v2", "llama", "mistral", "qwen2"];

/// Fields of every `PretrainedConfig` that do not change what the model computes.
const COMMON_HARMLESS: &[(&str, &str)] = &[
    ("architectures", "the Python class name"),
    ("auto_map", "remote-code class paths"),
    ("_name_or_path", "provenance"),
    ("transformers_version", "provenance"),
    (
        "torch_dtype",
        "the checkpoint's storage dtype; dsc follows [precision]",
    ),
    (
        "dtype",
        "the checkpoint's storage dtype; dsc follows [precision]",
    ),
    ("bos_token_id", "a token id, used by generation only"),
    ("eos_token_id", "a token id, used by generation only"),
    ("pad_token_id", "a token id, used by generation only"),
    ("use_cache", "KV cache for decoding; dsc runs prefill"),
    ("initializer_range", "initialization, training only"),
    ("attention_dropout", "dropout, training only"),
    (
        "max_position_embeddings",
        "the trained context; RoPE is computed for any position",
    ),
    ("output_attentions", "what the Python model returns"),
    ("output_hidden_states", "what the Python model returns"),
    ("return_dict", "what the Python model returns"),
    ("id2label", "labels for classification heads"),
    ("label2id", "labels for classification heads"),
    ("tokenizer_class", "the tokenizer"),
    ("_attn_implementation", "the Python attention kernel"),
    (
        "pretraining_tp",
        "tensor-parallel slicing of the same product",
    ),
];

/// Converts the text of a config.json into a model.toml.
pub fn import(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    // A UTF-8 byte order mark, as some Windows editors write, is not JSON but says nothing:
    // it is skipped (columns on the first line then count from after it).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ImportError {
        line: e.line().max(1),
        col: e.column().max(1),
        message: format!("invalid JSON: {e}"),
    })?;
    // serde_json keeps the last of two equal keys silently: a config that says two things is
    // refused at the second.
    if let Some(key) = duplicate_key(text) {
        let needle = format!("\"{key}\"");
        let at = text
            .match_indices(&needle)
            .map(|(i, _)| i)
            .filter(|&i| text[i + needle.len()..].trim_start().starts_with(':'))
            .nth(1)
            .unwrap_or(0);
        let (line, col) = crate::model::toml::line_col(text, at);
        return Err(ImportError {
            line,
            col,
            message: format!("`{key}` is given twice: say it once"),
        });
    }
    let Some(map) = value.as_object() else {
        return Err(ImportError {
            line: 1,
            col: 1,
            message: "config.json must be a JSON object".into(),
        });
    };
    if opts.batch == 0 || opts.seq_len == 0 {
        return Err(ImportError {
            line: 1,
            col: 1,
            message: format!(
                "batch ({}) and seq_len ({}) must be positive",
                opts.batch, opts.seq_len
            ),
        });
    }
    let root = Object::root(text, map);
    let model_type = root
        .str("model_type")?
        .ok_or_else(|| root.missing("model_type"))?;
    let mut toml = Toml::new(opts, model_type);
    let mut ignored = match model_type {
        "deepseek_v3" | "deepseek_v2" => deepseek::convert(&root, model_type, &mut toml)?,
        "llama" | "mistral" | "qwen2" => llama::convert(&root, model_type, opts, &mut toml)?,
        other => {
            return Err(root.error(
                "model_type",
                format!(
                    "unsupported `model_type` \"{other}\": dsc imports {}",
                    MODEL_TYPES.map(|m| format!("\"{m}\"")).join(", ")
                ),
            ));
        }
    };
    ignored.extend(root.ignore(COMMON_HARMLESS));
    root.finish()?;
    let origins = toml.origins().to_vec();
    let toml = toml.finish();
    // The import's promise: what it writes, dsc reads. model.toml's checks (divisibility,
    // sizes, limits) apply to what a config says too: their error points at the config field
    // the offending key was read from, with dsc's names for the fields translated.
    if let Err(e) = crate::model::load_model(&toml) {
        return Err(rejected(text, &toml, &origins, &e));
    }
    Ok(Imported {
        model_type: model_type.to_string(),
        toml,
        ignored,
    })
}

/// The error for a config whose model.toml `load_model` rejects with `e`: at the config field
/// the failing key was read from, or (for a key no field gave, a gap in the checks) at the
/// config's start with the whole model.toml.
fn rejected(
    text: &str,
    toml: &str,
    origins: &[emit::KeyOrigin],
    e: &crate::model::ModelError,
) -> ImportError {
    let Some(failing) = origins.iter().find(|o| o.line == e.line) else {
        return ImportError {
            line: 1,
            col: 1,
            message: format!(
                "the config converts to a model.toml that dsc rejects ({e}); model.toml:\n{toml}"
            ),
        };
    };
    // dsc's key names in the message, each with the config field it comes from.
    let names: Vec<String> = origins
        .iter()
        .filter(|o| o.key != o.origin.key && e.message.contains(&format!("`{}`", o.key)))
        .map(|o| format!("`{}` is `{}`", o.key, o.origin.key))
        .collect();
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(" (where {})", names.join(", "))
    };
    let (line, col) = crate::model::toml::line_col(text, failing.origin.at);
    ImportError {
        line,
        col,
        message: format!(
            "`{}`: dsc cannot build this model: {}{names}",
            failing.origin.key, e.message
        ),
    }
}

#[cfg(test)]
mod tests;

/// The first key that an object of the JSON `text` has twice, at any depth.
fn duplicate_key(text: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    /// Walks a JSON value; its result is the first duplicated key found in it.
    struct Walk;
    impl<'de> DeserializeSeed<'de> for Walk {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Walk)
        }
    }
    impl<'de> Visitor<'de> for Walk {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut first = None;
            while let Some(found) = seq.next_element_seed(Walk)? {
                first = first.or(found);
            }
            Ok(first)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut seen, mut first) = (std::collections::BTreeSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                let inner = map.next_value_seed(Walk)?;
                if !seen.insert(key.clone()) {
                    first = first.or(Some(key));
                }
                first = first.or(inner);
            }
            Ok(first)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_any(Walk)
        .ok()
        .flatten()
}
