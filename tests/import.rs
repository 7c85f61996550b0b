//! Hugging Face checkpoints end to end, on checkpoints the tests generate (tiny deepseek_v3,
//! deepseek_v2, llama and qwen2 configs, random BF16 weights, two shards with an index):
//! `dsc import` → `dsc compile` → `dsc run --weights DIR`, `dsc quantize-weights`, and the
//! errors of broken checkpoints.

use crate::support::{TempDir, dsc, streams};
use dsc_ir::model::hf::{ImportOptions, import};
use dsc_ir::model::load_model;
use dsc_runtime::{Checkpoint, HostTensor, hf_tensors, random_weights, write_safetensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const V3: &str = r#"{
  "architectures": ["DeepseekV3ForCausalLM"],
  "model_type": "deepseek_v3",
  "vocab_size": 96,
  "hidden_size": 64,
  "intermediate_size": 96,
  "moe_intermediate_size": 32,
  "num_hidden_layers": 2,
  "num_nextn_predict_layers": 1,
  "num_attention_heads": 2,
  "num_key_value_heads": 2,
  "n_shared_experts": 1,
  "n_routed_experts": 4,
  "routed_scaling_factor": 2.5,
  "kv_lora_rank": 32,
  "q_lora_rank": 48,
  "qk_rope_head_dim": 16,
  "v_head_dim": 32,
  "qk_nope_head_dim": 32,
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
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16"
}"#;

const V2: &str = r#"{
  "model_type": "deepseek_v2",
  "vocab_size": 96,
  "hidden_size": 64,
  "intermediate_size": 96,
  "moe_intermediate_size": 32,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "n_shared_experts": 2,
  "n_routed_experts": 4,
  "routed_scaling_factor": 1.0,
  "kv_lora_rank": 32,
  "q_lora_rank": null,
  "qk_rope_head_dim": 16,
  "v_head_dim": 32,
  "qk_nope_head_dim": 32,
  "topk_method": "group_limited_greedy",
  "n_group": 2,
  "topk_group": 1,
  "num_experts_per_tok": 2,
  "moe_layer_freq": 1,
  "first_k_dense_replace": 1,
  "norm_topk_prob": false,
  "scoring_func": "softmax",
  "aux_loss_alpha": 0.001,
  "seq_aux": true,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-06
}"#;

pub(crate) const LLAMA: &str = r#"{
  "model_type": "llama",
  "hidden_size": 64,
  "intermediate_size": 160,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "num_hidden_layers": 2,
  "vocab_size": 96,
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": false,
  "hidden_act": "silu"
}"#;

/// As transformers 5 saves a `Qwen2Config`: q/k/v with a bias, tied head, no sliding window.
const QWEN2: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 64,
  "intermediate_size": 160,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "num_hidden_layers": 2,
  "vocab_size": 96,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
  "tie_word_embeddings": true,
  "use_sliding_window": false,
  "sliding_window": 4,
  "max_window_layers": 28,
  "layer_types": ["full_attention", "full_attention"],
  "attention_dropout": 0.0,
  "hidden_act": "silu",
  "dtype": "bfloat16"
}"#;

/// What to break when writing a checkpoint.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Damage {
    None,
    /// Leave out the first q/kv projection weight.
    MissingTensor,
    /// Write the first norm weight as I32.
    WrongDtype,
    /// Write the first k projection weight transposed ([K, N] for [N, K]).
    WrongShape,
}

