//! `dsc train`: the loss falls, the FP8 recipe tracks the all-BF16 baseline, gradients are
//! written by checkpoint name, bad data or options are clear errors, and checkpoints (`--save`,
//! `--resume`) continue a run bit for bit.

use crate::support::{TempDir, dsc, streams, word_corpus};

const MODEL: &str = "tests/train/tiny-llama.toml";

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
    let data = word_corpus(&tmp);
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
    let data = word_corpus(&tmp);
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
    let data = word_corpus(&tmp);
    let (short, beyond) = (short.to_string_lossy(), beyond.to_string_lossy());
    let missing = tmp.join("missing.txt").to_string_lossy().into_owned();
    let cases: [(Vec<&str>, &str); 6] = [
        // A step larger than the machine: an error with both numbers, not an abort.
        (
            vec!["--data", &data, "--seq-len", "100000"],
            "of memory on cpu (weights",
        ),
        (
            vec!["--data", "/dev/null"],
            "/dev/null is a device, not a regular file",
        ),
        (vec!["--data", &short], "tokens"),
        (vec!["--data", &beyond], "300"),
        (
            vec!["--data", &data, "--device", "auto"],
            "not a training device",
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

// ---------------------------------------------------------------------------------------------
// Checkpoints

/// Runs `dsc train MODEL --data DATA` with `extra`, expecting success; returns stdout.
fn train_ok(model: &str, data: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", model, "--data", data];
    args.extend_from_slice(extra);
    let out = dsc(&args);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{args:?}: {stderr}");
    stdout
}

/// Runs `dsc train MODEL --data DATA` with `extra`, expecting exit 1 and `error: …`; returns
/// stderr.
fn train_err(model: &str, data: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", model, "--data", data];
    args.extend_from_slice(extra);
    let out = dsc(&args);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    stderr
}

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The step, loss, lr and grad_norm columns of a `--log` CSV (not the timing).
fn log_rows(path: &std::path::Path) -> Vec<String> {
    let csv = std::fs::read_to_string(path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("step,loss,lr,grad_norm,tokens_per_s"));
    lines
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// Every file of a directory with its bytes, sorted by name.
fn dir_contents(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn train_state(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("train_state.json")).unwrap()).unwrap()
}

/// `tests/train/tiny-llama.toml` with `from` replaced by `to`, written into `tmp`.
fn variant(tmp: &TempDir, file: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(crate::support::path(MODEL)).unwrap();
    assert!(text.contains(from), "{from}");
    let path = tmp.join(file);
    std::fs::write(&path, text.replace(from, to)).unwrap();
    s(&path)
}

#[test]
fn resume_continues_a_run_bit_for_bit() {
    let tmp = TempDir::new("train-resume");
    let data = word_corpus(&tmp);
    let (full, half) = (tmp.join("full"), tmp.join("half"));
    let (full_log, first_log, second_log) =
        (tmp.join("full.csv"), tmp.join("a.csv"), tmp.join("b.csv"));
    train_ok(
        MODEL,
        &data,
        &["--steps", "6", "--save", &s(&full), "--log", &s(&full_log)],
    );
    train_ok(
        MODEL,
        &data,
        &["--steps", "3", "--save", &s(&half), "--log", &s(&first_log)],
    );
    assert_eq!(train_state(&half)["step"], 3);
    // A different --seed does not matter: the sampler's state comes from the checkpoint.
    let stdout = train_ok(
        MODEL,
        &data,
        &[
            "--steps",
            "6",
            "--seed",
            "99",
            "--resume",
            &s(&half),
            "--save",
            &s(&half),
            "--log",
            &s(&second_log),
        ],
    );
    assert!(stdout.contains("at step 3: steps 4 to 6"), "{stdout}");
    let mut resumed = log_rows(&first_log);
    resumed.extend(log_rows(&second_log));
    assert_eq!(resumed.len(), 6);
    assert_eq!(log_rows(&full_log), resumed);
    // Same masters, moments, exported weights and state (step, sampler) as the unbroken run.
    let (a, b) = (dir_contents(&full), dir_contents(&half));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "master.safetensors",
            "model.safetensors",
            "optimizer.safetensors",
            "train_state.json"
        ]
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs");
    }
    let state = train_state(&full);
    assert_eq!(state["step"], 6);
    assert_eq!(state["model"], "tiny-llama");
    assert_eq!(state["recipe"], "fp8");
    assert_eq!(
        (state["batch"].clone(), state["seq_len"].clone()),
        (2.into(), 32.into())
    );
    assert!(state["sampler_rng"].is_u64(), "{state}");
    // The moments by input name, BF16.
    let bytes = std::fs::read(full.join("optimizer.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.names().len(), 42);
    for name in ["lm_head.weight.adam_m", "model.norm.weight.adam_v"] {
        assert_eq!(file.tensor(name).unwrap().dtype(), safetensors::Dtype::BF16);
    }
}

#[test]
fn save_every_and_the_hugging_face_layout() {
    let tmp = TempDir::new("train-save-every");
    let data = word_corpus(&tmp);
    let dir = tmp.join("ckpt");
    let stdout = train_ok(
        MODEL,
        &data,
        &["--steps", "5", "--save", &s(&dir), "--save-every", "2"],
    );
    let saves: Vec<&str> = stdout.lines().filter(|l| l.starts_with("saved")).collect();
    assert_eq!(saves.len(), 3, "{stdout}");
    for (line, step) in saves.iter().zip([2, 4, 5]) {
        assert!(
            line.starts_with(&format!("saved the state of step {step} to ")),
            "{line}"
        );
    }
    assert_eq!(train_state(&dir)["step"], 5);
    let model = std::fs::read(dir.join("model.safetensors")).unwrap();
    let model = safetensors::SafeTensors::deserialize(&model).unwrap();
    let master = std::fs::read(dir.join("master.safetensors")).unwrap();
    let master = safetensors::SafeTensors::deserialize(&master).unwrap();
    let mut names = model.names();
    names.sort();
    let mut master_names = master.names();
    master_names.sort();
    assert_eq!(names, master_names);
    assert_eq!(names.len(), 21, "{names:?}");
    for name in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        let (w, m) = (model.tensor(name).unwrap(), master.tensor(name).unwrap());
        assert_eq!(w.dtype(), safetensors::Dtype::BF16, "{name}");
        assert_eq!(m.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(w.shape(), m.shape(), "{name}");
        // The BF16 weight is the master rounded (to nearest even).
        let bf16: Vec<u16> = w
            .data()
            .chunks(2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let rounded: Vec<u16> = m
            .data()
            .chunks(4)
            .map(|b| {
                let x = f32::from_le_bytes(b.try_into().unwrap());
                dsc_kernels::numerics::bf16::to_bf16(x).to_bits()
            })
            .collect();
        assert!(bf16 == rounded, "{name}");
    }
    assert_eq!(
        model
            .tensor("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .shape(),
        [128, 128]
    );
}

#[test]
fn export_fp8_writes_e4m3_weights_with_their_scales() {
    let tmp = TempDir::new("train-export-fp8");
    let data = word_corpus(&tmp);
    let dir = tmp.join("ckpt");
    train_ok(
        MODEL,
        &data,
        &["--steps", "1", "--save", &s(&dir), "--export", "fp8"],
    );
    assert_eq!(train_state(&dir)["export"], "fp8");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = file.names();
    // 2 layers × 7 projections get a scale each.
    let scales: Vec<&&str> = names
        .iter()
        .filter(|n| n.ends_with("weight_scale_inv"))
        .collect();
    assert_eq!(scales.len(), 14, "{names:?}");
    assert_eq!(names.len(), 21 + 14, "{names:?}");
    for proj in ["self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"] {
        let w = file
            .tensor(&format!("model.layers.1.{proj}.weight"))
            .unwrap();
        assert_eq!(w.dtype(), safetensors::Dtype::F8_E4M3, "{proj}");
        let s = file
            .tensor(&format!("model.layers.1.{proj}.weight_scale_inv"))
            .unwrap();
        assert_eq!(s.dtype(), safetensors::Dtype::F32, "{proj}");
        // One scale per 128×128 block.
        let blocks: Vec<usize> = w.shape().iter().map(|d| d.div_ceil(128)).collect();
        assert_eq!(s.shape(), blocks.as_slice(), "{proj}");
    }
    // The embedding, the norms and the head stay BF16.
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert_eq!(
            file.tensor(name).unwrap().dtype(),
            safetensors::Dtype::BF16,
            "{name}"
        );
    }
    // The compiled model runs the FP8 export as it runs the BF16 one (quantizing on load):
    // the same logits, bit for bit.
    let bf16 = tmp.join("bf16");
    train_ok(MODEL, &data, &["--steps", "1", "--save", &s(&bf16)]);
    let artifact = tmp.join("artifact");
    let out = dsc(&["compile", MODEL, "-o", &s(&artifact)]);
    assert!(out.status.success(), "{}", streams(&out).1);
    let mut logits = Vec::new();
    for (weights, output) in [(&dir, "fp8.safetensors"), (&bf16, "bf16.safetensors")] {
        let output = tmp.join(output);
        let out = dsc(&[
            "run",
            &s(&artifact),
            "--device",
            "cpu",
            "--weights",
            &s(&weights.join("model.safetensors")),
            "--output",
            &s(&output),
        ]);
        assert!(out.status.success(), "{}", streams(&out).1);
        logits.push(std::fs::read(output).unwrap());
    }
    assert!(logits[0] == logits[1], "the FP8 export runs differently");
}

#[test]
fn a_bad_resume_is_a_clear_error_and_changes_nothing() {
    let tmp = TempDir::new("train-bad-resume");
    let data = word_corpus(&tmp);
    let dir = tmp.join("ckpt");
    let ckpt = s(&dir);
    train_ok(MODEL, &data, &["--steps", "1", "--save", &ckpt]);
    let before = dir_contents(&dir);
    let other_name = variant(&tmp, "other.toml", "\"tiny-llama\"", "\"other-llama\"");
    let other_shape = variant(&tmp, "narrow.toml", "inter_dim = 256", "inter_dim = 128");
    let incomplete = tmp.join("incomplete");
    std::fs::create_dir(&incomplete).unwrap();
    for (name, bytes) in &before {
        if name != "optimizer.safetensors" {
            std::fs::write(incomplete.join(name), bytes).unwrap();
        }
    }
    let incomplete = s(&incomplete);
    let nothing = s(&tmp.join("nothing"));
    let cases: [(&str, Vec<&str>, &str); 8] = [
        (
            &other_name,
            vec!["--resume", &ckpt],
            "is a checkpoint of model `tiny-llama`, this run trains `other-llama`",
        ),
        (
            MODEL,
            vec!["--resume", &ckpt, "--recipe", "bf16"],
            "was trained with the fp8 recipe, this run uses bf16",
        ),
        (
            MODEL,
            vec!["--resume", &ckpt, "--accumulator", "hopper"],
            "was trained with --accumulator exact, this run uses hopper",
        ),
        (
            MODEL,
            vec!["--resume", &ckpt, "--batch", "1"],
            "batches of 2×32 tokens (batch × seq_len), this run's are 1×32",
        ),
        (
            &other_shape,
            vec!["--resume", &ckpt],
            "parameter `model.layers.0.mlp.gate_proj.weight` is [256, 128] in the checkpoint, \
             [128, 128] in the model",
        ),
        (
            MODEL,
            vec!["--resume", &ckpt, "--steps", "1"],
            "is at step 1 already",
        ),
        (
            MODEL,
            vec!["--resume", &incomplete],
            "has no optimizer.safetensors",
        ),
        (MODEL, vec!["--resume", &nothing], "does not exist"),
    ];
    for (model, extra, want) in cases {
        let mut extra = extra;
        if !extra.contains(&"--steps") {
            extra.extend(["--steps", "2"]);
        }
        // Saving to the checkpoint being resumed: a failed resume must not touch it.
        extra.extend(["--save", &ckpt]);
        let stderr = train_err(model, &data, &extra);
        assert!(
            stderr.contains(want) && stderr.contains("--resume"),
            "{extra:?}: {stderr}"
        );
        assert!(
            dir_contents(&dir) == before,
            "{extra:?} changed the checkpoint"
        );
    }
}

#[test]
fn the_no_promotion_ablation_trains_on_the_cpu_and_is_refused_on_gpus() {
    let tmp = TempDir::new("train-unpromoted");
    let data = word_corpus(&tmp);
    let steps = ["--data", &data, "--steps", "3", "--seed", "4"];
    let exact = run_losses(&tmp, "exact", &steps);
    let with = |name: &str, accumulator: &str| {
        let mut args = steps.to_vec();
        args.extend(["--accumulator", accumulator]);
        run_losses(&tmp, name, &args)
    };
    let (hopper, unpromoted) = (
        with("hopper", "hopper"),
        with("unpromoted", "hopper-unpromoted"),
    );
    // Three models of the same FP8 GEMMs: different bits, losses within a fraction of a percent.
    assert_ne!(hopper, exact);
    assert_ne!(unpromoted, hopper);
    for curve in [&hopper, &unpromoted] {
        for (a, b) in curve.iter().zip(&exact) {
            assert!((a - b).abs() / b < 5e-3, "{curve:?} against {exact:?}");
        }
    }
    // The run's accumulator is part of its checkpoint.
    let dir = tmp.join("ckpt");
    train_ok(
        MODEL,
        &data,
        &[
            "--steps",
            "1",
            "--accumulator",
            "hopper-unpromoted",
            "--save",
            &s(&dir),
        ],
    );
    assert_eq!(train_state(&dir)["accumulator"], "hopper-unpromoted");
    // The GPU kernels always promote: the emulator cannot run the ablation.
    let stderr = train_err(
        MODEL,
        &data,
        &[
            "--steps",
            "1",
            "--device",
            "emu",
            "--accumulator",
            "hopper-unpromoted",
        ],
    );
    assert!(
        stderr.contains("cannot model the unpromoted accumulator"),
        "{stderr}"
    );
}

#[test]
fn save_refuses_a_directory_that_is_not_a_checkpoint() {
    let tmp = TempDir::new("train-save-refused");
    let data = word_corpus(&tmp);
    let notes = tmp.join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "keep me").unwrap();
    let stderr = train_err(MODEL, &data, &["--steps", "1", "--save", &s(&notes)]);
    assert!(
        stderr.contains("is not a dsc training checkpoint"),
        "{stderr}"
    );
    assert_eq!(
        dir_contents(&notes),
        [("todo.txt".into(), b"keep me".to_vec())]
    );
    // Nor one holding an input of the run (here the model).
    let stderr = train_err(MODEL, &data, &["--steps", "1", "--save", "tests/train"]);
    assert!(stderr.contains("holds the input"), "{stderr}");
    assert!(crate::support::path(MODEL).is_file());
    // A file is not a directory.
    let stderr = train_err(
        MODEL,
        &data,
        &["--steps", "1", "--save", &s(&notes.join("todo.txt"))],
    );
    assert!(stderr.contains("is not a directory"), "{stderr}");
}

#[test]
fn a_diverging_run_saves_its_last_good_state() {
    let tmp = TempDir::new("train-diverge");
    let data = word_corpus(&tmp);
    let model = variant(&tmp, "hot.toml", "lr = 3e-3", "lr = 1e30");
    let dir = tmp.join("ckpt");
    let stderr = train_err(&model, &data, &["--steps", "4", "--save", &s(&dir)]);
    let state = train_state(&dir);
    let step = state["step"].as_u64().unwrap();
    assert!(
        stderr.contains(&format!(
            "the last good state (step {step}) to {}",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "training diverged at step {}: the loss is",
            step + 1
        )),
        "{stderr}"
    );
}

/// The profile table `dsc train MODEL --data DATA --profile` with `extra` prints after the line
/// `time per op kind ({label}):`.
fn profile_table(data: &str, extra: &[&str], label: &str) -> String {
    let mut args = vec!["train", MODEL, "--data", data, "--profile"];
    args.extend_from_slice(extra);
    let out = dsc(&args);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
        .split(&format!("time per op kind ({label}):\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no `{label}` profile in\n{stdout}"))
        .to_string()
}

#[test]
fn profile_prints_the_time_per_op_kind_and_the_gemms_share() {
    let tmp = TempDir::new("train-profile");
    let data = word_corpus(&tmp);
    let table = profile_table(
        &data,
        &["--steps", "2", "--recipe", "fp8"],
        "CPU, wall time",
    );
    let table = table.as_str();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("op kind"), "{table}");
    // The fused FP8 GEMMs and the optimizer ran, with their counts per step.
    let row = |kind: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("no `{kind}` row in\n{table}"))
            .to_string()
    };
    assert!(
        row("fp8_gemm")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(row("adamw").contains('%'), "{table}");
    let gemms = table.lines().find(|l| l.starts_with("GEMMs (")).unwrap();
    assert!(gemms.ends_with("over 2 steps"), "{gemms}");
    let share: f64 = gemms
        .split("): ")
        .nth(1)
        .unwrap()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(share > 0.0 && share <= 100.0, "{gemms}");
    // On the emulator the times are the model's, and say so.
    let table = profile_table(
        &data,
        &["--steps", "1", "--device", "emu"],
        "sm_90a on the emulator, modeled",
    );
    assert!(table.lines().any(|l| l.starts_with("fp8_gemm ")), "{table}");
}

