//! Asynchronous copies: `cp.async` (4/8/16 bytes per thread, async-groups), `cp.async.bulk`
//! and `cp.async.bulk.tensor` (TMA) loads signalling an mbarrier's `complete_tx`, and bulk /
//! TMA stores tracked by bulk async-groups.
//!
//! Copies are checked at issue and run late (see [`super::hopper`]): a load is kept as a
//! `PendingLoad` and lands when its mbarrier is polled; `cp.async` copies and bulk stores wait
//! in the thread's `AsyncGroups` until a `wait_group` retires their group (or
//! `cp.async.mbarrier.arrive` runs the thread's copies); everything left runs when the CTA ends.
//! An error of a late copy names the issuing instruction and thread (`Origin`).
//! `cp.async.mbarrier.arrive` without `.noinc` increments the pending count and arrives once
//! the copies are done: no net change, so it does nothing more than run them.
//!
//! Tensor maps are the emulator's 128-byte encoding ([`crate::tensor_map`]), read at issue from
//! the parameter space (a `__grid_constant__` parameter, through `cvta.param` or named directly)
//! or from global memory. A load into another CTA of the cluster, and each other destination of
//! a `.multicast::cluster` load, is delivered to that CTA ([`super::cluster`]) and lands there.

use super::access::Place;
use super::cluster::Delivery;
use super::context::CtaContext;
use super::hopper::{Done, cluster_operand, group_count, operand, shared_operand};
use super::mbarrier;
use super::warp::{Warp, lanes};
use crate::error::{EmuError, ThreadId};
use crate::ptx::{Inst, Operand, Space, Ty};
use crate::tensor_map::{TENSOR_MAP_BYTES, TensorMap, load_box, store_box};

/// Where an error of a late copy is reported: the issuing instruction and thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// PTX line of the issuing instruction.
    pub line: u32,
    /// The issuing thread.
    pub thread: ThreadId,
}

impl Origin {
    pub(crate) fn new(ctx: &CtaContext, warp: &Warp, inst: &Inst, lane: usize) -> Origin {
        Origin {
            line: inst.line,
            thread: ctx.thread(warp.first_thread, lane),
        }
    }

    pub(crate) fn fault(&self, ctx: &CtaContext, address: u64, message: String) -> EmuError {
        EmuError::Memory {
            kernel: ctx.launch.kernel.name.clone(),
            line: self.line as usize,
            thread: self.thread,
            address,
            message,
        }
    }
}

/// One `cp.async` copy.
#[derive(Debug, Clone)]
pub(crate) struct Copy {
    /// Destination shared offset.
    pub dst: u64,
    /// Source global address.
    pub src: u64,
    /// Bytes written (cp-size).
    pub size: u32,
    /// Bytes read from the source (the rest is zero-filled).
    pub src_size: u32,
    /// The issuer.
    pub origin: Origin,
}

/// A load that lands in shared memory and signals an mbarrier.
#[derive(Debug, Clone)]
pub(crate) struct PendingLoad {
    /// What to copy.
    pub kind: LoadKind,
    /// Destination shared offset.
    pub dst: u64,
    /// The mbarrier's shared offset.
    pub mbar: u64,
    /// The issuer.
    pub origin: Origin,
    /// Whether its bytes count as traffic from global memory (a multicast load reads global
    /// memory once for all its destinations).
    pub counted: bool,
}

/// The source of a `PendingLoad`.
#[derive(Debug, Clone)]
pub(crate) enum LoadKind {
    /// A TMA box.
    Tensor(Box<TensorMap>, Vec<i32>),
    /// `size` contiguous bytes from global `src`.
    Bulk {
        /// Source global address.
        src: u64,
        /// Bytes.
        size: u64,
    },
}

/// A bulk store tracked by a bulk async-group.
#[derive(Debug, Clone)]
pub(crate) enum BulkOp {
    /// A TMA box store from shared offset `src`.
    TensorStore {
        /// The map.
        map: Box<TensorMap>,
        /// Box coordinates.
        coords: Vec<i32>,
        /// Source shared offset.
        src: u64,
        /// The issuer.
        origin: Origin,
    },
    /// `size` bytes from shared offset `src` to global `dst`.
    Store {
        /// Destination global address.
        dst: u64,
        /// Source shared offset.
        src: u64,
        /// Bytes.
        size: u64,
        /// The issuer.
        origin: Origin,
    },
}

