//! Hopper's asynchronous machinery in one CTA: the per-CTA state of mbarrier-tracked copies,
//! per-thread `cp.async` and bulk async-groups (`AsyncGroups`, also used for wgmma's commit
//! groups), warpgroup MMAs and the cluster barrier, and the dispatch of every [`HopperOp`].
//!
//! **Implemented** (decoded by [`crate::ptx::decode_hopper`]):
//! - In [`super::mbarrier`]: `mbarrier.init/inval/arrive[_drop][.expect_tx][.noComplete]/
//!   expect_tx/complete_tx/test_wait/try_wait[.parity]`.
//! - In [`super::async_copy`]: `cp.async` with its `commit_group`/`wait_group`/`wait_all` and
//!   `cp.async.mbarrier.arrive[.noinc]`; `cp.async.bulk[.tensor]` loads (1–5-d tile TMA,
//!   `.multicast::cluster`, `.L2::cache_hint`) and stores with `cp.async.bulk.commit_group` /
//!   `wait_group[.read]`.
//! - In [`super::wgmma`]: `wgmma.mma_async`, `fence`, `commit_group`, `wait_group`.
//! - Here: `elect.sync` (the lowest lane of the membermask leads), `bar.warp.sync` (membermask
//!   checked), `setmaxnreg` (operand checked; register budgets are not modeled), `mapa`
//!   (see [`super::cluster`]), `barrier.cluster.arrive/wait` (every live thread of the cluster).
//! - No-ops: `griddepcontrol`, `prefetch`, `fence.proxy.tensormap`, `wgmma.fence`.
//!
//! Clusters of several CTAs run together ([`super::cluster`]): remote mbarrier arrivals and
//! TMA / bulk loads into another CTA (multicast included) are delivered to it.
//! Not implemented, an error rather than a guess: im2col TMA, `cp.async`'s `ignore-src`
//! predicate, the non-tensor bulk store's cache hint, a matrix descriptor's base offset.
//!
//! **When asynchronous work happens** (deferred as late as PTX allows, to expose kernels that
//! read too early). Everything an instruction can check at issue (addresses, alignment, sizes,
//! an initialized mbarrier, the tensor map) is checked at issue; an error of the deferred work
//! itself names the issuing instruction and thread.
//! - `cp.async` copies run when a `cp.async.wait_group`/`wait_all` retires their group, when
//!   the thread's `cp.async.mbarrier.arrive` executes, or when the CTA ends.
//! - TMA / bulk loads (`cp.async.bulk[.tensor]` into shared memory) land, and signal their
//!   mbarrier's `complete_tx`, when a thread polls that mbarrier (`test_wait`/`try_wait`), or
//!   when the CTA ends. Shared memory is untouched until then.
//! - TMA / bulk stores run when `cp.async.bulk.wait_group[.read]` retires their bulk group, or
//!   when the CTA ends (global memory is not written before).
//! - `wgmma.mma_async` is computed when a warp of the warpgroup waits for it
//!   (`wgmma.wait_group`) and all four warps have issued it, reading shared memory then; its
//!   accumulator registers are written at that wait, never before.
//! - `mbarrier.init` ends the warp's turn, so every warp's init runs before any warp's first
//!   arrival (see `mbarrier::init`).
//!
//! A failed poll (`mbarrier.try_wait`/`test_wait` false for every lane, a `wgmma.wait_group`
//! whose MMAs are not issued by the whole warpgroup yet, a `barrier.cluster.wait` not yet
//! complete) returns [`Outcome::Yield`], so other warps run; `HopperState::version` counts
//! every change of asynchronous state, which the scheduler uses to report a CTA whose live warps
//! only poll as a deadlock.

use std::collections::VecDeque;

use super::access::Place;
use super::async_copy::{BulkOp, Copy, PendingLoad};
use super::context::CtaContext;
use super::operand::write;
use super::step::Outcome;
use super::warp::{Warp, lanes};
use super::wgmma::{WarpWgmma, WarpgroupWgmma};
use crate::error::EmuError;
use crate::ptx::decode_hopper::HopperOp;
use crate::ptx::{Inst, Operand, Space, Ty};

