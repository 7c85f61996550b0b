//! `dsc train MODEL --data FILE`: builds the model's training step (`dsc_passes::train_step`),
//! lowers it with the training pipeline and runs it step after step on the CPU, printing
//! progress and optionally logging every step to CSV (DESIGN.md §8, docs/training.md). With
//! `--save DIR` it writes checkpoints (`crate::train_checkpoint`), with `--resume DIR` it
//! continues one, bit for bit as if the run had not stopped.

use crate::cli::{DeviceArg, RecipeArg, TrainArgs};
use crate::diagnostic::{Diagnostic, read_text};
use crate::output_file::{Input, check_distinct, check_output_file};
use crate::train_checkpoint::{self, CheckpointWriter, RunInfo, TrainState};
use crate::train_data::TokenData;
use crate::train_routing::RoutingProbe;
use dsc_ir::model::{load_model, load_model_with_mtp};
use dsc_ir::{Graph, Recipe, TrainConfig, load_train_config};
use dsc_kernels::rng::SplitMix64;
use dsc_passes::{autodiff, train_step};
use dsc_runtime::train::Trainer;
use dsc_runtime::{Artifact, Device, HostTensor, Session, Weights, random_weights};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Trains the model as the arguments say.
pub fn run(args: &TrainArgs) -> Result<(), Diagnostic> {
    if args.device == DeviceArg::Auto {
        return Err(Diagnostic::new(
            "--device auto is not a training device: say cpu, emu or cuda[:N]",
        ));
    }
    // The log and the gradients file, before anything is built: neither may replace what the
    // run reads, nor each other, nor lie in the --save directory, nor fail to be written.
    let checkpoint = crate::output_file::checkpoint_of_config(&args.model);
    let inputs: Vec<Input> = [
        ("the model", Some(&args.model)),
        ("the model's checkpoint", checkpoint.as_ref()),
        ("the --data file", args.data.as_ref()),
        ("the --inputs file", args.inputs.as_ref()),
        ("the --weights checkpoint", args.weights.as_ref()),
        ("the --resume checkpoint", args.resume.as_ref()),
    ]
    .into_iter()
    .filter_map(|(what, p)| Some(Input::new(what, p?)))
    .collect();
    let outputs: Vec<(&str, &Path)> = [("--log", &args.log), ("--save-grads", &args.save_grads)]
        .into_iter()
        .filter_map(|(flag, p)| Some((flag, p.as_deref()?)))
        .collect();
    for (flag, path) in &outputs {
        check_output_file(flag, path, &inputs)?;
    }
    let save: Vec<(&str, &Path)> = args.save.iter().map(|d| ("--save", d.as_path())).collect();
    check_distinct(&outputs, &save)?;
    let (forward, mut config) = load(args)?;
    if let Some(r) = args.recipe {
        config.recipe = match r {
            RecipeArg::Fp8 => Recipe::Fp8,
            RecipeArg::Bf16 => Recipe::Bf16,
        };
    }
    let mut step_graph = build_step(&forward, &config)?;
    if args.print_ir {
        eprint!("{step_graph}");
    }
    let routing = RoutingProbe::attach(&mut step_graph);
    if let Some(dir) = &args.write_step {
        return write_step(&step_graph, args, dir);
    }
    // Compiled once, before anything is read or trained: the session borrows it for the run.
    // A GPU that cannot run the target is found before the compile, not after it.
    if let DeviceArg::Cuda(n) = args.device {
        let devices = dsc_runtime::cuda::probe().map_err(runtime)?;
        let info = devices.get(n).ok_or_else(|| {
            Diagnostic::new(format!(
                "no CUDA device {n} (the driver reports {})",
                devices.len()
            ))
        })?;
        dsc_runtime::cuda::check_target(&args.target.0.to_string(), info).map_err(runtime)?;
    }
    if args.device != DeviceArg::Cpu && !args.accumulator.model().promotes() {
        let device = match args.device {
            DeviceArg::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}").to_lowercase(),
        };
        return Err(runtime(dsc_runtime::RuntimeError::UnpromotedOnGpu {
            device,
        }));
    }
    let artifact = match args.device {
        DeviceArg::Cpu => None,
        _ => Some(compile_step(&step_graph, args.target.0)?),
    };
    let ids = step_graph
        .inputs
        .first()
        .map(|&i| step_graph.ty(i).shape.dims().to_vec())
        .unwrap_or_default();
    let (batch, seq) = (ids[0] as usize, ids[1..].iter().product::<u64>() as usize);
    let mut info = RunInfo {
        model: forward.name.clone(),
        recipe: config.recipe,
        seed: args.seed,
        batch: batch as u64,
        seq_len: seq as u64,
        total_steps: args.steps,
        accumulator: args.accumulator.name(),
    };
    // Checked before training: a run must not train for hours to find it cannot save.
    let writer = args
        .save
        .as_ref()
        .map(|dir| {
            CheckpointWriter::new(
                dir,
                &forward,
                args.export.unwrap_or_default(),
                protected_inputs(args, dir),
                crate::import::hf_config(&args.model)
                    .and_then(|c| c.parent().map(Path::to_path_buf)),
            )
        })
        .transpose()?;
    let resumed = args
        .resume
        .as_ref()
        .map(|dir| train_checkpoint::load(dir, &step_graph, &info))
        .transpose()?;
    let vocab = vocab_of(&forward);
    let (mut trainer, mut source) = match resumed {
        Some(r) => {
            let mut trainer = new_trainer(step_graph, r.weights.clone(), artifact.as_ref(), args)?;
            trainer
                .restore(r.weights, r.moments, r.state.step)
                .map_err(runtime)?;
            // A checkpoint of a run on a fixed batch has no sampler state: --data starts the
            // sampler from --seed, as a new run would. Otherwise --seed has no use: the run
            // keeps the seed it started with.
            let rng = r.state.sampler_rng.unwrap_or(args.seed ^ SAMPLER_SEED);
            if r.state.sampler_rng.is_some() {
                info.seed = r.state.seed;
            }
            // Without decay_steps the cosine decay spans the run's --steps: the saved run's
            // steps after warmup decayed over its own total.
            if r.state.total_steps != args.steps
                && config.decay_steps.is_none()
                && r.state.step > config.warmup_steps
            {
                println!(
                    "note: the learning-rate schedule now decays over {} steps; steps {} to {} \
                     of the checkpoint decayed over {} (set decay_steps in [train] for a \
                     schedule that does not depend on --steps)",
                    args.steps,
                    config.warmup_steps + 1,
                    r.state.step,
                    r.state.total_steps
                );
            }
            let source = batches(args, trainer.graph(), vocab, rng)?;
            (trainer, source)
        }
        None => {
            let weights = match &args.weights {
                Some(path) => initial_weights(&step_graph, path)?,
                None => random_weights(&step_graph, args.seed).map_err(runtime)?,
            };
            let trainer = new_trainer(step_graph, weights, artifact.as_ref(), args)?;
            let source = batches(args, trainer.graph(), vocab, args.seed ^ SAMPLER_SEED)?;
            (trainer, source)
        }
    };
    if args.profile {
        trainer.enable_profile();
    }
    let first = trainer.steps_taken();
    let mut log = args
        .log
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))
                .map(|f| (path.clone(), std::io::BufWriter::new(f)))
        })
        .transpose()?;
    if let Some((path, w)) = &mut log {
        let balance = if routing.is_empty() { "" } else { ",max_vio" };
        writeln!(w, "step,loss,lr,grad_norm,tokens_per_s{balance}")
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
    }
    println!(
        "training {} ({} recipe): {} steps of {batch}×{seq} tokens, {} parameters",
        forward.name,
        config.recipe,
        args.steps,
        parameter_count(trainer.graph()),
    );
    if let Some(dir) = &args.resume {
        println!(
            "resuming from {} at step {first}: steps {} to {}",
            dir.display(),
            first + 1,
            args.steps
        );
    }
    let save = |trainer: &mut Trainer, rng: Option<u64>| -> Result<(), Diagnostic> {
        let Some(w) = &writer else { return Ok(()) };
        // On a GPU the weights and moments are on the device: read them back first.
        trainer.sync().map_err(runtime)?;
        let state = TrainState::new(&info, trainer, rng, w.export());
        w.save(trainer, &state)?;
        println!(
            "saved the state of step {} to {}",
            trainer.steps_taken(),
            w.dir().display()
        );
        Ok(())
    };
    let started = Instant::now();
    for i in first..args.steps {
        // The sampler's state before this step's batch: the state saved with the previous
        // step's, should this one fail.
        let rng_before = source.rng_state();
        let (input_ids, labels) = match &mut source {
            Batches::Data(data, rng) => data
                .batch(rng, batch, seq)
                .map_err(|e| Diagnostic::new(e.to_string()))?,
            Batches::Fixed(b) => b.clone(),
        };
        let lr = config.lr_at(i, args.steps) as f32;
        // Only the first step's gradients are written (--save-grads); later steps leave them
        // on the device.
        trainer.read_gradients(i == first && args.save_grads.is_some());
        let t0 = Instant::now();
        let (stats, outputs) = match trainer.step(input_ids, labels, lr) {
            Ok(done) => done,
            // The trainer keeps the last good state: save it, so the run can be resumed
            // (with another learning rate, say) from there.
            Err(e) if let Some(w) = &writer => {
                let saved = match save(&mut trainer, rng_before) {
                    Ok(()) => "saved",
                    Err(failed) => {
                        return Err(Diagnostic::new(format!(
                            "{e}; saving the last good state to {} failed too: {}",
                            w.dir().display(),
                            failed.message
                        )));
                    }
                };
                return Err(Diagnostic::new(format!(
                    "{e}; {saved} the last good state (step {}) to {}: resume with --resume {}",
                    trainer.steps_taken(),
                    w.dir().display(),
                    w.dir().display()
                )));
            }
            Err(e) => return Err(runtime(e)),
        };
        let tokens_per_s = (batch * seq) as f64 / t0.elapsed().as_secs_f64();
        if i == first
            && let Some(path) = &args.save_grads
        {
            save_grads(trainer.graph(), &outputs, path)?;
        }
        let done = i + 1;
        let eta =
            started.elapsed().as_secs_f64() / (done - first) as f64 * (args.steps - done) as f64;
        // The routed layers' worst load imbalance (an empty field when it cannot be read).
        let max_vio = (!routing.is_empty()).then(|| routing.max_violation(&outputs));
        let (vio_text, vio_field) = match max_vio {
            None => (String::new(), String::new()),
            Some(v) => {
                let field = v.map(|v| format!("{v:.4}")).unwrap_or_default();
                (format!("  max_vio {field}"), format!(",{field}"))
            }
        };
        println!(
            "step {:>6}/{}  loss {:.4}  lr {:.3e}  grad_norm {:.3}{vio_text}  {:.0} tok/s  eta {:.0}s",
            stats.step, args.steps, stats.loss, lr, stats.grad_norm, tokens_per_s, eta
        );
        if let Some((path, w)) = &mut log {
            writeln!(
                w,
                "{},{},{},{},{:.1}{vio_field}",
                stats.step, stats.loss, lr, stats.grad_norm, tokens_per_s
            )
            // Flushed every step: a run stopped by a divergence or a signal keeps its log.
            .and_then(|()| w.flush())
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
        }
        if done < args.steps && args.save_every.is_some_and(|k| done % k == 0) {
            save(&mut trainer, source.rng_state())?;
        }
    }
    if let Some((path, mut w)) = log {
        w.flush()
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(profile) = trainer.profile() {
        let target = args.target.0;
        let on = match args.device {
            DeviceArg::Cuda(n) => format!("{target} on cuda:{n}, measured"),
            DeviceArg::Emu => format!("{target} on the emulator, modeled"),
            _ => "CPU, wall time".to_string(),
        };
        print!("time per op kind ({on}):\n{}", profile.table());
    }
    save(&mut trainer, source.rng_state())
}

