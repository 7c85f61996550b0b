//! `grouped_linear_wgrad`: the k-grouped weight gradient of the routed experts, `dw[e] =
//! Σ dy[r]ᵀ · x[r]` over the routed rows `r = t·top_k + slot` whose expert is `e`, in f32 as
//! the CPU reference (`dsc_kernels::ops::grad::grouped_linear_wgrad`) or in FP8 (below); zeros
//! for an expert no row chose; x one row per token or per slot.
//!
//! One block of [`THREADS`] per (expert, [`TILE`] rows of `out_features`, or [`FP8_ROWS`] in the
//! FP8 form with groups of at most 256 rows); it walks every [`TILE`]-column tile of
//! `in_features` itself, so that it finds its expert's rows once:
//! 1. scan: the block reads the indices [`THREADS`] rows a step and appends the rows of its
//!    expert to a list in shared memory, in row order (a warp ballot, the lane's rank among
//!    the hits below it, the warps' counts summed in order);
//! 2. once the list could overflow on the next step (more than [`LIST`] − [`THREADS`] rows),
//!    and after the last step, every column tile of the block's row tile sums the listed rows:
//!    [`STAGE`] rows at a time, their `dy` and `x` tiles staged in shared memory, each thread
//!    accumulating 4 × 4 outputs (rows `ty + 16i`, columns `tx + 16j`: conflict-free shared
//!    reads, coalesced stores) in registers, one product and one f32 sum per row in row order.
//!    A later flush (an expert with more than ~[`LIST`] rows) reloads its partial sums from `dw`
//!    and goes on adding, so every element is one f32 sum from +0 in row order — the
//!    reference's rows in its order, though its GEMM library sums them in its own blocks
//!    (the results agree as any two f32 GEMMs do, not bit for bit). With BF16 operands (the
//!    all-BF16 recipe) the products run on the tensor cores instead: [`BF16_CHUNK`] rows at a
//!    time are staged K-major as bf16 pairs and each warp chains one `mma.sync m16n8k16` per 8
//!    columns of its 16 × 32 part of the tile into the accumulators (the FP8 form's layout,
//!    below) — exact products summed in row order, as the CUDA cores' (on the emulator, bit
//!    for bit).
//!
//! **The FP8 form** (`fp8`, the recipe's Wgrad of the routed experts, DESIGN.md §8; the
//! reference is `dsc_kernels::ops::grad::grouped_linear_wgrad_fp8`): an expert's rows are cut
//! into groups of `tile` in row order, counted from its first row — a flush before the last
//! one sums only whole groups and keeps the rest at the front of the list. The products run on
//! the tensor cores, on FP8 codes stored K-major in shared memory (the rows are the contracted
//! dimension: a column's codes are consecutive words, 4 rows a word, the lowest row in the
//! lowest byte, as an MMA fragment register holds them):
//! 1. once per flush, the **dy cache**: per group, each column's amax over the group's rows
//!    (NaNs skipped) gives its scale, kept per group, and every element of the block's row
//!    tile is quantized (`v / s`, `cvt.rn.satfinite`) into the cache in dynamic shared memory
//!    (a column's codes a pitch of 4 banks apart);
//! 2. per column tile and group, x's scales the same way, then [`CHUNK`] rows at a time x's
//!    codes, and each warp runs one `mma.sync m16n8k32` per m16 tile and 8 columns of its part
//!    of the tile (warp `w`: columns `32 ⌊w / 4⌋ ..+ 32`, and the rows `(w mod 4)` of four
//!    equal parts: 32 of a 128-row block, whose list is [`FP8_LIST`] rows to leave its dy
//!    cache room, or 16 of a 64-row one) with its A fragments from the cache. An interval's MMAs chain from +0 in row order, then the partial is promoted,
//!    `acc += partial · (s_dy · s_x)`, on the CUDA cores: the reference's bits under the
//!    accumulator the MMAs follow (`--accumulator exact` on the emulator: in-order f32 sums;
//!    its Hopper model with `hopper`), as the other FP8 GEMMs.
//!
//! Groups of at most [`X_GROUP_MAX`] rows read x's rows once a column tile (held in registers
//! for the amax, then quantized), wider ones twice; and once more for every row tile of the
//! expert: that staging, not the MMAs, is the FP8 form's cost. The 128-row blocks halve it;
//! they take ~245 registers (one block an SM) and 100,352 bytes of shared memory, within
//! sm_89's 101,376.
//!
//! An index outside `0..experts` (the reference refuses it) equals no block's expert: its row
//! is left out, and nothing is read through it.
//!
//! Cost: every block reads all `T·k` indices (4 bytes each, from L2): `E · ⌈N / 64⌉ · 4·T·k`
//! bytes, 1 GiB for DeepSeek-V3's up projection (256 experts, N = 2048, T·k = 32768) — about
//! 0.1 ms of L2 bandwidth; two barriers a scan step. The f32 form's products of f32 operands
//! run on the CUDA cores (~1 TFLOP for that projection, ~16 ms), one shared load per two
//! multiply-adds. The FP8 form's products are on the tensor cores (above). An
//! expert's blocks run its column tiles one after another, so a heavily loaded
//! expert is a long tail. The staging is predicated loads, no branches, and the kernel
//! asks for one block an SM (`.minnctapersm 1`: ptxas for sm_90 otherwise caps it at 40
//! registers and spills).

use dsc_ir::DType;
use dsc_kernels::ops::grad::GroupedWgradFp8;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::mma::{fp8_mma_instruction, mma_into};
use super::moe_dispatch::{ballot, popc};
use super::tma_ring::dynamic_shared;
use super::vector_access::{global_load_if, global_store_if};
use super::vector_access::{shared_load_u32, shared_store_u32};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Threads per block (16 × 16).
pub const THREADS: u32 = 256;
/// Columns of a block's output tile, and its rows but in the FP8 form's [`FP8_ROWS`].
pub const TILE: u64 = 64;
/// Outputs a thread accumulates along each of the two axes (`TILE / 16`).
const PER_THREAD: u64 = TILE / 16;
/// Rows the list in shared memory holds.
pub const LIST: u64 = 1024;
/// Rows of `dw` a block of the FP8 form owns when its groups are at most [`FP8_LIST`] −
/// [`THREADS`] rows: twice [`TILE`], so that each staged row of x serves twice the outputs.
pub const FP8_ROWS: u64 = 128;
/// The list of such a block: half of [`LIST`], so that its dy cache (`FP8_ROWS` columns) fits
/// beside the rest in sm_89's 99 KiB of shared memory.
pub const FP8_LIST: u64 = 512;
/// Listed rows staged in shared memory at a time.
pub const STAGE: u64 = 16;
/// Warps per block.
const WARPS: i64 = THREADS as i64 / 32;
/// Rows the FP8 form quantizes and multiplies at a time: one `mma.sync m16n8k32` deep.
pub const CHUNK: u64 = 32;
/// Words of a column's codes in shared memory: [`CHUNK`] codes (8 words) and one word of
/// padding, an odd pitch, so that a warp's stores (32 columns) and its fragment reads (8
/// columns × 4 words) spread over the banks.
pub const PITCH: u64 = CHUNK / 4 + 1;
/// Rows the BF16 form multiplies at a time: one `mma.sync m16n8k16` deep.
pub const BF16_CHUNK: u64 = 16;
/// Words of a column's values in the BF16 form's tiles: [`BF16_CHUNK`] values (8 words) and 4
/// words more, so that a fragment read (8 columns × 4 words) hits 32 banks.
const BF16_PITCH: u64 = BF16_CHUNK / 2 + 4;
/// The BF16 products' MMA.
const BF16_MMA: &str = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
/// The widest FP8 group whose x rows a block holds in registers at once (the group's 64
/// columns over 256 threads: `tile / 4` values a thread), quantized in one pass.
pub const X_GROUP_MAX: u64 = 128;
/// Words of a column's codes in the x codes of a whole group: [`X_GROUP_MAX`] rows and 4
/// words more, a pitch of 4 banks (as the dy cache's).
const X_GROUP_PITCH: u64 = X_GROUP_MAX / 4 + 4;
/// The widest FP8 group of rows: a flush keeps the rows past its last whole group (fewer than
/// a tile) in the list, where a scan step's [`THREADS`] rows must still fit.
const MAX_TILE: u64 = 512;