/// Writes `config` and its random BF16 weights as a checkpoint of two shards with an index
/// (plus, with `extra_layer`, one tensor of a layer beyond the model's, as MTP layers are).
pub(crate) fn write_checkpoint(dir: &Path, config: &str, extra_layer: bool, damage: Damage) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let opts = ImportOptions {
        name: "gen".into(),
        batch: 1,
        seq_len: 8,
    };
    let graph = load_model(&import(config, &opts).unwrap().toml).unwrap();
    let weights = random_weights(&graph, 7).unwrap();
    let mut tensors = hf_tensors(&weights, &graph).unwrap();
    if extra_layer {
        let embed = tensors[0].1.clone();
        tensors.push(("model.layers.2.embed_tokens.weight".into(), embed));
    }
    if damage == Damage::MissingTensor {
        let i = tensors
            .iter()
            .position(|(n, _)| n.contains("proj"))
            .unwrap();
        tensors.remove(i);
    }
    if damage == Damage::WrongDtype {
        let i = tensors
            .iter()
            .position(|(n, _)| n.contains("layernorm"))
            .unwrap();
        let shape = tensors[i].1.shape.clone();
        tensors[i].1 = HostTensor::zeros(dsc_ir::DType::I32, shape);
    }
    if damage == Damage::WrongShape {
        let i = tensors
            .iter()
            .position(|(n, _)| n.contains("k_proj.weight"))
            .unwrap();
        let t = &mut tensors[i].1;
        t.shape.reverse();
    }
    let half = tensors.len() / 2;
    let mut weight_map = BTreeMap::new();
    for (k, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        write_safetensors(&dir.join(&file), part.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        for (n, _) in part {
            weight_map.insert(n.clone(), file.clone());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs dsc, asserting success; returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    let out = dsc(args);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{args:?} failed:\n{stderr}");
    (stdout, stderr)
}

/// Runs dsc, asserting a clean failure (exit 1, an `error:` line after any notes, no panic);
/// returns stderr.
fn fails(args: &[&str]) -> String {
    let out = dsc(args);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The logits a run wrote, as raw bf16 bytes (compared bit for bit).
fn logits_bytes(path: &Path) -> Vec<u8> {
    let file = Checkpoint::open(path).unwrap();
    file.tensor("logits").expect("logits written").data.to_vec()
}

/// `dsc run ART --device cpu --weights W --output OUT`; returns the logits bytes and stderr.
fn run_with(art: &Path, weights: &Path, out: &Path) -> (Vec<u8>, String) {
    let (_, stderr) = ok(&[
        "run",
        &s(art),
        "--device",
        "cpu",
        "--weights",
        &s(weights),
        "--output",
        &s(out),
    ]);
    (logits_bytes(out), stderr)
}

/// import → compile → run, then quantize-weights and run again: the same logits, bit for bit.
fn end_to_end(name: &str, config: &str, extra_layer: bool) {
    let tmp = TempDir::new(&format!("hf-{name}"));
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, config, extra_layer, Damage::None);
    let toml = tmp.join("model.toml");
    let (_, notes) = ok(&["import", &s(&ckpt), "--seq-len", "8", "-o", &s(&toml)]);
    assert!(notes.contains("wrote"), "{notes}");
    let art = tmp.join("art");
    ok(&["compile", &s(&toml), "-o", &s(&art)]);
    // compile takes the checkpoint directory as well, and builds the same graph.
    let art_dir = tmp.join("art-dir");
    ok(&["compile", &s(&ckpt), "--seq-len", "8", "-o", &s(&art_dir)]);
    assert_eq!(
        std::fs::read_to_string(art.join("graph.dsc")).unwrap(),
        std::fs::read_to_string(art_dir.join("graph.dsc")).unwrap()
    );

    let (bf16, stderr) = run_with(&art, &ckpt, &tmp.join("bf16.safetensors"));
    assert_eq!(
        stderr.contains("note: ignored 1 tensors of layers beyond the model's 2"),
        extra_layer,
        "{stderr}"
    );

    let fp8 = tmp.join("fp8");
    let (stdout, progress) = ok(&["quantize-weights", &s(&ckpt), "-o", &s(&fp8)]);
    assert!(
        progress.contains("[1/2]") && progress.contains("[2/2]"),
        "{progress}"
    );
    assert!(stdout.contains("weights in FP8"), "{stdout}");
    let q = Checkpoint::open(&fp8).unwrap();
    let dtype = |n: &str| q.tensor(n).map(|v| v.dtype.to_string());
    let o = "model.layers.0.self_attn.o_proj";
    assert_eq!(dtype(&format!("{o}.weight")).as_deref(), Some("F8_E4M3"));
    assert_eq!(
        dtype(&format!("{o}.weight_scale_inv")).as_deref(),
        Some("F32")
    );
    let tied = config.contains("\"tie_word_embeddings\": true");
    for kept in [
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
    ] {
        let want = (!(tied && kept == "lm_head.weight")).then_some("BF16");
        assert_eq!(dtype(kept).as_deref(), want, "{kept}");
    }
    if config.contains("qwen2") {
        // The biases stay BF16 next to their FP8 weights.
        for proj in ["q_proj", "k_proj", "v_proj"] {
            let p = format!("model.layers.1.self_attn.{proj}");
            assert_eq!(dtype(&format!("{p}.bias")).as_deref(), Some("BF16"));
            assert_eq!(dtype(&format!("{p}.weight")).as_deref(), Some("F8_E4M3"));
        }
        assert_eq!(dtype(&format!("{o}.bias")), None);
    }
    if config.contains("deepseek") {
        assert_eq!(
            dtype("model.layers.1.mlp.gate.weight").as_deref(),
            Some("BF16")
        );
        assert_eq!(
            dtype("model.layers.1.mlp.experts.3.down_proj.weight").as_deref(),
            Some("F8_E4M3")
        );
    }
    let config_out = std::fs::read_to_string(fp8.join("config.json")).unwrap();
    assert!(config_out.contains("\"weight_block_size\""), "{config_out}");
    // The FP8 checkpoint's config imports to the same model (its [precision] is the default).
    let (fp8_logits, _) = run_with(&art, &fp8, &tmp.join("fp8.safetensors"));
    assert_eq!(
        fp8_logits, bf16,
        "FP8 checkpoint and BF16 quantized on load disagree"
    );
    let art_fp8 = tmp.join("art-fp8");
    ok(&["compile", &s(&fp8), "--seq-len", "8", "-o", &s(&art_fp8)]);
    let (again, _) = run_with(&art_fp8, &fp8, &tmp.join("fp8-again.safetensors"));
    assert_eq!(again, bf16);
    // The output directory is never overwritten.
    let e = fails(&["quantize-weights", &s(&ckpt), "-o", &s(&fp8)]);
    assert!(e.contains("exists already"), "{e}");
}

#[test]
fn deepseek_v3_checkpoint_end_to_end() {
    end_to_end("v3", V3, true);
}

#[test]
fn deepseek_v2_checkpoint_end_to_end() {
    end_to_end("v2", V2, false);
}

#[test]
fn llama_checkpoint_end_to_end() {
    end_to_end("llama", LLAMA, false);
}

#[test]
fn qwen2_checkpoint_end_to_end() {
    end_to_end("qwen2", QWEN2, false);
}

fn compiled(tmp: &TempDir) -> PathBuf {
    let art = tmp.join("art");
    let cfg = tmp.join("config.json");
    std::fs::write(&cfg, LLAMA).unwrap();
    ok(&["compile", &s(&cfg), "--seq-len", "8", "-o", &s(&art)]);
    art
}

/// `dsc run --device cpu` of `art` with the weights in `ckpt`, which must fail: its stderr.
fn run_fails(art: &Path, ckpt: &Path, out: &Path) -> String {
    fails(&[
        "run",
        &s(art),
        "--device",
        "cpu",
        "--weights",
        &s(ckpt),
        "--output",
        &s(out),
    ])
}

#[test]
fn a_truncated_shard_is_a_clear_error() {
    let tmp = TempDir::new("hf-truncated");
    let art = compiled(&tmp);
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::None);
    let shard = ckpt.join("model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(len - 100).unwrap();
    let e = run_fails(&art, &ckpt, &tmp.join("o.safetensors"));
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("truncated"),
        "{e}"
    );
    let e = fails(&["quantize-weights", &s(&ckpt), "-o", &s(&tmp.join("q"))]);
    assert!(e.contains("truncated"), "{e}");
    assert!(!tmp.join("q").exists());
}

#[test]
fn a_missing_tensor_is_named() {
    let tmp = TempDir::new("hf-missing");
    let art = compiled(&tmp);
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::MissingTensor);
    let e = run_fails(&art, &ckpt, &tmp.join("o.safetensors"));
    assert!(e.contains("1 missing"), "{e}");
    assert!(
        e.contains("`model.layers.0.self_attn.q_proj.weight`"),
        "{e}"
    );
    let e = fails(&["quantize-weights", &s(&ckpt), "-o", &s(&tmp.join("q"))]);
    assert!(e.contains("q_proj.weight"), "{e}");
}

