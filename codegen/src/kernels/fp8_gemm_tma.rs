//! The pipelined Hopper form of the dense `fp8_gemm` (sm_90a): TMA loads into a ring of
//! shared-memory stages guarded by mbarriers, a producer warpgroup and one or two consumer
//! warpgroups, and a persistent grid (DeepGEMM's structure; MLIR's NVGPU tutorial, Ch5, builds
//! the same with f16).
//!
//! - **Tiles.** A block computes `block_m × block_n` output tiles (`block_m` 64 or 128: one
//!   consumer warpgroup per 64 rows; `block_n` 16 to 128), chosen by [`tiles_for`]. The grid
//!   is `min(tiles, 132)` blocks, each taking tiles `blockIdx.x, blockIdx.x + grid, …`
//!   (row-major over the tile grid), so the ring never drains between tiles.
//! - **Ring.** `stages` stages of `(block_m + block_n) × 128` bytes each: A's and B's 128-deep K
//!   slices in the 128-byte-swizzled K-major layout wgmma reads, written by TMA (a tensor map
//!   per operand, `box = [128, block_m]` and `[128, block_n]`, swizzle 128B); rows past M or N
//!   and K past its end are the TMA's zero fill, so ragged shapes need no padding. Each stage
//!   has a `full` mbarrier (one arrival with the stage's bytes expected; the TMA completes
//!   them) and an `empty` one (every consumer thread arrives once its warpgroup's last wgmma on
//!   the stage has completed). Pass `i` over the ring uses stage `i mod stages` in phase
//!   `(i / stages) mod 2`; the producer waits for `empty` in the opposite parity, which a fresh
//!   mbarrier satisfies, so the first `stages` loads start at once.
//! - **Producer** (warpgroup 0, `setmaxnreg.dec` to 40 with two consumers): one thread waits
//!   for a free stage, expects its bytes on `full` and issues the two TMA loads.
//! - **Consumers** (warpgroups 1..): wait for `full`, read the K block's scales, then per
//!   promotion interval `interval / 32` wgmmas `m64nNk32` into a fresh accumulator and the
//!   promotion `acc += partial · (s_x · s_w)` on the CUDA cores, exactly as
//!   [`super::fp8_gemm_wgmma`] (and so the CPU reference) does; after the block's last wgmma
//!   completes they release the stage, and promote while the other consumer's wgmmas and the
//!   next TMA loads run. The epilogue rounds and stores with predicates.
//!
//! Shared memory is dynamic (`.extern .shared`, the manifest's `shared_bytes`): up to six
//! stages within the 227 KiB a Hopper block may opt into.

use dsc_ir::DType;
use serde::Serialize;

use super::fp8_gemm::{Fp8Gemm, GemmForm, Operands};
use super::fp8_gemm_wgmma::{
    ATOM, BLOCK_K, BLOCK_M, Fragment, MAX_BLOCK_N, SMS, Stage, atom_aligned, k_block_mmas, regs,
};
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::hopper::RegisterBudget;
use crate::mlir::kernel::{Dimension, dynamic_shared_symbol, dynamic_shared_type};
use melior::ir::Value;
use melior::ir::operation::OperationBuilder;

/// Threads of a warpgroup.
const WARPGROUP: u64 = 128;
/// Shared memory a Hopper block may opt into (227 KiB).
const SHARED_LIMIT: u64 = 227 * 1024;
/// Most stages of the ring: beyond six the loads are far enough ahead for any K block.
const MAX_STAGES: u64 = 6;
/// Register budgets after `setmaxnreg` with two consumers: 40 · 128 + 232 · 256 ≤ 65536.
const PRODUCER_REGISTERS: u32 = 40;
const CONSUMER_REGISTERS: u32 = 232;
/// Bytes of one mbarrier.
const MBARRIER: u64 = 8;

