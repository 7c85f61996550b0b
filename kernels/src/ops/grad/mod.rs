//! CPU reference implementations of the backward (gradient) ops of training (DESIGN.md §8):
//! the vector–Jacobian products of the forward kernels in [`crate::ops`], the loss, the
//! reductions autodiff needs to undo broadcasts, and the AdamW update with gradient clipping.
//!
//! Conventions are those of [`crate::ops`]: row-major `f32` slices with sizes passed
//! explicitly, `f32` results, FP32 arithmetic (f64 only for the Python-float scalars of
//! `torch.optim.AdamW` and the global gradient norm), sizes that disagree are [`OpError`]s.
//! Every result is deterministic: rayon splits work only where each output element is computed
//! by one task in a fixed order, and reductions follow `crate::ops::pairwise_sum`'s tree.
//!
//! These are the backward rules in FP32, without the intermediate roundings the forward
//! kernels take a [`crate::ops::FloatFormat`] for: the recipe keeps backward statistics in
//! FP32 and recomputes SwiGLU and RMSNorm there.
//!
//! [`OpError`]: crate::ops::error::OpError

pub mod adamw;
pub mod balance_loss;
pub mod cross_entropy;
pub mod elementwise_grad;
pub mod embedding_grad;
pub mod moe;
pub mod pad;
pub mod reduce;
pub mod rms_norm_grad;
pub mod rope_grad;
pub mod softmax_grad;

pub use adamw::{AdamW, adamw, clip_scale, global_norm};
pub use balance_loss::{Balance, balance_loss, balance_loss_grad};
pub use cross_entropy::{cross_entropy, cross_entropy_grad};
pub use elementwise_grad::{scale, silu_grad, swiglu_grad};
pub use embedding_grad::embedding_grad;
pub use moe::{
    GroupedWgradFp8, RouteWeights, expert_bias_update, grouped_linear_wgrad,
    grouped_linear_wgrad_fp8, moe_combine_grad, moe_topk_grad,
};
pub use pad::pad;
pub use reduce::sum_axis;
pub use rms_norm_grad::rms_norm_grad;
pub use rope_grad::rope_grad;
pub use softmax_grad::softmax_grad;
