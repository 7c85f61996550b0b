//! How the emulator backend runs: the tensor cores' accumulator model and CTA sampling.

use std::num::NonZeroU64;

use dsc_kernels::Accumulator;

/// Options of the emulator backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuOptions {
    /// How emulated tensor-core MMAs sum their products (the CPU reference's models).
    pub accumulator: Accumulator,
    /// Emulate at most this many CTAs of a launch (spread over its grid) and scale its profile
    /// to the whole grid. Only the modeled times are then meaningful: the results are partial
    /// (CTAs not run write nothing). `None` runs every CTA. The MoE dispatch layout always runs
    /// whole: later launches take addresses from it (`launch::UNSAMPLED_SPECS`).
    pub sample_ctas: Option<NonZeroU64>,
}
