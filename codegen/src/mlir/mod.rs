//! MLIR construction with melior: the context every kernel builder uses, the kernel-module
//! skeleton, and one module per kernel.
//!
//! Kernel builders create operations programmatically with melior's dialect builders (the
//! hand-written `arith`/`scf`/`memref` ones and the TableGen-generated `melior::dialect::ods::*`
//! for `gpu`, `nvgpu`, `nvvm`), never by parsing MLIR text. Each builder appends one `gpu.func`
//! to the `gpu.module` of a [`KernelModule`](kernel::KernelModule); [`crate::compile_to_ptx`]
//! then lowers that module to one PTX module.

pub mod add;
pub mod emit;
pub mod kernel;
pub mod math;

use melior::Context;
use melior::dialect::DialectRegistry;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};

pub use kernel::{KernelModule, global_thread_index, index_constant};

/// Creates an MLIR context with every dialect loaded and every pass and LLVM translation
/// registered: what building kernels and running the MLIR-to-PTX pipeline needs.
pub fn create_context() -> Context {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    register_all_passes();
    context
}