/// The k-grouped Wgrad of `grouped_linear` over `experts` experts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupedLinearWgrad {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Experts.
    pub experts: u64,
    /// Rows of each expert's weight (`N`).
    pub out_features: u64,
    /// Columns of each expert's weight (`K`).
    pub in_features: u64,
    /// Whether x has a row per (token, slot) rather than per token.
    pub x_per_slot: bool,
    /// Dtype of `dy`.
    pub grad: DType,
    /// Dtype of `x`.
    pub input: DType,
    /// The FP8 form (the recipe's: both operands quantized along each expert's rows), or
    /// `None` for f32 products of the operands as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp8: Option<GroupedWgradFp8>,
}

impl GroupedLinearWgrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "grouped_linear_wgrad"
    }

    fn routed(&self) -> u64 {
        self.tokens * self.top_k
    }

    /// `(dy, x, indices, dw)`.
    pub fn params(&self) -> Vec<Param> {
        let x_rows = if self.x_per_slot {
            self.routed()
        } else {
            self.tokens
        };
        vec![
            Param::new("dy", self.grad, self.routed() * self.out_features),
            Param::new("x", self.input, x_rows * self.in_features),
            Param::new("indices", DType::I32, self.routed()),
            Param::new(
                "dw",
                DType::F32,
                self.experts * self.out_features * self.in_features,
            ),
        ]
    }

    /// Row tiles of an expert's weight (at least one, so that a block's expert is always
    /// its index over them).
    fn row_tiles(&self) -> u64 {
        self.out_features.div_ceil(self.rows()).max(1)
    }

    /// Whether the FP8 form takes [`FP8_ROWS`] rows a block with a list of [`FP8_LIST`]: its
    /// groups (at most a list less a scan step) allow it.
    fn wide_rows(&self) -> bool {
        self.fp8
            .is_some_and(|f| f.tile as u64 <= FP8_LIST - u64::from(THREADS))
    }

    /// Rows of `dw` a block owns.
    fn rows(&self) -> u64 {
        if self.wide_rows() { FP8_ROWS } else { TILE }
    }

    /// Rows the block's list holds.
    fn list_len(&self) -> u64 {
        if self.wide_rows() { FP8_LIST } else { LIST }
    }

    /// Words of a column in the FP8 form's dy cache: the list's rows and 4 words more, a pitch
    /// of 4 banks, so that a fragment read (8 columns × 4 words) hits 32 banks.
    fn dy_pitch(&self) -> u64 {
        self.list_len() / 4 + 4
    }

    /// The most FP8 groups one flush holds (groups are whole MMAs deep).
    fn max_groups(&self) -> u64 {
        self.list_len() / CHUNK
    }

    /// Outputs a thread holds: 4 × 4, or the MMA layout's 16 per 16 rows of a warp.
    fn cells(&self) -> u64 {
        16 * self.rows() / TILE
    }

    /// One block of [`THREADS`] per (expert, row tile).
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.experts * self.row_tiles(), THREADS)
    }

    /// The row of x that routed row `row` reads: itself, or its token's with x a row per token.
    fn x_row<'c, 'a>(&self, e: &Emit<'c, 'a>, row: Value<'c, 'a>) -> Emitted<'c, 'a> {
        if self.x_per_slot {
            Ok(row)
        } else {
            e.divui(row, e.index(self.top_k.max(1) as i64)?)
        }
    }

    /// Dynamic shared memory of a block: the FP8 form's dy cache, the codes of the listed rows of
    /// the block's row tile, K-major (`dy_pitch` words a column).
    pub fn dynamic_shared_bytes(&self) -> u64 {
        match self.fp8 {
            Some(_) => self.rows() * self.dy_pitch() * 4,
            None => 0,
        }
    }

    /// Whether the f32 form (no `fp8`) of BF16 operands multiplies on the tensor cores: their
    /// products are exact in f32, and an MMA chain over the rows in order is the CUDA cores'
    /// sum in that order.
    fn bf16_mma(&self) -> bool {
        self.fp8.is_none() && self.grad == DType::Bf16 && self.input == DType::Bf16
    }

    /// Whether the FP8 form holds a group's x rows in registers and quantizes them in one pass
    /// ([`Self::stage_x_group`]), rather than a chunk at a time.
    fn x_in_registers(&self) -> bool {
        self.fp8.is_some_and(|f| f.tile as u64 <= X_GROUP_MAX)
    }

    /// Words of a column in the FP8 form's x codes: a whole group's, or one chunk's.
    fn x_pitch(&self) -> u64 {
        if self.x_in_registers() {
            X_GROUP_PITCH
        } else {
            PITCH
        }
    }

    /// Why the kernel cannot take these shapes, if it cannot: rows and experts are `i32`, and
    /// an FP8 group of rows must fit in the list beside a scan step's rows.
    pub fn supported(&self) -> Result<(), String> {
        let limit = i32::MAX as u64;
        if self.experts > limit || self.routed() > limit {
            return Err(format!(
                "{} experts and {} routed rows: at most {limit} of each",
                self.experts,
                self.routed()
            ));
        }
        if let Some(f) = &self.fp8 {
            if !f.format.is_fp8() {
                return Err(format!("{} is not an FP8 format", f.format));
            }
            let (tile, interval) = (f.tile as u64, f.interval as u64);
            if tile > MAX_TILE
                || interval == 0
                || !interval.is_multiple_of(CHUNK)
                || !tile.is_multiple_of(interval)
            {
                return Err(format!(
                    "an FP8 tile of {tile} rows and an interval of {interval}: the tile at \
                     most {MAX_TILE}, a multiple of the interval, itself a multiple of {CHUNK}"
                ));
            }
        }
        Ok(())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(CodegenError::invalid_kernel(entry))?;
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let i32_type: Type = IntegerType::new(context, 32).into();
        let f32_type = Type::float32(context);
        let mut shared: Vec<Type> = vec![
            MemRefType::new(i32_type, &[WARPS], None, workgroup).into(),
            MemRefType::new(i32_type, &[self.list_len() as i64], None, workgroup).into(),
            MemRefType::new(f32_type, &[(STAGE * self.rows()) as i64], None, workgroup).into(),
            MemRefType::new(f32_type, &[(STAGE * TILE) as i64], None, workgroup).into(),
        ];
        if self.bf16_mma() {
            // A chunk's rows of dy and of x, K-major bf16 pairs.
            for _ in 0..2 {
                let words = (TILE * BF16_PITCH) as i64;
                shared.push(MemRefType::new(i32_type, &[words], None, workgroup).into());
            }
        }
        if self.fp8.is_some() {
            // The scales: x's columns of the column tile, then dy's columns of the row tile for
            // each group of the flush; then a chunk's codes of x, K-major.
            let scales = TILE + self.max_groups() * self.rows();
            shared.push(MemRefType::new(f32_type, &[scales as i64], None, workgroup).into());
            let words = TILE * self.x_pitch();
            shared.push(MemRefType::new(i32_type, &[words as i64], None, workgroup).into());
        }
        // At least one step, so that an empty routing still writes its zeros.
        let steps = self.routed().div_ceil(u64::from(THREADS)).max(1) as i64;
        let body = |block: &melior::ir::Block<'_>, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let dy_cache = match self.fp8 {
                Some(_) => {
                    let base = e.address_of(dynamic_shared(&e, entry)?)?;
                    Some(e.trunci(base, e.int_type(32))?)
                }
                None => None,
            };
            let tid = e.thread_x()?;
            let b = e.block_index(Dimension::X)?;
            let row_tiles = e.index(self.row_tiles() as i64)?;
            let expert = e.divui(b, row_tiles)?;
            let n0 = e.muli(e.remui(b, row_tiles)?, e.index(self.rows() as i64)?)?;
            let zero_f = e.f32(0.0)?;
            // Entry-block cells (promoted to registers): the list's length, whether `dw` holds
            // no partial sums yet, and the thread's outputs.
            let count = e.cell(e.index(0)?)?;
            let first = e.cell(e.int(1, 1)?)?;
            let acc = (0..self.cells())
                .map(|_| e.cell(zero_f))
                .collect::<Result<Vec<_>, _>>()?;
            // The FP8 form's partial sums and the thread's column amax.
            let fp8_cells = (0..self.cells() + 1)
                .filter(|_| self.fp8.is_some())
                .map(|_| e.cell(zero_f))
                .collect::<Result<Vec<_>, _>>()?;
            let block = Blk {
                args: &args,
                tid,
                expert,
                n0,
                count,
                first,
                acc: &acc,
                fp8_cells: &fp8_cells,
                dy_cache,
            };
            let in_grid = e.lt(expert, e.index(self.experts as i64)?)?;
            e.if_then(in_grid, |e| {
                e.for_const(0, steps, 1, |e, step| {
                    self.scan_step(&e, &block, step)?;
                    let listed = e.get(count)?;
                    let nearly_full = e.index((self.list_len() - u64::from(THREADS)) as i64)?;
                    let full = e.lt(nearly_full, listed)?;
                    let last = e.cmpi(CmpiPredicate::Eq, step, e.index(steps - 1)?)?;
                    let flush = e.ori(full, last)?;
                    e.if_then(flush, |e| {
                        let rows = match &self.fp8 {
                            // Whole groups only, but for the last flush: a group's rows are
                            // counted from the expert's first.
                            Some(f) => {
                                let tile = e.index(f.tile as i64)?;
                                let whole = e.muli(e.divui(listed, tile)?, tile)?;
                                e.select(last, listed, whole)?
                            }
                            None => listed,
                        };
                        self.flush(&e, &block, rows)?;
                        self.keep_tail(&e, &block, rows, listed)?;
                        e.set(first, e.int(1, 0)?)
                    })
                })
            })
        };
        match self.fp8 {
            Some(_) => module.add_kernel_with_shared_and_dynamic(entry, &types, &shared, body)?,
            None => module.add_kernel_with_shared(entry, &types, &shared, body)?,
        }
        // 16 to 32 accumulators (64 with the FP8 form's partials) and the staged operands want
        // 60 to ~250 registers; left to itself, ptxas for sm_90 caps them at 40 (six blocks an
        // SM) and spills.
        module.one_block_per_sm(entry)
    }

    /// Appends the rows of step `step` routed to the block's expert to the list.
    fn scan_step<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        step: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (indices, counts, list) = (blk.args[2], blk.args[4], blk.args[5]);
        let tid = blk.tid;
        let threads = e.index(i64::from(THREADS))?;
        let row = e.addi(e.muli(step, threads)?, tid)?;
        let routed = e.index(self.routed() as i64)?;
        let in_range = e.lt(row, routed)?;
        let zero = e.index(0)?;
        let safe = e.select(in_range, row, zero)?;
        let index = e.load(indices, safe)?;
        let expert = e.index_cast(blk.expert, e.int_type(32))?;
        let is = e.cmpi(CmpiPredicate::Eq, index, expert)?;
        let hit = e.andi(is, in_range)?;
        let mask = ballot(e, e.extui(hit, e.int_type(32))?)?;
        let thirty_two = e.index(32)?;
        let lane = e.remui(tid, thirty_two)?;
        let warp = e.divui(tid, thirty_two)?;
        let one = e.int(32, 1)?;
        let lane32 = e.index_cast(lane, e.int_type(32))?;
        let below = e.subi(e.shli(one, lane32)?, one)?;
        let rank = popc(e, e.andi(mask, below)?)?;
        let lane0 = e.cmpi(CmpiPredicate::Eq, lane, zero)?;
        e.if_then(lane0, |e| {
            let hits = popc(&e, mask)?;
            e.store(hits, counts, warp);
            Ok(())
        })?;
        e.barrier();
        let mut before = e.int(32, 0)?;
        let mut total = e.int(32, 0)?;
        for w in 0..WARPS {
            let n = e.load(counts, e.index(w)?)?;
            let earlier = e.lt(e.index(w)?, warp)?;
            let add = e.select(earlier, n, e.int(32, 0)?)?;
            before = e.addi(before, add)?;
            total = e.addi(total, n)?;
        }
        let listed = e.get(blk.count)?;
        e.if_then(hit, |e| {
            let at = e.addi(before, rank)?;
            let at = e.addi(e.index_cast(at, e.index_type())?, listed)?;
            let row32 = e.index_cast(row, e.int_type(32))?;
            e.store(row32, list, at);
            Ok(())
        })?;
        // The list is complete, and every thread has read the counts, before anyone goes on.
        e.barrier();
        let total = e.index_cast(total, e.index_type())?;
        e.set(blk.count, e.addi(listed, total)?)
    }

    /// Moves the listed rows a flush left (`rows .. listed`, fewer than an FP8 group) to the
    /// front of the list, and counts them.
    fn keep_tail<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        rows: Value<'c, '_>,
        listed: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let Some(f) = &self.fp8 else {
            return e.set(blk.count, e.index(0)?);
        };
        let list = blk.args[5];
        let zero = e.index(0)?;
        let mut moved = Vec::new();
        for q in 0..(f.tile as u64).div_ceil(u64::from(THREADS)) {
            let at = e.addi(e.index((q * u64::from(THREADS)) as i64)?, blk.tid)?;
            let from = e.addi(rows, at)?;
            let ok = e.lt(from, listed)?;
            let row = e.load(list, e.select(ok, from, zero)?)?;
            moved.push((at, ok, row));
        }
        // Every row is read before any is overwritten (the tail is shorter than `rows`).
        e.barrier();
        for (at, ok, row) in moved {
            e.if_then(ok, |e| {
                e.store(row, list, at);
                Ok(())
            })?;
        }
        e.barrier();
        e.set(blk.count, e.subi(listed, rows)?)
    }

    /// Adds the products of the first `rows` listed rows to every column tile of the block's
    /// row tile.
    fn flush<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        listed: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let dw = blk.args[3];
        let sixteen = e.index(16)?;
        let ty = e.divui(blk.tid, sixteen)?;
        let tx = e.remui(blk.tid, sixteen)?;
        let lane = MmaLane::new(e, blk.tid, self.rows() / TILE)?;
        // Each cell's row and column in the tile: the MMA fragments' on the tensor cores (the
        // FP8 and BF16 forms), else the CUDA cores' 4 × 4 (rows `ty + 16i`, columns `tx + 16j`).
        let places = if self.fp8.is_some() || self.bf16_mma() {
            lane.places(e)?
        } else {
            let mut places = Vec::new();
            for i in 0..PER_THREAD {
                for j in 0..PER_THREAD {
                    let row = e.addi(ty, e.index(16 * i as i64)?)?;
                    places.push((row, e.addi(tx, e.index(16 * j as i64)?)?));
                }
            }
            places
        };
        let n_dim = e.index(self.out_features as i64)?;
        let k_dim = e.index(self.in_features as i64)?;
        let plane = e.muli(blk.expert, n_dim)?;
        let first = e.get(blk.first)?;
        if let Some(f) = &self.fp8 {
            self.cache_dy(e, blk, f, listed)?;
        }
        let col_tiles = self.in_features.div_ceil(TILE) as i64;
        e.for_const(0, col_tiles, 1, |e, kt| {
            let k0 = e.muli(kt, e.index(TILE as i64)?)?;
            // Each output: (row, column, in bounds, its dw element).
            let mut outputs = Vec::new();
            for &(row, col) in &places {
                let n = e.addi(blk.n0, row)?;
                let k = e.addi(k0, col)?;
                let inside = e.andi(e.lt(n, n_dim)?, e.lt(k, k_dim)?)?;
                let at = e.addi(e.muli(e.addi(plane, n)?, k_dim)?, k)?;
                outputs.push((inside, at));
            }
            let resume = e.push(melior::dialect::arith::xori(
                first,
                e.int(1, 1)?,
                e.location,
            ))?;
            for (&cell, &(inside, at)) in blk.acc.iter().zip(&outputs) {
                let ok = e.andi(inside, resume)?;
                e.set(cell, element_if(&e, dw, DType::F32, at, ok)?)?;
            }
            let stage = e.index(STAGE as i64)?;
            match &self.fp8 {
                None if self.bf16_mma() => {
                    let chunk = e.index(BF16_CHUNK as i64)?;
                    e.for_range(e.index(0)?, listed, chunk, |e, g| {
                        self.stage_bf16(&e, blk, g, listed, k0)?;
                        e.barrier();
                        lane.multiply_bf16(&e, [blk.args[8], blk.args[9]], blk.acc)?;
                        // Every warp has read the chunk before the next one overwrites it.
                        e.barrier();
                        Ok(())
                    })?
                }
                None => e.for_range(e.index(0)?, listed, stage, |e, g| {
                    self.stage_rows(&e, blk, Operands::Both, g, listed, k0)?;
                    e.barrier();
                    self.add_stage_products(&e, blk, ty, tx, blk.acc)?;
                    // Every thread has read the stage before the next one overwrites it.
                    e.barrier();
                    Ok(())
                })?,
                Some(f) => {
                    let tile = e.index(f.tile as i64)?;
                    e.for_range(e.index(0)?, listed, tile, |e, g| {
                        let end = e.minui(e.addi(g, tile)?, listed)?;
                        self.group_products(&e, blk, f, &lane, g, end, k0)
                    })?
                }
            }
            for (&cell, &(inside, at)) in blk.acc.iter().zip(&outputs) {
                let v = e.bitcast(e.get(cell)?, e.int_type(32))?;
                global_store_if(&e, inside, e.element_address(dw, at, 4)?, &[v])?;
            }
            Ok(())
        })
    }

    /// Adds the products of the staged rows, in order, to the thread's `cells`.
    fn add_stage_products<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        ty: Value<'c, '_>,
        tx: Value<'c, '_>,
        cells: &[Value<'c, '_>],
    ) -> Result<(), CodegenError> {
        let (dys, xs) = (blk.args[6], blk.args[7]);
        for s in 0..STAGE {
            let base = e.index((s * TILE) as i64)?;
            let a = (0..PER_THREAD)
                .map(|i| e.load(dys, e.addi(base, e.addi(ty, e.index(16 * i as i64)?)?)?))
                .collect::<Result<Vec<_>, _>>()?;
            let b = (0..PER_THREAD)
                .map(|j| e.load(xs, e.addi(base, e.addi(tx, e.index(16 * j as i64)?)?)?))
                .collect::<Result<Vec<_>, _>>()?;
            let pairs = a.iter().flat_map(|ai| b.iter().map(move |bj| (ai, bj)));
            for (&cell, (&ai, &bj)) in cells.iter().zip(pairs) {
                let p = e.mulf(ai, bj)?;
                e.accumulate(cell, p)?;
            }
        }
        Ok(())
    }

    /// Quantizes the dy rows of the flush (its first `listed` rows, whole groups but for the
    /// last) into the dy cache, once for all the column tiles: per group, its columns' scales
    /// ([`Self::group_scales`], kept per group) and then its codes, a chunk at a time.
    fn cache_dy<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        f: &GroupedWgradFp8,
        listed: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let tile = e.index(f.tile as i64)?;
        let chunk = e.index(CHUNK as i64)?;
        let zero = e.index(0)?;
        e.for_range(zero, listed, tile, |e, g| {
            let end = e.minui(e.addi(g, tile)?, listed)?;
            self.group_scales(&e, blk, f, Operands::Dy, g, end, zero)?;
            e.for_range(g, e.addi(g, tile)?, chunk, |e, c0| {
                // A group past the list's end (a tile that does not divide it) has nothing
                // there: its chunks read as zeros ([`MmaLane::multiply`]).
                let in_list = e.lt(c0, e.index(self.list_len() as i64)?)?;
                e.if_then(in_list, |e| {
                    self.stage_codes(&e, blk, f, Operands::Dy, (g, c0, end), zero)
                })
            })?;
            // The codes are in place before the column tiles read them.
            e.barrier();
            Ok(())
        })
    }

    /// Where group `g`'s scales go among the shared scales: x's (of the column tile) first,
    /// then dy's, a row tile's (`rows`) per group of the flush.
    fn scales_at<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        f: &GroupedWgradFp8,
        operand: Operands,
        g: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        match operand {
            Operands::Dy => {
                let group = e.divui(g, e.index(f.tile as i64)?)?;
                e.addi(
                    e.index(TILE as i64)?,
                    e.muli(group, e.index(self.rows() as i64)?)?,
                )
            }
            _ => e.index(0),
        }
    }

    /// The scales of `operand`'s columns (dy's of the row tile or x's of the column tile at
    /// `k0`) for the FP8 group of listed rows `g .. end`, into the shared scales
    /// ([`Self::scales_at`]): each from the column's largest magnitude over the group (NaNs
    /// skipped, as the reference's `amax`). Thread `c` takes column `c` (the others do the same
    /// again).
    #[allow(clippy::too_many_arguments)]
    fn group_scales<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        f: &GroupedWgradFp8,
        operand: Operands,
        g: Value<'c, '_>,
        end: Value<'c, '_>,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (staged, scale_format) = match operand {
            Operands::Dy => (blk.args[6], f.dy_scale_format),
            _ => (blk.args[7], f.x_scale_format),
        };
        let scales = blk.args[8];
        let amax = blk.fp8_cells[self.cells() as usize];
        let cols = match operand {
            Operands::Dy => self.rows(),
            _ => TILE,
        };
        let tile = e.index(cols as i64)?;
        let column = e.remui(blk.tid, tile)?;
        e.set(amax, e.f32(0.0)?)?;
        let stage = e.index(STAGE as i64)?;
        e.for_range(g, e.addi(g, e.index(f.tile as i64)?)?, stage, |e, s0| {
            self.stage_rows(&e, blk, operand, s0, end, k0)?;
            e.barrier();
            for s in 0..STAGE {
                let v = e.load(staged, e.addi(e.index((s * cols) as i64)?, column)?)?;
                let m = e.max_skip_nan(e.get(amax)?, e.absf(v)?)?;
                e.set(amax, m)?;
            }
            e.barrier();
            Ok(())
        })?;
        let scale = e.scale_for(e.get(amax)?, f.format, scale_format)?;
        let at = e.addi(self.scales_at(e, f, operand, g)?, column)?;
        e.if_then(e.lt(blk.tid, tile)?, |e| {
            e.store(scale, scales, at);
            Ok(())
        })?;
        e.barrier();
        Ok(())
    }

    /// Adds the FP8 group of listed rows `g .. end` to the thread's outputs: x's scales and
    /// codes (the whole group at once, [`Self::stage_x_group`], or a chunk at a time,
    /// [`Self::stage_codes`]); per interval, the MMAs of the cached dy codes and the x codes
    /// chained from +0 in row order ([`MmaLane::multiply`]), then promoted, `acc += partial ·
    /// (s_dy · s_x)` (three roundings, as the reference's block GEMM); an interval past `end`
    /// (a ragged last group) changes nothing.
    #[allow(clippy::too_many_arguments)]
    fn group_products<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        f: &GroupedWgradFp8,
        lane: &MmaLane<'c, '_>,
        g: Value<'c, '_>,
        end: Value<'c, '_>,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let scales = blk.args[8];
        let partials = &blk.fp8_cells[..self.cells() as usize];
        let interval = e.index(f.interval as i64)?;
        let chunk = e.index(CHUNK as i64)?;
        let instruction = fp8_mma_instruction(f.format);
        let dy_cache = blk.dy_cache.expect("the FP8 form has a dy cache");
        let dy_layout = (self.dy_pitch(), self.list_len());
        let whole_group = self.x_in_registers();
        if whole_group {
            self.stage_x_group(e, blk, f, g, end, k0)?;
        } else {
            self.group_scales(e, blk, f, Operands::X, g, end, k0)?;
        }
        let x_codes = (blk.args[9], self.x_pitch());
        e.for_range(g, e.addi(g, e.index(f.tile as i64)?)?, interval, |e, i0| {
            for &cell in partials {
                e.set(cell, e.f32(0.0)?)?;
            }
            e.for_range(i0, e.addi(i0, interval)?, chunk, |e, c0| {
                if whole_group {
                    let word = e.divui(e.subi(c0, g)?, e.index(4)?)?;
                    let x = (x_codes.0, x_codes.1, word);
                    return lane.multiply(&e, &instruction, (dy_cache, c0), dy_layout, x, partials);
                }
                self.stage_codes(&e, blk, f, Operands::X, (g, c0, end), k0)?;
                e.barrier();
                let x = (x_codes.0, x_codes.1, e.index(0)?);
                lane.multiply(&e, &instruction, (dy_cache, c0), dy_layout, x, partials)?;
                // Every warp has read the chunk before the next one overwrites it.
                e.barrier();
                Ok(())
            })?;
            let real = e.lt(i0, end)?;
            let places = lane.places(&e)?;
            let dy_scales = self.scales_at(&e, f, Operands::Dy, g)?;
            for ((&cell, &partial), &(row, col)) in blk.acc.iter().zip(partials).zip(&places) {
                let s_dy = e.load(scales, e.addi(dy_scales, row)?)?;
                let s_x = e.load(scales, col)?;
                let scale = e.mulf(s_dy, s_x)?;
                let scaled = e.mulf(e.get(partial)?, scale)?;
                let acc = e.get(cell)?;
                let sum = e.addf(acc, scaled)?;
                e.set(cell, e.select(real, sum, acc)?)?;
            }
            Ok(())
        })?;
        if whole_group {
            // Every warp is done with the group's codes and scales before the next group's.
            e.barrier();
        }
        Ok(())
    }

    /// x's column tile at `k0` over the FP8 group of listed rows `g .. end` (at most
    /// [`X_GROUP_MAX`]), read once. Each thread takes [`Self::x_columns_a_thread`] adjacent
    /// columns (two when `in_features` is even: one 32-bit load of two bf16, or 64-bit of two
    /// f32) and one word of every chunk of them (rows `4 kq ..`, `kq = tid / (64 / columns)`;
    /// with one column, words `kq` and `kq + 4`), loads those elements into registers, and
    /// folds their amax; the threads of a column combine their amaxes (NaNs skipped) through
    /// shared memory into its scale, and each thread quantizes its values into the group's x
    /// codes ([`X_GROUP_PITCH`] words a column), then all wait.
    fn stage_x_group<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        f: &GroupedWgradFp8,
        g: Value<'c, '_>,
        end: Value<'c, '_>,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (x, list, amaxes, scales, codes) = (
            blk.args[1],
            blk.args[5],
            blk.args[7],
            blk.args[8],
            blk.args[9],
        );
        let k_dim = e.index(self.in_features as i64)?;
        let i32_type = e.int_type(32);
        let columns = self.x_columns_a_thread();
        let column_sets = TILE / columns;
        let threads_a_column = u64::from(THREADS) / column_sets;
        let words = CHUNK / 4 / threads_a_column;
        let sets = e.index(column_sets as i64)?;
        let c = e.muli(e.remui(blk.tid, sets)?, e.index(columns as i64)?)?;
        let kq0 = e.divui(blk.tid, sets)?;
        let column = e.addi(k0, c)?;
        // With two columns, `in_features` is even and the first is even: both or neither in.
        let column_in = e.lt(column, k_dim)?;
        // (word of the group, four values of each column), in the order they are loaded.
        let mut held = Vec::new();
        let mut amax = vec![e.f32(0.0)?; columns as usize];
        for chunk in 0..f.tile as u64 / CHUNK {
            for r in 0..words {
                let first = chunk * CHUNK / 4 + threads_a_column * r;
                let word = e.addi(kq0, e.index(first as i64)?)?;
                let mut values = vec![Vec::new(); columns as usize];
                for j in 0..4 {
                    let position = e.addi(g, e.addi(e.muli(word, e.index(4)?)?, e.index(j)?)?)?;
                    let in_group = e.lt(position, end)?;
                    let x_row = self.x_row(e, listed_row(e, list, position, in_group)?)?;
                    let ok = e.andi(in_group, column_in)?;
                    let at = e.addi(e.muli(x_row, k_dim)?, column)?;
                    let loaded = match columns {
                        2 => pair_if(e, x, self.input, at, ok)?.to_vec(),
                        _ => vec![element_if(e, x, self.input, at, ok)?],
                    };
                    for ((v, amax), values) in loaded.into_iter().zip(&mut amax).zip(&mut values) {
                        *amax = e.max_skip_nan(*amax, e.absf(v)?)?;
                        values.push(v);
                    }
                }
                held.push((word, values));
            }
        }
        let tile = e.index(TILE as i64)?;
        let own = e.addi(e.muli(kq0, tile)?, c)?;
        for (i, &amax) in amax.iter().enumerate() {
            e.store(amax, amaxes, e.addi(own, e.index(i as i64)?)?);
        }
        e.barrier();
        let pitch = e.index(X_GROUP_PITCH as i64)?;
        let first_of_column = e.cmpi(CmpiPredicate::Eq, kq0, e.index(0)?)?;
        let mut column_scales = Vec::new();
        for i in 0..columns as i64 {
            let column = e.addi(c, e.index(i)?)?;
            let mut column_amax = e.f32(0.0)?;
            for t in 0..threads_a_column {
                let at = e.addi(column, e.index((t * TILE) as i64)?)?;
                column_amax = e.max_skip_nan(column_amax, e.load(amaxes, at)?)?;
            }
            let scale = e.scale_for(column_amax, f.format, f.x_scale_format)?;
            e.if_then(first_of_column, |e| {
                e.store(scale, scales, column);
                Ok(())
            })?;
            column_scales.push((column, scale));
        }
        for (word, values) in held {
            for ((column, scale), values) in column_scales.iter().zip(values) {
                let mut packed = e.int(32, 0)?;
                for (j, v) in values.into_iter().enumerate() {
                    // Elements past the group or the matrix are +0, whose code is +0.
                    let code = e.extui(e.encode_fp8(e.divf(v, *scale)?, f.format)?, i32_type)?;
                    packed = e.ori(packed, e.shli(code, e.int(32, 8 * j as i64)?)?)?;
                }
                e.store(packed, codes, e.addi(e.muli(*column, pitch)?, word)?);
            }
        }
        e.barrier();
        Ok(())
    }

    /// Adjacent columns of x a thread of [`Self::stage_x_group`] loads together: two when every
    /// row starts at an even column (the pair's first is then even, so the pair is aligned),
    /// else one.
    fn x_columns_a_thread(&self) -> u64 {
        if self.in_features.is_multiple_of(2) {
            2
        } else {
            1
        }
    }

    /// Stores the FP8 codes of `operand`'s listed rows `c0 .. c0 + CHUNK` of group `g` (+0 past
    /// `end` and past the matrices' edges) — dy's row tile into the dy cache (at the rows'
    /// places in the list), or x's column tile at `k0` into the chunk's x codes — each under
    /// its column's shared scale (a true division, then round to nearest even, saturating; NaN
    /// stays NaN), K-major: a column's word `kq` packs rows `4 kq .. 4 kq + 4`, the lowest row
    /// in the lowest byte, as an MMA fragment register does. A warp's 32 lanes take 32 columns
    /// of one word, so its global reads are whole rows of the tile.
    fn stage_codes<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        f: &GroupedWgradFp8,
        operand: Operands,
        (g, c0, end): (Value<'c, '_>, Value<'c, '_>, Value<'c, '_>),
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (list, scales) = (blk.args[5], blk.args[8]);
        let of_dy = operand == Operands::Dy;
        let (matrix, dtype, width) = if of_dy {
            (blk.args[0], self.grad, self.out_features)
        } else {
            (blk.args[1], self.input, self.in_features)
        };
        let cols = if of_dy { self.rows() } else { TILE };
        let tile = e.index(cols as i64)?;
        let width = e.index(width as i64)?;
        let i32_type = e.int_type(32);
        let scales_at = self.scales_at(e, f, operand, g)?;
        for r in 0..(cols * CHUNK / 4).div_ceil(u64::from(THREADS)) {
            let flat = e.addi(e.index((r * u64::from(THREADS)) as i64)?, blk.tid)?;
            let c = e.remui(flat, tile)?;
            let kq = e.divui(flat, tile)?;
            let column = e.addi(if of_dy { blk.n0 } else { k0 }, c)?;
            let column_in = e.lt(column, width)?;
            let scale = e.load(scales, e.addi(scales_at, c)?)?;
            let mut word = e.int(32, 0)?;
            for j in 0..4 {
                let position = e.addi(c0, e.addi(e.muli(kq, e.index(4)?)?, e.index(j)?)?)?;
                let held = e.lt(position, end)?;
                let row = listed_row(e, list, position, held)?;
                let row = if of_dy { row } else { self.x_row(e, row)? };
                let ok = e.andi(held, column_in)?;
                let v = element_if(e, matrix, dtype, e.addi(e.muli(row, width)?, column)?, ok)?;
                let code = e.extui(e.encode_fp8(e.divf(v, scale)?, f.format)?, i32_type)?;
                let code = e.select(ok, code, e.int(32, 0)?)?;
                word = e.ori(word, e.shli(code, e.int(32, 8 * j)?)?)?;
            }
            if of_dy {
                let dy_cache = blk.dy_cache.expect("the FP8 form has a dy cache");
                let at = e.addi(
                    e.muli(c, e.index(self.dy_pitch() as i64)?)?,
                    e.divui(c0, e.index(4)?)?,
                )?;
                let at = e.muli(e.addi(at, kq)?, e.index(4)?)?;
                let place = e.addi(dy_cache, e.index_cast(at, i32_type)?)?;
                shared_store_u32(e, place, word)?;
            } else {
                let at = e.addi(e.muli(c, e.index(PITCH as i64)?)?, kq)?;
                e.store(word, blk.args[9], at);
            }
        }
        Ok(())
    }

    /// Stages listed rows `g .. g + BF16_CHUNK` (+0 past `listed` and past the matrices' edges)
    /// of the `dy` row tile and the `x` column tile at `k0` for the BF16 form, K-major: a
    /// column's word `w` packs rows `2w` (low half) and `2w + 1`, as an `m16n8k16` fragment
    /// register does; a warp's lanes take 32 columns of one word.
    fn stage_bf16<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        g: Value<'c, '_>,
        listed: Value<'c, '_>,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let list = blk.args[5];
        let tile = e.index(TILE as i64)?;
        let (n_dim, k_dim) = (self.out_features, self.in_features);
        let i32_type = e.int_type(32);
        for r in 0..(TILE * BF16_CHUNK / 2).div_ceil(u64::from(THREADS)) {
            let flat = e.addi(e.index((r * u64::from(THREADS)) as i64)?, blk.tid)?;
            let c = e.remui(flat, tile)?;
            let w = e.divui(flat, tile)?;
            let mut words = [e.int(32, 0)?, e.int(32, 0)?];
            for half in 0..2 {
                let position = e.addi(g, e.addi(e.muli(w, e.index(2)?)?, e.index(half)?)?)?;
                let held = e.lt(position, listed)?;
                let row = listed_row(e, list, position, held)?;
                let operands = [
                    (blk.args[0], row, blk.n0, n_dim),
                    (blk.args[1], self.x_row(e, row)?, k0, k_dim),
                ];
                for (word, (matrix, row, start, width)) in words.iter_mut().zip(operands) {
                    let column = e.addi(start, c)?;
                    let width = e.index(width as i64)?;
                    let ok = e.andi(held, e.lt(column, width)?)?;
                    let at = e.addi(e.muli(row, width)?, column)?;
                    let bits = bf16_bits_if(e, matrix, at, ok)?;
                    let bits = e.extui(bits, i32_type)?;
                    *word = e.ori(*word, e.shli(bits, e.int(32, 16 * half)?)?)?;
                }
            }
            let at = e.addi(e.muli(c, e.index(BF16_PITCH as i64)?)?, w)?;
            e.store(words[0], blk.args[8], at);
            e.store(words[1], blk.args[9], at);
        }
        Ok(())
    }

    /// Stages the `dy` and `x` tiles (or one of them) of listed rows `g .. g + STAGE` (zeros
    /// past `listed` and past the matrices' edges) for the column tile at `k0`.
    fn stage_rows<'c>(
        &self,
        e: &Emit<'c, '_>,
        blk: &Blk<'c, '_, '_>,
        operands: Operands,
        g: Value<'c, '_>,
        listed: Value<'c, '_>,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (dy, x, list, dys, xs) = (
            blk.args[0],
            blk.args[1],
            blk.args[5],
            blk.args[6],
            blk.args[7],
        );
        // dy alone is the block's row tile (its rows of `dw`); x, or both (the f32 form, whose
        // tiles are square), a column tile.
        let cols = match operands {
            Operands::Dy => self.rows(),
            _ => TILE,
        };
        let tile = e.index(cols as i64)?;
        let n_dim = e.index(self.out_features as i64)?;
        let k_dim = e.index(self.in_features as i64)?;
        for q in 0..(STAGE * cols) / u64::from(THREADS) {
            let flat = e.addi(e.index((q * u64::from(THREADS)) as i64)?, blk.tid)?;
            let s = e.divui(flat, tile)?;
            let c = e.remui(flat, tile)?;
            let position = e.addi(g, s)?;
            let held = e.lt(position, listed)?;
            let row = listed_row(e, list, position, held)?;
            if operands != Operands::X {
                let n = e.addi(blk.n0, c)?;
                let dy_ok = e.andi(held, e.lt(n, n_dim)?)?;
                let dy_at = e.addi(e.muli(row, n_dim)?, n)?;
                let v = element_if(e, dy, self.grad, dy_at, dy_ok)?;
                e.store(v, dys, flat);
            }
            if operands == Operands::Dy {
                continue;
            }
            let x_row = self.x_row(e, row)?;
            let k = e.addi(k0, c)?;
            let x_ok = e.andi(held, e.lt(k, k_dim)?)?;
            let x_at = e.addi(e.muli(x_row, k_dim)?, k)?;
            let v = element_if(e, x, self.input, x_at, x_ok)?;
            e.store(v, xs, flat);
        }
        Ok(())
    }
}