/// Generic-address window of the kernel parameters (`cvta.param`): a `__grid_constant__`
/// parameter such as a tensor map is read through it.
pub const PARAM_WINDOW: u64 = 0x3000_0000_0000;

/// Bytes of the parameter window.
pub const PARAM_WINDOW_BYTES: u64 = 1 << 32;

/// Operations tracked by async-groups (`cp.async`, bulk copies, wgmma): those not yet
/// committed, and the committed groups, oldest first.
#[derive(Debug)]
pub(crate) struct AsyncGroups<T> {
    uncommitted: Vec<T>,
    committed: VecDeque<Vec<T>>,
}

impl<T> Default for AsyncGroups<T> {
    fn default() -> Self {
        AsyncGroups {
            uncommitted: Vec::new(),
            committed: VecDeque::new(),
        }
    }
}

impl<T> AsyncGroups<T> {
    /// Adds an operation to the uncommitted ones.
    pub(crate) fn push(&mut self, op: T) {
        self.uncommitted.push(op);
    }

    /// `commit_group`: the uncommitted operations become the newest group (possibly empty).
    pub(crate) fn commit(&mut self) {
        let g = std::mem::take(&mut self.uncommitted);
        self.committed.push_back(g);
    }

    /// The oldest group, if more than `n` are committed (`wait_group n` must retire it).
    pub(crate) fn oldest_beyond(&self, n: usize) -> Option<&[T]> {
        (self.committed.len() > n).then(|| self.committed[0].as_slice())
    }

    /// Removes and returns the oldest group, if more than `n` are committed.
    pub(crate) fn retire_beyond(&mut self, n: usize) -> Option<Vec<T>> {
        if self.committed.len() > n {
            self.committed.pop_front()
        } else {
            None
        }
    }

    /// Takes every operation, committed ones first (oldest group first), then the uncommitted
    /// ones; the committed groups stay, empty, so later waits count them as before.
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.committed.iter_mut().flat_map(std::mem::take).collect();
        all.append(&mut self.uncommitted);
        all
    }
}

/// Asynchronous state of one thread.
#[derive(Debug, Default)]
pub(crate) struct ThreadAsync {
    /// `cp.async` copies.
    pub cp: AsyncGroups<Copy>,
    /// Bulk and TMA stores.
    pub bulk: AsyncGroups<BulkOp>,
}

/// The asynchronous state of one CTA.
#[derive(Debug, Default)]
pub struct HopperState {
    /// Bumped by every change of asynchronous state (mbarrier words, copies, MMAs, cluster
    /// barrier): a scheduler round in which it does not move and every warp only polled made
    /// no progress.
    pub(crate) version: u64,
    /// Per thread (linear thread index).
    pub(crate) threads: Vec<ThreadAsync>,
    /// Bulk and tensor loads issued but not landed.
    pub(crate) pending_loads: Vec<PendingLoad>,
    /// Per warp: its wgmma groups.
    pub(crate) warps: Vec<WarpWgmma>,
    /// Per warpgroup: its MMAs.
    pub(crate) warpgroups: Vec<WarpgroupWgmma>,
}

impl HopperState {
    /// The state of thread `t`.
    pub(crate) fn thread(&mut self, t: u32) -> &mut ThreadAsync {
        let t = t as usize;
        if self.threads.len() <= t {
            self.threads.resize_with(t + 1, ThreadAsync::default);
        }
        &mut self.threads[t]
    }
}

/// What a Hopper instruction did for the lanes that executed it.
pub(crate) enum Done {
    /// Finished: the lanes move on.
    Next,
    /// Finished, but nothing changed for any lane (a failed poll): move on, then yield.
    NextAndYield,
    /// Not finished: the lanes stay at the instruction and the warp yields.
    Stay,
}

