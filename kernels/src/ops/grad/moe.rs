//! The VJPs of the mixture-of-experts kinds (DESIGN.md §3b, §8): the k-grouped Wgrad of the
//! per-token expert GEMM, the gradients of the weighted combination, and the gradient of the
//! routing weights w.r.t. the gate's logits.
//!
//! The Dgrad of `grouped_linear` needs no kernel of its own: `dx[t, j] = dy[t, j] · w[e]` is
//! a `grouped_linear` of dy through the transposed expert weights (summed over the slots when
//! the forward's input was one row per token).

use crate::act_quant::act_quant_1x128;
use crate::block_gemm::{BlockGemmConfig, GemmDims, fp8_block_gemm};
use crate::error::KernelError;
use crate::numerics::accumulate::Accumulator;
use crate::numerics::fp8::Fp8Format;
use crate::ops::error::{OpError, check_len, check_shape};
use crate::ops::grouped_linear::{GroupedDims, GroupedInput};
use crate::ops::linear::{View, gemm_into};
use crate::ops::moe_topk::ScoreFunc;
use crate::ops::pairwise_sum;
use crate::ops::softmax::softmax_row;
use dsc_ir::{Attrs, DType, ScaleFormat};
use rayon::prelude::*;
use serde::Serialize;

/// The FP8 form of [`grouped_linear_wgrad`] (DESIGN.md §8, the recipe's Wgrad of the routed
/// experts): each operand tiled along the contracted rows. (The GPU kernel's spec holds it as it
/// is: its fields' order is the kernel's canonical text's, on which its entry name depends.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupedWgradFp8 {
    /// The FP8 format of both operands' codes (the op's compute dtype).
    pub format: DType,
    /// Rows of an expert per scale group (`tile` attribute): one scale per column of dy and of
    /// x for every `tile` of the expert's rows, counted in row order from its first.
    pub tile: usize,
    /// Rows per partial sum (`interval` attribute), a multiple of 32 dividing `tile`.
    pub interval: usize,
    pub dy_scale_format: ScaleFormat,
    pub x_scale_format: ScaleFormat,
}

impl GroupedWgradFp8 {
    /// The FP8 form of a `grouped_linear_wgrad` computed in `compute` with `attrs`: `None`
    /// when it is not FP8 (no `tile` attribute and a compute dtype that is not FP8).
    pub fn from_attrs(compute: DType, attrs: &Attrs) -> Result<Option<Self>, OpError> {
        use dsc_ir::infer::{DY_SCALE_FORMAT, WGRAD_INTERVAL, WGRAD_TILE, X_SCALE_FORMAT};
        let fp8 = compute.is_fp8();
        if !fp8 && attrs.get(WGRAD_TILE).is_none() {
            return Ok(None);
        }
        let bad = |what: String| OpError::Shape(format!("grouped_linear_wgrad in FP8: {what}"));
        if !fp8 {
            return Err(bad(format!(
                "its {WGRAD_TILE} asks for FP8 but it computes in {compute}"
            )));
        }
        let size = |key: &str| {
            attrs
                .int(key)
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("needs a positive `{key}`")))
        };
        let scale_format = |key: &str| {
            attrs
                .str(key)
                .and_then(ScaleFormat::parse)
                .ok_or_else(|| bad(format!("needs `{key}` = \"f32\" or \"ue8m0\"")))
        };
        let (tile, interval) = (size(WGRAD_TILE)?, size(WGRAD_INTERVAL)?);
        if interval % 32 != 0 || tile % interval != 0 {
            return Err(bad(format!(
                "the interval ({interval}) must be a multiple of 32 that divides the tile ({tile})"
            )));
        }
        Ok(Some(GroupedWgradFp8 {
            format: compute,
            tile,
            interval,
            dy_scale_format: scale_format(DY_SCALE_FORMAT)?,
            x_scale_format: scale_format(X_SCALE_FORMAT)?,
        }))
    }
}

/// The attributes of one `moe_topk_grad` op: how the forward turned scores into weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteWeights {
    pub score_func: ScoreFunc,
    pub norm_topk_prob: bool,
    pub route_scale: f64,
}

impl RouteWeights {
    /// Reads `score_func`, `norm_topk_prob` and `route_scale` (of a `moe_topk` or a
    /// `moe_topk_grad`).
    pub fn from_attrs(attrs: &Attrs) -> Result<Self, OpError> {
        let missing =
            |name: &str| OpError::Shape(format!("moe_topk_grad needs attribute `{name}`"));
        Ok(RouteWeights {
            score_func: ScoreFunc::from_attrs(attrs)?,
            norm_topk_prob: attrs
                .bool("norm_topk_prob")
                .ok_or_else(|| missing("norm_topk_prob"))?,
            route_scale: attrs
                .float("route_scale")
                .ok_or_else(|| missing("route_scale"))?,
        })
    }
}

