//! Runs the pass pipeline for `compile` and `opt`, honouring `--passes`, `--print-after` and
//! turning pass errors into diagnostics.

use crate::cli::PipelineArgs;
use crate::diagnostic::Diagnostic;
use dsc_ir::Graph;
use dsc_passes::{PassOptions, PassTiming, Pipeline, find_pass};

/// Runs the requested pipeline (or `default`) over `graph`.
pub fn run(
    args: &PipelineArgs,
    default: &str,
    graph: &mut Graph,
) -> Result<Vec<PassTiming>, Diagnostic> {
    let list = args.passes.as_deref().unwrap_or(default);
    let pipeline = Pipeline::parse(list).map_err(|e| Diagnostic::new(e.to_string()))?;
    if let Some(p) = args.print_after.as_deref()
        && p != "all"
    {
        if find_pass(p).is_none() {
            return Err(Diagnostic::new(format!(
                "--print-after: unknown pass `{p}` (use a pass name or `all`)"
            )));
        }
        if !pipeline.passes.iter().any(|q| q.name == p) {
            return Err(Diagnostic::new(format!(
                "--print-after: pass `{p}` is not in the pipeline `{list}`"
            )));
        }
    }
    let print_after = args.print_after.as_deref();
    pipeline
        .run(graph, &PassOptions::default(), |pass, g| {
            if print_after.is_some_and(|p| p == "all" || p == pass) {
                eprintln!("# ----- IR after {pass} -----");
                eprint!("{g}");
            }
        })
        .map_err(|e| Diagnostic::new(e.to_string()))
}