/// The bits (`i16`) of bf16 element `at` (an index) of `buffer` when `ok`, else +0.
fn bf16_bits_if<'c, 'a>(
    e: &Emit<'c, 'a>,
    buffer: Value<'c, '_>,
    at: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    bf16_bits_at_if(e, e.element_address(buffer, at, 2)?, ok)
}

/// The bits (`i16`) at global `address` when `ok`, else +0: one predicated 16-bit load.
fn bf16_bits_at_if<'c, 'a>(
    e: &Emit<'c, 'a>,
    address: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let ok = e.extui(ok, e.int_type(32))?;
    e.inline_asm(
        "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $2, 0;\n\tmov.b16 $0, 0;\n\t\
         @p ld.global.b16 $0, [$1];\n\t}",
        "=h,l,r",
        &[address, ok],
        e.int_type(16),
    )
}

/// Elements `at` and `at + 1` (an index, even) of the f32 or bf16 `buffer` as f32 when `ok`,
/// else +0: one predicated 32-bit load (two bf16) or 64-bit load (two f32).
fn pair_if<'c, 'a>(
    e: &Emit<'c, 'a>,
    buffer: Value<'c, '_>,
    dtype: DType,
    at: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Result<[Value<'c, 'a>; 2], CodegenError> {
    let address = e.element_address(buffer, at, dtype.size_bytes())?;
    let f32_type = e.f32_type();
    if dtype == DType::Bf16 {
        let word = global_load_if(e, address, ok, 1)?[0];
        // A bf16 is the high half of its f32.
        let low = e.shli(word, e.int(32, 16)?)?;
        let high = e.andi(word, e.int(32, 0xffff_0000_u32 as i32 as i64)?)?;
        Ok([e.bitcast(low, f32_type)?, e.bitcast(high, f32_type)?])
    } else {
        let words = global_load_if(e, address, ok, 2)?;
        Ok([
            e.bitcast(words[0], f32_type)?,
            e.bitcast(words[1], f32_type)?,
        ])
    }
}

/// The routed row at `position` of the list (an index), or the list's first when `held` is
/// false, so that nothing past the list is read.
fn listed_row<'c, 'a>(
    e: &Emit<'c, 'a>,
    list: Value<'c, '_>,
    position: Value<'c, '_>,
    held: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let row = e.load(list, e.select(held, position, e.index(0)?)?)?;
    e.index_cast(row, e.index_type())
}

/// Element `at` (an index) of the f32 or bf16 `buffer` as an f32 when `ok` (an `i1`), else
/// +0, by one predicated load: the staging has no branch (a lane branching back to the
/// barrier ahead of its warp would reach it before its store on the emulator, which runs
/// divergent lanes lowest address first) and reads nothing out of bounds.
fn element_if<'c, 'a>(
    e: &Emit<'c, 'a>,
    buffer: Value<'c, '_>,
    dtype: DType,
    at: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let address = e.element_address(buffer, at, dtype.size_bytes())?;
    if dtype == DType::Bf16 {
        let bits = bf16_bits_at_if(e, address, ok)?;
        let value = e.bitcast(bits, e.bf16_type())?;
        e.extf(value, e.f32_type())
    } else {
        let word = global_load_if(e, address, ok, 1)?[0];
        e.bitcast(word, e.f32_type())
    }
}

/// What every phase of a block reads: the kernel's buffers (then the shared ones: the warps'
/// counts, the list, the staged `dy` and `x`, and in the FP8 form the group's scales and a
/// chunk's codes of `dy` and `x`), the
/// thread, the block's expert and first row, and the cells.
struct Blk<'c, 'a, 'v> {
    args: &'v [Value<'c, 'a>],
    tid: Value<'c, 'a>,
    expert: Value<'c, 'a>,
    n0: Value<'c, 'a>,
    count: Value<'c, 'a>,
    first: Value<'c, 'a>,
    acc: &'v [Value<'c, 'a>],
    /// The FP8 form's partial sums, then its column amax (empty otherwise).
    fp8_cells: &'v [Value<'c, 'a>],
    /// The FP8 form's dy cache: the shared address (`i32`) of its dynamic shared memory.
    dy_cache: Option<Value<'c, 'a>>,
}

