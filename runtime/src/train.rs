//! Training steps: a step graph (built by `dsc_passes::train_step` and lowered by its
//! pipeline) run over and over, its updated parameters and moments fed back. The step runs on
//! the CPU backend op by op, or as a compiled artifact in a [`Session`] (the emulator or CUDA).
//!
//! The contract with the step graph is by name: inputs `input_ids`, `labels`, `loss.grad`,
//! `train.schedule` (lr, step) and `{param}.adam_m` / `{param}.adam_v`; outputs `loss`,
//! `grad_norm`, `{param}.grad`, and `{x}.next` for every parameter and moment `x` the step
//! updates (a parameter may be updated without moments: a MoE layer's selection bias).
//!
//! On a session the weights and moments live on the device: the first step uploads them, each
//! step after sends only its batch, and the updated weights and moments are copied onto the
//! step's weights and moment inputs on the device ([`Session::copy_tensors`]), never through the
//! host. The host copies are read back by [`Trainer::sync`], which saving a checkpoint calls.

use crate::RuntimeError;
use crate::cpu::{self, CpuOptions};
use crate::host_memory::{MemoryNeed, available_bytes};
use crate::session::Session;
use crate::step_profile::StepProfile;
use crate::tensor::{HostData, HostTensor};
use crate::weights::Weights;
use dsc_ir::{Graph, ValueId};
use std::collections::HashMap;

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step just taken, counting from 1.
    pub step: u64,
    pub loss: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Where a trainer runs its steps.
enum Runner<'a> {
    /// The CPU reference, op by op over the step graph.
    Cpu(CpuOptions),
    /// The step graph compiled into an artifact, run by a session (the emulator or CUDA) that
    /// keeps the weights and moments on the device between steps.
    Session(Box<Session<'a>>),
}

/// A training run's state: the step graph, master weights, moments and the step count.
pub struct Trainer<'a> {
    graph: Graph,
    weights: Weights,
    /// Moment inputs by name (`{param}.adam_m`, `{param}.adam_v`).
    moments: HashMap<String, HostTensor>,
    /// Parameters the optimizer updates: (param, its `.next` output name).
    updated: Vec<(ValueId, String)>,
    /// Each `.next` output with the parameter or moment input it replaces.
    carried: Vec<(String, String)>,
    /// The outputs a step returns: every output but the carried ones, and but the gradients
    /// unless `read_gradients`.
    returned: Vec<String>,
    /// Steps return the parameters' gradients (`….grad`) too.
    read_gradients: bool,
    /// On a session: the device holds the current weights and moments, so a step sends only
    /// its batch (false until the first step, and after [`Trainer::restore`]).
    device_current: bool,
    /// `weights` and `moments` are current (false after a step on a session until
    /// [`Trainer::sync`]).
    host_current: bool,
    step: u64,
    runner: Runner<'a>,
    /// Time per op kind, when profiling.
    profile: Option<StepProfile>,
}

fn tensor_err(message: String) -> RuntimeError {
    RuntimeError::Inputs { message }
}

impl<'a> Trainer<'a> {
    /// A trainer on the CPU backend at step 0 with `weights` (FP32 masters) and zero moments.
    pub fn new(graph: Graph, weights: Weights, options: CpuOptions) -> Result<Self, RuntimeError> {
        // Checked before anything is allocated, as a CPU session checks its model: a step too
        // large for the machine is an error saying both numbers, not an aborted process. The
        // moments are held twice, in the trainer and as the step's inputs.
        let mut need = MemoryNeed::cpu(&graph);
        need.inputs = need.inputs.saturating_mul(2);
        need.check("cpu", available_bytes())?;
        Self::with_runner(graph, weights, Runner::Cpu(options))
    }

    /// A trainer running the step graph compiled into `session`'s artifact, at step 0 with
    /// `weights` (FP32 masters) and zero moments.
    pub fn on_session(session: Session<'a>, weights: Weights) -> Result<Self, RuntimeError> {
        let graph = session.artifact().graph.clone();
        Self::with_runner(graph, weights, Runner::Session(Box::new(session)))
    }

