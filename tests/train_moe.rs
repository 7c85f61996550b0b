//! `dsc train` of a DeepSeek-style model (MLA attention, a dense layer, then MoE layers of
//! shared plus routed experts with sigmoid group-limited routing): the loss falls in both
//! recipes and FP8 tracks BF16; in the step graph every parameter but the experts' selection
//! bias (`e_score_correction_bias`) gets a gradient and AdamW, and the bias moves by the
//! auxiliary-loss-free balancing step of its layer's routing instead.

use crate::support::{TempDir, dsc, path, streams, word_corpus};
use dsc_ir::{Graph, OpKind, ValueId, load_train_config};
use dsc_kernels::rng::SplitMix64;
use dsc_runtime::cpu::CpuOptions;
use dsc_runtime::train::Trainer;
use dsc_runtime::{HostData, random_weights};

const MODEL: &str = "tests/train/tiny-moe.toml";
const STEPS: usize = 24;

/// The losses of a `--log` CSV, whose last column, the routed layers' worst load imbalance
/// `max_vio`, must lie between 0 (balanced) and experts − 1 (every token on one expert).
fn losses(csv: &str) -> Vec<f64> {
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("step,loss,lr,grad_norm,tokens_per_s,max_vio")
    );
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            let max_vio: f64 = fields[5].parse().unwrap();
            assert!((0.0..=EXPERTS - 1.0).contains(&max_vio), "{l}");
            fields[1].parse().unwrap()
        })
        .collect()
}

/// The routed experts per MoE layer of the tiny model.
const EXPERTS: f64 = 8.0;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn train(tmp: &TempDir, data: &str, recipe: &str) -> Vec<f64> {
    let log = tmp.join(&format!("{recipe}.csv"));
    let steps = STEPS.to_string();
    let out = dsc(&[
        "train",
        MODEL,
        "--data",
        data,
        "--steps",
        &steps,
        "--recipe",
        recipe,
        "--seed",
        "3",
        "--log",
        &log.to_string_lossy(),
    ]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("({recipe} recipe): {STEPS} steps of 2×32 tokens")),
        "{stdout}"
    );
    losses(&std::fs::read_to_string(log).unwrap())
}

#[test]
fn the_moe_loss_falls_and_fp8_tracks_bf16() {
    let tmp = TempDir::new("train-moe-curves");
    let data = word_corpus(&tmp);
    let bf16 = train(&tmp, &data, "bf16");
    let fp8 = train(&tmp, &data, "fp8");
    assert_eq!((bf16.len(), fp8.len()), (STEPS, STEPS));
    // From about ln(256) ≈ 5.5 to about 2.4 after 24 steps on this corpus.
    for curve in [&bf16, &fp8] {
        assert!(curve[0] > 5.0, "{curve:?}");
        assert!(mean(&curve[19..]) < 3.0, "{curve:?}");
    }
    // Same seed, same batches: the FP8 GEMMs (the grouped experts' Fprop and Dgrad among
    // them) move the curve by well under 5%.
    let gap = (mean(&fp8[19..]) - mean(&bf16[19..])).abs() / mean(&bf16[19..]);
    assert!(gap < 0.05, "relative gap {gap}: fp8 {fp8:?} bf16 {bf16:?}");
    assert_ne!(fp8, bf16);
}

fn is_selection_bias(name: &str) -> bool {
    name.ends_with(".e_score_correction_bias")
}

/// The tiny model's training step (FP8 recipe, as `dsc train` builds it), lowered, with
/// `bias_update_speed` replaced by `speed` where given.
fn step_graph(speed: Option<f64>) -> Graph {
    let text = std::fs::read_to_string(path(MODEL)).unwrap();
    let forward = dsc_ir::model::load_model(&text).unwrap();
    let mut config = load_train_config(&text).unwrap().unwrap_or_default();
    if let Some(s) = speed {
        config.bias_update_speed = s;
    }
    dsc_passes::train_step::build_lowered(&forward, &config).unwrap()
}

