//! One op on the CPU: operands → the kernel's CPU reference → results in storage dtype.

use super::{CpuOptions, fp8};
use crate::tensor::{HostData, HostTensor};
use dsc_ir::operands::{
    AttentionOperands, AttnScoresOperands, AttnValuesOperands, EmbeddingOperands,
    GroupedLinearOperands, LinearOperands, MoeCombineOperands, MoeTopkOperands,
};
use dsc_ir::{DType, Graph, Op, OpKind, TensorType};
use dsc_kernels::ops::{self, FloatFormat, GroupedDims, GroupedInput, RopeOperands, RopeParams};
use dsc_kernels::ops::{AttentionDims, CombineDims, ScoreDims, TopkDims, TopkParams, ValueDims};
use std::borrow::Cow;

/// Applies a data-movement kernel (generic over the element) to whichever kind of data a
/// tensor holds.
macro_rules! map_data {
    ($data:expr, |$x:ident| $kernel:expr) => {
        match $data {
            HostData::F32($x) => HostData::F32($kernel.map_err(err)?),
            HostData::I32($x) => HostData::I32($kernel.map_err(err)?),
            HostData::Codes($x) => HostData::Codes($kernel.map_err(err)?),
        }
    };
}

pub(super) type Result<T> = std::result::Result<T, String>;

/// The f32 values of a float tensor.
pub(super) fn floats(t: &HostTensor) -> Result<&[f32]> {
    match &t.data {
        HostData::F32(v) => Ok(v),
        _ => Err(format!("expected a float tensor, got {}", t.dtype)),
    }
}

/// The values of an integer tensor.
pub(super) fn ints(t: &HostTensor) -> Result<&[i32]> {
    match &t.data {
        HostData::I32(v) => Ok(v),
        _ => Err(format!("expected an integer tensor, got {}", t.dtype)),
    }
}

/// The codes of an FP8 tensor.
pub(super) fn codes(t: &HostTensor) -> Result<&[u8]> {
    match &t.data {
        HostData::Codes(v) => Ok(v),
        _ => Err(format!("expected FP8 codes, got {}", t.dtype)),
    }
}

/// Dimensions as `usize`.
pub(super) fn dims(ty: &TensorType) -> Vec<usize> {
    ty.shape.dims().iter().map(|&d| d as usize).collect()
}

/// A float result of type `ty`, rounded to its storage dtype.
pub(super) fn float_result(ty: &TensorType, mut values: Vec<f32>) -> Result<HostTensor> {
    ops::round_to(ty.dtype, &mut values).map_err(|e| e.to_string())?;
    Ok(HostTensor {
        dtype: ty.dtype,
        shape: dims(ty),
        data: HostData::F32(values),
    })
}

/// A tensor of type `ty` with the same kind of data as `like` (data movement keeps it).
fn same_data(ty: &TensorType, data: HostData) -> HostTensor {
    HostTensor {
        dtype: ty.dtype,
        shape: dims(ty),
        data,
    }
}

fn rows_and_last(ty: &TensorType) -> (usize, usize) {
    let last = ty.shape.last() as usize;
    let n = ty.shape.numel() as usize;
    (n.checked_div(last).unwrap_or(0), last)
}

/// `rms_norm` of `x` (of type `x_ty`) by `w`, with `op`'s epsilon.
fn rms_norm(op: &Op, x_ty: &TensorType, x: &HostTensor, w: &HostTensor) -> Result<Vec<f32>> {
    let (rows, d) = rows_and_last(x_ty);
    let eps = op.attrs.float("eps").unwrap_or(1e-6);
    // HF rounds the normalized activation to the input dtype before the weight.
    let fmt = format_of(x_ty.dtype);
    ops::rms_norm(floats(x)?, floats(w)?, rows, d, eps, fmt).map_err(err)
}

/// What a rope or norm reads from its x `x` (operand 0), and its type: all of it, or with
/// `x_cols` its column window, cut as the slice folded into the op would have cut it.
pub(super) fn x_window<'t>(
    g: &Graph,
    op: &Op,
    x: &'t HostTensor,
) -> Result<(TensorType, Cow<'t, HostTensor>)> {
    let ty = g.ty(op.operands[0]);
    let read = dsc_ir::infer::x_window_type(&op.attrs, ty).map_err(err)?;
    let Some(&[start, end]) = op.attrs.ints(dsc_ir::infer::X_COLS) else {
        return Ok((read, Cow::Borrowed(x)));
    };
    let d = dims(ty);
    let window = ops::slice(floats(x)?, &d, d.len() - 1, start as usize, end as usize);
    let window = float_result(&read, window.map_err(err)?)?;
    Ok((read, Cow::Owned(window)))
}