#[test]
fn a_wrong_dtype_is_named() {
    let tmp = TempDir::new("hf-dtype");
    let art = compiled(&tmp);
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::WrongDtype);
    let e = run_fails(&art, &ckpt, &tmp.join("o.safetensors"));
    assert!(e.contains("1 wrong dtype"), "{e}");
    assert!(e.contains("input_layernorm.weight`: expected BF16"), "{e}");
}

#[test]
fn import_errors_point_into_the_config() {
    let tmp = TempDir::new("hf-bad-config");
    let cfg = tmp.join("config.json");
    std::fs::write(&cfg, LLAMA.replace("\"silu\"", "\"gelu\"")).unwrap();
    let e = fails(&["import", &s(&cfg)]);
    assert!(
        e.contains("config.json:14:3: unsupported `hidden_act` = \"gelu\""),
        "{e}"
    );
    let e = fails(&["compile", &s(&cfg), "-o", &s(&tmp.join("art"))]);
    assert!(e.contains("`hidden_act`"), "{e}");
    assert!(!tmp.join("art").exists());
    let e = fails(&["compile", "examples/mlp.toml", "--batch", "2"]);
    assert!(
        e.contains("--batch and --seq-len apply to a Hugging Face config"),
        "{e}"
    );
    // Sizes no model takes are the flag's errors, not the config's (exit code 2, as every
    // malformed argument).
    for (command, flag, value) in [
        ("compile", "--batch", "18446744073709551615"),
        ("compile", "--seq-len", "0"),
        ("import", "--seq-len", "100000000"),
    ] {
        let out = dsc(&[command, &s(&cfg), flag, value]);
        let e = streams(&out).1;
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(
            e.contains(&format!("invalid value '{value}' for '{flag}")),
            "{e}"
        );
        assert!(!e.contains("config.json:1:1"), "{e}");
    }
}
