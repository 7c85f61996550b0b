//! `moe_dispatch`: the permutation that groups the rows of a routed-expert GEMM by expert, in
//! DeepGEMM's contiguous layout — each expert's rows `r = t·top_k + slot` in increasing order,
//! its segment padded to a multiple of the GEMM's tile rows (16 for `mma.sync`, 64 for wgmma),
//! `rows[p] = r` (−1 for padding), and `tiles[p / tile_rows]` = the expert of each tile (−1 for
//! unused tiles).
//!
//! The spec and CPU reference are `dsc_kernels::ops::moe_dispatch`; it runs once per layer and
//! its result is shared by the layer's gate, up and down GEMMs. Up to [`PARALLEL_EXPERTS`]
//! experts it runs on the whole GPU ([`DispatchGrid`]): blocks of 1024 threads, each owning a
//! contiguous chunk of the routed rows (at least 1024), each of its 32 warps a contiguous part
//! of that chunk, in steps of 32 rows. Segment starts need every block's counts, and no block
//! may wait for another inside a launch (CTAs need not run together; the emulator runs them
//! one after another), so a grid of more than one block takes two launches: first
//! [`super::moe_dispatch_counts`] writes each block's per-expert counts into
//! `counts[blocks × experts]` (an internal tensor of the plan), then each block of this kernel
//! runs
//! 1. histogram: per-warp, per-expert counts of the block's chunk in shared memory (shared
//!    atomics);
//! 2. scan: thread `x` sums expert `x`'s counts over the blocks (its total, and its rows in the
//!    blocks before this one) and turns its 32 warp counts into warp offsets within the block;
//!    the totals padded to a tile, a block scan (warp shuffles, then the warps' sums) gives the
//!    segment starts, the same in every block. Expert `x`'s padding rows (−1) and tiles are
//!    written by block `x mod blocks`, the positions and tiles past the last segment by the
//!    whole grid, so each position is written once, whatever order the blocks run in;
//! 3. scatter: each step, a lane's rank among the lanes of its warp with the same expert (8
//!    ballots on the expert's bits, a population count below the lane) plus its warp's cursor
//!    for that expert is the row's position; the last such lane advances the cursor.
//!
//! A grid of one block (few rows) skips the counts launch: its totals are its own counts. Rows
//! of an expert thus keep increasing `r` (chunks in block order, then warp order, steps in
//! order, lanes in order): the reference's layout, bit for bit. Beyond [`PARALLEL_EXPERTS`]
//! experts, one thread runs the reference's counting sort step for step. (The emulator runs
//! both launches whole even when it samples CTAs: later launches take addresses from the
//! layout.)

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::dialect::memref;
use melior::ir::attribute::IntegerAttribute;
use melior::ir::operation::OperationBuilder;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Identifier, Type, Value};
use serde::Serialize;

use super::moe::shuffle;
use super::moe_dispatch_counts::MoeDispatchCounts;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Rows of one `mma.sync` tile.
pub const TILE_ROWS: u64 = 16;

/// Threads per block of the parallel kernel's launches.
pub(super) const THREADS: i64 = 1024;

/// Warps per block of the parallel kernel.
const WARPS: i64 = THREADS / 32;

/// The most experts the parallel kernel takes: its per-warp counts (`WARPS × experts` i32) stay
/// within 32 KiB of shared memory.
pub const PARALLEL_EXPERTS: u64 = 256;

/// Routed rows per block below which the grid gets no more blocks: one 32-row step per warp,
/// the fewest a block of [`THREADS`] takes (a block's scan is the same whatever its chunk).
const MIN_BLOCK_ROWS: u64 = 1024;

/// The most blocks: each block of the scatter reads every block's counts of its experts, so
/// the reads grow with the square of the blocks.
pub const MAX_BLOCKS: u64 = 128;

/// The grid of the parallel kernel: how the routed rows split into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchGrid {
    /// Routed rows per block (the last block's chunk may be ragged): a multiple of
    /// [`THREADS`], so that every warp's part is whole 32-row steps.
    pub block_rows: u64,
    /// Blocks (at least one).
    pub blocks: u64,
}

