//! The block-scaled FP8 GEMM `y[M, N] = x[M, K] · w[N, K]ᵀ` with FP32 promotion (DESIGN.md §3).
//!
//! `x` is quantized in 1 × tile groups, `w` in block × block tiles. Within one promotion
//! interval (`promote_interval` elements of K, inside one scale group) the decoded FP8 products
//! are summed by the accumulator model into a partial sum `p`; then `y += p · (s_x[m, k/tile] ·
//! s_w[n/block, k/block])` in FP32 — the scale product first, then the multiply, then the add,
//! each rounded once. Output is f32; BF16 output is [`to_bf16_slice`] of it (RNE).
//!
//! [`Accumulator::Exact`] sums each interval's products in FP32 **in ascending K order**,
//! starting from 0 — the partial is fully specified, so the result is one set of bits whatever
//! the CPU, the instruction set or the number of threads. It runs on packed panels and a
//! register-blocked microkernel (AVX-512F, AVX2 + FMA or portable, chosen at run time), tiles
//! in parallel; FMA is bit-identical there because every FP8 × FP8 product is exact in f32.
//! See [`exact`] for the order spelled out and the implementation. The Hopper models
//! ([`Accumulator::Hopper`], and [`Accumulator::HopperUnpromoted`] whose one accumulator takes
//! the scaled products of all of K) run one MMA of 32 products at a time: `gemm_per_mma` is the
//! direct reading (with the exact accumulator it computes the very same bits as the fast path),
//! [`hopper`] the same loop in f32 lanes.
//!
//! [`to_bf16_slice`]: crate::numerics::bf16::to_bf16_slice

use crate::error::{KernelError, check_len};
use crate::numerics::accumulate::Accumulator;
use crate::numerics::fp8::{self, Fp8Format};
use crate::quantized::Fp8Operand;
use dsc_ir::policy::{DEFAULT_ACT_TILE, DEFAULT_PROMOTE_INTERVAL, DEFAULT_WEIGHT_BLOCK};
use rayon::prelude::*;

