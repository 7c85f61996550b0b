//! `dsc train`: the loss falls, the FP8 recipe tracks the all-BF16 baseline, gradients are
//! written by checkpoint name, and bad data or options are clear errors.

use crate::support::{TempDir, dsc, streams};

const MODEL: &str = "tests/train/tiny-llama.toml";

/// A deterministic text of a dozen words: learnable (the loss can fall far below ln 256).
fn corpus(tmp: &TempDir) -> String {
    let words = [
        "the", "cat", "sat", "on", "mat", "dog", "ran", "far", "a", "big", "red", "fox",
    ];
    let mut rng = dsc_kernels::rng::SplitMix64(5);
    let text: Vec<&str> = (0..3000)
        .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
        .collect();
    let path = tmp.join("corpus.txt");
    std::fs::write(&path, text.join(" ")).unwrap();
    path.to_string_lossy().into_owned()
}

/// The losses of a `--log` CSV.
fn losses(csv: &str) -> Vec<f64> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("step,loss,lr,grad_norm,tokens_per_s"));
    lines
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn train(tmp: &TempDir, data: &str, recipe: &str) -> Vec<f64> {
    let log = tmp.join(&format!("{recipe}.csv"));
    let out = dsc(&[
        "train",
        MODEL,
        "--data",
        data,
        "--steps",
        "24",
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
        stdout.contains(&format!("({recipe} recipe): 24 steps of 2×32 tokens")),
        "{stdout}"
    );
    losses(&std::fs::read_to_string(log).unwrap())
}

#[test]
fn the_loss_falls_and_fp8_tracks_bf16() {
    let tmp = TempDir::new("train-curves");
    let data = corpus(&tmp);
    let bf16 = train(&tmp, &data, "bf16");
    let fp8 = train(&tmp, &data, "fp8");
    assert_eq!((bf16.len(), fp8.len()), (24, 24));
    // From ln(256) ≈ 5.5 at the start to about 2 after 24 steps on this corpus.
    for curve in [&bf16, &fp8] {
        assert!(curve[0] > 5.0, "{curve:?}");
        assert!(mean(&curve[19..]) < 3.0, "{curve:?}");
    }
    // Same seed, same batches: FP8 GEMMs (Fprop, Dgrad) move the curve by well under 5%.
    let gap = (mean(&fp8[19..]) - mean(&bf16[19..])).abs() / mean(&bf16[19..]);
    assert!(gap < 0.05, "relative gap {gap}: fp8 {fp8:?} bf16 {bf16:?}");
    // The recipes differ: identical curves would mean the FP8 GEMMs never ran.
    assert_ne!(fp8, bf16);
}

#[test]
fn save_grads_writes_every_parameter_by_checkpoint_name() {
    let tmp = TempDir::new("train-grads");
    let data = corpus(&tmp);
    let grads = tmp.join("grads.safetensors");
    let out = dsc(&[
        "train",
        MODEL,
        "--data",
        &data,
        "--steps",
        "1",
        "--save-grads",
        &grads.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", streams(&out).1);
    let bytes = std::fs::read(&grads).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    // 2 layers × 9 tensors, plus the embedding, the final norm and the head.
    assert_eq!(names.len(), 21, "{names:?}");
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
        "lm_head.weight",
    ] {
        let t = file.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let values: Vec<f32> = t
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert!(
            values.iter().all(|v| v.is_finite()) && values.iter().any(|&v| v != 0.0),
            "{name}"
        );
    }
}

#[test]
fn bad_data_and_options_are_clear_errors() {
    let tmp = TempDir::new("train-bad");
    let short = tmp.join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let beyond = tmp.join("ids.u32");
    let ids: Vec<u8> = [1u32, 2, 300, 4]
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    std::fs::write(&beyond, ids).unwrap();
    let data = corpus(&tmp);
    let (short, beyond) = (short.to_string_lossy(), beyond.to_string_lossy());
    let missing = tmp.join("missing.txt").to_string_lossy().into_owned();
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--data", &short], "tokens"),
        (vec!["--data", &beyond], "300"),
        (
            vec!["--data", &data, "--device", "emu"],
            "training steps run on the CPU",
        ),
        (vec!["--data", &missing], "missing.txt"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["train", MODEL, "--steps", "1"];
        args.extend(extra.iter().map(|s| &**s));
        let out = dsc(&args);
        let (_, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
}