#[test]
fn every_parameter_but_the_selection_bias_gets_a_gradient_and_adamw() {
    let g = step_graph(None);
    let has_output = |name: &str| g.outputs.iter().any(|&o| g.name(o) == name);
    let has_input = |name: &str| g.inputs.iter().any(|&i| g.name(i) == name);
    let mut biases = 0;
    for &p in &g.params {
        let name = g.name(p);
        let adamw = g
            .ops
            .iter()
            .any(|op| op.kind == OpKind::AdamW && op.operands.contains(&p));
        let optimized = has_output(&format!("{name}.grad"))
            && has_input(&format!("{name}.adam_m"))
            && has_input(&format!("{name}.adam_v"))
            && adamw;
        if is_selection_bias(name) {
            biases += 1;
            let gradient_or_state = has_output(&format!("{name}.grad"))
                || has_input(&format!("{name}.adam_m"))
                || has_input(&format!("{name}.adam_v"))
                || adamw;
            assert!(!gradient_or_state, "`{name}` has a gradient or AdamW state");
        } else {
            assert!(optimized, "`{name}` has no gradient or AdamW update");
        }
        assert!(
            has_output(&format!("{name}.next")),
            "`{name}` is not updated"
        );
    }
    assert_eq!(biases, 2, "one selection bias per MoE layer");
    // The backward kinds of MLA and MoE are all there, and one bias update per MoE layer.
    for kind in [
        OpKind::Pad,
        OpKind::MoeTopkGrad,
        OpKind::MoeCombineGrad,
        OpKind::GroupedLinearWgrad,
    ] {
        assert!(g.ops.iter().any(|op| op.kind == kind), "no {kind} op");
    }
    let updates = g
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::ExpertBiasUpdate);
    assert_eq!(updates.count(), 2);
}

#[test]
fn one_step_updates_the_selection_bias_by_the_routed_load() {
    // The step, with each bias update's indices (its layer's routing) as extra outputs.
    let mut g = step_graph(None);
    let routed: Vec<(ValueId, ValueId)> = g
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::ExpertBiasUpdate)
        .map(|op| (op.operands[0], op.operands[1]))
        .collect();
    g.outputs.extend(routed.iter().map(|&(_, indices)| indices));
    let weights = random_weights(&g, 1).unwrap();
    let before: Vec<Vec<f32>> = routed
        .iter()
        .map(|&(b, _)| weights.get(b).unwrap().to_f32_vec())
        .collect();
    let mut trainer = Trainer::new(g.clone(), weights, CpuOptions::default()).unwrap();
    trainer.read_gradients(true);
    let mut rng = SplitMix64(9);
    let ids: Vec<i32> = (0..64).map(|_| (rng.next_u64() % 256) as i32).collect();
    let labels: Vec<i32> = (0..64).map(|_| (rng.next_u64() % 256) as i32).collect();
    let (stats, outputs) = trainer.step(ids, labels, 1e-3).unwrap();
    assert!(stats.loss.is_finite() && stats.grad_norm > 0.0, "{stats:?}");
    // Every gradient finite and not all zeros (the gate's comes through moe_topk_grad).
    let grads = outputs.iter().filter(|(n, _)| n.ends_with(".grad"));
    assert!(
        grads.clone().count() > 10,
        "the step returned too few gradients"
    );
    for (name, t) in grads {
        let v = t.to_f32_vec();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
        assert!(v.iter().any(|&x| x != 0.0), "{name} is all zeros");
    }
    // b_i += γ · sign(mean_load − load_i), γ = bias_update_speed (0.001 by default).
    let gamma = 0.001f32;
    for (&(b, indices), old) in routed.iter().zip(&before) {
        let name = g.name(indices);
        let idx = &outputs.iter().find(|(n, _)| n == name).unwrap().1;
        let idx = match &idx.data {
            HostData::I32(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        let e = old.len();
        let mut load = vec![0usize; e];
        for &i in &idx {
            load[i as usize] += 1;
        }
        let want: Vec<f32> = old
            .iter()
            .zip(&load)
            .map(|(&v, &l)| match (l * e).cmp(&idx.len()) {
                std::cmp::Ordering::Less => v + gamma,
                std::cmp::Ordering::Greater => v - gamma,
                std::cmp::Ordering::Equal => v,
            })
            .collect();
        let got = trainer.weights().unwrap().get(b).unwrap().to_f32_vec();
        assert_eq!(got, want, "{}: loads {load:?}", g.name(b));
        assert_ne!(got, *old, "{}: loads {load:?}", g.name(b));
    }
}

#[test]
fn a_zero_bias_update_speed_freezes_the_selection_bias() {
    let g = step_graph(Some(0.0));
    assert!(!g.ops.iter().any(|op| op.kind == OpKind::ExpertBiasUpdate));
    let weights = random_weights(&g, 1).unwrap();
    let trainer = Trainer::new(g.clone(), weights, CpuOptions::default()).unwrap();
    for &p in g.params.iter().filter(|&&p| is_selection_bias(g.name(p))) {
        let next = format!("{}.next", g.name(p));
        assert!(!g.outputs.iter().any(|&o| g.name(o) == next), "{next}");
    }
    assert_eq!(trainer.steps_taken(), 0);
}

#[test]
fn the_block_scaled_activation_gradient_ablation_lowers_and_trains() {
    // act_grad_scaling = "128x128": every FP8 Dgrad reads dY in 128 × 128 blocks.
    let text = std::fs::read_to_string(path(MODEL)).unwrap();
    let forward = dsc_ir::model::load_model(&text).unwrap();
    let mut config = load_train_config(&text).unwrap().unwrap_or_default();
    config.act_grad_scaling = dsc_ir::ActGradScaling::Block;
    let g = dsc_passes::train_step::build_lowered(&forward, &config).unwrap();
    let blocked: Vec<_> = g
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::Fp8Gemm)
        .filter(|op| op.attrs.bool(dsc_ir::infer::X_SQUARE_BLOCKS) == Some(true))
        .collect();
    assert!(!blocked.is_empty());
    for gemm in blocked {
        // Its dY operand comes from a 128 × 128 quantize.
        let q = g
            .ops
            .iter()
            .find(|op| op.results.first() == Some(&gemm.operands[0]))
            .unwrap();
        assert_eq!(q.kind, OpKind::Quantize);
        assert_eq!(q.attrs.ints("block"), Some(&[128, 128][..]));
    }
    let weights = random_weights(&g, 1).unwrap();
    let mut trainer = Trainer::new(g, weights, CpuOptions::default()).unwrap();
    let mut rng = SplitMix64(3);
    let ids: Vec<i32> = (0..64).map(|_| (rng.next_u64() % 256) as i32).collect();
    let (stats, _) = trainer.step(ids.clone(), ids, 1e-3).unwrap();
    assert!(stats.loss.is_finite() && stats.grad_norm > 0.0, "{stats:?}");
}

