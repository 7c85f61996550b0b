//! Tests of weight loading, saving and random weights on the tiny-moe example.

use super::*;
use crate::checkpoint::Checkpoint;
use crate::random_weights::random_weights;
use crate::tensor::write_safetensors;
use crate::testutil::{compiled_graph, example_graph, scratch_dir};
use dsc_ir::DType;
use dsc_kernels::Fp8Format;
use dsc_kernels::weight_quant_128x128;
use safetensors::Dtype as StDtype;
use std::path::Path;

/// The parameter called `name`.
fn param(graph: &Graph, name: &str) -> ValueId {
    *graph
        .params
        .iter()
        .find(|&&p| graph.name(p) == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"))
}

fn save(weights: &Weights, graph: &Graph, test: &str) -> std::path::PathBuf {
    let path = scratch_dir(test).join("model.safetensors");
    save_safetensors(weights, graph, &path).unwrap();
    path
}

fn load(graph: &Graph, path: &Path) -> Result<Weights, RuntimeError> {
    load_weights(graph, &Checkpoint::open(path)?)
}

/// Writes named tensors, then loads them into `graph` and returns the error message.
fn load_error(graph: &Graph, tensors: &[(String, HostTensor)], test: &str) -> String {
    let path = scratch_dir(test).join("w.safetensors");
    write_safetensors(&path, tensors.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
    let err = load(graph, &path).expect_err("loading should fail");
    assert!(matches!(err, RuntimeError::Weights { .. }), "{err}");
    err.to_string()
}

fn mean_std(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn random_weights_are_deterministic_and_realistic() {
    let graph = compiled_graph("tiny-moe");
    let a = random_weights(&graph, 7).unwrap();
    assert_eq!(a, random_weights(&graph, 7).unwrap());
    assert_ne!(a, random_weights(&graph, 8).unwrap());
    a.check(&graph).unwrap();
    assert_eq!(a.len(), graph.params.len());

    let values = |name: &str| a.by_name(&graph, name).unwrap().as_f32().unwrap().to_vec();
    let (m, s) = mean_std(&values("model.embed_tokens.weight"));
    assert!(
        m.abs() < 0.002 && (s - 0.02).abs() < 0.002,
        "embedding {m} {s}"
    );
    let (m, s) = mean_std(&values("lm_head.weight"));
    assert!(m.abs() < 0.002 && (s - 0.02).abs() < 0.002, "head {m} {s}");
    let (m, s) = mean_std(&values("model.layers.1.input_layernorm.weight"));
    assert!(
        (m - 1.0).abs() < 0.01 && s > 0.0 && s < 0.05,
        "norm {m} {s}"
    );
    let bias = values("model.layers.1.mlp.gate.e_score_correction_bias");
    assert!(
        bias.iter().all(|b| b.abs() < 0.06) && bias.iter().any(|&b| b != 0.0),
        "{bias:?}"
    );

    // An FP8 weight decodes (codes × block scale) to N(0, 0.02²).
    let w = param(&graph, "model.layers.1.mlp.experts.{e}.up_proj.weight");
    let s = param(
        &graph,
        "model.layers.1.mlp.experts.{e}.up_proj.weight_scale_inv",
    );
    let (w, s) = (a.get(w).unwrap(), a.get(s).unwrap());
    assert_eq!((w.dtype, &w.shape[..]), (DType::F8E4M3, &[8, 128, 256][..]));
    assert_eq!(s.shape, [8, 1, 2]);
    let scales = s.as_f32().unwrap();
    let decoded: Vec<f32> = w
        .to_f32_vec()
        .iter()
        .enumerate()
        .map(|(i, &q)| q * scales[(i / (128 * 256)) * 2 + (i % 256) / 128])
        .collect();
    let (m, sd) = mean_std(&decoded);
    assert!(
        m.abs() < 0.002 && (sd - 0.02).abs() < 0.002,
        "expert {m} {sd}"
    );
}

#[test]
fn fp8_random_weights_equal_random_bf16_weights_quantized() {
    let fp8 = compiled_graph("tiny-moe");
    let bf16 = example_graph("tiny-moe");
    let high = random_weights(&bf16, 3).unwrap();
    let quantized = random_weights(&fp8, 3).unwrap();
    // The same draw, quantized by the kernels' weight_quant.
    let name = "model.layers.0.mlp.down_proj.weight";
    let w = high.by_name(&bf16, name).unwrap();
    let q = weight_quant_128x128(
        w.as_f32().unwrap(),
        256,
        512,
        128,
        Fp8Format::E4M3,
        dsc_ir::ScaleFormat::F32,
    )
    .unwrap();
    assert_eq!(
        quantized.by_name(&fp8, name).unwrap().as_codes().unwrap(),
        q.codes
    );
    let scales = quantized.by_name(&fp8, &scale_name(name)).unwrap();
    assert_eq!(scales.as_f32().unwrap(), q.scales);
    // And loading the BF16 weights into the FP8 graph gives exactly the random FP8 model.
    let path = save(&high, &bf16, "bf16-into-fp8");
    assert_eq!(load(&fp8, &path).unwrap(), quantized);
}

#[test]
fn the_explicit_example_round_trips_and_quantizes_alike() {
    // The mlp example (explicit form); llama-small works too but takes seconds in debug builds.
    let (fp8, high) = (compiled_graph("mlp"), example_graph("mlp"));
    let weights = random_weights(&high, 13).unwrap();
    let path = save(&weights, &high, "mlp");
    assert_eq!(load(&high, &path).unwrap(), weights);
    assert_eq!(
        load(&fp8, &path).unwrap(),
        random_weights(&fp8, 13).unwrap()
    );
    let norm = weights
        .by_name(&high, "norm.weight")
        .unwrap()
        .as_f32()
        .unwrap();
    assert!(
        norm.iter().all(|&w| (w - 1.0).abs() < 0.2),
        "norm weights near 1"
    );
}

#[test]
fn save_then_load_round_trips() {
    for graph in [compiled_graph("tiny-moe"), example_graph("tiny-moe")] {
        let weights = random_weights(&graph, 11).unwrap();
        let path = save(&weights, &graph, "round-trip");
        let ckpt = Checkpoint::open(&path).unwrap();
        // Experts are stored one tensor per expert under their Hugging Face names.
        let up = ckpt
            .tensor("model.layers.1.mlp.experts.7.up_proj.weight")
            .unwrap();
        assert_eq!(up.shape, [128, 256]);
        assert!(
            ckpt.tensor("model.layers.1.mlp.experts.{e}.up_proj.weight")
                .is_none()
        );
        assert_eq!(load_weights(&graph, &ckpt).unwrap(), weights);
    }
    let fp8 = compiled_graph("tiny-moe");
    let ckpt =
        Checkpoint::open(save(&random_weights(&fp8, 1).unwrap(), &fp8, "fp8-dtypes")).unwrap();
    let w = ckpt.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
    let s = ckpt
        .tensor("model.layers.0.mlp.up_proj.weight_scale_inv")
        .unwrap();
    assert_eq!((w.dtype, s.dtype), (StDtype::F8_E4M3, StDtype::F32));
    let e = ckpt.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(e.dtype, StDtype::BF16);
}

#[test]
fn an_fp8_checkpoint_dequantizes_into_high_precision_params() {
    let fp8 = compiled_graph("tiny-moe");
    let bf16 = example_graph("tiny-moe");
    let weights = random_weights(&fp8, 5).unwrap();
    let path = save(&weights, &fp8, "fp8-into-bf16");
    let loaded = load(&bf16, &path).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    let codes = weights.by_name(&fp8, name).unwrap().to_f32_vec();
    let scales = weights.by_name(&fp8, &scale_name(name)).unwrap();
    let scales = scales.as_f32().unwrap();
    let want: Vec<f32> = codes
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            crate::tensor::round_to(
                DType::Bf16,
                q * scales[(i / 256 / 128) * 2 + (i % 256) / 128],
            )
        })
        .collect();
    assert_eq!(loaded.by_name(&bf16, name).unwrap().as_f32().unwrap(), want);
}

#[test]
fn a_sharded_checkpoint_directory_loads() {
    let graph = compiled_graph("tiny-moe");
    let weights = random_weights(&graph, 21).unwrap();
    let tensors = hf_tensors(&weights, &graph).unwrap();
    let dir = scratch_dir("sharded");
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        write_safetensors(&dir.join(&file), part.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join(crate::checkpoint::INDEX_FILE), index.to_string()).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.files().count(), 2);
    assert_eq!(load_weights(&graph, &ckpt).unwrap(), weights);
}

