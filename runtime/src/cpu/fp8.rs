//! The FP8 kinds on the CPU: casts, quantization, FP8 partial products, promotion, the fused
//! block-scaled GEMM (dense and grouped), and norms/activations fused with quantization.

use super::CpuOptions;
use super::dispatch::{Result, codes, dims, float_result, floats, ints, x_window};
use crate::tensor::{HostData, HostTensor};
use dsc_ir::operands::{DequantizeOperands, Fp8GemmOperands, Fp8PartialsOperands, PromoteOperands};
use dsc_ir::policy::keys;
use dsc_ir::{DType, Graph, Op, OpKind, ScaleFormat, TensorType};
use dsc_kernels::numerics::fp8;
use dsc_kernels::ops::{self, FloatFormat};
use dsc_kernels::{BlockGemmConfig, Fp8Format, Fp8Operand, GemmDims, Quantized};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn format(dtype: DType) -> Result<Fp8Format> {
    Fp8Format::from_dtype(dtype).ok_or_else(|| format!("{dtype} is not an FP8 format"))
}

fn size(op: &Op, name: &str) -> Result<usize> {
    op.attrs
        .int(name)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("missing attribute `{name}`"))
}

fn scale_format(op: &Op) -> Result<ScaleFormat> {
    op.attrs
        .str(keys::SCALE_FORMAT)
        .and_then(ScaleFormat::parse)
        .ok_or_else(|| "missing or bad `scale_format`".to_string())
}

fn codes_result(ty: &TensorType, codes: Vec<u8>) -> HostTensor {
    HostTensor {
        dtype: ty.dtype,
        shape: dims(ty),
        data: HostData::Codes(codes),
    }
}

fn quantized_results(op: &Op, g: &Graph, q: Quantized) -> Result<Vec<HostTensor>> {
    Ok(vec![
        codes_result(g.ty(op.results[0]), q.codes),
        float_result(g.ty(op.results[1]), q.scales)?,
    ])
}

/// `cast`: between float dtypes (rounding to nearest even), to and from FP8 codes
/// (saturating), and between floats and integers (truncating toward zero).
pub(super) fn cast(x: &HostTensor, to: &TensorType) -> Result<HostTensor> {
    let values: Vec<f32> = match &x.data {
        HostData::F32(v) => v.clone(),
        HostData::I32(v) => v.iter().map(|&i| i as f32).collect(),
        HostData::Codes(c) => {
            let mut out = vec![0.0; c.len()];
            fp8::decode_slice(format(x.dtype)?, c, &mut out);
            out
        }
    };
    if to.dtype.is_fp8() {
        let mut out = vec![0u8; values.len()];
        fp8::encode_slice(format(to.dtype)?, &values, &mut out);
        return Ok(codes_result(to, out));
    }
    if to.dtype.is_float() {
        return float_result(to, values);
    }
    let data = values.iter().map(|&v| v as i32).collect();
    Ok(HostTensor {
        dtype: to.dtype,
        shape: dims(to),
        data: HostData::I32(data),
    })
}

/// Quantizes `x` (f32 values) of type `ty` in 1 × `tile` groups along its last axis.
fn act_quant(
    x: &[f32],
    ty: &TensorType,
    tile: usize,
    fmt: Fp8Format,
    sf: ScaleFormat,
) -> Result<Quantized> {
    let k = ty.shape.last() as usize;
    let rows = (ty.shape.numel() as usize).checked_div(k).unwrap_or(0);
    dsc_kernels::act_quant_1x128(x, rows, k, tile, fmt, sf).map_err(err)
}

/// The `(codes, scales)` of an op that quantizes its own output `y` (`attention_quant`): `y`
/// rounded to `stored`, the dtype the unfused op stores, then quantized in 1 × `act_tile`
/// groups of the codes' last axis as `quantize` does.
pub(super) fn quantize_output(
    g: &Graph,
    op: &Op,
    mut y: Vec<f32>,
    stored: DType,
) -> Result<Vec<HostTensor>> {
    FloatFormat::of(stored)
        .unwrap_or(FloatFormat::F32)
        .round_slice(&mut y);
    let codes = g.ty(op.results[0]);
    let q = act_quant(
        &y,
        codes,
        size(op, keys::ACT_TILE)?,
        format(codes.dtype)?,
        scale_format(op)?,
    )?;
    quantized_results(op, g, q)
}

