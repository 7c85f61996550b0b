//! Tests of the model.toml front end: the examples load and verify, and every class of bad
//! input is an error at the right line:col that names the key.

use super::{ModelError, load_model};
use crate::{DType, Graph, OpKind, Role, verify};

macro_rules! example {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/", $file))
    };
}

const TINY: &str = example!("tiny-moe.toml");
const V2_LITE: &str = example!("deepseek-v2-lite.toml");
const V3: &str = example!("deepseek-v3.toml");
const LLAMA: &str = example!("llama-small.toml");
const MLP: &str = example!("mlp.toml");

fn load(src: &str) -> Graph {
    let g = load_model(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    verify(&g).unwrap_or_else(|e| panic!("{e}"));
    g
}

fn err(src: &str) -> ModelError {
    match load_model(src) {
        Ok(_) => panic!("expected an error for\n{src}"),
        Err(e) => e,
    }
}

/// Replaces the line that sets `key` (the first one) with `line`; an empty `line` removes it.
fn set(src: &str, key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut done = false;
    let mut out = String::new();
    for l in src.lines() {
        if !done && l.starts_with(&prefix) {
            done = true;
            if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(done, "no `{key}` in the source");
    out
}

/// The 1-based line:col where `needle` first occurs, plus `offset` columns.
fn pos(src: &str, needle: &str, offset: usize) -> (usize, usize) {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in source"));
    let line = src[..at].matches('\n').count() + 1;
    let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col + offset)
}

/// Asserts the error is at `needle` (+ `offset` columns) and names every one of `words`.
fn assert_err(src: &str, needle: &str, offset: usize, words: &[&str]) {
    let e = err(src);
    assert_eq!(
        (e.line, e.col),
        pos(src, needle, offset),
        "wrong position for: {e}"
    );
    for w in words {
        assert!(e.message.contains(w), "`{w}` not in: {e}");
    }
}

/// Asserts the error for `src` with `key`'s line replaced by `line` is at its value.
fn assert_value_err(base: &str, key: &str, line: &str, words: &[&str]) {
    let src = set(base, key, line);
    let value_col = line.find('=').expect("a key line") + 2;
    assert_err(&src, line, value_col, words);
}

fn op<'g>(g: &'g Graph, name: &str) -> &'g crate::Op {
    g.ops
        .iter()
        .find(|o| g.op_name(o) == name)
        .unwrap_or_else(|| panic!("no op `{name}`"))
}

fn param_type(g: &Graph, name: &str) -> Option<String> {
    g.params
        .iter()
        .find(|&&p| g.name(p) == name)
        .map(|&p| g.ty(p).to_string())
}

// --- the examples ---

#[test]
fn tiny_moe_builds_the_documented_graph() {
    let g = load(TINY);
    assert_eq!(g.name, "tiny-moe");
    let [out] = g.outputs[..] else { panic!() };
    assert_eq!(g.name(out), "logits");
    assert_eq!(g.ty(out).to_string(), "bf16[1, 64, 512]");
    assert_eq!(op(&g, "logits").role, Role::Head);
    assert_eq!(g.ty(g.inputs[0]).to_string(), "i32[1, 64]");
    let ty = |n| param_type(&g, n);
    assert_eq!(ty("model.embed_tokens.weight").unwrap(), "bf16[512, 256]");
    assert_eq!(ty("lm_head.weight").unwrap(), "bf16[512, 256]");
    assert_eq!(
        ty("model.layers.0.self_attn.q_proj.weight").unwrap(),
        "bf16[192, 256]"
    );
    assert_eq!(
        ty("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").unwrap(),
        "bf16[80, 256]"
    );
    assert_eq!(
        ty("model.layers.0.self_attn.kv_b_proj.weight").unwrap(),
        "bf16[256, 64]"
    );
    assert_eq!(
        ty("model.layers.0.self_attn.o_proj.weight").unwrap(),
        "bf16[256, 128]"
    );
    assert_eq!(
        ty("model.layers.0.mlp.gate_proj.weight").unwrap(),
        "bf16[512, 256]"
    );
    assert!(
        ty("model.layers.0.mlp.gate.weight").is_none(),
        "layer 0 is dense"
    );
    assert_eq!(
        ty("model.layers.1.mlp.gate.weight").unwrap(),
        "bf16[8, 256]"
    );
    assert_eq!(
        ty("model.layers.1.mlp.gate.e_score_correction_bias").unwrap(),
        "f32[8]"
    );
    assert_eq!(
        ty("model.layers.3.mlp.experts.{e}.gate_proj.weight").unwrap(),
        "bf16[8, 128, 256]"
    );
    assert_eq!(
        ty("model.layers.3.mlp.experts.{e}.down_proj.weight").unwrap(),
        "bf16[8, 256, 128]"
    );
    assert_eq!(
        ty("model.layers.3.mlp.shared_experts.up_proj.weight").unwrap(),
        "bf16[128, 256]"
    );

    let gate = op(&g, "model.layers.1.mlp.gate");
    assert_eq!((gate.kind, gate.role), (OpKind::Linear, Role::Gating));
    assert_eq!(g.ty(gate.results[0]).dtype, DType::F32);
    let topk = op(&g, "model.layers.1.mlp.topk");
    assert_eq!(topk.operands.len(), 2, "sigmoid routing has a bias");
    assert_eq!(g.name(topk.results[1]), "model.layers.1.mlp.topk.indices");
    assert_eq!(topk.attrs.bool("norm_topk_prob"), Some(true));
    assert_eq!(topk.attrs.int("n_groups"), Some(2));
    let scores = op(&g, "model.layers.2.self_attn.scores");
    assert_eq!(scores.operands.len(), 4);
    assert_eq!(scores.attrs.float("scale"), Some(48f64.powf(-0.5)));
    assert_eq!(
        op(&g, "model.layers.2.self_attn.q_rope").attrs.str("style"),
        Some("interleaved")
    );
    let experts = op(&g, "model.layers.2.mlp.experts.up_proj");
    assert_eq!(
        (experts.kind, experts.role),
        (OpKind::GroupedLinear, Role::Expert)
    );
    let shared = op(&g, "model.layers.2.mlp.shared_experts.down_proj");
    assert_eq!(shared.role, Role::SharedExpert);
    assert_eq!(op(&g, "model.layers.2.mlp.combine").operands.len(), 3);
    assert_eq!(op(&g, "model.layers.0.mlp.act").role, Role::Ffn);
    assert_eq!(g.policy, crate::PrecisionPolicy::default());
}

