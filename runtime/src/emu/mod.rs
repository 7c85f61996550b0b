//! The emulator backend: the artifact's own PTX and launch plan run on `dsc-emulator`, a PTX
//! emulator on the CPU, so that GPU code is checked on every machine (DESIGN.md §1, §4). Step
//! times are not measured but modeled: each launch's profile through the emulator's roofline
//! model of a GPU of the artifact's target (`model::device_model`), and labelled modeled wherever
//! they are shown.
//!
//! - `options`: [`EmuOptions`], the accumulator model and CTA sampling.
//! - `memory`: the `MemoryPlan`'s buffers (`crate::memory_plan`) in the emulator's global memory.
//! - `launch`: each manifest step resolved once into an emulator launch.
//! - `model`: which GPU the roofline models ([`EmulatorInfo`]), and a profile as a
//!   [`crate::ModeledTiming`].
//! - [`EmuBackend`]: the [`crate::Backend`] that ties them.

mod backend;
mod launch;
mod memory;
mod model;
mod options;

pub use backend::EmuBackend;
pub use model::EmulatorInfo;
pub use options::EmuOptions;
