//! Training checkpoints of `dsc train` (`--save DIR`, `--resume DIR`; DESIGN.md §8,
//! docs/training.md): one directory holding
//!
//! - `model.safetensors`: the weights in the Hugging Face layout, each in the forward model's
//!   dtype (BF16); with `--export fp8` the weights the model's precision policy runs in FP8 are
//!   E4M3 codes plus F32 `weight_scale_inv` block scales (DeepSeek-V3's layout), quantized by the
//!   runtime's own quantize-on-load ([`dsc_runtime::load_weights`] of the compiled model), as
//!   `dsc quantize-weights` quantizes;
//! - `master.safetensors`: the FP32 master weights by the same names;
//! - `optimizer.safetensors`: the AdamW moments by their step-graph input names
//!   (`{param}.adam_m`, `{param}.adam_v`), BF16;
//! - `train_state.json`: what a resume needs besides the tensors and what it must match
//!   ([`TrainState`]).
//!
//! A save writes a temporary sibling directory and renames it over DIR, so DIR always holds one
//! whole checkpoint. Only a missing or empty directory, or one holding a dsc training checkpoint
//! (its `train_state.json`), is ever replaced; a directory holding an input of the run, or inside
//! the model's own checkpoint directory, is refused. A resume reads everything and checks it
//! against the run before training starts, and never writes to the directory it reads.

use crate::diagnostic::Diagnostic;
use dsc_ir::atomic_write::{resolved_path, write_dir_atomically};
use dsc_ir::{Graph, Recipe};
use dsc_passes::{PassOptions, Pipeline};
use dsc_runtime::checkpoint::Checkpoint;
use dsc_runtime::tensor::safetensors_dtype;
use dsc_runtime::train::Trainer;
use dsc_runtime::{HostTensor, Weights, hf_tensors, load_weights, write_safetensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The run's state and what it must match.
pub const STATE_FILE: &str = "train_state.json";
/// The weights in the Hugging Face layout (BF16, or FP8 with `--export fp8`).
pub const MODEL_FILE: &str = "model.safetensors";
/// The FP32 master weights.
pub const MASTER_FILE: &str = "master.safetensors";
/// The optimizer's moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The `format` of [`STATE_FILE`]: what marks a directory as a dsc training checkpoint.
const FORMAT: &str = "dsc-train-checkpoint";
/// The version of the layout this dsc writes and reads.
const VERSION: u64 = 1;

/// The format of `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Export {
    /// Every weight in the forward model's dtype (BF16).
    #[default]
    Bf16,
    /// The weights the precision policy runs in FP8 as E4M3 codes + `weight_scale_inv`, the
    /// rest BF16.
    Fp8,
}

impl Export {
    fn name(self) -> &'static str {
        match self {
            Export::Bf16 => "bf16",
            Export::Fp8 => "fp8",
        }
    }
}

/// One parameter of the training step: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamShape {
    pub name: String,
    pub shape: Vec<u64>,
}

/// `train_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Always [`FORMAT`].
    pub format: String,
    /// The layout's version ([`VERSION`]).
    pub version: u64,
    /// The model's name (`[model] name`, or the imported checkpoint's).
    pub model: String,
    /// `fp8` or `bf16`.
    pub recipe: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// The `--steps` of the run that saved it (the learning-rate schedule's length when
    /// `decay_steps` is not set).
    pub total_steps: u64,
    /// The run's `--seed`.
    pub seed: u64,
    /// The batch sampler's state (`SplitMix64.0`) after the batches of `step` steps; `null` for
    /// a run on a fixed batch (`--inputs`).
    pub sampler_rng: Option<u64>,
    pub batch: u64,
    pub seq_len: u64,
    /// The format of `model.safetensors`: `bf16` or `fp8`.
    pub export: String,
    /// Every parameter of the training step, in order (FP32 masters; grouped expert weights
    /// `{e}` as one `[E, …]` parameter).
    pub params: Vec<ParamShape>,
    /// The CPU reference's accumulator model (`--accumulator`); `exact` when absent.
    #[serde(default = "exact_accumulator")]
    pub accumulator: String,
}

