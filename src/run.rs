//! `dsc run DIR`: loads a compiled model, its weights and inputs, runs it, and prints (or
//! writes) the outputs.

use crate::cli::{AccumulatorArg, DeviceArg, RunArgs};
use crate::diagnostic::{Diagnostic, read_text};
use dsc_ir::text::parse;
use dsc_ir::verify;
use dsc_kernels::Accumulator;
use dsc_runtime::cpu::{self, CpuOptions};
use dsc_runtime::inputs::{random_inputs, read_inputs};
use dsc_runtime::{
    Checkpoint, HostTensor, beyond_last_layer, load_weights, random_weights, write_safetensors,
};
use std::time::Instant;

fn runtime_error(e: dsc_runtime::RuntimeError) -> Diagnostic {
    Diagnostic::new(e.to_string())
}

/// Runs the model in `args.dir`.
pub fn run(args: &RunArgs) -> Result<(), Diagnostic> {
    let graph_file = args.dir.join("graph.dsc");
    if !graph_file.is_file() {
        return Err(Diagnostic::new(format!(
            "{} is not a compiled model: it has no graph.dsc (run `dsc compile` first)",
            args.dir.display()
        )));
    }
    let source = read_text(&graph_file)?;
    let graph = parse(&source)
        .map_err(|e| Diagnostic::at(&graph_file, &source, e.line, e.col, e.message))?;
    verify(&graph).map_err(|e| Diagnostic::new(format!("{}: {e}", graph_file.display())))?;

    match args.device {
        DeviceArg::Cpu => {}
        DeviceArg::Auto => println!("device: cpu (auto: the CUDA backend is not built yet)"),
        DeviceArg::Cuda(n) => {
            return Err(Diagnostic::new(format!(
                "device cuda:{n}: the CUDA backend is not built yet; use --device cpu"
            )));
        }
    }

    let weights = match (&args.weights, args.random_weights) {
        (Some(path), _) => {
            let ckpt = Checkpoint::open(path).map_err(runtime_error)?;
            let beyond = beyond_last_layer(&graph, &ckpt);
            if let Some(first) = beyond.first() {
                eprintln!(
                    "note: ignored {} tensors of layers beyond the model's {} (e.g. \
                     multi-token-prediction layers), first `{first}`",
                    beyond.len(),
                    dsc_runtime::weights::layer_count(&graph)
                );
            }
            load_weights(&graph, &ckpt).map_err(runtime_error)?
        }
        (None, Some(seed)) => random_weights(&graph, seed).map_err(runtime_error)?,
        (None, None) => {
            return Err(Diagnostic::new(
                "no weights: give --weights PATH or --random-weights SEED",
            ));
        }
    };
    let inputs = match &args.inputs {
        Some(path) => read_inputs(&graph, path).map_err(runtime_error)?,
        None => random_inputs(&graph, 0),
    };
    let options = CpuOptions {
        accumulator: match args.accumulator {
            AccumulatorArg::Exact => Accumulator::Exact,
            AccumulatorArg::Hopper => Accumulator::Hopper,
        },
    };
    let start = Instant::now();
    let outputs = cpu::run(&graph, &weights, &inputs, &options).map_err(runtime_error)?;
    let elapsed = start.elapsed();
    println!(
        "ran {} ({} ops) on cpu in {:.1} ms",
        graph.name,
        graph.ops.len(),
        elapsed.as_secs_f64() * 1e3
    );
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