#[test]
fn mismatches_are_listed_by_name() {
    let graph = compiled_graph("tiny-moe");
    let good = hf_tensors(&random_weights(&graph, 2).unwrap(), &graph).unwrap();
    let without = |skip: &str| -> Vec<(String, HostTensor)> {
        good.iter().filter(|(n, _)| n != skip).cloned().collect()
    };

    // Missing: a norm weight, and an FP8 weight's scales.
    let mut tensors = without("model.layers.2.post_attention_layernorm.weight");
    tensors.retain(|(n, _)| n != "model.layers.0.mlp.up_proj.weight_scale_inv");
    let e = load_error(&graph, &tensors, "missing");
    assert!(e.contains("2 missing"), "{e}");
    assert!(
        e.contains("`model.layers.2.post_attention_layernorm.weight`: bf16 [256]"),
        "{e}"
    );
    assert!(
        e.contains("`model.layers.0.mlp.up_proj.weight_scale_inv`: F32 [4, 2]"),
        "{e}"
    );

    // Unexpected: a tensor no parameter uses (an expert past the graph's eight).
    let mut tensors = good.clone();
    let extra = good[0].1.clone();
    tensors.push(("model.layers.1.mlp.experts.8.up_proj.weight".into(), extra));
    let e = load_error(&graph, &tensors, "unexpected");
    assert!(
        e.contains("1 unexpected") && e.contains("`model.layers.1.mlp.experts.8.up_proj.weight`"),
        "{e}"
    );

    // Wrong shape.
    let mut tensors = without("model.norm.weight");
    tensors.push((
        "model.norm.weight".into(),
        HostTensor::zeros(DType::Bf16, vec![255]),
    ));
    let e = load_error(&graph, &tensors, "shape");
    assert!(
        e.contains("1 wrong shape")
            && e.contains("`model.norm.weight`: expected [256], found [255]"),
        "{e}"
    );

    // Wrong dtype: integers for a float weight; E5M2 codes for an E4M3 weight.
    let mut tensors = without("model.norm.weight");
    tensors.retain(|(n, _)| n != "model.layers.3.self_attn.o_proj.weight");
    tensors.push((
        "model.norm.weight".into(),
        HostTensor::zeros(DType::I32, vec![256]),
    ));
    tensors.push((
        "model.layers.3.self_attn.o_proj.weight".into(),
        HostTensor::zeros(DType::F8E5M2, vec![256, 128]),
    ));
    let e = load_error(&graph, &tensors, "dtype");
    assert!(e.contains("2 wrong dtype"), "{e}");
    assert!(
        e.contains("`model.norm.weight`: expected BF16, F16 or F32") && e.contains("found I32"),
        "{e}"
    );
    assert!(
        e.contains("`model.layers.3.self_attn.o_proj.weight`: expected F8_E4M3"),
        "{e}"
    );

    // Inconsistent: a BF16 weight next to its FP8 scales.
    let mut tensors = without("model.layers.0.mlp.down_proj.weight");
    tensors.push((
        "model.layers.0.mlp.down_proj.weight".into(),
        HostTensor::zeros(DType::Bf16, vec![256, 512]),
    ));
    let e = load_error(&graph, &tensors, "inconsistent");
    assert!(
        e.contains("1 inconsistent")
            && e.contains("`model.layers.0.mlp.down_proj.weight_scale_inv`: scales given for"),
        "{e}"
    );
}

