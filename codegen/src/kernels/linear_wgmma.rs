//! The Hopper form of a BF16 `linear` (the output head; sm_90a): one warpgroup per 64 × N
//! output tile (N = 128, or narrower when that keeps more SMs busy: the FP8 GEMM's
//! [`super::fp8_gemm_wgmma::widest_busy_width`] rule), `wgmma.mma_async m64nNk16.f32.bf16.bf16`
//! with both operands from shared memory, f32 sums kept in the accumulators over all of K,
//! then the bias in f32 and one rounding to the output dtype.
//!
//! Per 64-deep K block the 128 threads stage A (64 rows of x) and B (N rows of w, the `[N, K]`
//! checkpoint layout), each a row of 128 bytes, with 16-byte loads into the 128-byte-swizzled
//! K-major layout ([`super::flash_attention_wgmma::place`]); rows past M or N and K past its
//! end read as zeros. Four k-steps of 16 (32 bytes each) per block, then `wait_group 0` before
//! the tiles are overwritten.

use melior::ir::{BlockLike, Value};
use serde::Serialize;

use super::flash_attention_wgmma::{self as tiles, ATOM};
use super::linear::Linear;
use super::vector_access::{global_load_v4, shared_store_v4};
use super::{Launch, Param, kernel_args, param_types, shared_bytes_type};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;
use crate::mlir::kernel::Dimension;

/// Rows of a block's tile.
pub const BLOCK_M: u64 = 64;
/// K per staged block: one 128-byte swizzle row of BF16.
const BLOCK_K: u64 = 64;
/// One warpgroup.
const THREADS: u32 = 128;

/// A BF16 `linear` on wgmma, `block_n` columns per tile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearWgmma {
    /// The GEMM.
    pub linear: Linear,
    /// Columns of a tile (128, 64, 32 or 16).
    pub block_n: u64,
}

/// Whether `linear` can take this form: the tensor-core form's operands (BF16, not grouped)
/// and K in whole 16-byte chunks.
pub fn eligible(linear: &Linear) -> bool {
    super::linear_mma::applies(linear) && linear.k.is_multiple_of(8)
}

impl LinearWgmma {
    /// The form for `linear`, its tile width by the FP8 GEMM's rule
    /// ([`super::fp8_gemm_wgmma::widest_busy_width`]).
    pub fn new(linear: Linear) -> Self {
        let block_n =
            super::fp8_gemm_wgmma::widest_busy_width(linear.m.div_ceil(BLOCK_M), linear.n);
        LinearWgmma { linear, block_n }
    }