#[test]
fn v2_lite_routes_with_softmax_and_no_bias() {
    let g = load(V2_LITE);
    let topk = op(&g, "model.layers.1.mlp.topk");
    assert_eq!(topk.operands.len(), 1);
    assert_eq!(topk.attrs.bool("norm_topk_prob"), Some(false));
    assert_eq!(topk.attrs.int("top_k"), Some(6));
    assert!(param_type(&g, "model.layers.0.self_attn.q_proj.weight").is_some());
    assert_eq!(
        param_type(&g, "model.layers.26.mlp.shared_experts.gate_proj.weight").unwrap(),
        "bf16[2816, 2048]"
    );
    assert_eq!(g.ty(g.outputs[0]).to_string(), "bf16[1, 512, 102400]");
}

#[test]
fn v3_uses_q_lora_and_stays_small() {
    let g = load(V3);
    assert!(g.ops.len() < 5000, "{} ops", g.ops.len());
    assert_eq!(
        param_type(&g, "model.layers.0.self_attn.q_a_proj.weight").unwrap(),
        "bf16[1536, 7168]"
    );
    assert_eq!(
        op(&g, "model.layers.0.self_attn.q_a_layernorm").role,
        Role::Norm
    );
    assert_eq!(
        param_type(&g, "model.layers.0.self_attn.q_b_proj.weight").unwrap(),
        "bf16[24576, 1536]"
    );
    assert!(param_type(&g, "model.layers.2.mlp.gate.weight").is_none());
    assert_eq!(
        param_type(&g, "model.layers.60.mlp.experts.{e}.up_proj.weight").unwrap(),
        "bf16[256, 2048, 7168]"
    );
    let topk = op(&g, "model.layers.3.mlp.topk");
    assert_eq!(topk.attrs.int("topk_groups"), Some(4));
    assert_eq!(topk.attrs.float("route_scale"), Some(2.5));
}

#[test]
fn llama_builds_gqa_with_half_rope() {
    let g = load(LLAMA);
    assert_eq!(
        param_type(&g, "model.layers.3.self_attn.k_proj.weight").unwrap(),
        "bf16[128, 512]"
    );
    let scores = op(&g, "model.layers.0.self_attn.scores");
    assert_eq!(scores.attrs.float("scale"), Some(64f64.powf(-0.5)));
    let rope = op(&g, "model.layers.0.self_attn.k_rope");
    assert_eq!(rope.attrs.str("style"), Some("half"));
    assert_eq!(rope.attrs.float("theta"), Some(500000.0));
    assert!(param_type(&g, "lm_head.weight").is_some());

    let tied = load(&set(LLAMA, "tie_embeddings", "tie_embeddings = true"));
    assert!(param_type(&tied, "lm_head.weight").is_none());
    let head = op(&tied, "logits");
    assert_eq!(tied.name(head.operands[1]), "model.embed_tokens.weight");
}

#[test]
fn mlp_example_builds_named_weights() {
    let g = load(MLP);
    let kinds: Vec<_> = g.ops.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [
            OpKind::RmsNorm,
            OpKind::Linear,
            OpKind::Silu,
            OpKind::Linear
        ]
    );
    assert_eq!(param_type(&g, "up.weight").unwrap(), "bf16[1024, 512]");
    assert_eq!(param_type(&g, "down.weight").unwrap(), "bf16[512, 1024]");
    assert_eq!(param_type(&g, "norm.weight").unwrap(), "bf16[512]");
    assert_eq!(op(&g, "up").role, Role::Ffn);
    assert_eq!(op(&g, "act").role, Role::Other);
    assert_eq!(g.ty(g.outputs[0]).to_string(), "bf16[64, 512]");
}

#[test]
fn op_counts_are_linear_in_layers() {
    for (base, dense) in [(TINY, 1), (LLAMA, 0)] {
        let counts: Vec<usize> = (2..6)
            .map(|n| {
                load(&set(base, "n_layers", &format!("n_layers = {n}")))
                    .ops
                    .len()
            })
            .collect();
        let steps: Vec<usize> = counts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            steps.iter().all(|&s| s == steps[0]),
            "{counts:?} (dense {dense})"
        );
    }
}

#[test]
fn all_dense_deepseek_needs_no_moe_keys() {
    let mut src = set(TINY, "n_dense_layers", "n_dense_layers = 4");
    for key in [
        "moe_inter_dim",
        "n_routed_experts",
        "n_shared_experts",
        "n_activated_experts",
        "n_expert_groups",
        "n_limited_groups",
        "score_func",
        "route_scale",
    ] {
        src = set(&src, key, "");
    }
    let g = load(&src);
    assert!(g.ops.iter().all(|o| o.kind != OpKind::MoeTopk));
}

#[test]
fn precision_is_stored_in_the_graph() {
    let src = format!(
        "{TINY}\n[precision]\nkeep_high = [\"head\"]\nhigh = \"f32\"\nfp8_format = \"e5m2\"\n\
         promote_interval = 64\nscale_format = \"ue8m0\"\n\n\
         [[precision.override]]\nmatch = \"model.layers.0.*\"\ndtype = \"bf16\"\n\n\
         [[precision.override]]\nmatch = \"logits\"\ndtype = \"e4m3\"\n"
    );
    let g = load(&src);
    let p = &g.policy;
    assert_eq!(p.keep_high, [Role::Head]);
    assert_eq!((p.high, p.fp8_format), (DType::F32, DType::F8E5M2));
    assert_eq!(p.promote_interval, 64);
    assert_eq!(p.scale_format, crate::ScaleFormat::Ue8m0);
    assert_eq!(p.overrides.len(), 2);
    assert_eq!(p.overrides[1].dtype, DType::F8E4M3);
    assert_eq!(param_type(&g, "lm_head.weight").unwrap(), "f32[512, 256]");
    assert_eq!(
        param_type(&g, "model.layers.1.mlp.gate.e_score_correction_bias").unwrap(),
        "f32[8]"
    );
}