impl DispatchGrid {
    /// The grid over `routed` rows: chunks of [`MIN_BLOCK_ROWS`], larger beyond
    /// [`MAX_BLOCKS`] blocks.
    pub fn new(routed: u64) -> Self {
        let threads = THREADS as u64;
        let block_rows = routed
            .div_ceil(MAX_BLOCKS)
            .div_ceil(threads)
            .saturating_mul(threads)
            .max(MIN_BLOCK_ROWS);
        DispatchGrid {
            block_rows,
            blocks: routed.div_ceil(block_rows).max(1),
        }
    }
}

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
        dsc_kernels::ops::moe_dispatch::SPEC
    }

    /// Padded rows: enough for every expert's segment rounded up to `tile_rows`.
    pub fn capacity(&self) -> u64 {
        dsc_kernels::ops::moe_dispatch::dispatch_capacity(
            self.tokens * self.top_k,
            self.experts,
            self.tile_rows,
        )
    }

    /// The grid of the parallel kernel.
    pub fn grid(&self) -> DispatchGrid {
        DispatchGrid::new(self.tokens * self.top_k)
    }

    /// The launch that must run before this one, writing the per-block counts it reads: `Some`
    /// for a parallel grid of more than one block.
    pub fn counts(&self) -> Option<MoeDispatchCounts> {
        (self.parallel() && self.grid().blocks > 1).then_some(MoeDispatchCounts {
            tokens: self.tokens,
            top_k: self.top_k,
            experts: self.experts,
        })
    }

    /// `(indices, rows, tiles)`, with `counts` (what [`MoeDispatch::counts`] writes) after
    /// `indices` when the grid has more than one block.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![Param::new("indices", DType::I32, self.tokens * self.top_k)];
        if let Some(counts) = self.counts() {
            params.push(Param::new("counts", DType::I32, counts.counts_len()));
        }
        params.extend(self.layout_params());
        params
    }

    /// `(rows, tiles)`: the layout it writes, which the grouped GEMMs read.
    pub fn layout_params(&self) -> [Param; 2] {
        [
            Param::new("rows", DType::I32, self.capacity()),
            Param::new("tiles", DType::I32, self.capacity() / self.tile_rows),
        ]
    }

    /// [`MoeDispatch::grid`]'s blocks of [`THREADS`] threads (one thread beyond
    /// [`PARALLEL_EXPERTS`] experts).
    pub fn launch(&self) -> Launch {
        if self.parallel() {
            Launch::blocks(self.grid().blocks, THREADS as u32)
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
            self.build_parallel(module, entry)
        } else {
            self.build_serial(module, entry)
        }
    }

    /// The one-thread kernel: the reference's counting sort.
    fn build_serial(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
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
        let params = self.params();
        let types = param_types(context, &params);
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let experts = self.experts as i64;
        let i32_type = IntegerType::new(context, 32).into();
        let shared: Vec<Type> = vec![
            MemRefType::new(i32_type, &[WARPS * experts], None, workgroup).into(),
            MemRefType::new(i32_type, &[WARPS], None, workgroup).into(),
        ];
        let grid = self.grid();
        let blocks = grid.blocks as i64;
        let with_counts = self.counts().is_some();
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, params.len() + shared.len())?;
            let indices = args[0];
            let block_counts = with_counts.then_some(args[1]);
            // rows, tiles, then the two shared buffers.
            let n = params.len();
            let (rows, tiles, counts, sums) = (args[n - 2], args[n - 1], args[n], args[n + 1]);
            let routed = (self.tokens * self.top_k) as i64;
            let capacity = self.capacity() as i64;
            let tile = self.tile_rows as i64;
            // Each warp's part of the block's chunk, in steps of 32.
            let warp_rows = grid.block_rows as i64 / WARPS;
            let steps = warp_rows / 32;

            let tid = e.thread_x()?;
            let bid = e.block_index(Dimension::X)?;
            let thirty_two = e.index(32)?;
            let warp = e.divui(tid, thirty_two)?;
            let lane = e.remui(tid, thirty_two)?;
            let threads = e.index(THREADS)?;
            let experts_v = e.index(experts)?;
            let warp_counts = e.muli(warp, experts_v)?;
            let block_rows = e.index(grid.block_rows as i64)?;
            let block_start = e.muli(bid, block_rows)?;
            let warp_rows_v = e.index(warp_rows)?;
            let warp_start = e.muli(warp, warp_rows_v)?;
            let chunk_start = e.addi(block_start, warp_start)?;

            let minus_one = e.int(32, -1)?;
            let zero = e.int(32, 0)?;
            let all_counts = e.index(WARPS * experts)?;
            e.for_range(tid, all_counts, threads, |e, i| {
                e.store(zero, counts, i);
                Ok(())
            })?;
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

            // 2. Scan: warp offsets within the block, each expert's total and rows in earlier
            // blocks, padded totals, segment starts; padding and tiles.
            let is_expert = e.lt(tid, experts_v)?;
            let total = e.cell(zero)?;
            let earlier = e.cell(zero)?;
            e.if_then(is_expert, |e| {
                e.for_const(0, WARPS, 1, |e, w| {
                    let at = e.muli(w, experts_v)?;
                    let at = e.addi(at, tid)?;
                    let count = e.load(counts, at)?;
                    let running = e.get(total)?;
                    e.store(running, counts, at);
                    let running = e.addi(running, count)?;
                    e.set(total, running)
                })?;
                let Some(block_counts) = block_counts else {
                    return Ok(());
                };
                // Every block's counts of this expert, in block order.
                let zero = e.int(32, 0)?;
                e.set(total, zero)?;
                e.for_const(0, blocks, 1, |e, b| {
                    let at = e.muli(b, experts_v)?;
                    let at = e.addi(at, tid)?;
                    let count = e.load(block_counts, at)?;
                    let running = e.get(total)?;
                    let running = e.addi(running, count)?;
                    e.set(total, running)?;
                    let before = e.lt(b, bid)?;
                    let zero = e.int(32, 0)?;
                    let count = e.select(before, count, zero)?;
                    let running = e.get(earlier)?;
                    let running = e.addi(running, count)?;
                    e.set(earlier, running)
                })
            })?;
            let total = e.get(total)?;
            let earlier = e.get(earlier)?;
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
            // The padded rows of the warps before this one, and of all (where the tail starts).
            let before = e.cell(zero)?;
            let used = e.cell(zero)?;
            e.for_const(0, WARPS, 1, |e, w| {
                let sum = e.load(sums, w)?;
                let acc = e.get(used)?;
                let acc = e.addi(acc, sum)?;
                e.set(used, acc)?;
                let earlier_warp = e.lt(w, warp)?;
                let zero = e.int(32, 0)?;
                let sum = e.select(earlier_warp, sum, zero)?;
                let acc = e.get(before)?;
                let acc = e.addi(acc, sum)?;
                e.set(before, acc)
            })?;
            let before = e.get(before)?;
            let used = e.get(used)?;
            let end = e.addi(before, inclusive)?;
            let start = e.subi(end, padded)?;
            let blocks_v = e.index(blocks)?;
            let owner = e.remui(tid, blocks_v)?;
            let owns = e.cmpi(CmpiPredicate::Eq, owner, bid)?;
            let owns = e.andi(owns, is_expert)?;
            e.if_then(is_expert, |e| {
                let base = e.addi(start, earlier)?;
                e.for_const(0, WARPS, 1, |e, w| {
                    let at = e.muli(w, experts_v)?;
                    let at = e.addi(at, tid)?;
                    let offset = e.load(counts, at)?;
                    let position = e.addi(offset, base)?;
                    e.store(position, counts, at);
                    Ok(())
                })
            })?;
            e.if_then(owns, |e| {
                let filled = e.addi(start, total)?;
                let filled = e.index_cast(filled, e.index_type())?;
                let end_index = e.index_cast(end, e.index_type())?;
                let one = e.index(1)?;
                e.for_range(filled, end_index, one, |e, p| {
                    let minus_one = e.int(32, -1)?;
                    e.store(minus_one, rows, p);
                    Ok(())
                })?;
                write_tiles(&e, tiles, tile, tid, start, end)
            })?;
            // Past the last segment, the grid's threads in turn.
            let stride = e.index(blocks * THREADS)?;
            let first_thread = e.muli(bid, threads)?;
            let first_thread = e.addi(first_thread, tid)?;
            let used = e.index_cast(used, e.index_type())?;
            let tail = e.addi(used, first_thread)?;
            let capacity_v = e.index(capacity)?;
            e.for_range(tail, capacity_v, stride, |e, p| {
                e.store(minus_one, rows, p);
                Ok(())
            })?;
            let tile_v = e.index(tile)?;
            let used_tiles = e.divui(used, tile_v)?;
            let tail_tiles = e.addi(used_tiles, first_thread)?;
            let all_tiles = e.index(capacity / tile)?;
            e.for_range(tail_tiles, all_tiles, stride, |e, t| {
                e.store(minus_one, tiles, t);
                Ok(())
            })?;
            e.barrier();

            // 3. Scatter, stable within each warp's step.
            let bits = 64 - self.experts.saturating_sub(1).leading_zeros();
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
                    let clear = e.xori(set, all)?;
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
    let (x, valid) = expert_at(e, indices, experts, routed, r)?;
    Ok((r, x, valid))
}

/// The expert of routed row `r` as an index (0 when invalid) and whether it counts: `r` below
/// `routed` (read as row 0 otherwise, so the load stays in bounds) and its expert in
/// `0..experts`.
pub(super) fn expert_at<'c, 'a>(
    e: &Emit<'c, 'a>,
    indices: Value<'c, '_>,
    experts: i64,
    routed: i64,
    r: Value<'c, 'a>,
) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
    let routed_v = e.index(routed)?;
    let in_range = e.lt(r, routed_v)?;
    let zero = e.index(0)?;
    let safe = e.select(in_range, r, zero)?;
    let index = e.load(indices, safe)?;
    let (x, valid) = e.checked_index(index, experts)?;
    let valid = e.andi(valid, in_range)?;
    Ok((x, valid))
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