    fn with_runner(
        graph: Graph,
        weights: Weights,
        runner: Runner<'a>,
    ) -> Result<Self, RuntimeError> {
        weights.check(&graph)?;
        let mut moments = HashMap::new();
        let mut updated = Vec::new();
        for &p in &graph.params {
            let name = graph.name(p);
            let next = format!("{name}.next");
            if !graph.outputs.iter().any(|&o| graph.name(o) == next) {
                continue;
            }
            // A parameter updated without optimizer state (a MoE layer's selection bias, moved
            // by the balancing step) has neither moment; one with AdamW's has both.
            let found = ["adam_m", "adam_v"].map(|suffix| {
                let m_name = format!("{name}.{suffix}");
                let m = graph.inputs.iter().find(|&&i| graph.name(i) == m_name);
                (m_name, m.copied())
            });
            if found.iter().any(|(_, m)| m.is_some()) {
                for (m_name, m) in found {
                    let m = m.ok_or_else(|| {
                        tensor_err(format!("the step graph has no input `{m_name}`"))
                    })?;
                    let ty = graph.ty(m);
                    let shape = ty.shape.dims().iter().map(|&d| d as usize).collect();
                    moments.insert(m_name, HostTensor::zeros(ty.dtype, shape));
                }
            }
            updated.push((p, next));
        }
        let mut carried: Vec<(String, String)> = updated
            .iter()
            .map(|(p, next)| (next.clone(), graph.name(*p).to_string()))
            .collect();
        let mut moment_names: Vec<&String> = moments.keys().collect();
        moment_names.sort();
        carried.extend(
            moment_names
                .into_iter()
                .map(|m| (format!("{m}.next"), m.clone())),
        );
        let returned = graph
            .outputs
            .iter()
            .map(|&o| graph.name(o).to_string())
            .filter(|o| !carried.iter().any(|(next, _)| next == o))
            .collect();
        Ok(Trainer {
            graph,
            weights,
            moments,
            updated,
            carried,
            returned,
            read_gradients: false,
            device_current: false,
            host_current: true,
            step: 0,
            runner,
            profile: None,
        })
    }

    /// The step graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The current master weights; an error after a step on a session until [`Self::sync`]
    /// has read them back.
    pub fn weights(&self) -> Result<&Weights, RuntimeError> {
        self.check_host_current()?;
        Ok(&self.weights)
    }

    /// The current moments by input name; an error after a step on a session until
    /// [`Self::sync`] has read them back.
    pub fn moments(&self) -> Result<&HashMap<String, HostTensor>, RuntimeError> {
        self.check_host_current()?;
        Ok(&self.moments)
    }

    fn check_host_current(&self) -> Result<(), RuntimeError> {
        if self.host_current {
            Ok(())
        } else {
            Err(tensor_err(
                "the trainer's weights and moments are on the device: call Trainer::sync first"
                    .into(),
            ))
        }
    }

    /// Reads the weights and moments the optimizer updates back from the device, when steps on
    /// a session have changed them (nothing to do otherwise).
    pub fn sync(&mut self) -> Result<(), RuntimeError> {
        let Runner::Session(session) = &mut self.runner else {
            return Ok(());
        };
        if self.host_current {
            return Ok(());
        }
        for (p, _) in &self.updated {
            let t = session.read_back(self.graph.name(*p))?;
            self.weights.insert(*p, t);
        }
        for (name, t) in self.moments.iter_mut() {
            *t = session.read_back(name)?;
        }
        self.host_current = true;
        Ok(())
    }

    /// Whether the following steps return the parameters' gradients (`….grad` outputs): off by
    /// default, since on a GPU each step would read them all back from the device.
    pub fn read_gradients(&mut self, read: bool) {
        self.read_gradients = read;
    }

    /// The outputs a step returns now, in graph order.
    fn reported(&self) -> Vec<String> {
        self.returned
            .iter()
            .filter(|o| self.read_gradients || !o.ends_with(".grad"))
            .cloned()
            .collect()
    }

    /// Times every op of the following steps ([`Self::profile`]).
    pub fn enable_profile(&mut self) {
        self.profile.get_or_insert_with(StepProfile::default);
    }