/// The tile and ring shape of the pipelined form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TmaTiles {
    /// Rows of a tile: 64 or 128 (one consumer warpgroup per 64).
    pub block_m: u64,
    /// Columns of a tile: 128, 64, 32 or 16.
    pub block_n: u64,
    /// Stages of the shared-memory ring.
    pub stages: u64,
}

/// One TMA tensor map a kernel takes: over which of its parameters, with what box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileMap {
    /// The parameter (of [`Fp8Gemm::params`]) whose tensor the map covers.
    pub over: usize,
    /// Elements per dimension, innermost first (bytes: the operands are FP8).
    pub dims: [u64; 2],
    /// Box per dimension, innermost first.
    pub box_dims: [u32; 2],
}

/// Whether `gemm` can take this form: what the wgmma pieces need (K in whole 16-byte chunks,
/// which is also TMA's stride alignment; 128-wide scale blocks; an interval of whole wgmmas),
/// and an output the epilogue stores (bf16 or f32).
pub fn eligible(gemm: &Fp8Gemm) -> bool {
    super::fp8_gemm_wgmma::eligible(gemm) && matches!(gemm.output, DType::Bf16 | DType::F32)
}

/// The tile shape for `gemm`, DeepGEMM's concern in a documented form: over `block_m` in
/// {128, 64} and `block_n` in {128, 64, 32, 16}, the least `waves · (block_m · block_n + 32 ·
/// (block_m + block_n))`, where `waves = ⌈tiles / 132⌉`. The first term is a tile's tensor-core
/// time, the second its load traffic relative to it (smaller tiles reuse each byte less);
/// both per 128-deep K block, so K drops out. Ties go to the larger tile. A 4096 × 7168 GEMM
/// gets 128 × 128 (14 waves); 4096 × 2112, 128 × 64 (8 full waves rather than 5 with the
/// last one 12% full); 64 × 2112, 64 × 16 (132 tiles: one full wave). Grouped, each expert's
/// rows are padded to whole tiles, so `block_m` is 128 only where an expert gets at least 128
/// rows on average (`tokens · top_k / experts`), and the tiles are counted over those rows.
pub fn tiles_for(gemm: &Fp8Gemm) -> TmaTiles {
    let block_ms: &[u64] = match gemm.grouped {
        None => &[BLOCK_M * 2, BLOCK_M],
        Some(g) if g.tokens * g.top_k / g.experts >= BLOCK_M * 2 => &[BLOCK_M * 2],
        Some(_) => &[BLOCK_M],
    };
    let cost = |block_m: u64, block_n: u64| {
        let tiles = gemm.rows.div_ceil(block_m) * gemm.n.div_ceil(block_n);
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

/// Bytes of one stage: A's and B's 128-deep K slices.
fn stage_bytes(block_m: u64, block_n: u64) -> u64 {
    (block_m + block_n) * BLOCK_K
}

/// The most stages (up to [`MAX_STAGES`]) that fit in a block's shared memory with their
/// mbarriers and the alignment slack.
fn stages_for(block_m: u64, block_n: u64) -> u64 {
    let per_stage = stage_bytes(block_m, block_n) + 2 * MBARRIER;
    ((SHARED_LIMIT - ATOM) / per_stage).min(MAX_STAGES)
}

fn tiles(gemm: &Fp8Gemm) -> TmaTiles {
    match gemm.form {
        GemmForm::WgmmaTma {
            block_m,
            block_n,
            stages,
        } => TmaTiles {
            block_m,
            block_n,
            stages,
        },
        _ => tiles_for(gemm),
    }
}

fn consumers(t: TmaTiles) -> u64 {
    t.block_m / BLOCK_M
}

fn threads(t: TmaTiles) -> u32 {
    (WARPGROUP * (1 + consumers(t))) as u32
}

/// Tiles along M: of the output rows (dense) or of the dispatch's padded layout (grouped).
fn tiles_m(gemm: &Fp8Gemm, t: TmaTiles) -> u64 {
    match gemm.grouped {
        None => gemm.rows.div_ceil(t.block_m),
        Some(g) => gemm.dispatch(g).capacity() / t.block_m,
    }
}

fn tile_count(gemm: &Fp8Gemm, t: TmaTiles) -> u64 {
    tiles_m(gemm, t) * gemm.n.div_ceil(t.block_n)
}

/// Persistent: at most one block per SM, each looping over tiles.
pub fn launch(gemm: &Fp8Gemm) -> Launch {
    let t = tiles(gemm);
    Launch::blocks(tile_count(gemm, t).min(SMS), threads(t))
}

/// Dynamic shared memory of a block: the ring, its mbarriers and room to align the ring to
/// the 1024-byte swizzle atom.
pub fn dynamic_shared_bytes(gemm: &Fp8Gemm) -> u64 {
    let t = tiles(gemm);
    ATOM + t.stages * (stage_bytes(t.block_m, t.block_n) + 2 * MBARRIER)
}

/// The tensor maps: x as `[rows, K]` bytes in `[128, block_m]` boxes (dense only: grouped rows
/// are gathered through the dispatch, which TMA cannot do) and w as `[experts · N, K]` in
/// `[128, block_n]` boxes; parameters `x_map` and `w_map` cover parameters 0 and 2.
pub fn tensor_maps(gemm: &Fp8Gemm) -> Vec<TileMap> {
    let t = tiles(gemm);
    let experts = gemm.grouped.map_or(1, |g| g.experts);
    let w = TileMap {
        over: 2,
        dims: [gemm.k, experts * gemm.n],
        box_dims: [BLOCK_K as u32, t.block_n as u32],
    };
    match gemm.grouped {
        None => vec![
            TileMap {
                over: 0,
                dims: [gemm.k, gemm.rows],
                box_dims: [BLOCK_K as u32, t.block_m as u32],
            },
            w,
        ],
        Some(_) => vec![w],
    }
}

/// Builds the kernel.
pub fn build(gemm: &Fp8Gemm, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let t = tiles(gemm);
    let types = param_types(context, &gemm.params());
    let n_args = types.len();
    let symbol = dynamic_shared_symbol(entry);
    module.add_kernel_with_dynamic_shared(entry, &types, threads(t), |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, n_args)?;
        let ops = Operands::of(gemm, &args);
        let smem = e.push(
            OperationBuilder::new("memref.get_global", location)
                .add_attributes(&[(
                    melior::ir::Identifier::new(context, "name"),
                    melior::ir::attribute::FlatSymbolRefAttribute::new(context, &symbol).into(),
                )])
                .add_results(&[dynamic_shared_type(context)])
                .build()?,
        )?;
        Pipeline::new(gemm, t, &e, &ops, smem)?.emit(&e)
    })
}