/// The step losses of a `--log` CSV written by `dsc train ARGS…` (which must succeed).
fn run_losses(tmp: &TempDir, name: &str, args: &[&str]) -> Vec<f64> {
    let log = tmp.join(&format!("{name}.csv"));
    let log = log.to_string_lossy().into_owned();
    let mut all = vec!["train", MODEL];
    all.extend_from_slice(args);
    all.extend(["--log", log.as_str()]);
    let out = dsc(&all);
    let (_, stderr) = streams(&out);
    assert!(out.status.success(), "{name}: {stderr}");
    losses(&std::fs::read_to_string(&log).unwrap())
}

/// Writes a fixed batch for the tiny models (2 × 32 tokens): `input_ids` and `labels` int32.
pub(crate) fn write_batch(path: &str) {
    use safetensors::tensor::{Dtype, TensorView};
    let mut rng = dsc_kernels::rng::SplitMix64(8);
    let mut ids = || -> Vec<u8> {
        (0..64)
            .flat_map(|_| ((rng.next_u64() % 256) as i32).to_le_bytes())
            .collect()
    };
    let (input_ids, labels) = (ids(), ids());
    let tensors = [
        (
            "input_ids",
            TensorView::new(Dtype::I32, vec![2, 32], &input_ids).unwrap(),
        ),
        (
            "labels",
            TensorView::new(Dtype::I32, vec![2, 32], &labels).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, std::path::Path::new(path)).unwrap();
}

#[test]
fn weights_start_a_run_from_saved_weights() {
    // 3 steps on a fixed batch, saved; then step 4 two ways: resumed, and a new run from the
    // saved master weights. A step's loss depends only on the weights and the batch: the two
    // are equal bit for bit.
    let tmp = TempDir::new("train-weights");
    let batch = tmp.join("batch.safetensors").to_string_lossy().into_owned();
    write_batch(&batch);
    let fixed = ["--inputs", batch.as_str(), "--seed", "4", "--recipe", "fp8"];
    let ck = tmp.join("ck").to_string_lossy().into_owned();
    let first = run_losses(
        &tmp,
        "first",
        &[&fixed[..], &["--steps", "3", "--save", &ck]].concat(),
    );
    let resumed = run_losses(
        &tmp,
        "resumed",
        &[&fixed[..], &["--steps", "4", "--resume", &ck]].concat(),
    );
    let master = format!("{ck}/master.safetensors");
    let fresh = run_losses(
        &tmp,
        "fresh",
        &[&fixed[..], &["--steps", "1", "--weights", &master]].concat(),
    );
    assert_eq!(
        fresh[0].to_bits(),
        resumed[0].to_bits(),
        "{fresh:?} {resumed:?}"
    );
    assert!(fresh[0] < first[0], "{fresh:?} {first:?}");

    // A file without the model's tensors is an error naming what is missing.
    let out = dsc(&[
        "train",
        MODEL,
        "--inputs",
        &batch,
        "--steps",
        "1",
        "--weights",
        &batch,
    ]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model.embed_tokens.weight"), "{stderr}");
}

#[test]
fn recompute_keeps_every_bit_and_saves_activation_memory() {
    // [train] recompute = "recipe" (RMSNorm, SwiGLU and their FP8 copies recomputed in the
    // backward) and "full" (every layer's ops) against "none": the same losses bit for bit,
    // fewer saved activation bytes.
    use dsc_ir::{Recipe, Recompute, load_train_config};
    use dsc_passes::{train_memory, train_step};
    let text = std::fs::read_to_string(crate::support::path(MODEL)).unwrap();
    let forward = dsc_ir::model::load_model(&text).unwrap();
    let base = load_train_config(&text).unwrap().unwrap_or_default();
    for recipe in [Recipe::Fp8, Recipe::Bf16] {
        let step = |recompute| {
            let config = dsc_ir::TrainConfig {
                recipe,
                recompute,
                ..base.clone()
            };
            train_step::build_lowered(&forward, &config).unwrap()
        };
        let (kept, recomputed) = (step(Recompute::None), step(Recompute::Recipe));
        let full = step(Recompute::Full);
        let copies = recomputed
            .ops
            .iter()
            .filter(|op| recomputed.name(op.results[0]).ends_with(".recomputed"))
            .count();
        assert!(copies > 0, "{recipe:?}: nothing recomputed");
        let saved = |g| train_memory::measure(g).saved_activation_bytes_per_token;
        assert!(
            saved(&recomputed) < saved(&kept),
            "{recipe:?}: {} vs {}",
            saved(&recomputed),
            saved(&kept)
        );
        let losses = |g: dsc_ir::Graph| {
            let weights = dsc_runtime::random_weights(&g, 2).unwrap();
            let mut trainer = dsc_runtime::train::Trainer::new(
                g,
                weights,
                dsc_runtime::cpu::CpuOptions::default(),
            )
            .unwrap();
            let mut rng = dsc_kernels::rng::SplitMix64(6);
            (0..2)
                .map(|_| {
                    let ids: Vec<i32> = (0..64).map(|_| (rng.next_u64() % 256) as i32).collect();
                    trainer
                        .step(ids.clone(), ids, 1e-3)
                        .unwrap()
                        .0
                        .loss
                        .to_bits()
                })
                .collect::<Vec<u32>>()
        };
        // Whole-layer recomputation keeps only the residual stream (and what the loss reads).
        assert!(
            saved(&full) < saved(&recomputed),
            "{recipe:?}: full {} vs recipe {}",
            saved(&full),
            saved(&recomputed)
        );
        eprintln!(
            "{recipe:?}: saved activation bytes per token: none {}, recipe {}, full {}",
            saved(&kept),
            saved(&recomputed),
            saved(&full)
        );
        let kept_losses = losses(kept);
        assert_eq!(kept_losses, losses(recomputed), "{recipe:?}");
        assert_eq!(kept_losses, losses(full), "{recipe:?}: recompute = full");
    }
    // A step with MTP needs the forward with its modules: a clear error, not a silent step
    // without them.
    let mtp = dsc_ir::TrainConfig {
        mtp_depth: 1,
        ..base
    };
    let e = train_step::build_lowered(&forward, &mtp)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mtp_depth = 1") && e.contains("load_model_with_mtp"),
        "{e}"
    );
}
