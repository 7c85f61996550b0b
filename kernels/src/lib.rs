//! dsc's kernels as specifications: for each kernel, its operands, layouts, attributes and
//! launch-shape rules, and a CPU reference implementation that defines its exact numerics
//! (FP8 E4M3/E5M2 and BF16 conversions, 1×128 activation and 128×128 weight quantization, the
//! block-scaled GEMM with FP32 promotion of DESIGN.md §3).
//!
//! The GPU implementations in `dsc-codegen` and the CPU backend in `dsc-runtime` both follow
//! these specs, and GPU results are always checked against the references here. The crate is
//! filled by the FP8 numerics work (issue 3); it exists now so the workspace's dependency
//! graph (`kernels` ← `codegen`, `runtime`) is fixed from the start.
