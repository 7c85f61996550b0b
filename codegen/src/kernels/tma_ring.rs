//! The machinery Hopper's pipelined GEMMs share (sm_90a; [`super::fp8_gemm_tma`] and
//! [`super::linear_wgmma`]): tiles of `block_m × block_n` outputs, a ring of shared-memory
//! stages that the TMA fills and wgmma reads, guarded by mbarriers, a producer warpgroup and one
//! or two consumer warpgroups, and a persistent grid.
//!
//! - **Ring.** `stages` stages of `(block_m + block_n) × 128` bytes each: one 128-byte row per
//!   tile row and K block (128 FP8 or 64 BF16 elements), A's rows then B's, in the
//!   128-byte-swizzled K-major layout wgmma reads, which a TMA load with 128-byte swizzle writes.
//!   Each stage has a `full` mbarrier (the producer's arrivals and the TMA's bytes complete it)
//!   and an `empty` one (every consumer thread arrives once its warpgroup's last wgmma on the
//!   stage has completed). Pass `i` over the ring uses stage `i mod stages` in phase
//!   `(i / stages) mod 2`; the producer waits for `empty` in the opposite parity, which a fresh
//!   mbarrier satisfies, so the first `stages` loads start at once. Both roles count passes the
//!   same way, in a per-thread counter.
//! - **Roles.** Warpgroup 0 produces (`setmaxnreg.dec` to 40 with two consumers), warpgroups
//!   1.. consume 64 rows each (`setmaxnreg.inc` to 232).
//! - **Persistent grid.** `min(tiles, 132)` blocks, each taking tiles `blockIdx.x,
//!   blockIdx.x + grid, …`, row-major over the tile grid, so the ring never drains between
//!   tiles.
//! - Shared memory is dynamic (`.extern .shared`, the manifest's `shared_bytes`): up to six
//!   stages within the 227 KiB a Hopper block may opt into.

use dsc_kernels::manifest::TensorMapDtype;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use melior::ir::operation::OperationBuilder;
use serde::Serialize;

use super::fp8_gemm_wgmma::{ATOM, BLOCK_M, MAX_BLOCK_N, SMS, atom_aligned};
use crate::error::CodegenError;
use crate::mlir::emit::Emit;
use crate::mlir::hopper::RegisterBudget;
use crate::mlir::kernel::{Dimension, dynamic_shared_symbol, dynamic_shared_type};

/// Threads of a warpgroup.
pub const WARPGROUP: u64 = 128;
/// Bytes of one tile row per K block (the 128-byte swizzle span).
pub const ROW_BYTES: u64 = 128;
/// Shared memory a Hopper block may opt into (227 KiB).
const SHARED_LIMIT: u64 = 227 * 1024;
/// Most stages of the ring: beyond six the loads are far enough ahead for any K block.
const MAX_STAGES: u64 = 6;
/// Register budgets after `setmaxnreg` with two consumers: 40 · 128 + 232 · 256 ≤ 65536.
const PRODUCER_REGISTERS: u32 = 40;
const CONSUMER_REGISTERS: u32 = 232;
/// Bytes of one mbarrier.
const MBARRIER: u64 = 8;

/// The tile and ring shape of a pipelined GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TmaTiles {
    /// Rows of a tile: 64 or 128 (one consumer warpgroup per 64).
    pub block_m: u64,
    /// Columns of a tile: 128, 64, 32 or 16.
    pub block_n: u64,
    /// Stages of the shared-memory ring.
    pub stages: u64,
}

impl TmaTiles {
    /// Bytes of one stage: A's and B's K slices.
    pub fn stage_bytes(self) -> u64 {
        (self.block_m + self.block_n) * ROW_BYTES
    }

    /// Consumer warpgroups: one per 64 rows.
    pub fn consumers(self) -> u64 {
        self.block_m / BLOCK_M
    }

