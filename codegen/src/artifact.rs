//! The codegen half of `dsc compile`: plan the final graph, build every distinct kernel into one
//! MLIR module with melior, lower it to one PTX module, and hand back the manifest, the PTX and
//! (on request) the MLIR text. Writing the files is the caller's (atomic) business.

use std::time::Instant;

use dsc_ir::Graph;
use dsc_kernels::manifest::Manifest;

use crate::error::CodegenError;
use crate::mlir::{KernelModule, create_context};
use crate::plan::plan;
use crate::{Target, compile_to_ptx};

/// Name of the `gpu.module` holding every kernel.
pub const GPU_MODULE: &str = "dsc_kernels";

/// What codegen produces for one graph and target.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The manifest.
    pub manifest: Manifest,
    /// One PTX module with every kernel entry.
    pub ptx: String,
    /// The MLIR of every kernel before lowering, when asked for.
    pub mlir: Option<String>,
    /// Where the time went.
    pub timings: CodegenTimings,
}

/// Milliseconds per codegen phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CodegenTimings {
    /// Kernel selection and the arena plan.
    pub plan_ms: f64,
    /// Building the MLIR of every kernel with melior.
    pub build_mlir_ms: f64,
    /// MLIR's passes down to PTX text.
    pub lower_ms: f64,
    /// Kernels built (distinct entries).
    pub kernels: usize,
}

/// Plans `g`, builds its kernels and lowers them for `target`.
pub fn generate(g: &Graph, target: Target, emit_mlir: bool) -> Result<Generated, CodegenError> {
    let start = Instant::now();
    let program = plan(g, target)?;
    let plan_ms = ms(start);

    let start = Instant::now();
    let context = create_context();
    let mut module = KernelModule::new(&context, GPU_MODULE);
    for (entry, kernel) in &program.kernels {
        kernel.build(&module, entry)?;
    }
    let mlir = emit_mlir.then(|| module.module().as_operation().to_string());
    let build_mlir_ms = ms(start);

    let start = Instant::now();
    let ptx = compile_to_ptx(module.module_mut(), target)?;
    let lower_ms = ms(start);

    Ok(Generated {
        manifest: program.manifest,
        ptx,
        mlir,
        timings: CodegenTimings {
            plan_ms,
            build_mlir_ms,
            lower_ms,
            kernels: program.kernels.len(),
        },
    })
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
