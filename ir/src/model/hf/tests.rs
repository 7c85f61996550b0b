use super::*;
use crate::model::load_model;
use crate::{OpKind, Role};

fn opts() -> ImportOptions {
    ImportOptions {
        name: "tiny".into(),
        batch: 2,
        seq_len: 8,
    }
}

/// A tiny DeepSeek-V3 config as HF writes them (with the fields that change nothing).
pub const V3: &str = r#"{
  "architectures": ["DeepseekV3ForCausalLM"],
  "model_type": "deepseek_v3",
  "vocab_size": 64,
  "hidden_size": 32,
  "intermediate_size": 48,
  "moe_intermediate_size": 16,
  "num_hidden_layers": 2,
  "num_nextn_predict_layers": 1,
  "num_attention_heads": 2,
  "num_key_value_heads": 2,
  "n_shared_experts": 1,
  "n_routed_experts": 4,
  "routed_scaling_factor": 2.5,
  "kv_lora_rank": 16,
  "q_lora_rank": 24,
  "qk_rope_head_dim": 8,
  "v_head_dim": 16,
  "qk_nope_head_dim": 16,
  "topk_method": "noaux_tc",
  "n_group": 2,
  "topk_group": 1,
  "num_experts_per_tok": 2,
  "moe_layer_freq": 1,
  "first_k_dense_replace": 1,
  "norm_topk_prob": true,
  "scoring_func": "sigmoid",
  "hidden_act": "silu",
  "max_position_embeddings": 4096,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 40,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 4096,
    "type": "yarn"
  },
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128]
  },
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true
}"#;

const LLAMA: &str = r#"{
  "model_type": "llama",
  "hidden_size": 32,
  "intermediate_size": 64,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "num_hidden_layers": 2,
  "vocab_size": 64,
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": true,
  "attention_bias": false,
  "mlp_bias": false,
  "hidden_act": "silu"
}"#;

fn with(base: &str, key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    serde_json::to_string_pretty(&v).unwrap()
}

fn err(text: &str) -> ImportError {
    import(text, &opts()).expect_err("the import fails")
}

#[test]
fn deepseek_v3_maps_every_field() {
    let out = import(V3, &opts()).unwrap();
    for line in [
        "architecture = \"deepseek\"",
        "batch = 2",
        "seq_len = 8",
        "q_lora_rank = 24",
        "n_dense_layers = 1",
        "n_expert_groups = 2",
        "n_limited_groups = 1",
        "score_func = \"sigmoid\"",
        "route_scale = 2.5",
        "norm_topk_prob = true",
        "route_bias = true",
        "[model.rope_scaling]",
        "type = \"yarn\"",
        "mscale_all_dim = 1.0",
        "[precision]",
        "weight_block = 128",
    ] {
        assert!(out.toml.contains(line), "missing `{line}` in\n{}", out.toml);
    }
    let ignored = out.ignored.join("\n");
    for key in [
        "num_nextn_predict_layers",
        "torch_dtype",
        "use_cache",
        "architectures",
    ] {
        assert!(ignored.contains(key), "{key} not listed in {ignored}");
    }
    let g = load_model(&out.toml).unwrap();
    assert!(
        g.params
            .iter()
            .any(|&p| g.name(p) == "model.layers.1.mlp.gate.e_score_correction_bias")
    );
}

#[test]
fn deepseek_v2_lite_shape_without_q_lora() {
    let v2 = with(
        &with(V3, "model_type", "\"deepseek_v2\""),
        "q_lora_rank",
        "null",
    );
    let v2 = with(
        &with(&v2, "topk_method", "\"group_limited_greedy\""),
        "scoring_func",
        "\"softmax\"",
    );
    let out = import(&v2, &opts()).unwrap();
    assert!(out.toml.contains("q_lora_rank = 0"), "{}", out.toml);
    assert!(out.toml.contains("route_bias = false"), "{}", out.toml);
    // V2 normalizes instead of scaling (DeepSeek-V2's modeling code).
    assert!(out.toml.contains("route_scale = 1.0"), "{}", out.toml);
    let g = load_model(&out.toml).unwrap();
    assert!(
        g.params
            .iter()
            .any(|&p| g.name(p) == "model.layers.0.self_attn.q_proj.weight")
    );
    let greedy = import(&with(&v2, "topk_method", "\"greedy\""), &opts()).unwrap();
    assert!(
        greedy.toml.contains("n_expert_groups = 1"),
        "{}",
        greedy.toml
    );
    assert!(greedy.ignored.join("\n").contains("n_group"));
}

