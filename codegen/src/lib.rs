//! dsc's code generator: selects a GPU kernel for each op of the final graph, builds it as MLIR
//! with melior (`gpu.module`/`gpu.func` over the `arith`, `scf`, `memref`, `gpu`, `nvgpu` and
//! `nvvm` dialects), lowers the module to PTX with MLIR's own passes, and checks the PTX with
//! ptxas.
//!
//! The chain, end to end:
//!
//! ```text
//! mlir::create_context ─► mlir::KernelModule + kernel builders (kernels::…)
//!                      ─► compile_to_ptx(module, Target) ─► PTX text ─► ptxas::assemble
//! ```
//!
//! [`generate`] does this for a whole graph: one module per kernel, lowered on several threads
//! ([`lower`]) or read from a [`PtxCache`], then joined into one PTX module ([`link`]).
//!
//! Targets are `sm_90a` (Hopper, the default) and `sm_89` (Ada), each its own PTX module
//! ([`Target`]). See DESIGN.md §4.

pub mod artifact;
pub mod cache;
pub mod error;
pub mod kernels;
pub mod limits;
pub mod link;
pub mod lower;
pub mod mlir;
pub mod plan;
pub mod ptx;
pub mod ptxas;
pub mod report;
pub mod target;
#[cfg(test)]
mod tests;

pub use artifact::{CodegenTimings, Generated, Options, generate, generate_with};
pub use cache::PtxCache;
pub use error::CodegenError;
pub use ptx::{compile_to_ptx, pipeline};
pub use report::Report;
pub use target::Target;
