//! The pipelined Hopper form of `fp8_gemm` (sm_90a), dense and grouped, on the ring of
//! [`super::tma_ring`] (DeepGEMM's structure; MLIR's NVGPU tutorial, Ch5, builds the same with
//! f16).
//!
//! - **Loads.** Dense, one producer thread has the TMA bring A's and B's 128-deep K slices
//!   (a tensor map per operand, `box = [128, block_m]` and `[128, block_n]`, swizzle 128B);
//!   rows past M or N and K past its end are the TMA's zero fill, so ragged shapes need no
//!   padding. Grouped (routed experts), M is the expert-contiguous layout of
//!   [`super::moe_dispatch`] padded to `block_m`-row tiles, whose rows the TMA cannot gather:
//!   the producer warpgroup copies A's rows itself ([`super::fp8_gemm_wgmma::Stage`]) while its
//!   first thread has the TMA bring the expert's B rows; tiles of expert −1 are skipped.
//! - **Consumers** wait for `full`, read the K block's scales, then per promotion interval
//!   `interval / 32` wgmmas `m64nNk32` into a fresh accumulator and the promotion
//!   `acc += partial · (s_x · s_w)` on the CUDA cores, exactly as the CPU reference does
//!   ([`super::fp8_gemm_wgmma::k_block_mmas`]); after the block's last wgmma completes they
//!   release the stage, and promote while the other consumer's wgmmas and the next TMA loads
//!   run. The epilogue rounds and stores with predicates.

use dsc_ir::DType;
use dsc_kernels::manifest::TensorMapDtype;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;

