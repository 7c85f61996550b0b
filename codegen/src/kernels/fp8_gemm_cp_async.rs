//! The pipelined Ada form of `fp8_gemm` (sm_89), dense and grouped: native FP8
//! `mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32` (QMMA) fed from shared memory by
//! `ldmatrix`, which `cp.async` fills in a multi-stage ring (the structure of CUTLASS's
//! Ampere/Ada multistage GEMMs).
//!
//! - **Tiles.** A block computes `block_m × block_n` outputs (`block_m` 64 or 128, `block_n`
//!   32, 64 or 128, chosen by [`tiles_for`]) with one warp per 64 × 32 sub-tile (4 × 4 MMAs of
//!   16 × 8 per 32-deep K step) in blocks of 128 × 64 outputs or more, four warps of 32 × 32 or
//!   32 × 16 in smaller ones. Every tile lies in one 128-wide weight-scale block.
//! - **Ring.** `stages` stages of `(block_m + block_n) × 128` bytes: one 128-byte row (one
//!   K block of 128 FP8 codes, one activation tile and weight-scale block) per tile row, A's
//!   rows then B's (both K-major: x `[M, K]`, w `[N, K]` as checkpoints store it), row `r`'s
//!   16-byte chunk `c` at chunk `c ^ (r mod 8)`, so the eight rows an `ldmatrix` matrix reads
//!   cover all 32 banks. Every thread copies its share of a stage's chunks with
//!   `cp.async.cg … 16` (rows past M or N, padding rows and K past its end with src-size 0:
//!   zeros, no padded user tensors), commits one group per K block, and the loop keeps
//!   `stages - 1` K blocks in flight: wait for the oldest (`cp.async.wait_group stages - 2`),
//!   `bar.sync`, refill the stage the previous K block used, compute.
//! - **Fragments.** For 8-bit `m16n8k32`, A register `r` holds row `g + 8 (r mod 2)`, bytes
//!   `16 (r / 2) + 4q .. + 3` and B register `r` column `g`, bytes `16r + 4q .. + 3`
//!   (`g = lane / 4`, `q = lane mod 4`): what `ldmatrix … .b16` gives for 8 × 16-byte matrices
//!   (row `t / 4`, 16-bit elements `2 (t mod 4)`, `+ 1`). One `ldmatrix.x4` loads an m16 tile's
//!   A fragment (rows 0-7 / 8-15 × bytes 0-15 / 16-31), one more the B fragments of two n8
//!   tiles; B is `[N, K]`, so no `.trans`.
//! - **Promotion** (DESIGN.md §3) exactly as [`super::fp8_gemm_mma`] and the CPU reference: each
//!   promotion interval (32, 64 or 128) is `interval / 32` MMAs into a fresh partial, then
//!   `acc += partial · (s_x · s_w)` in f32 registers; intervals past K are not added. The
//!   tile rows' activation scales and the tile's weight scale come with each K block's copies
//!   (4-byte `cp.async`, a ring of scales after the ring of tiles), so each is read from global
//!   memory once per block; the warps read theirs from shared memory.
//! - **Registers.** Accumulators and partials take 128 of a 64 × 32 warp's registers, so what
//!   lives through the K loop is kept small: the copies' row offsets are found again per K
//!   block from an opaque copy of the tile's first row (LLVM would otherwise keep a 64-bit
//!   pointer per copy and per scale across the loop), the output rows only after the loop,
//!   and the loop carries `.pragma "nounroll"` (ptxas unrolls a loop of a few K blocks into
//!   spills).
//! - **Grouped** (routed experts): M is the expert-contiguous layout of
//!   [`super::moe_dispatch`] padded to `block_m`-row tiles; a block whose tile belongs to
//!   expert −1 exits, row `p` reads x row `rows[p]` (or `rows[p] / top_k`) through the copy's
//!   computed source address and writes output row `rows[p]`; padding rows (−1) read zeros and
//!   store nothing.
//! - **Epilogue**: predicated stores, two adjacent columns per store when N is even.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::{BlockLike, Value, ValueLike};

use super::fp8_gemm::{Fp8Gemm, GemmForm, Operands, TileRow, tile_row};
use super::fp8_gemm_wgmma::atom_aligned;
use super::mma::{fp8_mma_instruction, mma};
use super::vector_access::{global_store_if, output_words, shared_load_u32};
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// Outputs of a block from which its warps take 64 × 32 sub-tiles (8 warps for 128 × 128, 4
/// for 128 × 64 and 64 × 128); smaller blocks have four warps of `area / 4` outputs each (32 ×
/// 32 or 32 × 16), so that every block has at least 128 threads to share its copies.
const LARGE_BLOCK: u64 = 128 * 64;
/// K of a stage: one activation tile, one weight-scale block, one 128-byte row per tile row.
pub const BLOCK_K: u64 = 128;
/// K of one MMA.
const MMA_K: u64 = 32;
/// The SMs of the Ada part the device model describes (L40S), which the tile shapes fill.
pub const SMS: u64 = 142;
/// Shared memory an sm_89 block may opt into (99 KiB).
const SHARED_LIMIT: u64 = 99 * 1024;
/// Slack to align the ring to 1024 bytes.
const ALIGN: u64 = 1024;
/// Most stages: three K blocks in flight hide a global load on Ada.
const MAX_STAGES: u64 = 4;

