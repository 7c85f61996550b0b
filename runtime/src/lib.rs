//! dsc's embedded runtime: loads an artifact ([`Artifact`]: `manifest.json`, `graph.dsc`,
//! `kernels.ptx`), its weights (safetensors) and inputs, and runs it in a [`Session`] on a CUDA
//! device (through cudarc), on the PTX emulator (`dsc-emulator`: the same PTX and launch plan
//! on the CPU, times modeled) or on the CPU backend (the kernels' reference implementations).
//!
//! It never depends on `dsc-codegen` or MLIR: a machine that only runs artifacts needs neither.
//! CUDA is loaded dynamically; [`cuda::probe`] tells whether a driver and devices are present.

pub mod artifact;
pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod emu;
pub mod error;
pub mod host_memory;
pub mod inputs;
mod memory_plan;
pub mod quantize_checkpoint;
pub mod random_weights;
pub mod session;
pub mod step_check;
pub mod step_profile;
pub mod tensor;
pub mod tensor_maps;
#[cfg(test)]
mod testutil;
pub mod train;
pub mod train_check;
pub mod weights;

pub use artifact::Artifact;
pub use backend::{Backend, ModeledTiming, StepPhase, StepTiming};
pub use checkpoint::{Checkpoint, TensorView};
pub use cuda::{DeviceInfo, probe};
pub use device::{Device, DeviceChoice, ResolvedDevice};
pub use emu::{EmuBackend, EmuOptions, EmulatorInfo};
pub use error::{RuntimeError, WeightProblems};
pub use random_weights::random_weights;
pub use session::{Session, SessionOptions};
pub use tensor::{HostData, HostTensor, write_safetensors};
pub use weights::{Weights, beyond_last_layer, hf_tensors, load_weights, save_safetensors};