/// The (token · top_k + slot) rows routed to each of `experts` experts, in row order; an index
/// outside `0..experts` is an error naming it, its token and its slot.
fn rows_by_expert(
    what: &str,
    indices: &[i32],
    top_k: usize,
    experts: usize,
) -> Result<Vec<Vec<usize>>, OpError> {
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); experts];
    for (row, &idx) in indices.iter().enumerate() {
        let expert = usize::try_from(idx)
            .ok()
            .filter(|&ex| ex < experts)
            .ok_or_else(|| {
                OpError::OutOfRange(format!(
                    "{what} expert index {idx} (token {}, slot {}) is out of range for {experts} \
                     experts",
                    row / top_k.max(1),
                    row % top_k.max(1)
                ))
            })?;
        rows_of[expert].push(row);
    }
    Ok(rows_of)
}

/// The operands of a `grouped_linear_wgrad` checked against `dims`, and the rows routed to
/// each expert, in row order.
fn wgrad_rows(
    dy: &[f32],
    x: &[f32],
    input: GroupedInput,
    indices: &[i32],
    dims: GroupedDims,
) -> Result<Vec<Vec<usize>>, OpError> {
    let GroupedDims {
        tokens,
        top_k,
        experts,
        out_features: n,
        in_features: kk,
    } = dims;
    check_shape("dy", dy.len(), &[tokens, top_k, n])?;
    match input {
        GroupedInput::PerToken => check_shape("x", x.len(), &[tokens, kk])?,
        GroupedInput::PerSlot => check_shape("x", x.len(), &[tokens, top_k, kk])?,
    }
    check_shape("indices", indices.len(), &[tokens, top_k])?;
    rows_by_expert("grouped_linear_wgrad", indices, top_k, experts)
}

/// The k-grouped Wgrad of `grouped_linear`: `dw[e] = Σ dy[t, j]ᵀ · x[t(, j)]` over the (token,
/// slot) rows routed to expert `e`, one f32 GEMM per expert whose contracted dim is its rows
/// (in row order); dy `[tokens, top_k, out_features]`, x as the forward's input, indices
/// `[tokens, top_k]` → `[experts, out_features, in_features]`, zeros for an expert no token chose.
pub fn grouped_linear_wgrad(
    dy: &[f32],
    x: &[f32],
    input: GroupedInput,
    indices: &[i32],
    dims: GroupedDims,
) -> Result<Vec<f32>, OpError> {
    let GroupedDims {
        top_k,
        experts,
        out_features: n,
        in_features: kk,
        ..
    } = dims;
    let rows_of = wgrad_rows(dy, x, input, indices, dims)?;
    let mut dw = vec![0.0f32; experts * n * kk];
    if dw.is_empty() {
        return Ok(dw);
    }
    let x_row = |row: usize| input.x_row(row, top_k);
    dw.par_chunks_mut(n * kk)
        .zip(rows_of.par_iter())
        .filter(|(_, rows)| !rows.is_empty())
        .for_each(|(out, rows)| {
            let m = rows.len();
            let mut dys = Vec::with_capacity(m * n);
            let mut xs = Vec::with_capacity(m * kk);
            for &row in rows {
                dys.extend_from_slice(&dy[row * n..][..n]);
                xs.extend_from_slice(&x[x_row(row) * kk..][..kk]);
            }
            // out [n, kk] = dysᵀ [n, m] · xs [m, kk].
            let dys_t = View {
                offset: 0,
                rs: 1,
                cs: n,
            };
            gemm_into(
                out,
                View::rows(0, kk),
                false,
                &dys,
                dys_t,
                &xs,
                View::rows(0, kk),
                (n, kk, m),
                false,
            );
        });
    Ok(dw)
}