/// The master weights of `step_graph` (FP32) read from a safetensors file or a Hugging Face
/// checkpoint directory by checkpoint name; tensors of layers beyond the model's are noted.
fn initial_weights(step_graph: &Graph, path: &Path) -> Result<Weights, Diagnostic> {
    let checkpoint = dsc_runtime::checkpoint::Checkpoint::open(path).map_err(runtime)?;
    let beyond = dsc_runtime::weights::beyond_last_layer(step_graph, &checkpoint);
    if let Some(first) = beyond.first() {
        eprintln!(
            "note: ignored {} tensors of layers beyond the model's {} (e.g. multi-token-prediction \
             layers), first `{first}`",
            beyond.len(),
            dsc_runtime::weights::layer_count(step_graph)
        );
    }
    dsc_runtime::weights::load_weights(step_graph, &checkpoint).map_err(runtime)
}

/// The sampler's seed is the run's seed mixed with this constant.
const SAMPLER_SEED: u64 = 0x5eed_da7a;

/// The batches of the run: random windows of --data drawn from a sampler at `rng`, or the
/// fixed batch of --inputs.
fn batches(args: &TrainArgs, g: &Graph, vocab: u64, rng: u64) -> Result<Batches, Diagnostic> {
    match (&args.data, &args.inputs) {
        (Some(path), _) => Ok(Batches::Data(
            TokenData::load(path, vocab).map_err(|e| Diagnostic::new(e.to_string()))?,
            SplitMix64(rng),
        )),
        (None, Some(path)) => Ok(Batches::Fixed(fixed_batch(g, path, vocab)?)),
        (None, None) => Err(Diagnostic::new("give --data FILE or --inputs FILE")),
    }
}

