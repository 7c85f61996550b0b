//! What a launch did, counted while it ran: the inputs of the roofline model
//! ([`crate::roofline`]). Counts are per warp-instruction unless named otherwise; with CTA
//! sampling they are scaled to the whole grid.

use std::collections::BTreeMap;

use serde::Serialize;

/// The counters of one launch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LaunchProfile {
    /// The kernel entry.
    pub kernel: String,
    /// CTAs in the grid.
    pub ctas_total: u64,
    /// CTAs actually emulated (fewer than `ctas_total` when sampling).
    pub ctas_run: u64,
    /// Threads per CTA.
    pub threads_per_cta: u64,
    /// Warp-instructions issued, by opcode (`ld.global`, `mma.sync`, `fma.rn.f32`, …).
    pub instruction_mix: BTreeMap<String, u64>,
    /// Warp-instructions issued in all.
    pub warp_instructions: u64,
    /// Thread-instructions (active lanes summed).
    pub thread_instructions: u64,
    /// Global loads: 32-byte sectors touched per warp-instruction, summed.
    pub global_load_sectors: u64,
    /// Global loads: bytes the threads asked for.
    pub global_load_bytes: u64,
    /// Global stores: 32-byte sectors touched.
    pub global_store_sectors: u64,
    /// Global stores: bytes written.
    pub global_store_bytes: u64,
    /// Bulk/TMA/cp.async bytes moved from global to shared memory.
    pub async_copy_bytes: u64,
    /// Shared-memory accesses (warp-instructions).
    pub shared_requests: u64,
    /// Shared-memory wavefronts (1 per request without bank conflicts).
    pub shared_wavefronts: u64,
    /// Tensor-core operations by kind (`mma.m16n8k32.e4m3`, `wgmma.m64n128k32.e4m3`, …): count
    /// of warp-level (mma.sync) or warpgroup-level (wgmma) instructions.
    pub tensor_ops: BTreeMap<String, u64>,
    /// Tensor-core FLOPs (2·M·N·K per op) by kind.
    pub tensor_flops: BTreeMap<String, u64>,
    /// Times a warp waited at a CTA barrier (`bar.sync`, `barrier.cluster`).
    pub barrier_waits: u64,
    /// Failed `mbarrier.try_wait`/`test_wait` polls.
    pub mbarrier_polls: u64,
    /// The busiest emulated CTA's work over the mean CTA's (tensor-core FLOPs, or
    /// warp-instructions in a kernel without MMAs): 1 when every CTA does the same, more when a
    /// persistent grid's CTAs take unequal numbers of tiles (0: not measured).
    pub cta_imbalance: f64,
}

impl LaunchProfile {
    /// Adds `other`'s counters into `self` (CTA-level profiles into the launch's).
    pub fn merge(&mut self, other: &LaunchProfile) {
        for (k, v) in &other.instruction_mix {
            *self.instruction_mix.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.tensor_ops {
            *self.tensor_ops.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.tensor_flops {
            *self.tensor_flops.entry(k.clone()).or_default() += v;
        }
        self.ctas_run += other.ctas_run;
        self.warp_instructions += other.warp_instructions;
        self.thread_instructions += other.thread_instructions;
        self.global_load_sectors += other.global_load_sectors;
        self.global_load_bytes += other.global_load_bytes;
        self.global_store_sectors += other.global_store_sectors;
        self.global_store_bytes += other.global_store_bytes;
        self.async_copy_bytes += other.async_copy_bytes;
        self.shared_requests += other.shared_requests;
        self.shared_wavefronts += other.shared_wavefronts;
        self.barrier_waits += other.barrier_waits;
        self.mbarrier_polls += other.mbarrier_polls;
        self.cta_imbalance = self.cta_imbalance.max(other.cta_imbalance);
    }

    /// Scales every counter by `ctas_total / ctas_run` (CTA sampling), rounding.
    pub fn scale_to_grid(&mut self) {
        if self.ctas_run == 0 || self.ctas_run == self.ctas_total {
            return;
        }
        let f = self.ctas_total as f64 / self.ctas_run as f64;
        let s = |v: &mut u64| *v = (*v as f64 * f).round() as u64;
        for v in self.instruction_mix.values_mut() {
            s(v);
        }
        for v in self.tensor_ops.values_mut() {
            s(v);
        }
        for v in self.tensor_flops.values_mut() {
            s(v);
        }
        for v in [
            &mut self.warp_instructions,
            &mut self.thread_instructions,
            &mut self.global_load_sectors,
            &mut self.global_load_bytes,
            &mut self.global_store_sectors,
            &mut self.global_store_bytes,
            &mut self.async_copy_bytes,
            &mut self.shared_requests,
            &mut self.shared_wavefronts,
            &mut self.barrier_waits,
            &mut self.mbarrier_polls,
        ] {
            s(v);
        }
    }

    /// Total tensor-core FLOPs.
    pub fn total_tensor_flops(&self) -> u64 {
        self.tensor_flops.values().sum()
    }
}