/// [`grouped_linear_wgrad`] in FP8 with FP32 promotion (DESIGN.md §8): for every expert, its
/// rows in row order are cut into groups of `tile` (the last one ragged, groups never span two
/// experts); dyᵀ `[N, rows]` and xᵀ `[K, rows]` are quantized in 1 × `tile` groups along those
/// rows ([`act_quant_1x128`]: one scale per column of dy and of x and per group), and
/// `dw[e] = dyᵀ · x` is the block-scaled GEMM of [`fp8_block_gemm`] over them (x's scales one
/// per row of xᵀ, `w_row_tiles`), its partial sums `interval` rows deep, summed by
/// `accumulator`.
pub fn grouped_linear_wgrad_fp8(
    dy: &[f32],
    x: &[f32],
    input: GroupedInput,
    indices: &[i32],
    dims: GroupedDims,
    fp8: GroupedWgradFp8,
    accumulator: Accumulator,
) -> Result<Vec<f32>, OpError> {
    let GroupedDims {
        top_k,
        experts,
        out_features: n,
        in_features: kk,
        ..
    } = dims;
    let rows_of = wgrad_rows(dy, x, input, indices, dims)?;
    let fmt = Fp8Format::from_dtype(fp8.format).ok_or_else(|| {
        OpError::Unsupported(format!("grouped_linear_wgrad: {} is not FP8", fp8.format))
    })?;
    let cfg = BlockGemmConfig {
        fmt,
        tile: fp8.tile,
        block: fp8.tile,
        w_row_tiles: true,
        x_square_blocks: false,
        promote_interval: fp8.interval,
        accumulator,
    };
    let kernel = |e: KernelError| OpError::Shape(format!("grouped_linear_wgrad: {e}"));
    cfg.validate().map_err(kernel)?;
    let mut dw = vec![0.0f32; experts * n * kk];
    if dw.is_empty() {
        return Ok(dw);
    }
    let x_row = |row: usize| input.x_row(row, top_k);
    // The experts one after another: each GEMM and quantization is parallel inside.
    for (out, rows) in dw.chunks_mut(n * kk).zip(&rows_of) {
        let m = rows.len();
        if m == 0 {
            continue;
        }
        let mut dy_t = vec![0.0f32; n * m];
        let mut x_t = vec![0.0f32; kk * m];
        for (r, &row) in rows.iter().enumerate() {
            for (j, &v) in dy[row * n..][..n].iter().enumerate() {
                dy_t[j * m + r] = v;
            }
            for (j, &v) in x[x_row(row) * kk..][..kk].iter().enumerate() {
                x_t[j * m + r] = v;
            }
        }
        let dy_q =
            act_quant_1x128(&dy_t, n, m, fp8.tile, fmt, fp8.dy_scale_format).map_err(kernel)?;
        let x_q =
            act_quant_1x128(&x_t, kk, m, fp8.tile, fmt, fp8.x_scale_format).map_err(kernel)?;
        let gemm = GemmDims { m: n, n: kk, k: m };
        let y = fp8_block_gemm(dy_q.operand(), x_q.operand(), gemm, &cfg).map_err(kernel)?;
        out.copy_from_slice(&y);
    }
    Ok(dw)
}

/// The gradients of `moe_combine` (`out[t] = Σ_j w[t, j] · y[t, j] (+ shared[t])`): y `[t, k,
/// d]`, weights `[t, k]`, dout `[t, d]` → (dy `[t, k, d]` = `w[t, j] · dout[t]`, dweights
/// `[t, k]` = `y[t, j] · dout[t]`), in f32; the shared experts' gradient is dout itself.
pub fn moe_combine_grad(
    y: &[f32],
    weights: &[f32],
    dout: &[f32],
    t: usize,
    k: usize,
    d: usize,
) -> Result<(Vec<f32>, Vec<f32>), OpError> {
    check_shape("expert outputs", y.len(), &[t, k, d])?;
    check_shape("weights", weights.len(), &[t, k])?;
    check_shape("dout", dout.len(), &[t, d])?;
    let mut dy = vec![0.0f32; y.len()];
    let mut dw = vec![0.0f32; weights.len()];
    if d == 0 || k == 0 {
        return Ok((dy, dw));
    }
    dy.par_chunks_mut(k * d)
        .zip(dw.par_chunks_mut(k))
        .enumerate()
        .for_each(|(tok, (dy_t, dw_t))| {
            let g = &dout[tok * d..][..d];
            let mut products = vec![0.0f32; d];
            for j in 0..k {
                let w = weights[tok * k + j];
                for (o, &gv) in dy_t[j * d..][..d].iter_mut().zip(g) {
                    *o = w * gv;
                }
                let yr = &y[(tok * k + j) * d..][..d];
                for ((p, &a), &b) in products.iter_mut().zip(yr).zip(g) {
                    *p = a * b;
                }
                dw_t[j] = pairwise_sum(&products, |v| v);
            }
        });
    Ok((dy, dw))
}