    /// Threads of a block: the producer warpgroup and the consumers.
    pub fn threads(self) -> u32 {
        (WARPGROUP * (1 + self.consumers())) as u32
    }

    /// Dynamic shared memory of a block: the ring, its mbarriers and room to align the ring
    /// to the 1024-byte swizzle atom.
    pub fn dynamic_shared_bytes(self) -> u64 {
        ATOM + self.stages * (self.stage_bytes() + 2 * MBARRIER)
    }
}

/// The tile shape for a GEMM of `rows × n` outputs, DeepGEMM's concern in a documented form:
/// over `block_m` in `block_ms` and `block_n` in {128, 64, 32, 16}, the least
/// `waves · (block_m · block_n + 32 · (block_m + block_n))`, where `waves = ⌈tiles / 132⌉`. The
/// first term is a tile's tensor-core time, the second its load traffic relative to it (smaller
/// tiles reuse each byte less); both per K block, so K drops out. Ties go to the larger tile.
/// A 4096 × 7168 GEMM gets 128 × 128 (14 waves); 4096 × 2112, 128 × 64 (8 full waves rather
/// than 5 with the last one 12% full); 64 × 2112, 64 × 16 (132 tiles: one full wave).
pub fn tiles_for(rows: u64, n: u64, block_ms: &[u64]) -> TmaTiles {
    let cost = |block_m: u64, block_n: u64| {
        let tiles = rows.div_ceil(block_m) * n.div_ceil(block_n);
        tiles.div_ceil(SMS) * (block_m * block_n + 32 * (block_m + block_n))
    };
    let mut best = (block_ms[0], MAX_BLOCK_N);
    for &block_m in block_ms {
        for block_n in [128, 64, 32, 16] {
            let (c, b) = (cost(block_m, block_n), cost(best.0, best.1));
            if c < b || (c == b && block_m * block_n > best.0 * best.1) {
                best = (block_m, block_n);
            }
        }
    }
    let (block_m, block_n) = best;
    TmaTiles {
        block_m,
        block_n,
        stages: stages_for(block_m, block_n),
    }
}

/// The most stages (up to [`MAX_STAGES`]) that fit in a block's shared memory with their
/// mbarriers and the alignment slack.
pub fn stages_for(block_m: u64, block_n: u64) -> u64 {
    let t = TmaTiles {
        block_m,
        block_n,
        stages: 1,
    };
    ((SHARED_LIMIT - ATOM) / (t.stage_bytes() + 2 * MBARRIER)).min(MAX_STAGES)
}

/// One TMA tensor map a kernel takes: over which of its parameters, with what box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileMap {
    /// The parameter whose tensor the map covers.
    pub over: usize,
    /// Element type.
    pub dtype: TensorMapDtype,
    /// Elements per dimension, innermost first: `[K, rows]` of a K-major matrix.
    pub dims: [u64; 2],
    /// Box per dimension, innermost first: one K block of a tile's rows.
    pub box_dims: [u32; 2],
}

/// The kernel's `.extern .shared` array (see
/// [`crate::mlir::KernelModule::add_kernel_with_dynamic_shared`]).
pub fn dynamic_shared<'c, 'a>(
    e: &Emit<'c, 'a>,
    entry: &str,
) -> Result<Value<'c, 'a>, CodegenError> {
    e.push(
        OperationBuilder::new("memref.get_global", e.location)
            .add_attributes(&[(
                melior::ir::Identifier::new(e.context, "name"),
                melior::ir::attribute::FlatSymbolRefAttribute::new(
                    e.context,
                    &dynamic_shared_symbol(entry),
                )
                .into(),
            )])
            .add_results(&[dynamic_shared_type(e.context)])
            .build()?,
    )
}

