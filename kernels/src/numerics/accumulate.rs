//! Accumulator models: how the FP8 products of one promotion interval are summed.
//!
//! On the GPU, FP8 products are summed by the tensor cores in 32-deep MMAs whose internal
//! precision is below FP32; every `promote_interval` elements of K the partial sum is scaled and
//! added into a true FP32 accumulator on the CUDA cores (DESIGN.md §3). The CPU reference offers
//! two models of the tensor-core part:
//!
//! - [`Accumulator::Exact`]: FP32 adds. This is the default and what the testdata assumes.
//! - [`Accumulator::Hopper`]: the published model of Hopper FP8 accumulation, see [`hopper_mma`].
//! - [`Accumulator::HopperUnpromoted`]: the same tensor core with no promotion at all, the
//!   recipe's ablation (DeepSeek-V3 §3.3.2): one limited-precision accumulator over all of K.

use dsc_ir::policy::MMA_K;

/// Fractional bits kept per term after alignment in the Hopper model (14 significant bits).
const HOPPER_FRAC_BITS: i32 = 13;

/// Mantissa bits kept in the Hopper model's running accumulator (e8m13, "FP22").
const HOPPER_MANT_BITS: u32 = 13;

/// How products are summed inside a promotion interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Accumulator {
    /// FP32 additions (the order inside an interval is unspecified: the fast GEMM path blocks it).
    #[default]
    Exact,
    /// The Hopper FP8 tensor-core model of [`hopper_mma`], one step per 32 products.
    Hopper,
    /// The Hopper model with no promotion, an ablation of the recipe: one tensor-core
    /// accumulator carries all of K, and each product enters it already multiplied by its
    /// group's scales (`(a · b) · (s_x · s_w)`, rounded to f32 once), as a GEMM that never moves
    /// its partial sums to the CUDA cores would compute with block scales applied in the MMA.
    /// Only the CPU reference models it: the GPU kernels always promote.
    HopperUnpromoted,
}

impl Accumulator {
    /// Products folded per MMA step (the MMA depth K of FP8 tensor-core instructions).
    pub const MMA_DEPTH: usize = MMA_K as usize;

    /// Folds one MMA's `products` (at most 32 exact values) into the running `acc`.
    pub fn mma(self, acc: f32, products: &[f32]) -> f32 {
        match self {
            Accumulator::Exact => products.iter().fold(acc, |a, &p| a + p),
            Accumulator::Hopper | Accumulator::HopperUnpromoted => hopper_mma(acc, products),
        }
    }

    /// False for [`Accumulator::HopperUnpromoted`]: partial sums never reach FP32.
    pub fn promotes(self) -> bool {
        self != Accumulator::HopperUnpromoted
    }
}

/// One 32-deep FP8 MMA under the Hopper accumulation model; returns the new accumulator.
///
/// This is a *model*, not hardware truth. It follows the DeepSeek-V3 technical report
/// (arXiv:2412.19437, §3.3.2 and §3.5.2): the tensor core aligns the 32 products by right-shifting
/// to the largest exponent, keeps only the top 14 bits of each (truncating the rest), and the
/// accumulator it adds into also holds 14 bits — the e8m13 "FP22" accumulator later measured on
/// H100. What is implemented, exactly:
///
/// 1. The terms are the running `acc` and the `products` (each exact: an FP8×FP8 product fits
///    an f32). `emax = max floor(log2 |t|)` over the nonzero terms; with none, `acc` is returned.
/// 2. Each term is truncated toward zero to a multiple of `2^(emax - 13)` (13 fractional bits
///    relative to the largest exponent; sign-magnitude, so negative terms also move toward 0).
/// 3. The truncated terms are summed exactly (in integers).
/// 4. The sum is truncated toward zero to 14 significant bits (1 + 13 mantissa bits) and
///    returned as an f32 whose low 10 mantissa bits are zero.
///
/// Whether the running accumulator takes part in the alignment (as here) or is added to an
/// aligned sum of the products afterwards is not settled by the public sources; with it in the
/// alignment, long all-positive sums lose small products once the accumulator has grown, which
/// is the failure mode the report describes and promotion cures. Non-finite terms (only E5M2's
/// inf codes can produce them) fall back to a plain f32 sum so that inf and NaN propagate.
pub fn hopper_mma(acc: f32, products: &[f32]) -> f32 {
    let terms = || std::iter::once(acc).chain(products.iter().copied());
    if terms().any(|t| !t.is_finite()) {
        return terms().sum();
    }
    let Some(emax) = terms().filter(|&t| t != 0.0).map(floor_log2).max() else {
        return acc;
    };
    let lsb = emax - HOPPER_FRAC_BITS;
    // |t| < 2^(emax+1), so each fixed-point term is below 2^14 and 33 of them fit easily.
    let sum: i64 = terms()
        .map(|t| (t as f64 * pow2(-lsb)).trunc() as i64)
        .sum();
    let mut magnitude = sum.unsigned_abs();
    let significant = 64 - magnitude.leading_zeros();
    let keep = HOPPER_MANT_BITS + 1;
    if significant > keep {
        let drop = significant - keep;
        magnitude = (magnitude >> drop) << drop;
    }
    // 14 significant bits at a weight >= 2^(-45) (FP8 products are >= 2^-32): exact in f32.
    let value = (magnitude as f64 * pow2(lsb)) as f32;
    if sum < 0 { -value } else { value }
}