fn exact_accumulator() -> String {
    "exact".into()
}

/// What identifies a run: a resumed checkpoint must match it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub model: String,
    pub recipe: Recipe,
    pub seed: u64,
    pub batch: u64,
    pub seq_len: u64,
    /// `--steps`: the step to reach.
    pub total_steps: u64,
    /// `--accumulator`, by name.
    pub accumulator: &'static str,
}

impl TrainState {
    /// The state of `trainer` in the run `info`, with the sampler at `sampler_rng`.
    pub fn new(
        info: &RunInfo,
        trainer: &Trainer,
        sampler_rng: Option<u64>,
        export: Export,
    ) -> TrainState {
        TrainState {
            format: FORMAT.into(),
            version: VERSION,
            model: info.model.clone(),
            recipe: info.recipe.to_string(),
            step: trainer.steps_taken(),
            total_steps: info.total_steps,
            seed: info.seed,
            sampler_rng,
            batch: info.batch,
            seq_len: info.seq_len,
            export: export.name().into(),
            params: param_shapes(trainer.graph()),
            accumulator: info.accumulator.into(),
        }
    }
}

fn param_shapes(g: &Graph) -> Vec<ParamShape> {
    g.params
        .iter()
        .map(|&p| ParamShape {
            name: g.name(p).to_string(),
            shape: g.ty(p).shape.dims().to_vec(),
        })
        .collect()
}