/// The shared-memory ring and the values every role uses.
struct Pipeline<'g, 'c, 'a> {
    gemm: &'g Fp8Gemm,
    t: TmaTiles,
    ops: &'g Operands<'c, 'a>,
    /// Shared address of stage 0's A tile (1024-byte aligned).
    ring: Value<'c, 'a>,
    tid: Value<'c, 'a>,
    block: Value<'c, 'a>,
}

impl<'g, 'c, 'a> Pipeline<'g, 'c, 'a> {
    fn new(
        gemm: &'g Fp8Gemm,
        t: TmaTiles,
        e: &Emit<'c, 'a>,
        ops: &'g Operands<'c, 'a>,
        smem: Value<'c, 'a>,
    ) -> Result<Self, CodegenError> {
        let missing = |what: &str| CodegenError::InvalidKernel {
            kernel: "fp8_gemm".into(),
            message: format!("the pipelined form takes {what}"),
        };
        ops.w_map.ok_or_else(|| missing("a tensor map over w"))?;
        if gemm.grouped.is_none() {
            ops.x_map.ok_or_else(|| missing("a tensor map over x"))?;
        }
        Ok(Pipeline {
            gemm,
            t,
            ops,
            ring: atom_aligned(e, smem)?,
            tid: e.thread_x()?,
            block: e.block_index(Dimension::X)?,
        })
    }