/// Multi-token prediction (`[train] mtp_depth`, DeepSeek-V3 §2.2): the step has the module's
/// parameters under the next layer's checkpoint names; with λ = 0 its loss and the main
/// model's gradients are exactly those of the step without it (same weights), and with λ the
/// loss grows by λ times the module's cross-entropy (about ln 256 from random weights).
#[test]
fn multi_token_prediction_adds_a_weighted_loss_and_its_module() {
    use dsc_ir::model::{load_model, load_model_with_mtp};
    use dsc_passes::train_step;
    use dsc_runtime::cpu::CpuOptions;
    use dsc_runtime::train::Trainer;
    use dsc_runtime::{Weights, random_weights};
    let text = std::fs::read_to_string(crate::support::path("tests/train/tiny-moe.toml")).unwrap();
    let base = dsc_ir::load_train_config(&text)
        .unwrap()
        .unwrap_or_default();
    let step = |depth: u64, lambda: f64| {
        let config = dsc_ir::TrainConfig {
            mtp_depth: depth,
            mtp_lambda: lambda,
            ..base.clone()
        };
        let forward = load_model_with_mtp(&text, depth).unwrap();
        train_step::build_lowered(&forward, &config).unwrap()
    };
    let with = step(1, 0.0);
    for name in [
        "model.layers.3.enorm.weight",
        "model.layers.3.hnorm.weight",
        "model.layers.3.eh_proj.weight",
        "model.layers.3.self_attn.kv_a_proj_with_mqa.weight",
        "model.layers.3.mlp.gate.weight",
        "model.layers.3.shared_head.norm.weight",
    ] {
        assert!(
            with.params.iter().any(|&p| with.name(p) == name),
            "no MTP parameter `{name}`"
        );
    }
    let weights = random_weights(&with, 3).unwrap();
    let run = |g: dsc_ir::Graph, weights: Weights| {
        let mut trainer = Trainer::new(g, weights, CpuOptions::default()).unwrap();
        trainer.read_gradients(true);
        let mut rng = dsc_kernels::rng::SplitMix64(4);
        let ids: Vec<i32> = (0..64).map(|_| (rng.next_u64() % 256) as i32).collect();
        let labels: Vec<i32> = ids.iter().map(|&i| (i * 7 + 3) % 256).collect();
        let (stats, outputs) = trainer.step(ids, labels, 1e-3).unwrap();
        let grad = |name: &str| {
            outputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.to_f32_vec())
                .unwrap_or_else(|| panic!("no `{name}`"))
        };
        (
            stats.loss,
            [
                grad("model.embed_tokens.weight.grad"),
                grad("model.layers.2.mlp.gate.weight.grad"),
            ],
        )
    };
    // The same weights by name for the step without the module.
    let without = step(0, 0.3);
    let mut main = Weights::new();
    for &p in &without.params {
        let t = weights.by_name(&with, without.name(p)).unwrap().clone();
        main.insert(p, t);
    }
    let (loss0, grad0) = run(without, main);
    let (loss, grad) = run(with, weights.clone());
    assert_eq!(loss.to_bits(), loss0.to_bits(), "λ = 0: {loss} vs {loss0}");
    assert_eq!(
        grad, grad0,
        "λ = 0: the embedding's and a router's gradients"
    );
    let (weighted, _) = run(step(1, 0.3), weights);
    let mtp = (weighted - loss) / 0.3;
    assert!(
        (mtp - 256f32.ln()).abs() < 0.5,
        "the MTP cross-entropy {mtp} (loss {weighted} vs {loss})"
    );
    // Only the deepseek preset has the modules.
    let llama =
        std::fs::read_to_string(crate::support::path("tests/train/tiny-llama.toml")).unwrap();
    assert!(load_model(&llama).is_ok());
    let e = load_model_with_mtp(&llama, 1).unwrap_err().to_string();
    assert!(e.contains("mtp_depth = 1") && e.contains("deepseek"), "{e}");
    let e = load_model_with_mtp(&text, 32).unwrap_err().to_string();
    assert!(e.contains("depth 32") && e.contains("longer"), "{e}");
}