/// One pass over the ring: its stage's mbarriers, the phase parity and the tiles' addresses.
pub struct Pass<'c, 'b> {
    /// The stage's `full` mbarrier.
    pub full: Value<'c, 'b>,
    /// The stage's `empty` mbarrier.
    pub empty: Value<'c, 'b>,
    /// The phase parity of this pass (`i32`).
    pub parity: Value<'c, 'b>,
    /// Shared address of the stage's A tile.
    pub a: Value<'c, 'b>,
    /// Shared address of the stage's B tile.
    pub b: Value<'c, 'b>,
}

/// The ring in a block's dynamic shared memory, and the thread and block it runs in.
pub struct Ring<'c, 'a> {
    /// The tiles and stages.
    pub t: TmaTiles,
    /// Shared address of stage 0's A tile (1024-byte aligned).
    base: Value<'c, 'a>,
    /// `threadIdx.x`.
    pub tid: Value<'c, 'a>,
    /// `blockIdx.x`.
    pub block: Value<'c, 'a>,
    /// Consumer warpgroups: [`TmaTiles::consumers`] unless a kernel whose stages are not one
    /// tile's rows says otherwise ([`Ring::with_consumers`]).
    consumers: u64,
}

impl<'c, 'a> Ring<'c, 'a> {
    /// The ring of kernel `entry`, with `full_arrivals` arrivals completing a `full` phase: its
    /// mbarriers are initialized by thread 0, then the whole block synchronizes.
    pub fn new(
        e: &Emit<'c, 'a>,
        entry: &str,
        t: TmaTiles,
        full_arrivals: u32,
    ) -> Result<Self, CodegenError> {
        Self::with_consumers(e, entry, t, full_arrivals, t.consumers())
    }

    /// [`Ring::new`] with `consumers` consumer warpgroups, for a stage that is not A's and B's
    /// rows of one tile (fused attention's: a K tile at `a` of `block_m` 128-byte rows and a V
    /// tile at `b` of `block_n`).
    pub fn with_consumers(
        e: &Emit<'c, 'a>,
        entry: &str,
        t: TmaTiles,
        full_arrivals: u32,
        consumers: u64,
    ) -> Result<Self, CodegenError> {
        let smem = dynamic_shared(e, entry)?;
        let ring = Ring {
            t,
            base: atom_aligned(e, smem)?,
            tid: e.thread_x()?,
            block: e.block_index(Dimension::X)?,
            consumers,
        };
        let zero = e.index(0)?;
        let is_first = e.cmpi(CmpiPredicate::Eq, ring.tid, zero)?;
        e.if_then(is_first, |e| {
            let consumer_threads = (ring.consumers * WARPGROUP) as u32;
            for stage in 0..t.stages {
                let stage = e.int(32, stage as i64)?;
                e.mbarrier_init(ring.mbarrier(&e, 0, stage)?, full_arrivals)?;
                e.mbarrier_init(ring.mbarrier(&e, 1, stage)?, consumer_threads)?;
            }
            e.fence_mbarrier_init()
        })?;
        e.barrier();
        Ok(ring)
    }