/// Which operands a staging step reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operands {
    Both,
    Dy,
    X,
}

/// A lane's part of the FP8 form's MMAs: warp `w` holds rows `16 (w mod 4) ..+ 16` and columns
/// `32 ⌊w / 4⌋ ..+ 32` of the tile as four m16n8 tiles; with `g = lane / 4`, `q = lane mod 4`,
/// its D elements are rows `g`, `g + 8` and columns `2q`, `2q + 1` of each.
struct MmaLane<'c, 'a> {
    /// m16 tiles a warp holds along the rows (its rows: `16 m_tiles` from `16 m_tiles (w mod
    /// 4)`).
    m_tiles: u64,
    /// The tile row of the lane's first A fragment registers, `16 m_tiles (w mod 4) + g`.
    row: Value<'c, 'a>,
    /// The first tile column of the warp, `32 ⌊w / 4⌋`.
    col0: Value<'c, 'a>,
    /// `g`.
    g: Value<'c, 'a>,
    /// `q`: the word of a column's codes (rows `4q ..`) the lane's fragments read.
    q: Value<'c, 'a>,
}

impl<'c, 'a> MmaLane<'c, 'a> {
    fn new(e: &Emit<'c, 'a>, tid: Value<'c, '_>, m_tiles: u64) -> Result<Self, CodegenError> {
        let warp = e.divui(tid, e.index(32)?)?;
        let lane = e.remui(tid, e.index(32)?)?;
        let four = e.index(4)?;
        let g = e.divui(lane, four)?;
        let rows = e.index(16 * m_tiles as i64)?;
        let row = e.addi(e.muli(e.remui(warp, four)?, rows)?, g)?;
        let col0 = e.muli(e.divui(warp, four)?, e.index(32)?)?;
        Ok(Self {
            m_tiles,
            row,
            col0,
            g,
            q: e.remui(lane, four)?,
        })
    }