    fn k_blocks(&self) -> u64 {
        self.gemm.k.div_ceil(BLOCK_K)
    }

    fn stage_bytes(&self) -> u64 {
        stage_bytes(self.t.block_m, self.t.block_n)
    }

    /// Arrivals that complete a `full` phase: the TMA issuer's (dense), or every producer
    /// thread's once its gathered A rows are in shared memory (grouped; the issuer's arrival
    /// also expects the TMA's bytes).
    fn full_arrivals(&self) -> u32 {
        match self.gemm.grouped {
            None => 1,
            Some(_) => WARPGROUP as u32,
        }
    }

    /// Bytes the TMA brings into a stage: A and B (dense) or B (grouped).
    fn tma_bytes(&self) -> u64 {
        match self.gemm.grouped {
            None => self.stage_bytes(),
            Some(_) => self.t.block_n * BLOCK_K,
        }
    }

    /// Shared address of mbarrier `which` (0: full, 1: empty) of `stage` (an `i32`).
    fn mbarrier<'b>(
        &self,
        e: &Emit<'c, 'b>,
        which: u64,
        stage: Value<'c, '_>,
    ) -> Result<Value<'c, 'b>, CodegenError> {
        let first = self.t.stages * self.stage_bytes() + which * self.t.stages * MBARRIER;
        let first = e.int(32, first as i64)?;
        let first = e.addi(self.ring, first)?;
        let eight = e.int(32, MBARRIER as i64)?;
        let offset = e.muli(stage, eight)?;
        e.addi(first, offset)
    }

    /// Takes the next pass over the ring from `passes` (an `index` cell both roles count the
    /// same way): its stage, its parity, and the shared addresses of the stage's A and B tiles.
    fn next_pass<'b>(
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
        let stage_bytes = e.int(32, self.stage_bytes() as i64)?;
        let a = e.muli(stage, stage_bytes)?;
        let a = e.addi(self.ring, a)?;
        let a_bytes = e.int(32, (self.t.block_m * BLOCK_K) as i64)?;
        Ok(Pass {
            full: self.mbarrier(e, 0, stage)?,
            empty: self.mbarrier(e, 1, stage)?,
            parity: e.index_cast(parity, i32_type)?,
            a,
            b: e.addi(a, a_bytes)?,
        })
    }

    /// `body(e, m0, n0, expert)` for each tile of this block that has work, in order: tiles
    /// `blockIdx.x, blockIdx.x + grid, …` row-major over the tile grid; grouped, tiles of
    /// expert −1 (the dispatch's unused tiles) are skipped. `(m0, n0)` is the tile's first row
    /// (of the dispatch's layout when grouped) and column; `expert` is 0 when dense.
    fn for_each_tile(
        &self,
        e: &Emit<'c, '_>,
        body: impl for<'b> FnOnce(
            &Emit<'c, 'b>,
            [Value<'c, 'b>; 2],
            Value<'c, 'b>,
        ) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let tiles = tile_count(self.gemm, self.t);
        let end = e.index(tiles as i64)?;
        let step = e.index(tiles.min(SMS) as i64)?;
        e.for_range(self.block, end, step, |e, tile| {
            let tiles_n = e.index(self.gemm.n.div_ceil(self.t.block_n) as i64)?;
            let tm = e.divui(tile, tiles_n)?;
            let tn = e.remui(tile, tiles_n)?;
            let m0 = e.muli(tm, e.index(self.t.block_m as i64)?)?;
            let n0 = e.muli(tn, e.index(self.t.block_n as i64)?)?;
            match self.ops.dispatch {
                None => body(&e, [m0, n0], e.index(0)?),
                Some((_, tile_experts)) => {
                    let expert = e.load(tile_experts, tm)?;
                    let zero = e.int(32, 0)?;
                    let used = e.cmpi(melior::dialect::arith::CmpiPredicate::Sge, expert, zero)?;
                    e.if_then(used, |e| {
                        let expert = e.index_cast(expert, e.index_type())?;
                        body(&e, [m0, n0], expert)
                    })
                }
            }
        })
    }

    fn emit(&self, e: &Emit<'c, 'a>) -> Result<(), CodegenError> {
        let zero = e.index(0)?;
        let is_first = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, self.tid, zero)?;
        e.if_then(is_first, |e| {
            for stage in 0..self.t.stages {
                let stage = e.int(32, stage as i64)?;
                e.mbarrier_init(self.mbarrier(&e, 0, stage)?, self.full_arrivals())?;
                let consumer_threads = (consumers(self.t) * WARPGROUP) as u32;
                e.mbarrier_init(self.mbarrier(&e, 1, stage)?, consumer_threads)?;
            }
            e.fence_mbarrier_init()
        })?;
        e.barrier();
        // Variables live in the entry block, where LLVM keeps them in registers.
        let f32_zero = e.f32(0.0)?;
        let acc: Vec<Value> = (0..regs(self.gemm))
            .map(|_| e.cell(f32_zero))
            .collect::<Result<_, _>>()?;
        let passes = e.cell(zero)?;
        let warpgroup = e.divui(self.tid, e.index(WARPGROUP as i64)?)?;
        let is_producer = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, warpgroup, zero)?;
        let two_consumers = consumers(self.t) == 2;
        e.if_then(is_producer, |e| {
            if two_consumers {
                e.set_max_registers(RegisterBudget::Decrease(PRODUCER_REGISTERS))?;
            }
            match self.gemm.grouped {
                // One thread issues every TMA load.
                None => {
                    let zero = e.index(0)?;
                    let leader =
                        e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, self.tid, zero)?;
                    e.if_then(leader, |e| self.produce(&e, passes))
                }
                // The whole warpgroup gathers A's rows.
                Some(_) => self.produce(&e, passes),
            }
        })?;
        let is_consumer = e.cmpi(melior::dialect::arith::CmpiPredicate::Ne, warpgroup, zero)?;
        e.if_then(is_consumer, |e| {
            if two_consumers {
                e.set_max_registers(RegisterBudget::Increase(CONSUMER_REGISTERS))?;
            }
            let one = e.index(1)?;
            let consumer = e.subi(warpgroup, one)?;
            self.consume(&e, consumer, &acc, passes)
        })
    }

    /// The producer's loop: every K block of every tile of this block, in ring order. Dense,
    /// one thread runs it and the TMA brings A and B; grouped, the producer warpgroup runs it,
    /// its first thread has the TMA bring B, and all gather A's rows through the dispatch.
    fn produce(&self, e: &Emit<'c, '_>, passes: Value<'c, '_>) -> Result<(), CodegenError> {
        let w_map = e.address_of(self.ops.w_map.expect("checked in Pipeline::new"))?;
        let x_map = match self.ops.x_map {
            Some(map) => Some(e.address_of(map)?),
            None => None,
        };
        let x_global = e.address_of(self.ops.x)?;
        // Once per block, before the maps are read (every producer thread: no branch).
        for map in x_map.iter().chain([&w_map]) {
            e.fence_tensormap_acquire(*map)?;
        }
        self.for_each_tile(e, |e, [m0, n0], expert| {
            let i32_type = e.int_type(32);
            // B rows of this expert: `expert · N + n0`.
            let n = e.index(self.gemm.n as i64)?;
            let b_row = e.muli(expert, n)?;
            let b_row = e.addi(b_row, n0)?;
            let b_row = e.index_cast(b_row, i32_type)?;
            let m0_32 = e.index_cast(m0, i32_type)?;
            e.for_const(0, self.k_blocks() as i64, 1, |e, kb| {
                let pass = self.next_pass(&e, passes)?;
                let one = e.int(32, 1)?;
                let free = e.xori(pass.parity, one)?;
                e.mbarrier_wait(pass.empty, free)?;
                let k0 = e.muli(kb, e.index(BLOCK_K as i64)?)?;
                let k0_32 = e.index_cast(k0, i32_type)?;
                let bytes = e.int(32, self.tma_bytes() as i64)?;
                match self.gemm.grouped {
                    // One thread: expect the bytes, then both loads.
                    None => {
                        e.mbarrier_arrive_expect_tx(pass.full, bytes)?;
                        if let Some(x_map) = x_map {
                            e.tma_load(pass.a, x_map, &[k0_32, m0_32], pass.full, None)?;
                        }
                        e.tma_load(pass.b, w_map, &[k0_32, b_row], pass.full, None)
                    }
                    // The warpgroup, without branching (a divergent warp would have to
                    // reconverge around the loop): the first thread's predicated TMA load of
                    // B, every thread's share of A's rows, then every thread's arrival, the
                    // first one's expecting B's bytes. The load may complete its bytes before
                    // they are expected: the tx-count goes below zero, and the phase cannot
                    // complete before the first thread's arrival.
                    Some(_) => {
                        let zero = e.index(0)?;
                        let leader =
                            e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, self.tid, zero)?;
                        e.tma_load(pass.b, w_map, &[k0_32, b_row], pass.full, Some(leader))?;
                        let stage = Stage {
                            gemm: self.gemm,
                            tid: self.tid,
                            k0,
                            m0,
                            dispatch_rows: self.ops.dispatch.map(|d| d.0),
                            rows: self.t.block_m,
                            base: pass.a,
                        };
                        stage.load(&e, x_global)?;
                        // The rows written through the generic proxy, seen by wgmma's.
                        e.fence_proxy_async_shared()?;
                        let none = e.int(32, 0)?;
                        let bytes = e.select(leader, bytes, none)?;
                        e.mbarrier_arrive_expect_tx(pass.full, bytes)
                    }
                }
            })
        })
    }

    /// Consumer warpgroup `consumer`'s loop: rows `64 · consumer ..` of each tile.
    fn consume(
        &self,
        e: &Emit<'c, '_>,
        consumer: Value<'c, '_>,
        acc: &[Value<'c, '_>],
        passes: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let warpgroup_thread = e.remui(self.tid, e.index(WARPGROUP as i64)?)?;
        let rows_offset = e.muli(consumer, e.index(BLOCK_M as i64)?)?;
        let a_offset = e.muli(rows_offset, e.index(BLOCK_K as i64)?)?;
        let a_offset = e.index_cast(a_offset, e.int_type(32))?;
        let dispatch_rows = self.ops.dispatch.map(|d| d.0);
        self.for_each_tile(e, |e, [m0, n0], expert| {
            let m0 = e.addi(m0, rows_offset)?;
            let fragment = Fragment::new(self.gemm, e, warpgroup_thread, m0, n0, dispatch_rows)?;
            let zero = e.f32(0.0)?;
            for &cell in acc {
                e.set(cell, zero)?;
            }
            e.for_const(0, self.k_blocks() as i64, 1, |e, kb| {
                let pass = self.next_pass(&e, passes)?;
                // The scales' loads start before the wait for the tiles.
                let scales = fragment.scales(self.gemm, &e, self.ops, expert, n0, kb)?;
                e.mbarrier_wait(pass.full, pass.parity)?;
                let a = e.addi(pass.a, a_offset)?;
                let k0 = e.muli(kb, e.index(BLOCK_K as i64)?)?;
                k_block_mmas(self.gemm, &e, [a, pass.b], k0, scales, acc, |e| {
                    e.mbarrier_arrive(pass.empty)
                })
            })?;
            fragment.store(self.gemm, e, self.ops, acc)
        })
    }
}

