//! The interpreter: a launch's clusters run in parallel on the rayon pool, the CTAs of a
//! cluster together ([`cluster`]); in each CTA the warps are scheduled by [`cta`], and [`step`] executes one instruction for the lanes of a warp
//! that are ready at the same program counter.

pub mod access;
pub mod alu;
pub mod async_copy;
pub mod cluster;
pub mod context;
pub mod convert;
pub mod cta;
pub mod float;
pub mod float_ops;
pub mod hopper;
pub mod mbarrier;
pub mod mma;
pub mod operand;
pub mod step;
pub mod warp;
pub mod wgmma;
pub mod wmma;

use rayon::prelude::*;

use self::context::{Counters, Launch};
use crate::error::EmuError;
use crate::launch::{LaunchConfig, LaunchOptions, ParamValue, TargetLimits};
use crate::memory::GlobalMemory;
use crate::profile::LaunchProfile;
use crate::ptx::decode::Op;
use crate::ptx::{Kernel, Module};

/// Checks the launch against the target's limits and the kernel's declarations.
fn check_launch(
    module: &Module,
    kernel: &Kernel,
    config: &LaunchConfig,
    params: &[ParamValue],
) -> Result<(), EmuError> {
    let fail = |message: String| EmuError::Launch {
        kernel: kernel.name.clone(),
        message,
    };
    let limits = TargetLimits::for_target(&module.target);
    let threads: u64 = config.block.iter().map(|&d| u64::from(d)).product();
    if config.grid.contains(&0) || config.block.contains(&0) || config.cluster.contains(&0) {
        return Err(fail(format!(
            "empty grid {:?}, block {:?} or cluster {:?}",
            config.grid, config.block, config.cluster
        )));
    }
    if threads > u64::from(limits.max_threads_per_block) {
        return Err(fail(format!(
            "block {:?} has {threads} threads; {} allows {}",
            config.block, module.target, limits.max_threads_per_block
        )));
    }
    for i in 0..3 {
        if config.block[i] > limits.max_block[i] || config.grid[i] > limits.max_grid[i] {
            return Err(fail(format!(
                "grid {:?} or block {:?} exceeds {}'s limits (grid {:?}, block {:?})",
                config.grid, config.block, module.target, limits.max_grid, limits.max_block
            )));
        }
        if !config.grid[i].is_multiple_of(config.cluster[i]) {
            return Err(fail(format!(
                "grid {:?} is not a multiple of the cluster {:?}",
                config.grid, config.cluster
            )));
        }
    }
    if let Some(max) = kernel.max_threads {
        let declared: u64 = max.iter().map(|&d| u64::from(d)).product();
        if threads > declared {
            return Err(fail(format!(
                "block {:?} exceeds the kernel's .maxntid/.reqntid {max:?}",
                config.block
            )));
        }
    }
    let cluster: u32 = config.cluster.iter().product();
    if cluster > limits.max_cluster_size {
        return Err(fail(format!(
            "cluster {:?} has {cluster} CTAs; {} allows {}",
            config.cluster, module.target, limits.max_cluster_size
        )));
    }
    let shared = kernel.dynamic_shared_offset + u64::from(config.dynamic_shared_bytes);
    if shared > u64::from(limits.max_shared_bytes) {
        return Err(fail(format!(
            "{shared} bytes of shared memory ({} static + {} dynamic); {} allows {}",
            kernel.shared_static_bytes,
            config.dynamic_shared_bytes,
            module.target,
            limits.max_shared_bytes
        )));
    }
    if params.len() != kernel.params.len() {
        return Err(fail(format!(
            "{} parameters given, the kernel takes {}",
            params.len(),
            kernel.params.len()
        )));
    }
    for (i, (p, v)) in kernel.params.iter().zip(params).enumerate() {
        let given = match v {
            ParamValue::U32(_) | ParamValue::F32(_) => 4,
            ParamValue::U64(_) => 8,
            ParamValue::Bytes(b) => b.len() as u64,
        };
        if given != p.bytes {
            return Err(fail(format!(
                "parameter {i} (`{}`) is {} bytes, {given} given",
                p.name, p.bytes
            )));
        }
    }
    Ok(())
}

