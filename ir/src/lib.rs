//! dsc's graph IR: dtypes, shapes, ops, the `Graph`, its builder, text format, verifier, and
//! the `model.toml` schema with preset expansion.

pub mod atomic_write;
pub mod attr;
pub mod builder;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod located;
pub mod model;
pub mod op;
pub mod operands;
pub mod param_names;
pub mod policy;
pub mod role;
pub mod rope_scaling;
pub mod shape;
pub mod text;
pub mod verify;

pub use attr::{Attr, AttrType, Attrs};
pub use builder::{BuildError, GraphBuilder};
pub use dtype::DType;
pub use graph::{Graph, ValueData, ValueDef, ValueId};
pub use located::LocatedError;
pub use model::{
    ActGradScaling, Recipe, Recompute, TensorFormats, TrainConfig, WgradSource, load_model,
    load_train_config,
};
pub use op::{Op, OpKind, Precision};
pub use operands::{OperandError, OperandLayout};
pub use policy::{PrecisionOverride, PrecisionPolicy, ScaleFormat};
pub use role::Role;
pub use shape::{Shape, TensorType};
pub use verify::{VerifyError, VerifyErrors, verify};
