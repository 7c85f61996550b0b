//! dsc's kernels as specifications: for each kernel, its operands, layouts, attributes and
//! launch-shape rules, and a CPU reference implementation that defines its exact numerics
//! (FP8 E4M3/E5M2 and BF16 conversions, 1×128 activation and 128×128 weight quantization, the
//! block-scaled GEMM with FP32 promotion of DESIGN.md §3).
//!
//! The GPU implementations in `dsc-codegen` and the CPU backend in `dsc-runtime` both follow
//! these specs, and GPU results are always checked against the references here.
//!
//! What is here:
//! - [`numerics`]: bit-exact FP8 (E4M3, E5M2) and BF16 conversions, block scales (f32 and
//!   UE8M0), and the accumulator models (exact FP32 and the Hopper tensor-core model).
//! - [`act_quant`]: 1 × tile activation quantization; [`weight_quant`]: block × block weight
//!   quantization (also for grouped expert weights); both produce a [`Quantized`].
//! - [`block_gemm`]: the block-scaled FP8 GEMM with promotion into FP32.
//! - [`cost`]: FLOPs and bytes of an op (report, launch plan, bench).
//! - [`manifest`]: the artifact's `manifest.json` schema, written by codegen and read by the
//!   runtime.
//! - [`mod@numerics_report`]: the accumulation-error table that motivates promotion.
//! - [`rng`]: the seeded generator (SplitMix64) of random weights, inputs and test data;
//!   [`fnv`]: the stable hash (FNV-1a) of entry names, cache keys and seeds.
//!
//! All of it is checked against independent vectors in `shared/testdata` (tests/numerics.rs).

pub mod act_quant;
pub mod block_gemm;
pub mod cost;
pub mod error;
pub mod fnv;
pub mod manifest;
pub mod numerics;
pub mod numerics_report;
pub mod ops;
pub mod quantized;
pub mod rng;
pub mod weight_quant;

pub use act_quant::{act_quant_1x128, act_quant_e5m6};
pub use block_gemm::{BlockGemmConfig, GemmDims, fp8_block_gemm};
pub use error::KernelError;
pub use numerics::{Accumulator, Fp8Format};
pub use numerics_report::numerics_report;
pub use quantized::{Fp8Operand, Quantized};
pub use weight_quant::{weight_quant_128x128, weight_quant_experts};