fn global_read(ctx: &CtaContext, address: u64, buf: &mut [u8]) -> Result<(), String> {
    ctx.launch
        .memory_for(address)
        .read(address, buf)
        .map_err(|e| match e {
            EmuError::Host(m) => m.replace("reading", "async copy reading"),
            e => e.to_string(),
        })
}

/// The range of shared memory `[off, off + len)`, or a fault of the copy's issuer naming `what`.
fn shared_range(
    ctx: &CtaContext,
    origin: &Origin,
    off: u64,
    len: u64,
    what: &str,
) -> Result<std::ops::Range<usize>, EmuError> {
    let end = off
        .checked_add(len)
        .filter(|&e| e <= ctx.shared.len() as u64);
    match end {
        Some(end) => Ok(off as usize..end as usize),
        None => Err(origin.fault(
            ctx,
            off,
            format!(
                "{what} outside the {} bytes of shared memory",
                ctx.shared.len()
            ),
        )),
    }
}

/// Runs `cp.async` copies.
pub(crate) fn run_copies(ctx: &mut CtaContext, copies: Vec<Copy>) -> Result<(), EmuError> {
    for c in copies {
        let mut buf = vec![0u8; c.size as usize];
        if c.src_size > 0 {
            global_read(ctx, c.src, &mut buf[..c.src_size as usize])
                .map_err(|m| c.origin.fault(ctx, c.src, format!("cp.async source: {m}")))?;
        }
        let range = shared_range(
            ctx,
            &c.origin,
            c.dst,
            u64::from(c.size),
            "cp.async destination",
        )?;
        ctx.shared[range].copy_from_slice(&buf);
        ctx.counters.async_bytes += u64::from(c.size);
        ctx.hopper.version += 1;
    }
    Ok(())
}

fn land(ctx: &mut CtaContext, p: PendingLoad) -> Result<(), EmuError> {
    let dst = shared_range(ctx, &p.origin, p.dst, 0, "asynchronous load destination")?.start;
    let bytes = match &p.kind {
        LoadKind::Tensor(map, coords) => {
            let mut shared = std::mem::take(&mut ctx.shared);
            let launch = ctx.launch;
            let mut read = |a: u64, buf: &mut [u8]| -> Result<(), String> {
                launch.memory_for(a).read(a, buf).map_err(|e| e.to_string())
            };
            let r = load_box(map, coords, &mut read, &mut shared[dst..], p.dst);
            ctx.shared = shared;
            r.map_err(|m| p.origin.fault(ctx, p.dst, m))?
        }
        LoadKind::Bulk { src, size } => {
            let mut buf = vec![0u8; *size as usize];
            global_read(ctx, *src, &mut buf).map_err(|m| {
                p.origin
                    .fault(ctx, *src, format!("cp.async.bulk source: {m}"))
            })?;
            let range = shared_range(ctx, &p.origin, p.dst, *size, "cp.async.bulk destination")?;
            ctx.shared[range].copy_from_slice(&buf);
            *size
        }
    };
    if p.counted {
        ctx.counters.async_bytes += bytes;
    }
    mbarrier::complete_tx(ctx, p.mbar, bytes).map_err(|m| p.origin.fault(ctx, p.mbar, m))?;
    Ok(())
}

/// Lands every pending load that signals the mbarrier at shared offset `mbar`.
pub(crate) fn land_for(ctx: &mut CtaContext, mbar: u64) -> Result<(), EmuError> {
    if ctx.hopper.pending_loads.iter().all(|p| p.mbar != mbar) {
        return Ok(());
    }
    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.hopper.pending_loads)
        .into_iter()
        .partition(|p| p.mbar == mbar);
    ctx.hopper.pending_loads = later;
    for p in now {
        land(ctx, p)?;
    }
    Ok(())
}

/// Lands every pending load.
pub(crate) fn land_all(ctx: &mut CtaContext) -> Result<(), EmuError> {
    for p in std::mem::take(&mut ctx.hopper.pending_loads) {
        land(ctx, p)?;
    }
    Ok(())
}