#[test]
fn explicit_ops_may_come_in_any_order() {
    let src = r#"
[model]
name = "moe"
outputs = ["combine"]

[[input]]
name = "x"
dtype = "bf16"
shape = [16, 64]

[[op]]
name = "combine"
kind = "moe_combine"
inputs = ["down", "topk"]

[[op]]
name = "down"
kind = "grouped_linear"
inputs = ["up", "topk.indices"]
n_experts = 4
out_features = 64

[[op]]
name = "up"
kind = "grouped_linear"
inputs = ["x", "topk.indices"]
n_experts = 4
out_features = 32

[[op]]
name = "topk"
kind = "moe_topk"
inputs = ["gate"]
bias = true
score_func = "sigmoid"
top_k = 2
n_groups = 1
topk_groups = 1
norm_topk_prob = true
route_scale = 1

[[op]]
name = "gate"
kind = "linear"
inputs = ["x"]
out_features = 4
bias = true
role = "gating"
"#;
    let g = load(src);
    let order: Vec<_> = g.ops.iter().map(|o| g.op_name(o)).collect();
    assert_eq!(order, ["gate", "topk", "up", "down", "combine"]);
    assert_eq!(param_type(&g, "up.{e}.weight").unwrap(), "bf16[4, 32, 64]");
    assert_eq!(
        param_type(&g, "down.{e}.weight").unwrap(),
        "bf16[4, 64, 32]"
    );
    assert_eq!(param_type(&g, "gate.bias").unwrap(), "bf16[4]");
    assert_eq!(
        param_type(&g, "topk.e_score_correction_bias").unwrap(),
        "f32[4]"
    );
    assert_eq!(op(&g, "topk").attrs.float("route_scale"), Some(1.0));
    assert_eq!(op(&g, "up").role, Role::Expert);
}

// --- errors ---

#[test]
fn display_is_line_col_message() {
    let e = ModelError {
        line: 3,
        col: 7,
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "3:7: boom");
}