/// One pass over the ring: its stage's mbarriers, the phase parity and the tiles' addresses.
struct Pass<'c, 'b> {
    full: Value<'c, 'b>,
    empty: Value<'c, 'b>,
    parity: Value<'c, 'b>,
    a: Value<'c, 'b>,
    b: Value<'c, 'b>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(rows: u64, n: u64, k: u64) -> Fp8Gemm {
        Fp8Gemm {
            rows,
            n,
            k,
            act_tile: 128,
            weight_block: 128,
            promote_interval: 128,
            format: DType::F8E4M3,
            output: DType::Bf16,
            grouped: None,
            form: GemmForm::MmaSync,
        }
    }

    fn shape(t: TmaTiles) -> (u64, u64) {
        (t.block_m, t.block_n)
    }

    #[test]
    fn tiles_follow_the_wave_heuristic_on_deepgemms_shapes() {
        // Many waves: the largest tile.
        assert_eq!(shape(tiles_for(&dense(4096, 7168, 16384))), (128, 128));
        assert_eq!(shape(tiles_for(&dense(4096, 4096, 7168))), (128, 128));
        // 544 tiles of 128 × 128 are 4.1 waves; 1056 of 128 × 64 are 8 full ones.
        assert_eq!(shape(tiles_for(&dense(4096, 2112, 7168))), (128, 64));
        // One wave either way: the cheaper tile.
        assert_eq!(shape(tiles_for(&dense(128, 7168, 16384))), (128, 64));
        // 64 rows: 132 tiles of 64 × 16 fill the SMs once.
        assert_eq!(shape(tiles_for(&dense(64, 2112, 7168))), (64, 16));
    }

