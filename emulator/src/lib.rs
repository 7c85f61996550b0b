//! dsc's PTX emulator: parses the PTX dsc emits and executes its kernels on the CPU with the
//! semantics of the PTX ISA, so that GPU code is verified on every machine (DESIGN.md §4).
//!
//! - [`ptx`]: the PTX text parsed into a [`ptx::Module`] of kernels and decoded instructions.
//! - [`memory::GlobalMemory`]: device buffers at device addresses.
//! - [`launch::launch`]: runs one kernel over a grid; CTAs run in parallel on host threads, the
//!   threads of a CTA as warps with per-thread program counters.
//! - [`profile::LaunchProfile`]: what a launch did (instruction mix, sectors, bank conflicts,
//!   tensor-core operations, barrier waits); [`roofline`] turns it into a modeled time.
//!
//! An instruction the emulator does not implement is an error naming it and its PTX line,
//! never a guess; faults name the kernel, the line, the thread and the address.

pub mod deepgemm;
pub mod error;
pub mod exec;
pub mod launch;
pub mod launch_file;
pub mod memory;
pub mod profile;
pub mod ptx;
pub mod roofline;
pub mod tensor_map;

pub use error::{EmuError, ThreadId};
pub use launch::{LaunchConfig, LaunchOptions, ParamValue, TargetLimits, launch};
pub use memory::GlobalMemory;
pub use profile::LaunchProfile;
pub use ptx::Module;