/// The tile and ring shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpAsyncTiles {
    /// Rows of a tile: 64 or 128.
    pub block_m: u64,
    /// Columns of a tile: 32, 64 or 128.
    pub block_n: u64,
    /// Stages of the ring.
    pub stages: u64,
}

impl CpAsyncTiles {
    /// Bytes of one stage: A's and B's 128-byte rows.
    pub fn stage_bytes(self) -> u64 {
        (self.block_m + self.block_n) * BLOCK_K
    }

    /// Rows of a warp's sub-tile: 64, or 32 in a small block.
    pub fn warp_m(self) -> u64 {
        if self.block_m * self.block_n >= LARGE_BLOCK {
            64
        } else {
            32
        }
    }

    /// Columns of a warp's sub-tile: 32, or 16 in a 64 × 32 block.
    pub fn warp_n(self) -> u64 {
        if self.block_m * self.block_n >= LARGE_BLOCK {
            32
        } else {
            self.block_m * self.block_n / (4 * 32)
        }
    }

    /// Warps of a block: one per sub-tile.
    pub fn warps(self) -> u64 {
        (self.block_m / self.warp_m()) * (self.block_n / self.warp_n())
    }

    /// m16 MMA tiles of a warp's sub-tile.
    fn m_tiles(self) -> usize {
        (self.warp_m() / 16) as usize
    }

    /// n8 MMA tiles of a warp's sub-tile.
    fn n_tiles(self) -> usize {
        (self.warp_n() / 8) as usize
    }

    /// Threads of a block.
    pub fn threads(self) -> u32 {
        (32 * self.warps()) as u32
    }

    /// Bytes of one stage's scales: the tile rows' activation scales and the tile's weight
    /// scale (16 bytes, keeping the next stage's 16-byte aligned).
    pub fn scale_bytes(self) -> u64 {
        4 * self.block_m + 16
    }

    /// Dynamic shared memory of a block: the ring of tiles, then the ring of their scales, and
    /// the alignment slack.
    pub fn dynamic_shared_bytes(self) -> u64 {
        ALIGN + self.stages * (self.stage_bytes() + self.scale_bytes())
    }
}

/// Whether `gemm` can take this form: K in whole 16-byte chunks (each row's copies stay
/// aligned), 128-wide activation tiles and weight blocks, an interval of whole MMAs dividing
/// the K block, an output the epilogue stores (bf16 or f32), and 32-bit row offsets.
pub fn eligible(gemm: &Fp8Gemm) -> bool {
    // Row offsets are 32-bit: x's rows and one expert's w below 2 GiB.
    let x_rows = match gemm.grouped {
        Some(g) if !g.x_per_slot => g.tokens,
        _ => gemm.rows,
    };
    let fits = |rows: u64| (rows + 1).saturating_mul(gemm.k) < 1 << 31;
    super::fp8_gemm_wgmma::eligible(gemm)
        // Its scales are staged one per tile column block and tile row.
        && !gemm.w_row_tiles
        && !gemm.x_square_blocks
        && matches!(gemm.output, DType::Bf16 | DType::F32)
        && fits(x_rows)
        && fits(gemm.n)
}

/// The most stages (up to [`MAX_STAGES`]) whose ring fits in a block's shared memory.
pub fn stages_for(block_m: u64, block_n: u64) -> u64 {
    let stage = (block_m + block_n) * BLOCK_K + 4 * block_m + 16;
    ((SHARED_LIMIT - ALIGN) / stage).min(MAX_STAGES)
}

/// The tile shape for `gemm`: over `block_m` in {128, 64} and `block_n` in {128, 64, 32}, the
/// least `waves · (block_m · block_n + 32 · (block_m + block_n))` with `waves = ⌈tiles / 142⌉`
/// (the L40S's SMs): a tile's tensor-core time plus its load traffic relative to it, per K
/// block — the sm_90a heuristic of [`super::tma_ring::tiles_for`] on Ada's SM count and
/// tile set. Ties go to the larger tile. Grouped, each expert's rows are padded to whole
/// tiles, so `block_m` is 128 only where an expert gets at least 256 rows on average.
pub fn tiles_for(gemm: &Fp8Gemm) -> CpAsyncTiles {
    let block_ms: &[u64] = match gemm.grouped {
        None => &[128, 64],
        Some(g) if g.tokens * g.top_k / g.experts.max(1) >= 256 => &[128],
        Some(_) => &[64],
    };
    let rows = gemm.rows;
    let cost = |block_m: u64, block_n: u64| {
        let tiles = rows.div_ceil(block_m) * gemm.n.div_ceil(block_n);
        tiles.div_ceil(SMS) * (block_m * block_n + 32 * (block_m + block_n))
    };
    let mut best = (block_ms[0], 128);
    for &block_m in block_ms {
        for block_n in [128, 64, 32] {
            let (c, b) = (cost(block_m, block_n), cost(best.0, best.1));
            if c < b || (c == b && block_m * block_n > best.0 * best.1) {
                best = (block_m, block_n);
            }
        }
    }
    let (block_m, block_n) = best;
    CpAsyncTiles {
        block_m,
        block_n,
        stages: stages_for(block_m, block_n),
    }
}

fn tiles(gemm: &Fp8Gemm) -> CpAsyncTiles {
    match gemm.form {
        GemmForm::MmaPipelined {
            block_m,
            block_n,
            stages,
        } => CpAsyncTiles {
            block_m,
            block_n,
            stages,
        },
        _ => tiles_for(gemm),
    }
}

