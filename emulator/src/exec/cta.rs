//! One CTA: its warps scheduled round-robin (each runs until it blocks, yields or uses its
//! time slice), CTA barriers, and deadlock and step-budget detection. The rounds are driven by
//! [`super::cluster::run_cluster`], which interleaves the CTAs of a cluster.

use super::cluster::{Cluster, Delivery};
use super::context::{Counters, CtaContext, Launch};
use super::step::{Outcome, step};
use super::warp::{LaneState, WARP, Warp, lanes};
use crate::error::EmuError;
use crate::ptx::decode::Op;

/// Warp-instructions a warp runs before the next warp gets a turn.
const TIME_SLICE: u32 = 4096;

/// Scheduler rounds in a row in which every warp that ran ended its turn with a failed poll
/// (`Outcome::Yield`), wrote no memory, arrived at no barrier and changed no asynchronous state,
/// after which the CTA is reported as deadlocked (a few rounds, not one, so that a spin loop
/// with a short retry count is not misreported).
pub(super) const IDLE_ROUNDS: u32 = 64;

/// Instructions whose execution is progress even inside a polling loop.
fn writes_memory(op: &Op) -> bool {
    matches!(
        op,
        Op::St { .. } | Op::Atom { .. } | Op::Red { .. } | Op::Stmatrix { .. } | Op::Exit
    )
}

/// A CTA barrier's state.
#[derive(Debug, Clone, Copy, Default)]
struct Barrier {
    /// Threads arrived in the current phase.
    arrived: u32,
    /// Threads expected (`None`: every thread of the CTA that has not exited).
    expected: Option<u32>,
}

impl Barrier {
    /// `mask`'s lanes arrive expecting `count` threads; fails when other threads arrived in
    /// this phase expecting another count.
    fn arrive(&mut self, count: Option<u32>, mask: u32) -> Result<(), String> {
        if let (Some(old), Some(new)) = (self.expected, count)
            && self.arrived > 0
            && old != new
        {
            return Err(format!(
                "expects {new} threads here but {old} where other threads arrived"
            ));
        }
        self.arrived += mask.count_ones();
        self.expected = count;
        Ok(())
    }
}

/// One CTA being run: its context, warps and barriers.
pub struct CtaRun<'a> {
    /// The CTA's view.
    pub ctx: CtaContext<'a>,
    warps: Vec<Warp>,
    barriers: [Barrier; 16],
    /// Per warp: the pc of its failed poll in the last round.
    polling: Vec<Option<u32>>,
    /// Warp-instructions executed.
    executed: u64,
}

/// What one scheduler round of a CTA did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// Some warp executed an instruction (a failed poll included) or a lane exited.
    pub progressed: bool,
    /// Some warp did more than poll: wrote memory, arrived at a barrier, or ran without polling.
    pub busy: bool,
}

impl<'a> CtaRun<'a> {
    /// CTA `cta`, rank `rank` of `cluster`, ready to start.
    pub fn new(launch: &'a Launch<'a>, cluster: &'a Cluster, rank: u32, cta: [u32; 3]) -> Self {
        let kernel = launch.kernel;
        let config = launch.config;
        let threads: u32 = config.block.iter().product();
        let shared_bytes = kernel.dynamic_shared_offset + u64::from(config.dynamic_shared_bytes);
        let warps: Vec<Warp> = (0..threads.div_ceil(WARP as u32))
            .map(|w| {
                let first = w * WARP as u32;
                Warp::new(kernel, w, first, (threads - first).min(WARP as u32))
            })
            .collect();
        CtaRun {
            ctx: CtaContext {
                launch,
                cta,
                rank,
                cluster,
                shared: vec![0; shared_bytes as usize],
                counters: Counters {
                    per_inst: vec![0; kernel.insts.len()],
                    ..Counters::default()
                },
                hopper: Default::default(),
            },
            polling: vec![None; warps.len()],
            warps,
            barriers: [Barrier::default(); 16],
            executed: 0,
        }
    }

    /// Whether some thread has not exited.
    pub fn live(&self) -> bool {
        self.warps.iter().any(|w| w.live_mask() != 0)
    }

    /// Applies what other CTAs of the cluster delivered since the last turn.
    pub fn apply_deliveries(&mut self) -> Result<(), EmuError> {
        let ctx = &mut self.ctx;
        for d in ctx.cluster.take_inbox(ctx.rank) {
            match d {
                Delivery::Arrive {
                    mbar,
                    count,
                    origin,
                } => super::mbarrier::remote_arrive(ctx, mbar, count, &origin)?,
                Delivery::Load(p) => {
                    super::mbarrier::remote_initialized(ctx, p.mbar, &p.origin)?;
                    ctx.hopper.pending_loads.push(p);
                    ctx.hopper.version += 1;
                }
            }
        }
        Ok(())
    }

