//! The codegen half of `dsc compile`: plan the final graph, build every distinct kernel with
//! melior and lower it to PTX (each in its own MLIR module, in parallel, or from the PTX cache:
//! [`crate::lower`]), join the kernels into one PTX module ([`crate::link`]), and hand back the
//! manifest, the PTX and (on request) the MLIR text. Writing the files is the caller's (atomic)
//! business.

use std::time::Instant;

use dsc_ir::Graph;
use dsc_kernels::manifest::Manifest;
use melior::Context;

use crate::cache::PtxCache;
use crate::error::CodegenError;
use crate::kernels::GpuKernel;
use crate::link::link;
use crate::lower::{KernelTime, default_jobs, lower_kernels};
use crate::mlir::{KernelModule, create_context};
use crate::plan::plan;
use crate::{Target, compile_to_ptx};

pub use crate::lower::GPU_MODULE;

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

/// Where codegen's time went (milliseconds), and how the kernels were lowered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodegenTimings {
    /// Kernel selection and the arena plan.
    pub plan_ms: f64,
    /// Building the MLIR of every kernel with melior, summed over the kernels lowered (on
    /// several threads at once: more than the wall time it took).
    pub build_mlir_ms: f64,
    /// MLIR's passes down to PTX text, summed over the kernels lowered.
    pub lower_ms: f64,
    /// Wall time of building and lowering every kernel (cache look-ups included) and joining
    /// their PTX.
    pub kernels_ms: f64,
    /// Kernels built (distinct entries).
    pub kernels: usize,
    /// Of those, how many came from the PTX cache.
    pub cache_hits: usize,
    /// Threads that lowered kernels.
    pub threads: usize,
    /// Whether the kernels' PTX could not be joined and all of them were lowered again in one
    /// module (see [`crate::link`]): correct, but the parallel work was lost.
    pub lowered_whole: bool,
    /// The kernels that took longest to build and lower, longest first.
    pub slowest: Vec<KernelTime>,
}

/// How to generate.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also return the MLIR of every kernel (one module, as `--emit mlir` writes it).
    pub emit_mlir: bool,
    /// Kernels lowered at once; `None`: as many as there are processors.
    pub jobs: Option<usize>,
    /// Reuse and store lowered kernels here.
    pub cache: Option<PtxCache>,
}

/// Plans `g`, builds its kernels and lowers them for `target`, with no cache.
pub fn generate(g: &Graph, target: Target, emit_mlir: bool) -> Result<Generated, CodegenError> {
    generate_with(
        g,
        target,
        &Options {
            emit_mlir,
            ..Options::default()
        },
    )
}

/// Plans `g`, builds its kernels and lowers them for `target`: each kernel in a module of its
/// own, on several threads, or from `options.cache`; then joins their PTX into one module, the
/// same bytes as lowering all of them in one module would give.
pub fn generate_with(
    g: &Graph,
    target: Target,
    options: &Options,
) -> Result<Generated, CodegenError> {
    let start = Instant::now();
    let program = plan(g, target)?;
    let plan_ms = ms(start);

    let mlir = if options.emit_mlir {
        let context = create_context();
        let module = whole_module(&context, &program.kernels)?;
        Some(module.module().as_operation().to_string())
    } else {
        None
    };

    let start = Instant::now();
    let jobs = options.jobs.unwrap_or_else(default_jobs);
    let mut lowered = lower_kernels(&program.kernels, target, jobs, options.cache.as_ref())?;
    let kernels: Vec<(&str, &str)> = program
        .kernels
        .iter()
        .zip(&lowered.ptx)
        .map(|((entry, _), ptx)| (entry.as_str(), ptx.as_str()))
        .collect();
    let mut lowered_whole = false;
    let ptx = match link(&kernels) {
        Ok(ptx) => ptx,
        // PTX the join does not know the shape of (a new LLVM, a kernel with a `.func`): lower
        // every kernel in one module, as the join would have made it.
        Err(_) => {
            let start = Instant::now();
            let context = create_context();
            let mut module = whole_module(&context, &program.kernels)?;
            let ptx = compile_to_ptx(module.module_mut(), target)?;
            lowered.lower_ms += ms(start);
            lowered_whole = true;
            ptx
        }
    };
    let kernels_ms = ms(start);
    crate::limits::check(&program.manifest, &ptx, target)?;

    Ok(Generated {
        manifest: program.manifest,
        ptx,
        mlir,
        timings: CodegenTimings {
            plan_ms,
            build_mlir_ms: lowered.build_ms,
            lower_ms: lowered.lower_ms,
            kernels_ms,
            kernels: program.kernels.len(),
            cache_hits: lowered.cache_hits,
            threads: lowered.threads,
            lowered_whole,
            slowest: lowered.slowest,
        },
    })
}

/// Every kernel built into one module of `context`.
fn whole_module<'c>(
    context: &'c Context,
    kernels: &[(String, GpuKernel)],
) -> Result<KernelModule<'c>, CodegenError> {
    let module = KernelModule::new(context, GPU_MODULE);
    for (entry, kernel) in kernels {
        kernel.build(&module, entry)?;
    }
    Ok(module)
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
