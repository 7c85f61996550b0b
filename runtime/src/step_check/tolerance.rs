//! How closely a GPU step must match the CPU reference of the same op on the same operands,
//! per op kind and output dtype:
//! - data movement (embedding, reshape, transpose, slice, concat), casts and `quantize`: bit
//!   exact (the math is identical: copies, one rounding of the same f32, amax and a true division);
//! - elementwise ops (silu, mul, add, swiglu, rope, dequantize): ≤ 1 bf16 ulp for bf16 outputs
//!   (`exp`/`sin` implementations differ in the last f32 bits, which can flip one rounding);
//! - rms_norm and softmax: ≤ 2 bf16 ulps (an FP32 reduction in another order, then one rounding);
//! - either of the two with f32 outputs: relative Frobenius error ≤ 1e-5;
//! - fused norm/swiglu + quantize: FP8 codes within one code of each other, scales within 1e-5
//!   relative (the amax of a reduced value may differ in its last bit);
//! - matrix products (linear, matmul, grouped, fp8 partials/promote/gemm, attention scores and
//!   values, moe_combine): relative Frobenius error ≤ 1e-2 for bf16 outputs; for f32 outputs
//!   ≤ 2e-3 for FP8 products (tensor cores accumulate FP8 products with ~13 fractional bits, the
//!   error the promotion interval bounds: `dsc numerics`) and ≤ 1e-4 for the rest;
//! - fused attention: relative Frobenius error ≤ 4e-3 (the CPU reference runs the same online
//!   softmax over the same key tiles; `exp` and the order of f32 sums differ, which can flip a
//!   BF16 probability's rounding, then the output is rounded once);
//! - moe_topk: indices equal for ≥ 99% of entries (near-ties of sigmoid scores may swap),
//!   weights within 1e-2 relative Frobenius;
//! - training kinds: adamw, scale and expert_bias_update bit exact (the same f64 scalars and
//!   f32 operations in the same order; integer loads); global_norm ≤ 1 f32 ulp (an f64 sum in
//!   another order); silu_grad, swiglu_grad and reduce_sum as the elementwise ops (`exp`; an
//!   f64 sum against an f32 pairwise one);
//!   cross_entropy and its gradient relative Frobenius ≤ 1e-5 (softmax statistics, `ln`);
//!   rms_norm_grad as rms_norm (its f32 weight gradient an f64 sum against an f32 pairwise one),
//!   softmax_grad as softmax; pad bit exact (a copy and zeros); rope_grad as rope;
//!   embedding_grad bit exact (f32 sums in the reference's token order); grouped_linear_wgrad
//!   as an f32 matrix product; moe_combine_grad bit exact (the reference's pairwise tree);
//!   moe_topk_grad as the elementwise ops (`exp`).
//!
//! NaN must appear where the reference has NaN, and only there; an infinity (the causal mask of
//! attention scores is −∞) must be the reference's infinity, and infinities are left out of the
//! ulp and Frobenius measures (−∞ − −∞ is NaN).

use crate::{HostData, HostTensor};
use dsc_ir::{DType, OpKind};
use dsc_kernels::numerics::bf16::to_bf16;

/// One comparison rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Equal bit for bit.
    Exact,
    /// At most this many ulps of the output dtype apart.
    Ulps(u32),
    /// FP8 codes at most one code apart.
    CodesWithinOne,
    /// Each element within this relative error (for scales).
    MaxRelative(f64),
    /// ‖gpu − cpu‖ / ‖cpu‖ at most this.
    RelativeFrobenius(f64),
    /// At least this fraction of integer entries equal.
    MostlyEqual(f64),
}

