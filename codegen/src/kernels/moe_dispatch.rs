//! `moe_dispatch`: the permutation that groups the rows of a routed-expert GEMM by expert, in
//! DeepGEMM's contiguous layout — each expert's rows `r = t·top_k + slot` in increasing order,
//! its segment padded to a multiple of the GEMM's tile rows (16 for `mma.sync`, 64 for wgmma),
//! `rows[p] = r` (−1 for padding), and `tiles[p / tile_rows]` = the expert of each tile (−1 for
//! unused tiles).
//!
//! The spec and CPU reference are `dsc_kernels::ops::moe_dispatch`; it runs once per layer and
//! its result is shared by the layer's gate, up and down GEMMs. One block of 1024 threads
//! builds it (up to [`PARALLEL_EXPERTS`] experts; beyond, one thread runs the reference's
//! counting sort step for step): each of the 32 warps owns a contiguous chunk of the routed
//! rows, in steps of 32 rows;
//! 1. histogram: per-warp, per-expert counts in shared memory (shared atomics);
//! 2. scan: thread `x` turns expert `x`'s 32 warp counts into warp offsets within the expert,
//!    pads its total to a tile, a block scan (warp shuffles, then the warps' sums) gives the
//!    segment starts, and the thread writes its segment's tiles;
//! 3. scatter: each step, a lane's rank among the lanes of its warp with the same expert (8
//!    ballots on the expert's bits, a population count below the lane) plus its warp's cursor
//!    for that expert is the row's position; the last such lane advances the cursor.
//!
//! Rows of an expert thus keep increasing `r` (chunks in warp order, steps in order, lanes in
//! order): the reference's layout, bit for bit.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::dialect::memref;
use melior::ir::attribute::IntegerAttribute;
use melior::ir::operation::OperationBuilder;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Identifier, Type, Value};
use serde::Serialize;

use super::moe::shuffle;
use super::{Launch, Param, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// Rows of one `mma.sync` tile.
pub const TILE_ROWS: u64 = 16;

/// Threads of the parallel kernel's one block.
const THREADS: i64 = 1024;

/// Warps of the parallel kernel.
const WARPS: i64 = THREADS / 32;

/// The most experts the parallel kernel takes: its per-warp counts (`WARPS × experts` i32) stay
/// within 32 KiB of shared memory.
pub const PARALLEL_EXPERTS: u64 = 256;

/// The dispatch of `tokens · top_k` routed rows over `experts` experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MoeDispatch {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Experts.
    pub experts: u64,
    /// Rows of the GEMMs' tiles (a power of two): every expert's segment is padded to a
    /// multiple of it.
    pub tile_rows: u64,
}