    /// Spec name.
    pub fn spec(&self) -> &'static str {
        self.linear.spec()
    }

    /// The linear's buffers.
    pub fn params(&self) -> Vec<Param> {
        self.linear.params()
    }

    fn tiles_n(&self) -> u64 {
        self.linear.n.div_ceil(self.block_n)
    }

    /// One warpgroup per tile.
    pub fn launch(&self) -> Launch {
        let tiles = self.linear.m.div_ceil(BLOCK_M) * self.tiles_n();
        Launch::blocks(tiles, THREADS)
    }

    fn a_bytes(&self) -> u64 {
        BLOCK_M * 128
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let params = self.params();
        let types = param_types(context, &params);
        let shared_bytes = ATOM + self.a_bytes() + self.block_n * 128;
        let shared = shared_bytes_type(context, shared_bytes);
        let n_params = params.len();
        module.add_kernel_with_shared(entry, &types, &[shared], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let bias = self.linear.bias.map(|_| args[2]);
            self.body(
                &e,
                [args[0], args[1]],
                bias,
                args[n_params - 1],
                args[n_params],
            )
        })
    }

    fn body<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        [x, w]: [Value<'c, 'a>; 2],
        bias: Option<Value<'c, 'a>>,
        out: Value<'c, 'a>,
        smem: Value<'c, 'a>,
    ) -> Result<(), CodegenError> {
        let linear = &self.linear;
        let i32_type = e.int_type(32);
        let tile = e.block_index(Dimension::X)?;
        let tiles_n = e.index(self.tiles_n() as i64)?;
        let tm = e.divui(tile, tiles_n)?;
        let tn = e.remui(tile, tiles_n)?;
        let m0 = e.muli(tm, e.index(BLOCK_M as i64)?)?;
        let n0 = e.muli(tn, e.index(self.block_n as i64)?)?;
        let tid = e.thread_x()?;

        let raw = e.address_of(smem)?;
        let raw = e.trunci(raw, i32_type)?;
        let aligned = e.addi(raw, e.int(32, ATOM as i64 - 1)?)?;
        let a_tile = e.andi(aligned, e.int(32, !(ATOM as i64 - 1))?)?;
        let b_tile = e.addi(a_tile, e.int(32, self.a_bytes() as i64)?)?;
        let x_global = e.address_of(x)?;
        let w_global = e.address_of(w)?;

        // The accumulators live in cells across the K loop; each block's four wgmmas chain
        // on them (K past its end was staged as zeros, which add nothing).
        let zero = e.f32(0.0)?;
        let cells: Vec<Value> = (0..self.block_n / 2)
            .map(|_| e.cell(zero))
            .collect::<Result<_, _>>()?;
        let block_k = e.index(BLOCK_K as i64)?;
        e.for_const(0, linear.k.div_ceil(BLOCK_K) as i64, 1, |e, kb| {
            let k0 = e.muli(kb, block_k)?;
            self.stage(&e, tid, x_global, a_tile, m0, BLOCK_M, linear.m, k0)?;
            self.stage(&e, tid, w_global, b_tile, n0, self.block_n, linear.n, k0)?;
            e.push_void(e.inline_asm_op("fence.proxy.async.shared::cta;", "", &[], &[])?);
            e.barrier();
            let mut d: Vec<Value> = cells.iter().map(|&c| e.get(c)).collect::<Result<_, _>>()?;
            for step in 0..BLOCK_K / 16 {
                let offset = e.int(32, (step * 32) as i64)?;
                let a = tiles::k_major_descriptor(&e, e.addi(a_tile, offset)?)?;
                let b = tiles::k_major_descriptor(&e, e.addi(b_tile, offset)?)?;
                d = tiles::wgmma_ss(&e, self.block_n, a, b, &d)?;
            }
            let d = tiles::wait(&e, &d)?;
            for (&cell, value) in cells.iter().zip(d) {
                e.set(cell, value)?;
            }
            // The next block overwrites the tiles.
            e.barrier();
            Ok(())
        })?;
        let acc: Vec<Value> = cells.iter().map(|&c| e.get(c)).collect::<Result<_, _>>()?;

        // D: register i is row `16 warp + lane / 4 + 8·((i / 2) mod 2)`, column
        // `8·(i / 4) + 2·(lane mod 4) + i mod 2` of the tile.
        let thirty_two = e.index(32)?;
        let warp = e.divui(tid, thirty_two)?;
        let lane = e.remui(tid, thirty_two)?;
        let row0 = e.muli(warp, e.index(16)?)?;
        let row0 = e.addi(row0, e.divui(lane, e.index(4)?)?)?;
        let row0 = e.addi(m0, row0)?;
        let col0 = e.muli(e.remui(lane, e.index(4)?)?, e.index(2)?)?;
        let col0 = e.addi(n0, col0)?;
        let m = e.index(linear.m as i64)?;
        let n = e.index(linear.n as i64)?;
        for (i, &value) in acc.iter().enumerate() {
            let row = e.addi(row0, e.index((8 * ((i / 2) % 2)) as i64)?)?;
            let col = e.addi(col0, e.index((8 * (i / 4) + i % 2) as i64)?)?;
            let ok = e.andi(e.lt(row, m)?, e.lt(col, n)?)?;
            e.if_then(ok, |e| {
                let mut value = value;
                if let Some(bias) = bias {
                    let zero = e.index(0)?;
                    let b = e.load_f32(bias, zero, col)?;
                    value = e.addf(value, b)?;
                }
                let value = e.round_to(value, linear.output)?;
                let at = e.addi(e.muli(row, n)?, col)?;
                e.store(value, out, at);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Copies rows `first .. first + rows` (those below `limit`) of the `[*, K]` BF16 matrix at
    /// global address `global`, K elements `k0 .. k0 + 64`, into the swizzled tile at `tile`;
    /// 16 bytes per thread and step, zeros outside the matrix.
    #[allow(clippy::too_many_arguments)]
    fn stage<'c>(
        &self,
        e: &Emit<'c, '_>,
        tid: Value<'c, '_>,
        global: Value<'c, '_>,
        tile: Value<'c, '_>,
        first: Value<'c, '_>,
        rows: u64,
        limit: u64,
        k0: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let k = e.index(self.linear.k as i64)?;
        let limit = e.index(limit as i64)?;
        for step in 0..rows * 8 / u64::from(THREADS) {
            let chunk = e.addi(tid, e.index((step * u64::from(THREADS)) as i64)?)?;
            let r = e.divui(chunk, e.index(8)?)?;
            let c = e.remui(chunk, e.index(8)?)?;
            let row = e.addi(first, r)?;
            let kc = e.addi(k0, e.muli(c, e.index(8)?)?)?;
            let ok = e.andi(e.lt(row, limit)?, e.lt(kc, k)?)?;
            let element = e.addi(e.muli(row, k)?, kc)?;
            let bytes = e.muli(element, e.index(2)?)?;
            let bytes = e.index_cast(bytes, e.int_type(64))?;
            let words = global_load_v4(e, e.addi(global, bytes)?, ok)?;
            let place = tiles::place(e, tile, r, c)?;
            shared_store_v4(e, place, words)?;
        }
        Ok(())
    }
}
