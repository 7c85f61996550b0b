//! MoE routing and combination: `moe_topk` (one thread per token) and `moe_combine` (one output
//! element per thread).
//!
//! `moe_topk` follows the CPU reference step by step: scores (sigmoid, or softmax over the
//! experts), selection scores `s + bias`, group scores (sum of the top two with a bias, else the
//! top one), the best `topk_groups` groups, then the best `top_k` experts among them, ranked by
//! selection score with NaN first and ties to the lower index; weights are the unbiased scores,
//! normalized (`/ (Σ + 1e-20)`) when asked, times `route_scale`. The per-token arrays live in
//! private memory (`memref.alloca`).

use dsc_ir::DType;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::Value;
use melior::ir::r#type::MemRefType;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// How router logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// `1 / (1 + e^-x)` per expert.
    Sigmoid,
    /// Softmax over the experts.
    Softmax,
}

/// Top-k routing of `tokens` tokens over `experts` experts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeTopk {
    /// Tokens.
    pub tokens: u64,
    /// Experts.
    pub experts: u64,
    /// Experts chosen per token.
    pub top_k: u64,
    /// Expert groups.
    pub groups: u64,
    /// Groups kept.
    pub topk_groups: u64,
    /// Score function.
    pub scoring: Scoring,
    /// Whether the chosen weights are normalized to sum 1.
    pub norm_topk_prob: bool,
    /// Multiplies the weights.
    pub route_scale: f32,
    /// Whether a selection bias (`e_score_correction_bias`) is given.
    pub bias: bool,
    /// Logits dtype.
    pub logits: DType,
    /// Weights' output dtype.
    pub weights: DType,
}

