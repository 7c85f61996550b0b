//! CPU reference implementations of the high-precision (non-FP8) kernels: everything the
//! DeepSeek-V3 recipe keeps in BF16/FP32 (embedding, output head and other high-precision
//! GEMMs, normalization, RoPE, softmax, attention, MoE routing and combining) and the ops that
//! only move data.
//!
//! Conventions shared by every kernel here:
//! - Operands are row-major `f32` slices with their sizes passed explicitly; BF16/F16 inputs
//!   arrive widened exactly. Results are `f32` (or `i32` indices) and the runtime rounds them to
//!   their storage dtype ([`cast::round_to`]); that final rounding is never done here.
//! - All arithmetic is FP32, as DESIGN.md §3 requires for statistics; f64 is used only where
//!   the reference (Hugging Face `transformers`) computes in Python floats, i.e. the RoPE
//!   correction range and scale factors.
//! - Where Hugging Face rounds an intermediate to the model's dtype (bf16 models), the kernel
//!   takes a [`FloatFormat`] for that intermediate; [`FloatFormat::F32`] means no rounding
//!   (DeepSeek's own inference code, or f32 models).
//! - Sizes that disagree with the slices, or attributes the IR verifier would reject, are
//!   [`OpError`]s, never panics.

pub mod attention;
pub mod cast;
pub mod data_movement;
pub mod elementwise;
pub mod embedding;
pub mod error;
pub mod grad;
pub mod grouped_linear;
pub mod linear;
pub mod moe_combine;
pub mod moe_dispatch;
pub mod moe_topk;
pub mod rms_norm;
pub mod rope;
pub mod softmax;

pub use attention::{
    ATTENTION_KV_TILE, AttentionDims, RopeOperands, ScoreDims, ValueDims, attention,
    attention_fusable, attention_shared_bytes, attn_scores, attn_values, rope_pe_dims,
};
pub use cast::{FloatFormat, round_to};
pub use data_movement::{concat, reshape, slice, transpose};
pub use elementwise::{add, mul, silu, swiglu};
pub use embedding::{EmbeddingDims, embedding};
pub use error::OpError;
pub use grouped_linear::{GroupedDims, GroupedInput, grouped_linear};
pub use linear::{LinearDims, linear, matmul};
pub use moe_combine::{CombineDims, moe_combine};
pub use moe_topk::{Routing, ScoreFunc, TopkDims, TopkParams, moe_topk};
pub use rms_norm::rms_norm;
pub use rope::{RopeParams, RopeScaling, RopeStyle, rope};
pub use softmax::softmax;

/// `Σ f(x)` over `xs` in f32, summed pairwise (in-order blocks of 32 joined as a balanced
/// tree), so the rounding error grows with log n as in torch's reductions, not with n.
pub(crate) fn pairwise_sum(xs: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f32 {
    const BLOCK: usize = 32;
    if xs.len() <= BLOCK {
        let mut acc = 0.0f32;
        for &x in xs {
            acc += f(x);
        }
        acc
    } else {
        let (lo, hi) = xs.split_at(xs.len() / 2);
        pairwise_sum(lo, f) + pairwise_sum(hi, f)
    }
}
