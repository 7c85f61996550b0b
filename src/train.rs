//! `dsc train MODEL --data FILE`: builds the model's training step (`dsc_passes::train_step`),
//! lowers it with the training pipeline and runs it step after step on the CPU, printing
//! progress and optionally logging every step to CSV (DESIGN.md §8, docs/training.md).

use crate::cli::{DeviceArg, RecipeArg, TrainArgs};
use crate::diagnostic::{Diagnostic, read_text};
use crate::train_data::TokenData;
use dsc_ir::model::load_model;
use dsc_ir::{Graph, Recipe, TrainConfig, load_train_config};
use dsc_kernels::rng::SplitMix64;
use dsc_passes::train_step::{self, TRAIN_PIPELINE, TrainStepOptions};
use dsc_passes::{PassOptions, Pipeline, autodiff};
use dsc_runtime::cpu::CpuOptions;
use dsc_runtime::train::Trainer;
use dsc_runtime::{HostTensor, Weights, random_weights};
use std::io::Write;
use std::time::Instant;

/// Trains the model as the arguments say.
pub fn run(args: &TrainArgs) -> Result<(), Diagnostic> {
    if args.device != DeviceArg::Cpu {
        return Err(Diagnostic::new(
            "training steps run on the CPU so far (--device cpu): the backward and optimizer \
             ops have no GPU kernels yet",
        ));
    }
    let (forward, mut config) = load(args)?;
    if let Some(r) = args.recipe {
        config.recipe = match r {
            RecipeArg::Fp8 => Recipe::Fp8,
            RecipeArg::Bf16 => Recipe::Bf16,
        };
    }
    let step_graph = build_step(&forward, &config)?;
    if args.print_ir {
        eprint!("{step_graph}");
    }
    let weights = random_weights(&step_graph, args.seed).map_err(runtime)?;
    let mut trainer = Trainer::new(step_graph, weights, CpuOptions::default()).map_err(runtime)?;
    let ids = trainer
        .graph()
        .inputs
        .first()
        .map(|&i| trainer.graph().ty(i).shape.dims().to_vec())
        .unwrap_or_default();
    let (batch, seq) = (ids[0] as usize, ids[1..].iter().product::<u64>() as usize);
    let vocab = vocab_of(&forward);
    let mut source = match (&args.data, &args.inputs) {
        (Some(path), _) => Batches::Data(
            TokenData::load(path, vocab).map_err(|e| Diagnostic::new(e.to_string()))?,
            SplitMix64(args.seed ^ 0x5eed_da7a),
        ),
        (None, Some(path)) => Batches::Fixed(fixed_batch(trainer.graph(), path, vocab)?),
        (None, None) => return Err(Diagnostic::new("give --data FILE or --inputs FILE")),
    };
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
        writeln!(w, "step,loss,lr,grad_norm,tokens_per_s")
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
    }
    println!(
        "training {} ({} recipe): {} steps of {batch}×{seq} tokens, {} parameters",
        forward.name,
        config.recipe,
        args.steps,
        parameter_count(trainer.graph()),
    );
    let started = Instant::now();
    for i in 0..args.steps {
        let (input_ids, labels) = match &mut source {
            Batches::Data(data, rng) => data
                .batch(rng, batch, seq)
                .map_err(|e| Diagnostic::new(e.to_string()))?,
            Batches::Fixed(b) => b.clone(),
        };
        let lr = config.lr_at(i, args.steps) as f32;
        let t0 = Instant::now();
        let (stats, outputs) = trainer.step(input_ids, labels, lr).map_err(runtime)?;
        let tokens_per_s = (batch * seq) as f64 / t0.elapsed().as_secs_f64();
        if i == 0
            && let Some(path) = &args.save_grads
        {
            save_grads(trainer.graph(), &outputs, path)?;
        }
        let done = i + 1;
        let eta = started.elapsed().as_secs_f64() / done as f64 * (args.steps - done) as f64;
        println!(
            "step {:>6}/{}  loss {:.4}  lr {:.3e}  grad_norm {:.3}  {:.0} tok/s  eta {:.0}s",
            stats.step, args.steps, stats.loss, lr, stats.grad_norm, tokens_per_s, eta
        );
        if let Some((path, w)) = &mut log {
            writeln!(
                w,
                "{},{},{},{},{:.1}",
                stats.step, stats.loss, lr, stats.grad_norm, tokens_per_s
            )
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if let Some((path, mut w)) = log {
        w.flush()
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Where batches come from.
enum Batches {
    /// Random windows of a token file.
    Data(TokenData, SplitMix64),
    /// One batch, every step.
    Fixed((Vec<i32>, Vec<i32>)),
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
    let graph = load_model(&text).map_err(located)?;
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
    let graph = load_model(&edited).map_err(|e| {
        Diagnostic::new(format!(
            "{}: with --batch/--seq-len: {e}",
            args.model.display()
        ))
    })?;
    Ok((graph, config))
}

/// The training step of `forward`, lowered by [`TRAIN_PIPELINE`].
fn build_step(forward: &Graph, config: &TrainConfig) -> Result<Graph, Diagnostic> {
    let options = TrainStepOptions {
        fp8: config.recipe == Recipe::Fp8,
        beta1: config.beta1,
        beta2: config.beta2,
        eps: config.eps,
        weight_decay: config.weight_decay,
        max_grad_norm: config.grad_clip,
        ..TrainStepOptions::default()
    };
    let mut step =
        train_step::build(forward, &options).map_err(|e| Diagnostic::new(e.to_string()))?;
    let pipeline = Pipeline::parse(TRAIN_PIPELINE).map_err(|e| Diagnostic::new(e.to_string()))?;
    pipeline
        .run(&mut step, &PassOptions::default(), |_, _| {})
        .map_err(|e| Diagnostic::new(e.to_string()))?;
    Ok(step)
}

/// The vocabulary: the rows of the embedding table the token ids index.
fn vocab_of(forward: &Graph) -> u64 {
    forward
        .ops
        .iter()
        .find(|op| op.kind == dsc_ir::OpKind::Embedding)
        .map_or(u64::MAX, |op| forward.ty(op.operands[1]).shape.dims()[0])
}

fn parameter_count(g: &Graph) -> u64 {
    g.params.iter().map(|&p| g.ty(p).shape.numel()).sum()
}

/// `input_ids` and `labels` from a safetensors file, checked against the step's shape and the
/// vocabulary.
fn fixed_batch(
    g: &Graph,
    path: &std::path::Path,
    vocab: u64,
) -> Result<(Vec<i32>, Vec<i32>), Diagnostic> {
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
fn save_grads(
    g: &Graph,
    outputs: &[(String, HostTensor)],
    path: &std::path::Path,
) -> Result<(), Diagnostic> {
    let mut grads = Weights::new();
    for &p in &g.params {
        let name = autodiff::grad_name(g.name(p));
        if let Some((_, t)) = outputs.iter().find(|(n, _)| *n == name) {
            grads.insert(p, t.clone());
        }
    }
    dsc_runtime::save_safetensors(&grads, g, path).map_err(runtime)?;
    println!("wrote the gradients of step 1 to {}", path.display());
    Ok(())
}