/// What --save DIR must not hold: every file the run reads or writes besides the checkpoint
/// (the --resume checkpoint too, unless it is DIR itself, which a save may replace).
fn protected_inputs(args: &TrainArgs, save: &Path) -> Vec<PathBuf> {
    let mut inputs = vec![args.model.clone()];
    inputs.extend(args.weights.iter().cloned());
    inputs.extend(args.data.iter().cloned());
    inputs.extend(args.inputs.iter().cloned());
    inputs.extend(args.log.iter().cloned());
    inputs.extend(args.save_grads.iter().cloned());
    inputs.extend(
        args.resume
            .iter()
            .filter(|r| !train_checkpoint::same_dir(r, save))
            .cloned(),
    );
    inputs
}

/// Where batches come from.
enum Batches {
    /// Random windows of a token file.
    Data(TokenData, SplitMix64),
    /// One batch, every step.
    Fixed((Vec<i32>, Vec<i32>)),
}

impl Batches {
    /// The sampler's state (`None` for a fixed batch).
    fn rng_state(&self) -> Option<u64> {
        match self {
            Batches::Data(_, rng) => Some(rng.0),
            Batches::Fixed(_) => None,
        }
    }
}

fn runtime(e: dsc_runtime::RuntimeError) -> Diagnostic {
    Diagnostic::new(e.to_string())
}

