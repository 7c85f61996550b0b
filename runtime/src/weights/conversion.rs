//! Conversion: checkpoint slices into a parameter's tensor — dtype conversion and rounding,
//! FP8 quantization on load (the policy's block and scale format), dequantization of FP8 codes
//! into a high-precision parameter.

use dsc_ir::{DType, Graph, PrecisionPolicy};
use dsc_kernels::numerics::fp8;
use dsc_kernels::{Fp8Format, weight_quant_experts};

use super::matching::{Plan, Source};
use super::{Weights, dims};
use crate::checkpoint::TensorView;
use crate::tensor::{self, HostData, HostTensor, read_f32, round_slice};

/// The block-scale shape of a weight `[…, N, K]`: `[…, ceil(N/block), ceil(K/block)]`.
pub(crate) fn scale_shape(shape: &[usize], block: usize) -> Option<Vec<usize>> {
    let r = shape.len();
    if r < 2 || block == 0 {
        return None;
    }
    let mut s = shape[..r - 2].to_vec();
    s.push(shape[r - 2].div_ceil(block));
    s.push(shape[r - 1].div_ceil(block));
    Some(s)
}

/// Quantizes high-precision values of a weight `[…, N, K]` with the policy's block and scale
/// format, each leading index on its own block grid: codes and `weight_scale_inv` scales.
pub(crate) fn quantize_weight(
    values: &[f32],
    shape: &[usize],
    fmt: Fp8Format,
    policy: &PrecisionPolicy,
) -> Result<(Vec<u8>, Vec<f32>), String> {
    let r = shape.len();
    if r < 2 {
        return Err(format!("an FP8 weight needs rank 2 or more, not {shape:?}"));
    }
    let lead = shape[..r - 2].iter().product();
    let q = weight_quant_experts(
        values,
        lead,
        shape[r - 2],
        shape[r - 1],
        policy.weight_block as usize,
        fmt,
        policy.scale_format,
    )
    .map_err(|e| e.to_string())?;
    Ok((q.codes, q.scales))
}

/// Appends `src` to `dst` (both the same variant).
fn append(dst: &mut HostData, src: HostData) {
    match (dst, src) {
        (HostData::F32(d), HostData::F32(s)) => d.extend(s),
        (HostData::I32(d), HostData::I32(s)) => d.extend(s),
        (HostData::Codes(d), HostData::Codes(s)) => d.extend(s),
        _ => unreachable!("slices of one parameter share their storage kind"),
    }
}

/// Decodes FP8 codes `[…, N, K]` and multiplies each by its block's scale.
fn dequantize(
    codes: &[u8],
    scales: &[f32],
    shape: &[usize],
    block: usize,
    fmt: Fp8Format,
) -> Vec<f32> {
    let r = shape.len();
    let (n, k) = (shape[r - 2], shape[r - 1]);
    let (nb, kb) = (n.div_ceil(block), k.div_ceil(block));
    let mut out = Vec::with_capacity(codes.len());
    for (i, &c) in codes.iter().enumerate() {
        let (lead, row, col) = (i / (n * k), (i / k) % n, i % k);
        let s = scales[lead * nb * kb + (row / block) * kb + col / block];
        out.push(fp8::decode(fmt, c) * s);
    }
    out
}

/// Builds a planned parameter's tensor (and its scale parameter's) from its sources.
pub(super) fn materialize(graph: &Graph, plan: &Plan, weights: &mut Weights) -> Result<(), String> {
    let p = plan.param;
    let dtype = graph.ty(p).dtype;
    let shape = dims(graph, p);
    let policy = &graph.policy;
    let bad = |name: &str, message: String| format!("`{name}`: {message}");
    let read_scales = |s: &TensorView| {
        read_f32(s.dtype, s.data).ok_or_else(|| bad(s.name, "not float scales".into()))
    };
    if let Some(f) = plan.fp8 {
        let mut codes = Vec::with_capacity(shape.iter().product());
        let mut scales = Vec::new();
        for (source, name) in plan.sources.iter().zip(&plan.names) {
            match source {
                Source::Fp8 {
                    codes: c,
                    scales: s,
                } => {
                    codes.extend_from_slice(c.data);
                    scales.extend(read_scales(s)?);
                }
                Source::Quantize(v) => {
                    let mut values = read_f32(v.dtype, v.data)
                        .ok_or_else(|| bad(name, "not a float tensor".into()))?;
                    round_slice(policy.high, &mut values);
                    let (c, s) = quantize_weight(&values, &plan.slice_shape, f.fmt, policy)
                        .map_err(|e| bad(name, e))?;
                    codes.extend(c);
                    scales.extend(s);
                }
                _ => unreachable!("FP8 parameters plan FP8 sources"),
            }
        }
        let t = HostTensor::from_codes(dtype, shape, codes)
            .map_err(|e| bad(graph.name(p), e.to_string()))?;
        let s = HostTensor::new(DType::F32, dims(graph, f.scale), HostData::F32(scales))
            .map_err(|e| bad(graph.name(f.scale), e.to_string()))?;
        weights.insert(p, t);
        weights.insert(f.scale, s);
        return Ok(());
    }
    let mut data = HostTensor::zeros(dtype, vec![0]).data;
    for (source, name) in plan.sources.iter().zip(&plan.names) {
        let slice = match source {
            Source::Convert(v) => {
                tensor::convert(v.dtype, v.data, dtype).map_err(|e| bad(name, e))?
            }
            Source::Dequant { codes, scales, fmt } => {
                let s = read_scales(scales)?;
                let mut values = dequantize(
                    codes.data,
                    &s,
                    &plan.slice_shape,
                    policy.weight_block as usize,
                    *fmt,
                );
                round_slice(dtype, &mut values);
                HostData::F32(values)
            }
            _ => unreachable!("plain parameters plan plain sources"),
        };
        append(&mut data, slice);
    }
    let t = HostTensor::new(dtype, shape, data).map_err(|e| bad(graph.name(p), e.to_string()))?;
    weights.insert(p, t);
    Ok(())
}
