//! Exact numerics of the FP8 recipe (DESIGN.md §3): FP8 and BF16 conversions, the emulated
//! 12-bit E5M6 cache format, block scales, and the accumulator models of the block-scaled GEMM.

pub mod accumulate;
pub mod bf16;
pub mod e5m6;
pub mod fp8;
pub mod scale;

pub use accumulate::{Accumulator, hopper_mma};
pub use fp8::Fp8Format;
pub use scale::{ceil_pow2, scale_for};