#[test]
fn deepseek_without_routed_experts_is_dense() {
    let out = import(&with(V3, "n_routed_experts", "null"), &opts()).unwrap();
    assert!(out.toml.contains("n_dense_layers = 2"), "{}", out.toml);
    let g = load_model(&out.toml).unwrap();
    assert!(g.ops.iter().all(|op| op.kind != OpKind::MoeTopk));
}

#[test]
fn llama_gqa_llama3_and_tied_head() {
    let out = import(LLAMA, &opts()).unwrap();
    assert!(out.toml.contains("n_kv_heads = 2"), "{}", out.toml);
    assert!(out.toml.contains("type = \"llama3\""), "{}", out.toml);
    assert!(out.toml.contains("tie_embeddings = true"), "{}", out.toml);
    let g = load_model(&out.toml).unwrap();
    assert!(!g.params.iter().any(|&p| g.name(p) == "lm_head.weight"));
    let head = g.ops.iter().find(|op| op.role == Role::Head).unwrap();
    assert_eq!(g.name(head.operands[1]), "model.embed_tokens.weight");
    let mistral = with(
        &with(LLAMA, "model_type", "\"mistral\""),
        "sliding_window",
        "4096",
    );
    let out = import(&mistral, &opts()).unwrap();
    assert!(out.ignored.join("\n").contains("sliding_window"));
}

/// Qwen2 (as transformers 5 saves it): the llama preset with a bias on q/k/v, in the high dtype.
#[test]
fn qwen2_is_llama_with_a_bias_on_q_k_v() {
    let mut v: serde_json::Value = serde_json::from_str(LLAMA).unwrap();
    let map = v.as_object_mut().unwrap();
    map.insert("model_type".into(), "qwen2".into());
    map.remove("rope_scaling");
    map.remove("attention_bias");
    map.insert("rope_theta".into(), 1_000_000.0.into());
    map.insert("use_sliding_window".into(), false.into());
    map.insert("sliding_window".into(), 4.into());
    map.insert("max_window_layers".into(), 28.into());
    map.insert(
        "layer_types".into(),
        serde_json::json!(["full_attention", "full_attention"]),
    );
    let qwen2 = serde_json::to_string_pretty(&v).unwrap();
    let out = import(&qwen2, &opts()).unwrap();
    for line in [
        "architecture = \"llama\"",
        "attention_bias = true",
        "tie_embeddings = true",
        "rope_theta = 1000000.0",
    ] {
        assert!(out.toml.contains(line), "{line}:\n{}", out.toml);
    }
    let ignored = out.ignored.join("\n");
    for key in ["sliding_window", "max_window_layers", "layer_types"] {
        assert!(ignored.contains(key), "{key}: {ignored}");
    }
    let g = load_model(&out.toml).unwrap();
    let dtype = |name: &str| {
        let p = g.params.iter().find(|&&p| g.name(p) == name);
        p.map(|&p| g.ty(p).to_string())
    };
    for (proj, n) in [("q_proj", 32), ("k_proj", 16), ("v_proj", 16)] {
        let name = format!("model.layers.1.self_attn.{proj}.bias");
        assert_eq!(dtype(&name), Some(format!("bf16[{n}]")), "{name}");
    }
    assert_eq!(dtype("model.layers.1.self_attn.o_proj.bias"), None);
    let q = g
        .ops
        .iter()
        .find(|op| g.op_name(op) == "model.layers.0.self_attn.q_proj")
        .unwrap();
    assert_eq!(q.operands.len(), 3);

    // `attention_bias` is Qwen2's always; a Llama with one would have it on o_proj too.
    let out = import(&with(&qwen2, "attention_bias", "false"), &opts()).unwrap();
    assert!(out.toml.contains("attention_bias = true"), "{}", out.toml);
}

