//! The Hopper form of a BF16 `linear` (the output head; sm_90a), pipelined on the ring of
//! [`super::tma_ring`] like the FP8 GEMM: one producer thread has the TMA bring x's and w's
//! 64-deep K slices (128 bytes of BF16 per row; tensor maps with `box = [64, block_m]` and
//! `[64, block_n]`, swizzle 128B, zero fill past M, N and K), and each consumer warpgroup chains
//! four `wgmma.mma_async m64nNk16.f32.bf16.bf16` per K block onto its f32 accumulators over all
//! of K, releasing the stage once they complete; then the bias in f32, one rounding to the
//! output dtype and predicated stores. Tiles and stages as [`super::tma_ring::tiles_for`]
//! chooses them; a persistent grid.

use dsc_ir::DType;
use dsc_kernels::manifest::TensorMapDtype;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::flash_attention_wgmma as tiles;
use super::fp8_gemm_wgmma::{BLOCK_M, SMS};
use super::linear::Linear;
use super::tma_ring::{Ring, TileMap, TmaTiles, WARPGROUP};
use super::vector_access::{global_store_if, output_words};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// K per K block: one 128-byte swizzle row of BF16.
const BLOCK_K: u64 = 64;

/// A BF16 `linear` on wgmma, pipelined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearWgmma {
    /// The GEMM.
    pub linear: Linear,
    /// Tiles and ring.
    pub tiles: TmaTiles,
}

/// Whether `linear` can take this form: the tensor-core form's operands (BF16, not grouped),
/// K in whole 16-byte chunks (TMA's stride alignment) and an output the epilogue stores.
pub fn eligible(linear: &Linear) -> bool {
    super::linear_mma::applies(linear)
        && linear.k.is_multiple_of(8)
        && matches!(linear.output, DType::Bf16 | DType::F32)
}

impl LinearWgmma {
    /// The form for `linear`, its tiles by [`super::tma_ring::tiles_for`].
    pub fn new(linear: Linear) -> Self {
        let tiles = super::tma_ring::tiles_for(linear.m, linear.n, &[BLOCK_M * 2, BLOCK_M]);
        LinearWgmma { linear, tiles }
    }

