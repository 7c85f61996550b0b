//! Whole models on the emulator and on the GPU (where present) against the CPU backend,
//! through the Session API, for both targets.
//!
//! Tolerances (relative Frobenius error of the logits) must cover what two correct FP8
//! pipelines may differ by: FP8 quantization turns a last-bit difference of a GEMM output into a
//! whole code step, and four layers amplify it. The CPU's own two accumulator models (exact FP32
//! sums vs Hopper's tensor cores) move the logits by 5.0e-2 (llama-small), 4.5e-2 (qwen2-small)
//! and 22% (tiny-moe, whose random gate also flips top-k expert choices), and a GPU sums like the
//! Hopper model while the reference sums exactly; the bounds are 1e-1, 1e-1 and 0.5, and
//! [`bounds_cover_the_cpu_accumulator_spread`] checks they stay above that spread. The
//! step-by-step tests are the tight ones (the emulator's FP8 GEMMs are within 1e-4 of the
//! reference there).

use super::steps::extreme_inputs;
use super::{Gpu, On, TARGETS, compiled};
use crate::support::{TempDir, dsc, streams};
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Artifact, Device, HostTensor, ResolvedDevice, Session};

fn relative_frobenius(gpu: &HostTensor, cpu: &HostTensor) -> f64 {
    let (g, c) = (gpu.to_f32_vec(), cpu.to_f32_vec());
    let (num, den) = g.iter().zip(&c).fold((0.0f64, 0.0f64), |(n, d), (a, b)| {
        (n + f64::from(a - b).powi(2), d + f64::from(*b).powi(2))
    });
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs `artifact` `on` a backend against the CPU backend's `expected` outputs; returns the
/// problems found. On CUDA it runs twice (repeated runs reuse every buffer and must agree);
/// the emulator runs once, to keep the suite fast (its repeated runs are tested in
/// runtime/src/emu/tests.rs).
fn compare_on(
    on: &On,
    artifact: &Artifact,
    inputs: &std::collections::HashMap<String, HostTensor>,
    expected: &[(String, HostTensor)],
    bound: f64,
) -> Result<(), String> {
    let mut session = Session::new(artifact, on.device()).map_err(|e| e.to_string())?;
    match (on, &session.device().device) {
        (On::Emulator, ResolvedDevice::Emulator(_)) | (On::Cuda(_), ResolvedDevice::Cuda(_)) => {}
        (_, other) => return Err(format!("the session runs on {other:?}")),
    }
    session.load_random_weights(2).map_err(|e| e.to_string())?;
    let first = session.run(inputs).map_err(|e| e.to_string())?;
    if matches!(on, On::Cuda(_)) {
        let second = session.run(inputs).map_err(|e| e.to_string())?;
        if first != second {
            return Err("two runs differ".to_string());
        }
    }
    let timings = session.timings();
    if timings.len() != artifact.manifest.steps.len() {
        return Err(format!(
            "{} timings for {} steps",
            timings.len(),
            artifact.manifest.steps.len()
        ));
    }
    if matches!(on, On::Emulator) != timings.iter().all(|t| t.modeled.is_some()) {
        return Err("emulator timings (only) must be modeled".to_string());
    }
    let mut problems = Vec::new();
    for ((name, got), (_, want)) in first.iter().zip(expected) {
        if !got.to_f32_vec().iter().all(|v| v.is_finite()) {
            problems.push(format!("`{name}`: not finite"));
            continue;
        }
        let error = relative_frobenius(got, want);
        eprintln!("`{name}` relative Frobenius error {error:.3e}");
        if error > bound {
            problems.push(format!("`{name}` error {error:.3e} > {bound:.0e}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn end_to_end(test: &str, model: &str, bound: f64) {
    let tmp = TempDir::new(test);
    let mut gpu = Gpu::probe();
    let mut failures = Vec::new();
    // The CPU backend's outputs depend only on the graph, which the targets may share.
    let mut reference: Option<(String, Vec<(String, HostTensor)>)> = None;
    for target in TARGETS {
        let artifact = compiled(&tmp, model, target);
        let inputs = random_inputs(&artifact.graph, 5);
        let text = artifact.graph.to_string();
        if reference.as_ref().is_none_or(|(t, _)| *t != text) {
            let mut cpu = Session::new(&artifact, Device::Cpu).unwrap();
            cpu.load_random_weights(2).unwrap();
            reference = Some((text, cpu.run(&inputs).unwrap()));
        }
        let expected = &reference.as_ref().expect("computed above").1;
        for on in gpu.backends(test, &artifact) {
            eprintln!("{model} ({target}) on {on}:");
            if let Err(why) = compare_on(&on, &artifact, &inputs, expected, bound) {
                failures.push(format!("{model} ({target}) on {on}: {why}"));
            }
        }
    }
    gpu.finish(test);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The models run end to end, each with its bound (see the module's documentation).
const BOUNDS: [(&str, f64); 3] = [
    ("examples/tiny-moe.toml", 0.5),
    ("examples/llama-small.toml", 1e-1),
    ("examples/qwen2-small.toml", 1e-1),
];

fn bound(model: &str) -> f64 {
    BOUNDS
        .iter()
        .find(|(m, _)| *m == model)
        .map(|&(_, b)| b)
        .expect("a bound for every end-to-end model")
}

#[test]
fn tiny_moe_matches_the_cpu_backend() {
    let model = "examples/tiny-moe.toml";
    end_to_end("gpu-e2e-tiny-moe", model, bound(model));
}

#[test]
fn llama_small_matches_the_cpu_backend() {
    let model = "examples/llama-small.toml";
    end_to_end("gpu-e2e-llama", model, bound(model));
}

#[test]
fn qwen2_small_matches_the_cpu_backend() {
    let model = "examples/qwen2-small.toml";
    end_to_end("gpu-e2e-qwen2", model, bound(model));
}

/// Regression: llama-small's and qwen2-small's bound was 2e-2, below what the CPU's own two
/// accumulator models differ by (5.0e-2 and 4.5e-2), so a correct GPU or emulator could not
/// meet it (the emulator measures 2.8e-2 and 2.9e-2). Each bound must exceed that spread.
#[test]
fn bounds_cover_the_cpu_accumulator_spread() {
    use dsc_kernels::Accumulator;
    use dsc_runtime::SessionOptions;
    let tmp = TempDir::new("gpu-e2e-bounds");
    for (model, bound) in BOUNDS {
        let artifact = compiled(&tmp, model, TARGETS[0]);
        let inputs = random_inputs(&artifact.graph, 5);
        let run = |accumulator| {
            let options = SessionOptions::default().with_accumulator(accumulator);
            let mut cpu = Session::with_options(&artifact, Device::Cpu, options).unwrap();
            cpu.load_random_weights(2).unwrap();
            cpu.run(&inputs).unwrap()
        };
        let (exact, hopper) = (run(Accumulator::Exact), run(Accumulator::Hopper));
        for ((name, h), (_, e)) in hopper.iter().zip(&exact) {
            let spread = relative_frobenius(h, e);
            eprintln!("{model}: `{name}` exact vs Hopper accumulation on the CPU: {spread:.3e}");
            assert!(
                spread < bound,
                "{model}: the bound {bound:.0e} is below the CPU's own accumulator spread {spread:.3e}"
            );
        }
    }
}

/// Runs on any machine: the GPU test models compile, and the CPU reference keeps a NaN in its
/// row (and only there) and stays finite on zeros, tiny and large values, which is what the
/// GPU comparison relies on.
#[test]
fn gpu_test_models_compile_and_run_on_the_cpu() {
    let tmp = TempDir::new("gpu-models-cpu");
    let dir = tmp.join("ragged");
    let out = dsc(&[
        "compile",
        "tests/gpu/models/ragged-mlp.toml",
        "-o",
        &dir.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", streams(&out).1);
    let artifact = dsc_runtime::Artifact::load(&dir).unwrap();
    let mut session = Session::new(&artifact, Device::Cpu).unwrap();
    session.load_random_weights(11).unwrap();
    let outputs = session.run(&extreme_inputs(&artifact.graph)).unwrap();
    let down = &outputs[0].1;
    assert_eq!(down.shape, [37, 200]);
    let cols = 200;
    let values = down.to_f32_vec();
    for (row, chunk) in values.chunks(cols).enumerate() {
        if row == 3 {
            assert!(chunk.iter().all(|v| v.is_nan()), "the NaN row stays NaN");
        } else {
            assert!(chunk.iter().all(|v| v.is_finite()), "row {row} is finite");
        }
    }
    assert!(
        values[..cols].iter().all(|&v| v == 0.0),
        "a zero row maps to zeros"
    );
}
