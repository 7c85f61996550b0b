//! Every launch step of each compiled model, on the emulator and on the GPU, against the CPU
//! reference of its op fed the very operands the step read (so errors do not accumulate across
//! steps), for both targets.

use super::{Gpu, On, TARGETS, compiled};
use crate::support::TempDir;
use dsc_ir::{DType, Graph, Op};
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::step_check::{StepBackend, check_steps};
use dsc_runtime::{Artifact, HostTensor, random_weights};
use std::collections::HashMap;

/// Makes a run's inputs for a graph.
type MakeInputs = dyn Fn(&Graph) -> HashMap<String, HostTensor>;

/// Runs `artifact` step by step `on` a backend and checks every op; returns the mismatches
/// (or the failed run) as sentences naming the step, op and kernel.
fn check_on(
    on: &On,
    artifact: &Artifact,
    inputs: &HashMap<String, HostTensor>,
) -> Result<usize, Vec<String>> {
    let weights = random_weights(&artifact.graph, 11).expect("random weights");
    let backend = match on {
        On::Emulator => StepBackend::Emulator,
        On::Cuda(device) => StepBackend::Cuda(device.clone()),
    };
    check_steps(artifact, &backend, weights, inputs)
}

/// Runs `model`, compiled for each target, step by step on the emulator and the GPU (where
/// present) with `inputs` (random when `None`), comparing every op's results with the CPU
/// reference on the backend's own operands; fails listing every mismatch of every run.
fn check_every_step(test: &str, model: &str, inputs: Option<&MakeInputs>) {
    let tmp = TempDir::new(test);
    let mut gpu = Gpu::probe();
    let mut failures: Vec<String> = Vec::new();
    for target in TARGETS {
        let artifact = compiled(&tmp, model, target);
        let graph = &artifact.graph;
        let inputs = inputs.map_or_else(|| random_inputs(graph, 7), |make| make(graph));
        let steps = artifact.manifest.steps.len();
        for on in gpu.backends(test, &artifact) {
            match check_on(&on, &artifact, &inputs) {
                Ok(compared) => {
                    eprintln!("{model} ({target}) on {on}: {compared} ops ({steps} steps) match")
                }
                Err(errors) => failures.push(format!(
                    "{model} ({target}) on {on}: {} problem(s):\n  {}",
                    errors.len(),
                    errors.join("\n  ")
                )),
            }
        }
    }
    gpu.finish(test);
    assert!(
        failures.is_empty(),
        "ops differ from the CPU reference:\n{}",
        failures.join("\n")
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

/// GEMMs wide enough for the sm_90a FP8 GEMM's 64 × 128 and 64 × 64 tiles (the small models
/// get 64 × 16 and 64 × 32), off the tiles in M and N.
#[test]
fn wide_tiles_match_the_cpu_reference() {
    check_every_step("gpu-steps-wide", "tests/gpu/models/wide-mlp.toml", None);
}

/// Routed experts with 128 rows each on average: on sm_90a the grouped FP8 GEMM's 128-row
/// tiles (two consumer warpgroups, rows gathered through the dispatch), promotion every 32,
/// more K blocks than ring stages.
#[test]
fn wide_grouped_tiles_with_interval_32_match_the_cpu_reference() {
    check_every_step("gpu-steps-wide-moe", "tests/gpu/models/wide-moe.toml", None);
}

/// The same with 32 rows per expert: 64-row grouped tiles, one consumer warpgroup.
#[test]
fn narrow_grouped_tiles_match_the_cpu_reference() {
    check_every_step(
        "gpu-steps-narrow-moe",
        "tests/gpu/models/narrow-moe.toml",
        None,
    );
}

/// A BF16 linear (head) with M, N and K off the tiles, and a bias: wgmma on sm_90a, mma.sync
/// on sm_89.
#[test]
fn a_ragged_bf16_head_matches_the_cpu_reference() {
    check_every_step(
        "gpu-steps-ragged-head",
        "tests/gpu/models/ragged-head.toml",
        None,
    );
}

/// Odd output widths (single-column stores in the sm_90a epilogues, FP8 GEMM and BF16 head)
/// and FP8 GEMMs with f32 outputs (single and paired 4-byte stores).
#[test]
fn odd_widths_and_f32_outputs_match_the_cpu_reference() {
    check_every_step(
        "gpu-steps-odd-columns",
        "tests/gpu/models/odd-columns.toml",
        None,
    );
    check_every_step(
        "gpu-steps-f32-outputs",
        "tests/gpu/models/f32-outputs.toml",
        None,
    );
}

/// A hidden size too wide for a row in registers or shared memory: the fused norm recomputes
/// its groups.
#[test]
fn a_row_wider_than_shared_memory_matches_the_cpu_reference() {
    check_every_step(
        "gpu-steps-wide-norm",
        "tests/gpu/models/wide-norm.toml",
        None,
    );
}

/// The same in E5M2 with a promotion interval of 64.
#[test]
fn wide_tiles_in_e5m2_with_interval_64_match_the_cpu_reference() {
    check_every_step(
        "gpu-steps-wide-e5m2",
        "tests/gpu/models/wide-mlp-e5m2.toml",
        None,
    );
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