/// Tiles along M: of the output rows (dense) or of the dispatch's padded layout (grouped).
fn tiles_m(gemm: &Fp8Gemm, t: CpAsyncTiles) -> u64 {
    match gemm.grouped {
        None => gemm.rows.div_ceil(t.block_m),
        Some(g) => gemm.dispatch(g).capacity() / t.block_m,
    }
}

/// One block per tile.
pub fn launch(gemm: &Fp8Gemm) -> Launch {
    let t = tiles(gemm);
    Launch::blocks(tiles_m(gemm, t) * gemm.n.div_ceil(t.block_n), t.threads())
}

/// Dynamic shared memory of a block ([`CpAsyncTiles::dynamic_shared_bytes`]).
pub fn dynamic_shared_bytes(gemm: &Fp8Gemm) -> u64 {
    tiles(gemm).dynamic_shared_bytes()
}

/// Builds the kernel.
pub fn build(gemm: &Fp8Gemm, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let t = tiles(gemm);
    let types = param_types(context, &gemm.params());
    module.add_kernel_with_dynamic_shared(entry, &types, t.threads(), |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, block.argument_count())?;
        let ops = Operands::of(gemm, &args);
        // The accumulators first, in the entry block, where LLVM keeps them in registers.
        let zero = e.f32(0.0)?;
        let acc: Vec<Value> = (0..t.m_tiles() * t.n_tiles() * 4)
            .map(|_| e.cell(zero))
            .collect::<Result<_, _>>()?;
        let smem = super::tma_ring::dynamic_shared(&e, entry)?;
        let base = atom_aligned(&e, smem)?;
        let tid = e.thread_x()?;
        let tile = e.block_index(Dimension::X)?;
        let tiles_n = e.index(gemm.n.div_ceil(t.block_n) as i64)?;
        let tm = e.divui(tile, tiles_n)?;
        let tn = e.remui(tile, tiles_n)?;
        let m0 = e.muli(tm, e.index(t.block_m as i64)?)?;
        let n0 = e.muli(tn, e.index(t.block_n as i64)?)?;
        let kernel = Kernel {
            gemm,
            t,
            ops: &ops,
            base,
            tid,
            acc: &acc,
        };
        match ops.dispatch {
            None => kernel.tile(&e, m0, n0, e.index(0)?),
            Some((_, tile_experts)) => {
                let expert = e.load(tile_experts, tm)?;
                let zero = e.int(32, 0)?;
                let used = e.cmpi(CmpiPredicate::Sge, expert, zero)?;
                // Uniform over the block: a tile of no expert exits whole.
                e.if_then(used, |e| {
                    let expert = e.index_cast(expert, e.index_type())?;
                    kernel.tile(&e, m0, n0, expert)
                })
            }
        }
    })
}

/// What the whole kernel shares.
struct Kernel<'g, 'c, 'a> {
    gemm: &'g Fp8Gemm,
    t: CpAsyncTiles,
    ops: &'g Operands<'c, 'a>,
    /// Shared address of stage 0 (1024-byte aligned).
    base: Value<'c, 'a>,
    tid: Value<'c, 'a>,
    acc: &'g [Value<'c, 'a>],
}

/// One 16-byte chunk a thread copies into every stage: from where (the byte offset of its row
/// in x, or in the expert's w; −1 when the row is not real) and to where (its offset in a
/// stage).
struct Chunk<'c, 'b> {
    row_offset: Value<'c, 'b>,
    place: Value<'c, 'b>,
}

/// A thread's share of the copies: chunk `tid + j · threads` of a part (A's or B's rows of a
/// stage) is row `row0 + j · threads / 8` (`row0 = tid / 8`), 16-byte chunk `c = tid mod 8`,
/// placed at `row · 128 + (c ^ (row mod 8)) · 16`. With 32 threads `row mod 8` is `row0 ^ 4`
/// for odd j (row0 < 4), else `row0 mod 8`: so `place = row0 · 128 + j · threads · 16 +
/// (c ^ phase0 ^ flip_j) · 16`.
struct Copier<'c, 'b> {
    row0: Value<'c, 'b>,
    /// `(c ^ (row0 mod 8))` (`i32`).
    swizzle: Value<'c, 'b>,
    /// `row0 · 128` (`i32`).
    row0_bytes: Value<'c, 'b>,
    /// `16 c`.
    c16: Value<'c, 'b>,
}

impl<'c, 'b> Copier<'c, 'b> {
    fn new(kernel: &Kernel<'_, 'c, '_>, e: &Emit<'c, 'b>) -> Result<Self, CodegenError> {
        let i32_type = e.int_type(32);
        let eight = e.index(8)?;
        let c = e.remui(kernel.tid, eight)?;
        let row0 = e.divui(kernel.tid, eight)?;
        let row0_32 = e.index_cast(row0, i32_type)?;
        let phase0 = e.andi(row0_32, e.int(32, 7)?)?;
        Ok(Copier {
            row0,
            swizzle: e.xori(e.index_cast(c, i32_type)?, phase0)?,
            row0_bytes: e.shli(row0_32, e.int(32, 7)?)?,
            c16: e.muli(c, e.index(16)?)?,
        })
    }

