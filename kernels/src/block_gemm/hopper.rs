//! The block GEMM under the Hopper accumulator models at training speed: the loop of
//! `Decoded::gemm_per_mma`, each MMA folded in f32 lanes instead of one term at a time —
//! [`hopper_mma_32`] on any CPU, and an AVX2 copy of it that folds four columns of `y` side by
//! side (each fold is a chain of dependent steps; four independent chains keep the core busy).
//! The same bits as `gemm_per_mma` for both models, promoted and not (tested).

use super::exact::Isa;
use super::{Decoded, GemmDims};
use crate::numerics::accumulate::{Accumulator, hopper_mma_32};
use rayon::prelude::*;

/// Products per MMA.
const DEPTH: usize = Accumulator::MMA_DEPTH;

/// One output `y[i, j]` being summed.
#[derive(Clone, Copy)]
struct Column {
    j: usize,
    /// The promoted FP32 sum (the result, once every interval is in).
    total: f32,
    /// The tensor-core accumulator: the interval's partial, or all of K's without promotion.
    acc: f32,
}

impl Column {
    fn new(j: usize) -> Self {
        Column {
            j,
            total: 0.0,
            acc: 0.0,
        }
    }
}

impl Decoded<'_> {
    /// `y` under [`Accumulator::Hopper`] or [`Accumulator::HopperUnpromoted`], rows in parallel.
    pub(super) fn gemm_hopper(&self, isa: Isa) -> Vec<f32> {
        let GemmDims { m, n, k } = self.dims;
        let mut y = vec![0.0f32; m * n];
        if n == 0 {
            return y;
        }
        y.par_chunks_mut(n).enumerate().for_each(|(i, y_row)| {
            let x_row = &self.x[i * k..][..k];
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::detect` returns an x86 variant only where AVX2 and FMA are
                // present (AVX-512F machines have both too).
                Isa::Avx2 | Isa::Avx512 => unsafe { self.row_avx2(i, x_row, y_row) },
                Isa::Portable => {
                    for (j, y) in y_row.iter_mut().enumerate() {
                        *y = self.element(i, j, x_row);
                    }
                }
            }
        });
        y
    }

    /// `y[i, j]`, one MMA at a time through [`hopper_mma_32`].
    fn element(&self, i: usize, j: usize, x_row: &[f32]) -> f32 {
        let k = self.dims.k;
        let w_row = &self.w[j * k..][..k];
        let promotes = self.cfg.accumulator.promotes();
        let (mut total, mut acc) = (0.0f32, 0.0f32);
        for k0 in (0..k).step_by(self.cfg.promote_interval) {
            let k1 = (k0 + self.cfg.promote_interval).min(k);
            let scale = self.x_scale(i, k0) * self.w_scale(j, k0);
            // Promoted, each interval's partial starts from 0 and its products are unscaled.
            let factor = if promotes {
                acc = 0.0;
                1.0
            } else {
                scale
            };
            for c0 in (k0..k1).step_by(DEPTH) {
                let products = mma_products(&x_row[c0..k1], &w_row[c0..k1], factor);
                acc = hopper_mma_32(acc, &products);
            }
            if promotes {
                total += acc * scale;
            }
        }
        if promotes { total } else { acc }
    }

    /// One row of `y` with the AVX2 fold, four columns at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_avx2(&self, i: usize, x_row: &[f32], y_row: &mut [f32]) {
        let j_rest = y_row.len() / 4 * 4;
        let mut quads = y_row.chunks_exact_mut(4);
        for (q, y4) in quads.by_ref().enumerate() {
            let mut columns = [0, 1, 2, 3].map(|c| Column::new(4 * q + c));
            self.elements_avx2(i, x_row, &mut columns);
            for (y, column) in y4.iter_mut().zip(columns) {
                *y = column.total;
            }
        }
        for (c, y) in quads.into_remainder().iter_mut().enumerate() {
            let mut column = [Column::new(j_rest + c)];
            self.elements_avx2(i, x_row, &mut column);
            *y = column[0].total;
        }
    }

    /// [`Self::element`] for `columns`, their MMAs interleaved; each result is left in its
    /// column's `total`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn elements_avx2<const C: usize>(&self, i: usize, x_row: &[f32], columns: &mut [Column; C]) {
        let k = self.dims.k;
        let promotes = self.cfg.accumulator.promotes();
        let w_rows = columns.map(|c| &self.w[c.j * k..][..k]);
        for k0 in (0..k).step_by(self.cfg.promote_interval) {
            let k1 = (k0 + self.cfg.promote_interval).min(k);
            let s_x = self.x_scale(i, k0);
            let scales = columns.map(|c| s_x * self.w_scale(c.j, k0));
            if promotes {
                columns.iter_mut().for_each(|c| c.acc = 0.0);
            }
            for c0 in (k0..k1).step_by(DEPTH) {
                for ((column, w_row), &scale) in columns.iter_mut().zip(&w_rows).zip(&scales) {
                    let factor = if promotes { 1.0 } else { scale };
                    let (x, w) = (&x_row[c0..k1], &w_row[c0..k1]);
                    column.acc = match (x.first_chunk::<DEPTH>(), w.first_chunk::<DEPTH>()) {
                        (Some(x), Some(w)) => x86::fold(column.acc, x, w, factor),
                        _ => hopper_mma_32(column.acc, &mma_products(x, w, factor)),
                    };
                }
            }
            if promotes {
                for (column, &scale) in columns.iter_mut().zip(&scales) {
                    column.total += column.acc * scale;
                }
            }
        }
        if !promotes {
            columns.iter_mut().for_each(|c| c.total = c.acc);
        }
    }
}

/// The (up to) 32 products `a · b · factor` of one MMA from the fronts of `x` and `w`,
/// zero-padded (`factor` 1 leaves the exact products unrounded).
#[inline(always)]
fn mma_products(x: &[f32], w: &[f32], factor: f32) -> [f32; DEPTH] {
    let mut products = [0.0f32; DEPTH];
    for ((p, &a), &b) in products.iter_mut().zip(x).zip(w) {
        *p = a * b * factor;
    }
    products
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::numerics::accumulate::hopper_mma;
    use std::arch::x86_64::*;

    /// [`hopper_mma_32`](crate::numerics::accumulate::hopper_mma_32) of the products
    /// `x[l] · w[l] · factor`, in four 8-lane vectors.
    #[inline(always)]
    pub(super) fn fold(acc: f32, x: &[f32; 32], w: &[f32; 32], factor: f32) -> f32 {
        const EXPONENT: i32 = 0x7f80_0000;
        // SAFETY: only called from functions compiled with AVX2 and FMA enabled; the loads
        // read 8 of the 32 elements of `x` and `w` each.
        unsafe {
            let f = _mm256_set1_ps(factor);
            let p: [__m256; 4] = std::array::from_fn(|q| {
                let xy = _mm256_mul_ps(
                    _mm256_loadu_ps(x.as_ptr().add(8 * q)),
                    _mm256_loadu_ps(w.as_ptr().add(8 * q)),
                );
                // Times 1.0 (promoted) is exact: the product stays unrounded.
                _mm256_mul_ps(xy, f)
            });
            let mask = _mm256_set1_epi32(EXPONENT);
            let field = |v: __m256| _mm256_and_si256(_mm256_castps_si256(v), mask);
            let m = _mm256_max_epu32(
                _mm256_max_epu32(field(p[0]), field(p[1])),
                _mm256_max_epu32(field(p[2]), field(p[3])),
            );
            let m = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
            let field = (_mm_cvtsi128_si32(m) as u32).max(acc.to_bits() & EXPONENT as u32) >> 23;
            if !(27..255).contains(&field) {
                let mut products = [0.0f32; 32];
                for (q, v) in p.iter().enumerate() {
                    _mm256_storeu_ps(products.as_mut_ptr().add(8 * q), *v);
                }
                return hopper_mma(acc, &products);
            }
            let up = f32::from_bits((267 - field) << 23);
            let down = f32::from_bits((field - 13) << 23);
            let upv = _mm256_set1_ps(up);
            let fixed = |v: __m256| {
                _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v, upv))
            };
            // Integers below 2^14 summed below 2^20: exact in any order.
            let s = _mm256_add_ps(
                _mm256_add_ps(fixed(p[0]), fixed(p[1])),
                _mm256_add_ps(fixed(p[2]), fixed(p[3])),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            let sum = _mm_cvtss_f32(s) + (acc * up).trunc();
            f32::from_bits(sum.to_bits() & !0x3ff) * down
        }
    }
}