    /// Shared address of mbarrier `which` (0: full, 1: empty) of `stage` (an `i32`).
    fn mbarrier<'b>(
        &self,
        e: &Emit<'c, 'b>,
        which: u64,
        stage: Value<'c, '_>,
    ) -> Result<Value<'c, 'b>, CodegenError> {
        let t = self.t;
        let first = t.stages * t.stage_bytes() + which * t.stages * MBARRIER;
        let first = e.int(32, first as i64)?;
        let first = e.addi(self.base, first)?;
        let eight = e.int(32, MBARRIER as i64)?;
        let offset = e.muli(stage, eight)?;
        e.addi(first, offset)
    }

    /// Takes the next pass over the ring from `passes` (an `index` cell both roles count the
    /// same way).
    pub fn next_pass<'b>(
        &self,
        e: &Emit<'c, 'b>,
        passes: Value<'c, '_>,
    ) -> Result<Pass<'c, 'b>, CodegenError> {
        let i = e.get(passes)?;
        let one = e.index(1)?;
        e.set(passes, e.addi(i, one)?)?;
        let stages = e.index(self.t.stages as i64)?;
        let stage = e.remui(i, stages)?;
        let round = e.divui(i, stages)?;
        let two = e.index(2)?;
        let parity = e.remui(round, two)?;
        let i32_type = e.int_type(32);
        let stage = e.index_cast(stage, i32_type)?;
        let stage_bytes = e.int(32, self.t.stage_bytes() as i64)?;
        let a = e.muli(stage, stage_bytes)?;
        let a = e.addi(self.base, a)?;
        let a_bytes = e.int(32, (self.t.block_m * ROW_BYTES) as i64)?;
        Ok(Pass {
            full: self.mbarrier(e, 0, stage)?,
            empty: self.mbarrier(e, 1, stage)?,
            parity: e.index_cast(parity, i32_type)?,
            a,
            b: e.addi(a, a_bytes)?,
        })
    }

    /// The producer's wait for pass `pass`'s stage to be free.
    pub fn wait_free(&self, e: &Emit<'c, '_>, pass: &Pass<'c, '_>) -> Result<(), CodegenError> {
        let one = e.int(32, 1)?;
        let free = e.xori(pass.parity, one)?;
        e.mbarrier_wait(pass.empty, free)
    }

    /// `body(e, tile)` for each tile (of `tiles`) of this block: `blockIdx.x, blockIdx.x + grid,
    /// …` with `grid = min(tiles, 132)`.
    pub fn for_each_tile(
        &self,
        e: &Emit<'c, '_>,
        tiles: u64,
        body: impl for<'b> FnOnce(Emit<'c, 'b>, Value<'c, 'b>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let end = e.index(tiles as i64)?;
        let step = e.index(tiles.min(SMS) as i64)?;
        e.for_range(self.block, end, step, body)
    }

    /// The two roles: `produce` in warpgroup 0, `consume(e, consumer)` in warpgroups 1.. (the
    /// consumer's index from 0), with the register budgets moved to the consumers when there
    /// are two of them.
    pub fn split_roles(
        &self,
        e: &Emit<'c, '_>,
        produce: impl for<'b> FnOnce(&Emit<'c, 'b>) -> Result<(), CodegenError>,
        consume: impl for<'b> FnOnce(&Emit<'c, 'b>, Value<'c, 'b>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let zero = e.index(0)?;
        let warpgroup = e.divui(self.tid, e.index(WARPGROUP as i64)?)?;
        let two_consumers = self.consumers == 2;
        let is_producer = e.cmpi(CmpiPredicate::Eq, warpgroup, zero)?;
        e.if_then(is_producer, |e| {
            if two_consumers {
                e.set_max_registers(RegisterBudget::Decrease(PRODUCER_REGISTERS))?;
            }
            produce(&e)
        })?;
        let is_consumer = e.cmpi(CmpiPredicate::Ne, warpgroup, zero)?;
        e.if_then(is_consumer, |e| {
            if two_consumers {
                e.set_max_registers(RegisterBudget::Increase(CONSUMER_REGISTERS))?;
            }
            let one = e.index(1)?;
            let consumer = e.subi(warpgroup, one)?;
            consume(&e, consumer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tile_shape_fits_its_ring_in_shared_memory() {
        for block_m in [64, 128] {
            for block_n in [16, 32, 64, 128] {
                let stages = stages_for(block_m, block_n);
                assert!((4..=MAX_STAGES).contains(&stages), "{block_m}x{block_n}");
                let t = TmaTiles {
                    block_m,
                    block_n,
                    stages,
                };
                assert!(t.dynamic_shared_bytes() <= SHARED_LIMIT);
                // Stages stay 1024-byte aligned for the swizzle.
                assert_eq!(t.stage_bytes() % ATOM, 0);
                assert_eq!(t.threads(), 128 * (1 + block_m as u32 / 64));
            }
        }
    }
}
