//! dsc's embedded runtime: loads an artifact (`manifest.json` + `kernels.ptx`), its weights
//! (safetensors) and inputs, and runs the launch steps on a CUDA device (through cudarc) or on
//! the CPU backend (the kernels' reference implementations).
//!
//! It never depends on `dsc-codegen` or MLIR: a machine that only runs artifacts needs neither.
//! CUDA is loaded dynamically; [`cuda::probe`] tells whether a driver and devices are present.

pub mod cuda;
pub mod error;

pub use cuda::{DeviceInfo, probe};
pub use error::RuntimeError;