mod exact;
mod hopper;

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
    /// True when x is quantized in tile × tile blocks, one scale per block (the ablation of the
    /// training recipe that scales activation gradients per 128 × 128 block, DESIGN.md §8),
    /// not in 1 × tile groups.
    pub x_square_blocks: bool,
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
            x_square_blocks: false,
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

    /// Rows of x one scale covers: 1, or `tile` with [`Self::x_square_blocks`].
    pub fn x_block_rows(&self) -> usize {
        if self.x_square_blocks { self.tile } else { 1 }
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
    let x_scales = m.div_ceil(cfg.x_block_rows()) * k.div_ceil(cfg.tile);
    check_len("x scales", x.scales.len(), x_scales)?;
    check_len("w codes", w.codes.len(), n * k)?;
    let w_scales = n.div_ceil(cfg.block_rows()) * k.div_ceil(cfg.block);
    check_len("w scales", w.scales.len(), w_scales)?;

    Ok(match cfg.accumulator {
        Accumulator::Exact => exact::gemm_exact(x, w, dims, cfg, exact::Isa::detect()),
        Accumulator::Hopper | Accumulator::HopperUnpromoted => {
            Decoded::new(x, w, dims, cfg).gemm_hopper(exact::Isa::detect())
        }
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

impl<'a> Decoded<'a> {
    /// Decodes both operands.
    fn new(x: Fp8Operand<'a>, w: Fp8Operand<'a>, dims: GemmDims, cfg: &BlockGemmConfig) -> Self {
        Decoded {
            x: decode(cfg.fmt, x.codes),
            w: decode(cfg.fmt, w.codes),
            x_scales: x.scales,
            w_scales: w.scales,
            dims,
            cfg: *cfg,
        }
    }

    /// `s_x` of row `i` for the promotion interval starting at `k0`.
    fn x_scale(&self, i: usize, k0: usize) -> f32 {
        let row = i / self.cfg.x_block_rows();
        self.x_scales[row * self.dims.k.div_ceil(self.cfg.tile) + k0 / self.cfg.tile]
    }

    /// `s_w` of column `j` for the promotion interval starting at `k0`.
    fn w_scale(&self, j: usize, k0: usize) -> f32 {
        let k_blocks = self.dims.k.div_ceil(self.cfg.block);
        self.w_scales[(j / self.cfg.block_rows()) * k_blocks + k0 / self.cfg.block]
    }

    /// Any accumulator, one MMA (32 products) at a time, rows in parallel: the direct reading
    /// of the recipe (in tests, the reference of the fast paths).
    #[cfg(test)]
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
                // Without promotion one accumulator takes every scaled product.
                let mut unpromoted = 0.0f32;
                for k0 in (0..k).step_by(interval) {
                    let k1 = (k0 + interval).min(k);
                    let scale = self.x_scale(i, k0) * self.w_scale(j, k0);
                    let mut partial = 0.0f32;
                    for c0 in (k0..k1).step_by(depth) {
                        let c1 = (c0 + depth).min(k1);
                        let pairs = x_row[c0..c1].iter().zip(&w_row[c0..c1]);
                        for (p, (&a, &b)) in products.iter_mut().zip(pairs) {
                            *p = a * b;
                        }
                        let products = &mut products[..c1 - c0];
                        if self.cfg.accumulator.promotes() {
                            partial = self.cfg.accumulator.mma(partial, products);
                        } else {
                            products.iter_mut().for_each(|p| *p *= scale);
                            unpromoted = self.cfg.accumulator.mma(unpromoted, products);
                        }
                    }
                    total += partial * scale;
                }
                *y = if self.cfg.accumulator.promotes() {
                    total
                } else {
                    unpromoted
                };
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

    /// The documented order, as plainly as it can be written: per output element, per
    /// interval, products summed in ascending K from 0, then `acc += partial * (s_x * s_w)`.
    fn scalar_reference(
        x: Fp8Operand<'_>,
        w: Fp8Operand<'_>,
        dims: GemmDims,
        cfg: &BlockGemmConfig,
    ) -> Vec<f32> {
        let GemmDims { m, n, k } = dims;
        let t = cfg.fmt.table();
        let (gx, gw) = (k.div_ceil(cfg.tile), k.div_ceil(cfg.block));
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for k0 in (0..k).step_by(cfg.promote_interval) {
                    let mut partial = 0.0f32;
                    for kk in k0..(k0 + cfg.promote_interval).min(k) {
                        partial +=
                            t[x.codes[i * k + kk] as usize] * t[w.codes[j * k + kk] as usize];
                    }
                    let s_x = x.scales[i * gx + k0 / cfg.tile];
                    let s_w = w.scales[(j / cfg.block_rows()) * gw + k0 / cfg.block];
                    acc += partial * (s_x * s_w);
                }
                y[i * n + j] = acc;
            }
        }
        y
    }

    /// Every element the same bits (NaN: both NaN, payload unspecified).
    fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{what}: y[{i}] = {g:e} ({:#010x}), want {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            );
        }
    }

    /// Random codes over the whole finite range of `fmt` (subnormals, ±0, the largest values),
    /// with about `special` per mille NaN (and, for E5M2, inf) codes.
    fn random_codes(
        rng: &mut crate::rng::SplitMix64,
        len: usize,
        fmt: Fp8Format,
        special: u64,
    ) -> Vec<u8> {
        (0..len)
            .map(|_| {
                loop {
                    let c = rng.next_u64() as u8;
                    let finite = fmt.table()[c as usize].is_finite();
                    if finite || rng.next_u64() % 1000 < special {
                        break c;
                    }
                }
            })
            .collect()
    }

    /// Random positive scales spanning many binades.
    fn random_scales(rng: &mut crate::rng::SplitMix64, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                (2.0f32).powi((rng.next_u64() % 24) as i32 - 16) * (1.0 + rng.uniform() as f32)
            })
            .collect()
    }

    /// One random problem: codes and scales of `x` and `w` for `dims` and `cfg`.
    fn random_problem(
        seed: u64,
        dims: GemmDims,
        cfg: &BlockGemmConfig,
        special: u64,
    ) -> (Vec<u8>, Vec<f32>, Vec<u8>, Vec<f32>) {
        let GemmDims { m, n, k } = dims;
        let mut rng = crate::rng::SplitMix64(seed);
        let xc = random_codes(&mut rng, m * k, cfg.fmt, special);
        let wc = random_codes(&mut rng, n * k, cfg.fmt, special);
        let xs = random_scales(&mut rng, m * k.div_ceil(cfg.tile));
        let ws = random_scales(
            &mut rng,
            n.div_ceil(cfg.block_rows()) * k.div_ceil(cfg.block),
        );
        (xc, xs, wc, ws)
    }

    #[test]
    fn exact_path_is_bit_identical_to_the_scalar_order() {
        // Ragged in every dimension (not multiples of the 6 × 16 / 6 × 32 tiles, the task blocks
        // or the 256-deep K chunks, ragged last interval), both weight layouts, every interval,
        // every microkernel this CPU runs, both formats.
        let shapes = [
            (1, 1, 1),
            (7, 9, 300),
            (13, 37, 97),
            (150, 300, 333),
            (61, 45, 700),
        ];
        let mut seed = 0;
        for (m, n, k) in shapes {
            for promote_interval in [32, 64, 128] {
                for w_row_tiles in [false, true] {
                    for fmt in Fp8Format::ALL {
                        let dims = GemmDims { m, n, k };
                        let cfg = BlockGemmConfig {
                            fmt,
                            promote_interval,
                            w_row_tiles,
                            ..Default::default()
                        };
                        seed += 1;
                        let (xc, xs, wc, ws) = random_problem(seed, dims, &cfg, 0);
                        let (x, w) = (
                            Fp8Operand {
                                codes: &xc,
                                scales: &xs,
                            },
                            Fp8Operand {
                                codes: &wc,
                                scales: &ws,
                            },
                        );
                        let want = scalar_reference(x, w, dims, &cfg);
                        let what = format!("{dims:?} {cfg:?}");
                        for isa in exact::Isa::available() {
                            let got = exact::gemm_exact(x, w, dims, &cfg, isa);
                            assert_same_bits(&got, &want, &format!("{isa:?} {what}"));
                        }
                        let public = fp8_block_gemm(x, w, dims, &cfg).unwrap();
                        assert_same_bits(&public, &want, &what);
                        let per_mma = Decoded::new(x, w, dims, &cfg).gemm_per_mma();
                        assert_same_bits(&per_mma, &want, &format!("per-MMA {what}"));
                    }
                }
            }
        }
    }

    #[test]
    fn hopper_paths_are_bit_identical_to_the_per_mma_reading() {
        // Both Hopper models, ragged shapes (a last MMA shorter than 32, a ragged interval),
        // every interval, both weight layouts and formats, NaN and inf codes now and then, and
        // each instruction set this CPU runs.
        let shapes = [(1, 1, 1), (7, 9, 300), (13, 37, 97), (30, 20, 700)];
        let mut seed = 100;
        for (m, n, k) in shapes {
            for accumulator in [Accumulator::Hopper, Accumulator::HopperUnpromoted] {
                for promote_interval in [32, 64, 128] {
                    for (w_row_tiles, fmt) in [(false, Fp8Format::E4M3), (true, Fp8Format::E5M2)] {
                        let dims = GemmDims { m, n, k };
                        let cfg = BlockGemmConfig {
                            fmt,
                            promote_interval,
                            w_row_tiles,
                            accumulator,
                            ..Default::default()
                        };
                        seed += 1;
                        let (xc, xs, wc, ws) = random_problem(seed, dims, &cfg, 2);
                        let x = Fp8Operand {
                            codes: &xc,
                            scales: &xs,
                        };
                        let w = Fp8Operand {
                            codes: &wc,
                            scales: &ws,
                        };
                        let decoded = Decoded::new(x, w, dims, &cfg);
                        let want = decoded.gemm_per_mma();
                        for isa in exact::Isa::available() {
                            let got = decoded.gemm_hopper(isa);
                            assert_same_bits(&got, &want, &format!("{isa:?} {dims:?} {cfg:?}"));
                        }
                        let public = fp8_block_gemm(x, w, dims, &cfg).unwrap();
                        assert_same_bits(&public, &want, &format!("{dims:?} {cfg:?}"));
                    }
                }
            }
        }
    }

    #[test]
    fn without_promotion_a_long_sum_loses_what_promotion_keeps() {
        // All-positive products over K = 4096 (the report's example): once the accumulator has
        // grown, each MMA's small terms fall below its 14 bits. Promotion every 128 restarts
        // the partial sum and keeps them; the unpromoted model drifts low (here 8.1% against
        // 0.056% at worst).
        let dims = GemmDims {
            m: 8,
            n: 8,
            k: 4096,
        };
        let (f, sf) = (Fp8Format::E4M3, ScaleFormat::F32);
        let positive = |len, seed| {
            values(len, seed)
                .iter()
                .map(|v| v.abs())
                .collect::<Vec<_>>()
        };
        let x = act_quant_1x128(&positive(8 * 4096, 3), 8, 4096, 128, f, sf).unwrap();
        let w = weight_quant_128x128(&positive(8 * 4096, 4), 8, 4096, 128, f, sf).unwrap();
        let run = |accumulator| {
            let cfg = BlockGemmConfig {
                accumulator,
                ..Default::default()
            };
            fp8_block_gemm(x.operand(), w.operand(), dims, &cfg).unwrap()
        };
        let exact = run(Accumulator::Exact);
        let error = |y: &[f32]| {
            let rel = |(a, b): (&f32, &f32)| ((a - b) / b).abs();
            y.iter().zip(&exact).map(rel).fold(0.0f32, f32::max)
        };
        let (promoted, unpromoted) = (
            error(&run(Accumulator::Hopper)),
            error(&run(Accumulator::HopperUnpromoted)),
        );
        assert!(
            unpromoted > 10.0 * promoted,
            "unpromoted {unpromoted:e}, promoted every 128 {promoted:e}"
        );
        // Truncation only ever drops magnitude: the unpromoted sums are all below the exact.
        assert!(
            run(Accumulator::HopperUnpromoted)
                .iter()
                .zip(&exact)
                .all(|(u, e)| u < e)
        );
    }

    #[test]
    fn exact_path_propagates_nan_and_inf_like_the_scalar_order() {
        for fmt in Fp8Format::ALL {
            let dims = GemmDims {
                m: 20,
                n: 40,
                k: 200,
            };
            let cfg = BlockGemmConfig {
                fmt,
                promote_interval: 64,
                ..Default::default()
            };
            let (xc, xs, wc, ws) = random_problem(99, dims, &cfg, 2);
            let (x, w) = (
                Fp8Operand {
                    codes: &xc,
                    scales: &xs,
                },
                Fp8Operand {
                    codes: &wc,
                    scales: &ws,
                },
            );
            let want = scalar_reference(x, w, dims, &cfg);
            assert!(want.iter().any(|v| v.is_nan()) && want.iter().any(|v| v.is_finite()));
            for isa in exact::Isa::available() {
                let got = exact::gemm_exact(x, w, dims, &cfg, isa);
                assert_same_bits(&got, &want, &format!("{isa:?} {fmt:?}"));
            }
        }
    }

    #[test]
    fn exact_path_does_not_depend_on_the_thread_count() {
        let dims = GemmDims {
            m: 333,
            n: 200,
            k: 520,
        };
        let cfg = BlockGemmConfig::default();
        let (xc, xs, wc, ws) = random_problem(7, dims, &cfg, 0);
        let (x, w) = (
            Fp8Operand {
                codes: &xc,
                scales: &xs,
            },
            Fp8Operand {
                codes: &wc,
                scales: &ws,
            },
        );
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| fp8_block_gemm(x, w, dims, &cfg).unwrap())
        };
        let one = run(1);
        assert_same_bits(&run(3), &one, "3 threads vs 1");
        assert_same_bits(&run(8), &one, "8 threads vs 1");
        assert_same_bits(
            &scalar_reference(x, w, dims, &cfg),
            &one,
            "scalar vs 1 thread",
        );
    }

    #[test]
    fn empty_dimensions_give_zeros() {
        let cfg = BlockGemmConfig::default();
        for (m, n, k) in [(0, 5, 7), (5, 0, 7), (3, 4, 0)] {
            let (xc, wc) = (vec![0x38u8; m * k], vec![0x38u8; n * k]);
            let xs = vec![1.0; m * k.div_ceil(128)];
            let ws = vec![1.0; n.div_ceil(128) * k.div_ceil(128)];
            let y = fp8_block_gemm(
                Fp8Operand {
                    codes: &xc,
                    scales: &xs,
                },
                Fp8Operand {
                    codes: &wc,
                    scales: &ws,
                },
                GemmDims { m, n, k },
                &cfg,
            )
            .unwrap();
            assert_eq!(y, vec![0.0; m * n]);
        }
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
        let reference = Decoded::new(x.operand(), w.operand(), dims, &cfg).gemm_per_mma();
        // The fast path sums each interval in K order too: the same bits.
        assert_same_bits(&fast, &reference, "blocked vs per-MMA");
    }

    #[test]
    fn square_blocked_activations_take_one_scale_per_block() {
        // The activation-gradient ablation: x in 128 × 128 blocks. The same codes with each
        // block's scale repeated on its rows, as 1 × 128 groups, give the same bits.
        let dims = GemmDims {
            m: 200,
            n: 9,
            k: 300,
        };
        let (f, sf) = (Fp8Format::E4M3, ScaleFormat::F32);
        let x =
            weight_quant_128x128(&values(dims.m * dims.k, 5), dims.m, dims.k, 128, f, sf).unwrap();
        let w =
            weight_quant_128x128(&values(dims.n * dims.k, 6), dims.n, dims.k, 128, f, sf).unwrap();
        let groups = dims.k.div_ceil(128);
        let per_row: Vec<f32> = (0..dims.m)
            .flat_map(|i| x.scales[(i / 128) * groups..][..groups].to_vec())
            .collect();
        for accumulator in [Accumulator::Exact, Accumulator::Hopper] {
            let blocked = BlockGemmConfig {
                x_square_blocks: true,
                accumulator,
                ..Default::default()
            };
            let y = fp8_block_gemm(x.operand(), w.operand(), dims, &blocked).unwrap();
            let expanded = Fp8Operand {
                codes: &x.codes,
                scales: &per_row,
            };
            let rows = BlockGemmConfig {
                accumulator,
                ..Default::default()
            };
            let want = fp8_block_gemm(expanded, w.operand(), dims, &rows).unwrap();
            assert_same_bits(&y, &want, "square blocks vs repeated row scales");
            // The per-row scale grid is refused for square blocks: its length says which.
            let err = fp8_block_gemm(expanded, w.operand(), dims, &blocked).unwrap_err();
            assert!(err.to_string().contains("x scales"), "{err}");
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