    /// Chunk `j`'s place in a stage, `part` bytes in (B's rows follow A's).
    fn place<'d>(
        &self,
        kernel: &Kernel<'_, 'c, '_>,
        e: &Emit<'c, 'd>,
        j: u64,
        part: u64,
    ) -> Result<Value<'c, 'd>, CodegenError> {
        let threads = u64::from(kernel.t.threads());
        let flip = (j * threads / 8) % 8;
        debug_assert!(flip == 0 || (flip == 4 && threads == 32));
        let chunk = e.xori(self.swizzle, e.int(32, flip as i64)?)?;
        let chunk = e.shli(chunk, e.int(32, 4)?)?;
        let constant = part + j * threads * 16;
        let at = e.addi(self.row0_bytes, e.int(32, constant as i64)?)?;
        e.addi(at, chunk)
    }

    /// This thread's chunks of A (rows from `m0`) and B (columns from `n0`).
    fn chunks<'d>(
        &self,
        kernel: &Kernel<'_, 'c, '_>,
        e: &Emit<'c, 'd>,
        m0: Value<'c, '_>,
        n0: Value<'c, '_>,
    ) -> Result<[Vec<Chunk<'c, 'd>>; 2], CodegenError> {
        let (gemm, t) = (kernel.gemm, kernel.t);
        let i32_type = e.int_type(32);
        let threads = u64::from(t.threads());
        let k = e.index(gemm.k as i64)?;
        let none = e.int(32, -1)?;
        let dispatch_rows = kernel.ops.dispatch.map(|d| d.0);
        let mut a_chunks = Vec::new();
        for j in 0..t.block_m * 8 / threads {
            let row = e.addi(self.row0, e.index((j * threads / 8) as i64)?)?;
            let p = e.addi(m0, row)?;
            let r = tile_row(gemm, e, dispatch_rows, p)?;
            let at = e.muli(r.x, k)?;
            let at = e.index_cast(at, i32_type)?;
            a_chunks.push(Chunk {
                row_offset: e.select(r.real, at, none)?,
                place: self.place(kernel, e, j, 0)?,
            });
        }
        let mut b_chunks = Vec::new();
        let n = e.index(gemm.n as i64)?;
        for j in 0..t.block_n * 8 / threads {
            let row = e.addi(self.row0, e.index((j * threads / 8) as i64)?)?;
            let col = e.addi(n0, row)?;
            let real = e.lt(col, n)?;
            let at = e.muli(col, k)?;
            let at = e.index_cast(at, i32_type)?;
            b_chunks.push(Chunk {
                row_offset: e.select(real, at, none)?,
                place: self.place(kernel, e, j, t.block_m * BLOCK_K)?,
            });
        }
        Ok([a_chunks, b_chunks])
    }
}

impl<'c> Kernel<'_, 'c, '_> {
    fn k_blocks(&self) -> u64 {
        self.gemm.k.div_ceil(BLOCK_K)
    }