#[test]
fn toml_syntax_errors_have_positions() {
    let src = "[model]\nname = \"x\"\ndim = = 3\n";
    let e = err(src);
    assert_eq!((e.line, e.col), (3, 7), "{e}");
    assert!(e.message.starts_with("invalid TOML"), "{e}");
    let e = err("[model]\nname = \"x\"\nname = \"y\"\n");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn missing_model_table() {
    let e = err("[precision]\nhigh = \"bf16\"\n");
    assert_eq!((e.line, e.col), (1, 1));
    assert!(e.message.contains("[model]"), "{e}");
}

#[test]
fn unknown_keys_list_the_allowed_ones() {
    let src = TINY.replace("dim = 256\n", "dim = 256\nhidden = 3\n");
    assert_err(
        &src,
        "hidden = 3",
        0,
        &["`hidden`", "allowed", "kv_lora_rank"],
    );
    let src = format!("{TINY}\n[precision]\nhigh = \"bf16\"\ntile = 3\n");
    assert_err(&src, "tile = 3", 0, &["`tile`", "act_tile"]);
    let src = format!("{TINY}\n[extra]\na = 1\n");
    assert_err(&src, "[extra]", 1, &["`extra`", "precision"]);
    let src = MLP.replace("eps = 1e-6", "eps = 1e-6\naxis = 1");
    assert_err(&src, "axis = 1", 0, &["`axis`", "eps"]);
}

#[test]
fn keys_of_another_architecture() {
    let src = LLAMA.replace("dim = 512\n", "dim = 512\nkv_lora_rank = 64\n");
    assert_err(
        &src,
        "kv_lora_rank",
        0,
        &["`kv_lora_rank` does not apply to architecture llama"],
    );
    let src = TINY.replace("dim = 256\n", "dim = 256\nn_kv_heads = 2\n");
    assert_err(
        &src,
        "n_kv_heads",
        0,
        &["`n_kv_heads` does not apply to architecture deepseek"],
    );
    let src = TINY.replace("dim = 256\n", "dim = 256\noutputs = [\"x\"]\n");
    assert_err(&src, "outputs", 0, &["`outputs`"]);
    let src = MLP.replace("outputs = [\"down\"]", "outputs = [\"down\"]\ndim = 3");
    assert_err(&src, "dim = 3", 0, &["`dim`", "architecture"]);
    let src = format!("{TINY}\n[[op]]\nname = \"a\"\n");
    assert_err(&src, "[[op]]", 2, &["`[[op]]`", "preset"]);
    assert_value_err(
        TINY,
        "architecture",
        "architecture = \"gpt\"",
        &["`architecture`", "gpt"],
    );
}

#[test]
fn wrong_types() {
    assert_value_err(
        TINY,
        "dim",
        "dim = \"256\"",
        &["`dim` must be an integer", "string"],
    );
    assert_value_err(
        TINY,
        "route_scale",
        "route_scale = \"x\"",
        &["`route_scale` must be a number"],
    );
    assert_value_err(
        TINY,
        "score_func",
        "score_func = 1",
        &["`score_func` must be a string"],
    );
    assert_value_err(
        LLAMA,
        "tie_embeddings",
        "tie_embeddings = 1",
        &["`tie_embeddings` must be a boolean"],
    );
    let src = MLP.replace("shape = [64, 512]", "shape = [64, \"512\"]");
    assert_err(
        &src,
        "\"512\"",
        0,
        &["`shape` must be an array of integers", "element 2"],
    );
    let src = format!("{TINY}\n[precision]\nkeep_high = \"head\"\n");
    assert_err(
        &src,
        "\"head\"",
        0,
        &["`keep_high` must be an array of strings"],
    );
    let src = format!("precision = 3\n{TINY}");
    assert_err(&src, "3", 0, &["`precision` must be a table"]);
}

#[test]
fn missing_keys_point_at_the_table() {
    let src = set(TINY, "dim", "");
    assert_err(&src, "[model]", 0, &["missing key `dim`", "[model]"]);
    let src = set(LLAMA, "rope_theta", "");
    assert_err(&src, "[model]", 0, &["missing key `rope_theta`"]);
    let src = set(TINY, "n_routed_experts", "");
    assert_err(&src, "[model]", 0, &["missing key `n_routed_experts`"]);
    let src = MLP.replace("out_features = 1024\n", "");
    assert_err(
        &src,
        "[[op]]\nname = \"up\"",
        0,
        &["missing key `out_features`", "`up`"],
    );
    let src = MLP.replace("dtype = \"bf16\"\n", "");
    assert_err(&src, "[[input]]", 0, &["missing key `dtype`"]);
}

#[test]
fn sizes_must_be_positive() {
    assert_value_err(TINY, "dim", "dim = 0", &["`dim` must be positive"]);
    assert_value_err(
        TINY,
        "n_heads",
        "n_heads = -4",
        &["`n_heads` must be positive", "-4"],
    );
    assert_value_err(TINY, "batch", "batch = 0", &["`batch`"]);
    assert_value_err(
        TINY,
        "n_dense_layers",
        "n_dense_layers = -1",
        &["`n_dense_layers`"],
    );
    assert_value_err(
        TINY,
        "n_shared_experts",
        "n_shared_experts = -1",
        &["`n_shared_experts`"],
    );
    assert_value_err(LLAMA, "seq_len", "seq_len = 0", &["`seq_len`"]);
    assert_value_err(
        TINY,
        "rms_norm_eps",
        "rms_norm_eps = 0.0",
        &["`rms_norm_eps` must be positive"],
    );
    assert_value_err(
        TINY,
        "route_scale",
        "route_scale = nan",
        &["`route_scale` must be finite"],
    );
    let src = MLP.replace("shape = [64, 512]", "shape = [64, 0]");
    assert_err(&src, "0]", 0, &["`shape`"]);
    let src = MLP.replace("out_features = 512", "out_features = 0");
    assert_err(&src, "0\nrole", 0, &["`out_features` must be positive"]);
}

#[test]
fn zero_counts_are_allowed_where_documented() {
    let g = load(&set(TINY, "n_shared_experts", "n_shared_experts = 0"));
    assert!(param_type(&g, "model.layers.1.mlp.shared_experts.up_proj.weight").is_none());
    assert_eq!(op(&g, "model.layers.1.mlp.combine").operands.len(), 2);
    let g = load(&set(TINY, "n_dense_layers", "n_dense_layers = 0"));
    assert!(op(&g, "model.layers.0.mlp.topk").attrs.int("top_k") == Some(2));
}

#[test]
fn impossible_moe_values() {
    assert_value_err(
        TINY,
        "n_activated_experts",
        "n_activated_experts = 9",
        &["`n_activated_experts`", "`n_routed_experts`"],
    );
    assert_value_err(
        TINY,
        "n_expert_groups",
        "n_expert_groups = 3",
        &["`n_expert_groups`", "divisible"],
    );
    assert_value_err(
        TINY,
        "n_limited_groups",
        "n_limited_groups = 3",
        &["`n_limited_groups`", "exceed"],
    );
    let src = set(TINY, "n_activated_experts", "n_activated_experts = 6");
    assert_value_err(
        &src,
        "n_limited_groups",
        "n_limited_groups = 1",
        &["`n_limited_groups`", "supply"],
    );
    assert_value_err(
        TINY,
        "n_dense_layers",
        "n_dense_layers = 5",
        &["`n_dense_layers`", "`n_layers`"],
    );
    assert_value_err(
        TINY,
        "score_func",
        "score_func = \"relu\"",
        &["`score_func`", "relu"],
    );
    assert_value_err(
        TINY,
        "qk_rope_head_dim",
        "qk_rope_head_dim = 15",
        &["`qk_rope_head_dim`", "even"],
    );
    assert_value_err(TINY, "n_layers", "n_layers = 1000000", &["`n_layers`"]);
}

#[test]
fn impossible_llama_values() {
    assert_value_err(
        LLAMA,
        "n_heads",
        "n_heads = 7",
        &["`n_heads`", "divide `dim`"],
    );
    assert_value_err(
        LLAMA,
        "n_heads",
        "n_heads = 512",
        &["`n_heads`", "odd head_dim"],
    );
    assert_value_err(
        LLAMA,
        "n_kv_heads",
        "n_kv_heads = 3",
        &["`n_kv_heads`", "`n_heads`"],
    );
}

#[test]
fn absurd_sizes_name_the_key_responsible() {
    let e = err(&set(TINY, "seq_len", "seq_len = 100000000"));
    assert!(
        e.message.contains("`seq_len`") && e.message.contains("attention scores"),
        "{e}"
    );
    assert_value_err(
        TINY,
        "seq_len",
        "seq_len = 100000000",
        &["`seq_len`", "2^48"],
    );
    assert_value_err(
        TINY,
        "vocab_size",
        "vocab_size = 2000000000000",
        &["`vocab_size`", "2^48"],
    );
    assert_value_err(
        LLAMA,
        "vocab_size",
        "vocab_size = 9223372036854775807",
        &["`vocab_size`"],
    );
    assert_value_err(
        TINY,
        "n_routed_experts",
        "n_routed_experts = 80000000000",
        &["`n_routed_experts`"],
    );
    assert_value_err(
        LLAMA,
        "inter_dim",
        "inter_dim = 1000000000000",
        &["`inter_dim`"],
    );
    let src = MLP.replace("shape = [64, 512]", "shape = [1000000000, 1000000000]");
    assert_err(&src, "[1000000000", 0, &["`shape`", "2^48"]);
    let src = MLP.replace("out_features = 1024", "out_features = 1000000000000");
    assert_err(&src, "1000000000000", 0, &["`out_features`", "2^48"]);
}

#[test]
fn bad_precision_values() {
    let prec = |body: &str| format!("{TINY}\n[precision]\n{body}\n");
    let src = prec("keep_high = [\"head\", \"lm\"]");
    assert_err(&src, "\"lm\"", 0, &["`keep_high`", "unknown role `lm`"]);
    let src = prec("fp8_format = \"bf16\"");
    assert_err(&src, "\"bf16\"", 0, &["`fp8_format`", "e4m3"]);
    let src = prec("high = \"e4m3\"");
    assert_err(&src, "\"e4m3\"", 0, &["`high`", "bf16"]);
    // f16 is an IR dtype, but no GPU kernel takes it: refused here, not after codegen.
    let src = prec("high = \"f16\"");
    assert_err(&src, "\"f16\"", 0, &["`high` must be bf16 or f32"]);
    assert!(load_model(&prec("high = \"f32\"")).is_ok());
    let src = prec("scale_format = \"f16\"");
    assert_err(&src, "\"f16\"", 0, &["`scale_format`"]);
    let src = prec("promote_interval = 96");
    assert_err(&src, "promote_interval = 96", 19, &["`promote_interval`"]);
    let src = prec("act_tile = 100");
    assert_err(&src, "act_tile = 100", 11, &["`act_tile`"]);
    let src = prec("weight_block = 64");
    assert_err(&src, "weight_block = 64", 15, &["`weight_block`"]);
    let src = prec("act_tile = 0");
    assert_err(&src, "act_tile = 0", 11, &["`act_tile`"]);
    // A default made invalid by another key points at the table.
    let src = prec("act_tile = 256");
    assert_err(&src, "[precision]", 0, &["`weight_block`"]);
}

#[test]
fn bad_overrides() {
    let src = format!("{TINY}\n[[precision.override]]\ndtype = \"bf16\"\n");
    assert_err(&src, "[[precision.override]]", 0, &["missing key `match`"]);
    let src = format!("{TINY}\n[[precision.override]]\nmatch = \"a*\"\n");
    assert_err(&src, "[[precision.override]]", 0, &["missing key `dtype`"]);
    let src = format!("{TINY}\n[[precision.override]]\nmatch = \"a*\"\ndtype = \"i32\"\n");
    assert_err(&src, "\"i32\"", 0, &["`dtype`"]);
    let src = format!("{TINY}\n[[precision.override]]\nmatch = \"a*\"\ndtype = \"fp9\"\n");
    assert_err(&src, "\"fp9\"", 0, &["`dtype`", "fp9"]);
    let src =
        format!("{TINY}\n[[precision.override]]\nmatch = \"a*\"\ndtype = \"f8e5m2\"\nwhen = 1\n");
    assert_err(&src, "when", 0, &["`when`", "match"]);
}

#[test]
fn bad_dtypes_and_roles_in_the_explicit_form() {
    let src = MLP.replace("dtype = \"bf16\"", "dtype = \"float8\"");
    assert_err(&src, "\"float8\"", 0, &["`dtype`", "float8"]);
    let src = MLP.replace("role = \"ffn\"", "role = \"feedforward\"");
    assert_err(&src, "\"feedforward\"", 0, &["`role`", "feedforward"]);
    let src = MLP.replace("kind = \"silu\"", "kind = \"gelu\"");
    assert_err(&src, "\"gelu\"", 0, &["`kind`", "gelu"]);
}

#[test]
fn unknown_names_in_inputs_and_outputs() {
    let src = MLP.replace("inputs = [\"act\"]", "inputs = [\"actt\"]");
    assert_err(&src, "\"actt\"", 0, &["`actt`", "`inputs`"]);
    let src = MLP.replace("outputs = [\"down\"]", "outputs = [\"down\", \"nope\"]");
    assert_err(&src, "\"nope\"", 0, &["`nope`", "`outputs`"]);
    let src = MLP.replace("inputs = [\"act\"]", "inputs = [\"up.weight\"]");
    assert_err(&src, "\"up.weight\"", 0, &["`up.weight`"]);
    let src = MLP.replace("outputs = [\"down\"]", "outputs = [\"down\", \"down\"]");
    assert_err(&src, "\"down\"]", 0, &["`down` is listed twice"]);
}

#[test]
fn duplicate_names_error_at_the_second() {
    let src = MLP.replace("name = \"act\"", "name = \"up\"");
    let e = err(&src);
    let second = src.match_indices("name = \"up\"").nth(1).unwrap().0;
    let line = src[..second].matches('\n').count() + 1;
    assert_eq!((e.line, e.col), (line, 8), "{e}");
    assert!(e.message.contains("duplicate name `up`"), "{e}");
    let src = MLP.replace("name = \"norm\"", "name = \"x\"");
    assert_err(&src, "name = \"x\"\nkind", 7, &["duplicate name `x`"]);
    // A weight's name is taken like any other.
    let src = MLP.replace("name = \"act\"", "name = \"down.weight\"");
    let src = src.replace("inputs = [\"act\"]", "inputs = [\"down.weight\"]");
    assert_err(
        &src,
        "[[op]]\nname = \"down\"",
        0,
        &["op `down`", "`down.weight`"],
    );
}

#[test]
fn cycles_name_their_ops() {
    let src = MLP.replace("inputs = [\"norm\"]", "inputs = [\"down\"]");
    assert_err(
        &src,
        "[[op]]\nname = \"up\"",
        0,
        &["cycle", "up -> act -> down -> up"],
    );
    let src = MLP.replace("inputs = [\"up\"]", "inputs = [\"act\"]");
    assert_err(
        &src,
        "[[op]]\nname = \"act\"",
        0,
        &["`act` reads its own result"],
    );
}

/// A cycle of 20,000 ops is named by its first and last ops and its length, not all of them
/// (the whole chain was a 189 KB line).
#[test]
fn a_long_cycle_is_named_in_a_readable_line() {
    let n = 20_000;
    let mut src = String::from(
        "[model]\nname = \"ring\"\noutputs = [\"op0\"]\n\n\
         [[input]]\nname = \"x\"\ndtype = \"f32\"\nshape = [4]\n",
    );
    for i in 0..n {
        let prev = (i + n - 1) % n;
        src.push_str(&format!(
            "\n[[op]]\nname = \"op{i}\"\nkind = \"silu\"\ninputs = [\"op{prev}\"]\n"
        ));
    }
    let e = err(&src);
    assert!(e.message.len() < 300, "{} bytes: {e}", e.message.len());
    assert!(
        e.message
            .starts_with("20000 ops form a cycle through their `inputs`: ")
            && e.message
                .contains("op0 -> op1 -> op2 -> op3 -> … (19992 more ops) … -> ")
            && e.message.ends_with("-> op19999 -> op0"),
        "{e}"
    );
}

#[test]
fn builder_errors_point_at_the_op() {
    let src = MLP.replace(
        "kind = \"silu\"\ninputs = [\"up\"]",
        "kind = \"add\"\ninputs = [\"up\", \"x\"]",
    );
    assert_err(
        &src,
        "[[op]]\nname = \"act\"",
        0,
        &["op `act`", "shapes differ"],
    );
    let src = MLP.replace("kind = \"silu\"", "kind = \"softmax\"");
    assert_err(&src, "[[op]]\nname = \"act\"", 0, &["missing key `axis`"]);
    let src = MLP.replace("kind = \"silu\"", "kind = \"softmax\"\naxis = 5");
    assert_err(&src, "[[op]]\nname = \"act\"", 0, &["op `act`", "axis 5"]);
    let src = MLP.replace("inputs = [\"norm\"]", "inputs = [\"norm\", \"x\"]");
    assert_err(&src, "[\"norm\", \"x\"]", 0, &["`inputs`", "1 value"]);
}

#[test]
fn explicit_attributes_are_typed() {
    let g = load(&MLP.replace("eps = 1e-6", "eps = 1"));
    assert_eq!(op(&g, "norm").attrs.float("eps"), Some(1.0));
    let g = load(&MLP.replace("eps = 1e-6\n", ""));
    assert_eq!(op(&g, "norm").attrs.float("eps"), Some(1e-6));
    let src = MLP.replace("kind = \"silu\"", "kind = \"softmax\"\naxis = 1.5");
    assert_err(&src, "1.5", 0, &["`axis` must be an integer"]);
    let src = MLP.replace("kind = \"silu\"", "kind = \"cast\"\ndtype = \"f9\"");
    assert_err(&src, "\"f9\"", 0, &["`dtype`", "f9"]);
    let src = MLP.replace("kind = \"silu\"", "kind = \"cast\"\ndtype = \"f32\"");
    assert_eq!(
        op(&load(&src), "act").attrs.dtype("dtype"),
        Some(DType::F32)
    );
}

#[test]
fn columns_count_characters() {
    let src = MLP.replace("name = \"mlp\"", "name = \"mlp\" # é\nbogus = 1");
    let e = err(&src);
    assert_eq!(e.col, 1, "{e}");
    let src = "[model]\nname = \"é\"\nouputs = 1\n";
    let e = err(src);
    assert_eq!((e.line, e.col), (3, 1), "{e}");
    let src = "[model]\nname = \"ééé\", outputs = 1\n";
    let e = err(src);
    assert_eq!((e.line, e.col), (2, 13), "{e}");
}

// --- rope scaling ---

/// The `[model.rope_scaling]` of DeepSeek's configs, without the optional keys.
const YARN: &str = "type = \"yarn\"\nfactor = 40\noriginal_max_position_embeddings = 4096\n";

/// The `[model.rope_scaling]` of Llama 3.1's config.
const LLAMA3: &str = "type = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 1.0\n\
                      high_freq_factor = 4.0\noriginal_max_position_embeddings = 8192\n";

/// `base` with a `[model.rope_scaling]` table of `body` at the end.
fn with_scaling(base: &str, body: &str) -> String {
    format!("{base}\n[model.rope_scaling]\n{body}")
}

/// Asserts `a` and `b` agree to within a few ulps.
fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-15 * b.abs(), "{a} != {b}");
}