use super::fp8_gemm::{Fp8Gemm, GemmForm, Operands};
use super::fp8_gemm_wgmma::{BLOCK_K, BLOCK_M, Fragment, SMS, Stage, k_block_mmas, regs};
use super::tma_ring::{Ring, TileMap, TmaTiles, WARPGROUP};
use super::{Launch, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// Whether `gemm` can take this form: what the wgmma pieces need (K in whole 16-byte chunks,
/// which is also TMA's stride alignment; 128-wide scale blocks; an interval of whole wgmmas),
/// and an output the epilogue stores (bf16 or f32).
pub fn eligible(gemm: &Fp8Gemm) -> bool {
    super::fp8_gemm_wgmma::eligible(gemm) && matches!(gemm.output, DType::Bf16 | DType::F32)
}

/// The tile shape for `gemm` ([`super::tma_ring::tiles_for`] over its output rows). Grouped,
/// each expert's rows are padded to whole tiles, so `block_m` is 128 only where an expert gets
/// at least 128 rows on average (`tokens · top_k / experts`).
pub fn tiles_for(gemm: &Fp8Gemm) -> TmaTiles {
    let block_ms: &[u64] = match gemm.grouped {
        None => &[BLOCK_M * 2, BLOCK_M],
        Some(g) if g.tokens * g.top_k / g.experts >= BLOCK_M * 2 => &[BLOCK_M * 2],
        Some(_) => &[BLOCK_M],
    };
    super::tma_ring::tiles_for(gemm.rows, gemm.n, block_ms)
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
    Launch::blocks(tile_count(gemm, t).min(SMS), t.threads())
}

/// Dynamic shared memory of a block ([`TmaTiles::dynamic_shared_bytes`]).
pub fn dynamic_shared_bytes(gemm: &Fp8Gemm) -> u64 {
    tiles(gemm).dynamic_shared_bytes()
}

/// The tensor maps: x as `[rows, K]` bytes in `[128, block_m]` boxes (dense only: grouped rows
/// are gathered through the dispatch, which TMA cannot do) and w as `[experts · N, K]` in
/// `[128, block_n]` boxes; parameters `x_map` and `w_map` cover parameters 0 and 2.
pub fn tensor_maps(gemm: &Fp8Gemm) -> Vec<TileMap> {
    let t = tiles(gemm);
    let experts = gemm.grouped.map_or(1, |g| g.experts);
    let w = TileMap {
        over: 2,
        dtype: TensorMapDtype::Uint8,
        dims: [gemm.k, experts * gemm.n],
        box_dims: [BLOCK_K as u32, t.block_n as u32],
    };
    match gemm.grouped {
        None => vec![
            TileMap {
                over: 0,
                dtype: TensorMapDtype::Uint8,
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
    module.add_kernel_with_dynamic_shared(entry, &types, t.threads(), |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, n_args)?;
        let ops = Operands::of(gemm, &args);
        let missing = |what: &str| CodegenError::InvalidKernel {
            kernel: entry.to_string(),
            message: format!("the pipelined form takes {what}"),
        };
        let w_map = ops.w_map.ok_or_else(|| missing("a tensor map over w"))?;
        let x_map = match gemm.grouped {
            None => Some(ops.x_map.ok_or_else(|| missing("a tensor map over x"))?),
            Some(_) => None,
        };
        let full_arrivals = match gemm.grouped {
            None => 1,
            Some(_) => WARPGROUP as u32,
        };
        // Variables first, in the entry block (before the ring's branches), where LLVM keeps
        // them in registers; a cell made after a branch stays in local memory.
        let f32_zero = e.f32(0.0)?;
        let acc: Vec<Value> = (0..regs(gemm))
            .map(|_| e.cell(f32_zero))
            .collect::<Result<_, _>>()?;
        let zero = e.index(0)?;
        let passes = e.cell(zero)?;
        let ring = Ring::new(&e, entry, t, full_arrivals)?;
        let pipeline = Pipeline {
            gemm,
            ops: &ops,
            ring: &ring,
            maps: (x_map, w_map),
        };
        ring.split_roles(
            &e,
            |e| match gemm.grouped {
                // One thread issues every TMA load.
                None => {
                    let zero = e.index(0)?;
                    let leader = e.cmpi(CmpiPredicate::Eq, ring.tid, zero)?;
                    e.if_then(leader, |e| pipeline.produce(&e, passes))
                }
                // The whole warpgroup gathers A's rows.
                Some(_) => pipeline.produce(e, passes),
            },
            |e, consumer| pipeline.consume(e, consumer, &acc, passes),
        )
    })
}

/// The FP8 GEMM's use of the ring.
struct Pipeline<'g, 'c, 'a> {
    gemm: &'g Fp8Gemm,
    ops: &'g Operands<'c, 'a>,
    ring: &'g Ring<'c, 'a>,
    /// The tensor maps over x (dense) and w.
    maps: (Option<Value<'c, 'a>>, Value<'c, 'a>),
}

impl<'c> Pipeline<'_, 'c, '_> {
    fn k_blocks(&self) -> u64 {
        self.gemm.k.div_ceil(BLOCK_K)
    }

    /// Bytes the TMA brings into a stage: A and B (dense) or B (grouped).
    fn tma_bytes(&self) -> u64 {
        match self.gemm.grouped {
            None => self.ring.t.stage_bytes(),
            Some(_) => self.ring.t.block_n * BLOCK_K,
        }
    }

    /// `body(e, m0, n0, expert)` for each tile of this block that has work; grouped, tiles of
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
        let t = self.ring.t;
        self.ring
            .for_each_tile(e, tile_count(self.gemm, t), |e, tile| {
                let tiles_n = e.index(self.gemm.n.div_ceil(t.block_n) as i64)?;
                let tm = e.divui(tile, tiles_n)?;
                let tn = e.remui(tile, tiles_n)?;
                let m0 = e.muli(tm, e.index(t.block_m as i64)?)?;
                let n0 = e.muli(tn, e.index(t.block_n as i64)?)?;
                match self.ops.dispatch {
                    None => body(&e, [m0, n0], e.index(0)?),
                    Some((_, tile_experts)) => {
                        let expert = e.load(tile_experts, tm)?;
                        let zero = e.int(32, 0)?;
                        let used = e.cmpi(CmpiPredicate::Sge, expert, zero)?;
                        e.if_then(used, |e| {
                            let expert = e.index_cast(expert, e.index_type())?;
                            body(&e, [m0, n0], expert)
                        })
                    }
                }
            })
    }

    /// The producer's loop: every K block of every tile of this block, in ring order. Dense,
    /// one thread runs it and the TMA brings A and B; grouped, the producer warpgroup runs it,
    /// its first thread has the TMA bring B, and all gather A's rows through the dispatch.
    fn produce(&self, e: &Emit<'c, '_>, passes: Value<'c, '_>) -> Result<(), CodegenError> {
        let w_map = e.address_of(self.maps.1)?;
        let x_map = match self.maps.0 {
            Some(map) => Some(e.address_of(map)?),
            None => None,
        };
        let x_global = e.address_of(self.ops.x)?;
        // Once per block, before the maps are read (every producer thread: no branch).
        for map in x_map.iter().chain([&w_map]) {
            e.fence_tensormap_acquire(*map)?;
        }
        let tid = self.ring.tid;
        self.for_each_tile(e, |e, [m0, n0], expert| {
            let i32_type = e.int_type(32);
            // B rows of this expert: `expert · N + n0`.
            let n = e.index(self.gemm.n as i64)?;
            let b_row = e.muli(expert, n)?;
            let b_row = e.addi(b_row, n0)?;
            let b_row = e.index_cast(b_row, i32_type)?;
            let m0_32 = e.index_cast(m0, i32_type)?;
            e.for_const(0, self.k_blocks() as i64, 1, |e, kb| {
                let pass = self.ring.next_pass(&e, passes)?;
                self.ring.wait_free(&e, &pass)?;
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
                        let leader = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
                        e.tma_load(pass.b, w_map, &[k0_32, b_row], pass.full, Some(leader))?;
                        let stage = Stage {
                            gemm: self.gemm,
                            tid,
                            k0,
                            m0,
                            dispatch_rows: self.ops.dispatch.map(|d| d.0),
                            rows: self.ring.t.block_m,
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
        let warpgroup_thread = e.remui(self.ring.tid, e.index(WARPGROUP as i64)?)?;
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
                let pass = self.ring.next_pass(&e, passes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(rows: u64, n: u64, k: u64) -> Fp8Gemm {
        Fp8Gemm::recipe(rows, n, k, GemmForm::MmaSync)
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