/// The rule for result `result` (of dtype `dtype`) of an op of kind `kind`.
pub fn rule_for(kind: OpKind, result: usize, dtype: DType) -> Rule {
    use OpKind as K;
    let f32_out = dtype == DType::F32;
    let gemm = |fp8: bool| match (f32_out, fp8) {
        (false, _) => Rule::RelativeFrobenius(1e-2),
        (true, true) => Rule::RelativeFrobenius(2e-3),
        (true, false) => Rule::RelativeFrobenius(1e-4),
    };
    match kind {
        K::Embedding | K::Reshape | K::Transpose | K::Slice | K::Concat | K::Cast | K::Quantize => {
            Rule::Exact
        }
        K::Silu
        | K::Mul
        | K::Add
        | K::Swiglu
        | K::Rope
        | K::Dequantize
        | K::RmsNorm
        | K::Softmax
            if f32_out =>
        {
            Rule::RelativeFrobenius(1e-5)
        }
        K::Silu | K::Mul | K::Add | K::Swiglu | K::Rope | K::Dequantize => Rule::Ulps(1),
        K::RmsNorm | K::Softmax => Rule::Ulps(2),
        // The sum is one f32 addition and one rounding, as `add`'s.
        K::AddRmsNorm if result == 0 => rule_for(K::RmsNorm, 0, dtype),
        K::AddRmsNormQuant if result < 2 => rule_for(K::RmsNormQuant, result, dtype),
        K::AddRmsNorm | K::AddRmsNormQuant => rule_for(K::Add, 0, dtype),
        K::RmsNormQuant | K::SwigluQuant if result == 0 => Rule::CodesWithinOne,
        K::RmsNormQuant | K::SwigluQuant => Rule::MaxRelative(1e-5),
        K::MoeTopk if dtype.is_int() => Rule::MostlyEqual(0.99),
        K::MoeTopk => Rule::RelativeFrobenius(1e-2),
        K::Fp8Partials | K::Promote | K::Fp8Gemm => gemm(true),
        K::Attention => Rule::RelativeFrobenius(4e-3),
        // The attention's outputs differ by its rule; a code moves by at most one step and an
        // amax (a scale) by about as much as one output.
        K::AttentionQuant if result == 0 => Rule::CodesWithinOne,
        K::AttentionQuant => Rule::MaxRelative(1e-2),
        K::Linear
        | K::Matmul
        | K::GroupedLinear
        | K::AttnScores
        | K::AttnValues
        | K::MoeCombine => gemm(false),
        // Training kinds with GPU kernels (tests/gpu/training_kernels.rs).
        // AdamW forms its scalars in f64 and updates in f32 in the reference's order; scale is
        // one product: bit exact.
        K::AdamW | K::Scale => Rule::Exact,
        // Integer loads and one f32 addition or subtraction of γ, then one rounding: bit exact.
        K::ExpertBiasUpdate => Rule::Exact,
        // An f64 sum of squares in another order, then sqrt and one rounding to f32.
        K::GlobalNorm => Rule::Ulps(1),
        // exp/silu as the elementwise kinds; reduce_sum sums in f64 where the reference sums
        // pairwise in f32 (a few f32 ulps of the column's magnitude), then one rounding.
        K::SiluGrad | K::SwigluGrad | K::ReduceSum if f32_out => Rule::RelativeFrobenius(1e-5),
        K::SiluGrad | K::SwigluGrad | K::ReduceSum => Rule::Ulps(1),
        // Row statistics as softmax (f32, another summation order, exp within 2 ulp), ln within
        // 1 ulp, the mean of the rows' losses in f64: relative error ≤ 1e-5.
        K::CrossEntropy | K::CrossEntropyGrad => Rule::RelativeFrobenius(1e-5),
        // rms_norm_grad's dx as rms_norm (f32 row statistics summed in another order, one
        // rounding); its weight gradient is an f64 sum over rows where the reference sums
        // pairwise in f32, rounded once to f32.
        K::RmsNormGrad if f32_out => Rule::RelativeFrobenius(1e-5),
        K::RmsNormGrad => Rule::Ulps(2),
        // softmax_grad as softmax: an f32 dot product summed in another order, then one
        // rounding of y·(dy − dot).
        K::SoftmaxGrad if f32_out => Rule::RelativeFrobenius(1e-5),
        K::SoftmaxGrad => Rule::Ulps(2),
        // pad copies the operand's bytes and writes zero bytes around them: bit exact.
        K::Pad => Rule::Exact,
        // rope_grad as rope: the angles' sin/cos differ from the reference's in the last f32
        // bits, which can flip the one rounding of a bf16 dx.
        K::RopeGrad if f32_out => Rule::RelativeFrobenius(1e-5),
        K::RopeGrad => Rule::Ulps(1),
        // embedding_grad sums each element in f32 from +0 in token order, the reference's own
        // order, with no products: bit exact.
        K::EmbeddingGrad => Rule::Exact,
        // The experts' Wgrad is an f32 GEMM over each expert's rows (the reference's library
        // blocks its sums in another order).
        K::GroupedLinearWgrad => gemm(false),
        // moe_combine_grad: one product rounded once, and the reference's pairwise tree of the
        // same f32 products: bit exact.
        K::MoeCombineGrad => Rule::Exact,
        // moe_topk_grad: the reference's operations in its order; only `exp` (in sigmoid or
        // softmax) differs in the last f32 bits.
        K::MoeTopkGrad if f32_out => Rule::RelativeFrobenius(1e-5),
        K::MoeTopkGrad => Rule::Ulps(1),
        // The balance loss and its gradient (always f32): `exp` again, and sums over a
        // sequence's tokens that a GPU splits across threads.
        K::BalanceLoss | K::BalanceLossGrad => Rule::RelativeFrobenius(1e-5),
    }
}