#[test]
fn v3_rope_carries_yarn_and_scales_the_softmax() {
    let g = load(V3);
    for layer in [0, 60] {
        for rope in ["q_rope", "k_rope"] {
            let a = &op(&g, &format!("model.layers.{layer}.self_attn.{rope}")).attrs;
            assert_eq!(a.str("style"), Some("interleaved"));
            assert_eq!(a.str("scaling"), Some("yarn"));
            assert_eq!(a.float("factor"), Some(40.0));
            assert_eq!(a.int("original_max_position"), Some(4096));
            assert_eq!(a.float("beta_fast"), Some(32.0));
            assert_eq!(a.float("beta_slow"), Some(1.0));
            assert_eq!(a.float("mscale"), Some(1.0));
            assert_eq!(a.float("mscale_all_dim"), Some(1.0));
        }
    }
    // (qk_nope + qk_rope)^-0.5 · m², m = 0.1 · mscale_all_dim · ln(factor) + 1.
    let scale = op(&g, "model.layers.0.self_attn.scores")
        .attrs
        .float("scale")
        .unwrap();
    let m = 0.1 * 40f64.ln() + 1.0;
    assert_close(scale, 192f64.powf(-0.5) * m * m);
    assert!((scale - 0.135_234).abs() < 1e-6, "{scale}");
}

