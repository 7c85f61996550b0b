//! dsc's passes: the pass manager and every graph-to-graph transformation.
//!
//! A pass is `fn(&mut Graph, &PassOptions) -> Result<(), PassError>` with a name usable in a
//! pipeline string (`verify,assign-precision,cse,dce`); the manager runs the verifier after
//! each pass in tests and debug builds.

pub mod assign_precision;
pub mod autodiff;
pub mod cache_swiglu_inputs;
pub mod cse;
pub mod dce;
mod error;
pub mod fold_slices;
pub mod fold_weights;
pub mod fold_widening_casts;
pub mod fuse;
pub mod fuse_attention;
pub mod fuse_attention_quant;
pub mod fuse_residual_norm;
pub mod infer_shapes;
pub mod manager;
mod names;
pub mod quantize_linears;
pub mod recompute;
pub mod requantize_transposed;
pub mod train_memory;
pub mod train_step;
pub mod verify_pass;

pub use error::PassError;
pub use manager::{DEFAULT_PIPELINE, PASSES, Pass, PassOptions, PassTiming, Pipeline, find_pass};
