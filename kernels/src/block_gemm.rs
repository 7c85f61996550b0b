//! The block-scaled FP8 GEMM `y[M, N] = x[M, K] · w[N, K]ᵀ` with FP32 promotion (DESIGN.md §3).
//!
//! `x` is quantized in 1 × tile groups, `w` in block × block tiles. Within one promotion
//! interval (`promote_interval` elements of K, inside one scale group) the decoded FP8 products
//! are summed by the accumulator model into a partial sum `p`; then `y += p · (s_x[m, k/tile] ·
//! s_w[n/block, k/block])` in FP32 — the scale product first, then the multiply, then the add,
//! each rounded once. Output is f32; BF16 output is [`to_bf16_slice`] of it (RNE).
//!
//! [`Accumulator::Exact`] runs on a blocked FP32 GEMM (the `gemm` crate) per promotion interval
//! and output tile, tiles in parallel; the summation order inside an interval is therefore the
//! library's, not sequential. [`Accumulator::Hopper`] runs a plain loop, one MMA of 32 products
//! at a time.
//!
//! [`to_bf16_slice`]: crate::numerics::bf16::to_bf16_slice

use crate::error::{KernelError, check_len};
use crate::numerics::accumulate::Accumulator;
use crate::numerics::fp8::{self, Fp8Format};
use crate::quantized::Fp8Operand;
use dsc_ir::policy::{DEFAULT_ACT_TILE, DEFAULT_PROMOTE_INTERVAL, DEFAULT_WEIGHT_BLOCK};
use rayon::prelude::*;

/// The shape of `y[m, n] = x[m, k] · w[n, k]ᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The FP8 recipe parameters of one block-scaled GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockGemmConfig {
    /// FP8 format of both operands' codes.
    pub fmt: Fp8Format,
    /// Activation group width along K (x is quantized in 1 × tile groups).
    pub tile: usize,
    /// Weight block size (w is quantized in block × block tiles); a multiple of `tile`.
    pub block: usize,
    /// True when w is itself an activation quantized in 1 × `block` tiles, one scale per row
    /// and group (the training step's Wgrad, DESIGN.md §8), not in block × block tiles.
    pub w_row_tiles: bool,
    /// Elements of K per partial sum; a multiple of 32 that divides `tile`.
    pub promote_interval: usize,
    /// How products are summed inside a promotion interval.
    pub accumulator: Accumulator,
}

impl Default for BlockGemmConfig {
    fn default() -> Self {
        BlockGemmConfig {
            fmt: Fp8Format::E4M3,
            tile: DEFAULT_ACT_TILE as usize,
            block: DEFAULT_WEIGHT_BLOCK as usize,
            w_row_tiles: false,
            promote_interval: DEFAULT_PROMOTE_INTERVAL as usize,
            accumulator: Accumulator::Exact,
        }
    }
}

impl BlockGemmConfig {
    /// Rows of w one scale covers: `block`, or 1 with [`Self::w_row_tiles`].
    pub fn block_rows(&self) -> usize {
        if self.w_row_tiles { 1 } else { self.block }
    }

    /// Checks the rules that keep every partial sum inside one scale group of both operands.
    pub fn validate(&self) -> Result<(), KernelError> {
        let depth = Accumulator::MMA_DEPTH;
        let (p, t, b) = (self.promote_interval, self.tile, self.block);
        if t == 0 || b == 0 || b % t != 0 {
            return Err(KernelError::Params(format!(
                "weight block ({b}) must be a positive multiple of the activation tile ({t})"
            )));
        }
        if p == 0 || p % depth != 0 || t % p != 0 {
            return Err(KernelError::Params(format!(
                "promote_interval ({p}) must be a multiple of {depth} that divides the tile ({t})"
            )));
        }
        Ok(())
    }
}

/// Computes `y[m, n]` (f32, row-major) from quantized `x[m, k]` and `w[n, k]` (see the module doc).
pub fn fp8_block_gemm(
    x: Fp8Operand<'_>,
    w: Fp8Operand<'_>,
    dims: GemmDims,
    cfg: &BlockGemmConfig,
) -> Result<Vec<f32>, KernelError> {
    cfg.validate()?;
    let GemmDims { m, n, k } = dims;
    check_len("x codes", x.codes.len(), m * k)?;
    check_len("x scales", x.scales.len(), m * k.div_ceil(cfg.tile))?;
    check_len("w codes", w.codes.len(), n * k)?;
    let w_scales = n.div_ceil(cfg.block_rows()) * k.div_ceil(cfg.block);
    check_len("w scales", w.scales.len(), w_scales)?;

    let operands = Decoded {
        x: decode(cfg.fmt, x.codes),
        w: decode(cfg.fmt, w.codes),
        x_scales: x.scales,
        w_scales: w.scales,
        dims,
        cfg: *cfg,
    };
    Ok(match cfg.accumulator {
        Accumulator::Exact => operands.gemm_blocked(),
        Accumulator::Hopper => operands.gemm_per_mma(),
    })
}