#[test]
fn v2_lite_rope_carries_its_mscale() {
    let g = load(V2_LITE);
    let a = &op(&g, "model.layers.26.self_attn.k_rope").attrs;
    assert_eq!(a.str("scaling"), Some("yarn"));
    assert_eq!(a.float("mscale"), Some(0.707));
    assert_eq!(a.float("mscale_all_dim"), Some(0.707));
    let scale = op(&g, "model.layers.3.self_attn.scores")
        .attrs
        .float("scale")
        .unwrap();
    let m = 0.1 * 0.707 * 40f64.ln() + 1.0;
    assert_close(scale, 192f64.powf(-0.5) * m * m);
}

#[test]
fn rope_scaling_is_optional_and_has_hf_defaults() {
    // Without the table: no scaling attributes, the plain softmax scale.
    let g = load(TINY);
    let rope = op(&g, "model.layers.0.self_attn.q_rope");
    assert!(rope.attrs.get("scaling").is_none());
    assert!(rope.attrs.get("factor").is_none());

    // Only the required keys: HF's defaults, and mscale_all_dim = 0 leaves the softmax scale.
    let g = load(&with_scaling(TINY, YARN));
    let a = &op(&g, "model.layers.1.self_attn.q_rope").attrs;
    assert_eq!(a.str("scaling"), Some("yarn"));
    assert_eq!(a.float("beta_fast"), Some(32.0));
    assert_eq!(a.float("beta_slow"), Some(1.0));
    assert_eq!(a.float("mscale"), Some(1.0));
    assert_eq!(a.float("mscale_all_dim"), Some(0.0));
    let scores = op(&g, "model.layers.1.self_attn.scores");
    assert_eq!(scores.attrs.float("scale"), Some(48f64.powf(-0.5)));

    // An inline table works as well.
    let src = TINY.replace(
        "dim = 256\n",
        "dim = 256\nrope_scaling = { type = \"yarn\", factor = 4, original_max_position_embeddings = 64, mscale_all_dim = 1 }\n",
    );
    let g = load(&src);
    let scale = op(&g, "model.layers.0.self_attn.scores")
        .attrs
        .float("scale")
        .unwrap();
    let m = 0.1 * 4f64.ln() + 1.0;
    assert_close(scale, 48f64.powf(-0.5) * m * m);
    assert_eq!(
        op(&g, "model.layers.0.self_attn.k_rope")
            .attrs
            .int("original_max_position"),
        Some(64)
    );

    // factor = 1 is allowed (no scaling in effect): m = 1.
    let src = with_scaling(
        TINY,
        &YARN.replace("factor = 40", "factor = 1\nmscale_all_dim = 1"),
    );
    let g = load(&src);
    let scores = op(&g, "model.layers.0.self_attn.scores");
    assert_eq!(scores.attrs.float("scale"), Some(48f64.powf(-0.5)));
}

