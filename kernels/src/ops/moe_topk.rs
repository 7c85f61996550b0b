//! MoE routing (DESIGN.md §3b, HF `DeepseekV3MoE.route_tokens_to_experts` and DeepSeek's
//! `Gate`): scores, group-limited top-k selection, normalization and route scale.
//!
//! Per token, in f32: `s = sigmoid(logits)` or `softmax(logits)`; selection scores are
//! `s + bias` when a bias (`e_score_correction_bias`) is given, else `s`. With `n_groups > 1`
//! each group of `E / n_groups` consecutive experts scores the sum of its top two selection
//! scores (with a bias; the top one if a group has one expert) or its maximum (without), and
//! only the `topk_groups` best groups stay eligible. The `top_k` eligible experts with the
//! highest selection scores are chosen; their weights are the unbiased `s`, divided by
//! `Σ s + 1e-20` when `norm_topk_prob`, times `route_scale`.
//!
//! Ties (equal scores, of groups or experts) go to the lower index, and NaN ranks above every
//! number as in `torch.topk`. Experts of dropped groups are excluded outright (DeepSeek's
//! `-inf` mask, and HF DeepseekV3's in transformers 5; HF DeepseekV2 fills them with 0.0, which
//! differs only when an eligible selection score is negative, never with softmax). Results are ordered by descending selection score; HF's `topk(sorted=False)`
//! leaves its order unspecified, which only changes the order `moe_combine` sums in.

use super::error::{OpError, check_len, check_shape, ranked};
use super::softmax::softmax_row;
use dsc_ir::{Attrs, Shape};
use serde::Serialize;
use std::cmp::Ordering;

/// How logits become expert scores (the GPU kernel's spec holds it as it is; it serializes as
/// the attribute spells it: `sigmoid`, `softmax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFunc {
    /// `1 / (1 + exp(-x))` per expert (DeepSeek-V3).
    Sigmoid,
    /// Softmax over the experts (DeepSeek-V2).
    Softmax,
}

impl ScoreFunc {
    /// The `score_func` attribute of an op (`moe_topk`, `moe_topk_grad`, `balance_loss`, …).
    pub fn from_attrs(attrs: &Attrs) -> Result<Self, OpError> {
        match attrs.str("score_func") {
            Some("sigmoid") => Ok(ScoreFunc::Sigmoid),
            Some("softmax") => Ok(ScoreFunc::Softmax),
            other => Err(OpError::Shape(format!(
                "score_func must be \"sigmoid\" or \"softmax\", got {other:?}"
            ))),
        }
    }
}

/// Sizes of `moe_topk`: logits `[tokens, experts]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TopkDims {
    pub tokens: usize,
    pub experts: usize,
}

impl TopkDims {
    /// The sizes of the op whose logits have this shape (rank 2).
    pub fn from_shapes(logits: &Shape) -> Result<Self, OpError> {
        let [tokens, experts] = ranked("logits", logits)?;
        Ok(TopkDims { tokens, experts })
    }
}

/// The attributes of one `moe_topk` op. (The GPU kernel's spec holds them as they are: their
/// order here is its canonical text's, on which its entry name depends.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TopkParams {
    /// Experts chosen per token.
    pub top_k: usize,
    /// Groups the experts are split into (1: no group limit).
    pub n_groups: usize,
    /// Groups that stay eligible.
    pub topk_groups: usize,
    pub score_func: ScoreFunc,
    pub norm_topk_prob: bool,
    pub route_scale: f64,
}

impl TopkParams {
    /// Reads the op's attributes (`score_func`, `top_k`, `n_groups`, `topk_groups`,
    /// `norm_topk_prob`, `route_scale`).
    pub fn from_attrs(attrs: &Attrs) -> Result<Self, OpError> {
        let missing = |name: &str| OpError::Shape(format!("moe_topk needs attribute `{name}`"));
        let size = |name: &str| {
            attrs
                .int(name)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| missing(name))
        };
        Ok(TopkParams {
            score_func: ScoreFunc::from_attrs(attrs)?,
            top_k: size("top_k")?,
            n_groups: size("n_groups")?,
            topk_groups: size("topk_groups")?,
            norm_topk_prob: attrs
                .bool("norm_topk_prob")
                .ok_or_else(|| missing("norm_topk_prob"))?,
            route_scale: attrs
                .float("route_scale")
                .ok_or_else(|| missing("route_scale"))?,
        })
    }

    /// Checks the sizes against `e` experts, as the IR verifier does.
    fn check(&self, e: usize) -> Result<(), OpError> {
        let (k, g, kg) = (self.top_k, self.n_groups, self.topk_groups);
        let err = |m: String| Err(OpError::Shape(m));
        if k == 0 || k > e {
            return err(format!("top_k {k} must be in 1..={e}"));
        }
        if g == 0 || !e.is_multiple_of(g) {
            return err(format!("n_groups {g} must divide the {e} experts"));
        }
        if kg == 0 || kg > g {
            return err(format!("topk_groups {kg} must be in 1..={g}"));
        }
        if kg * (e / g) < k {
            return err(format!(
                "{kg} groups of {} experts cannot supply top_k = {k}",
                e / g
            ));
        }
        Ok(())
    }
}

