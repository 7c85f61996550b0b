//! `dsc run` on the CPU: outputs, weights from checkpoints (quantized on load), errors.

use crate::support::{TempDir, dsc, read, streams};
use dsc_ir::model::load_model;
use dsc_runtime::{Checkpoint, random_weights, save_safetensors};

fn compile(tmp: &TempDir, example: &str) -> String {
    let dir = tmp.join(example).to_string_lossy().into_owned();
    let out = dsc(&["compile", &format!("examples/{example}.toml"), "-o", &dir]);
    assert!(out.status.success(), "{}", streams(&out).1);
    dir
}

fn logits_of(path: &std::path::Path) -> Vec<f32> {
    let file = Checkpoint::open(path).unwrap();
    let view = file.tensor("logits").expect("logits written");
    assert_eq!(view.shape, [1, 64, 512]);
    dsc_runtime::HostTensor::from_safetensors(
        view.dtype,
        view.shape,
        view.data,
        dsc_ir::DType::Bf16,
    )
    .unwrap()
    .to_f32_vec()
}

/// Runs `dsc run DIR ARGS… --output <tmp>/<name>.safetensors`, asserts success, and returns
/// the logits written and what was printed.
fn run_logits(tmp: &TempDir, dir: &str, name: &str, args: &[&str]) -> (Vec<f32>, String) {
    let file = tmp.join(&format!("{name}.safetensors"));
    let file_arg = file.to_string_lossy().into_owned();
    let mut all = vec!["run", dir];
    all.extend_from_slice(args);
    all.extend(["--output", file_arg.as_str()]);
    let out = dsc(&all);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{all:?}: {stderr}");
    (logits_of(&file), stdout)
}

#[test]
fn runs_the_tiny_model_and_writes_its_logits() {
    let tmp = TempDir::new("run-tiny");
    let dir = compile(&tmp, "tiny-moe");
    let args = ["--device", "cpu", "--random-weights", "3"];
    let (logits, stdout) = run_logits(&tmp, &dir, "first", &args);
    assert!(stdout.contains("logits: bf16[1, 64, 512]"), "{stdout}");
    assert!(logits.iter().all(|v| v.is_finite()));
    // Same seed, same inputs: the same logits.
    assert_eq!(run_logits(&tmp, &dir, "again", &args).0, logits);
    // One promoted Hopper GEMM is ~5e-4 off (`dsc numerics`), but this model's random gate
    // flips top-k choices on tiny changes (see runtime/src/cpu/tests.rs): measured 22%.
    let hopper = ["--random-weights", "3", "--accumulator", "hopper"];
    let (h, _) = run_logits(&tmp, &dir, "hopper", &hopper);
    assert_ne!(
        h, logits,
        "the Hopper model truncates: some logit must move"
    );
    let (num, den) = h
        .iter()
        .zip(&logits)
        .fold((0.0f64, 0.0f64), |(n, d), (a, b)| {
            (n + f64::from(a - b).powi(2), d + f64::from(*b).powi(2))
        });
    let err = (num / den).sqrt();
    eprintln!("hopper vs exact accumulator, relative error {err:.4}");
    assert!(err < 0.5, "relative error {err}");
}

/// A BF16 checkpoint is quantized on load into the FP8 model exactly as random FP8 weights of
/// the same seed are drawn, so the two runs agree bit for bit.
#[test]
fn a_bf16_checkpoint_is_quantized_on_load() {
    let tmp = TempDir::new("run-ckpt");
    let dir = compile(&tmp, "tiny-moe");
    let expanded = load_model(&read(&crate::support::path("examples/tiny-moe.toml"))).unwrap();
    let weights = random_weights(&expanded, 3).unwrap();
    let ckpt = tmp.join("bf16.safetensors");
    save_safetensors(&weights, &expanded, &ckpt).unwrap();
    let ckpt = ckpt.to_string_lossy().into_owned();
    let (loaded, _) = run_logits(&tmp, &dir, "a", &["--device", "cpu", "--weights", &ckpt]);
    let (random, _) = run_logits(
        &tmp,
        &dir,
        "b",
        &["--device", "cpu", "--random-weights", "3"],
    );
    assert_eq!(loaded, random);
}

#[test]
fn bad_runs_fail_with_clear_errors() {
    let tmp = TempDir::new("run-bad");
    let dir = compile(&tmp, "mlp");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "run".into(),
                "no/such/dir".into(),
                "--random-weights".into(),
                "1".into(),
            ],
            "no/such/dir: does not exist",
        ),
        (vec!["run".into(), dir.clone()], "no weights"),
        (
            vec![
                "run".into(),
                dir.clone(),
                "--weights".into(),
                "no/such.safetensors".into(),
            ],
            "no/such.safetensors",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dsc(&args);
        let (_, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expect),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A truncated checkpoint.
    let file = tmp.join("cut.safetensors");
    std::fs::write(&file, b"\x40\x00\x00\x00\x00\x00\x00\x00{\"x\":").unwrap();
    let out = dsc(&["run", &dir, "--weights", &file.to_string_lossy()]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cut.safetensors"), "{stderr}");
    // Usage errors exit 2.
    assert_eq!(
        dsc(&["run", &dir, "--device", "tpu"]).status.code(),
        Some(2)
    );
    assert_eq!(
        dsc(&["run", &dir, "--accumulator", "fast"]).status.code(),
        Some(2)
    );
}

/// Inputs from a file are the inputs used: the default random inputs written out and read back
/// give the same logits; an input of the wrong shape is refused by name.
#[test]
fn inputs_come_from_a_file_by_name() {
    let tmp = TempDir::new("run-inputs");
    let dir = compile(&tmp, "tiny-moe");
    let graph = dsc_ir::text::parse(&read(&std::path::Path::new(&dir).join("graph.dsc"))).unwrap();
    let inputs = dsc_runtime::inputs::random_inputs(&graph, 0);
    let file = tmp.join("inputs.safetensors");
    dsc_runtime::write_safetensors(&file, inputs.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
    let f = file.to_string_lossy().into_owned();
    let from_file = run_logits(&tmp, &dir, "a", &["--random-weights", "5", "--inputs", &f]).0;
    let default = run_logits(&tmp, &dir, "b", &["--random-weights", "5"]).0;
    assert_eq!(from_file, default);

    let wrong = dsc_runtime::HostTensor::zeros(dsc_ir::DType::I32, vec![1, 32]);
    dsc_runtime::write_safetensors(&file, [("input_ids", &wrong)]).unwrap();
    let out = dsc(&["run", &dir, "--random-weights", "5", "--inputs", &f]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("input `input_ids` is i32[1, 32], expected i32[1, 64]"),
        "{stderr}"
    );
}
