//! The CUDA backend (cudarc, driver loaded at run time): the driver probe, the target check,
//! the PTX module, device memory, the launch plan and the [`CudaBackend`] that ties them.
//!
//! cudarc loads `libcuda` lazily and panics when it is absent, so every path into the driver
//! goes through [`probe`] (or [`driver_present`]) first.

mod backend;
mod launch;
mod memory;
mod module;
mod probe;
mod target;

/// Re-exported where it was first defined; it is backend-neutral ([`crate::backend`]).
pub use crate::backend::StepPhase;
pub use backend::CudaBackend;
pub use probe::{DeviceInfo, driver_present, probe};
pub use target::check_target;