    /// The tile at `(m0, n0)` (m0 in the dispatch's layout when grouped) of `expert`.
    fn tile<'b>(
        &self,
        e: &Emit<'c, 'b>,
        m0: Value<'c, 'b>,
        n0: Value<'c, 'b>,
        expert: Value<'c, 'b>,
    ) -> Result<(), CodegenError> {
        let t = self.t;
        let i64_type = e.int_type(64);
        let x = e.address_of(self.ops.x)?;
        // Expert `expert`'s w: `expert · N · K` bytes in.
        let w = e.address_of(self.ops.w)?;
        let expert_bytes = e.muli(expert, e.index((self.gemm.n * self.gemm.k) as i64)?)?;
        let w = e.addi(w, e.index_cast(expert_bytes, i64_type)?)?;
        let lane = Copier::new(self, e)?;
        // The chunks' rows are found again for every K block, from an opaque copy of `m0`:
        // kept across the loop, one offset per chunk would hold registers the accumulators
        // need (grouped, that is a cached load of the dispatch's rows per chunk and K block).
        let load = |e: &Emit<'c, '_>, stage: Value<'c, '_>, kb: Value<'c, '_>| {
            let m0 = opaque(e, m0)?;
            let [a, b] = lane.chunks(self, e, m0, n0)?;
            self.load_stage(e, stage, kb, lane.c16, [(&a, x), (&b, w)])?;
            self.load_scales(e, stage, kb, [m0, n0], expert)
        };

        let warp_tile = WarpTile::new(self, e, m0, n0)?;
        let zero = e.f32(0.0)?;
        for &cell in self.acc {
            e.set(cell, zero)?;
        }
        let stages = t.stages;
        let k_blocks = self.k_blocks();
        // Prologue: the first `stages - 1` K blocks in flight, one group each (empty past K).
        for s in 0..stages - 1 {
            if s < k_blocks {
                let stage = e.int(32, s as i64)?;
                load(e, stage, e.index(s as i64)?)?;
            }
            e.cp_async_commit()?;
        }
        let end = e.index(k_blocks as i64)?;
        e.for_range(e.index(0)?, end, e.index(1)?, |e, kb| {
            // Unrolled by ptxas (it does so for a few K blocks), the loop would hold two K
            // blocks' fragments and addresses at once and spill.
            e.push_void(e.inline_asm_op(".pragma \"nounroll\";", "", &[], &[])?);
            let kb = opaque(&e, kb)?;
            e.cp_async_wait((stages - 2) as u32)?;
            // Every thread's copies of K block `kb` have landed, and every warp is done with
            // the stage K block `kb - 1` used.
            e.barrier();
            let scales = warp_tile.scales(self, &e, kb)?;
            let next = e.addi(kb, e.index((stages - 1) as i64)?)?;
            let in_k = e.lt(next, end)?;
            e.if_then(in_k, |e| {
                let stage = e.remui(next, e.index(stages as i64)?)?;
                let stage = e.index_cast(stage, e.int_type(32))?;
                load(&e, stage, next)
            })?;
            e.cp_async_commit()?;
            let stage = e.remui(kb, e.index(stages as i64)?)?;
            let stage = e.index_cast(stage, e.int_type(32))?;
            let stage_bytes = e.int(32, t.stage_bytes() as i64)?;
            let stage_base = e.muli(stage, stage_bytes)?;
            let stage_base = e.addi(self.base, stage_base)?;
            let k0 = e.muli(kb, e.index(BLOCK_K as i64)?)?;
            warp_tile.k_block(self, &e, stage_base, k0, &scales)
        })?;
        e.cp_async_wait(0)?;
        warp_tile.store(self, e)
    }

    /// Issues this thread's copies of K block `kb` into ring stage `stage` (an `i32`): for each
    /// part (A from x, B from the expert's w, at the given global addresses), its chunks at K
    /// `kb · 128 + c16`, zeros where the row is not real or K is past its end (src-size 0).
    fn load_stage(
        &self,
        e: &Emit<'c, '_>,
        stage: Value<'c, '_>,
        kb: Value<'c, '_>,
        c16: Value<'c, '_>,
        parts: [(&Vec<Chunk<'c, '_>>, Value<'c, '_>); 2],
    ) -> Result<(), CodegenError> {
        let i32_type = e.int_type(32);
        let k = e.int(32, self.gemm.k as i64)?;
        let kb = e.index_cast(kb, i32_type)?;
        let k0 = e.muli(kb, e.int(32, BLOCK_K as i64)?)?;
        let kc = e.addi(k0, e.index_cast(c16, i32_type)?)?;
        let k_ok = e.cmpi(CmpiPredicate::Ult, kc, k)?;
        let stage_bytes = e.int(32, self.t.stage_bytes() as i64)?;
        let stage_base = e.muli(stage, stage_bytes)?;
        let stage_base = e.addi(self.base, stage_base)?;
        let full = e.int(32, 16)?;
        let empty = e.int(32, 0)?;
        for (chunks, part) in parts {
            for chunk in chunks {
                let real = e.cmpi(CmpiPredicate::Sge, chunk.row_offset, empty)?;
                let ok = e.andi(real, k_ok)?;
                // Where nothing is read the source is the part's first byte.
                let at = e.addi(chunk.row_offset, kc)?;
                let at = e.select(ok, at, empty)?;
                let src = e.addi(part, e.extui(at, e.int_type(64))?)?;
                let size = e.select(ok, full, empty)?;
                let dst = e.addi(stage_base, chunk.place)?;
                e.cp_async(dst, src, 16, size)?;
            }
        }
        Ok(())
    }

    /// Shared address of ring stage `stage`'s (an `i32`, or `index`) scales.
    fn scale_base<'d>(
        &self,
        e: &Emit<'c, 'd>,
        stage: Value<'c, '_>,
    ) -> Result<Value<'c, 'd>, CodegenError> {
        let t = self.t;
        let i32_type = e.int_type(32);
        let stage = if stage.r#type() == i32_type {
            stage
        } else {
            e.index_cast(stage, i32_type)?
        };
        let at = e.muli(stage, e.int(32, t.scale_bytes() as i64)?)?;
        let at = e.addi(at, e.int(32, (t.stages * t.stage_bytes()) as i64)?)?;
        e.addi(self.base, at)
    }

    /// Issues the copies of K block `kb`'s scales into ring stage `stage` (with the tiles'
    /// copies: one group): thread `r < block_m` copies tile row `r`'s activation scale (0 for
    /// a row that is not real), thread 0 also the tile's weight scale `s_w[expert, n0 / 128,
    /// kb]` (one weight-scale block covers the tile). So each scale is read once per block.
    fn load_scales(
        &self,
        e: &Emit<'c, '_>,
        stage: Value<'c, '_>,
        kb: Value<'c, '_>,
        [m0, n0]: [Value<'c, '_>; 2],
        expert: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (gemm, t) = (self.gemm, self.t);
        let i64_type = e.int_type(64);
        let k_tiles = gemm.k.div_ceil(BLOCK_K);
        let k_tiles_v = e.index(k_tiles as i64)?;
        let four = e.index(4)?;
        let base = self.scale_base(e, stage)?;
        let x_scale = e.address_of(self.ops.x_scale)?;
        let dispatch_rows = self.ops.dispatch.map(|d| d.0);
        let threads = u64::from(t.threads());
        for j in 0..t.block_m.div_ceil(threads) {
            let row = e.addi(self.tid, e.index((j * threads) as i64)?)?;
            // Whole warps: block_m and the thread count are multiples of 32.
            let inside = e.lt(row, e.index(t.block_m as i64)?)?;
            e.if_then(inside, |e| {
                let p = e.addi(m0, row)?;
                let r = tile_row(gemm, &e, dispatch_rows, p)?;
                let at = e.muli(r.x, k_tiles_v)?;
                let at = e.addi(at, kb)?;
                let at = e.muli(at, four)?;
                let src = e.addi(x_scale, e.index_cast(at, i64_type)?)?;
                let dst = e.muli(e.index_cast(row, e.int_type(32))?, e.int(32, 4)?)?;
                let dst = e.addi(base, dst)?;
                let size = e.select(r.real, e.int(32, 4)?, e.int(32, 0)?)?;
                e.cp_async(dst, src, 4, size)
            })?;
        }
        let first = e.cmpi(CmpiPredicate::Eq, self.tid, e.index(0)?)?;
        e.if_then(first, |e| {
            let blocks = e.index((gemm.n.div_ceil(BLOCK_K) * k_tiles) as i64)?;
            let at = e.muli(expert, blocks)?;
            let n_block = e.divui(n0, e.index(BLOCK_K as i64)?)?;
            let at = e.addi(at, e.muli(n_block, k_tiles_v)?)?;
            let at = e.addi(at, kb)?;
            let at = e.muli(at, four)?;
            let w_scale = e.address_of(self.ops.w_scale)?;
            let src = e.addi(w_scale, e.index_cast(at, i64_type)?)?;
            let dst = e.addi(base, e.int(32, (4 * t.block_m) as i64)?)?;
            e.cp_async(dst, src, 4, e.int(32, 4)?)
        })
    }
}