/// Executes Hopper instruction `op` at `pc` for lanes `mask` of `warp` (`exec`: those whose
/// guard holds).
pub(crate) fn step(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    pc: u32,
    mask: u32,
    exec: u32,
    op: &HopperOp,
) -> Result<Outcome, EmuError> {
    let inst = &ctx.launch.kernel.insts[pc as usize];
    let done = if exec == 0 {
        Done::Next
    } else {
        execute(ctx, warp, inst, pc, exec, op)?
    };
    let stay = matches!(done, Done::Stay);
    for l in lanes(mask) {
        if !(stay && exec & (1 << l) != 0) {
            warp.pc[l] = pc + 1;
        }
    }
    Ok(match done {
        Done::Next => Outcome::Continue,
        Done::NextAndYield | Done::Stay => Outcome::Yield,
    })
}

fn execute(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    pc: u32,
    exec: u32,
    op: &HopperOp,
) -> Result<Done, EmuError> {
    use super::{async_copy as ac, mbarrier as mb, wgmma as wg};
    match op {
        HopperOp::Nop | HopperOp::WgmmaFence => Ok(Done::Next),
        HopperOp::MbarInit(s) => mb::init(ctx, warp, inst, exec, *s),
        HopperOp::MbarInval(s) => mb::inval(ctx, warp, inst, exec, *s),
        HopperOp::MbarArrive {
            space,
            expect_tx,
            drop,
            no_complete,
        } => mb::arrive(
            ctx,
            warp,
            inst,
            exec,
            *space,
            *expect_tx,
            *drop,
            *no_complete,
        ),
        HopperOp::MbarExpectTx(s) => mb::tx(ctx, warp, inst, exec, *s, true),
        HopperOp::MbarCompleteTx(s) => mb::tx(ctx, warp, inst, exec, *s, false),
        HopperOp::MbarWait { space, parity } => mb::wait(ctx, warp, inst, exec, *space, *parity),
        HopperOp::CpAsync => ac::cp_async(ctx, warp, inst, exec),
        HopperOp::CpAsyncCommit => ac::cp_commit(ctx, warp, exec),
        HopperOp::CpAsyncWait { all } => ac::cp_wait(ctx, warp, inst, exec, *all),
        HopperOp::CpAsyncMbarArrive { space, noinc } => {
            ac::cp_mbarrier_arrive(ctx, warp, inst, exec, *space, *noinc)
        }
        HopperOp::TensorLoad {
            dims,
            multicast,
            cache_hint,
        } => ac::tensor_load(ctx, warp, inst, exec, *dims, *multicast, *cache_hint),
        HopperOp::TensorStore { dims } => ac::tensor_store(ctx, warp, inst, exec, *dims),
        HopperOp::BulkLoad { multicast } => ac::bulk_load(ctx, warp, inst, exec, *multicast),
        HopperOp::BulkStore => ac::bulk_store(ctx, warp, inst, exec),
        HopperOp::BulkCommit => ac::bulk_commit(ctx, warp, exec),
        HopperOp::BulkWait => ac::bulk_wait(ctx, warp, inst, exec),
        HopperOp::Wgmma { .. } => wg::issue(ctx, warp, inst, pc, exec, op),
        HopperOp::WgmmaCommit => wg::commit(ctx, warp, inst, exec),
        HopperOp::WgmmaWait => wg::wait(ctx, warp, inst, exec),
        HopperOp::Elect => elect(ctx, warp, inst, exec),
        HopperOp::SetMaxNReg => {
            let first = exec.trailing_zeros() as usize;
            let v = ctx.read(warp, operand(inst, 0), first, Ty::U32);
            if !matches!(operand(inst, 0), Operand::Imm(_))
                || !(24..=256).contains(&v)
                || !v.is_multiple_of(8)
            {
                return Err(ctx.fault(inst, warp.first_thread, first, format!("setmaxnreg needs an immediate register count in 24..=256, a multiple of 8 (got {v})")));
            }
            Ok(Done::Next)
        }
        HopperOp::BarWarpSync => {
            membermask(ctx, warp, inst, exec, 0, "bar.warp.sync")?;
            Ok(Done::Next)
        }
        HopperOp::Mapa => mapa(ctx, warp, inst, exec),
        HopperOp::ClusterArrive => {
            for l in lanes(exec) {
                let t = warp.first_thread + l as u32;
                ctx.cluster
                    .arrive(ctx.rank, t)
                    .map_err(|m| ctx.fault(inst, warp.first_thread, l, m.into()))?;
            }
            Ok(Done::Next)
        }
        HopperOp::ClusterWait => {
            let mut ready = true;
            for l in lanes(exec) {
                match ctx.cluster.try_wait(ctx.rank, warp.first_thread + l as u32) {
                    None => {
                        return Err(ctx.fault(
                            inst,
                            warp.first_thread,
                            l,
                            "barrier.cluster.wait without a prior barrier.cluster.arrive".into(),
                        ));
                    }
                    Some(done) => ready &= done,
                }
            }
            if !ready {
                return Ok(Done::Stay);
            }
            for l in lanes(exec) {
                ctx.cluster.leave(ctx.rank, warp.first_thread + l as u32);
            }
            Ok(Done::Next)
        }
    }
}