fn runtime(e: dsc_runtime::RuntimeError) -> Diagnostic {
    Diagnostic::new(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Saving

/// Writes checkpoints of one run to one directory.
pub struct CheckpointWriter {
    dir: PathBuf,
    /// The run's input files and directories: never inside DIR.
    inputs: Vec<PathBuf>,
    /// The model's own checkpoint directory (a Hugging Face model): DIR is never inside it.
    model_dir: Option<PathBuf>,
    export: Export,
    /// The forward model, whose parameter dtypes `model.safetensors` takes.
    forward: Graph,
    /// With `--export fp8`: the forward model compiled by the default pipeline, whose FP8
    /// parameters are the weights to quantize.
    compiled: Option<Graph>,
}

impl CheckpointWriter {
    /// A writer to `dir`, checked now (so a run does not train for hours to find it cannot
    /// save) and again at every save.
    pub fn new(
        dir: &Path,
        forward: &Graph,
        export: Export,
        inputs: Vec<PathBuf>,
        model_dir: Option<PathBuf>,
    ) -> Result<CheckpointWriter, Diagnostic> {
        check_replaceable(dir, &inputs, model_dir.as_deref())?;
        let compiled = match export {
            Export::Bf16 => None,
            Export::Fp8 => {
                let mut g = forward.clone();
                Pipeline::default_pipeline()
                    .run(&mut g, &PassOptions::default(), |_, _| {})
                    .map_err(|e| {
                        Diagnostic::new(format!("--export fp8: compiling {}: {e}", forward.name))
                    })?;
                Some(g)
            }
        };
        Ok(CheckpointWriter {
            dir: dir.to_path_buf(),
            inputs,
            model_dir,
            export,
            forward: forward.clone(),
            compiled,
        })
    }

    /// The directory checkpoints go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The export format.
    pub fn export(&self) -> Export {
        self.export
    }

    /// Saves `trainer`'s state with `state` as its `train_state.json`, replacing the directory
    /// whole.
    pub fn save(&self, trainer: &Trainer, state: &TrainState) -> Result<(), Diagnostic> {
        check_replaceable(&self.dir, &self.inputs, self.model_dir.as_deref())?;
        let step_graph = trainer.graph();
        let model = self.model_weights(trainer)?;
        let mut moments: Vec<(&String, &HostTensor)> =
            trainer.moments().map_err(runtime)?.iter().collect();
        moments.sort_by(|a, b| a.0.cmp(b.0));
        let mut json = serde_json::to_string_pretty(state).expect("the state serializes");
        json.push('\n');
        write_dir_atomically(&self.dir, |tmp| -> Result<(), Diagnostic> {
            let path = tmp.join(MODEL_FILE);
            let tensors = hf_tensors(&model, &self.forward).map_err(runtime)?;
            write_safetensors(&path, tensors.iter().map(|(n, t)| (n.as_str(), t)))
                .map_err(runtime)?;
            drop(tensors);
            if let Some(compiled) = &self.compiled {
                // Quantized as loading the BF16 file into the compiled model quantizes it:
                // rounded to the policy's high dtype, 128×128 blocks, the policy's scales.
                let quantized = {
                    let ckpt = Checkpoint::open(&path).map_err(runtime)?;
                    load_weights(compiled, &ckpt).map_err(runtime)?
                };
                let tensors = hf_tensors(&quantized, compiled).map_err(runtime)?;
                write_safetensors(&path, tensors.iter().map(|(n, t)| (n.as_str(), t)))
                    .map_err(runtime)?;
            }
            let master =
                hf_tensors(trainer.weights().map_err(runtime)?, step_graph).map_err(runtime)?;
            write_safetensors(
                &tmp.join(MASTER_FILE),
                master.iter().map(|(n, t)| (n.as_str(), t)),
            )
            .map_err(runtime)?;
            write_safetensors(
                &tmp.join(OPTIMIZER_FILE),
                moments.iter().map(|&(n, t)| (n.as_str(), t)),
            )
            .map_err(runtime)?;
            // Last: the file that makes the directory a checkpoint.
            let state_path = tmp.join(STATE_FILE);
            fs::write(&state_path, &json)
                .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", state_path.display())))
        })
    }

    /// The master weights as the forward model's parameters, each rounded to its dtype.
    fn model_weights(&self, trainer: &Trainer) -> Result<Weights, Diagnostic> {
        let g = trainer.graph();
        let mut out = Weights::new();
        for &p in &self.forward.params {
            let name = self.forward.name(p);
            let master = trainer
                .weights()
                .map_err(runtime)?
                .by_name(g, name)
                .ok_or_else(|| {
                    Diagnostic::new(format!(
                        "the training step has no master weight for parameter `{name}`"
                    ))
                })?;
            let dtype = self.forward.ty(p).dtype;
            let t = if master.dtype == dtype {
                master.clone()
            } else if dtype.is_high_float() && master.dtype.is_high_float() {
                HostTensor::from_f32(dtype, master.shape.clone(), master.to_f32_vec())
                    .map_err(runtime)?
            } else {
                return Err(Diagnostic::new(format!(
                    "parameter `{name}` is {dtype} in the model and {} in the training step",
                    master.dtype
                )));
            };
            out.insert(p, t);
        }
        Ok(out)
    }
}

/// True when `dir` holds a dsc training checkpoint: a `train_state.json` of our format.
pub fn is_checkpoint(dir: &Path) -> bool {
    fs::read_to_string(dir.join(STATE_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(FORMAT))
}

/// Ok when saving to `dir` loses nothing: `dir` does not exist, is empty, or holds a dsc
/// training checkpoint; it holds none of `inputs`; and it is not inside `model_dir`.
pub fn check_replaceable(
    dir: &Path,
    inputs: &[PathBuf],
    model_dir: Option<&Path>,
) -> Result<(), Diagnostic> {
    if let (Some(model_dir), Some(out)) = (model_dir, resolved_path(dir))
        && let Ok(model_dir) = model_dir.canonicalize()
        && out.starts_with(&model_dir)
    {
        return Err(Diagnostic::new(format!(
            "--save {} is inside the model's checkpoint directory {}: dsc train never writes \
             into the model's own files; choose a directory outside it",
            dir.display(),
            model_dir.display()
        )));
    }
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(Diagnostic::new(format!(
            "--save {} exists and is not a directory: choose another checkpoint directory",
            dir.display()
        )));
    }
    let canonical = dir
        .canonicalize()
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?;
    for input in inputs {
        if input
            .canonicalize()
            .is_ok_and(|input| input.starts_with(&canonical))
        {
            return Err(Diagnostic::new(format!(
                "--save {} holds the input {}: saving would replace it; choose another \
                 checkpoint directory",
                dir.display(),
                input.display()
            )));
        }
    }
    let empty = fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?
        .next()
        .is_none();
    if !empty && !is_checkpoint(dir) {
        return Err(Diagnostic::new(format!(
            "--save {} exists and is not a dsc training checkpoint (it has no {STATE_FILE}): \
             dsc train replaces only a checkpoint it wrote; choose another directory or \
             remove this one",
            dir.display()
        )));
    }
    Ok(())
}

/// True when `a` and `b` name the same existing directory.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

// ---------------------------------------------------------------------------------------------
// Resuming

/// A checkpoint read back and checked against the run.
pub struct Resumed {
    pub state: TrainState,
    /// The FP32 master weights, as the step graph's parameters.
    pub weights: Weights,
    /// The moments by input name.
    pub moments: HashMap<String, HostTensor>,
}

/// Reads the checkpoint `dir` for the training step `step_graph` of the run `info`. Anything
/// that does not match the run (model, recipe, batch shape, parameters, a step at or past
/// `--steps`) or a missing or ill-shaped tensor is an error naming it. Nothing is written.
pub fn load(dir: &Path, step_graph: &Graph, info: &RunInfo) -> Result<Resumed, Diagnostic> {
    let bad = |message: String| Diagnostic::new(format!("--resume {}: {message}", dir.display()));
    if !dir.is_dir() {
        return Err(bad(if dir.exists() {
            "is not a directory: give a checkpoint directory written by `dsc train --save`".into()
        } else {
            "does not exist".into()
        }));
    }
    let state = read_state(dir).map_err(bad)?;
    if state.model != info.model {
        return Err(bad(format!(
            "is a checkpoint of model `{}`, this run trains `{}`",
            state.model, info.model
        )));
    }
    if state.recipe != info.recipe.name() {
        return Err(bad(format!(
            "was trained with the {} recipe, this run uses {} (set --recipe {} to continue it)",
            state.recipe, info.recipe, state.recipe
        )));
    }
    if state.accumulator != info.accumulator {
        return Err(bad(format!(
            "was trained with --accumulator {}, this run uses {} (set --accumulator {} to \
             continue it)",
            state.accumulator, info.accumulator, state.accumulator
        )));
    }
    if (state.batch, state.seq_len) != (info.batch, info.seq_len) {
        return Err(bad(format!(
            "was trained on batches of {}×{} tokens (batch × seq_len), this run's are {}×{} \
             (set --batch {} --seq-len {})",
            state.batch, state.seq_len, info.batch, info.seq_len, state.batch, state.seq_len
        )));
    }
    check_params(&state.params, &param_shapes(step_graph)).map_err(bad)?;
    if state.step >= info.total_steps {
        return Err(bad(format!(
            "is at step {} already: --steps is the total to reach ({}), so there is nothing \
             to train; give --steps above {}",
            state.step, info.total_steps, state.step
        )));
    }
    let weights = read_master(dir, step_graph).map_err(bad)?;
    let moments = read_moments(dir, step_graph).map_err(bad)?;
    Ok(Resumed {
        state,
        weights,
        moments,
    })
}

/// `train_state.json`, its format and version checked.
fn read_state(dir: &Path) -> Result<TrainState, String> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "is not a dsc training checkpoint: it has no {STATE_FILE}"
            ));
        }
        Err(e) => return Err(format!("cannot read {STATE_FILE}: {e}")),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{STATE_FILE} is not valid JSON: {e}"))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(format!(
            "{STATE_FILE} is not a dsc training state (its `format` is not \"{FORMAT}\")"
        ));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "{STATE_FILE} has layout version {v}; this dsc reads version {VERSION}"
            ));
        }
        None => return Err(format!("{STATE_FILE} has no numeric `version`")),
    }
    serde_json::from_value(value).map_err(|e| format!("{STATE_FILE}: {e}"))
}

