//! `dsc opt FILE.dsc --passes LIST`: textual IR in, textual IR out.

use crate::cli::OptArgs;
use crate::diagnostic::{Diagnostic, read_text};
use crate::output_file::check_output_file;
use crate::{pipeline, report};
use dsc_ir::text::parse;
use dsc_ir::verify;

/// Parses, verifies, runs the pipeline and prints (or writes) the result.
pub fn run(args: &OptArgs) -> Result<(), Diagnostic> {
    // `-o` may be the input itself (rewritten in place, like `sed -i`: it is read whole first),
    // so only the place is checked.
    if let Some(path) = &args.output {
        check_output_file("-o", path, &[])?;
    }
    let source = read_text(&args.input)?;
    let mut graph = parse(&source).map_err(|e| Diagnostic::located(&args.input, &source, e))?;
    verify(&graph).map_err(|e| Diagnostic::new(format!("{}: {e}", args.input.display())))?;
    // Without --passes, `opt` only verifies and reprints: a round trip.
    let timings = pipeline::run(&args.pipeline, "verify", &mut graph)?;
    let text = graph.to_string();
    match &args.output {
        Some(path) => std::fs::write(path, &text)
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    if args.pipeline.timings {
        eprint!("{}", report::timings_text(&report::build(&graph, &timings)));
    }
    Ok(())
}
