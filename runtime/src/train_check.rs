//! A compiled training step (`dsc train --write-step DIR`) run on a device against the same step
//! graph on the CPU backend: from the same random FP32 masters and one random batch, a few
//! steps of each, comparing every step's loss and gradient norm, every parameter's gradient of
//! the first step and the master weights after the last — the check of `tests/gpu/
//! training_steps.rs`, in a form that needs no compiler (`gpu_check --train DIR` runs it on a
//! lent GPU, which has no MLIR).
//!
//! The bounds are those of the training-step tests: the GPU kernels follow the CPU references'
//! numerics, so the first step agrees to 1e-4 relative per tensor with the FP8 recipe (its
//! GEMMs sum in the references' order); from the second step on, a master weight a few ulps
//! off can round to a neighbouring BF16 or FP8 value in the next weight copy, so 1e-3. The
//! all-BF16 recipe's linears sum in the tensor cores' order and round to BF16: 5e-3 throughout.

use std::time::Instant;

use crate::cpu::CpuOptions;
use crate::inputs::random_inputs;
use crate::train::Trainer;
use crate::{Artifact, Device, HostTensor, RuntimeError, Session, random_weights};

/// Learning rate of the compared steps.
const LR: f32 = 1e-3;

/// One tensor's (or scalar's) relative difference, device against CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// What was compared: `step 1 loss`, `step 1 grad … .grad`, `master …`.
    pub what: String,
    /// `‖device − cpu‖ / ‖cpu‖` (absolute when the CPU's is zero); NaN when their NaNs differ.
    pub relative: f64,
    /// The bound it is held to.
    pub bound: f64,
}

impl Difference {
    /// Whether it is within its bound.
    pub fn ok(&self) -> bool {
        self.relative <= self.bound
    }
}

/// What [`check_training`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingCheck {
    /// Whether the step is the FP8 recipe's (it has FP8 GEMMs), which sets the bounds.
    pub fp8: bool,
    /// Every comparison, in order: per step the loss and gradient norm (and the first step's
    /// gradients), then the masters.
    pub differences: Vec<Difference>,
    /// Wall seconds of each device step (weights uploaded, step run, outputs read back).
    pub device_step_seconds: Vec<f64>,
    /// Tokens per step.
    pub tokens: usize,
}

impl TrainingCheck {
    /// The comparisons outside their bounds.
    pub fn failures(&self) -> Vec<&Difference> {
        self.differences.iter().filter(|d| !d.ok()).collect()
    }
}

/// Whether a lowered training step is the FP8 recipe's: it has FP8 GEMMs.
pub fn is_fp8_step(graph: &dsc_ir::Graph) -> bool {
    graph
        .ops
        .iter()
        .any(|op| op.precision.is_some_and(|p| p.compute.is_fp8()))
}

/// `‖a − b‖ / ‖b‖` in f64 (absolute when `b` is zero); NaN when the two disagree on which
/// elements are NaN or differ in length.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_nan() || y.is_nan() {
            if x.is_nan() != y.is_nan() {
                return f64::NAN;
            }
            continue;
        }
        diff += (f64::from(x) - f64::from(y)).powi(2);
        norm += f64::from(y).powi(2);
    }
    if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    }
}

/// Runs `steps` training steps of `artifact`'s step graph on `device` and on the CPU backend
/// from the masters [`random_weights`] draws from `seed` and one batch of random token ids
/// (labels: the ids shifted left by one), and compares them.
pub fn check_training(
    artifact: &Artifact,
    device: Device,
    steps: usize,
    seed: u64,
) -> Result<TrainingCheck, RuntimeError> {
    let graph = &artifact.graph;
    let inputs = random_inputs(graph, seed);
    let ids = inputs
        .get("input_ids")
        .ok_or_else(|| RuntimeError::Inputs {
            message: format!(
                "{} is not a training step: it has no input `input_ids`",
                graph.name
            ),
        })?
        .to_f32_vec()
        .iter()
        .map(|&v| v as i32)
        .collect::<Vec<i32>>();
    let mut labels = ids.clone();
    labels.rotate_left(1);
    let fp8 = is_fp8_step(graph);
    let (first_bound, later_bound) = if fp8 { (1e-4, 1e-3) } else { (5e-3, 5e-3) };
    let weights = random_weights(graph, seed)?;
    let mut cpu = Trainer::new(graph.clone(), weights.clone(), CpuOptions::default())?;
    let mut gpu = Trainer::on_session(Session::new(artifact, device)?, weights)?;
    // The first step's gradients are compared.
    cpu.read_gradients(true);
    gpu.read_gradients(true);
    let mut differences = Vec::new();
    let mut device_step_seconds = Vec::new();
    for step in 1..=steps {
        let bound = if step == 1 { first_bound } else { later_bound };
        let (want, want_out) = cpu.step(ids.clone(), labels.clone(), LR)?;
        let start = Instant::now();
        let (got, got_out) = gpu.step(ids.clone(), labels.clone(), LR)?;
        device_step_seconds.push(start.elapsed().as_secs_f64());
        for (what, g, w) in [
            ("loss", got.loss, want.loss),
            ("grad_norm", got.grad_norm, want.grad_norm),
        ] {
            differences.push(Difference {
                what: format!("step {step} {what}"),
                relative: relative(&[g], &[w]),
                bound,
            });
        }
        if step == 1 {
            for (name, w) in want_out.iter().filter(|(n, _)| n.ends_with(".grad")) {
                let g: Option<&HostTensor> =
                    got_out.iter().find(|(n, _)| n == name).map(|(_, t)| t);
                differences.push(Difference {
                    what: format!("step 1 {name}"),
                    relative: g.map_or(f64::NAN, |g| relative(&g.to_f32_vec(), &w.to_f32_vec())),
                    bound,
                });
            }
        }
    }
    let bound = if steps > 1 { later_bound } else { first_bound };
    gpu.sync()?;
    let got_weights = gpu.weights()?;
    for (id, want) in cpu.weights()?.iter() {
        let got = got_weights.get(id).map(HostTensor::to_f32_vec);
        differences.push(Difference {
            what: format!("master {} after step {steps}", graph.name(id)),
            relative: got.map_or(f64::NAN, |g| relative(&g, &want.to_f32_vec())),
            bound,
        });
    }
    Ok(TrainingCheck {
        fp8,
        differences,
        device_step_seconds,
        tokens: ids.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::relative;

    #[test]
    fn relative_differences_hold_nans_and_lengths_against_the_check() {
        assert_eq!(relative(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        assert!((relative(&[3.0, 4.5], &[3.0, 4.0]) - 0.1).abs() < 1e-12);
        // The CPU's zero: the absolute difference.
        assert_eq!(relative(&[0.5], &[0.0]), 0.5);
        // NaNs where both have them are skipped; anywhere else the difference is NaN, which
        // no bound admits.
        assert_eq!(relative(&[f32::NAN, 1.0], &[f32::NAN, 1.0]), 0.0);
        assert!(relative(&[f32::NAN, 1.0], &[2.0, 1.0]).is_nan());
        assert!(relative(&[1.0], &[1.0, 2.0]).is_nan());
    }
}