    /// Each cell's (row, column) in the tile, in the order of [`Self::multiply`]'s cells: the
    /// four D elements of each m16n8 tile, the warp's m16 tiles of each 8 columns in turn.
    fn places<'d>(
        &self,
        e: &Emit<'c, 'd>,
    ) -> Result<Vec<(Value<'c, 'd>, Value<'c, 'd>)>, CodegenError> {
        let col = e.addi(self.col0, e.muli(self.q, e.index(2)?)?)?;
        let mut places = Vec::new();
        for tile in 0..4 {
            for m in 0..self.m_tiles as i64 {
                for d in 0..4i64 {
                    let row = e.addi(self.row, e.index(16 * m + 8 * (d >> 1))?)?;
                    let col = e.addi(col, e.index(8 * tile + (d & 1))?)?;
                    places.push((row, col));
                }
            }
        }
        Ok(places)
    }

    /// `cells += A · B` over one chunk of the BF16 form's rows: the warp's A fragment (dy's,
    /// from `tiles[0]`) once, then one `m16n8k16` per 8 columns of x (from `tiles[1]`).
    fn multiply_bf16<'d>(
        &self,
        e: &Emit<'c, 'd>,
        [dy, x]: [Value<'c, '_>; 2],
        cells: &[Value<'c, '_>],
    ) -> Result<(), CodegenError> {
        let pitch = e.index(BF16_PITCH as i64)?;
        // Word `q` (rows 2q, 2q + 1) or `q + 4` (rows 8 + 2q ..) of dy's column `column`.
        let word = |column, high: i64| -> Emitted<'c, 'd> {
            let at = e.addi(e.muli(column, pitch)?, self.q)?;
            e.load(dy, e.addi(at, e.index(high)?)?)
        };
        let row8 = e.addi(self.row, e.index(8)?)?;
        let a = [
            word(self.row, 0)?,
            word(row8, 0)?,
            word(self.row, 4)?,
            word(row8, 4)?,
        ];
        let first = e.index(0)?;
        self.multiply_columns(e, BF16_MMA, &[a], (x, BF16_PITCH, first), cells)
    }

    /// `cells += A · B` over one chunk of codes: the warp's A fragment (dy's rows `c0 ..` of
    /// the list, from the dy cache at shared address `dy_cache`) once, then one MMA per 8
    /// columns of x (from `x_codes`, `x_pitch` words a column, the chunk at word `x_word`).
    fn multiply<'d>(
        &self,
        e: &Emit<'c, 'd>,
        instruction: &str,
        (dy_cache, c0): (Value<'c, '_>, Value<'c, '_>),
        (pitch, list_len): (u64, u64),
        x: (Value<'c, '_>, u64, Value<'c, '_>),
        cells: &[Value<'c, '_>],
    ) -> Result<(), CodegenError> {
        let i32_type = e.int_type(32);
        // Rows past the list (see `cache_dy`) are zeros, as their x codes are; their reads
        // go to the list's first rows, inside the cache.
        let in_list = e.lt(c0, e.index(list_len as i64)?)?;
        let c0 = e.select(in_list, c0, e.index(0)?)?;
        // Byte address of word `q` of the chunk in the lane's dy column `row`.
        let word = e.addi(e.divui(c0, e.index(4)?)?, self.q)?;
        let at = e.addi(e.muli(self.row, e.index(pitch as i64)?)?, word)?;
        let place = e.addi(dy_cache, e.index_cast(e.muli(at, e.index(4)?)?, i32_type)?)?;
        let zero = e.int(32, 0)?;
        let load = |offset| -> Emitted<'c, 'd> {
            e.select(in_list, shared_load_u32(e, place, offset)?, zero)
        };
        let a = (0..self.m_tiles)
            .map(|m| -> Result<[Value<'c, 'd>; 4], CodegenError> {
                let (rows, high) = (16 * m * pitch * 4, 16);
                let row8 = rows + 8 * pitch * 4;
                Ok([
                    load(rows)?,
                    load(row8)?,
                    load(rows + high)?,
                    load(row8 + high)?,
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.multiply_columns(e, instruction, &a, x, cells)
    }

    /// One MMA per m16 tile (A fragments `a`) and 8 columns of the warp's 32: B's words `q`
    /// and `q + 4` of the chunk at word `first` of column `col0 + 8t + g` of `x` (`pitch`
    /// words a column), read once for the warp's m16 tiles.
    fn multiply_columns<'d>(
        &self,
        e: &Emit<'c, 'd>,
        instruction: &str,
        a: &[[Value<'c, 'd>; 4]],
        (x, pitch, first): (Value<'c, '_>, u64, Value<'c, '_>),
        cells: &[Value<'c, '_>],
    ) -> Result<(), CodegenError> {
        let pitch = e.index(pitch as i64)?;
        let word = e.addi(first, self.q)?;
        let mut cells = cells.chunks(4);
        for tile in 0..4i64 {
            let column = e.addi(self.col0, e.addi(self.g, e.index(8 * tile)?)?)?;
            let at = e.addi(e.muli(column, pitch)?, word)?;
            let b = [e.load(x, at)?, e.load(x, e.addi(at, e.index(4)?)?)?];
            for &a in a {
                let cells: &[Value; 4] = cells
                    .next()
                    .and_then(|c| c.try_into().ok())
                    .expect("four cells an MMA");
                mma_into(e, instruction, a, b, cells)?;
            }
        }
        Ok(())
    }
}
