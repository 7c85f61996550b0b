//! `deepseek_v2` and `deepseek_v3` configs → `architecture = "deepseek"`.
//!
//! The MoE gate follows DeepSeek's own modeling code, which these checkpoints ship with:
//! - `topk_method = "greedy"`: top-k over all experts (groups play no part);
//!   `"group_limited_greedy"`: groups scored by their best expert; `"noaux_tc"`: selection by
//!   `score + e_score_correction_bias`, groups scored by the sum of their two best.
//! - the top-k weights are normalized when `norm_topk_prob` and `num_experts_per_tok > 1`;
//!   V3 then multiplies by `routed_scaling_factor`, V2 only when it did not normalize.

use super::config::{Object, rope_fields};
use super::emit::{Toml, TomlValue};
use super::{ImportError, quantization};
use crate::rope_scaling::attr;
use serde_json::json;

/// Fields of DeepSeek configs that do not change what inference computes.
const HARMLESS: &[(&str, &str)] = &[
    ("aux_loss_alpha", "load-balancing loss, training only"),
    ("seq_aux", "load-balancing loss, training only"),
    (
        "ep_size",
        "expert parallelism: where experts run, not what they compute",
    ),
    (
        "num_nextn_predict_layers",
        "multi-token-prediction layers; their checkpoint tensors are ignored on load",
    ),
    (
        "output_router_logits",
        "whether the Python model returns router logits (auxiliary loss)",
    ),
    (
        "num_key_value_heads",
        "MLA shares one compressed KV across heads; the field is unused",
    ),
];

/// Converts a DeepSeek config into `[model]` keys (and tables).
pub fn convert(
    root: &Object,
    model_type: &str,
    toml: &mut Toml,
) -> Result<Vec<String>, ImportError> {
    let v3 = model_type == "deepseek_v3";
    toml.str("architecture", "deepseek");
    root.require_value("hidden_act", &json!("silu"), "dsc's MLPs are SwiGLU (silu)")?;
    root.require_value(
        "attention_bias",
        &json!(false),
        "dsc's MLA projections have no bias",
    )?;
    root.require_value(
        "tie_word_embeddings",
        &json!(false),
        "DeepSeek's head is its own `lm_head.weight`",
    )?;
    root.require_value(
        "rope_interleave",
        &json!(true),
        "DeepSeek's RoPE rotates interleaved pairs",
    )?;

    let layers = root.req_uint("num_hidden_layers")?;
    for (key, dsc) in [
        ("vocab_size", "vocab_size"),
        ("hidden_size", "dim"),
        ("num_hidden_layers", "n_layers"),
        ("intermediate_size", "inter_dim"),
        ("num_attention_heads", "n_heads"),
        ("kv_lora_rank", "kv_lora_rank"),
        ("qk_nope_head_dim", "qk_nope_head_dim"),
        ("qk_rope_head_dim", "qk_rope_head_dim"),
        ("v_head_dim", "v_head_dim"),
    ] {
        toml.from(root.origin(key)).int(dsc, root.req_uint(key)?);
    }
    derived_head_dims(root)?;
    root.require_value("mlp_bias", &json!(false), "dsc's MLPs have no bias")?;
    toml.from(root.origin("q_lora_rank"))
        .int("q_lora_rank", root.uint("q_lora_rank")?.unwrap_or(0));
    toml.from(root.origin("rms_norm_eps")).float(
        "rms_norm_eps",
        root.float("rms_norm_eps")?
            .ok_or_else(|| root.missing("rms_norm_eps"))?,
    );
    let (theta, scaling) = rope_fields(root)?;
    toml.from(root.origin("rope_theta"))
        .float("rope_theta", theta);

    let mut ignored = Vec::new();
    match root.uint("n_routed_experts")? {
        None => {
            // No routed experts: every layer is dense, and the MoE fields say nothing.
            toml.int("n_dense_layers", layers);
            ignored.extend(root.ignore(MOE_FIELDS_WITHOUT_EXPERTS));
        }
        Some(routed) => moe(root, v3, layers, routed, toml, &mut ignored)?,
    }
    rope_scaling(scaling, toml)?;
    ignored.extend(quantization::convert(root, toml)?);
    ignored.extend(root.ignore(HARMLESS));
    Ok(ignored)
}

/// The sizes transformers 5 derives and writes into the config: `head_dim`, which its DeepSeek
/// rotary embedding reads as the RoPE dimension (set to `qk_rope_head_dim`), and `qk_head_dim`
/// (`qk_nope_head_dim + qk_rope_head_dim`). Any other value changes the math.
fn derived_head_dims(root: &Object) -> Result<(), ImportError> {
    let rope = root.req_uint("qk_rope_head_dim")?;
    let nope = root.req_uint("qk_nope_head_dim")?;
    if let Some(h) = root.uint("head_dim")?
        && h != rope
    {
        return Err(root.unsupported(
            "head_dim",
            &format!(
                "transformers computes DeepSeek's RoPE frequencies over `head_dim`; dsc rotates \
                 `qk_rope_head_dim` = {rope} dimensions"
            ),
        ));
    }
    if let Some(q) = root.uint("qk_head_dim")?
        && q != nope + rope
    {
        return Err(root.unsupported(
            "qk_head_dim",
            &format!(
                "it must be `qk_nope_head_dim + qk_rope_head_dim` = {}",
                nope + rope
            ),
        ));
    }
    Ok(())
}

