//! Builds and lowers kernels to PTX in parallel, one kernel per MLIR module.
//!
//! An MLIR [`melior::Context`] may not be shared between threads, so each worker thread creates
//! its own (with MLIR's own thread pool off: the workers are the parallelism) and, for each
//! kernel it takes, builds the kernel alone in a fresh module and runs the pass pipeline of
//! [`crate::compile_to_ptx`] over it with a pass manager of that context. Workers take kernels
//! from a shared queue, the costliest kinds first, so one large GEMM started last does not keep
//! the others waiting. What comes back is each kernel's own PTX module, in the order of the
//! input, whatever order the threads finished in; [`crate::link`] joins them.
//!
//! With a [`PtxCache`], a kernel whose PTX is cached is not built at all, and a kernel that is
//! lowered is stored for the next compile.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::cache::PtxCache;
use crate::compile_to_ptx;
use crate::error::CodegenError;
use crate::kernels::GpuKernel;
use crate::mlir::{KernelModule, create_context_with_threading};
use crate::target::Target;

/// Name of the `gpu.module` each kernel is built in.
pub const GPU_MODULE: &str = "dsc_kernels";

/// Stack of a worker thread: LLVM's back end recurses over large functions.
const WORKER_STACK: usize = 64 << 20;

/// The PTX of every kernel and where the time went.
#[derive(Debug, Clone, Default)]
pub struct Lowered {
    /// Each kernel's own PTX module, in input order.
    pub ptx: Vec<String>,
    /// Building MLIR, summed over kernels (ms).
    pub build_ms: f64,
    /// Lowering to PTX, summed over kernels (ms).
    pub lower_ms: f64,
    /// Worker threads used.
    pub threads: usize,
    /// Kernels whose PTX came from the cache.
    pub cache_hits: usize,
    /// The kernels that took longest to build and lower, longest first (at most
    /// [`SLOWEST_SHOWN`]).
    pub slowest: Vec<KernelTime>,
}

/// How many of the slowest kernels [`Lowered::slowest`] keeps.
pub const SLOWEST_SHOWN: usize = 5;

/// One kernel's time to build its MLIR and lower it to PTX.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelTime {
    /// The kernel's entry name.
    pub entry: String,
    /// Building and lowering (ms).
    pub ms: f64,
}

/// How many kernels to lower at once when not told: the processors this process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A rough rank of how long a kernel takes to lower, to start the longest first: with two
/// threads, a 180 ms kernel taken last adds ~90 ms to the wall time. Measured on V3 (`dsc
/// compile --timings`): fused attention and a 256-expert `moe_topk` (its selection unrolled over
/// 8 experts per lane and 8 rounds) ~180 ms each, the pipelined FP8 GEMMs 35–115 ms, the rest
/// under 65 ms.
fn weight(kernel: &GpuKernel) -> u32 {
    match kernel {
        GpuKernel::FlashAttention(_) => 4,
        GpuKernel::MoeTopk(topk) if topk.experts() * topk.top_k() >= 1024 => 4,
        GpuKernel::Fp8Gemm(_) => 3,
        GpuKernel::Linear(_)
        | GpuKernel::LinearWgmma(_)
        | GpuKernel::Matmul(_)
        | GpuKernel::MoeTopk(_) => 2,
        GpuKernel::AttnScores(_) | GpuKernel::AttnValues(_) => 1,
        _ => 0,
    }
}

/// One kernel's result: its PTX, and the build and lowering times (ms), `None` on a cache hit.
type Done = Result<(String, Option<(f64, f64)>), CodegenError>;

/// Builds and lowers each `(entry, kernel)` for `target` on up to `jobs` threads.
pub fn lower_kernels(
    kernels: &[(String, GpuKernel)],
    target: Target,
    jobs: usize,
    cache: Option<&PtxCache>,
) -> Result<Lowered, CodegenError> {
    let mut results: Vec<Option<Done>> = (0..kernels.len()).map(|_| None).collect();

    // Cache hits first, on this thread: they need no MLIR at all.
    let mut todo = Vec::new();
    for (index, (entry, kernel)) in kernels.iter().enumerate() {
        match cache.and_then(|c| c.load(target, entry, kernel)) {
            Some(ptx) => results[index] = Some(Ok((ptx, None))),
            None => todo.push(index),
        }
    }
    todo.sort_by_key(|&index| std::cmp::Reverse(weight(&kernels[index].1)));

    let threads = jobs.max(1).min(todo.len());
    let mut spawned = 0;
    if threads > 0 {
        let next = AtomicUsize::new(0);
        let done = Mutex::new(&mut results);
        let work = || {
            let context = create_context_with_threading(false);
            loop {
                let taken = next.fetch_add(1, Ordering::Relaxed);
                let Some(&index) = todo.get(taken) else {
                    break;
                };
                let (entry, kernel) = &kernels[index];
                let result = lower_one(&context, entry, kernel, target);
                if let (Ok((ptx, _)), Some(cache)) = (&result, cache) {
                    cache.store(target, entry, kernel, ptx);
                }
                done.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
            }
        };
        spawned = std::thread::scope(|scope| {
            // A thread that cannot be started is only parallelism lost: this one works too.
            let handles: Vec<_> = (1..threads)
                .map_while(|_| {
                    std::thread::Builder::new()
                        .name("dsc-lower".into())
                        .stack_size(WORKER_STACK)
                        .spawn_scoped(scope, work)
                        .ok()
                })
                .collect();
            let spawned = handles.len();
            work();
            for handle in handles {
                if let Err(panic) = handle.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            spawned
        });
    }

    let mut lowered = Lowered {
        threads: if threads > 0 { spawned + 1 } else { 0 },
        ..Lowered::default()
    };
    // Every kernel is lowered even after one fails, so the error reported is always the first
    // in input order, whatever order the threads ran in.
    for (result, (entry, _)) in results.into_iter().zip(kernels) {
        let Some(result) = result else {
            return Err(CodegenError::MissingPtx(
                "a kernel was neither lowered nor failed".into(),
            ));
        };
        let (ptx, times) = result?;
        match times {
            Some((build_ms, lower_ms)) => {
                lowered.build_ms += build_ms;
                lowered.lower_ms += lower_ms;
                lowered.slowest.push(KernelTime {
                    entry: entry.clone(),
                    ms: build_ms + lower_ms,
                });
            }
            None => lowered.cache_hits += 1,
        }
        lowered.ptx.push(ptx);
    }
    lowered
        .slowest
        .sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.entry.cmp(&b.entry)));
    lowered.slowest.truncate(SLOWEST_SHOWN);
    Ok(lowered)
}

/// Builds `kernel` as `entry` alone in a new module of `context` and lowers it.
fn lower_one(
    context: &melior::Context,
    entry: &str,
    kernel: &GpuKernel,
    target: Target,
) -> Result<(String, Option<(f64, f64)>), CodegenError> {
    let start = Instant::now();
    let mut module = KernelModule::new(context, GPU_MODULE);
    kernel.build(&module, entry)?;
    let build_ms = ms(start);
    let start = Instant::now();
    let ptx = compile_to_ptx(module.module_mut(), target)?;
    Ok((ptx, Some((build_ms, ms(start)))))
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