#[test]
fn llama3_scaling_sets_the_rope_attributes() {
    let g = load(&with_scaling(LLAMA, LLAMA3));
    for rope in ["q_rope", "k_rope"] {
        let a = &op(&g, &format!("model.layers.3.self_attn.{rope}")).attrs;
        assert_eq!(a.str("style"), Some("half"));
        assert_eq!(a.float("theta"), Some(500000.0));
        assert_eq!(a.str("scaling"), Some("llama3"));
        assert_eq!(a.float("factor"), Some(8.0));
        assert_eq!(a.float("low_freq_factor"), Some(1.0));
        assert_eq!(a.float("high_freq_factor"), Some(4.0));
        assert_eq!(a.int("original_max_position"), Some(8192));
        assert!(a.get("beta_fast").is_none());
    }
    // Llama 3 scaling leaves the softmax scale alone.
    let scores = op(&g, "model.layers.0.self_attn.scores");
    assert_eq!(scores.attrs.float("scale"), Some(64f64.powf(-0.5)));
}

#[test]
fn rope_scaling_unknown_keys() {
    let src = with_scaling(TINY, &format!("{YARN}alpha = 1\n"));
    assert_err(
        &src,
        "alpha = 1",
        0,
        &["unknown key `alpha`", "[model.rope_scaling]", "beta_fast"],
    );
    // A key of the other scaling type says so.
    let src = with_scaling(TINY, &format!("{YARN}low_freq_factor = 1.0\n"));
    assert_err(
        &src,
        "low_freq_factor",
        0,
        &["`low_freq_factor`", "\"llama3\"", "not \"yarn\""],
    );
    let src = with_scaling(LLAMA, &format!("{LLAMA3}mscale = 1.0\n"));
    assert_err(&src, "mscale = 1.0", 0, &["`mscale`", "\"yarn\""]);
    // HF's newer spelling is not taken: one name per key.
    let src = with_scaling(TINY, &YARN.replace("type", "rope_type"));
    assert_err(&src, "[model.rope_scaling]", 0, &["missing key `type`"]);
}

#[test]
fn rope_scaling_wrong_types() {
    let src = with_scaling(TINY, &YARN.replace("factor = 40", "factor = \"40\""));
    assert_err(&src, "\"40\"", 0, &["`factor` must be a number", "string"]);
    let src = with_scaling(TINY, &YARN.replace("= 4096", "= 4096.0"));
    assert_err(
        &src,
        "4096.0",
        0,
        &["`original_max_position_embeddings` must be an integer"],
    );
    let src = with_scaling(TINY, &YARN.replace("type = \"yarn\"", "type = 3"));
    assert_err(&src, "type = 3", 7, &["`type` must be a string"]);
    let src = with_scaling(TINY, &format!("{YARN}beta_fast = true\n"));
    assert_err(
        &src,
        "true",
        0,
        &["`beta_fast` must be a number", "boolean"],
    );
    let src = TINY.replace("dim = 256\n", "dim = 256\nrope_scaling = \"yarn\"\n");
    assert_err(&src, "\"yarn\"", 0, &["`rope_scaling` must be a table"]);
}

#[test]
fn rope_scaling_type_must_suit_the_architecture() {
    let src = with_scaling(TINY, LLAMA3);
    assert_err(
        &src,
        "\"llama3\"",
        0,
        &["`type`", "\"yarn\"", "deepseek", "not \"llama3\""],
    );
    let src = with_scaling(LLAMA, YARN);
    assert_err(
        &src,
        "\"yarn\"",
        0,
        &["`type`", "\"llama3\"", "llama", "not \"yarn\""],
    );
    let src = with_scaling(TINY, &YARN.replace("\"yarn\"", "\"linear\""));
    assert_err(&src, "\"linear\"", 0, &["`type`", "\"yarn\"", "\"linear\""]);
}

