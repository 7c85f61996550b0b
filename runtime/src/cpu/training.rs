//! The training kinds on the CPU (DESIGN.md §8): the loss, the backward kinds the VJP rules
//! emit, and the optimizer, each through its reference in `dsc_kernels::ops::grad`.

use super::dispatch::{Result, dims, float_result, floats, ints};
use crate::tensor::{HostData, HostTensor};
use dsc_ir::operands::{
    AdamWOperands, BalanceLossGradOperands, BalanceLossOperands, ExpertBiasUpdateOperands,
    GroupedLinearWgradOperands, MoeCombineGradOperands, MoeTopkGradOperands, RmsNormGradOperands,
};
use dsc_ir::{DType, Graph, Op, OpKind};
use dsc_kernels::ops::grad;
use dsc_kernels::ops::{CombineDims, FloatFormat, GroupedDims, GroupedInput, RopeParams, TopkDims};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// [`grad::pad`] of `x` with (dims, axis, before, after).
fn pad<T: Copy>(
    x: &[T],
    (d, axis, before, after): (&[usize], usize, usize, usize),
    zero: T,
) -> Result<Vec<T>> {
    grad::pad(x, d, axis, before, after, zero).map_err(err)
}

/// Executes a training-step `op` on `ins`.
pub(super) fn execute(
    g: &Graph,
    op: &Op,
    ins: &[&HostTensor],
    options: &super::CpuOptions,
) -> Result<Vec<HostTensor>> {
    use OpKind::*;
    let in_ty = |i: usize| g.ty(op.operands[i]);
    let out_ty = |i: usize| g.ty(op.results[i]);
    let one = |values: Vec<f32>| float_result(out_ty(0), values).map(|t| vec![t]);
    let rows_vocab = || {
        let d = dims(in_ty(0));
        let vocab = *d.last().unwrap_or(&0);
        (
            d.iter().product::<usize>().checked_div(vocab).unwrap_or(0),
            vocab,
        )
    };
    let axis = |key: &str| {
        in_ty(0)
            .shape
            .axis(op.attrs.int(key).unwrap_or(-1))
            .ok_or_else(|| format!("{} {key} out of range", op.kind))
    };
    match op.kind {
        CrossEntropy => {
            let (rows, vocab) = rows_vocab();
            let loss = grad::cross_entropy(floats(ins[0])?, ints(ins[1])?, rows, vocab);
            one(vec![loss.map_err(err)?])
        }
        CrossEntropyGrad => {
            let (rows, vocab) = rows_vocab();
            let dloss = floats(ins[2])?[0];
            let dx = grad::cross_entropy_grad(floats(ins[0])?, ints(ins[1])?, rows, vocab, dloss);
            one(dx.map_err(err)?)
        }
        RmsNormGrad => {
            let t = RmsNormGradOperands::from_slice(ins).map_err(err)?;
            let d = dims(g.ty(op.rms_norm_grad_operands().map_err(err)?.x));
            let width = *d.last().unwrap_or(&0);
            let rows = d.iter().product::<usize>().checked_div(width).unwrap_or(0);
            let eps = op.attrs.float("eps").ok_or("missing eps")?;
            let (x, w, dy) = (floats(t.x)?, floats(t.w)?, floats(t.dy)?);
            let (dx, dw) = grad::rms_norm_grad(x, w, dy, rows, width, eps).map_err(err)?;
            Ok(vec![
                float_result(out_ty(0), dx)?,
                float_result(out_ty(1), dw)?,
            ])
        }
        SoftmaxGrad => {
            let dx = grad::softmax_grad(
                floats(ins[0])?,
                floats(ins[1])?,
                &dims(in_ty(0)),
                axis("axis")?,
            );
            one(dx.map_err(err)?)
        }
        SiluGrad => one(grad::silu_grad(floats(ins[0])?, floats(ins[1])?).map_err(err)?),
        SwigluGrad => {
            let (dgate, dup) = grad::swiglu_grad(floats(ins[0])?, floats(ins[1])?, floats(ins[2])?)
                .map_err(err)?;
            Ok(vec![
                float_result(out_ty(0), dgate)?,
                float_result(out_ty(1), dup)?,
            ])
        }
        RopeGrad => {
            let params = RopeParams::from_attrs(&op.attrs).map_err(err)?;
            let d = dims(in_ty(0));
            let shape: [usize; 4] = d.try_into().map_err(|_| "rope_grad needs rank 4")?;
            one(grad::rope_grad(floats(ins[0])?, shape, &params).map_err(err)?)
        }
        EmbeddingGrad => {
            let out = dims(out_ty(0));
            let dw = grad::embedding_grad(ints(ins[0])?, floats(ins[1])?, out[0], out[1]);
            one(dw.map_err(err)?)
        }
        ReduceSum => {
            let y = grad::sum_axis(floats(ins[0])?, &dims(in_ty(0)), axis("axis")?);
            one(y.map_err(err)?)
        }
        Scale => {
            let factor = op.attrs.float("factor").ok_or("missing factor")? as f32;
            one(grad::scale(floats(ins[0])?, factor))
        }
        GlobalNorm => {
            let parts = ins.iter().map(|t| floats(t)).collect::<Result<Vec<_>>>()?;
            one(vec![grad::global_norm(&parts)])
        }
        AdamW => {
            let f = |key: &str| {
                op.attrs
                    .float(key)
                    .map(|v| v as f32)
                    .ok_or_else(|| format!("adamw needs `{key}`"))
            };
            let t = AdamWOperands::from_slice(ins).map_err(err)?;
            let m_ty = g.ty(op.adamw_operands().map_err(err)?.m);
            let norm = floats(t.norm)?[0];
            let schedule = floats(t.schedule)?;
            let hp = grad::AdamW {
                lr: schedule[0],
                beta1: f("beta1")?,
                beta2: f("beta2")?,
                eps: f("eps")?,
                weight_decay: f("weight_decay")?,
                step: schedule[1] as u32,
                grad_scale: grad::clip_scale(norm, f("max_grad_norm")?),
            };
            let moments = FloatFormat::of(m_ty.dtype).unwrap_or(FloatFormat::F32);
            let (param, grad, m, v) = (
                floats(t.param)?,
                floats(t.grad)?,
                floats(t.m)?,
                floats(t.v)?,
            );
            let (p, m, v) = grad::adamw(param, grad, m, v, &hp, moments).map_err(err)?;
            Ok(vec![
                float_result(out_ty(0), p)?,
                float_result(out_ty(1), m)?,
                float_result(out_ty(2), v)?,
            ])
        }
        Pad => {
            let count = |key: &str| {
                op.attrs
                    .int(key)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| format!("pad needs a non-negative `{key}`"))
            };
            let (axis, before, after) = (axis("axis")?, count("before")?, count("after")?);
            let d = dims(in_ty(0));
            let shape = (d.as_slice(), axis, before, after);
            let data = match &ins[0].data {
                HostData::F32(x) => HostData::F32(pad(x, shape, 0.0)?),
                HostData::I32(x) => HostData::I32(pad(x, shape, 0)?),
                // Code 0 is +0 in both FP8 formats.
                HostData::Codes(x) => HostData::Codes(pad(x, shape, 0)?),
            };
            let ty = out_ty(0);
            let shape = dims(ty);
            Ok(vec![HostTensor::new(ty.dtype, shape, data).map_err(err)?])
        }
        GroupedLinearWgrad => {
            let t = GroupedLinearWgradOperands::from_slice(ins).map_err(err)?;
            let ty = op
                .grouped_linear_wgrad_operands()
                .map_err(err)?
                .map(|v| g.ty(v));
            let input = GroupedInput::of(&ty.x.shape);
            // The result is the experts' weight gradient `[E, N, K]`, shaped as their weights.
            let gd = GroupedDims::from_shapes(&out_ty(0).shape, &ty.indices.shape).map_err(err)?;
            let (dy, x, indices) = (floats(t.dy)?, floats(t.x)?, ints(t.indices)?);
            let compute = op.precision.map_or(DType::F32, |p| p.compute);
            let dw = match grad::GroupedWgradFp8::from_attrs(compute, &op.attrs).map_err(err)? {
                Some(fp8) => grad::grouped_linear_wgrad_fp8(
                    dy,
                    x,
                    input,
                    indices,
                    gd,
                    fp8,
                    options.accumulator,
                ),
                None => grad::grouped_linear_wgrad(dy, x, input, indices, gd),
            };
            one(dw.map_err(err)?)
        }
        MoeCombineGrad => {
            let t = MoeCombineGradOperands::from_slice(ins).map_err(err)?;
            let y = g.ty(op.moe_combine_grad_operands().map_err(err)?.y);
            let CombineDims { tokens, top_k, dim } =
                CombineDims::from_shapes(&y.shape).map_err(err)?;
            let (y, weights, dout) = (floats(t.y)?, floats(t.weights)?, floats(t.dout)?);
            let (dy, dw) =
                grad::moe_combine_grad(y, weights, dout, tokens, top_k, dim).map_err(err)?;
            Ok(vec![
                float_result(out_ty(0), dy)?,
                float_result(out_ty(1), dw)?,
            ])
        }
        MoeTopkGrad => {
            let t = MoeTopkGradOperands::from_slice(ins).map_err(err)?;
            let logits = g.ty(op.moe_topk_grad_operands().map_err(err)?.logits);
            let TopkDims { tokens, experts } = TopkDims::from_shapes(&logits.shape).map_err(err)?;
            let params = grad::RouteWeights::from_attrs(&op.attrs).map_err(err)?;
            let (logits, indices, dweights) =
                (floats(t.logits)?, ints(t.indices)?, floats(t.dweights)?);
            let dl = grad::moe_topk_grad(logits, indices, dweights, tokens, experts, &params);
            one(dl.map_err(err)?)
        }
        ExpertBiasUpdate => {
            let t = ExpertBiasUpdateOperands::from_slice(ins).map_err(err)?;
            let speed = op.attrs.float("speed").ok_or("missing speed")? as f32;
            let b = grad::expert_bias_update(floats(t.bias)?, ints(t.indices)?, speed);
            one(b.map_err(err)?)
        }
        BalanceLoss => {
            let t = BalanceLossOperands::from_slice(ins).map_err(err)?;
            let b = balance_of(g, op)?;
            let loss = grad::balance_loss(floats(t.logits)?, ints(t.indices)?, &b);
            one(vec![loss.map_err(err)?])
        }
        BalanceLossGrad => {
            let t = BalanceLossGradOperands::from_slice(ins).map_err(err)?;
            let b = balance_of(g, op)?;
            let dloss = floats(t.dloss)?.first().copied().ok_or("empty dloss")?;
            let dl = grad::balance_loss_grad(floats(t.logits)?, ints(t.indices)?, dloss, &b);
            one(dl.map_err(err)?)
        }
        other => Err(format!("{other} is not a training kind")),
    }
}

/// The sizes and attributes of a `balance_loss` or `balance_loss_grad` op.
fn balance_of(g: &Graph, op: &Op) -> Result<grad::Balance> {
    let (logits, indices) = (g.ty(op.operands[0]), g.ty(op.operands[1]));
    let TopkDims { tokens, experts } = TopkDims::from_shapes(&logits.shape).map_err(err)?;
    let top_k = indices.shape.last() as usize;
    Ok(grad::Balance {
        tokens,
        experts,
        top_k,
        sequences: op.attrs.int("sequences").ok_or("missing sequences")? as usize,
        alpha: op.attrs.float("alpha").ok_or("missing alpha")? as f32,
        score_func: dsc_kernels::ops::ScoreFunc::from_attrs(&op.attrs).map_err(err)?,
    })
}