/// `mapa{.shared::cluster}.u32|u64 d, a, rank`: `a`'s shared offset in CTA `rank` of the cluster
/// (see [`super::cluster`] for the address encoding).
fn mapa(ctx: &mut CtaContext, warp: &mut Warp, inst: &Inst, exec: u32) -> Result<Done, EmuError> {
    use super::cluster::{cluster_address, decode_cluster_address};
    use crate::memory::SHARED_WINDOW;
    let generic = !inst.opcode.contains("shared::cluster");
    for l in lanes(exec) {
        let a = ctx.read(warp, operand(inst, 1), l, Ty::U64);
        let rank = ctx.read(warp, operand(inst, 2), l, Ty::U32) as u32;
        if rank >= ctx.cluster.size {
            return Err(ctx.fault(
                inst,
                warp.first_thread,
                l,
                format!(
                    "mapa to CTA rank {rank} of a cluster of {}",
                    ctx.cluster.size
                ),
            ));
        }
        let shared = if generic {
            a.checked_sub(SHARED_WINDOW)
        } else {
            Some(a)
        };
        let Some(shared) = shared.filter(|&s| s < cluster_address(ctx.cluster.size, 0)) else {
            return Err(ctx.memory_fault(
                inst,
                warp.first_thread,
                l,
                a,
                "mapa of an address that is not in shared memory".into(),
            ));
        };
        let (_, offset) = decode_cluster_address(shared);
        let mut d = cluster_address(rank, offset);
        if generic {
            d += SHARED_WINDOW;
        }
        if inst.opcode.ends_with("u32") {
            d &= 0xffff_ffff;
        }
        write(warp, operand(inst, 0), l, d);
    }
    Ok(Done::Next)
}

/// Operand `i` (a sink when absent).
pub(crate) fn operand(inst: &Inst, i: usize) -> &Operand {
    inst.operands.get(i).unwrap_or(&Operand::Sink)
}

/// The `N` of a `wait_group N` (operand 0, an immediate ≥ 0).
pub(crate) fn group_count(ctx: &CtaContext, inst: &Inst) -> Result<usize, EmuError> {
    match operand(inst, 0) {
        Operand::Imm(n) if *n >= 0 => Ok(*n as usize),
        _ => Err(ctx.unsupported(inst)),
    }
}