/// The saved parameters against the step's: the first difference, named.
fn check_params(saved: &[ParamShape], want: &[ParamShape]) -> Result<(), String> {
    for w in want {
        match saved.iter().find(|s| s.name == w.name) {
            None => {
                return Err(format!(
                    "{STATE_FILE} has no parameter `{}` (the model's is {:?})",
                    w.name, w.shape
                ));
            }
            Some(s) if s.shape != w.shape => {
                return Err(format!(
                    "parameter `{}` is {:?} in the checkpoint, {:?} in the model",
                    w.name, s.shape, w.shape
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = saved
        .iter()
        .find(|s| !want.iter().any(|w| w.name == s.name))
    {
        return Err(format!(
            "the checkpoint has parameter `{}` {:?}, which the model does not",
            extra.name, extra.shape
        ));
    }
    Ok(())
}

/// Opens one safetensors file of the checkpoint.
fn open(dir: &Path, file: &str) -> Result<Checkpoint, String> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(format!("has no {file}: the checkpoint is incomplete"));
    }
    Checkpoint::open(&path).map_err(|e| e.to_string())
}

/// `master.safetensors` as the step graph's FP32 parameters (exactly: F32 only).
fn read_master(dir: &Path, step_graph: &Graph) -> Result<Weights, String> {
    let ckpt = open(dir, MASTER_FILE)?;
    for name in ckpt.names() {
        let v = ckpt.tensor(name).expect("listed names exist");
        if v.dtype != safetensors::Dtype::F32 {
            return Err(format!(
                "{MASTER_FILE}: `{name}` is {}, master weights are F32",
                v.dtype
            ));
        }
    }
    load_weights(step_graph, &ckpt).map_err(|e| e.to_string())
}

/// `optimizer.safetensors`: every moment input of the step graph, of exactly its dtype and
/// shape, and nothing else.
fn read_moments(dir: &Path, step_graph: &Graph) -> Result<HashMap<String, HostTensor>, String> {
    let ckpt = open(dir, OPTIMIZER_FILE)?;
    let mut moments = HashMap::new();
    for &i in &step_graph.inputs {
        let name = step_graph.name(i);
        if !(name.ends_with(".adam_m") || name.ends_with(".adam_v")) {
            continue;
        }
        let ty = step_graph.ty(i);
        let shape: Vec<usize> = ty.shape.dims().iter().map(|&d| d as usize).collect();
        let want = safetensors_dtype(ty.dtype);
        let v = ckpt
            .tensor(name)
            .ok_or_else(|| format!("{OPTIMIZER_FILE} has no `{name}`"))?;
        if v.dtype != want || v.shape != shape.as_slice() {
            return Err(format!(
                "{OPTIMIZER_FILE}: `{name}` is {} {:?}, the model needs {want} {shape:?}",
                v.dtype, v.shape
            ));
        }
        let t = HostTensor::from_safetensors(v.dtype, v.shape, v.data, ty.dtype)
            .map_err(|e| format!("{OPTIMIZER_FILE}: `{name}`: {e}"))?;
        moments.insert(name.to_string(), t);
    }
    if let Some(extra) = ckpt.names().find(|n| !moments.contains_key(*n)) {
        return Err(format!(
            "{OPTIMIZER_FILE} has `{extra}`, which is no moment of the model"
        ));
    }
    Ok(moments)
}