#[test]
fn long_listings_show_five_and_count_the_rest() {
    let graph = compiled_graph("tiny-moe");
    let mut tensors = vec![(
        "unused.a".to_string(),
        HostTensor::zeros(DType::F32, vec![1]),
    )];
    tensors.push((
        "unused.b".to_string(),
        HostTensor::zeros(DType::F32, vec![1]),
    ));
    let e = load_error(&graph, &tensors, "everything-missing");
    // Every non-scale parameter slice is missing: 4 layers' worth, experts one by one.
    let missing = e.lines().filter(|l| l.starts_with("    `")).count();
    assert_eq!(missing, 5 + 2, "{e}");
    assert!(
        e.contains("unexpected (2):") && e.contains("`unused.a`") && e.contains("`unused.b`"),
        "{e}"
    );
    let more = e
        .lines()
        .find(|l| l.contains("… and "))
        .expect("a count of the rest");
    let n: usize = more
        .trim()
        .trim_start_matches("… and ")
        .trim_end_matches(" more")
        .parse()
        .unwrap();
    let first = e.lines().next().unwrap();
    assert!(first.contains(&format!("{} missing", n + 5)), "{first}");
    assert!(
        first.contains("weights `") && first.contains("do not fit model `tiny-moe`"),
        "{first}"
    );
}

#[test]
fn a_truncated_shard_is_an_error_not_a_panic() {
    let graph = compiled_graph("tiny-moe");
    let path = save(&random_weights(&graph, 4).unwrap(), &graph, "truncated");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = load(&graph, &path).unwrap_err();
    assert!(matches!(e, RuntimeError::Checkpoint { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn weights_check_their_parameters() {
    let graph = compiled_graph("tiny-moe");
    let mut weights = random_weights(&graph, 9).unwrap();
    let norm = param(&graph, "model.norm.weight");
    weights.insert(norm, HostTensor::zeros(DType::F32, vec![256]));
    let e = save_safetensors(
        &weights,
        &graph,
        &scratch_dir("check").join("w.safetensors"),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("`model.norm.weight` is bf16 [256], its tensor f32 [256]"),
        "{e}"
    );
}