/// The membermask operand `i` (read from the first executing lane): every lane of it must
/// execute with this group, and every executing lane must be in it.
fn membermask(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    exec: u32,
    i: usize,
    what: &str,
) -> Result<u32, EmuError> {
    let member = ctx.read(
        warp,
        operand(inst, i),
        exec.trailing_zeros() as usize,
        Ty::U32,
    ) as u32;
    if exec & !member != 0 {
        let l = (exec & !member).trailing_zeros() as usize;
        return Err(ctx.fault(
            inst,
            warp.first_thread,
            l,
            format!("{what}: the executing lane is not in membermask {member:#x}"),
        ));
    }
    if member & !exec != 0 {
        let missing = (member & !exec).trailing_zeros();
        let l = exec.trailing_zeros() as usize;
        return Err(ctx.fault(inst, warp.first_thread, l, format!("{what}: membermask {member:#x} names lane {missing}, which did not execute it with this lane")));
    }
    Ok(member)
}

/// `elect.sync d|p, membermask`: the lowest lane of the membermask is the leader.
fn elect(ctx: &mut CtaContext, warp: &mut Warp, inst: &Inst, exec: u32) -> Result<Done, EmuError> {
    let member = membermask(ctx, warp, inst, exec, 1, "elect.sync")?;
    let leader = member.trailing_zeros() as u64;
    for l in lanes(exec) {
        match operand(inst, 0) {
            Operand::PredPair(d, p) => {
                warp.set_reg(*d, l, leader);
                warp.set_reg(*p, l, u64::from(l as u64 == leader));
            }
            Operand::Reg(p) => warp.set_reg(*p, l, u64::from(l as u64 == leader)),
            _ => return Err(ctx.unsupported(inst)),
        }
    }
    Ok(Done::Next)
}

/// The shared-memory offset of address operand `i` of `lane`, used with state space `space`.
pub(crate) fn shared_operand(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    i: usize,
    space: Space,
    align: u64,
) -> Result<u64, EmuError> {
    let Operand::Addr(a) = operand(inst, i) else {
        return Err(ctx.unsupported(inst));
    };
    let address = ctx.address(warp, a, lane);
    let fault = |m: String| ctx.memory_fault(inst, warp.first_thread, lane, address, m);
    match ctx.place(space, address, a.base).map_err(fault)? {
        Place::Shared(o) => aligned(inst, o, align).map_err(fault),
        _ => Err(fault(format!(
            "{}: the address is not in shared memory",
            inst.opcode
        ))),
    }
}

/// The CTA rank and shared offset of address operand `i` of `lane` (a `.shared::cluster`
/// address, possibly of another CTA), `align`-aligned.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cluster_operand(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    i: usize,
    space: Space,
    align: u64,
) -> Result<(u32, u64), EmuError> {
    if space != Space::SharedCluster {
        return shared_operand(ctx, warp, inst, lane, i, space, align).map(|o| (ctx.rank, o));
    }
    let Operand::Addr(a) = operand(inst, i) else {
        return Err(ctx.unsupported(inst));
    };
    let address = ctx.address(warp, a, lane);
    let fault = |m: String| ctx.memory_fault(inst, warp.first_thread, lane, address, m);
    let (rank, o) = ctx.cluster_shared(address).map_err(fault)?;
    Ok((rank, aligned(inst, o, align).map_err(fault)?))
}

/// Shared offset `o`, if it is `align`-byte aligned as `inst` needs.
fn aligned(inst: &Inst, o: u64, align: u64) -> Result<u64, String> {
    if o.is_multiple_of(align) {
        Ok(o)
    } else {
        Err(format!(
            "{}: shared address not {align}-byte aligned",
            inst.opcode
        ))
    }
}

/// Runs everything still in flight when the CTA ends: pending loads land, cp.async copies and
/// bulk stores complete (a kernel may exit with stores in flight; they still reach memory).
pub(crate) fn finish(ctx: &mut CtaContext) -> Result<(), EmuError> {
    super::async_copy::land_all(ctx)?;
    for t in 0..ctx.hopper.threads.len() {
        let th = &mut ctx.hopper.threads[t];
        let copies = th.cp.take_all();
        let bulk = th.bulk.take_all();
        super::async_copy::run_copies(ctx, copies)?;
        for b in bulk {
            super::async_copy::run_bulk(ctx, b)?;
        }
    }
    Ok(())
}