impl MoeTopk {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_topk"
    }

    /// `(logits, [bias,] weights, indices)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![Param::new(
            "logits",
            self.logits,
            self.tokens * self.experts,
        )];
        if self.bias {
            params.push(Param::new("bias", DType::F32, self.experts));
        }
        params.push(Param::new(
            "weights",
            self.weights,
            self.tokens * self.top_k,
        ));
        params.push(Param::new("indices", DType::I32, self.tokens * self.top_k));
        params
    }

    /// One thread per token.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.tokens.div_ceil(64), 64)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(module, entry, &self.params(), self.tokens, |e, args, t| {
            let logits = args[0];
            let bias = self.bias.then(|| args[1]);
            let (weights, indices) = (args[args.len() - 2], args[args.len() - 1]);
            self.route_token(&e, t, logits, bias, weights, indices)
        })
    }

    fn route_token<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        t: Value<'c, '_>,
        logits: Value<'c, '_>,
        bias: Option<Value<'c, '_>>,
        weights: Value<'c, '_>,
        indices: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let n = self.experts as i64;
        let f32_array = |len: i64| -> Emitted<'c, 'a> {
            let ty = MemRefType::new(e.f32_type(), &[len], None, None);
            e.push(melior::dialect::memref::alloca(
                e.context,
                ty,
                &[],
                &[],
                None,
                e.location,
            ))
        };
        let i32_array = |len: i64| -> Emitted<'c, 'a> {
            let ty = MemRefType::new(e.int_type(32), &[len], None, None);
            e.push(melior::dialect::memref::alloca(
                e.context,
                ty,
                &[],
                &[],
                None,
                e.location,
            ))
        };
        let scores = f32_array(n)?;
        let select = f32_array(n)?;
        let taken = i32_array(n)?;
        let group_ok = i32_array(self.groups.max(1) as i64)?;
        let experts = e.index(n)?;
        let row = e.muli(t, experts)?;

        // Scores.
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        let max_cell = e.cell(neg_inf)?;
        e.for_const(0, n, 1, |e, i| {
            let x = e.load_f32(logits, row, i)?;
            let s = match self.scoring {
                Scoring::Sigmoid => e.sigmoid(x)?,
                Scoring::Softmax => x,
            };
            e.store(s, scores, i);
            let zero_i = e.int(32, 0)?;
            e.store(zero_i, taken, i);
            let m = e.get(max_cell)?;
            let m = e.max_skip_nan(m, s)?;
            e.set(max_cell, m)
        })?;
        if self.scoring == Scoring::Softmax {
            let max = e.get(max_cell)?;
            e.for_const(0, n, 1, |e, i| {
                let x = e.load(scores, i)?;
                let shifted = e.subf(x, max)?;
                let p = e.exp(shifted)?;
                e.store(p, scores, i);
                Ok(())
            })?;
            let sum = pairwise_sum(e, scores, 0, self.experts)?;
            let all_masked = e.cmpf(CmpfPredicate::Oeq, max, neg_inf)?;
            e.for_const(0, n, 1, |e, i| {
                let p = e.load(scores, i)?;
                let p = e.divf(p, sum)?;
                let zero = e.f32(0.0)?;
                let p = e.select(all_masked, zero, p)?;
                e.store(p, scores, i);
                Ok(())
            })?;
        }
        e.for_const(0, n, 1, |e, i| {
            let s = e.load(scores, i)?;
            let b = match bias {
                Some(bias) => e.load(bias, i)?,
                None => e.f32(0.0)?,
            };
            let v = e.addf(s, b)?;
            e.store(v, select, i);
            Ok(())
        })?;

        // Groups.
        let group_size = self.experts / self.groups.max(1);
        let one_i = e.int(32, 1)?;
        if self.groups > 1 {
            let group_scores = f32_array(self.groups as i64)?;
            let group_taken = i32_array(self.groups as i64)?;
            for g in 0..self.groups {
                let start = (g * group_size) as i64;
                let end = start + group_size as i64;
                let first = argbest(e, select, start, end, None, None)?;
                let top1 = e.load(select, first)?;
                let zero = e.f32(0.0)?;
                let score = if self.bias {
                    let second = argbest(e, select, start, end, Some(first), None)?;
                    let top2 = e.load(select, second)?;
                    let s = e.addf(zero, top1)?;
                    e.addf(s, top2)?
                } else {
                    top1
                };
                let at = e.index(g as i64)?;
                e.store(score, group_scores, at);
                let zero_i = e.int(32, 0)?;
                e.store(zero_i, group_taken, at);
                e.store(zero_i, group_ok, at);
            }
            for _ in 0..self.topk_groups {
                let best = argbest(
                    e,
                    group_scores,
                    0,
                    self.groups as i64,
                    None,
                    Some(group_taken),
                )?;
                e.store(one_i, group_taken, best);
                e.store(one_i, group_ok, best);
            }
            // Experts of dropped groups count as taken.
            e.for_const(0, n, 1, |e, i| {
                let size = e.index(group_size as i64)?;
                let g = e.divui(i, size)?;
                let ok = e.load(group_ok, g)?;
                let one = e.int(32, 1)?;
                let dropped = e.subi(one, ok)?;
                e.store(dropped, taken, i);
                Ok(())
            })?;
        }

        // Experts.
        let k = e.index(self.top_k as i64)?;
        let out_row = e.muli(t, k)?;
        let zero = e.f32(0.0)?;
        let denominator = e.cell(zero)?;
        for j in 0..self.top_k {
            let best = argbest(e, select, 0, n, None, Some(taken))?;
            e.store(one_i, taken, best);
            let at = e.index(j as i64)?;
            let at = e.addi(out_row, at)?;
            let index = e.index_cast(best, e.int_type(32))?;
            e.store(index, indices, at);
            let s = e.load(scores, best)?;
            e.accumulate(denominator, s)?;
        }
        let tiny = e.f32(1e-20)?;
        let d = e.get(denominator)?;
        let d = e.addf(d, tiny)?;
        let route_scale = e.f32(self.route_scale)?;
        for j in 0..self.top_k {
            let at = e.index(j as i64)?;
            let at = e.addi(out_row, at)?;
            let index = e.load(indices, at)?;
            let index = e.index_cast(index, e.index_type())?;
            let mut w = e.load(scores, index)?;
            if self.norm_topk_prob {
                w = e.divf(w, d)?;
            }
            let w = e.mulf(w, route_scale)?;
            let w = e.round_to(w, self.weights)?;
            e.store(w, weights, at);
        }
        Ok(())
    }
}

