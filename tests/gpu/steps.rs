//! Every launch step of each compiled model on the GPU against the CPU reference of its op,
//! fed the very operands the GPU step read (so errors do not accumulate across steps).

use super::tolerance::{compare, rule_for};
use super::{compiled_for, gpu_or_skip};
use crate::support::TempDir;
use dsc_ir::{DType, Graph, Op};
use dsc_runtime::cpu::{CpuOptions, execute_op};
use dsc_runtime::cuda::{CudaBackend, StepPhase};
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Backend, HostTensor, random_weights};
use std::collections::HashMap;

/// Makes a run's inputs for a graph.
type MakeInputs = dyn Fn(&Graph) -> HashMap<String, HostTensor>;

/// Runs `model` step by step on the GPU with `inputs` (random when `None`) and compares every
/// op's results with the CPU reference on the GPU's operands; fails listing every mismatch.
fn check_every_step(test: &str, model: &str, inputs: Option<&MakeInputs>) {
    let Some(device) = gpu_or_skip(test) else {
        return;
    };
    let tmp = TempDir::new(test);
    let Some(artifact) = compiled_for(test, &tmp, model, &device) else {
        return;
    };
    let graph = &artifact.graph;
    let inputs = inputs.map_or_else(|| random_inputs(graph, 7), |make| make(graph));
    let mut backend = CudaBackend::new(&artifact, &device).expect("the backend loads");
    backend
        .set_weights(random_weights(graph, 11).unwrap())
        .expect("weights upload");
    let ops: HashMap<&str, &Op> = graph.ops.iter().map(|op| (graph.op_name(op), op)).collect();
    let steps = &artifact.manifest.steps;
    // An op may take several launches: read operands before its first, compare after its last.
    let first = |i: usize| i == 0 || steps[i - 1].op != steps[i].op;
    let last = |i: usize| i + 1 == steps.len() || steps[i + 1].op != steps[i].op;
    let mut operands: Vec<HostTensor> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut compared = 0;
    backend
        .run_step_by_step(&inputs, &mut |i, phase, backend| {
            let op = ops[steps[i].op.as_str()];
            match phase {
                StepPhase::Before if first(i) => {
                    operands = op
                        .operands
                        .iter()
                        .map(|&v| backend.read_tensor(graph.name(v)))
                        .collect::<Result<_, _>>()?;
                }
                StepPhase::After if last(i) => {
                    let refs: Vec<&HostTensor> = operands.iter().collect();
                    let expected = execute_op(graph, op, &refs, &CpuOptions::default())?;
                    for (k, (&r, want)) in op.results.iter().zip(&expected).enumerate() {
                        let got = backend.read_tensor(graph.name(r))?;
                        let rule = rule_for(op.kind, k, want.dtype);
                        if let Err(why) = compare(rule, &got, want) {
                            failures.push(format!(
                                "step {i} op `{}` ({}, kernel `{}`) result `{}` [{rule:?}]: {why}",
                                steps[i].op,
                                op.kind.name(),
                                steps[i].kernel,
                                graph.name(r)
                            ));
                        }
                    }
                    compared += 1;
                }
                _ => {}
            }
            Ok(())
        })
        .expect("the plan runs");
    assert!(
        failures.is_empty(),
        "{model} on {device}: {} of {compared} ops differ from the CPU reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{model} on {device}: {compared} ops ({} steps) match",
        steps.len()
    );
}

#[test]
fn mlp_steps_match_the_cpu_reference() {
    check_every_step("gpu-steps-mlp", "examples/mlp.toml", None);
}

#[test]
fn tiny_moe_steps_match_the_cpu_reference() {
    check_every_step("gpu-steps-tiny-moe", "examples/tiny-moe.toml", None);
}

#[test]
fn llama_small_steps_match_the_cpu_reference() {
    check_every_step("gpu-steps-llama", "examples/llama-small.toml", None);
}

/// q/k/v with a bias: the bias `add` (`[.., N] + [N]`) after each FP8 GEMM.
#[test]
fn qwen2_small_steps_match_the_cpu_reference() {
    check_every_step("gpu-steps-qwen2", "examples/qwen2-small.toml", None);
}

/// M, N, K off the tiles (37 × 200 → 300 → 200).
#[test]
fn ragged_shapes_match_the_cpu_reference() {
    check_every_step("gpu-steps-ragged", "tests/gpu/models/ragged-mlp.toml", None);
}

/// Rows of zeros, of values under the 1e-4 scale floor, of large values (amax far above 448,
/// so codes saturate at ±448·scale), and one NaN, in the ragged model.
#[test]
fn extreme_values_match_the_cpu_reference() {
    check_every_step(
        "gpu-steps-extreme",
        "tests/gpu/models/ragged-mlp.toml",
        Some(&extreme_inputs),
    );
}

/// The ragged model's input `x` with extreme rows (see [`extreme_values_match_the_cpu_reference`]).
pub fn extreme_inputs(graph: &Graph) -> HashMap<String, HostTensor> {
    let mut inputs = random_inputs(graph, 3);
    let x = inputs.get_mut("x").expect("the ragged model reads x");
    let cols = x.shape[1];
    let values = x.as_f32_mut().unwrap();
    values[..cols].fill(0.0);
    values[cols..2 * cols].fill(3e-6);
    for (j, v) in values[2 * cols..3 * cols].iter_mut().enumerate() {
        *v = if j % 2 == 0 { 30000.0 } else { -448.0 };
    }
    values[3 * cols + 5] = f32::NAN;
    dsc_runtime::tensor::round_slice(DType::Bf16, values);
    inputs
}

/// Runs on any machine: what the step-by-step comparison relies on holds for every compiled
/// example — each step's op is in the graph, and every operand and result of that op is a
/// manifest tensor the GPU test can read back.
#[test]
fn every_stepped_op_reads_and_writes_manifest_tensors() {
    let tmp = TempDir::new("gpu-plan-shape");
    for model in [
        "examples/mlp.toml",
        "examples/tiny-moe.toml",
        "examples/llama-small.toml",
        "examples/qwen2-small.toml",
        "tests/gpu/models/ragged-mlp.toml",
    ] {
        let dir = tmp.join(model.replace('/', "_").as_str());
        let out = crate::support::dsc(&["compile", model, "-o", &dir.to_string_lossy()]);
        assert!(out.status.success(), "{}", crate::support::streams(&out).1);
        let artifact = dsc_runtime::Artifact::load(&dir).unwrap();
        let graph = &artifact.graph;
        let ops: HashMap<&str, &Op> = graph.ops.iter().map(|op| (graph.op_name(op), op)).collect();
        assert!(!artifact.manifest.steps.is_empty(), "{model}");
        for step in &artifact.manifest.steps {
            let op = ops[step.op.as_str()];
            for &v in op.operands.iter().chain(&op.results) {
                assert!(
                    artifact.manifest.tensor(graph.name(v)).is_some(),
                    "{model}: `{}` of step `{}` is not in the manifest",
                    graph.name(v),
                    step.op
                );
            }
        }
    }
}
