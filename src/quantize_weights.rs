//! `dsc quantize-weights IN_DIR -o OUT_DIR`: the model is imported from IN_DIR's config.json
//! and compiled with the default pipeline; its FP8 parameters say which tensors to quantize.

use crate::cli::{HfShapeArgs, QuantizeWeightsArgs};
use crate::diagnostic::Diagnostic;
use crate::import::import_config;
use dsc_ir::model::load_model;
use dsc_passes::{PassOptions, Pipeline};
use dsc_runtime::quantize_checkpoint::{QuantizePlan, ShardDone, quantize_checkpoint};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Converts the checkpoint, one progress line per shard on stderr.
pub fn run(args: &QuantizeWeightsArgs) -> Result<(), Diagnostic> {
    let config = args.input.join("config.json");
    if !config.is_file() {
        return Err(Diagnostic::new(format!(
            "{} is not a Hugging Face checkpoint directory: it has no config.json",
            args.input.display()
        )));
    }
    // Which weights are FP8 does not depend on the input's shape; the smallest will do.
    let shape = HfShapeArgs {
        batch: Some(1),
        seq_len: Some(1),
    };
    let imported = import_config(&config, &shape)?;
    let mut graph = load_model(&imported.toml)
        .map_err(|e| Diagnostic::new(format!("{}: imported model: {e}", config.display())))?;
    Pipeline::default_pipeline()
        .run(&mut graph, &PassOptions::default(), |_, _| {})
        .map_err(|e| {
            Diagnostic::new(format!("compiling the model of {}: {e}", config.display()))
        })?;
    let plan = QuantizePlan::from_graph(&graph).map_err(|e| Diagnostic::new(e.to_string()))?;
    let mut progress = |s: &ShardDone| {
        eprintln!(
            "[{}/{}] {}: {} weights quantized, {} tensors copied, {:.1} MiB -> {:.1} MiB",
            s.index,
            s.count,
            s.file,
            s.quantized,
            s.copied,
            mib(s.bytes_in),
            mib(s.bytes_out)
        );
    };
    let summary = quantize_checkpoint(&args.input, &args.output, &plan, &mut progress)
        .map_err(|e| Diagnostic::new(e.to_string()))?;
    println!(
        "wrote {}: {} shards, {} weights in FP8 ({} kept as they were), {:.1} MiB -> {:.1} MiB",
        args.output.display(),
        summary.shards,
        summary.quantized,
        summary.copied,
        mib(summary.bytes_in),
        mib(summary.bytes_out)
    );
    Ok(())
}