/// The gradient of `moe_topk`'s weights w.r.t. its logits `[t, e]`, given the chosen
/// `indices` and the weights' cotangent `dweights` (both `[t, k]`), as `moe_topk` computes the
/// weights (`crate::ops::moe_topk`): `s = sigmoid(l)` or `softmax(l)`, `r_j = s[idx_j]`,
/// `w_j = route_scale · r_j / (Σ r + 1e-20)` with `norm_topk_prob`, else `route_scale · r_j`.
/// The selection is piecewise constant, so neither it nor its bias gets a gradient; only the
/// score function, the normalization and the route scale are differentiated. Result f32
/// `[t, e]`; an index outside `0..e` is an error.
pub fn moe_topk_grad(
    logits: &[f32],
    indices: &[i32],
    dweights: &[f32],
    t: usize,
    e: usize,
    params: &RouteWeights,
) -> Result<Vec<f32>, OpError> {
    check_shape("logits", logits.len(), &[t, e])?;
    let k = indices.len().checked_div(t).unwrap_or(0);
    check_shape("indices", indices.len(), &[t, k])?;
    check_len("dweights", dweights.len(), indices.len())?;
    // Validated up front, so the parallel loop below cannot fail.
    rows_by_expert("moe_topk_grad", indices, k, e)?;
    let route_scale = params.route_scale as f32;
    let mut dlogits = vec![0.0f32; logits.len()];
    if e == 0 {
        return Ok(dlogits);
    }
    dlogits.par_chunks_mut(e).enumerate().for_each(|(tok, dl)| {
        let mut s = logits[tok * e..][..e].to_vec();
        match params.score_func {
            ScoreFunc::Sigmoid => s.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            ScoreFunc::Softmax => softmax_row(&mut s),
        }
        let idx = &indices[tok * k..][..k];
        let dw = &dweights[tok * k..][..k];
        // ds: the cotangent of the scores, nonzero at the chosen experts only.
        let mut ds = vec![0.0f32; e];
        if params.norm_topk_prob {
            let denominator = idx.iter().fold(0.0f32, |acc, &i| acc + s[i as usize]) + 1e-20;
            let dot = idx
                .iter()
                .zip(dw)
                .fold(0.0f32, |acc, (&i, &g)| acc + g * s[i as usize]);
            let correction = dot / (denominator * denominator);
            for (&i, &g) in idx.iter().zip(dw) {
                ds[i as usize] += route_scale * (g / denominator - correction);
            }
        } else {
            for (&i, &g) in idx.iter().zip(dw) {
                ds[i as usize] += route_scale * g;
            }
        }
        match params.score_func {
            ScoreFunc::Sigmoid => {
                for ((o, &g), &sv) in dl.iter_mut().zip(&ds).zip(&s) {
                    *o = g * sv * (1.0 - sv);
                }
            }
            ScoreFunc::Softmax => {
                let dot = ds
                    .iter()
                    .zip(&s)
                    .fold(0.0f32, |acc, (&g, &sv)| acc + g * sv);
                for ((o, &g), &sv) in dl.iter_mut().zip(&ds).zip(&s) {
                    *o = sv * (g - dot);
                }
            }
        }
    });
    Ok(dlogits)
}

/// The auxiliary-loss-free balancing step (DeepSeek-V3 §2.1.2, DESIGN.md §8) of one routed
/// layer's selection bias `[e]`: `load_i` counts the (token, slot) pairs of `indices` routed to
/// expert `i`, `mean_load = indices.len() / e`, and each bias moves by `speed` towards
/// balance, `b_i + speed · sign(mean_load − load_i)` in f32 (an expert exactly at the mean
/// stays). An index outside `0..e` is an error.
pub fn expert_bias_update(bias: &[f32], indices: &[i32], speed: f32) -> Result<Vec<f32>, OpError> {
    let e = bias.len();
    let mut load = vec![0usize; e];
    for (slot, &idx) in indices.iter().enumerate() {
        let expert = usize::try_from(idx).ok().filter(|&i| i < e).ok_or_else(|| {
            OpError::OutOfRange(format!(
                "expert_bias_update expert index {idx} (slot {slot}) is out of range for {e} experts"
            ))
        })?;
        load[expert] += 1;
    }
    // Compared as load_i · e against the total, exactly in integers.
    let total = indices.len();
    Ok(bias
        .iter()
        .zip(&load)
        .map(|(&b, &l)| match (l * e).cmp(&total) {
            std::cmp::Ordering::Less => b + speed,
            std::cmp::Ordering::Greater => b - speed,
            std::cmp::Ordering::Equal => b,
        })
        .collect())
}