/// The parameter buffer: each value at its parameter's offset.
fn param_buffer(kernel: &Kernel, params: &[ParamValue]) -> Vec<u8> {
    let mut buf = vec![0u8; kernel.param_bytes as usize];
    for (p, v) in kernel.params.iter().zip(params) {
        let bytes: Vec<u8> = match v {
            ParamValue::U32(x) => x.to_le_bytes().to_vec(),
            ParamValue::F32(x) => x.to_le_bytes().to_vec(),
            ParamValue::U64(x) => x.to_le_bytes().to_vec(),
            ParamValue::Bytes(b) => b.clone(),
        };
        buf[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
    }
    buf
}

/// The clusters to run, each as its CTAs in rank order: all, or `n` CTAs' worth of whole
/// clusters spread evenly over the grid.
fn clusters(grid: [u32; 3], cluster: [u32; 3], sample: Option<u64>) -> Vec<Vec<[u32; 3]>> {
    let per: [u32; 3] = std::array::from_fn(|i| grid[i] / cluster[i]);
    let size: u64 = cluster.iter().map(|&d| u64::from(d)).product();
    let total = per.iter().map(|&d| u64::from(d)).product::<u64>();
    let ctas_of = |i: u64| -> Vec<[u32; 3]> {
        let c = [
            (i % u64::from(per[0])) as u32,
            ((i / u64::from(per[0])) % u64::from(per[1])) as u32,
            (i / (u64::from(per[0]) * u64::from(per[1]))) as u32,
        ];
        let mut out = Vec::with_capacity(size as usize);
        for z in 0..cluster[2] {
            for y in 0..cluster[1] {
                for x in 0..cluster[0] {
                    out.push([
                        c[0] * cluster[0] + x,
                        c[1] * cluster[1] + y,
                        c[2] * cluster[2] + z,
                    ]);
                }
            }
        }
        out
    };
    let n = sample.map(|n| n.div_ceil(size).max(1));
    match n {
        Some(n) if n < total => (0..n).map(|k| ctas_of(k * total / n)).collect(),
        _ => (0..total).map(ctas_of).collect(),
    }
}

/// A tensor-core instruction: its kind (`mma.m16n8k32.e4m3`, `wgmma.m64n128k32.e4m3`), the
/// warp-instructions per MMA (4 for wgmma: each warp of the warpgroup issues it) and the FLOPs
/// of one MMA.
struct TensorOp {
    kind: String,
    issues_per_op: u64,
    flops_per_op: u64,
}

impl TensorOp {
    /// MMAs in `n` warp-instructions.
    fn ops(&self, n: u64) -> u64 {
        n / self.issues_per_op
    }

    /// FLOPs of `n` warp-instructions.
    fn flops(&self, n: u64) -> u64 {
        self.ops(n) * self.flops_per_op
    }
}

fn tensor_op(inst: &crate::ptx::Inst) -> Option<TensorOp> {
    match &inst.op {
        Op::Mma {
            shape: (m, n, k),
            a,
            ..
        } => Some(TensorOp {
            kind: format!("mma.m{m}n{n}k{k}.{}", a.suffix()),
            issues_per_op: 1,
            flops_per_op: 2 * u64::from(m * n * k),
        }),
        Op::Hopper(crate::ptx::decode_hopper::HopperOp::Wgmma { n, k, a, .. }) => Some(TensorOp {
            kind: format!("wgmma.m64n{n}k{k}.{}", a.suffix()),
            issues_per_op: 4,
            flops_per_op: 2 * 64 * u64::from(n * k),
        }),
        _ => None,
    }
}

/// Runs every CTA of a launch.
pub(crate) fn run_grid(
    module: &Module,
    kernel: &Kernel,
    memory: &GlobalMemory,
    config: &LaunchConfig,
    params: &[ParamValue],
    options: &LaunchOptions,
) -> Result<LaunchProfile, EmuError> {
    check_launch(module, kernel, config, params)?;
    let buffer = param_buffer(kernel, params);
    // Module-scope variables, fresh for each launch (their values do not persist between
    // launches, unlike a CUDA module's).
    let mut module_memory = GlobalMemory::from(crate::memory::MODULE_VARIABLES_BASE);
    let globals: Vec<u64> = module
        .globals
        .iter()
        .map(|g| {
            let a = module_memory.allocate_aligned(g.bytes, g.align.max(1).next_power_of_two());
            module_memory
                .write(a, &g.init)
                .expect("a fresh allocation of the variable's size");
            a
        })
        .collect();
    let launch = Launch {
        module,
        kernel,
        memory,
        params: &buffer,
        config,
        options,
        globals,
        module_memory,
    };
    let list = clusters(config.grid, config.cluster, options.sample_ctas);
    let run = |c: &Vec<[u32; 3]>| cluster::run_cluster(&launch, c);
    let results: Vec<Result<Vec<Counters>, EmuError>> = if options.parallel && list.len() > 1 {
        list.par_iter().map(run).collect()
    } else {
        list.iter().map(run).collect()
    };
    let mut profile = LaunchProfile {
        kernel: kernel.name.clone(),
        ctas_total: config.grid.iter().map(|&d| u64::from(d)).product(),
        threads_per_cta: config.block.iter().map(|&d| u64::from(d)).product(),
        ..LaunchProfile::default()
    };
    let mut per_inst = vec![0u64; kernel.insts.len()];
    let tensor_insts: Vec<(usize, TensorOp)> = kernel
        .insts
        .iter()
        .enumerate()
        .filter_map(|(i, inst)| tensor_op(inst).map(|op| (i, op)))
        .collect();
    // Each CTA's work: its tensor FLOPs, or its warp-instructions without MMAs.
    let mut cta_work: Vec<u64> = Vec::new();
    for c in results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
    {
        for (t, v) in per_inst.iter_mut().zip(&c.per_inst) {
            *t += v;
        }
        cta_work.push(if tensor_insts.is_empty() {
            c.per_inst.iter().sum()
        } else {
            tensor_insts
                .iter()
                .map(|(i, op)| op.flops(c.per_inst[*i]))
                .sum()
        });
        profile.ctas_run += 1;
        profile.thread_instructions += c.threads;
        profile.global_load_sectors += c.load_sectors;
        profile.global_load_bytes += c.load_bytes;
        profile.global_store_sectors += c.store_sectors;
        profile.global_store_bytes += c.store_bytes;
        profile.async_copy_bytes += c.async_bytes;
        profile.shared_requests += c.shared_requests;
        profile.shared_wavefronts += c.shared_wavefronts;
        profile.barrier_waits += c.barrier_waits;
        profile.mbarrier_polls += c.mbarrier_polls;
    }
    for (inst, &n) in kernel.insts.iter().zip(&per_inst) {
        if n == 0 {
            continue;
        }
        profile.warp_instructions += n;
        *profile
            .instruction_mix
            .entry(inst.opcode.clone())
            .or_default() += n;
        if let Some(op) = tensor_op(inst) {
            *profile.tensor_ops.entry(op.kind.clone()).or_default() += op.ops(n);
            *profile.tensor_flops.entry(op.kind.clone()).or_default() += op.flops(n);
        }
    }
    let total_work: u64 = cta_work.iter().sum();
    if let Some(&busiest) = cta_work.iter().max()
        && total_work > 0
    {
        profile.cta_imbalance = busiest as f64 * cta_work.len() as f64 / total_work as f64;
    }
    profile.scale_to_grid();
    Ok(profile)
}