pub(super) fn execute(
    g: &Graph,
    op: &Op,
    ins: &[&HostTensor],
    options: &CpuOptions,
) -> Result<Vec<HostTensor>> {
    let in_ty = |i: usize| g.ty(op.operands[i]);
    let out_ty = |i: usize| g.ty(op.results[i]);
    match op.kind {
        OpKind::Quantize if out_ty(0).dtype == DType::F12E5M6 => {
            let Some(&[1, tile]) = op.attrs.ints("block") else {
                return Err("an f12e5m6 quantize takes 1 × tile blocks only".into());
            };
            let ty = in_ty(0);
            let k = ty.shape.last() as usize;
            let rows = (ty.shape.numel() as usize).checked_div(k).unwrap_or(0);
            let tile = usize::try_from(tile).map_err(err)?;
            let x = floats(ins[0])?;
            let (q, scales) =
                dsc_kernels::act_quant_e5m6(x, rows, k, tile, scale_format(op)?).map_err(err)?;
            // The E5M6 values, exact in their f32 container.
            let values = HostTensor {
                dtype: DType::F12E5M6,
                shape: dims(out_ty(0)),
                data: HostData::F32(q),
            };
            Ok(vec![values, float_result(out_ty(1), scales)?])
        }
        OpKind::Dequantize if in_ty(0).dtype == DType::F12E5M6 => {
            let Some(&[1, tile]) = op.attrs.ints("block") else {
                return Err("an f12e5m6 dequantize takes 1 × tile blocks only".into());
            };
            let tile = usize::try_from(tile).map_err(err)?;
            let t = DequantizeOperands::from_slice(ins).map_err(err)?;
            let (q, s) = (floats(t.codes)?, floats(t.scales)?);
            let k = in_ty(0).shape.last() as usize;
            let groups = k.div_ceil(tile.max(1));
            if tile == 0 || s.len() * k != q.len() * groups {
                return Err(format!(
                    "{} scales for {} values in 1 × {tile} tiles",
                    s.len(),
                    q.len()
                ));
            }
            let out = q
                .chunks(k.max(1))
                .zip(s.chunks(groups.max(1)))
                .flat_map(|(row, scales)| {
                    row.iter()
                        .enumerate()
                        .map(move |(c, &v)| v * scales[c / tile])
                })
                .collect();
            float_result(out_ty(0), out).map(|t| vec![t])
        }
        OpKind::Quantize => {
            let block = op.attrs.ints("block").ok_or("missing block")?;
            let fmt = format(out_ty(0).dtype)?;
            let sf = scale_format(op)?;
            let x = floats(ins[0])?;
            let q = match *block {
                [1, tile] => act_quant(x, in_ty(0), tile as usize, fmt, sf)?,
                [b, c] if b == c => {
                    let d = dims(in_ty(0));
                    let b = b as usize;
                    match d[..] {
                        [n, k] => dsc_kernels::weight_quant_128x128(x, n, k, b, fmt, sf),
                        [e, n, k] => dsc_kernels::weight_quant_experts(x, e, n, k, b, fmt, sf),
                        _ => return Err(format!("cannot block-quantize {}", in_ty(0))),
                    }
                    .map_err(err)?
                }
                _ => return Err(format!("unsupported quantization block {block:?}")),
            };
            quantized_results(op, g, q)
        }
        OpKind::Dequantize => {
            let block = op.attrs.ints("block").ok_or("missing block")?;
            let [br, bc] = *block else {
                return Err(format!("bad block {block:?}"));
            };
            let t = DequantizeOperands::from_slice(ins).map_err(err)?;
            let (q, s) = (codes(t.codes)?, floats(t.scales)?);
            let fmt = format(in_ty(0).dtype)?;
            let d = dims(in_ty(0));
            let r = d.len();
            let (rows, cols) = if r >= 2 {
                (d[r - 2], d[r - 1])
            } else {
                (1, d[0])
            };
            let matrices = q.len().checked_div(rows * cols).unwrap_or(0);
            let block = [br, bc].map(|b| usize::try_from(b).unwrap_or(0));
            let q = Fp8Operand {
                codes: q,
                scales: s,
            };
            let out =
                dsc_kernels::quantized::dequantize_blocks(fmt, q, matrices, rows, cols, block)
                    .map_err(err)?;
            float_result(out_ty(0), out).map(|t| vec![t])
        }
        OpKind::Fp8Partials => partials(g, op, ins, options).map(|t| vec![t]),
        OpKind::Promote => promote(g, op, ins).map(|t| vec![t]),
        OpKind::Fp8Gemm => fp8_gemm(g, op, ins, options).map(|t| vec![t]),
        OpKind::RmsNormQuant | OpKind::AddRmsNormQuant | OpKind::SwigluQuant => {
            // Same numbers as the unfused pair: the activation is rounded to the dtype the
            // unfused op would have stored (the input's) before it is quantized. A norm may
            // read a column window of its x (`x_cols`).
            let (x_ty, x) = x_window(g, op, ins[0])?;
            let (rows, d) = {
                let d = x_ty.shape.last() as usize;
                ((x_ty.shape.numel() as usize).checked_div(d).unwrap_or(0), d)
            };
            let high = FloatFormat::of(x_ty.dtype).unwrap_or(FloatFormat::F32);
            let mut y = if op.kind != OpKind::SwigluQuant {
                let eps = op.attrs.float("eps").ok_or("missing eps")?;
                ops::rms_norm(floats(&x)?, floats(ins[1])?, rows, d, eps, high)
            } else {
                ops::swiglu(floats(&x)?, floats(ins[1])?, high)
            }
            .map_err(err)?;
            high.round_slice(&mut y);
            let tile = size(op, keys::ACT_TILE)?;
            let q = act_quant(&y, &x_ty, tile, format(out_ty(0).dtype)?, scale_format(op)?)?;
            quantized_results(op, g, q)
        }
        _ => unreachable!("{} is not an FP8 kind", op.kind),
    }
}

