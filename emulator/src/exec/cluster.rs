//! A cluster of CTAs (sm_90): its CTAs run together, interleaved on one host thread, so that
//! they can signal each other; the cluster barrier; and the distributed shared-memory addresses
//! through which one CTA reaches another's shared memory.
//!
//! **Addresses.** A `.shared::cta` address is a byte offset in the CTA's own shared memory, and
//! is also a valid `.shared::cluster` address naming the executing CTA (as in PTX). `mapa` maps
//! an address to CTA rank `r` as `(r + 1) · SHARED_WINDOW_STRIDE + offset`; the generic form of
//! either is that plus `SHARED_WINDOW`.
//!
//! **What reaches another CTA** (the operations DeepGEMM-class kernels use): `mbarrier.arrive`
//! on a remote mbarrier, and TMA / bulk loads whose destination is a remote CTA or that are
//! `.multicast::cluster`. Each is *delivered*: queued in the destination CTA's inbox and applied
//! when that CTA next gets a turn, before its warps run. That is within what PTX allows (a
//! remote arrive is only ordered by its release semantics; a load's bytes and `complete_tx` are
//! observed only through the mbarrier). Plain `ld`/`st`/`atom` on another CTA's shared memory
//! are not implemented and fault, naming the rank.
//!
//! **The cluster barrier** (`barrier.cluster.arrive/wait`) completes a phase when every thread
//! of the cluster that has not exited has arrived.

use std::cell::{Cell, RefCell};

use super::async_copy::{Origin, PendingLoad};
use super::context::{Counters, Launch};
use super::cta::{CtaRun, IDLE_ROUNDS};
use crate::error::EmuError;
use crate::memory::SHARED_WINDOW_STRIDE;

/// The `.shared::cluster` address of shared offset `offset` in CTA rank `rank`.
pub fn cluster_address(rank: u32, offset: u64) -> u64 {
    (u64::from(rank) + 1) * SHARED_WINDOW_STRIDE + offset
}

/// The CTA rank (`None`: the executing CTA) and the shared offset a `.shared::cluster` address
/// names.
pub fn decode_cluster_address(address: u64) -> (Option<u32>, u64) {
    let window = address / SHARED_WINDOW_STRIDE;
    let offset = address % SHARED_WINDOW_STRIDE;
    if window == 0 {
        (None, offset)
    } else {
        (Some((window - 1).min(u64::from(u32::MAX)) as u32), offset)
    }
}

/// Something one CTA does to another's shared memory, applied when the destination next runs.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// An asynchronous load into the destination's shared memory, signalling its mbarrier.
    Load(PendingLoad),
    /// `count` arrivals on the destination's mbarrier at shared offset `mbar`.
    Arrive {
        /// The mbarrier's shared offset.
        mbar: u64,
        /// Arrivals.
        count: u32,
        /// The arriving instruction and thread.
        origin: Origin,
    },
}

/// The state of `barrier.cluster`.
#[derive(Debug, Default)]
struct ClusterBarrier {
    /// Completed phases.
    phase: u64,
    /// Arrivals in the current phase.
    arrived: u32,
    /// Per thread of the cluster (rank-major): the phase it arrived in, until its wait.
    arrival: Vec<Option<u64>>,
}

/// What the CTAs of one cluster share.
#[derive(Debug)]
pub struct Cluster {
    /// CTAs in the cluster.
    pub size: u32,
    /// Threads per CTA.
    threads_per_cta: u32,
    /// Threads of the cluster that have exited.
    exited: Cell<u32>,
    /// Per rank: deliveries not yet applied.
    inbox: Vec<RefCell<Vec<Delivery>>>,
    barrier: RefCell<ClusterBarrier>,
    /// Bumped by every delivery and cluster-barrier change (see `HopperState::version`).
    version: Cell<u64>,
}

/// Why a thread cannot arrive at the cluster barrier.
const ARRIVED_TWICE: &str =
    "barrier.cluster.arrive twice without a barrier.cluster.wait in between";

impl Cluster {
    /// A cluster of `size` CTAs of `threads_per_cta` threads each.
    pub fn new(size: u32, threads_per_cta: u32) -> Cluster {
        Cluster {
            size,
            threads_per_cta,
            exited: Cell::new(0),
            inbox: (0..size).map(|_| RefCell::new(Vec::new())).collect(),
            barrier: RefCell::new(ClusterBarrier {
                arrival: vec![None; (size * threads_per_cta) as usize],
                ..ClusterBarrier::default()
            }),
            version: Cell::new(0),
        }
    }

    /// Changes of shared cluster state so far.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Queues `d` for CTA rank `rank`.
    pub(crate) fn deliver(&self, rank: u32, d: Delivery) {
        self.inbox[rank as usize].borrow_mut().push(d);
        self.bump();
    }