impl MoeDispatch {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_dispatch"
    }

    /// Padded rows: enough for every expert's segment rounded up to `tile_rows`.
    pub fn capacity(&self) -> u64 {
        dsc_kernels::ops::moe_dispatch::dispatch_capacity(
            self.tokens * self.top_k,
            self.experts,
            self.tile_rows,
        )
    }

    /// `(indices, rows, tiles)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("indices", DType::I32, self.tokens * self.top_k),
            Param::new("rows", DType::I32, self.capacity()),
            Param::new("tiles", DType::I32, self.capacity() / self.tile_rows),
        ]
    }

    /// One block of [`THREADS`] threads (one thread beyond [`PARALLEL_EXPERTS`] experts).
    pub fn launch(&self) -> Launch {
        if self.parallel() {
            Launch::blocks(1, THREADS as u32)
        } else {
            Launch::blocks(1, 1)
        }
    }

    fn parallel(&self) -> bool {
        self.experts <= PARALLEL_EXPERTS
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if self.parallel() {
            return self.build_parallel(module, entry);
        }
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let indices: Value = block.argument(0)?.into();
            let rows: Value = block.argument(1)?.into();
            let tiles: Value = block.argument(2)?.into();
            let experts = self.experts as i64;
            let array = MemRefType::new(e.int_type(32), &[experts], None, None);
            let start = e.push(memref::alloca(context, array, &[], &[], None, location))?;
            let cursor = e.push(memref::alloca(context, array, &[], &[], None, location))?;
            let routed = (self.tokens * self.top_k) as i64;
            let capacity = self.capacity() as i64;
            let tile = self.tile_rows as i64;

            let minus_one = e.int(32, -1)?;
            e.for_const(0, capacity, 1, |e, p| {
                e.store(minus_one, rows, p);
                Ok(())
            })?;
            e.for_const(0, capacity / tile, 1, |e, t| {
                e.store(minus_one, tiles, t);
                Ok(())
            })?;
            let zero = e.int(32, 0)?;
            e.for_const(0, experts, 1, |e, x| {
                e.store(zero, cursor, x);
                Ok(())
            })?;
            // Count rows per expert (into `cursor`), skipping indices outside 0..experts.
            e.for_const(0, routed, 1, |e, r| {
                let (x, valid) = expert_of(&e, indices, experts, r)?;
                e.if_then(valid, |e| {
                    let count = e.load(cursor, x)?;
                    let one = e.int(32, 1)?;
                    let count = e.addi(count, one)?;
                    e.store(count, cursor, x);
                    Ok(())
                })
            })?;
            // Padded segment starts; `cursor` becomes each segment's write position.
            let running = e.cell(zero)?;
            e.for_const(0, experts, 1, |e, x| {
                let begin = e.get(running)?;
                e.store(begin, start, x);
                let count = e.load(cursor, x)?;
                e.store(begin, cursor, x);
                let pad = e.int(32, tile - 1)?;
                let padded = e.addi(count, pad)?;
                let mask = e.int(32, !(tile - 1))?;
                let padded = e.andi(padded, mask)?;
                let end = e.addi(begin, padded)?;
                e.set(running, end)
            })?;
            e.for_const(0, routed, 1, |e, r| {
                let (x, valid) = expert_of(&e, indices, experts, r)?;
                e.if_then(valid, |e| {
                    let p = e.load(cursor, x)?;
                    let one = e.int(32, 1)?;
                    let next = e.addi(p, one)?;
                    e.store(next, cursor, x);
                    let p = e.index_cast(p, e.index_type())?;
                    let r32 = e.index_cast(r, e.int_type(32))?;
                    e.store(r32, rows, p);
                    Ok(())
                })
            })?;
            // Tiles of each segment: from its start to its end rounded up to a tile.
            e.for_const(0, experts, 1, |e, x| {
                let begin = e.load(start, x)?;
                let end = e.load(cursor, x)?;
                let pad = e.int(32, tile - 1)?;
                let end = e.addi(end, pad)?;
                write_tiles(&e, tiles, tile, x, begin, end)
            })
        })
    }
}

