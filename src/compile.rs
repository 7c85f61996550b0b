//! `dsc compile MODEL.toml` (or a Hugging Face config.json / checkpoint directory, imported
//! first): model → graph → passes → graph.dsc, report.txt, report.json.

use crate::artifact_dir::write_atomically;
use crate::cli::CompileArgs;
use crate::diagnostic::{Diagnostic, read_text};
use crate::{pipeline, report};
use dsc_ir::model::load_model;
use dsc_passes::DEFAULT_PIPELINE;
use std::path::PathBuf;

/// Compiles the model and writes the artifact directory.
pub fn run(args: &CompileArgs) -> Result<(), Diagnostic> {
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
            load_model(&source)
                .map_err(|e| Diagnostic::at(&args.model, &source, e.line, e.col, e.message))?
        }
    };
    let timings = pipeline::run(&args.pipeline, DEFAULT_PIPELINE, &mut graph)?;
    let report = report::build(&graph, &timings);
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("build").join(&graph.name));
    let text = graph.to_string();
    let report_txt = report.to_text();
    let report_json = report.to_json();
    write_atomically(
        &dir,
        &[
            ("graph.dsc", text.as_bytes()),
            ("report.txt", report_txt.as_bytes()),
            ("report.json", report_json.as_bytes()),
        ],
    )?;
    print!("{}", report.summary_text());
    if args.pipeline.timings {
        print!("{}", report.timings_text());
    }
    println!("wrote {}", dir.display());
    Ok(())
}