/// Runs one bulk store.
pub(crate) fn run_bulk(ctx: &mut CtaContext, b: BulkOp) -> Result<(), EmuError> {
    let launch = ctx.launch;
    let bytes = match &b {
        BulkOp::TensorStore {
            map,
            coords,
            src,
            origin,
        } => {
            let s = shared_range(ctx, origin, *src, 0, "TMA store source")?.start;
            let mut w = |a: u64, bytes: &[u8]| -> Result<(), String> {
                launch
                    .memory_for(a)
                    .write(a, bytes)
                    .map_err(|e| e.to_string())
            };
            store_box(map, coords, &ctx.shared[s..], *src, &mut w)
                .map_err(|m| origin.fault(ctx, *src, m))?
        }
        BulkOp::Store {
            dst,
            src,
            size,
            origin,
        } => {
            let range = shared_range(ctx, origin, *src, *size, "cp.async.bulk store source")?;
            launch
                .memory_for(*dst)
                .write(*dst, &ctx.shared[range])
                .map_err(|e| origin.fault(ctx, *dst, format!("cp.async.bulk store: {e}")))?;
            *size
        }
    };
    ctx.counters.async_bytes += bytes;
    ctx.hopper.version += 1;
    Ok(())
}

/// `cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}{, cache-policy}`.
pub(crate) fn cp_async(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
) -> Result<Done, EmuError> {
    let size = match operand(inst, 2) {
        Operand::Imm(s @ (4 | 8 | 16)) => *s as u32,
        _ => return Err(ctx.unsupported(inst)),
    };
    if inst.opcode.contains(".cg") && size != 16 {
        return Err(ctx.unsupported(inst));
    }
    let hint = inst.opcode.contains("L2::cache_hint");
    // Operand 3: src-size (u32) unless it is the cache policy; an `ignore-src` predicate is not
    // implemented (it cannot be told from a src-size register here).
    let src_size_op = match inst.operands.len() - usize::from(hint) {
        3 => None,
        4 => Some(&inst.operands[3]),
        _ => return Err(ctx.unsupported(inst)),
    };
    if let Some(Operand::Reg(r)) = src_size_op
        && ctx
            .launch
            .kernel
            .reg_names
            .get(*r as usize)
            .is_some_and(|n| n.starts_with("%p"))
    {
        return Err(ctx.unsupported(inst));
    }
    let Operand::Addr(src_addr) = operand(inst, 1) else {
        return Err(ctx.unsupported(inst));
    };
    for l in lanes(exec) {
        let dst = shared_operand(ctx, warp, inst, l, 0, Space::Shared, u64::from(size))?;
        let src = ctx.address(warp, src_addr, l);
        if !src.is_multiple_of(u64::from(size)) {
            return Err(ctx.memory_fault(
                inst,
                warp.first_thread,
                l,
                src,
                format!("cp.async source not {size}-byte aligned"),
            ));
        }
        let src_size = match src_size_op {
            None => size,
            Some(o) => ctx.read(warp, o, l, Ty::U32) as u32,
        };
        if src_size > size {
            return Err(ctx.fault(
                inst,
                warp.first_thread,
                l,
                format!("cp.async src-size {src_size} exceeds cp-size {size}"),
            ));
        }
        if dst + u64::from(size) > ctx.shared.len() as u64 {
            return Err(ctx.memory_fault(
                inst,
                warp.first_thread,
                l,
                dst,
                "cp.async destination outside shared memory".into(),
            ));
        }
        let origin = Origin::new(ctx, warp, inst, l);
        ctx.hopper
            .thread(warp.first_thread + l as u32)
            .cp
            .push(Copy {
                dst,
                src,
                size,
                src_size,
                origin,
            });
    }
    ctx.hopper.version += 1;
    Ok(Done::Next)
}

/// `cp.async.commit_group`.
pub(crate) fn cp_commit(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    exec: u32,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        ctx.hopper.thread(warp.first_thread + l as u32).cp.commit();
    }
    Ok(Done::Next)
}