/// The MoE fields, meaningless when `n_routed_experts` is null.
const MOE_FIELDS_WITHOUT_EXPERTS: &[(&str, &str)] = &[
    (
        "first_k_dense_replace",
        "no routed experts: every layer is dense",
    ),
    ("moe_layer_freq", "no routed experts: every layer is dense"),
    (
        "moe_intermediate_size",
        "no routed experts: every layer is dense",
    ),
    (
        "n_shared_experts",
        "no routed experts: every layer is dense",
    ),
    (
        "num_experts_per_tok",
        "no routed experts: every layer is dense",
    ),
    ("n_group", "no routed experts: every layer is dense"),
    ("topk_group", "no routed experts: every layer is dense"),
    ("topk_method", "no routed experts: every layer is dense"),
    ("scoring_func", "no routed experts: every layer is dense"),
    ("norm_topk_prob", "no routed experts: every layer is dense"),
    (
        "routed_scaling_factor",
        "no routed experts: every layer is dense",
    ),
];

fn moe(
    root: &Object,
    v3: bool,
    layers: u64,
    routed: u64,
    toml: &mut Toml,
    ignored: &mut Vec<String>,
) -> Result<(), ImportError> {
    root.require_value(
        "moe_layer_freq",
        &json!(1),
        "dsc makes every layer after `first_k_dense_replace` a MoE layer",
    )?;
    let dense = root.uint("first_k_dense_replace")?.unwrap_or(0).min(layers);
    toml.from(root.origin("first_k_dense_replace"))
        .int("n_dense_layers", dense);
    toml.from(root.origin("moe_intermediate_size"))
        .int("moe_inter_dim", root.req_uint("moe_intermediate_size")?);
    toml.from(root.origin("n_routed_experts"))
        .int("n_routed_experts", routed);
    toml.from(root.origin("n_shared_experts")).int(
        "n_shared_experts",
        root.uint("n_shared_experts")?.unwrap_or(0),
    );
    let top_k = root.req_uint("num_experts_per_tok")?;
    toml.from(root.origin("num_experts_per_tok"))
        .int("n_activated_experts", top_k);

    let default_method = if v3 { "noaux_tc" } else { "greedy" };
    let method = root.str("topk_method")?.unwrap_or(default_method);
    let (groups, limited) = (root.uint("n_group")?, root.uint("topk_group")?);
    let (groups, limited, bias) = match method {
        "greedy" => {
            // Selection over all experts: the group fields play no part.
            ignored.extend(root.ignore(&[
                ("n_group", "topk_method \"greedy\" does not use groups"),
                ("topk_group", "topk_method \"greedy\" does not use groups"),
            ]));
            (1, 1, false)
        }
        "group_limited_greedy" | "noaux_tc" => (
            groups.unwrap_or(1),
            limited.unwrap_or(1),
            method == "noaux_tc",
        ),
        _ => {
            return Err(root.unsupported(
                "topk_method",
                "dsc routes with \"greedy\", \"group_limited_greedy\" or \"noaux_tc\"",
            ));
        }
    };
    toml.from(root.origin("n_group"))
        .int("n_expert_groups", groups);
    toml.from(root.origin("topk_group"))
        .int("n_limited_groups", limited);
    let score = root.str("scoring_func")?.unwrap_or("softmax");
    if !matches!(score, "softmax" | "sigmoid") {
        return Err(root.unsupported("scoring_func", "dsc scores with \"softmax\" or \"sigmoid\""));
    }
    toml.str("score_func", score);
    let norm = root.bool("norm_topk_prob")?.unwrap_or(false) && top_k > 1;
    let factor = root.float("routed_scaling_factor")?.unwrap_or(1.0);
    if factor <= 0.0 {
        return Err(root.unsupported("routed_scaling_factor", "the factor must be positive"));
    }
    // V2's code scales only the weights it did not normalize (DeepSeek-V2 modeling code).
    let scale = if !v3 && norm { 1.0 } else { factor };
    toml.from(root.origin("routed_scaling_factor"))
        .float("route_scale", scale);
    toml.bool("norm_topk_prob", norm);
    toml.bool("route_bias", bias);
    Ok(())
}

/// `rope_scaling` (or `rope_parameters`) of type yarn (`type` or `rope_type`) →
/// `[model.rope_scaling]`.
fn rope_scaling(r: Option<Object>, toml: &mut Toml) -> Result<(), ImportError> {
    let Some(r) = r else {
        return Ok(());
    };
    let ty = r.str("type")?.or(r.str("rope_type")?);
    match ty {
        Some("yarn") => {}
        Some("default") | None if !r.has("factor") => return r.finish(),
        _ => {
            let key = if r.has("type") { "type" } else { "rope_type" };
            return Err(r.unsupported(key, "DeepSeek models scale RoPE with \"yarn\" only"));
        }
    }
    let mut entries = vec![("type", TomlValue::Str(attr::YARN.into()))];
    let factor = r.float("factor")?.ok_or_else(|| r.missing("factor"))?;
    entries.push(("factor", TomlValue::Float(factor)));
    let orig = r
        .uint("original_max_position_embeddings")?
        .ok_or_else(|| r.missing("original_max_position_embeddings"))?;
    entries.push(("original_max_position_embeddings", TomlValue::Int(orig)));
    for key in ["beta_fast", "beta_slow", "mscale", "mscale_all_dim"] {
        if let Some(v) = r.float(key)? {
            entries.push((key, TomlValue::Float(v)));
        }
    }
    r.finish()?;
    toml.table("model.rope_scaling", &entries);
    Ok(())
}