/// A checkpoint of a run with multi-token prediction has DeepSeek-V3's layout: the module's layer
/// repeats the shared embedding and head (`model.layers.3.embed_tokens.weight`,
/// `model.layers.3.shared_head.head.weight`). Such a checkpoint loads back (`--resume`,
/// `--weights`); a copy of the wrong shape is an error naming it.
#[test]
fn mtp_checkpoints_carry_the_shared_embedding_and_head_in_the_module_layer() {
    let tmp = TempDir::new("train-mtp-checkpoint");
    let data = word_corpus(&tmp);
    let text = std::fs::read_to_string(path(MODEL)).unwrap();
    let model = tmp.join("mtp.toml");
    std::fs::write(
        &model,
        text.replace("[train]\n", "[train]\nmtp_depth = 1\n"),
    )
    .unwrap();
    let (model, dir) = (model.to_string_lossy(), tmp.join("ckpt"));
    let dir_s = dir.to_string_lossy();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", &model, "--data", &data];
        args.extend_from_slice(extra);
        dsc(&args)
    };
    let out = train(&["--steps", "1", "--save", &dir_s]);
    assert!(out.status.success(), "{}", streams(&out).1);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data_of = |name: &str| file.tensor(name).unwrap().data().to_vec();
    for (copy, shared) in [
        (
            "model.layers.3.embed_tokens.weight",
            "model.embed_tokens.weight",
        ),
        ("model.layers.3.shared_head.head.weight", "lm_head.weight"),
    ] {
        assert!(data_of(copy) == data_of(shared), "{copy} is not {shared}");
    }
    let out = train(&["--steps", "2", "--resume", &dir_s]);
    assert!(out.status.success(), "{}", streams(&out).1);
    let weights = dir.join("model.safetensors").to_string_lossy().into_owned();
    let out = train(&["--steps", "1", "--weights", &weights]);
    assert!(out.status.success(), "{}", streams(&out).1);

    // The embedding's copy cut to half its rows.
    let copy = "model.layers.3.embed_tokens.weight";
    let half = file.tensor(copy).unwrap();
    let (rows, cols) = (half.shape()[0] / 2, half.shape()[1]);
    let cut = &half.data()[..half.data().len() / 2];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != copy)
        .collect();
    let view = safetensors::tensor::TensorView::new(half.dtype(), vec![rows, cols], cut).unwrap();
    tensors.push((copy.to_string(), view));
    let bad = tmp.join("bad.safetensors");
    safetensors::serialize_to_file(tensors, None, &bad).unwrap();
    let out = train(&["--steps", "1", "--weights", &bad.to_string_lossy()]);
    let stderr = streams(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("`{copy}`: expected [256, ")),
        "{stderr}"
    );
}