    /// One scheduler round: each warp runs until it blocks, yields or uses its time slice.
    pub fn round(&mut self) -> Result<Round, EmuError> {
        let kernel = self.ctx.launch.kernel;
        let budget = self.ctx.launch.options.step_budget;
        let warps = &mut self.warps;
        let barriers = &mut self.barriers;
        let ctx = &mut self.ctx;
        let mut round = Round::default();
        for w in 0..warps.len() {
            let mut ran = false;
            self.polling[w] = None;
            for _ in 0..TIME_SLICE {
                let Some((pc, mask)) = warps[w].next_group() else {
                    break;
                };
                if pc as usize >= kernel.insts.len() {
                    // Falling off the end of the body is a return.
                    for l in lanes(mask) {
                        warps[w].state[l] = LaneState::Exited;
                    }
                    ctx.cluster.exited(mask.count_ones());
                    release_ready(warps, barriers);
                    round.progressed = true;
                    continue;
                }
                self.executed += 1;
                if self.executed > budget {
                    return Err(EmuError::StepBudget {
                        kernel: kernel.name.clone(),
                        cta: ctx.cta,
                        budget,
                        line: kernel.insts[pc as usize].line as usize,
                    });
                }
                round.progressed = true;
                ran = true;
                round.busy |= writes_memory(&kernel.insts[pc as usize].op);
                let live_before = warps[w].live_mask();
                match step(ctx, &mut warps[w], pc, mask)? {
                    Outcome::Continue => {
                        if matches!(kernel.insts[pc as usize].op, Op::Exit) {
                            let gone = live_before & !warps[w].live_mask();
                            ctx.cluster.exited(gone.count_ones());
                            release_ready(warps, barriers);
                        }
                    }
                    Outcome::Yield => {
                        self.polling[w] = Some(pc);
                        break;
                    }
                    Outcome::Barrier {
                        id,
                        count,
                        mask,
                        wait,
                    } => {
                        if let Err(why) = barriers[id as usize].arrive(count, mask) {
                            let inst = &kernel.insts[pc as usize];
                            let lane = mask.trailing_zeros() as usize;
                            let why = format!("barrier {id} {why}");
                            return Err(ctx.fault(inst, warps[w].first_thread, lane, why));
                        }
                        round.busy = true;
                        if wait {
                            for l in lanes(mask) {
                                warps[w].state[l] = LaneState::AtBarrier(id);
                            }
                            ctx.counters.barrier_waits += 1;
                        }
                        release_ready(warps, barriers);
                        if wait {
                            break;
                        }
                    }
                }
            }
            round.busy |= ran && self.polling[w].is_none();
        }
        Ok(round)
    }

    /// Runs what is still in flight and returns the counters (every thread has exited).
    pub fn finish(mut self) -> Result<Counters, EmuError> {
        super::hopper::finish(&mut self.ctx)?;
        Ok(self.ctx.counters)
    }

    /// The error for a CTA that can make no progress: its barrier waiters, or (`polls_only`)
    /// its warps that only poll.
    pub fn deadlock(&self, polls_only: bool) -> EmuError {
        if polls_only {
            poll_deadlock(&self.ctx, &self.warps, &self.polling)
        } else {
            deadlock(&self.ctx, &self.warps)
        }
    }
}

/// Completes every barrier whose expected arrivals are in, releasing its waiters.
fn release_ready(warps: &mut [Warp], barriers: &mut [Barrier; 16]) {
    let live: u32 = warps.iter().map(|w| w.live_mask().count_ones()).sum();
    for (id, b) in barriers.iter_mut().enumerate() {
        if b.arrived == 0 {
            continue;
        }
        let expected = b.expected.unwrap_or(live);
        if b.arrived >= expected {
            *b = Barrier::default();
            for w in warps.iter_mut() {
                for l in 0..WARP {
                    if w.state[l] == LaneState::AtBarrier(id as u8) {
                        w.state[l] = LaneState::Ready;
                    }
                }
            }
        }
    }
}

/// Every live warp only polls mbarriers (or waits for wgmmas or the cluster barrier) that
/// nothing can complete.
fn poll_deadlock(ctx: &CtaContext, warps: &[Warp], polling: &[Option<u32>]) -> EmuError {
    let kernel = ctx.launch.kernel;
    let mut waits: Vec<String> = Vec::new();
    for (w, p) in warps.iter().zip(polling) {
        if let Some(pc) = p {
            waits.push(format!(
                "warp {} polls at PTX line {} (`{}`)",
                w.index, kernel.insts[*pc as usize].line, kernel.insts[*pc as usize].opcode
            ));
        }
    }
    EmuError::Deadlock {
        kernel: kernel.name.clone(),
        cta: ctx.cta,
        message: format!(
            "every live warp only polls for something no thread or copy in flight can complete: {}",
            waits.join("; ")
        ),
    }
}

fn deadlock(ctx: &CtaContext, warps: &[Warp]) -> EmuError {
    let kernel = ctx.launch.kernel;
    let mut waits: Vec<String> = Vec::new();
    for w in warps {
        for l in 0..WARP {
            if let LaneState::AtBarrier(id) = w.state[l] {
                let line = kernel.insts[w.pc[l] as usize - 1].line;
                waits.push(format!(
                    "warp {} lane {l} at barrier {id} (PTX line {line})",
                    w.index
                ));
                break;
            }
        }
    }
    let exited: u32 = warps
        .iter()
        .map(|w| WARP as u32 - w.live_mask().count_ones())
        .sum();
    EmuError::Deadlock {
        kernel: kernel.name.clone(),
        cta: ctx.cta,
        message: format!(
            "every live thread waits and none can release it: {}{}",
            waits.join("; "),
            if exited > 0 {
                format!(" ({exited} lanes exited)")
            } else {
                String::new()
            }
        ),
    }
}