#[test]
fn fields_that_change_the_math_are_errors_naming_them() {
    let cases = [
        (
            with(V3, "hidden_act", "\"gelu\""),
            "`hidden_act` = \"gelu\"",
        ),
        (
            with(V3, "topk_method", "\"sinkhorn\""),
            "`topk_method` = \"sinkhorn\"",
        ),
        (with(V3, "moe_layer_freq", "2"), "`moe_layer_freq` = 2"),
        (
            with(V3, "tie_word_embeddings", "true"),
            "`tie_word_embeddings` = true",
        ),
        (
            with(V3, "brand_new_knob", "3"),
            "unknown field `brand_new_knob` = 3",
        ),
        (
            with(LLAMA, "attention_bias", "true"),
            "`attention_bias` = true",
        ),
        (with(LLAMA, "head_dim", "16"), "`head_dim` = 16"),
        (
            with(
                &with(
                    &with(LLAMA, "model_type", "\"qwen2\""),
                    "use_sliding_window",
                    "true",
                ),
                "sliding_window",
                "4",
            ),
            "`sliding_window` = 4",
        ),
        (
            with(
                LLAMA,
                "layer_types",
                r#"["full_attention", "chunked_attention"]"#,
            ),
            "`layer_types`",
        ),
        (
            with(LLAMA, "model_type", "\"gpt2\""),
            "unsupported `model_type` \"gpt2\"",
        ),
        (
            with(
                &with(LLAMA, "model_type", "\"mistral\""),
                "sliding_window",
                "4",
            ),
            "`sliding_window` = 4",
        ),
        (
            with(
                LLAMA,
                "rope_scaling",
                r#"{"rope_type": "dynamic", "factor": 2.0}"#,
            ),
            "`rope_type` = \"dynamic\" in `rope_scaling`",
        ),
        (
            with(
                V3,
                "quantization_config",
                r#"{"quant_method": "fp8", "weight_block_size": [128, 64]}"#,
            ),
            "`weight_block_size` = [128,64]",
        ),
        (
            with(V3, "num_hidden_layers", "\"two\""),
            "`num_hidden_layers` in config.json must be",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(
            e.message.contains(want),
            "expected `{want}`, got `{}`",
            e.message
        );
    }
}

#[test]
fn errors_point_at_the_key() {
    let text = V3.replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu\"");
    let e = err(&text);
    let line = text
        .lines()
        .position(|l| l.contains("\"hidden_act\""))
        .unwrap()
        + 1;
    assert_eq!((e.line, e.col), (line, 3), "{e}");
    let bad = err("{\"model_type\": \"llama\",\n  \"hidden_size\": }");
    assert_eq!(bad.line, 2, "{bad}");
    assert!(bad.message.starts_with("invalid JSON"), "{bad}");
}

#[test]
fn a_key_given_twice_is_refused_at_the_second() {
    // Top level: `hidden_size` again on the last line.
    let text = LLAMA.replacen("{", "{\n  \"hidden_size\": 64,", 1);
    let e = err(&text);
    assert_eq!(
        (e.line, e.col),
        (line_of(LLAMA, "hidden_size") + 1, 3),
        "{e}"
    );
    assert_eq!(e.message, "`hidden_size` is given twice: say it once");
    // Inside a nested object.
    let nested = LLAMA.replacen(
        "{",
        "{\n  \"rope_scaling\": {\"rope_type\": \"linear\", \"rope_type\": \"yarn\"},",
        1,
    );
    assert!(
        err(&nested).message.contains("`rope_type` is given twice"),
        "{}",
        err(&nested)
    );
}

/// The line (1-based) of `"key"` in `text`.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.contains(&format!("\"{key}\"")))
        .expect("the key is in the text")
        + 1
}

