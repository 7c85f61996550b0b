//! `dsc compile MODEL.toml` (or a Hugging Face config.json / checkpoint directory, imported
//! first): model → graph → passes → codegen → manifest.json, kernels.ptx, graph.dsc,
//! report.txt, report.json (and kernels.mlir with `--emit mlir`), written atomically.

use crate::artifact_dir::{check_replaceable, write_atomically};
use crate::cli::{CompileArgs, EmitArg};
use crate::diagnostic::{Diagnostic, read_text};
use crate::{pipeline, report};
use dsc_codegen::{Options, PtxCache, generate_with};
use dsc_ir::model::load_model;
use dsc_kernels::manifest::files;
use dsc_passes::DEFAULT_PIPELINE;
use std::path::PathBuf;

/// Compiles the model and writes the artifact directory.
pub fn run(args: &CompileArgs) -> Result<(), Diagnostic> {
    let mut train_config = None;
    let mut train_forward = None;
    let mut graph = match crate::import::hf_config(&args.model) {
        Some(config) => {
            let imported = crate::import::import_config(&config, &args.hf_shape)?;
            // `import` has read its model.toml back already; this cannot fail on input.
            load_model(&imported.toml).map_err(|e| {
                Diagnostic::new(format!("{}: imported model: {e}", config.display()))
            })?
        }
        None => {
            if args.hf_shape.batch.is_some() || args.hf_shape.seq_len.is_some() {
                return Err(Diagnostic::new(format!(
                    "--batch and --seq-len apply to a Hugging Face config.json or checkpoint \
                     directory; {} sets them in [model]",
                    args.model.display()
                )));
            }
            let source = read_text(&args.model)?;
            // Textual IR is not a model: say what takes it, rather than a TOML parse error.
            let first_line = source
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            if first_line.is_some_and(|l| l.starts_with("graph ")) {
                return Err(Diagnostic::new(format!(
                    "{} is textual IR, not a model: `dsc compile` takes a model.toml, a \
                     config.json or a checkpoint directory; run passes over IR with `dsc opt {}`",
                    args.model.display(),
                    args.model.display()
                )));
            }
            let located = |e| Diagnostic::located(&args.model, &source, e);
            train_config = dsc_ir::load_train_config(&source).map_err(located)?;
            // The training step's forward has the MTP modules too (the artifact does not).
            if let Some(c) = train_config.as_ref().filter(|c| c.mtp_depth > 0) {
                let with_mtp =
                    dsc_ir::model::load_model_with_mtp(&source, c.mtp_depth).map_err(located)?;
                train_forward = Some(with_mtp);
            }
            load_model(&source).map_err(located)?
        }
    };
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("build").join(&graph.name));
    // Refused before the compile, not after it: the checks are cheap, the compile is not.
    let inputs = [args.model.as_path()];
    check_replaceable(&dir, &inputs)?;
    // A model with `[train]` also gets its training steps' memory, measured before the
    // inference pipeline changes the graph.
    let train_table = match &train_config {
        Some(config) => Some(crate::train_report::memory_table(
            train_forward.as_ref().unwrap_or(&graph),
            config,
        )?),
        None => None,
    };
    let timings = pipeline::run(&args.pipeline, DEFAULT_PIPELINE, &mut graph)?;
    let target = args.target.0;
    let options = Options {
        emit_mlir: args.emit == Some(EmitArg::Mlir),
        jobs: None,
        cache: (!args.no_cache)
            .then(PtxCache::default_dir)
            .flatten()
            .map(PtxCache::new),
    };
    let generated = generate_with(&graph, target, &options)
        .map_err(|e| Diagnostic::new(format!("codegen for {target}: {e}")))?;
    let report = report::build(&graph, &timings).with_codegen(&generated);
    let text = graph.to_string();
    let report_txt = report::to_text(&report);
    let report_json = report.to_json();
    let manifest = generated.manifest.to_json();
    let mut outputs: Vec<(&str, &[u8])> = vec![
        (files::MANIFEST, manifest.as_bytes()),
        (files::KERNELS, generated.ptx.as_bytes()),
        (files::GRAPH, text.as_bytes()),
        ("report.txt", report_txt.as_bytes()),
        ("report.json", report_json.as_bytes()),
    ];
    if let Some(mlir) = &generated.mlir {
        outputs.push(("kernels.mlir", mlir.as_bytes()));
    }
    write_atomically(&dir, &outputs, &inputs)?;
    print!("{}", report::summary_text(&report));
    if let Some(table) = &train_table {
        print!("{table}");
    }
    if args.pipeline.timings {
        print!("{}", report::timings_text(&report));
    }
    println!("wrote {}", dir.display());
    // The command ends here: freeing a large model's graph, artifact and report one allocation
    // at a time would take a good part of a second; the process exit returns the memory at once.
    std::mem::forget((
        graph,
        generated,
        report,
        text,
        manifest,
        report_txt,
        report_json,
    ));
    Ok(())
}