/// The routing of `t` tokens: weights f32 `[t, top_k]` and expert indices i32 `[t, top_k]`,
/// each row in descending selection score.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub weights: Vec<f32>,
    pub indices: Vec<i32>,
}

/// Descending order of `(score, index)`: higher score first, NaN above all, ties by index.
fn rank(a: (f32, usize), b: (f32, usize)) -> Ordering {
    match (a.0.is_nan(), b.0.is_nan()) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => a.1.cmp(&b.1),
        (false, false) => {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        }
    }
}

/// Routes logits `[t, e]` (f32) with an optional selection bias `[e]` (see the module doc) →
/// weights `[t, top_k]`, indices `[t, top_k]`.
pub fn moe_topk(
    logits: &[f32],
    bias: Option<&[f32]>,
    t: usize,
    e: usize,
    params: &TopkParams,
) -> Result<Routing, OpError> {
    check_shape("logits", logits.len(), &[t, e])?;
    if let Some(b) = bias {
        check_len("bias", b.len(), e)?;
    }
    params.check(e)?;
    if i32::try_from(e).is_err() {
        return Err(OpError::Shape(format!(
            "{e} experts do not fit i32 indices"
        )));
    }
    let TopkParams {
        top_k: k,
        n_groups: groups,
        topk_groups,
        ..
    } = *params;
    let group_size = e / groups;
    // torch multiplies by the Python float route scale in f32.
    let route_scale = params.route_scale as f32;
    let mut routing = Routing {
        weights: Vec::with_capacity(t * k),
        indices: Vec::with_capacity(t * k),
    };
    let mut scores = vec![0.0f32; e];
    let mut select = vec![0.0f32; e];
    let mut eligible: Vec<usize> = Vec::with_capacity(e);
    for row in logits.chunks(e) {
        scores.copy_from_slice(row);
        match params.score_func {
            ScoreFunc::Sigmoid => scores
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            ScoreFunc::Softmax => softmax_row(&mut scores),
        }
        for (i, sel) in select.iter_mut().enumerate() {
            *sel = scores[i] + bias.map_or(0.0, |b| b[i]);
        }

        eligible.clear();
        if groups > 1 {
            let mut group_scores: Vec<(f32, usize)> = select
                .chunks(group_size)
                .enumerate()
                .map(|(gi, members)| {
                    let mut sorted: Vec<(f32, usize)> = members.iter().copied().zip(0..).collect();
                    sorted.sort_by(|&a, &b| rank(a, b));
                    let score = if bias.is_some() {
                        // HF: topk(2).sum(); the top two in descending order, added.
                        sorted.iter().take(2).fold(0.0f32, |acc, &(v, _)| acc + v)
                    } else {
                        sorted[0].0
                    };
                    (score, gi)
                })
                .collect();
            group_scores.sort_by(|&a, &b| rank(a, b));
            let mut kept: Vec<usize> = group_scores[..topk_groups]
                .iter()
                .map(|&(_, g)| g)
                .collect();
            kept.sort_unstable();
            eligible.extend(
                kept.iter()
                    .flat_map(|&g| g * group_size..(g + 1) * group_size),
            );
        } else {
            eligible.extend(0..e);
        }

        let mut ranked: Vec<(f32, usize)> = eligible.iter().map(|&i| (select[i], i)).collect();
        ranked.sort_by(|&a, &b| rank(a, b));
        let chosen = &ranked[..k];
        let denominator = if params.norm_topk_prob {
            // HF: topk_weight.sum(-1) + 1e-20, in f32.
            chosen.iter().fold(0.0f32, |acc, &(_, i)| acc + scores[i]) + 1e-20
        } else {
            1.0
        };
        for &(_, i) in chosen {
            let mut w = scores[i];
            if params.norm_topk_prob {
                w /= denominator;
            }
            routing.weights.push(w * route_scale);
            // i < e, which fits i32 (checked above).
            routing.indices.push(i as i32);
        }
    }
    Ok(routing)
}