/// model.toml's own checks (divisibility, limits) reject what the config says: the error is at
/// the config field the failing key came from, in the config's names, not at 1:1.
#[test]
fn errors_of_the_model_toml_checks_point_at_the_config_field() {
    let text = with(LLAMA, "num_attention_heads", "5");
    let e = err(&text);
    assert_eq!(
        (e.line, e.col),
        (line_of(&text, "num_attention_heads"), 3),
        "{e}"
    );
    assert!(
        e.message.starts_with("`num_attention_heads`: ")
            && e.message.contains("`n_heads` (5) must divide `dim` (32)")
            && e.message.contains("`dim` is `hidden_size`")
            && !e.message.contains("[model]"),
        "{e}"
    );
    let text = with(V3, "num_hidden_layers", "20000");
    let e = err(&text);
    assert_eq!(e.line, line_of(&text, "num_hidden_layers"), "{e}");
    assert!(e.message.contains("more than the 10000 layers"), "{e}");
    let text = with(V3, "n_group", "3");
    let e = err(&text);
    assert_eq!(e.line, line_of(&text, "n_group"), "{e}");
    assert!(e.message.starts_with("`n_group`: "), "{e}");
}

/// A UTF-8 byte order mark (Windows editors write one) is skipped, not `invalid JSON` at 1:1.
#[test]
fn a_byte_order_mark_is_skipped() {
    let with_bom = format!("\u{feff}{LLAMA}");
    assert_eq!(
        import(&with_bom, &opts()).unwrap().toml,
        import(LLAMA, &opts()).unwrap().toml
    );
}

/// transformers 5 moves `rope_theta` and `rope_scaling` into one `rope_parameters` object and
/// writes the derived `head_dim` / `qk_head_dim`: a config saved by it imports to the same
/// model.toml as the transformers 4 spelling (found by scripts/fidelity.py).
#[test]
fn transformers_5_configs_import_as_transformers_4_ones() {
    let mut v: serde_json::Value = serde_json::from_str(V3).unwrap();
    let map = v.as_object_mut().unwrap();
    let mut rope = map.remove("rope_scaling").unwrap();
    rope["rope_type"] = "yarn".into();
    rope["rope_theta"] = map.remove("rope_theta").unwrap();
    map.insert("rope_parameters".into(), rope);
    map.insert("head_dim".into(), 8.into());
    map.insert("qk_head_dim".into(), 24.into());
    map.insert("output_router_logits".into(), false.into());
    map.insert("mlp_bias".into(), false.into());
    let v5 = serde_json::to_string_pretty(&v).unwrap();
    assert_eq!(
        import(&v5, &opts()).unwrap().toml,
        import(V3, &opts()).unwrap().toml
    );

    // Llama: `rope_parameters` of type llama3, and of type default (no [model.rope_scaling]).
    let mut v: serde_json::Value = serde_json::from_str(LLAMA).unwrap();
    let map = v.as_object_mut().unwrap();
    let mut rope = map.remove("rope_scaling").unwrap();
    rope["rope_theta"] = map.remove("rope_theta").unwrap();
    map.insert("rope_parameters".into(), rope);
    let v5 = serde_json::to_string_pretty(&v).unwrap();
    assert_eq!(
        import(&v5, &opts()).unwrap().toml,
        import(LLAMA, &opts()).unwrap().toml
    );
    let plain = with(
        &with(&with(LLAMA, "rope_scaling", "null"), "rope_theta", "null"),
        "rope_parameters",
        r#"{"rope_theta": 1000.0, "rope_type": "default"}"#,
    );
    let out = import(&plain, &opts()).unwrap().toml;
    assert!(
        out.contains("rope_theta = 1000.0") && !out.contains("rope_scaling"),
        "{out}"
    );

    // What would change the math is refused, naming the field.
    for (key, value, needle) in [
        ("head_dim", "16", "`head_dim` = 16"),
        ("qk_head_dim", "32", "`qk_head_dim` = 32"),
        ("mlp_bias", "true", "`mlp_bias` = true"),
        (
            "rope_parameters",
            r#"{"rope_theta": 5.0}"#,
            "`rope_scaling` and `rope_parameters`",
        ),
    ] {
        let e = err(&with(V3, key, value));
        assert!(e.message.contains(needle), "{key}: {}", e.message);
    }
    let e = err(&with(
        &with(V3, "rope_scaling", "null"),
        "rope_parameters",
        r#"{"rope_theta": 5.0}"#,
    ));
    assert!(e.message.contains("disagrees"), "{}", e.message);
}