impl MoeDispatch {
    /// The parallel kernel (module doc).
    fn build_parallel(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let experts = self.experts as i64;
        let i32_type = IntegerType::new(context, 32).into();
        let shared: Vec<Type> = vec![
            MemRefType::new(i32_type, &[WARPS * experts], None, workgroup).into(),
            MemRefType::new(i32_type, &[WARPS], None, workgroup).into(),
        ];
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let indices: Value = block.argument(0)?.into();
            let rows: Value = block.argument(1)?.into();
            let tiles: Value = block.argument(2)?.into();
            let counts: Value = block.argument(3)?.into();
            let sums: Value = block.argument(4)?.into();
            let routed = (self.tokens * self.top_k) as i64;
            let capacity = self.capacity() as i64;
            let tile = self.tile_rows as i64;
            // Each warp's chunk of routed rows, in steps of 32.
            let chunk = ((routed + WARPS - 1) / WARPS + 31) / 32 * 32;
            let steps = chunk / 32;

            let tid = e.thread_x()?;
            let thirty_two = e.index(32)?;
            let warp = e.divui(tid, thirty_two)?;
            let lane = e.remui(tid, thirty_two)?;
            let threads = e.index(THREADS)?;
            let experts_v = e.index(experts)?;
            let warp_counts = e.muli(warp, experts_v)?;
            let chunk_v = e.index(chunk)?;
            let chunk_start = e.muli(warp, chunk_v)?;

            let minus_one = e.int(32, -1)?;
            let zero = e.int(32, 0)?;
            let fill = |len: i64, buffer: Value<'_, '_>, value: Value<'_, '_>| {
                let end = e.index(len)?;
                e.for_range(tid, end, threads, |e, i| {
                    e.store(value, buffer, i);
                    Ok(())
                })
            };
            fill(WARPS * experts, counts, zero)?;
            fill(capacity, rows, minus_one)?;
            fill(capacity / tile, tiles, minus_one)?;
            e.barrier();

            // 1. Histogram.
            e.for_const(0, steps, 1, |e, step| {
                let (_, x, valid) =
                    routed_row(&e, indices, experts, routed, chunk_start, step, lane)?;
                e.if_then(valid, |e| {
                    let at = e.addi(warp_counts, x)?;
                    let one = e.int(32, 1)?;
                    atomic_add(&e, counts, at, one)
                })
            })?;
            e.barrier();

            // 2. Scan: warp offsets within each expert, padded totals, segment starts, tiles.
            let is_expert = e.lt(tid, experts_v)?;
            let total = e.cell(zero)?;
            e.if_then(is_expert, |e| {
                e.for_const(0, WARPS, 1, |e, w| {
                    let at = e.muli(w, experts_v)?;
                    let at = e.addi(at, tid)?;
                    let count = e.load(counts, at)?;
                    let running = e.get(total)?;
                    e.store(running, counts, at);
                    let running = e.addi(running, count)?;
                    e.set(total, running)
                })
            })?;
            let total = e.get(total)?;
            let pad = e.int(32, tile - 1)?;
            let padded = e.addi(total, pad)?;
            let mask = e.int(32, !(tile - 1))?;
            let padded = e.andi(padded, mask)?;
            let lane32 = e.index_cast(lane, e.int_type(32))?;
            let mut inclusive = padded;
            for offset in [1, 2, 4, 8, 16] {
                let other = shuffle(&e, inclusive, offset, "up")?;
                let offset = e.int(32, i64::from(offset))?;
                let has = e.cmpi(CmpiPredicate::Uge, lane32, offset)?;
                let other = e.select(has, other, zero)?;
                inclusive = e.addi(inclusive, other)?;
            }
            let last_lane = e.index(31)?;
            let is_last = e.cmpi(CmpiPredicate::Eq, lane, last_lane)?;
            e.if_then(is_last, |e| {
                e.store(inclusive, sums, warp);
                Ok(())
            })?;
            e.barrier();
            let before = e.cell(zero)?;
            let first_warp = e.index(0)?;
            let one_index = e.index(1)?;
            e.for_range(first_warp, warp, one_index, |e, w| {
                let sum = e.load(sums, w)?;
                let acc = e.get(before)?;
                let acc = e.addi(acc, sum)?;
                e.set(before, acc)
            })?;
            let before = e.get(before)?;
            let end = e.addi(before, inclusive)?;
            let start = e.subi(end, padded)?;
            e.if_then(is_expert, |e| {
                e.for_const(0, WARPS, 1, |e, w| {
                    let at = e.muli(w, experts_v)?;
                    let at = e.addi(at, tid)?;
                    let offset = e.load(counts, at)?;
                    let position = e.addi(offset, start)?;
                    e.store(position, counts, at);
                    Ok(())
                })?;
                write_tiles(&e, tiles, tile, tid, start, end)
            })?;
            e.barrier();

            // 3. Scatter, stable within each warp's step.
            let bits = 64 - (self.experts - 1).leading_zeros();
            let one32 = e.int(32, 1)?;
            let below = e.shli(one32, lane32)?;
            let below = e.subi(below, one32)?;
            e.for_const(0, steps, 1, |e, step| {
                let (r, x, valid) =
                    routed_row(&e, indices, experts, routed, chunk_start, step, lane)?;
                let valid32 = e.extui(valid, e.int_type(32))?;
                let mut peers = ballot(&e, valid32)?;
                let x32 = e.index_cast(x, e.int_type(32))?;
                for b in 0..bits {
                    let shift = e.int(32, i64::from(b))?;
                    let bit = e.shrui(x32, shift)?;
                    let one = e.int(32, 1)?;
                    let bit = e.andi(bit, one)?;
                    let set = ballot(&e, bit)?;
                    let all = e.int(32, -1)?;
                    let clear = e.push(melior::dialect::arith::xori(set, all, e.location))?;
                    let zero = e.int(32, 0)?;
                    let is_set = e.cmpi(CmpiPredicate::Ne, bit, zero)?;
                    let same = e.select(is_set, set, clear)?;
                    peers = e.andi(peers, same)?;
                }
                let earlier = e.andi(peers, below)?;
                let rank = popc(&e, earlier)?;
                let group = popc(&e, peers)?;
                let at = e.addi(warp_counts, x)?;
                e.if_then(valid, |e| {
                    let base = e.load(counts, at)?;
                    let position = e.addi(base, rank)?;
                    let position = e.index_cast(position, e.index_type())?;
                    let r32 = e.index_cast(r, e.int_type(32))?;
                    e.store(r32, rows, position);
                    Ok(())
                })?;
                e.barrier();
                let one = e.int(32, 1)?;
                let last_rank = e.subi(group, one)?;
                let is_last = e.cmpi(CmpiPredicate::Eq, rank, last_rank)?;
                let advances = e.andi(valid, is_last)?;
                e.if_then(advances, |e| {
                    let base = e.load(counts, at)?;
                    let next = e.addi(base, group)?;
                    e.store(next, counts, at);
                    Ok(())
                })?;
                e.barrier();
                Ok(())
            })
        })
    }
}