    /// Takes CTA `rank`'s queued deliveries, oldest first.
    pub(crate) fn take_inbox(&self, rank: u32) -> Vec<Delivery> {
        std::mem::take(&mut *self.inbox[rank as usize].borrow_mut())
    }

    fn bump(&self) {
        self.version.set(self.version.get() + 1);
    }

    /// `n` threads exited: the cluster barrier no longer waits for them.
    pub fn exited(&self, n: u32) {
        self.exited.set(self.exited.get() + n);
        self.complete_barrier_phase();
    }

    /// Thread `thread` of CTA `rank` arrives at the cluster barrier.
    pub(crate) fn arrive(&self, rank: u32, thread: u32) -> Result<(), &'static str> {
        {
            let mut b = self.barrier.borrow_mut();
            let t = (rank * self.threads_per_cta + thread) as usize;
            if b.arrival[t].is_some() {
                return Err(ARRIVED_TWICE);
            }
            b.arrival[t] = Some(b.phase);
            b.arrived += 1;
        }
        self.complete_barrier_phase();
        self.bump();
        Ok(())
    }

    fn complete_barrier_phase(&self) {
        let mut b = self.barrier.borrow_mut();
        let live = self.size * self.threads_per_cta - self.exited.get();
        if b.arrived > 0 && b.arrived >= live {
            b.arrived = 0;
            b.phase += 1;
            self.bump();
        }
    }

    /// Whether thread `thread` of CTA `rank` may leave its `barrier.cluster.wait`: `None` if it
    /// has not arrived. A thread that leaves may arrive again.
    pub(crate) fn try_wait(&self, rank: u32, thread: u32) -> Option<bool> {
        let b = self.barrier.borrow();
        let t = (rank * self.threads_per_cta + thread) as usize;
        b.arrival[t].map(|p| p < b.phase)
    }

    /// Thread `thread` of CTA `rank` leaves the barrier.
    pub(crate) fn leave(&self, rank: u32, thread: u32) {
        let t = (rank * self.threads_per_cta + thread) as usize;
        self.barrier.borrow_mut().arrival[t] = None;
    }
}

/// Runs the CTAs of one cluster (in rank order) to completion, interleaved round by round;
/// returns each CTA's counters.
pub fn run_cluster(launch: &Launch, ctas: &[[u32; 3]]) -> Result<Vec<Counters>, EmuError> {
    let threads: u32 = launch.config.block.iter().product();
    let cluster = Cluster::new(ctas.len() as u32, threads);
    let mut runs: Vec<CtaRun> = ctas
        .iter()
        .enumerate()
        .map(|(rank, &cta)| CtaRun::new(launch, &cluster, rank as u32, cta))
        .collect();
    // Rounds in a row in which every warp that ran only polled (see `super::hopper`).
    let mut idle_rounds = 0u32;
    let version = |runs: &[CtaRun]| -> u64 {
        cluster.version() + runs.iter().map(|r| r.ctx.hopper.version).sum::<u64>()
    };
    loop {
        let before = version(&runs);
        let mut progressed = false;
        let mut busy = false;
        for run in &mut runs {
            run.apply_deliveries()?;
            let r = run.round()?;
            progressed |= r.progressed;
            busy |= r.busy;
        }
        if !runs.iter().any(CtaRun::live) {
            for run in &mut runs {
                run.apply_deliveries()?;
            }
            return runs.into_iter().map(CtaRun::finish).collect();
        }
        let stuck = || runs.iter().find(|r| r.live()).expect("a live CTA");
        if !progressed {
            return Err(stuck().deadlock(false));
        }
        if busy || version(&runs) != before {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            if idle_rounds >= IDLE_ROUNDS {
                return Err(stuck().deadlock(true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        assert_eq!(decode_cluster_address(0x40), (None, 0x40));
        assert_eq!(
            decode_cluster_address(cluster_address(0, 0x40)),
            (Some(0), 0x40)
        );
        assert_eq!(decode_cluster_address(cluster_address(1, 8)), (Some(1), 8));
    }

    #[test]
    fn the_barrier_waits_for_every_live_thread() {
        let c = Cluster::new(2, 2);
        c.arrive(0, 0).unwrap();
        c.arrive(0, 1).unwrap();
        c.arrive(1, 0).unwrap();
        assert_eq!(c.try_wait(0, 0), Some(false));
        assert_eq!(c.try_wait(1, 1), None);
        assert_eq!(c.arrive(0, 0), Err(ARRIVED_TWICE));
        c.exited(1);
        assert_eq!(c.try_wait(0, 0), Some(true));
        c.leave(0, 0);
        assert_eq!(c.try_wait(0, 0), None);
    }
}