/// Decodes codes to f32 once, in parallel: every product is then an exact f32 multiply.
fn decode(fmt: Fp8Format, codes: &[u8]) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0.0; codes.len()];
    out.par_chunks_mut(CHUNK)
        .zip(codes.par_chunks(CHUNK))
        .for_each(|(o, c)| fp8::decode_slice(fmt, c, o));
    out
}

/// The operands with codes decoded, and what is needed to index their scales.
struct Decoded<'a> {
    /// `x[m, k]`, decoded.
    x: Vec<f32>,
    /// `w[n, k]`, decoded.
    w: Vec<f32>,
    x_scales: &'a [f32],
    w_scales: &'a [f32],
    dims: GemmDims,
    cfg: BlockGemmConfig,
}

/// Output rows per task of the blocked path.
const TILE_M: usize = 256;
/// Output columns per task of the blocked path.
const TILE_N: usize = 512;

impl Decoded<'_> {
    /// `s_x` of row `i` for the promotion interval starting at `k0`.
    fn x_scale(&self, i: usize, k0: usize) -> f32 {
        self.x_scales[i * self.dims.k.div_ceil(self.cfg.tile) + k0 / self.cfg.tile]
    }

    /// `s_w` of column `j` for the promotion interval starting at `k0`.
    fn w_scale(&self, j: usize, k0: usize) -> f32 {
        let k_blocks = self.dims.k.div_ceil(self.cfg.block);
        self.w_scales[(j / self.cfg.block_rows()) * k_blocks + k0 / self.cfg.block]
    }

    /// The exact accumulator: per output tile (in parallel) and promotion interval, the FP32
    /// partial product `[TILE_M, P] · [P, TILE_N]` from the GEMM library, then scale and add.
    /// Tiles keep the partial and the accumulator in cache across the K loop.
    fn gemm_blocked(&self) -> Vec<f32> {
        let GemmDims { m, n, .. } = self.dims;
        let tiles_n = n.div_ceil(TILE_N);
        let tiles: Vec<Vec<f32>> = (0..m.div_ceil(TILE_M) * tiles_n)
            .into_par_iter()
            .map(|t| self.tile_blocked((t / tiles_n) * TILE_M, (t % tiles_n) * TILE_N))
            .collect();
        let mut y = vec![0.0f32; m * n];
        for (t, tile) in tiles.iter().enumerate() {
            let (m0, n0) = ((t / tiles_n) * TILE_M, (t % tiles_n) * TILE_N);
            let nb = TILE_N.min(n - n0);
            for (i, row) in tile.chunks(nb).enumerate() {
                y[(m0 + i) * n + n0..][..nb].copy_from_slice(row);
            }
        }
        y
    }

    /// One output tile of the blocked path, rows from `m0` and columns from `n0`, row-major.
    fn tile_blocked(&self, m0: usize, n0: usize) -> Vec<f32> {
        let GemmDims { m, n, k } = self.dims;
        let (mb, nb) = (TILE_M.min(m - m0), TILE_N.min(n - n0));
        let mut acc = vec![0.0f32; mb * nb];
        let mut partial = vec![0.0f32; mb * nb];
        let mut w_scale = vec![0.0f32; nb];
        for k0 in (0..k).step_by(self.cfg.promote_interval) {
            let kl = self.cfg.promote_interval.min(k - k0);
            // SAFETY: `partial` is mb × nb, row stride nb. The lhs reads x[m0.., k0..] for mb rows
            // and kl columns (row stride k); the rhs element (kk, j) is w[n0 + j, k0 + kk], i.e.
            // w rows n0..n0+nb as columns (column stride k, row stride 1). m0 + mb <= m,
            // n0 + nb <= n and k0 + kl <= k keep every access inside `self.x` and `self.w`.
            unsafe {
                gemm::gemm(
                    mb,
                    nb,
                    kl,
                    partial.as_mut_ptr(),
                    1,
                    nb as isize,
                    false,
                    self.x.as_ptr().add(m0 * k + k0),
                    1,
                    k as isize,
                    self.w.as_ptr().add(n0 * k + k0),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (j, s) in w_scale.iter_mut().enumerate() {
                *s = self.w_scale(n0 + j, k0);
            }
            for (i, (acc_row, p_row)) in acc.chunks_mut(nb).zip(partial.chunks(nb)).enumerate() {
                let s_x = self.x_scale(m0 + i, k0);
                for ((a, &p), &s_w) in acc_row.iter_mut().zip(p_row).zip(&w_scale) {
                    *a += p * (s_x * s_w);
                }
            }
        }
        acc
    }

    /// Any accumulator, one MMA (32 products) at a time, rows in parallel: the direct reading
    /// of the recipe, used for the Hopper model (and, in tests, as the in-order FP32 reference).
    fn gemm_per_mma(&self) -> Vec<f32> {
        let GemmDims { m, n, k } = self.dims;
        let (interval, depth) = (self.cfg.promote_interval, Accumulator::MMA_DEPTH);
        let mut y = vec![0.0f32; m * n];
        if n == 0 {
            return y;
        }
        y.par_chunks_mut(n).enumerate().for_each(|(i, y_row)| {
            let x_row = &self.x[i * k..][..k];
            let mut products = [0.0f32; Accumulator::MMA_DEPTH];
            for (j, y) in y_row.iter_mut().enumerate() {
                let w_row = &self.w[j * k..][..k];
                let mut total = 0.0f32;
                for k0 in (0..k).step_by(interval) {
                    let k1 = (k0 + interval).min(k);
                    let mut partial = 0.0f32;
                    for c0 in (k0..k1).step_by(depth) {
                        let c1 = (c0 + depth).min(k1);
                        let pairs = x_row[c0..c1].iter().zip(&w_row[c0..c1]);
                        for (p, (&a, &b)) in products.iter_mut().zip(pairs) {
                            *p = a * b;
                        }
                        partial = self.cfg.accumulator.mma(partial, &products[..c1 - c0]);
                    }
                    total += partial * (self.x_scale(i, k0) * self.w_scale(j, k0));
                }
                *y = total;
            }
        });
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act_quant::act_quant_1x128;
    use crate::weight_quant::weight_quant_128x128;
    use dsc_ir::ScaleFormat;

    /// Deterministic values in [-2, 2) with a spread of magnitudes.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(0x9e37_79b9).rotate_left(13);
                (h as f32 / u32::MAX as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn blocked_path_matches_in_order_fp32() {
        // Ragged in every dimension, larger than one tile, with tile < block and interval < tile.
        let dims = GemmDims {
            m: 150,
            n: 300,
            k: 333,
        };
        let cfg = BlockGemmConfig {
            tile: 64,
            promote_interval: 32,
            ..Default::default()
        };
        let (f, sf) = (cfg.fmt, ScaleFormat::F32);
        let x = act_quant_1x128(&values(dims.m * dims.k, 1), dims.m, dims.k, 64, f, sf).unwrap();
        let w =
            weight_quant_128x128(&values(dims.n * dims.k, 2), dims.n, dims.k, 128, f, sf).unwrap();
        let fast = fp8_block_gemm(x.operand(), w.operand(), dims, &cfg).unwrap();
        let reference = Decoded {
            x: decode(f, &x.codes),
            w: decode(f, &w.codes),
            x_scales: &x.scales,
            w_scales: &w.scales,
            dims,
            cfg,
        }
        .gemm_per_mma();
        let max = reference.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-6 * max, "{a} vs {b}");
        }
    }

    #[test]
    fn row_tiled_weights_take_one_scale_per_row_and_group() {
        // A Wgrad: both operands activations in 1 × 128 tiles along the contracted tokens.
        let dims = GemmDims { m: 7, n: 9, k: 300 };
        let cfg = BlockGemmConfig {
            w_row_tiles: true,
            ..Default::default()
        };
        let (f, sf) = (cfg.fmt, ScaleFormat::F32);
        let x = act_quant_1x128(&values(dims.m * dims.k, 3), dims.m, dims.k, 128, f, sf).unwrap();
        let w = act_quant_1x128(&values(dims.n * dims.k, 4), dims.n, dims.k, 128, f, sf).unwrap();
        let y = fp8_block_gemm(x.operand(), w.operand(), dims, &cfg).unwrap();
        let groups = dims.k.div_ceil(128);
        let deq = |q: &crate::Quantized, i: usize| {
            f64::from(fp8::decode(f, q.codes[i]))
                * f64::from(q.scales[(i / dims.k) * groups + (i % dims.k) / 128])
        };
        for i in 0..dims.m {
            for j in 0..dims.n {
                let want: f64 = (0..dims.k)
                    .map(|t| deq(&x, i * dims.k + t) * deq(&w, j * dims.k + t))
                    .sum();
                let got = f64::from(y[i * dims.n + j]);
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
        }
        // Square-block scales are fewer: the lengths tell the two layouts apart.
        let square = BlockGemmConfig::default();
        assert!(fp8_block_gemm(x.operand(), w.operand(), dims, &square).is_err());
    }

    #[test]
    fn rejects_bad_parameters_and_lengths() {
        let bad = |p, t, b| BlockGemmConfig {
            promote_interval: p,
            tile: t,
            block: b,
            ..Default::default()
        };
        for (config, expected) in [
            (
                bad(48, 128, 128),
                "promote_interval (48) must be a multiple of",
            ),
            (
                bad(256, 128, 128),
                "promote_interval (256) must be a multiple of",
            ),
            (
                bad(128, 128, 192),
                "weight block (192) must be a positive multiple",
            ),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
        assert!(bad(64, 64, 128).validate().is_ok());
        let dims = GemmDims { m: 1, n: 1, k: 4 };
        let op = Fp8Operand {
            codes: &[0; 4],
            scales: &[1.0],
        };
        let short = Fp8Operand {
            codes: &[0; 3],
            scales: &[1.0],
        };
        let cfg = BlockGemmConfig::default();
        assert_eq!(fp8_block_gemm(op, op, dims, &cfg).unwrap(), vec![0.0]);
        assert!(matches!(
            fp8_block_gemm(short, op, dims, &cfg),
            Err(KernelError::Length {
                operand: "x codes",
                ..
            })
        ));
    }
}