/// `cp.async.wait_group N` / `cp.async.wait_all` (= commit + wait 0).
pub(crate) fn cp_wait(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    all: bool,
) -> Result<Done, EmuError> {
    if all {
        cp_commit(ctx, warp, exec)?;
    }
    let n = if all { 0 } else { group_count(ctx, inst)? };
    for l in lanes(exec) {
        let t = warp.first_thread + l as u32;
        while let Some(g) = ctx.hopper.thread(t).cp.retire_beyond(n) {
            run_copies(ctx, g)?;
        }
    }
    Ok(Done::Next)
}

/// `cp.async.mbarrier.arrive[.noinc] [addr]`: the thread's copies run now, then the arrive-on
/// (without `.noinc` the pending count is first incremented: no net change).
pub(crate) fn cp_mbarrier_arrive(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
    noinc: bool,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        let off = mbarrier::operand_offset(ctx, warp, inst, l, 0, space)?;
        let copies = ctx
            .hopper
            .thread(warp.first_thread + l as u32)
            .cp
            .take_all();
        run_copies(ctx, copies)?;
        mbarrier::initialized(ctx, warp, inst, l, off)?;
        if noinc {
            mbarrier::arrive_on(ctx, off, 1, false)
                .map_err(|m| ctx.fault(inst, warp.first_thread, l, m))?;
        }
    }
    Ok(Done::Next)
}

/// Reads the 128-byte tensor map at the generic address of `a` for `lane`; its rank must be
/// `dims`.
fn tensor_map(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    a: &crate::ptx::Addr,
    dims: u8,
) -> Result<TensorMap, EmuError> {
    let address = ctx.address(warp, a, lane);
    let fault = |m: String| ctx.memory_fault(inst, warp.first_thread, lane, address, m);
    if !address.is_multiple_of(64) {
        return Err(fault("tensor map not 64-byte aligned".into()));
    }
    let mut bytes = vec![0u8; TENSOR_MAP_BYTES];
    match ctx.place(Space::Generic, address, a.base).map_err(&fault)? {
        Place::Param(o) => {
            let params = ctx.launch.params;
            let o = o as usize;
            if o + TENSOR_MAP_BYTES > params.len() {
                return Err(fault(format!(
                    "tensor map outside the {} bytes of parameters",
                    params.len()
                )));
            }
            bytes.copy_from_slice(&params[o..o + TENSOR_MAP_BYTES]);
        }
        Place::Global(g) => {
            global_read(ctx, g, &mut bytes).map_err(|m| fault(format!("tensor map: {m}")))?
        }
        _ => {
            return Err(fault(
                "tensor map must be in parameter or global memory".into(),
            ));
        }
    }
    let map = TensorMap::from_bytes(&bytes).map_err(|m| fault(format!("tensor map: {m}")))?;
    if map.rank != u32::from(dims) {
        return Err(ctx.fault(
            inst,
            warp.first_thread,
            lane,
            format!("{}d copy with a rank-{} tensor map", dims, map.rank),
        ));
    }
    Ok(map)
}

fn coords(ctx: &CtaContext, warp: &Warp, items: &[Operand], lane: usize) -> Vec<i32> {
    items
        .iter()
        .map(|o| ctx.read(warp, o, lane, Ty::S32) as u32 as i32)
        .collect()
}

/// The CTA ranks a load goes to: those of the multicast ctaMask (operand `mask_operand`), or
/// the one CTA that holds both the destination and the mbarrier.
#[allow(clippy::too_many_arguments)]
fn destinations(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    mask_operand: Option<usize>,
    dst_rank: u32,
    mbar_rank: u32,
) -> Result<Vec<u32>, EmuError> {
    let fault = |m: String| ctx.fault(inst, warp.first_thread, lane, m);
    let Some(i) = mask_operand else {
        if dst_rank != mbar_rank {
            return Err(fault(format!(
                "the destination is in CTA rank {dst_rank} and the mbarrier in CTA rank \
                 {mbar_rank}: they must be in the same CTA"
            )));
        }
        return Ok(vec![dst_rank]);
    };
    let mask = ctx.read(warp, operand(inst, i), lane, Ty::U16) & 0xffff;
    let size = ctx.cluster.size;
    if mask >> size != 0 {
        return Err(fault(format!(
            "multicast ctaMask {mask:#x} names CTAs outside the cluster of {size}"
        )));
    }
    Ok((0..size).filter(|r| mask >> r & 1 == 1).collect())
}