    /// Time per op kind of the steps run since [`Self::enable_profile`] (None before).
    pub fn profile(&self) -> Option<&StepProfile> {
        self.profile.as_ref()
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Restores a saved state: weights, moments by name, and the step count.
    pub fn restore(
        &mut self,
        weights: Weights,
        moments: HashMap<String, HostTensor>,
        step: u64,
    ) -> Result<(), RuntimeError> {
        weights.check(&self.graph)?;
        for (name, t) in &self.moments {
            let got = moments
                .get(name)
                .ok_or_else(|| tensor_err(format!("the saved state has no `{name}`")))?;
            if got.shape != t.shape || got.dtype != t.dtype {
                return Err(tensor_err(format!(
                    "saved `{name}` is {} {:?}, the model needs {} {:?}",
                    got.dtype, got.shape, t.dtype, t.shape
                )));
            }
        }
        self.weights = weights;
        self.moments = moments;
        self.step = step;
        self.device_current = false;
        self.host_current = true;
        Ok(())
    }

    /// Runs one step on a batch (`input_ids`, `labels`, both `[batch, seq]`) at learning rate
    /// `lr`, returning the step's outputs by name but the updated weights and moments
    /// (`….next`), which the trainer keeps, and the gradients unless
    /// [`Self::read_gradients`]. A non-finite loss or gradient norm is an error naming
    /// the step, and the state stays as it was before it.
    pub fn step(
        &mut self,
        input_ids: Vec<i32>,
        labels: Vec<i32>,
        lr: f32,
    ) -> Result<(StepStats, Vec<(String, HostTensor)>), RuntimeError> {
        let step = self.step + 1;
        let ids_ty = self.input_type("input_ids")?;
        let mut batch: HashMap<String, HostTensor> = HashMap::new();
        let shape: Vec<usize> = ids_ty.shape.dims().iter().map(|&d| d as usize).collect();
        batch.insert(
            "input_ids".into(),
            HostTensor::new(ids_ty.dtype, shape.clone(), HostData::I32(input_ids))?,
        );
        batch.insert(
            "labels".into(),
            HostTensor::from_i32(dsc_ir::DType::I32, shape, labels)?,
        );
        batch.insert(
            "loss.grad".into(),
            HostTensor::from_f32(dsc_ir::DType::F32, vec![1], vec![1.0])?,
        );
        // The step is an f32 in the graph: exact up to 2^24 steps.
        batch.insert(
            "train.schedule".into(),
            HostTensor::from_f32(dsc_ir::DType::F32, vec![2], vec![lr, step as f32])?,
        );
        let mut outputs = self.run_step(batch)?;
        let find = |name: &str| {
            outputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| tensor_err(format!("the step graph has no output `{name}`")))
        };
        let loss = find("loss")?.to_f32_vec()[0];
        let grad_norm = find("grad_norm")?.to_f32_vec()[0];
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(RuntimeError::Diverged {
                step,
                loss,
                grad_norm,
            });
        }
        match &mut self.runner {
            Runner::Session(session) => {
                session.copy_tensors(&self.carried)?;
                self.host_current = false;
            }
            Runner::Cpu(_) => {
                let mut take = |name: &str| {
                    let at = outputs.iter().position(|(n, _)| n == name).ok_or_else(|| {
                        tensor_err(format!("the step graph has no output `{name}`"))
                    })?;
                    Ok::<_, RuntimeError>(outputs.swap_remove(at).1)
                };
                for (p, next) in &self.updated {
                    self.weights.insert(*p, take(next)?);
                }
                for (name, t) in self.moments.iter_mut() {
                    *t = take(&format!("{name}.next"))?;
                }
                let reported = self.reported();
                outputs.retain(|(n, _)| reported.contains(n));
                outputs.sort_by_key(|(n, _)| reported.iter().position(|r| r == n));
            }
        }
        self.step = step;
        Ok((
            StepStats {
                step,
                loss,
                grad_norm,
            },
            outputs,
        ))
    }

    /// Runs the step graph once on `batch` (and, where the device does not hold them yet, the
    /// weights and moments), adding its time per op kind to the profile when profiling (wall
    /// time on the CPU, the session's step times elsewhere: modeled on the emulator). On a
    /// session only the returned outputs come back.
    fn run_step(
        &mut self,
        mut batch: HashMap<String, HostTensor>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        // Recorded apart and added once every op of the step has run.
        let mut this_step = StepProfile::default();
        let on_device = matches!(self.runner, Runner::Session(_)) && self.device_current;
        if !on_device {
            batch.extend(self.moments.iter().map(|(n, t)| (n.clone(), t.clone())));
        }
        let reported = self.reported();
        let outputs = match &mut self.runner {
            Runner::Cpu(options) if self.profile.is_some() => cpu::run_observed(
                &self.graph,
                &self.weights,
                &batch,
                options,
                &mut |op, _, took| this_step.record(op.kind, took),
            )?,
            Runner::Cpu(options) => cpu::run(&self.graph, &self.weights, &batch, options)?,
            Runner::Session(session) => {
                if !self.device_current {
                    session.set_weights(self.weights.clone())?;
                }
                let outputs = session.run_given(&batch, &reported)?;
                // The weights are there, and the moments came with this step's inputs.
                self.device_current = true;
                if self.profile.is_some() {
                    let kinds: HashMap<&str, dsc_ir::OpKind> = self
                        .graph
                        .ops
                        .iter()
                        .map(|op| (self.graph.op_name(op), op.kind))
                        .collect();
                    for t in session.timings() {
                        if let Some(&kind) = kinds.get(t.op.as_str()) {
                            this_step.record(kind, std::time::Duration::from_secs_f64(t.seconds));
                        }
                    }
                }
                outputs
            }
        };
        if let Some(profile) = &mut self.profile {
            profile.steps += 1;
            for (kind, (calls, took)) in this_step.by_kind {
                let entry = profile.by_kind.entry(kind).or_default();
                entry.0 += calls;
                entry.1 += took;
            }
        }
        Ok(outputs)
    }

    fn input_type(&self, name: &str) -> Result<dsc_ir::TensorType, RuntimeError> {
        self.graph
            .inputs
            .iter()
            .find(|&&i| self.graph.name(i) == name)
            .map(|&i| self.graph.ty(i).clone())
            .ok_or_else(|| tensor_err(format!("the step graph has no input `{name}`")))
    }
}