/// The (rows, N, K) of an FP8 GEMM and, when grouped, the expert of each row.
struct Layout {
    rows: usize,
    n: usize,
    k: usize,
    /// For grouped GEMMs, `(expert, x row)` of each output row `t · top_k + slot`.
    grouped: Option<Vec<(usize, usize)>>,
}

fn layout(x: &TensorType, w: &TensorType, idx: Option<&HostTensor>) -> Result<Layout> {
    let k = x.shape.last() as usize;
    let wd = dims(w);
    match idx {
        None => Ok(Layout {
            rows: (x.shape.numel() as usize).checked_div(k).unwrap_or(0),
            n: wd[0],
            k,
            grouped: None,
        }),
        Some(idx) => {
            let (experts, n) = (wd[0], wd[1]);
            let id = dims_of(idx);
            let top_k = id[1];
            let per_slot = x.shape.rank() == 3;
            let rows = ints(idx)?
                .iter()
                .enumerate()
                .map(|(r, &e)| {
                    let e = usize::try_from(e)
                        .ok()
                        .filter(|&e| e < experts)
                        .ok_or_else(|| format!("expert index {e} out of range 0..{experts}"))?;
                    Ok((e, if per_slot { r } else { r / top_k }))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Layout {
                rows: rows.len(),
                n,
                k,
                grouped: Some(rows),
            })
        }
    }
}

fn dims_of(t: &HostTensor) -> &[usize] {
    &t.shape
}

/// `fp8_partials`: FP8 products summed per promotion interval with the accumulator model,
/// one tensor-core MMA (32 products) at a time.
fn partials(g: &Graph, op: &Op, ins: &[&HostTensor], options: &CpuOptions) -> Result<HostTensor> {
    if !options.accumulator.promotes() {
        // Its partial sums are promoted by the `promote` op that follows.
        return Err(err(
            "the unpromoted accumulator model needs the fused fp8_gemm (run the default passes)",
        ));
    }
    let ty = op.fp8_partials_operands().map_err(err)?.map(|v| g.ty(v));
    let t = Fp8PartialsOperands::from_slice(ins).map_err(err)?;
    let (xt, wt) = (ty.x, ty.w);
    let l = layout(xt, wt, t.indices)?;
    let interval = size(op, "interval")?;
    let groups = l.k.div_ceil(interval);
    let (fx, fw) = (format(xt.dtype)?, format(wt.dtype)?);
    let decode = |fmt: Fp8Format, c: &[u8]| {
        let mut out = vec![0.0; c.len()];
        fp8::decode_slice(fmt, c, &mut out);
        out
    };
    let (x, w) = (decode(fx, codes(t.x)?), decode(fw, codes(t.w)?));
    let mut out = vec![0.0f32; l.rows * l.n * groups];
    let mut products = [0.0f32; 32];
    for r in 0..l.rows {
        let (expert, x_row) = l.grouped.as_ref().map_or((0, r), |rows| rows[r]);
        let xr = &x[x_row * l.k..(x_row + 1) * l.k];
        for n in 0..l.n {
            let wr = &w[(expert * l.n + n) * l.k..(expert * l.n + n + 1) * l.k];
            for j in 0..groups {
                let (lo, hi) = (j * interval, ((j + 1) * interval).min(l.k));
                let mut acc = 0.0f32;
                for c in (lo..hi).step_by(32) {
                    let end = (c + 32).min(hi);
                    for (p, i) in products.iter_mut().zip(c..end) {
                        *p = xr[i] * wr[i];
                    }
                    acc = options.accumulator.mma(acc, &products[..end - c]);
                }
                out[(r * l.n + n) * groups + j] = acc;
            }
        }
    }
    float_result(g.ty(op.results[0]), out)
}

/// True when the weight operand is quantized in 1 × block row tiles (a Wgrad).
fn w_row_tiles(op: &Op) -> bool {
    op.attrs.bool(dsc_ir::infer::W_ROW_TILES).unwrap_or(false)
}

/// True when the activation operand is quantized in act_tile × act_tile blocks (an ablation).
fn x_square_blocks(op: &Op) -> bool {
    op.attrs
        .bool(dsc_ir::infer::X_SQUARE_BLOCKS)
        .unwrap_or(false)
}

/// `promote`: each partial sum scaled by its activation and weight scales and added into an
/// FP32 accumulator, in K order — the dequantizing half of the block-scaled GEMM.
fn promote(g: &Graph, op: &Op, ins: &[&HostTensor]) -> Result<HostTensor> {
    let (tile, block, interval) = (
        size(op, keys::ACT_TILE)?,
        size(op, keys::WEIGHT_BLOCK)?,
        size(op, keys::PROMOTE_INTERVAL)?,
    );
    let rows_per_scale = if w_row_tiles(op) { 1 } else { block };
    let x_rows_per_scale = if x_square_blocks(op) { tile } else { 1 };
    let ty = op.promote_operands().map_err(err)?.map(|v| g.ty(v));
    let t = PromoteOperands::from_slice(ins).map_err(err)?;
    let pd = dims(ty.partials);
    let r = pd.len();
    let (n, groups) = (pd[r - 2], pd[r - 1]);
    let rows: usize = pd[..r - 2].iter().product();
    let (p, xs, ws) = (floats(t.partials)?, floats(t.x_scale)?, floats(t.w_scale)?);
    let xs_dims = dims(ty.x_scale);
    let gx = *xs_dims.last().unwrap_or(&1);
    let wsd = dims(ty.w_scale);
    let (wn, wk) = (wsd[wsd.len() - 2], wsd[wsd.len() - 1]);
    let idx = t.indices.map(ints).transpose()?;
    let top_k = t.indices.map_or(1, |t| t.shape[1]);
    // Grouped activation scales are per token ([T, Gt]) or per slot ([T, k, Gt]).
    let per_token_scales = idx.is_some() && xs_dims.len() == 2;
    let mut out = vec![0.0f32; rows * n];
    for row in 0..rows {
        let x_row = if per_token_scales { row / top_k } else { row } / x_rows_per_scale;
        let expert = idx.map_or(0, |i| i[row] as usize);
        for col in 0..n {
            let mut acc = 0.0f32;
            for j in 0..groups {
                let kk = j * interval;
                let s_x = xs[x_row * gx + kk / tile];
                let s_w = ws[(expert * wn + col / rows_per_scale) * wk + kk / block];
                acc += p[(row * n + col) * groups + j] * (s_x * s_w);
            }
            out[row * n + col] = acc;
        }
    }
    float_result(g.ty(op.results[0]), out)
}

/// `fp8_gemm`: the fused block-scaled GEMM; grouped GEMMs run one dense GEMM per expert over
/// the rows routed to it, as DeepGEMM's grouped layout does.
fn fp8_gemm(g: &Graph, op: &Op, ins: &[&HostTensor], options: &CpuOptions) -> Result<HostTensor> {
    let ty = op.fp8_gemm_operands().map_err(err)?.map(|v| g.ty(v));
    let t = Fp8GemmOperands::from_slice(ins).map_err(err)?;
    let (xt, wt) = (ty.x, ty.w);
    let l = layout(xt, wt, t.indices)?;
    let cfg = BlockGemmConfig {
        fmt: format(xt.dtype)?,
        tile: size(op, keys::ACT_TILE)?,
        block: size(op, keys::WEIGHT_BLOCK)?,
        w_row_tiles: w_row_tiles(op),
        x_square_blocks: x_square_blocks(op),
        promote_interval: size(op, keys::PROMOTE_INTERVAL)?,
        accumulator: options.accumulator,
    };
    let (xq, xs, wq, ws) = (
        codes(t.x)?,
        floats(t.x_scale)?,
        codes(t.w)?,
        floats(t.w_scale)?,
    );
    let gx = l.k.div_ceil(cfg.tile);
    let Some(rows) = &l.grouped else {
        let x = Fp8Operand {
            codes: xq,
            scales: xs,
        };
        let w = Fp8Operand {
            codes: wq,
            scales: ws,
        };
        let dims = GemmDims {
            m: l.rows,
            n: l.n,
            k: l.k,
        };
        let y = dsc_kernels::fp8_block_gemm(x, w, dims, &cfg).map_err(err)?;
        return float_result(g.ty(op.results[0]), y);
    };
    let experts = dims(wt)[0];
    let w_scales_per_expert = l.n.div_ceil(cfg.block_rows()) * l.k.div_ceil(cfg.block);
    let mut out = vec![0.0f32; l.rows * l.n];
    for e in 0..experts {
        let mine: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].0 == e).collect();
        if mine.is_empty() {
            continue;
        }
        let mut x_codes = Vec::with_capacity(mine.len() * l.k);
        let mut x_scales = Vec::with_capacity(mine.len() * gx);
        for &r in &mine {
            let x_row = rows[r].1;
            x_codes.extend_from_slice(&xq[x_row * l.k..(x_row + 1) * l.k]);
            x_scales.extend_from_slice(&xs[x_row * gx..(x_row + 1) * gx]);
        }
        let x = Fp8Operand {
            codes: &x_codes,
            scales: &x_scales,
        };
        let w = Fp8Operand {
            codes: &wq[e * l.n * l.k..(e + 1) * l.n * l.k],
            scales: &ws[e * w_scales_per_expert..(e + 1) * w_scales_per_expert],
        };
        let dims = GemmDims {
            m: mine.len(),
            n: l.n,
            k: l.k,
        };
        let y = dsc_kernels::fp8_block_gemm(x, w, dims, &cfg).map_err(err)?;
        for (i, &r) in mine.iter().enumerate() {
            out[r * l.n..(r + 1) * l.n].copy_from_slice(&y[i * l.n..(i + 1) * l.n]);
        }
    }
    float_result(g.ty(op.results[0]), out)
}