/// The forward graph (with --batch / --seq-len applied) and the `[train]` config.
fn load(args: &TrainArgs) -> Result<(Graph, TrainConfig), Diagnostic> {
    if let Some(config) = crate::import::hf_config(&args.model) {
        let shape = crate::cli::HfShapeArgs {
            batch: args.batch,
            seq_len: args.seq_len,
        };
        let imported = crate::import::import_config(&config, &shape)?;
        let graph = load_model(&imported.toml)
            .map_err(|e| Diagnostic::new(format!("{}: imported model: {e}", config.display())))?;
        return Ok((graph, TrainConfig::default()));
    }
    let text = read_text(&args.model)?;
    let located = |e| Diagnostic::located(&args.model, &text, e);
    let config = load_train_config(&text)
        .map_err(located)?
        .unwrap_or_default();
    // Parse once as written, so errors point into the file as the user wrote it.
    let graph = load_model_with_mtp(&text, config.mtp_depth).map_err(located)?;
    if args.batch.is_none() && args.seq_len.is_none() {
        return Ok((graph, config));
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Diagnostic::new(format!("{}: {e}", args.model.display())))?;
    let Some(model) = doc.get_mut("model").and_then(|m| m.as_table_like_mut()) else {
        return Err(Diagnostic::new(format!(
            "{}: --batch and --seq-len need a preset model ([model] with batch and seq_len)",
            args.model.display()
        )));
    };
    for (key, value) in [("batch", args.batch), ("seq_len", args.seq_len)] {
        if let Some(v) = value {
            model.insert(key, toml_edit::value(v as i64));
        }
    }
    let edited = doc.to_string();
    let graph = load_model_with_mtp(&edited, config.mtp_depth).map_err(|e| {
        Diagnostic::new(format!(
            "{}: with --batch/--seq-len: {e}",
            args.model.display()
        ))
    })?;
    Ok((graph, config))
}

/// The training step of `forward`, lowered by its pipeline (`train_step::pipeline`).
/// The step graph compiled for `target`: its kernels, launch plan and arena, as an artifact
/// held in memory for the run.
fn compile_step(step_graph: &Graph, target: dsc_codegen::Target) -> Result<Artifact, Diagnostic> {
    let options = dsc_codegen::Options {
        cache: dsc_codegen::PtxCache::default_dir().map(dsc_codegen::PtxCache::new),
        ..dsc_codegen::Options::default()
    };
    let generated = dsc_codegen::generate_with(step_graph, target, &options)
        .map_err(|e| Diagnostic::new(format!("codegen of the training step for {target}: {e}")))?;
    Artifact::from_parts(
        PathBuf::from(format!("<the training step of {}>", step_graph.name)),
        generated.manifest,
        step_graph.clone(),
        generated.ptx,
    )
    .map_err(runtime)
}