/// Queues load `kind` of `lane` into shared offset `dst` signalling the mbarrier at `mbar` (each
/// with its CTA rank) for each destination CTA: those of the multicast ctaMask (operand `mask`)
/// or the one holding both. This CTA's own copy joins its pending loads (the mbarrier checked
/// now); the others are delivered to their CTAs (checked when they apply them).
fn issue_load(
    ctx: &mut CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    kind: LoadKind,
    [(dst_rank, dst), (mbar_rank, mbar)]: [(u32, u64); 2],
    mask: Option<usize>,
) -> Result<(), EmuError> {
    let ranks = destinations(ctx, warp, inst, lane, mask, dst_rank, mbar_rank)?;
    let origin = Origin::new(ctx, warp, inst, lane);
    for (i, &rank) in ranks.iter().enumerate() {
        let p = PendingLoad {
            kind: kind.clone(),
            dst,
            mbar,
            origin,
            // A multicast load reads global memory once for all its destinations.
            counted: i == 0,
        };
        if rank == ctx.rank {
            mbarrier::initialized(ctx, warp, inst, lane, p.mbar)?;
            ctx.hopper.pending_loads.push(p);
        } else {
            ctx.cluster.deliver(rank, Delivery::Load(p));
        }
    }
    Ok(())
}

/// The destination (and mbarrier) space of a bulk or TMA load: `.shared::cta` or
/// `.shared::cluster`.
fn load_space(inst: &Inst) -> Space {
    if inst.opcode.contains("shared::cta") {
        Space::Shared
    } else {
        Space::SharedCluster
    }
}

/// The size operand (2) of a non-tensor bulk copy of `lane`: the `global` address and the size
/// must be multiples of 16 (`what`: which end `global` is).
fn bulk_size(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    global: u64,
    what: &str,
) -> Result<u64, EmuError> {
    let size = ctx.read(warp, operand(inst, 2), lane, Ty::U32) & 0xffff_ffff;
    if !global.is_multiple_of(16) || !size.is_multiple_of(16) {
        return Err(ctx.memory_fault(inst, warp.first_thread, lane, global, format!("cp.async.bulk needs a 16-byte aligned {what} and a multiple of 16 bytes (size {size})")));
    }
    Ok(size)
}

/// `cp.async.bulk.tensor.Nd.shared::cluster.global…mbarrier::complete_tx::bytes [dst],
/// [tensorMap, {coords}], [mbar]{, ctaMask}{, cache-policy}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tensor_load(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    dims: u8,
    multicast: bool,
    cache_hint: bool,
) -> Result<Done, EmuError> {
    let expected = 3 + usize::from(multicast) + usize::from(cache_hint);
    let Operand::TensorCoords(tm, items) = operand(inst, 1) else {
        return Err(ctx.unsupported(inst));
    };
    if inst.operands.len() != expected || items.len() != dims as usize {
        return Err(ctx.unsupported(inst));
    }
    let space = load_space(inst);
    for l in lanes(exec) {
        let map = tensor_map(ctx, warp, inst, l, tm, dims)?;
        let (dst_rank, dst) = cluster_operand(ctx, warp, inst, l, 0, space, 128)?;
        let (mbar_rank, mbar) = cluster_operand(ctx, warp, inst, l, 2, space, 8)?;
        let c = coords(ctx, warp, items, l);
        let kind = LoadKind::Tensor(Box::new(map), c);
        let mask = multicast.then_some(3);
        issue_load(
            ctx,
            warp,
            inst,
            l,
            kind,
            [(dst_rank, dst), (mbar_rank, mbar)],
            mask,
        )?;
    }
    ctx.hopper.version += 1;
    Ok(Done::Next)
}