/// The rounding an op applies to intermediates stored in `dtype` (none for f32).
fn format_of(dtype: DType) -> FloatFormat {
    FloatFormat::of(dtype).unwrap_or(FloatFormat::F32)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Executes `op` on `ins`.
pub(super) fn execute(
    g: &Graph,
    op: &Op,
    ins: &[&HostTensor],
    options: &CpuOptions,
) -> Result<Vec<HostTensor>> {
    use OpKind::*;
    let in_ty = |i: usize| g.ty(op.operands[i]);
    let out_ty = |i: usize| g.ty(op.results[i]);
    let one = |values: Vec<f32>| float_result(out_ty(0), values).map(|t| vec![t]);
    match op.kind {
        Embedding => {
            let t = EmbeddingOperands::from_slice(ins).map_err(err)?;
            let o = op.embedding_operands().map_err(err)?;
            let d = ops::EmbeddingDims::from_shapes(&g.ty(o.ids).shape, &g.ty(o.table).shape)
                .map_err(err)?;
            one(ops::embedding(ints(t.ids)?, floats(t.table)?, d.vocab, d.dim).map_err(err)?)
        }
        Linear => {
            let o = op.linear_operands().map_err(err)?;
            let t = LinearOperands::from_slice(ins).map_err(err)?;
            let d =
                ops::LinearDims::from_shapes(&g.ty(o.x).shape, &g.ty(o.w).shape).map_err(err)?;
            let bias = t.bias.map(floats).transpose()?;
            one(ops::linear(floats(t.x)?, floats(t.w)?, bias, d.m, d.k, d.n).map_err(err)?)
        }
        Matmul => {
            let a = in_ty(0).shape.dims();
            let r = a.len();
            let (m, k) = (a[r - 2] as usize, a[r - 1] as usize);
            let batch = (in_ty(0).shape.numel() as usize) / (m * k).max(1);
            let n = out_ty(0).shape.last() as usize;
            let tb = op.attrs.bool("transpose_b").unwrap_or(false);
            let y = ops::matmul(floats(ins[0])?, floats(ins[1])?, batch, m, k, n, tb);
            one(y.map_err(err)?)
        }
        RmsNorm => {
            let (x_ty, x) = x_window(g, op, ins[0])?;
            one(rms_norm(op, &x_ty, &x, ins[1])?)
        }
        AddRmsNorm | AddRmsNormQuant => {
            // The unfused pair's numbers: the sum stored in its dtype, the norm over that.
            let sum_ty = out_ty(op.results.len() - 1);
            let sum = float_result(
                sum_ty,
                ops::add(floats(ins[0])?, floats(ins[1])?).map_err(err)?,
            )?;
            let mut results = if op.kind == AddRmsNorm {
                one(rms_norm(op, sum_ty, &sum, ins[2])?)?
            } else {
                fp8::execute(g, op, &[&sum, ins[2]], options)?
            };
            results.push(sum);
            Ok(results)
        }
        Rope => {
            let params = RopeParams::from_attrs(&op.attrs).map_err(err)?;
            let (x_ty, x) = x_window(g, op, ins[0])?;
            let d = dims(&x_ty);
            let shape = [d[0], d[1], d[2], d[3]];
            let y = ops::rope(floats(&x)?, shape, &params, format_of(x_ty.dtype));
            one(y.map_err(err)?)
        }
        Softmax => {
            let axis = in_ty(0)
                .shape
                .axis(op.attrs.int("axis").unwrap_or(-1))
                .ok_or("softmax axis out of range")?;
            one(ops::softmax(floats(ins[0])?, &dims(in_ty(0)), axis).map_err(err)?)
        }
        Silu => one(ops::silu(floats(ins[0])?)),
        Mul => one(ops::mul(floats(ins[0])?, floats(ins[1])?).map_err(err)?),
        Add => one(ops::add(floats(ins[0])?, floats(ins[1])?).map_err(err)?),
        Swiglu => {
            let fmt = format_of(out_ty(0).dtype);
            one(ops::swiglu(floats(ins[0])?, floats(ins[1])?, fmt).map_err(err)?)
        }
        AttnScores | Attention | AttentionQuant => {
            // The score side: q, k and the optional q_pe, k_pe (after v in `attention`).
            // The tensors and, from the graph, their types.
            let (s, v) = if op.kind != AttnScores {
                let a = AttentionOperands::from_slice(ins).map_err(err)?;
                (a.scores(), Some(a.v))
            } else {
                (AttnScoresOperands::from_slice(ins).map_err(err)?, None)
            };
            let s_ty = op.score_operands().map_err(err)?.map(|v| g.ty(v));
            let v_ty = op.fused_attention_operands().ok().map(|a| g.ty(a.v));
            let pe = match (s.pe(), s_ty.k_pe) {
                (Some((q_pe, k_pe)), Some(k_pe_ty)) => {
                    let (kv_heads, dim) = ops::rope_pe_dims(&k_pe_ty.shape).map_err(err)?;
                    Some(RopeOperands {
                        q_pe: floats(q_pe)?,
                        k_pe: floats(k_pe)?,
                        kv_heads,
                        dim,
                    })
                }
                _ => None,
            };
            let scale = op.attrs.float("scale").ok_or("missing scale")?;
            let causal = op.attrs.bool("causal").unwrap_or(false);
            // A fused attention may read a column window of its q, k and v (`q_cols`, …):
            // the type it reads, and the window's copy when there is one.
            let read = |key: &str, t: &HostTensor, ty: &TensorType| -> Result<_> {
                let read_ty =
                    dsc_ir::infer::attention_window_type(&op.attrs, key, ty).map_err(err)?;
                let copy = match op.attrs.ints(key) {
                    Some(&[start, end]) => {
                        let d = dims(ty);
                        let (start, end) = (start as usize, end as usize);
                        Some(ops::slice(floats(t)?, &d, d.len() - 1, start, end).map_err(err)?)
                    }
                    _ => None,
                };
                Ok((read_ty, copy))
            };
            use dsc_ir::infer::{K_COLS, Q_COLS, V_COLS};
            let (q_ty, q_copy) = read(Q_COLS, s.q, s_ty.q)?;
            let (k_ty, k_copy) = read(K_COLS, s.k, s_ty.k)?;
            let v_read = v.zip(v_ty).map(|(v, ty)| read(V_COLS, v, ty)).transpose()?;
            let (v_ty, v_copy) = match &v_read {
                Some((ty, copy)) => (Some(ty), copy.as_deref()),
                None => (None, None),
            };
            let s_ty = AttnScoresOperands {
                q: &q_ty,
                k: &k_ty,
                ..s_ty
            };
            let q = q_copy.as_deref().map_or_else(|| floats(s.q), Ok)?;
            let k = k_copy.as_deref().map_or_else(|| floats(s.k), Ok)?;
            let y = match v.zip(v_ty) {
                None => {
                    let score_dims =
                        ScoreDims::from_shapes(&s_ty.q.shape, &s_ty.k.shape).map_err(err)?;
                    ops::attn_scores(q, k, score_dims, pe, scale, causal)
                }
                Some((v, v_ty)) => {
                    let attention_dims =
                        AttentionDims::from_shapes(&s_ty.q.shape, &s_ty.k.shape, &v_ty.shape)
                            .map_err(err)?;
                    // The probabilities are rounded to the dtype the PV product reads: v's.
                    let probs = format_of(v_ty.dtype);
                    let v = v_copy.map_or_else(|| floats(v), Ok)?;
                    ops::attention(q, k, v, attention_dims, pe, scale, causal, probs)
                }
            };
            let y = y.map_err(err)?;
            match v_ty {
                // Quantized as `quantize` would the output `attention` stores (in v's dtype).
                Some(v_ty) if op.kind == AttentionQuant => {
                    fp8::quantize_output(g, op, y, v_ty.dtype)
                }
                _ => one(y),
            }
        }
        AttnValues => {
            let t = AttnValuesOperands::from_slice(ins).map_err(err)?;
            let o = op.attn_values_operands().map_err(err)?;
            let value_dims =
                ValueDims::from_shapes(&g.ty(o.p).shape, &g.ty(o.v).shape).map_err(err)?;
            one(ops::attn_values(floats(t.p)?, floats(t.v)?, value_dims).map_err(err)?)
        }
        MoeTopk => {
            let t = MoeTopkOperands::from_slice(ins).map_err(err)?;
            let logits = g.ty(op.moe_topk_operands().map_err(err)?.logits);
            let TopkDims { tokens, experts } = TopkDims::from_shapes(&logits.shape).map_err(err)?;
            let params = TopkParams::from_attrs(&op.attrs).map_err(err)?;
            let bias = t.bias.map(floats).transpose()?;
            let routing =
                ops::moe_topk(floats(t.logits)?, bias, tokens, experts, &params).map_err(err)?;
            Ok(vec![
                float_result(out_ty(0), routing.weights)?,
                same_data(out_ty(1), HostData::I32(routing.indices)),
            ])
        }
        GroupedLinear => {
            let t = GroupedLinearOperands::from_slice(ins).map_err(err)?;
            let ty = op.grouped_linear_operands().map_err(err)?.map(|v| g.ty(v));
            let input = GroupedInput::of(&ty.x.shape);
            let gd = GroupedDims::from_shapes(&ty.w.shape, &ty.indices.shape).map_err(err)?;
            let y = ops::grouped_linear(floats(t.x)?, input, floats(t.w)?, ints(t.indices)?, gd);
            one(y.map_err(err)?)
        }
        MoeCombine => {
            let t = MoeCombineOperands::from_slice(ins).map_err(err)?;
            let y = g.ty(op.moe_combine_operands().map_err(err)?.y);
            let CombineDims { tokens, top_k, dim } =
                CombineDims::from_shapes(&y.shape).map_err(err)?;
            let shared = t.shared.map(floats).transpose()?;
            let fmt = format_of(out_ty(0).dtype);
            let (y, weights) = (floats(t.y)?, floats(t.weights)?);
            let out = ops::moe_combine(y, weights, shared, tokens, top_k, dim, fmt);
            one(out.map_err(err)?)
        }
        Cast => fp8::cast(ins[0], out_ty(0)).map(|t| vec![t]),
        Reshape => Ok(vec![same_data(out_ty(0), ins[0].data.clone())]),
        Transpose => {
            let perm: Vec<usize> = op
                .attrs
                .ints("perm")
                .ok_or("missing perm")?
                .iter()
                .map(|&p| p as usize)
                .collect();
            let d = dims(in_ty(0));
            let data = map_data!(&ins[0].data, |x| ops::transpose(x, &d, &perm));
            Ok(vec![same_data(out_ty(0), data)])
        }
        Slice => {
            let axis = in_ty(0)
                .shape
                .axis(op.attrs.int("axis").unwrap_or(0))
                .ok_or("slice axis out of range")?;
            let start = op.attrs.int("start").unwrap_or(0) as usize;
            let end = op.attrs.int("end").unwrap_or(0) as usize;
            let d = dims(in_ty(0));
            let data = map_data!(&ins[0].data, |x| ops::slice(x, &d, axis, start, end));
            Ok(vec![same_data(out_ty(0), data)])
        }
        Concat => {
            let axis = in_ty(0)
                .shape
                .axis(op.attrs.int("axis").unwrap_or(0))
                .ok_or("concat axis out of range")?;
            let shapes: Vec<Vec<usize>> = (0..ins.len()).map(|i| dims(in_ty(i))).collect();
            let data = concat_data(ins, &shapes, axis)?;
            Ok(vec![same_data(out_ty(0), data)])
        }
        Quantize | Dequantize | Fp8Partials | Promote | Fp8Gemm | RmsNormQuant | SwigluQuant => {
            fp8::execute(g, op, ins, options)
        }
        CrossEntropy | CrossEntropyGrad | RmsNormGrad | SoftmaxGrad | SiluGrad | SwigluGrad
        | RopeGrad | EmbeddingGrad | ReduceSum | Scale | GlobalNorm | AdamW | Pad
        | GroupedLinearWgrad | MoeCombineGrad | MoeTopkGrad | ExpertBiasUpdate | BalanceLoss
        | BalanceLossGrad => super::training::execute(g, op, ins, options),
    }
}

fn concat_data(ins: &[&HostTensor], shapes: &[Vec<usize>], axis: usize) -> Result<HostData> {
    macro_rules! join {
        ($variant:ident) => {{
            let mut parts = Vec::with_capacity(ins.len());
            for (t, s) in ins.iter().zip(shapes) {
                match &t.data {
                    HostData::$variant(v) => parts.push((v.as_slice(), s.as_slice())),
                    _ => return Err("concat operands hold different kinds of data".into()),
                }
            }
            HostData::$variant(ops::concat(&parts, axis).map_err(err)?)
        }};
    }
    Ok(match &ins[0].data {
        HostData::F32(_) => join!(F32),
        HostData::I32(_) => join!(I32),
        HostData::Codes(_) => join!(Codes),
    })
}