/// The index in `[start, end)` of the best value of `values` by the reference's rank (NaN
/// first, then larger, ties to the lower index), skipping `excluded` and entries whose `taken`
/// flag is set.
fn argbest<'c, 'a>(
    e: &Emit<'c, 'a>,
    values: Value<'c, '_>,
    start: i64,
    end: i64,
    excluded: Option<Value<'c, '_>>,
    taken: Option<Value<'c, '_>>,
) -> Emitted<'c, 'a> {
    let none = e.index(-1)?;
    let best_index = e.cell(none)?;
    let neg_inf = e.f32(f32::NEG_INFINITY)?;
    let best_value = e.cell(neg_inf)?;
    e.for_const(start, end, 1, |e, i| {
        let v = e.load(values, i)?;
        let bi = e.get(best_index)?;
        let bv = e.get(best_value)?;
        let none = e.index(-1)?;
        let empty = e.cmpi(CmpiPredicate::Eq, bi, none)?;
        let v_nan = e.cmpf(CmpfPredicate::Uno, v, v)?;
        let bv_number = e.cmpf(CmpfPredicate::Ord, bv, bv)?;
        let nan_over_number = e.andi(v_nan, bv_number)?;
        let larger = e.cmpf(CmpfPredicate::Ogt, v, bv)?;
        let not_bv_nan = e.cmpf(CmpfPredicate::Ord, bv, bv)?;
        let larger = e.andi(larger, not_bv_nan)?;
        let better = e.ori(nan_over_number, larger)?;
        let better = e.ori(better, empty)?;
        let mut eligible = e.cmpi(CmpiPredicate::Eq, i, i)?;
        if let Some(excluded) = excluded {
            let different = e.cmpi(CmpiPredicate::Ne, i, excluded)?;
            eligible = e.andi(eligible, different)?;
        }
        if let Some(taken) = taken {
            let flag = e.load(taken, i)?;
            let zero = e.int(32, 0)?;
            let free = e.cmpi(CmpiPredicate::Eq, flag, zero)?;
            eligible = e.andi(eligible, free)?;
        }
        let take = e.andi(better, eligible)?;
        let bi = e.select(take, i, bi)?;
        let bv = e.select(take, v, bv)?;
        e.set(best_index, bi)?;
        e.set(best_value, bv)
    })?;
    e.get(best_index)
}

/// The reference's pairwise sum of `values[start..start + len]`: sequential up to 32 elements,
/// else the sum of the two halves (unrolled: the length is static).
fn pairwise_sum<'c, 'a>(
    e: &Emit<'c, 'a>,
    values: Value<'c, '_>,
    start: u64,
    len: u64,
) -> Emitted<'c, 'a> {
    if len <= 32 {
        let mut acc = e.f32(0.0)?;
        for i in start..start + len {
            let at = e.index(i as i64)?;
            let v = e.load(values, at)?;
            acc = e.addf(acc, v)?;
        }
        Ok(acc)
    } else {
        let half = len / 2;
        let low = pairwise_sum(e, values, start, half)?;
        let high = pairwise_sum(e, values, start + half, len - half)?;
        e.addf(low, high)
    }
}

/// `out[t, d] = round(Σ_j w[t, j] · y[t, j, d]) + shared[t, d]`, rounded to the output dtype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoeCombine {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Hidden size.
    pub dim: u64,
    /// Dtype of the routed outputs.
    pub routed: DType,
    /// Dtype of the weights.
    pub weights: DType,
    /// Dtype of the shared expert's output, when there is one.
    pub shared: Option<DType>,
    /// Output dtype (the routed sum is rounded to it before the shared output is added).
    pub output: DType,
}

impl MoeCombine {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_combine"
    }

    /// `(y, weights, [shared,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![
            Param::new("y", self.routed, self.tokens * self.top_k * self.dim),
            Param::new("weights", self.weights, self.tokens * self.top_k),
        ];
        if let Some(shared) = self.shared {
            params.push(Param::new("shared", shared, self.tokens * self.dim));
        }
        params.push(Param::new("out", self.output, self.tokens * self.dim));
        params
    }

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.tokens * self.dim)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.tokens * self.dim,
            |e, args, i| {
                let (y, w, out) = (args[0], args[1], *args.last().expect("out"));
                let dim = e.index(self.dim as i64)?;
                let t = e.divui(i, dim)?;
                let d = e.remui(i, dim)?;
                let k = e.index(self.top_k as i64)?;
                let w_base = e.muli(t, k)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.top_k as i64, 1, |e, j| {
                    let wv = e.load_f32(w, w_base, j)?;
                    let slot = e.addi(w_base, j)?;
                    let y_base = e.muli(slot, dim)?;
                    let yv = e.load_f32(y, y_base, d)?;
                    let product = e.mulf(wv, yv)?;
                    e.accumulate(acc, product)
                })?;
                let value = e.get(acc)?;
                let mut value = e.round_through(value, self.output)?;
                if self.shared.is_some() {
                    let zero_index = e.index(0)?;
                    let s = e.load_f32(args[2], zero_index, i)?;
                    value = e.addf(value, s)?;
                }
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}