#[test]
fn impossible_rope_scaling_values() {
    let yarn = |from: &str, to: &str| with_scaling(TINY, &YARN.replace(from, to));
    let src = yarn("factor = 40", "factor = 0.5");
    assert_err(
        &src,
        "factor = 0.5",
        9,
        &["`factor` must be at least 1", "0.5"],
    );
    let src = yarn("= 4096", "= 0");
    assert_err(
        &src,
        "original_max_position_embeddings = 0",
        35,
        &["`original_max_position_embeddings` must be positive"],
    );
    let src = yarn("factor = 40\n", "");
    assert_err(&src, "[model.rope_scaling]", 0, &["missing key `factor`"]);
    let src = yarn("type = \"yarn\"\n", "");
    assert_err(&src, "[model.rope_scaling]", 0, &["missing key `type`"]);
    // beta_fast must exceed beta_slow; the error is at the key that was written.
    let src = with_scaling(TINY, &format!("{YARN}beta_slow = 64\n"));
    assert_err(
        &src,
        "beta_slow = 64",
        12,
        &["`beta_fast` (32)", "`beta_slow` (64)"],
    );
    let src = with_scaling(TINY, &format!("{YARN}beta_fast = 2\nbeta_slow = 2\n"));
    assert_err(
        &src,
        "beta_fast = 2",
        12,
        &["must be greater than `beta_slow`"],
    );
    let src = with_scaling(TINY, &format!("{YARN}beta_slow = 0\n"));
    assert_err(&src, "beta_slow = 0", 12, &["`beta_slow` must be positive"]);
    let src = with_scaling(TINY, &format!("{YARN}mscale_all_dim = -1\n"));
    assert_err(
        &src,
        "mscale_all_dim = -1",
        17,
        &["`mscale_all_dim` must be zero or positive"],
    );

    let llama3 = |from: &str, to: &str| with_scaling(LLAMA, &LLAMA3.replace(from, to));
    let src = llama3("high_freq_factor = 4.0", "high_freq_factor = 1.0");
    assert_err(
        &src,
        "high_freq_factor = 1.0",
        19,
        &[
            "`high_freq_factor` (1)",
            "greater than `low_freq_factor` (1)",
        ],
    );
    let src = llama3("low_freq_factor = 1.0", "low_freq_factor = 0");
    assert_err(
        &src,
        "low_freq_factor = 0",
        18,
        &["`low_freq_factor` must be positive"],
    );
    let src = llama3("factor = 8.0", "factor = 0.9");
    assert_err(&src, "factor = 0.9", 9, &["`factor` must be at least 1"]);
    let src = llama3("high_freq_factor = 4.0\n", "");
    assert_err(
        &src,
        "[model.rope_scaling]",
        0,
        &["missing key `high_freq_factor`"],
    );
}

/// An explicit graph of one rope op with YaRN scaling.
const EXPLICIT_YARN: &str = "[model]\nname = \"r\"\noutputs = [\"r\"]\n\n\
    [[input]]\nname = \"x\"\ndtype = \"bf16\"\nshape = [1, 8, 2, 16]\n\n\
    [[op]]\nname = \"r\"\nkind = \"rope\"\ninputs = [\"x\"]\nstyle = \"interleaved\"\n\
    theta = 10000.0\nscaling = \"yarn\"\nfactor = 40.0\noriginal_max_position = 4096\n\
    beta_fast = 32.0\nbeta_slow = 1.0\nmscale = 1.0\nmscale_all_dim = 1.0\n";

#[test]
fn rope_ops_check_their_scaling_attributes() {
    let g = load(EXPLICIT_YARN);
    assert_eq!(op(&g, "r").attrs.float("mscale_all_dim"), Some(1.0));
    let bad = |src: &str, words: &[&str]| assert_err(src, "[[op]]", 0, words);
    // Each YaRN parameter is required.
    for key in [
        "factor",
        "original_max_position",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
    ] {
        let src = set(EXPLICIT_YARN, key, "");
        bad(&src, &["op `r`", &format!("needs attribute `{key}`")]);
    }
    bad(
        &set(EXPLICIT_YARN, "factor", "factor = 0.5"),
        &["op `r`", "factor must be at least 1"],
    );
    bad(
        &set(
            EXPLICIT_YARN,
            "original_max_position",
            "original_max_position = 0",
        ),
        &["original_max_position must be positive"],
    );
    bad(
        &set(EXPLICIT_YARN, "beta_slow", "beta_slow = 32.0"),
        &["beta_fast > beta_slow"],
    );
    bad(
        &set(EXPLICIT_YARN, "mscale", "mscale = -1.0"),
        &["mscale must not be negative"],
    );
    bad(
        &format!("{EXPLICIT_YARN}low_freq_factor = 1.0\n"),
        &["`low_freq_factor` does not apply to yarn scaling"],
    );
    // Without `scaling`, a rope takes none of the parameters.
    bad(
        &set(EXPLICIT_YARN, "scaling", ""),
        &["`factor` needs a `scaling`"],
    );

    // Llama 3: its four parameters, high_freq_factor above low_freq_factor.
    let llama3 = EXPLICIT_YARN.replace("\"yarn\"", "\"llama3\"").replace(
        "beta_fast = 32.0\nbeta_slow = 1.0\nmscale = 1.0\nmscale_all_dim = 1.0\n",
        "low_freq_factor = 1.0\nhigh_freq_factor = 4.0\n",
    );
    let g = load(&llama3);
    assert_eq!(op(&g, "r").attrs.str("scaling"), Some("llama3"));
    bad(
        &set(&llama3, "high_freq_factor", "high_freq_factor = 0.5"),
        &["high_freq_factor > low_freq_factor > 0"],
    );
    bad(
        &set(&llama3, "low_freq_factor", ""),
        &["needs attribute `low_freq_factor`"],
    );
    bad(
        &format!("{llama3}beta_fast = 32.0\n"),
        &["`beta_fast` does not apply to llama3 scaling"],
    );
}
