//! A kernel launch: the entry, grid, block, cluster, dynamic shared memory and parameter
//! values, checked against the target's limits before anything runs.

use dsc_kernels::Accumulator;

use crate::error::EmuError;
use crate::exec;
use crate::memory::GlobalMemory;
use crate::profile::LaunchProfile;
use crate::ptx::Module;

/// Grid, block and cluster shape and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// CTAs per grid dimension.
    pub grid: [u32; 3],
    /// Threads per CTA dimension.
    pub block: [u32; 3],
    /// CTAs per cluster dimension (`[1, 1, 1]`: no clusters).
    pub cluster: [u32; 3],
    /// Bytes of dynamic (`.extern .shared`) shared memory.
    pub dynamic_shared_bytes: u32,
}

impl LaunchConfig {
    /// A launch of `grid` × `block` without clusters or dynamic shared memory.
    pub fn new(grid: [u32; 3], block: [u32; 3]) -> Self {
        LaunchConfig {
            grid,
            block,
            cluster: [1, 1, 1],
            dynamic_shared_bytes: 0,
        }
    }
}

/// One kernel parameter's value, in the entry's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A 32-bit integer (`.u32`, `.s32`, `.b32`).
    U32(u32),
    /// A 64-bit integer or a device pointer (`.u64`, `.b64`).
    U64(u64),
    /// A 32-bit float.
    F32(f32),
    /// Raw bytes: a `.param .align N .b8 name[len]` aggregate such as a 128-byte
    /// `__grid_constant__` tensor map (see [`crate::tensor_map`]).
    Bytes(Vec<u8>),
}

/// How a launch is emulated.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOptions {
    /// Warp-instructions one CTA may execute before the launch fails as hung.
    pub step_budget: u64,
    /// How tensor-core MMAs sum their products (the CPU reference's models).
    pub accumulator: Accumulator,
    /// Run only this many CTAs (whole clusters, spread evenly over the grid) and scale the
    /// profile; `None` runs them all. Results in memory are then partial: for profiling only.
    pub sample_ctas: Option<u64>,
    /// Run CTAs in parallel on the rayon pool.
    pub parallel: bool,
}

/// Default warp-instructions per CTA before a launch counts as hung.
const DEFAULT_STEP_BUDGET: u64 = 2_000_000_000;

impl Default for LaunchOptions {
    fn default() -> Self {
        let step_budget = std::env::var("DSC_EMU_STEP_BUDGET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_STEP_BUDGET);
        LaunchOptions {
            step_budget,
            accumulator: Accumulator::Exact,
            sample_ctas: None,
            parallel: true,
        }
    }
}

/// Limits of the emulated target (those of sm_89 and sm_90a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLimits {
    /// Threads per CTA.
    pub max_threads_per_block: u32,
    /// Block dimensions.
    pub max_block: [u32; 3],
    /// Grid dimensions.
    pub max_grid: [u32; 3],
    /// Shared memory per CTA, static plus dynamic, in bytes (opt-in maximum).
    pub max_shared_bytes: u32,
    /// CTAs per cluster.
    pub max_cluster_size: u32,
}

impl TargetLimits {
    /// The limits of a PTX `.target` (`sm_90a`, `sm_90`, `sm_89`, …).
    pub fn for_target(target: &str) -> TargetLimits {
        let hopper = target.starts_with("sm_90");
        TargetLimits {
            max_threads_per_block: 1024,
            max_block: [1024, 1024, 64],
            max_grid: [u32::MAX >> 1, 65535, 65535],
            max_shared_bytes: if hopper { 227 * 1024 } else { 99 * 1024 },
            max_cluster_size: if hopper { 8 } else { 1 },
        }
    }
}

/// Runs `entry` of `module` over `memory` and returns its profile. Errors name the kernel, the
/// PTX line, the thread and the cause.
pub fn launch(
    module: &Module,
    entry: &str,
    memory: &GlobalMemory,
    config: &LaunchConfig,
    params: &[ParamValue],
    options: &LaunchOptions,
) -> Result<LaunchProfile, EmuError> {
    let kernel = module
        .kernel(entry)
        .ok_or_else(|| EmuError::NoSuchKernel(entry.to_string()))?;
    exec::run_grid(module, kernel, memory, config, params, options)
}