/// Row `r = chunk_start + 32·step + lane` of a warp's chunk: `r`, its expert as an index (0
/// when invalid) and whether it is a routed row with an expert in `0..experts`.
fn routed_row<'c, 'a>(
    e: &Emit<'c, 'a>,
    indices: Value<'c, '_>,
    experts: i64,
    routed: i64,
    chunk_start: Value<'c, '_>,
    step: Value<'c, '_>,
    lane: Value<'c, '_>,
) -> Result<(Value<'c, 'a>, Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
    let thirty_two = e.index(32)?;
    let r = e.muli(step, thirty_two)?;
    let r = e.addi(r, chunk_start)?;
    let r = e.addi(r, lane)?;
    let routed_v = e.index(routed)?;
    let in_range = e.lt(r, routed_v)?;
    let zero = e.index(0)?;
    let safe = e.select(in_range, r, zero)?;
    let index = e.load(indices, safe)?;
    let (x, valid) = e.checked_index(index, experts)?;
    let valid = e.andi(valid, in_range)?;
    Ok((r, x, valid))
}

/// The expert of routed row `r` as an index (0 when invalid) and whether it is in 0..experts.
fn expert_of<'c, 'a>(
    e: &Emit<'c, 'a>,
    indices: Value<'c, '_>,
    experts: i64,
    r: Value<'c, 'a>,
) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
    let index = e.load(indices, r)?;
    e.checked_index(index, experts)
}

/// `tiles[t] = expert` for the tiles from the one holding position `begin` up to (not
/// including) the one holding `end` (`i32` positions; `end` a tile boundary or rounded up by the
/// caller).
fn write_tiles<'c>(
    e: &Emit<'c, '_>,
    tiles: Value<'c, '_>,
    tile: i64,
    expert: Value<'c, '_>,
    begin: Value<'c, '_>,
    end: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let shift = e.int(32, tile.trailing_zeros() as i64)?;
    let first = e.shrui(begin, shift)?;
    let last = e.shrui(end, shift)?;
    let first = e.index_cast(first, e.index_type())?;
    let last = e.index_cast(last, e.index_type())?;
    let one = e.index(1)?;
    let expert = e.index_cast(expert, e.int_type(32))?;
    e.for_range(first, last, one, |e, t| {
        e.store(expert, tiles, t);
        Ok(())
    })
}

/// `memref[at] += value` (an `i32`), atomically (shared memory: `atom.shared.add`).
pub(super) fn atomic_add<'c>(
    e: &Emit<'c, '_>,
    memref: Value<'c, '_>,
    at: Value<'c, '_>,
    value: Value<'c, '_>,
) -> Result<(), CodegenError> {
    // `arith::AtomicRMWKind::addi`, an i64 enum attribute.
    let kind = IntegerAttribute::new(e.int_type(64), 1);
    e.push(
        OperationBuilder::new("memref.atomic_rmw", e.location)
            .add_operands(&[value, memref, at])
            .add_attributes(&[(Identifier::new(e.context, "kind"), kind.into())])
            .add_results(&[e.int_type(32)])
            .build()?,
    )?;
    Ok(())
}

/// The lanes of the warp whose `flag` (an `i32`) is non-zero, as a mask (`vote.sync.ballot`).
pub(super) fn ballot<'c, 'a>(e: &Emit<'c, 'a>, flag: Value<'c, '_>) -> Emitted<'c, 'a> {
    e.inline_asm(
        "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $1, 0;\n\tvote.sync.ballot.b32 $0, p, 0xffffffff;\n\t}",
        "=r,r",
        &[flag],
        e.int_type(32),
    )
}

/// The set bits of `x` (an `i32`).
pub(super) fn popc<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, '_>) -> Emitted<'c, 'a> {
    e.inline_asm("popc.b32 $0, $1;", "=r,r", &[x], e.int_type(32))
}
