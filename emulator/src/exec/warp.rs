//! One warp's state: 32 lanes with their own program counters and states, the register file
//! (lane-minor, so one instruction touches one contiguous row per register), and each lane's
//! local memory.

use super::context::CtaContext;
use crate::error::EmuError;
use crate::ptx::{Inst, Kernel};

/// Lanes per warp.
pub const WARP: usize = 32;

/// Where a lane is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    /// Runs at its pc.
    Ready,
    /// Waits at CTA barrier `n` (its pc is the barrier's).
    AtBarrier(u8),
    /// Waits at a cluster barrier.
    AtClusterBarrier,
    /// Has exited (or does not exist: the last warp of a CTA may be partial).
    Exited,
}

/// One warp.
pub struct Warp {
    /// Warp index in the CTA.
    pub index: u32,
    /// `regs[r * 32 + lane]`.
    pub regs: Vec<u64>,
    /// Each lane's program counter (instruction index).
    pub pc: [u32; WARP],
    /// Each lane's state.
    pub state: [LaneState; WARP],
    /// Local memory, `local_bytes` per lane, lane after lane.
    pub local: Vec<u8>,
    /// Bytes of local memory per lane.
    pub local_bytes: usize,
    /// Linear thread index of lane 0.
    pub first_thread: u32,
}

impl Warp {
    /// A warp of `kernel` whose lanes are threads `first_thread..first_thread + lanes`.
    pub fn new(kernel: &Kernel, index: u32, first_thread: u32, lanes: u32) -> Warp {
        let mut state = [LaneState::Exited; WARP];
        for s in state.iter_mut().take(lanes as usize) {
            *s = LaneState::Ready;
        }
        let local_bytes = kernel.local_bytes as usize;
        Warp {
            index,
            regs: vec![0; kernel.reg_names.len() * WARP],
            pc: [0; WARP],
            state,
            local: vec![0; local_bytes * WARP],
            local_bytes,
            first_thread,
        }
    }

    /// Lanes that have not exited.
    pub fn live_mask(&self) -> u32 {
        let mut m = 0;
        for (l, s) in self.state.iter().enumerate() {
            if *s != LaneState::Exited {
                m |= 1 << l;
            }
        }
        m
    }

    /// The lanes to run next: those ready at the lowest pc (divergent paths run one after the
    /// other and reconverge where their pcs meet). `None` when no lane is ready.
    pub fn next_group(&self) -> Option<(u32, u32)> {
        let mut min = u32::MAX;
        let mut mask = 0u32;
        for l in 0..WARP {
            if self.state[l] != LaneState::Ready {
                continue;
            }
            let pc = self.pc[l];
            if pc < min {
                min = pc;
                mask = 1 << l;
            } else if pc == min {
                mask |= 1 << l;
            }
        }
        (mask != 0).then_some((min, mask))
    }

    /// Register `r` of `lane`.
    #[inline(always)]
    pub fn reg(&self, r: u32, lane: usize) -> u64 {
        self.regs[r as usize * WARP + lane]
    }

    /// Sets register `r` of `lane`.
    #[inline(always)]
    pub fn set_reg(&mut self, r: u32, lane: usize, v: u64) {
        self.regs[r as usize * WARP + lane] = v;
    }
}

/// Iterates the set lanes of a mask.
#[inline(always)]
pub fn lanes(mask: u32) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(l)
        }
    })
}

/// A warp-wide (`.sync.aligned`) instruction needs all 32 lanes: the error names the first
/// lane that did not take part.
pub fn full_warp(ctx: &CtaContext, warp: &Warp, inst: &Inst, exec: u32) -> Result<(), EmuError> {
    if exec != u32::MAX {
        let lane = (!exec).trailing_zeros() as usize;
        return Err(ctx.fault(
            inst,
            warp.first_thread,
            lane,
            format!(
                "{} needs all 32 lanes of the warp converged; this lane did not take part",
                inst.opcode
            ),
        ));
    }
    Ok(())
}