/// [`hopper_mma`] of 32 products (pad a shorter MMA with zeros, which change nothing), written in
/// f32 lanes so that it vectorizes: the same bits as [`hopper_mma`] (tested against it).
///
/// With `emax` the largest exponent, every term times `2^(13 − emax)` is below `2^14` in
/// magnitude, so truncating it is exact in f32 and the 33 truncated terms sum exactly (below
/// `2^20`) in any order; clearing the sum's 10 low mantissa bits keeps 14 significant bits toward
/// zero. Non-finite terms and terms all below `2^-100` (where those powers of two would leave
/// f32's range) take [`hopper_mma`] itself.
#[inline(always)]
pub fn hopper_mma_32(acc: f32, products: &[f32; 32]) -> f32 {
    const EXPONENT: u32 = 0x7f80_0000;
    // Eight lanes of four terms each, spelled out so that each line is one vector operation.
    let field_of = |t: f32| t.to_bits() & EXPONENT;
    let mut fields = [0u32; 8];
    for (l, f) in fields.iter_mut().enumerate() {
        let (a, b) = (field_of(products[l]), field_of(products[l + 8]));
        let (c, d) = (field_of(products[l + 16]), field_of(products[l + 24]));
        *f = a.max(b).max(c.max(d));
    }
    let field = fields.iter().fold(field_of(acc), |m, &f| m.max(f)) >> 23;
    if !(27..255).contains(&field) {
        return hopper_mma(acc, products);
    }
    // emax = field − 127: scale up by 2^(140 − field), back down by 2^(field − 140).
    let up = f32::from_bits((267 - field) << 23);
    let down = f32::from_bits((field - 13) << 23);
    let fixed = |t: f32| (t * up).trunc();
    let mut lanes = [0.0f32; 8];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let (a, b) = (fixed(products[l]), fixed(products[l + 8]));
        let (c, d) = (fixed(products[l + 16]), fixed(products[l + 24]));
        *lane = (a + b) + (c + d);
    }
    let halves = [0, 1, 2, 3].map(|l| lanes[l] + lanes[l + 4]);
    let sum = (halves[0] + halves[2]) + (halves[1] + halves[3]) + fixed(acc);
    // The largest term truncates to at least 2^13, so a zero sum is a cancellation: +0, as the
    // model's integer sum gives.
    f32::from_bits(sum.to_bits() & !0x3ff) * down
}

