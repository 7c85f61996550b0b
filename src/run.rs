//! `dsc run DIR`: loads a compiled model into a session on the chosen device, loads weights and
//! inputs, runs it, and prints (or writes) the outputs.

use crate::cli::{AccumulatorArg, DeviceArg, RunArgs};
use crate::diagnostic::Diagnostic;
use crate::output_file::{Input, check_output_file};
use dsc_runtime::inputs::{random_inputs, read_inputs};
use dsc_runtime::{
    Artifact, Checkpoint, Device, HostTensor, Session, SessionOptions, StepTiming,
    beyond_last_layer, write_safetensors,
};
use std::path::Path;
use std::time::Instant;

/// A runtime error as the binary reports it.
pub fn runtime_error(e: dsc_runtime::RuntimeError) -> Diagnostic {
    Diagnostic::new(e.to_string())
}

/// The runtime's device for a `--device` argument.
fn device_of(arg: DeviceArg) -> Device {
    match arg {
        DeviceArg::Auto => Device::Auto,
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Emu => Device::Emulator,
        DeviceArg::Cuda(n) => Device::Cuda(n),
    }
}

/// Where a session's weights come from.
pub enum WeightsSource<'p> {
    /// A `.safetensors` file or a Hugging Face checkpoint directory.
    Checkpoint(&'p Path),
    /// Deterministic random weights from a seed.
    Random(u64),
}

/// Session options with `accumulator` for the CPU reference and the emulator's tensor cores.
pub fn session_options(accumulator: AccumulatorArg) -> SessionOptions {
    SessionOptions::default().with_accumulator(accumulator.model())
}

/// Opens a session for `artifact` on `device`, prints the device (and why), and loads weights.
pub fn open_session<'a>(
    artifact: &'a Artifact,
    device: DeviceArg,
    options: SessionOptions,
    weights: WeightsSource<'_>,
) -> Result<Session<'a>, Diagnostic> {
    let mut session =
        Session::with_options(artifact, device_of(device), options).map_err(runtime_error)?;
    println!("device: {}", session.device());
    match weights {
        WeightsSource::Checkpoint(path) => {
            let checkpoint = Checkpoint::open(path).map_err(runtime_error)?;
            let beyond = beyond_last_layer(&artifact.graph, &checkpoint);
            if let Some(first) = beyond.first() {
                eprintln!(
                    "note: ignored {} tensors of layers beyond the model's {} (e.g. \
                     multi-token-prediction layers), first `{first}`",
                    beyond.len(),
                    dsc_runtime::weights::layer_count(&artifact.graph)
                );
            }
            session.load_checkpoint(&checkpoint)
        }
        WeightsSource::Random(seed) => session.load_random_weights(seed),
    }
    .map_err(runtime_error)?;
    Ok(session)
}

/// Runs the model in `args.dir`.
pub fn run(args: &RunArgs) -> Result<(), Diagnostic> {
    // Before the run: the outputs must not replace what it reads, nor fail to be written.
    if let Some(path) = &args.output {
        let mut inputs = vec![Input::new("the artifact", &args.dir)];
        if let Some(p) = &args.inputs {
            inputs.push(Input::new("the --inputs file", p));
        }
        if let Some(p) = &args.weights {
            inputs.push(Input::new("the --weights checkpoint", p));
        }
        check_output_file("--output", path, &inputs)?;
    }
    let artifact = Artifact::load(&args.dir).map_err(runtime_error)?;
    // Every artifact dsc compile writes has one, whatever device runs it.
    artifact.require_launch_plan().map_err(runtime_error)?;
    let weights = match (&args.weights, args.random_weights) {
        (Some(path), _) => WeightsSource::Checkpoint(path),
        (None, Some(seed)) => WeightsSource::Random(seed),
        (None, None) => {
            return Err(Diagnostic::new(
                "no weights: give --weights PATH or --random-weights SEED",
            ));
        }
    };
    let options = session_options(args.accumulator);
    // The session first: it checks that the model fits in memory before anything is drawn.
    let mut session = open_session(&artifact, args.device, options, weights)?;
    let inputs = match &args.inputs {
        Some(path) => read_inputs(&artifact.graph, path).map_err(runtime_error)?,
        None => random_inputs(&artifact.graph, 0),
    };
    let start = Instant::now();
    let outputs = session.run(&inputs).map_err(runtime_error)?;
    let elapsed = start.elapsed();
    println!(
        "ran {} ({} ops, {} timed steps) on {} in {:.1} ms",
        artifact.graph.name,
        artifact.graph.ops.len(),
        session.timings().len(),
        session.device().short_name(),
        elapsed.as_secs_f64() * 1e3
    );
    if let Some(model) = modeled_total(session.timings()) {
        println!("{model}");
    }
    for (name, t) in &outputs {
        println!("  {}", describe(name, t));
    }
    if let Some(path) = &args.output {
        write_safetensors(path, outputs.iter().map(|(n, t)| (n.as_str(), t)))
            .map_err(runtime_error)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// On the emulator, the modeled time of the run's steps together (the wall time above is the
/// emulation's); `None` when the steps were measured, not modeled.
fn modeled_total(timings: &[StepTiming]) -> Option<String> {
    let device = &timings.first()?.modeled.as_ref()?.device;
    let seconds: f64 = timings
        .iter()
        .filter_map(|t| t.modeled.as_ref())
        .map(|m| m.seconds)
        .sum();
    Some(format!(
        "modeled: {:.4} ms for the {} steps on {device} (roofline model, not measured)",
        seconds * 1e3,
        timings.len()
    ))
}

/// One line per output: dtype, shape, summary statistics and the first values.
fn describe(name: &str, t: &HostTensor) -> String {
    let v = t.to_f32_vec();
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let std = (v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let first: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
    format!(
        "{name}: {}{:?} mean {mean:.4} std {std:.4} first [{}]",
        t.dtype,
        t.shape,
        first.join(", ")
    )
}