/// A warp's 64 × 32 sub-tile: where its lanes' `ldmatrix` rows start, its rows and columns.
struct WarpTile<'c, 'b> {
    /// Offset of the lane's A row (m16 tile 0) in a stage: `(warp_m · 64 + r_a) · 128`.
    a_row: Value<'c, 'b>,
    /// Offset of the lane's B row (n8 tile pair 0) in a stage, past A.
    b_row: Value<'c, 'b>,
    /// The lane's 16-byte chunk within an A (B) fragment's 32 bytes of K: 0 or 1.
    a_half: Value<'c, 'b>,
    b_half: Value<'c, 'b>,
    /// `lane mod 8`: the swizzle phase of every row the lane addresses.
    phase: Value<'c, 'b>,
    /// The first row of D the lane holds (of the dispatch's layout when grouped): `g` of m16
    /// tile 0.
    first_row: Value<'c, 'b>,
    /// Offset of its scale in a stage's scales: `4 · (warp_m · warp rows + g)` (`i32`).
    scale_row: Value<'c, 'b>,
    /// Column of D element 0 of n8 tile 0: `n0 + warp_n · 32 + 2q`.
    col0: Value<'c, 'b>,
}

impl<'c, 'b> WarpTile<'c, 'b> {
    fn new(
        kernel: &Kernel<'_, 'c, '_>,
        e: &Emit<'c, 'b>,
        m0: Value<'c, 'b>,
        n0: Value<'c, 'b>,
    ) -> Result<Self, CodegenError> {
        let t = kernel.t;
        let i32_type = e.int_type(32);
        let thirty_two = e.index(32)?;
        let warp = e.divui(kernel.tid, thirty_two)?;
        let lane = e.remui(kernel.tid, thirty_two)?;
        let warps_n = e.index((t.block_n / t.warp_n()) as i64)?;
        let warp_m = e.divui(warp, warps_n)?;
        let warp_n = e.remui(warp, warps_n)?;
        let eight = e.index(8)?;
        let sixteen = e.index(16)?;
        let two = e.index(2)?;
        let four = e.index(4)?;
        let phase = e.remui(lane, eight)?;
        let octet = e.divui(lane, eight)?;
        // A: matrix `lane / 8` of an x4 is rows 8 · (matrix mod 2) .., bytes 16 · (matrix / 2) ..
        let a_eighth = e.remui(octet, two)?;
        let a_r = e.addi(phase, e.muli(a_eighth, eight)?)?;
        let a_half = e.divui(lane, sixteen)?;
        // B: matrix `lane / 8` of an x4 is n8 tile `matrix / 2` of the pair, bytes
        // 16 · (matrix mod 2) ..
        let b_r = e.addi(phase, e.muli(e.divui(lane, sixteen)?, eight)?)?;
        let b_half = e.remui(octet, two)?;
        let row_bytes = e.index(BLOCK_K as i64)?;
        let a_row = e.addi(e.muli(warp_m, e.index(t.warp_m() as i64)?)?, a_r)?;
        let a_row = e.muli(a_row, row_bytes)?;
        let b_row = e.addi(e.muli(warp_n, e.index(t.warp_n() as i64)?)?, b_r)?;
        let b_row = e.addi(b_row, e.index(t.block_m as i64)?)?;
        let b_row = e.muli(b_row, row_bytes)?;
        let g = e.divui(lane, four)?;
        let q = e.remui(lane, four)?;
        let warp_row = e.addi(m0, e.muli(warp_m, e.index(t.warp_m() as i64)?)?)?;
        let first_row = e.addi(warp_row, g)?;
        let scale_row = e.addi(e.muli(warp_m, e.index(t.warp_m() as i64)?)?, g)?;
        let scale_row = e.muli(scale_row, four)?;
        let col0 = e.addi(n0, e.muli(warp_n, e.index(t.warp_n() as i64)?)?)?;
        let col0 = e.addi(col0, e.muli(q, two)?)?;
        let cast = |v| e.index_cast(v, i32_type);
        Ok(WarpTile {
            a_row: cast(a_row)?,
            b_row: cast(b_row)?,
            a_half: cast(a_half)?,
            b_half: cast(b_half)?,
            phase: cast(phase)?,
            first_row,
            scale_row: cast(scale_row)?,
            col0,
        })
    }

