//! Whole models on the emulator and on the GPU (where present) against the CPU backend,
//! through the Session API, for both targets.
//!
//! Tolerances (relative Frobenius error of the logits): llama-small and qwen2-small 2e-2 (BF16 storage between
//! kernels, FP32 accumulation in another order); tiny-moe 0.5, because its random gate flips
//! top-k expert choices on changes in the last bit (the Hopper accumulator model moves its
//! logits by 22% on the CPU alone, see tests/run.rs); the step-by-step tests are the tight ones.

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

#[test]
fn tiny_moe_matches_the_cpu_backend() {
    end_to_end("gpu-e2e-tiny-moe", "examples/tiny-moe.toml", 0.5);
}

#[test]
fn llama_small_matches_the_cpu_backend() {
    end_to_end("gpu-e2e-llama", "examples/llama-small.toml", 2e-2);
}

#[test]
fn qwen2_small_matches_the_cpu_backend() {
    end_to_end("gpu-e2e-qwen2", "examples/qwen2-small.toml", 2e-2);
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