/// `--write-step DIR`: the step compiled for --target, written as an artifact (manifest,
/// PTX, the step's IR); refused before the compile when DIR holds anything but an artifact or
/// holds the model.
fn write_step(step_graph: &Graph, args: &TrainArgs, dir: &Path) -> Result<(), Diagnostic> {
    use dsc_kernels::manifest::files;
    let inputs = [args.model.as_path()];
    crate::artifact_dir::check_replaceable(dir, &inputs)?;
    let artifact = compile_step(step_graph, args.target.0)?;
    let manifest = artifact.manifest.to_json();
    let graph = step_graph.to_string();
    let outputs: [(&str, &[u8]); 3] = [
        (files::MANIFEST, manifest.as_bytes()),
        (files::KERNELS, artifact.ptx.as_bytes()),
        (files::GRAPH, graph.as_bytes()),
    ];
    crate::artifact_dir::write_atomically(dir, &outputs, &inputs)?;
    println!(
        "wrote {}: the {} training step of {} for {} ({} launches)",
        dir.display(),
        step_recipe(step_graph),
        step_graph.name,
        args.target.0,
        artifact.manifest.steps.len()
    );
    Ok(())
}

/// The recipe a lowered step was built with.
fn step_recipe(step_graph: &Graph) -> &'static str {
    if dsc_runtime::train_check::is_fp8_step(step_graph) {
        "FP8"
    } else {
        "all-BF16"
    }
}

/// A trainer on the CPU, or over `artifact` (the compiled step) on the emulator or CUDA.
fn new_trainer<'a>(
    step_graph: Graph,
    weights: Weights,
    artifact: Option<&'a Artifact>,
    args: &TrainArgs,
) -> Result<Trainer<'a>, Diagnostic> {
    let options = crate::run::session_options(args.accumulator);
    let Some(artifact) = artifact else {
        return Trainer::new(step_graph, weights, options.cpu).map_err(runtime);
    };
    let device = match args.device {
        DeviceArg::Cuda(n) => Device::Cuda(n),
        _ => Device::Emulator,
    };
    let session = Session::with_options(artifact, device, options).map_err(runtime)?;
    Trainer::on_session(session, weights).map_err(runtime)
}

fn build_step(forward: &Graph, config: &TrainConfig) -> Result<Graph, Diagnostic> {
    train_step::build_lowered(forward, config).map_err(|e| Diagnostic::new(e.to_string()))
}

/// The vocabulary: the rows of the embedding table the token ids index.
fn vocab_of(forward: &Graph) -> u64 {
    forward
        .ops
        .iter()
        .find_map(|op| op.embedding_operands().ok())
        .map_or(u64::MAX, |o| forward.ty(o.table).shape.dims()[0])
}

fn parameter_count(g: &Graph) -> u64 {
    g.params.iter().map(|&p| g.ty(p).shape.numel()).sum()
}

/// `input_ids` and `labels` from a safetensors file, checked against the step's shape and the
/// vocabulary.
fn fixed_batch(g: &Graph, path: &Path, vocab: u64) -> Result<(Vec<i32>, Vec<i32>), Diagnostic> {
    let inputs = dsc_runtime::inputs::read_inputs(g, path).map_err(runtime)?;
    let want = g
        .ty(g.inputs[0])
        .shape
        .dims()
        .iter()
        .map(|&d| d as usize)
        .collect::<Vec<_>>();
    let get = |name: &str| -> Result<Vec<i32>, Diagnostic> {
        let t = inputs.get(name).ok_or_else(|| {
            Diagnostic::new(format!("{}: has no tensor `{name}`", path.display()))
        })?;
        if t.shape != want {
            return Err(Diagnostic::new(format!(
                "{}: `{name}` has shape {:?}, the model's batch is {want:?} (set --batch/--seq-len)",
                path.display(),
                t.shape
            )));
        }
        let ids = t.as_i32().map_err(runtime)?.to_vec();
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id < 0 || id as u64 >= vocab)
        {
            return Err(Diagnostic::new(format!(
                "{}: `{name}`[{i}] = {id} is outside the vocabulary of {vocab}",
                path.display()
            )));
        }
        Ok(ids)
    };
    Ok((get("input_ids")?, get("labels")?))
}

/// Writes the first step's gradients by checkpoint name (FP32).
fn save_grads(g: &Graph, outputs: &[(String, HostTensor)], path: &Path) -> Result<(), Diagnostic> {
    let mut grads = Weights::new();
    for &p in &g.params {
        let name = autodiff::grad_name(g.name(p));
        if let Some((_, t)) = outputs.iter().find(|(n, _)| *n == name) {
            grads.insert(p, t.clone());
        }
    }
    // Parameters without a gradient (the MoE selection bias moves by the balance rule, not by
    // its gradient) are left out of the file.
    let mut with_grads = g.clone();
    with_grads.params.retain(|&p| grads.get(p).is_some());
    dsc_runtime::save_safetensors(&grads, &with_grads, path).map_err(runtime)?;
    println!("wrote the gradients of step 1 to {}", path.display());
    Ok(())
}