    /// K block `kb`'s scales, from the ring stage its copies landed in: `s_x · s_w` for each
    /// of the lane's rows (m16 tile `i`, half `h`: tile row `warp_m · warp rows + 16 i + 8 h +
    /// g`) with the tile's weight scale.
    fn scales<'d>(
        &self,
        kernel: &Kernel<'_, 'c, '_>,
        e: &Emit<'c, 'd>,
        kb: Value<'c, '_>,
    ) -> Result<Vec<[Value<'c, 'd>; 2]>, CodegenError> {
        let t = kernel.t;
        let stage = e.remui(kb, e.index(t.stages as i64)?)?;
        let base = kernel.scale_base(e, stage)?;
        let f32_type = e.f32_type();
        let load = |offset: u64| -> Result<Value<'c, 'd>, CodegenError> {
            let word = shared_load_u32(e, base, offset)?;
            e.bitcast(word, f32_type)
        };
        let sw = load(4 * t.block_m)?;
        let rows = e.addi(base, self.scale_row)?;
        (0..t.m_tiles() as u64)
            .map(|i| {
                let scale = |h: u64| -> Result<Value<'c, 'd>, CodegenError> {
                    let word = shared_load_u32(e, rows, 4 * (16 * i + 8 * h))?;
                    e.mulf(e.bitcast(word, f32_type)?, sw)
                };
                Ok([scale(0)?, scale(1)?])
            })
            .collect()
    }

    /// Shared address of the lane's `ldmatrix` row for chunk `2 · step + half` of a row at
    /// offset `row` from `stage` (chunk swizzled by the row's phase).
    fn matrix_row<'d>(
        &self,
        e: &Emit<'c, 'd>,
        stage: Value<'c, '_>,
        row: Value<'c, '_>,
        extra_rows: u64,
        half: Value<'c, '_>,
        chunk: u64,
    ) -> Result<Value<'c, 'd>, CodegenError> {
        let chunk = e.addi(half, e.int(32, chunk as i64)?)?;
        let chunk = e.xori(chunk, self.phase)?;
        let chunk = e.shli(chunk, e.int(32, 4)?)?;
        let at = e.addi(stage, row)?;
        let at = e.addi(at, e.int(32, (extra_rows * BLOCK_K) as i64)?)?;
        e.addi(at, chunk)
    }

    /// The MMAs and promotions of the K block at `k0` in the stage at shared address `stage`.
    fn k_block<'d>(
        &self,
        kernel: &Kernel<'_, 'c, '_>,
        e: &Emit<'c, 'd>,
        stage: Value<'c, 'd>,
        k0: Value<'c, 'd>,
        scales: &[[Value<'c, 'd>; 2]],
    ) -> Result<(), CodegenError> {
        let gemm = kernel.gemm;
        let (m_tiles, n_tiles) = (kernel.t.m_tiles(), kernel.t.n_tiles());
        let instruction = fp8_mma_instruction(gemm.format);
        let interval = gemm.promote_interval;
        let k = e.index(gemm.k as i64)?;
        let zero = e.f32(0.0)?;
        for group in 0..BLOCK_K / interval {
            let mut partial = vec![[zero; 4]; m_tiles * n_tiles];
            for step in 0..interval / MMA_K {
                let chunk = 2 * (group * interval / MMA_K + step);
                // B's fragments first, then each m16 tile's A fragment right before its MMAs:
                // four A registers live at a time rather than sixteen.
                let mut b: Vec<[Value; 2]> = Vec::with_capacity(n_tiles);
                for pair in 0..n_tiles / 2 {
                    let at = self.matrix_row(
                        e,
                        stage,
                        self.b_row,
                        16 * pair as u64,
                        self.b_half,
                        chunk,
                    )?;
                    let regs = e.ldmatrix(at, 4)?;
                    b.push([regs[0], regs[1]]);
                    b.push([regs[2], regs[3]]);
                }
                for i in 0..m_tiles {
                    let at =
                        self.matrix_row(e, stage, self.a_row, 16 * i as u64, self.a_half, chunk)?;
                    let a = e.ldmatrix(at, 4)?;
                    let a = [a[0], a[1], a[2], a[3]];
                    for (j, &bj) in b.iter().enumerate() {
                        let at = i * n_tiles + j;
                        partial[at] = mma(e, &instruction, a, bj, partial[at])?;
                    }
                }
            }
            let start = e.addi(k0, e.index((group * interval) as i64)?)?;
            let inside = e.lt(start, k)?;
            e.if_then(inside, |e| {
                for (at, values) in partial.iter().enumerate() {
                    let i = at / n_tiles;
                    for (d, &p) in values.iter().enumerate() {
                        let scaled = e.mulf(p, scales[i][d / 2])?;
                        e.accumulate(kernel.acc[4 * at + d], scaled)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Rounds the accumulators to the output dtype and stores the real rows' columns below N
    /// with predicated stores: D element `d` of MMA tile `(i, j)` is row `rows[i][d / 2]`,
    /// column `col0 + 8j + d mod 2`; when N is even, elements `d` and `d + 1` (d even) are two
    /// adjacent columns from an even one, both inside or neither, stored together.
    fn store(&self, kernel: &Kernel<'_, 'c, '_>, e: &Emit<'c, '_>) -> Result<(), CodegenError> {
        let gemm = kernel.gemm;
        let n_tiles = kernel.t.n_tiles();
        let n = e.index(gemm.n as i64)?;
        let paired = gemm.n.is_multiple_of(2);
        let out = e.address_of(kernel.ops.out)?;
        let size = e.index(gemm.output.size_bytes() as i64)?;
        // The rows found here, after the loop, rather than held in registers through it.
        let rows = lane_rows(kernel, e, self.first_row)?;
        for (i, pair) in rows.iter().enumerate() {
            for j in 0..n_tiles {
                for d in 0..4 {
                    if paired && d % 2 == 1 {
                        continue;
                    }
                    let row = pair[d / 2];
                    let col = e.addi(self.col0, e.index((8 * j + d % 2) as i64)?)?;
                    let col_ok = e.lt(col, n)?;
                    let ok = e.andi(row.real, col_ok)?;
                    let at = e.muli(row.out, n)?;
                    let at = e.addi(at, col)?;
                    let at = e.muli(at, size)?;
                    let at = e.index_cast(at, e.int_type(64))?;
                    let at = e.addi(out, at)?;
                    let cell = 4 * (i * n_tiles + j) + d;
                    let value = e.get(kernel.acc[cell])?;
                    let next = if paired {
                        Some(e.get(kernel.acc[cell + 1])?)
                    } else {
                        None
                    };
                    global_store_if(e, ok, at, &output_words(e, gemm.output, value, next)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The rows of D a lane holds, from its first (`first_row`, of the dispatch's layout when
/// grouped): m16 tile `i`'s `first_row + 16 i` and `+ 8`.
fn lane_rows<'c, 'b>(
    kernel: &Kernel<'_, 'c, '_>,
    e: &Emit<'c, 'b>,
    first_row: Value<'c, 'b>,
) -> Result<Vec<[TileRow<'c, 'b>; 2]>, CodegenError> {
    let dispatch_rows = kernel.ops.dispatch.map(|d| d.0);
    (0..kernel.t.m_tiles())
        .map(|i| {
            let p = e.addi(first_row, e.index(16 * i as i64)?)?;
            let p8 = e.addi(p, e.index(8)?)?;
            Ok([
                tile_row(kernel.gemm, e, dispatch_rows, p)?,
                tile_row(kernel.gemm, e, dispatch_rows, p8)?,
            ])
        })
        .collect()
}

/// `value` (an `index` below 2³¹) through an opaque `mov`: what LLVM's loop strength reduction
/// cannot see through, so that the addresses derived from the K block are computed where they
/// are used from 32-bit offsets rather than kept as one 64-bit pointer per row across the loop
/// (which costs the registers the accumulators need).
fn opaque<'c, 'a>(e: &Emit<'c, 'a>, value: Value<'c, '_>) -> Result<Value<'c, 'a>, CodegenError> {
    let i32_type = e.int_type(32);
    let narrow = e.index_cast(value, i32_type)?;
    let hidden = e.inline_asm("mov.b32 $0, $1;", "=r,r", &[narrow], i32_type)?;
    e.index_cast(hidden, e.index_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(rows: u64, n: u64, k: u64) -> Fp8Gemm {
        Fp8Gemm::recipe(rows, n, k, GemmForm::MmaSync)
    }

    fn shape(t: CpAsyncTiles) -> (u64, u64) {
        (t.block_m, t.block_n)
    }

    #[test]
    fn every_tile_shape_fits_its_ring_in_shared_memory() {
        for block_m in [64, 128] {
            for block_n in [32, 64, 128] {
                let stages = stages_for(block_m, block_n);
                assert!((3..=MAX_STAGES).contains(&stages), "{block_m}x{block_n}");
                let t = CpAsyncTiles {
                    block_m,
                    block_n,
                    stages,
                };
                assert!(t.dynamic_shared_bytes() <= SHARED_LIMIT);
                // Every thread copies whole rows' worth of chunks of each part.
                let threads = u64::from(t.threads());
                assert_eq!((block_m * 8) % threads, 0);
                assert_eq!((block_n * 8) % threads, 0);
            }
        }
    }

    #[test]
    fn tiles_follow_the_wave_heuristic_on_deepgemms_shapes() {
        // Many waves: the largest tile.
        assert_eq!(shape(tiles_for(&dense(4096, 7168, 16384))), (128, 128));
        assert_eq!(shape(tiles_for(&dense(4096, 4096, 7168))), (128, 128));
        // 544 tiles of 128 × 128 are 3.8 waves of 142; 1088 of 128 × 64, 7.7.
        assert_eq!(shape(tiles_for(&dense(4096, 2112, 7168))), (128, 128));
        // One wave of 128 × 64 (112 tiles) costs less than one of 128 × 128.
        assert_eq!(shape(tiles_for(&dense(128, 7168, 16384))), (128, 64));
        // 64 rows: 66 tiles of 64 × 32, one wave.
        assert_eq!(shape(tiles_for(&dense(64, 2112, 7168))), (64, 32));
    }
}
