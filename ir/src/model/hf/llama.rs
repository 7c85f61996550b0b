//! `llama`, `mistral` and `qwen2` configs → `architecture = "llama"`: GQA attention with
//! half-split RoPE, a SwiGLU MLP, an optionally tied head.
//!
//! Qwen2's q/k/v projections always carry biases (`model.layers.{i}.self_attn.{q,k,v}_proj.bias`,
//! whatever `attention_bias` says; o_proj has none): a qwen2 config sets the preset's
//! `attention_bias = true`. Llama's and Mistral's `attention_bias` would put one on o_proj as
//! well, which the preset does not express, so for them it must be false.

use super::config::{Object, rope_fields};
use super::emit::{Toml, TomlValue};
use super::{ImportError, ImportOptions, quantization};
use crate::rope_scaling::attr;
use serde_json::json;

/// Fields of these configs that do not change what inference computes.
const HARMLESS: &[(&str, &str)] = &[
    ("max_window_layers", "applies only with use_sliding_window"),
    ("rope_scaling_type", "unused by transformers"),
];

/// Converts a llama-family config into `[model]` keys (and tables).
pub fn convert(
    root: &Object,
    model_type: &str,
    opts: &ImportOptions,
    toml: &mut Toml,
) -> Result<Vec<String>, ImportError> {
    toml.str("architecture", "llama");
    root.require_value("hidden_act", &json!("silu"), "dsc's MLPs are SwiGLU (silu)")?;
    let qwen2 = model_type == "qwen2";
    let mut ignored = Vec::new();
    if qwen2 {
        ignored.extend(root.ignore(&[(
            "attention_bias",
            "Qwen2's q/k/v projections always have a bias, its o_proj never",
        )]));
    } else {
        root.require_value(
            "attention_bias",
            &json!(false),
            "dsc's llama preset has a bias on q/k/v only (Qwen2's), not on o_proj",
        )?;
    }
    root.require_value("mlp_bias", &json!(false), "dsc's MLPs have no bias")?;

    let dim = root.req_uint("hidden_size")?;
    let heads = root.req_uint("num_attention_heads")?;
    toml.from(root.origin("hidden_size")).int("dim", dim);
    toml.from(root.origin("num_hidden_layers"))
        .int("n_layers", root.req_uint("num_hidden_layers")?);
    toml.from(root.origin("num_attention_heads"))
        .int("n_heads", heads);
    let kv_heads = root.uint("num_key_value_heads")?;
    toml.from(root.origin(if kv_heads.is_some() {
        "num_key_value_heads"
    } else {
        "num_attention_heads"
    }))
    .int("n_kv_heads", kv_heads.unwrap_or(heads));
    toml.from(root.origin("intermediate_size"))
        .int("inter_dim", root.req_uint("intermediate_size")?);
    toml.from(root.origin("vocab_size"))
        .int("vocab_size", root.req_uint("vocab_size")?);
    let (theta, scaling) = rope_fields(root)?;
    toml.from(root.origin("rope_theta"))
        .float("rope_theta", theta);
    toml.from(root.origin("rms_norm_eps")).float(
        "rms_norm_eps",
        root.float("rms_norm_eps")?
            .ok_or_else(|| root.missing("rms_norm_eps"))?,
    );
    toml.bool(
        "tie_embeddings",
        root.bool("tie_word_embeddings")?.unwrap_or(false),
    );
    if let Some(head_dim) = root.uint("head_dim")?
        && heads > 0
        && head_dim * heads != dim
    {
        return Err(root.unsupported(
            "head_dim",
            &format!(
                "dsc's llama preset uses head_dim = hidden_size / num_attention_heads = {}",
                dim / heads
            ),
        ));
    }
    if qwen2 {
        toml.bool("attention_bias", true);
    }
    ignored.extend(sliding_window(root, model_type, opts)?);
    rope_scaling(scaling, toml)?;
    ignored.extend(quantization::convert(root, toml)?);
    ignored.extend(root.ignore(HARMLESS));
    Ok(ignored)
}