/// The position of `x` on the number line of `dtype`, in ulps (monotone, ±0 equal).
fn ordinal(dtype: DType, x: f32) -> i64 {
    let (bits, sign_bit) = if dtype == DType::Bf16 {
        (i64::from(to_bf16(x).to_bits()), 1i64 << 15)
    } else {
        (i64::from(x.to_bits()), 1i64 << 31)
    };
    if bits & sign_bit != 0 {
        -(bits & (sign_bit - 1))
    } else {
        bits
    }
}

/// Ok when `gpu` matches `cpu` under `rule`; else a sentence with the worst element.
pub fn compare(rule: Rule, gpu: &HostTensor, cpu: &HostTensor) -> Result<(), String> {
    if gpu.dtype != cpu.dtype || gpu.shape != cpu.shape {
        return Err(format!(
            "GPU result is {}{:?}, the reference {}{:?}",
            gpu.dtype, gpu.shape, cpu.dtype, cpu.shape
        ));
    }
    match (&gpu.data, &cpu.data) {
        (HostData::Codes(g), HostData::Codes(c)) => compare_codes(rule, g, c),
        (HostData::I32(g), HostData::I32(c)) => {
            let equal = g.iter().zip(c).filter(|(a, b)| a == b).count();
            let fraction = equal as f64 / c.len().max(1) as f64;
            let need = match rule {
                Rule::MostlyEqual(need) => need,
                _ => 1.0,
            };
            if fraction >= need {
                Ok(())
            } else {
                let first = g.iter().zip(c).position(|(a, b)| a != b).unwrap_or(0);
                Err(format!(
                    "{:.2}% of integers equal (need {:.2}%); first difference at {first}: {} vs {}",
                    fraction * 100.0,
                    need * 100.0,
                    g[first],
                    c[first]
                ))
            }
        }
        (HostData::F32(g), HostData::F32(c)) => compare_floats(rule, gpu.dtype, g, c),
        _ => Err("GPU result and reference hold different kinds of data".to_string()),
    }
}

fn compare_codes(rule: Rule, gpu: &[u8], cpu: &[u8]) -> Result<(), String> {
    let limit = if rule == Rule::CodesWithinOne { 1 } else { 0 };
    // E4M3 codes are sign-magnitude: the magnitude bits order the values.
    let value = |c: u8| {
        let magnitude = i32::from(c & 0x7f);
        if c & 0x80 != 0 { -magnitude } else { magnitude }
    };
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let nan = |code: u8| code & 0x7f == 0x7f;
        let bad = if nan(g) || nan(c) {
            nan(g) != nan(c)
        } else {
            (value(g) - value(c)).abs() > limit
        };
        if bad {
            return Err(format!(
                "FP8 code {i}: {g:#04x} vs reference {c:#04x} (allowed {limit} apart)"
            ));
        }
    }
    Ok(())
}