    /// Spec name.
    pub fn spec(&self) -> &'static str {
        self.linear.spec()
    }

    /// The linear's buffers, with the tensor maps over x and w before the output.
    pub fn params(&self) -> Vec<Param> {
        let mut params = self.linear.params();
        let out = params.pop().expect("a linear has an output");
        for name in ["x_map", "w_map"] {
            params.push(Param::new(name, DType::I64, 16));
        }
        params.push(out);
        params
    }

    fn tile_count(&self) -> u64 {
        self.linear.m.div_ceil(self.tiles.block_m) * self.linear.n.div_ceil(self.tiles.block_n)
    }

    /// Persistent: at most one block per SM, each looping over tiles.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.tile_count().min(SMS), self.tiles.threads())
    }

    /// The tensor maps over x (`[M, K]`) and w (`[N, K]`), BF16, in one K block's boxes.
    pub fn tensor_maps(&self) -> Vec<TileMap> {
        let l = &self.linear;
        let map = |over: usize, rows: u64, box_rows: u64| TileMap {
            over,
            dtype: TensorMapDtype::Bfloat16,
            dims: [l.k, rows],
            box_dims: [BLOCK_K as u32, box_rows as u32],
        };
        vec![
            map(0, l.m, self.tiles.block_m),
            map(1, l.n, self.tiles.block_n),
        ]
    }

    fn k_blocks(&self) -> u64 {
        self.linear.k.div_ceil(BLOCK_K)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let params = self.params();
        let types = param_types(context, &params);
        let n = params.len();
        let t = self.tiles;
        module.add_kernel_with_dynamic_shared(entry, &types, t.threads(), |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, n)?;
            let bias = self.linear.bias.map(|_| args[2]);
            let [x_map, w_map, out] = [args[n - 3], args[n - 2], args[n - 1]];
            // Variables first, in the entry block (before the ring's branches), where LLVM
            // keeps them in registers.
            let f32_zero = e.f32(0.0)?;
            let acc: Vec<Value> = (0..t.block_n / 2)
                .map(|_| e.cell(f32_zero))
                .collect::<Result<_, _>>()?;
            let zero = e.index(0)?;
            let passes = e.cell(zero)?;
            let ring = Ring::new(&e, entry, t, 1)?;
            ring.split_roles(
                &e,
                |e| {
                    let zero = e.index(0)?;
                    let leader = e.cmpi(CmpiPredicate::Eq, ring.tid, zero)?;
                    e.if_then(leader, |e| self.produce(&e, &ring, [x_map, w_map], passes))
                },
                |e, consumer| self.consume(e, &ring, consumer, &acc, passes, bias, out),
            )
        })
    }

    /// `(m0, n0)` of tile `tile` (row-major over the tile grid).
    fn origin<'c, 'b>(
        &self,
        e: &Emit<'c, 'b>,
        tile: Value<'c, 'b>,
    ) -> Result<[Value<'c, 'b>; 2], CodegenError> {
        let tiles_n = e.index(self.linear.n.div_ceil(self.tiles.block_n) as i64)?;
        let tm = e.divui(tile, tiles_n)?;
        let tn = e.remui(tile, tiles_n)?;
        Ok([
            e.muli(tm, e.index(self.tiles.block_m as i64)?)?,
            e.muli(tn, e.index(self.tiles.block_n as i64)?)?,
        ])
    }

    /// One thread's loop: for every K block of every tile, wait for a free stage, expect its
    /// bytes, and have the TMA bring x's and w's slices.
    fn produce<'c>(
        &self,
        e: &Emit<'c, '_>,
        ring: &Ring<'c, '_>,
        maps: [Value<'c, '_>; 2],
        passes: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let x_map = e.address_of(maps[0])?;
        let w_map = e.address_of(maps[1])?;
        for map in [x_map, w_map] {
            e.fence_tensormap_acquire(map)?;
        }
        ring.for_each_tile(e, self.tile_count(), |e, tile| {
            let i32_type = e.int_type(32);
            let [m0, n0] = self.origin(&e, tile)?;
            let m0 = e.index_cast(m0, i32_type)?;
            let n0 = e.index_cast(n0, i32_type)?;
            e.for_const(0, self.k_blocks() as i64, 1, |e, kb| {
                let pass = ring.next_pass(&e, passes)?;
                ring.wait_free(&e, &pass)?;
                let bytes = e.int(32, ring.t.stage_bytes() as i64)?;
                e.mbarrier_arrive_expect_tx(pass.full, bytes)?;
                let k0 = e.muli(kb, e.index(BLOCK_K as i64)?)?;
                let k0 = e.index_cast(k0, i32_type)?;
                e.tma_load(pass.a, x_map, &[k0, m0], pass.full, None)?;
                e.tma_load(pass.b, w_map, &[k0, n0], pass.full, None)
            })
        })
    }

    /// Consumer warpgroup `consumer`'s loop: rows `64 · consumer ..` of each tile, K chained
    /// in the accumulators, then the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn consume<'c>(
        &self,
        e: &Emit<'c, '_>,
        ring: &Ring<'c, '_>,
        consumer: Value<'c, '_>,
        acc: &[Value<'c, '_>],
        passes: Value<'c, '_>,
        bias: Option<Value<'c, '_>>,
        out: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let thread = e.remui(ring.tid, e.index(WARPGROUP as i64)?)?;
        let rows_offset = e.muli(consumer, e.index(BLOCK_M as i64)?)?;
        let a_offset = e.muli(rows_offset, e.index(128)?)?;
        let a_offset = e.index_cast(a_offset, e.int_type(32))?;
        ring.for_each_tile(e, self.tile_count(), |e, tile| {
            let [m0, n0] = self.origin(&e, tile)?;
            let m0 = e.addi(m0, rows_offset)?;
            let zero = e.f32(0.0)?;
            for &cell in acc {
                e.set(cell, zero)?;
            }
            // K past its end is the TMA's zero fill, which adds nothing.
            e.for_const(0, self.k_blocks() as i64, 1, |e, _| {
                let pass = ring.next_pass(&e, passes)?;
                e.mbarrier_wait(pass.full, pass.parity)?;
                let a_tile = e.addi(pass.a, a_offset)?;
                let mut d: Vec<Value> = acc.iter().map(|&c| e.get(c)).collect::<Result<_, _>>()?;
                for step in 0..BLOCK_K / 16 {
                    let offset = e.int(32, (step * 32) as i64)?;
                    let a = tiles::k_major_descriptor(&e, e.addi(a_tile, offset)?)?;
                    let b = tiles::k_major_descriptor(&e, e.addi(pass.b, offset)?)?;
                    d = tiles::wgmma_ss(&e, self.tiles.block_n, a, b, &d)?;
                }
                let d = tiles::wait(&e, &d)?;
                e.mbarrier_arrive(pass.empty)?;
                for (&cell, value) in acc.iter().zip(d) {
                    e.set(cell, value)?;
                }
                Ok(())
            })?;
            self.store(&e, thread, [m0, n0], acc, bias, out)
        })
    }

    /// The epilogue: register i is row `16 warp + lane / 4 + 8·((i / 2) mod 2)`, column
    /// `8·(i / 4) + 2·(lane mod 4) + i mod 2` of the tile; the bias added in f32, one rounding,
    /// and predicated stores, two adjacent columns at once when N is even.
    fn store<'c>(
        &self,
        e: &Emit<'c, '_>,
        thread: Value<'c, '_>,
        [m0, n0]: [Value<'c, '_>; 2],
        acc: &[Value<'c, '_>],
        bias: Option<Value<'c, '_>>,
        out: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let linear = &self.linear;
        let thirty_two = e.index(32)?;
        let warp = e.divui(thread, thirty_two)?;
        let lane = e.remui(thread, thirty_two)?;
        let row0 = e.muli(warp, e.index(16)?)?;
        let row0 = e.addi(row0, e.divui(lane, e.index(4)?)?)?;
        let row0 = e.addi(m0, row0)?;
        let col0 = e.muli(e.remui(lane, e.index(4)?)?, e.index(2)?)?;
        let col0 = e.addi(n0, col0)?;
        let m = e.index(linear.m as i64)?;
        let n = e.index(linear.n as i64)?;
        let out = e.address_of(out)?;
        let size = e.index(linear.output.size_bytes() as i64)?;
        let paired = linear.n.is_multiple_of(2);
        let value_at = |i: usize, col: Value<'c, '_>| {
            let value = e.get(acc[i])?;
            match bias {
                Some(bias) => {
                    // Columns past N read column 0's bias; nothing is stored for them.
                    let inside = e.lt(col, n)?;
                    let col = e.select(inside, col, e.index(0)?)?;
                    let b = e.load_f32(bias, e.index(0)?, col)?;
                    e.addf(value, b)
                }
                None => Ok(value),
            }
        };
        for i in 0..acc.len() {
            if paired && i % 2 == 1 {
                continue;
            }
            let row = e.addi(row0, e.index((8 * ((i / 2) % 2)) as i64)?)?;
            let col = e.addi(col0, e.index((8 * (i / 4) + i % 2) as i64)?)?;
            let ok = e.andi(e.lt(row, m)?, e.lt(col, n)?)?;
            let at = e.addi(e.muli(row, n)?, col)?;
            let at = e.index_cast(e.muli(at, size)?, e.int_type(64))?;
            let at = e.addi(out, at)?;
            let value = value_at(i, col)?;
            let next = if paired {
                Some(value_at(i + 1, e.addi(col, e.index(1)?)?)?)
            } else {
                None
            };
            let values = output_words(e, linear.output, value, next)?;
            global_store_if(e, ok, at, &values)?;
        }
        Ok(())
    }
}