/// `cp.async.bulk.tensor.Nd.global.shared::cta.bulk_group [tensorMap, {coords}], [src]{, policy}`.
pub(crate) fn tensor_store(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    dims: u8,
) -> Result<Done, EmuError> {
    let hint = inst.opcode.contains("L2::cache_hint");
    let Operand::TensorCoords(tm, items) = operand(inst, 0) else {
        return Err(ctx.unsupported(inst));
    };
    if inst.operands.len() != 2 + usize::from(hint) || items.len() != dims as usize {
        return Err(ctx.unsupported(inst));
    }
    for l in lanes(exec) {
        let map = tensor_map(ctx, warp, inst, l, tm, dims)?;
        let src = shared_operand(ctx, warp, inst, l, 1, Space::Shared, 128)?;
        let c = coords(ctx, warp, items, l);
        let origin = Origin::new(ctx, warp, inst, l);
        ctx.hopper
            .thread(warp.first_thread + l as u32)
            .bulk
            .push(BulkOp::TensorStore {
                map: Box::new(map),
                coords: c,
                src,
                origin,
            });
    }
    ctx.hopper.version += 1;
    Ok(Done::Next)
}

/// `cp.async.bulk.shared::{cta,cluster}.global.mbarrier::complete_tx::bytes [dst], [src], size,
/// [mbar]{, ctaMask}{, cache-policy}`.
pub(crate) fn bulk_load(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    multicast: bool,
) -> Result<Done, EmuError> {
    let hint = inst.opcode.contains("L2::cache_hint");
    if inst.operands.len() != 4 + usize::from(multicast) + usize::from(hint) {
        return Err(ctx.unsupported(inst));
    }
    let Operand::Addr(src_addr) = operand(inst, 1) else {
        return Err(ctx.unsupported(inst));
    };
    let space = load_space(inst);
    for l in lanes(exec) {
        let (dst_rank, dst) = cluster_operand(ctx, warp, inst, l, 0, space, 16)?;
        let (mbar_rank, mbar) = cluster_operand(ctx, warp, inst, l, 3, space, 8)?;
        let src = ctx.address(warp, src_addr, l);
        let size = bulk_size(ctx, warp, inst, l, src, "source")?;
        let kind = LoadKind::Bulk { src, size };
        let mask = multicast.then_some(4);
        issue_load(
            ctx,
            warp,
            inst,
            l,
            kind,
            [(dst_rank, dst), (mbar_rank, mbar)],
            mask,
        )?;
    }
    ctx.hopper.version += 1;
    Ok(Done::Next)
}

/// `cp.async.bulk.global.shared::cta.bulk_group [dst], [src], size`.
pub(crate) fn bulk_store(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
) -> Result<Done, EmuError> {
    if inst.operands.len() != 3 {
        return Err(ctx.unsupported(inst));
    }
    let Operand::Addr(dst_addr) = operand(inst, 0) else {
        return Err(ctx.unsupported(inst));
    };
    for l in lanes(exec) {
        let src = shared_operand(ctx, warp, inst, l, 1, Space::Shared, 16)?;
        let dst = ctx.address(warp, dst_addr, l);
        let size = bulk_size(ctx, warp, inst, l, dst, "destination")?;
        let origin = Origin::new(ctx, warp, inst, l);
        ctx.hopper
            .thread(warp.first_thread + l as u32)
            .bulk
            .push(BulkOp::Store {
                dst,
                src,
                size,
                origin,
            });
    }
    ctx.hopper.version += 1;
    Ok(Done::Next)
}

/// `cp.async.bulk.commit_group`.
pub(crate) fn bulk_commit(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    exec: u32,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        ctx.hopper
            .thread(warp.first_thread + l as u32)
            .bulk
            .commit();
    }
    Ok(Done::Next)
}

/// `cp.async.bulk.wait_group[.read] N`: the oldest groups beyond N run now (reading shared
/// memory and writing global memory).
pub(crate) fn bulk_wait(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
) -> Result<Done, EmuError> {
    let n = group_count(ctx, inst)?;
    for l in lanes(exec) {
        let t = warp.first_thread + l as u32;
        while let Some(g) = ctx.hopper.thread(t).bulk.retire_beyond(n) {
            for b in g {
                run_bulk(ctx, b)?;
            }
        }
    }
    Ok(Done::Next)
}
