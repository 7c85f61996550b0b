//! MLIR construction with melior: the context every kernel builder uses, the kernel-module
//! skeleton, and one module per kernel.
//!
//! Kernel builders create operations programmatically with melior's dialect builders (the
//! hand-written `arith`/`scf`/`memref` ones and the TableGen-generated `melior::dialect::ods::*`
//! for `gpu`, `nvgpu`, `nvvm`), never by parsing MLIR text. Each builder appends one `gpu.func`
//! to the `gpu.module` of a [`KernelModule`](kernel::KernelModule); [`crate::compile_to_ptx`]
//! then lowers that module to one PTX module.

pub mod ampere;
pub mod emit;
pub mod hopper;
pub mod kernel;
pub mod math;

use std::sync::Once;

use melior::Context;
use melior::dialect::DialectRegistry;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};

pub use kernel::{KernelModule, global_thread_index, index_constant};

/// Creates an MLIR context with every dialect loaded and every pass and LLVM translation
/// registered: what building kernels and running the MLIR-to-PTX pipeline needs.
pub fn create_context() -> Context {
    create_context_with_threading(true)
}

/// [`create_context`] without MLIR's own thread pool: for a context that lowers one kernel at a
/// time on a thread of its own ([`crate::lower`] runs one such context per thread).
pub fn create_context_with_threading(threading: bool) -> Context {
    // The pass registry is process-wide and not safe to fill from two threads at once.
    static PASSES: Once = Once::new();
    PASSES.call_once(register_all_passes);
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new_with_threading(threading);
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    context
}