    #[test]
    fn every_tile_shape_fits_its_ring_in_shared_memory() {
        for block_m in [64, 128] {
            for block_n in [16, 32, 64, 128] {
                let stages = stages_for(block_m, block_n);
                assert!((4..=MAX_STAGES).contains(&stages), "{block_m}x{block_n}");
                let mut gemm = dense(1024, 1024, 1024);
                gemm.form = GemmForm::WgmmaTma {
                    block_m,
                    block_n,
                    stages,
                };
                assert!(dynamic_shared_bytes(&gemm) <= SHARED_LIMIT);
                // Stages stay 1024-byte aligned for the swizzle.
                assert_eq!(stage_bytes(block_m, block_n) % ATOM, 0);
            }
        }
    }

    #[test]
    fn the_grid_is_persistent_and_the_maps_cover_the_operands() {
        let gemm = dense(4096, 7168, 16384);
        let t = tiles_for(&gemm);
        let mut gemm = gemm;
        gemm.form = GemmForm::WgmmaTma {
            block_m: t.block_m,
            block_n: t.block_n,
            stages: t.stages,
        };
        let launch = launch(&gemm);
        assert_eq!(launch.grid, [132, 1, 1]);
        assert_eq!(launch.block, [384, 1, 1]);
        let maps = tensor_maps(&gemm);
        let [x, w] = maps.as_slice() else {
            panic!("a dense GEMM maps x and w: {maps:?}");
        };
        assert_eq!((x.over, x.dims, x.box_dims), (0, [16384, 4096], [128, 128]));
        assert_eq!((w.over, w.dims, w.box_dims), (2, [16384, 7168], [128, 128]));
        // A small GEMM: fewer tiles than SMs, one block each.
        let mut small = dense(64, 256, 128);
        small.form = GemmForm::WgmmaTma {
            block_m: 64,
            block_n: 128,
            stages: 6,
        };
        assert_eq!(super::launch(&small).grid, [2, 1, 1]);
        assert_eq!(super::launch(&small).block, [256, 1, 1]);
    }
}