/// Sliding-window attention changes nothing when the window covers the whole sequence.
fn sliding_window(
    root: &Object,
    model_type: &str,
    opts: &ImportOptions,
) -> Result<Vec<String>, ImportError> {
    // Qwen2 applies its window only with `use_sliding_window`; Mistral whenever it is set.
    let mut applies = if model_type == "qwen2" {
        root.bool("use_sliding_window")?.unwrap_or(false)
    } else {
        true
    };
    let mut notes = Vec::new();
    // transformers 5 also writes the per-layer `layer_types` (Qwen2: sliding from layer
    // `max_window_layers` on, when `use_sliding_window`).
    if let Some(types) = root.get("layer_types") {
        let kinds: Option<Vec<&str>> = types
            .as_array()
            .and_then(|a| a.iter().map(serde_json::Value::as_str).collect());
        let Some(kinds) = kinds.filter(|k| {
            k.iter()
                .all(|&t| t == "full_attention" || t == "sliding_attention")
        }) else {
            return Err(root.unsupported(
                "layer_types",
                "dsc knows \"full_attention\" and \"sliding_attention\" layers only",
            ));
        };
        let sliding = kinds.contains(&"sliding_attention");
        applies &= sliding;
        notes.push(format!(
            "`layer_types` ({})",
            if sliding {
                "sliding layers attend like full ones: the window covers the sequence"
            } else {
                "every layer is full attention"
            }
        ));
    }
    let window = root.uint("sliding_window")?;
    let note =
        match window {
            Some(w) if applies && w < opts.seq_len => return Err(root.unsupported(
                "sliding_window",
                &format!(
                    "dsc's attention is fully causal; a window narrower than seq_len ({}) changes \
                 the result",
                    opts.seq_len
                ),
            )),
            Some(w) if applies => Some(format!(
                "`sliding_window` = {w} (it covers the whole sequence of {})",
                opts.seq_len
            )),
            Some(w) => Some(format!("`sliding_window` = {w} (no layer uses it)")),
            None if applies && root.has("layer_types") => {
                return Err(
                    root.unsupported("layer_types", "sliding layers without a `sliding_window`")
                );
            }
            None => None,
        };
    notes.extend(note);
    Ok(notes)
}

/// `rope_scaling` (or `rope_parameters`) of type llama3 (`rope_type` or `type`) →
/// `[model.rope_scaling]`.
fn rope_scaling(r: Option<Object>, toml: &mut Toml) -> Result<(), ImportError> {
    let Some(r) = r else {
        return Ok(());
    };
    let key = if r.has("rope_type") {
        "rope_type"
    } else {
        "type"
    };
    match r.str(key)? {
        Some("llama3") => {}
        Some("default") => {
            r.ignore(&[("factor", "rope_type \"default\" does not scale")]);
            return r.finish();
        }
        _ => {
            return Err(r.unsupported(key, "llama models scale RoPE with \"llama3\" only"));
        }
    }
    // Read both spellings so that `finish` sees neither as unknown.
    let _ = r.str("type")?;
    let _ = r.str("rope_type")?;
    let mut entries = vec![("type", TomlValue::Str(attr::LLAMA3.into()))];
    let factor = r.float("factor")?.ok_or_else(|| r.missing("factor"))?;
    entries.push(("factor", TomlValue::Float(factor)));
    let orig = r
        .uint("original_max_position_embeddings")?
        .ok_or_else(|| r.missing("original_max_position_embeddings"))?;
    entries.push(("original_max_position_embeddings", TomlValue::Int(orig)));
    for key in ["low_freq_factor", "high_freq_factor"] {
        let v = r.float(key)?.ok_or_else(|| r.missing(key))?;
        entries.push((key, TomlValue::Float(v)));
    }
    r.finish()?;
    toml.table("model.rope_scaling", &entries);
    Ok(())
}