fn compare_floats(rule: Rule, dtype: DType, gpu: &[f32], cpu: &[f32]) -> Result<(), String> {
    if let Some(i) = (0..cpu.len()).find(|&i| gpu[i].is_nan() != cpu[i].is_nan()) {
        return Err(format!(
            "element {i}: {} vs reference {} (NaN must match NaN)",
            gpu[i], cpu[i]
        ));
    }
    if let Some(i) =
        (0..cpu.len()).find(|&i| (gpu[i].is_infinite() || cpu[i].is_infinite()) && gpu[i] != cpu[i])
    {
        return Err(format!(
            "element {i}: {} vs reference {} (an infinity must match the same infinity)",
            gpu[i], cpu[i]
        ));
    }
    let pairs = || {
        gpu.iter()
            .zip(cpu)
            .enumerate()
            .filter(|(_, (g, c))| g.is_finite() && c.is_finite())
    };
    match rule {
        Rule::Exact | Rule::Ulps(_) => {
            let limit = if let Rule::Ulps(n) = rule {
                i64::from(n)
            } else {
                0
            };
            for (i, (&g, &c)) in pairs() {
                let apart = (ordinal(dtype, g) - ordinal(dtype, c)).abs();
                if apart > limit {
                    return Err(format!(
                        "element {i}: {g} vs reference {c}: {apart} ulps of {dtype} apart (allowed {limit})"
                    ));
                }
            }
            Ok(())
        }
        Rule::MaxRelative(limit) => {
            for (i, (&g, &c)) in pairs() {
                let error = f64::from((g - c).abs()) / f64::from(c.abs()).max(f64::MIN_POSITIVE);
                if error > limit && g != c {
                    return Err(format!(
                        "element {i}: {g} vs reference {c}: relative error {error:.2e} (allowed {limit:.0e})"
                    ));
                }
            }
            Ok(())
        }
        Rule::RelativeFrobenius(limit) => {
            let (num, den) = pairs().fold((0.0f64, 0.0f64), |(n, d), (_, (&g, &c))| {
                (n + f64::from(g - c).powi(2), d + f64::from(c).powi(2))
            });
            let error = if den == 0.0 {
                num.sqrt()
            } else {
                (num / den).sqrt()
            };
            if error <= limit {
                Ok(())
            } else {
                Err(format!(
                    "relative Frobenius error {error:.3e} (allowed {limit:.0e})"
                ))
            }
        }
        Rule::CodesWithinOne | Rule::MostlyEqual(_) => {
            Err(format!("rule {rule:?} does not apply to float data"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16s(values: &[f32]) -> HostTensor {
        HostTensor::from_f32(DType::Bf16, vec![values.len()], values.to_vec()).unwrap()
    }

    #[test]
    fn bf16_ulps_are_counted_across_zero() {
        let one_ulp = 1.0 + 2f32.powi(-7);
        assert!(compare(Rule::Ulps(1), &bf16s(&[one_ulp]), &bf16s(&[1.0])).is_ok());
        let two = 1.0 + 2.0 * 2f32.powi(-7);
        let e = compare(Rule::Ulps(1), &bf16s(&[two]), &bf16s(&[1.0])).unwrap_err();
        assert!(e.contains("2 ulps of bf16 apart"), "{e}");
        assert!(compare(Rule::Exact, &bf16s(&[-0.0]), &bf16s(&[0.0])).is_ok());
        let e = compare(Rule::Exact, &bf16s(&[f32::NAN]), &bf16s(&[1.0])).unwrap_err();
        assert!(e.contains("NaN must match NaN"), "{e}");
        assert!(compare(Rule::Exact, &bf16s(&[f32::NAN]), &bf16s(&[f32::NAN])).is_ok());
    }

    /// Regression: causally masked attention scores are −∞ in both results, and −∞ − −∞ made
    /// the Frobenius error NaN, failing every attention-scores step.
    #[test]
    fn matching_infinities_are_equal_and_others_are_not() {
        let f32s = |v: &[f32]| HostTensor::from_f32(DType::F32, vec![v.len()], v.to_vec()).unwrap();
        let masked = f32s(&[1.0, f32::NEG_INFINITY]);
        assert!(compare(Rule::RelativeFrobenius(1e-4), &masked, &masked).is_ok());
        assert!(compare(Rule::Ulps(0), &masked, &masked).is_ok());
        let e = compare(Rule::RelativeFrobenius(1e-4), &f32s(&[1.0, -1e30]), &masked).unwrap_err();
        assert!(
            e.contains("element 1") && e.contains("same infinity"),
            "{e}"
        );
        let e = compare(
            Rule::RelativeFrobenius(1e-4),
            &f32s(&[1.0, f32::INFINITY]),
            &masked,
        )
        .unwrap_err();
        assert!(
            e.contains("element 1: inf vs reference -inf") && e.contains("same infinity"),
            "{e}"
        );
    }

    #[test]
    fn codes_within_one_allow_a_neighbour_only() {
        let codes =
            |c: &[u8]| HostTensor::from_codes(DType::F8E4M3, vec![c.len()], c.to_vec()).unwrap();
        assert!(
            compare(
                Rule::CodesWithinOne,
                &codes(&[0x39, 0xb8]),
                &codes(&[0x38, 0xb9])
            )
            .is_ok()
        );
        let e = compare(Rule::CodesWithinOne, &codes(&[0x3a]), &codes(&[0x38])).unwrap_err();
        assert!(
            e.contains("0x3a vs reference 0x38 (allowed 1 apart)"),
            "{e}"
        );
        let e = compare(Rule::Exact, &codes(&[0x39]), &codes(&[0x38])).unwrap_err();
        assert!(
            e.contains("0x39 vs reference 0x38 (allowed 0 apart)"),
            "{e}"
        );
        // +0 and -0 are one code apart in magnitude order: both zero.
        assert!(compare(Rule::Exact, &codes(&[0x80]), &codes(&[0x00])).is_ok());
        // 0x7f is NaN: never within one of a number.
        let e = compare(Rule::CodesWithinOne, &codes(&[0x7f]), &codes(&[0x7e])).unwrap_err();
        assert!(e.contains("0x7f vs reference 0x7e"), "{e}");
    }

    #[test]
    fn frobenius_and_integer_rules() {
        let f32s = |v: &[f32]| HostTensor::from_f32(DType::F32, vec![v.len()], v.to_vec()).unwrap();
        assert!(
            compare(
                Rule::RelativeFrobenius(1e-2),
                &f32s(&[1.0, 2.001]),
                &f32s(&[1.0, 2.0])
            )
            .is_ok()
        );
        let e = compare(
            Rule::RelativeFrobenius(1e-4),
            &f32s(&[1.0, 2.01]),
            &f32s(&[1.0, 2.0]),
        )
        .unwrap_err();
        assert!(
            e.contains("relative Frobenius error") && e.contains("(allowed 1e-4)"),
            "{e}"
        );
        let ints = |v: &[i32]| HostTensor::from_i32(DType::I32, vec![v.len()], v.to_vec()).unwrap();
        let e = compare(Rule::Exact, &ints(&[1, 2]), &ints(&[1, 3])).unwrap_err();
        assert!(
            e.contains("50.00% of integers equal (need 100.00%); first difference at 1: 2 vs 3"),
            "{e}"
        );
        assert!(compare(Rule::MostlyEqual(0.5), &ints(&[1, 2]), &ints(&[1, 3])).is_ok());
        let e = compare(Rule::Exact, &f32s(&[1.0]), &ints(&[1])).unwrap_err();
        assert!(e.contains("f32[1], the reference i32[1]"), "{e}");
    }

    #[test]
    fn every_op_kind_has_a_rule() {
        assert_eq!(rule_for(OpKind::Quantize, 1, DType::F32), Rule::Exact);
        assert_eq!(
            rule_for(OpKind::RmsNormQuant, 0, DType::F8E4M3),
            Rule::CodesWithinOne
        );
        assert_eq!(
            rule_for(OpKind::Fp8Gemm, 0, DType::Bf16),
            Rule::RelativeFrobenius(1e-2)
        );
        assert_eq!(
            rule_for(OpKind::MoeTopk, 1, DType::I32),
            Rule::MostlyEqual(0.99)
        );
    }
}