/// `floor(log2 |x|)` of a nonzero finite f32, from the exponent field of its (always normal) f64.
fn floor_log2(x: f32) -> i32 {
    (((x as f64).to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// `2^e` for `e` in f64's normal exponent range, built from bits.
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_terms_are_truncated_against_the_largest() {
        // 2^14 aligned with 1: 1 sits 14 bits below the leading bit and is dropped entirely.
        assert_eq!(hopper_mma(16384.0, &[1.0]), 16384.0);
        // 2 sits 13 bits below: kept.
        assert_eq!(hopper_mma(16384.0, &[2.0]), 16386.0);
        // The exact FP32 sum keeps both.
        assert_eq!(Accumulator::Exact.mma(16384.0, &[1.0]), 16385.0);
        // Truncation is toward zero for negative terms too: -16384 + (-1) stays -16384.
        assert_eq!(hopper_mma(-16384.0, &[-1.0]), -16384.0);
    }

    #[test]
    fn result_keeps_14_significant_bits() {
        // 8191.5 + 8191.5 = 16383 has 14 significant bits: representable.
        assert_eq!(hopper_mma(0.0, &[8191.5, 8191.5]), 16383.0);
        // 12287 + 12287 + 8193 (emax 13, lsb 2^0: every term kept whole) is 32767, which needs 15
        // significant bits; truncated to 14 it is 32766.
        let p = [12287.0f32, 12287.0, 8193.0];
        assert_eq!(Accumulator::Exact.mma(0.0, &p), 32767.0);
        assert_eq!(hopper_mma(0.0, &p), 32766.0);
        assert_eq!(hopper_mma(0.0, &[0.0; 32]), 0.0);
        assert_eq!(hopper_mma(0.0, &[f32::INFINITY, 1.0]), f32::INFINITY);
    }

    /// A term of any binade, sign and kind: zeros, f32 subnormals, FP8-sized values, the
    /// largest finite values, and (rarely) inf and NaN.
    fn random_term(rng: &mut crate::rng::SplitMix64) -> f32 {
        let r = rng.next_u64();
        let sign = if r & 1 == 1 { -1.0f32 } else { 1.0 };
        match (r >> 1) % 64 {
            0 => 0.0 * sign,
            1 => f32::from_bits((r >> 8) as u32 & 0x007f_ffff) * sign,
            2 if r >> 60 == 0 => f32::NAN,
            3 if r >> 60 == 0 => f32::INFINITY * sign,
            _ => {
                let exponent = ((r >> 8) % 254) as u32 + 1;
                f32::from_bits(exponent << 23 | (r >> 20) as u32 & 0x007f_ffff) * sign
            }
        }
    }

    #[test]
    fn the_vectorized_mma_matches_the_model_bit_for_bit() {
        let mut rng = crate::rng::SplitMix64(0x4d4d_4133);
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for case in 0..200_000 {
            // Terms within a few binades of each other (the usual case, where truncation
            // bites), or anywhere in f32's range, and MMAs shorter than 32 padded with zeros.
            let len = if case % 4 == 0 { 1 + case % 32 } else { 32 };
            let base = random_term(&mut rng);
            let mut products = [0.0f32; 32];
            for p in &mut products[..len] {
                *p = if case % 2 == 0 {
                    base * (rng.uniform() as f32 * 16.0 - 8.0)
                } else {
                    random_term(&mut rng)
                };
            }
            let acc = if case % 3 == 0 {
                0.0
            } else {
                random_term(&mut rng)
            };
            let (fast, model) = (
                hopper_mma_32(acc, &products),
                hopper_mma(acc, &products[..len]),
            );
            assert!(
                same(fast, model),
                "case {case}: acc {acc:e}, products {:?}: {fast:e} against {model:e}",
                &products[..len]
            );
        }
        // The boundaries of the fast path: the largest term at 2^-100 and just below it.
        for top in [-99, -100, -101, 127] {
            let p = [
                2.0f32.powi(top),
                2.0f32.powi(top - 14),
                2.0f32.powi(top - 13),
            ];
            let mut products = [0.0f32; 32];
            products[..3].copy_from_slice(&p);
            assert!(same(hopper_mma_32(0.0, &products), hopper_mma(0.0, &p)));
        }
        // A sum that cancels is +0, as the model's integer sum, even from negative terms.
        let mut products = [0.0f32; 32];
        products[..3].copy_from_slice(&[-1.0, 0.5, -2.0f32.powi(-20)]);
        assert_eq!(hopper_mma_32(0.5, &products).to_bits(), 0.0f32.to_bits());
        assert_eq!(hopper_mma(0.5, &products).to_bits(), 0.0f32.to_bits());
    }
}
