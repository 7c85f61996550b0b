//! Kernel selection: the [`GpuKernel`] that computes one op of the final graph, specialized to
//! the op's static shapes and attributes, and the values bound to its parameters in order.
//!
//! A `reshape` of a contiguous tensor selects nothing: its result aliases its operand's bytes.

use dsc_ir::{DType, Graph, Op, OpKind, ScaleFormat, ValueId};
use dsc_kernels::ops::grad::{GroupedWgradFp8, RouteWeights};
use dsc_kernels::ops::rope::RopeParams;
use dsc_kernels::ops::{
    AttentionDims, CombineDims, EmbeddingDims, GroupedDims, GroupedInput, LinearDims, ScoreDims,
    TopkDims, TopkParams, ValueDims, rope_pe_dims,
};

use crate::error::CodegenError;
use crate::kernels::GpuKernel;
use crate::kernels::adamw::AdamW;
use crate::kernels::attention::{AttnScores, AttnValues, HeadOperand};
use crate::kernels::balance_loss::BalanceLoss;
use crate::kernels::block_quant::BlockQuant;
use crate::kernels::cross_entropy::CrossEntropy;
use crate::kernels::data_movement::{Concat, Transpose};
use crate::kernels::dequantize::Dequantize;
use crate::kernels::elementwise::{Elementwise, ElementwiseOp, SliceCopy};
use crate::kernels::elementwise_grad::{ElementwiseGrad, GradOp};
use crate::kernels::embedding::Embedding;
use crate::kernels::embedding_grad::EmbeddingGrad;
use crate::kernels::expert_bias_update::ExpertBiasUpdate;
use crate::kernels::flash_attention::{AttentionForm, FlashAttention};
use crate::kernels::fp8_gemm::{Fp8Gemm, GemmForm, Grouped};
use crate::kernels::global_norm::{GlobalNorm, NormInput};
use crate::kernels::grouped_linear_wgrad::GroupedLinearWgrad;
use crate::kernels::linear::Linear;
use crate::kernels::matmul::Matmul;
use crate::kernels::moe::{MoeCombine, MoeTopk};
use crate::kernels::moe_combine_grad::MoeCombineGrad;
use crate::kernels::moe_topk_grad::MoeTopkGrad;
use crate::kernels::norm::RmsNorm;
use crate::kernels::pad::Pad;
use crate::kernels::quantize::{ActQuant, QuantSource, QuantSpec};
use crate::kernels::reduce_sum::ReduceSum;
use crate::kernels::rms_norm_grad::RmsNormGrad;
use crate::kernels::rope::Rope;
use crate::kernels::rope_grad::RopeGrad;
use crate::kernels::row_window::RowWindow;
use crate::kernels::softmax::Softmax;
use crate::kernels::softmax_grad::SoftmaxGrad;

/// What an op becomes on the GPU.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// A launch of `kernel` with `args` bound to its parameters, in order.
    Launch {
        /// The kernel (boxed: specs are large beside `Alias`).
        kernel: Box<GpuKernel>,
        /// Operands and results, in the kernel's parameter order.
        args: Vec<ValueId>,
    },
    /// No launch: the result is the operand's bytes (a reshape).
    Alias,
}

/// Selects the kernel of `op`.
pub fn select(g: &Graph, op: &Op) -> Result<Selection, CodegenError> {
    let name = g.op_name(op).to_string();
    let fail = |message: String| CodegenError::Selection {
        op: name.clone(),
        kind: op.kind.name(),
        message,
    };
    let ty = |v: ValueId| g.ty(v);
    // The emulated E5M6 (a training step's cached o_proj input) is written by a 1 × tile
    // `quantize` and read by a `dequantize`, and by nothing else.
    let e5m6_kernel = match op.kind {
        OpKind::Quantize => op
            .attrs
            .ints("block")
            .is_some_and(|b| b.first() == Some(&1)),
        OpKind::Dequantize => true,
        _ => false,
    };
    if let Some(&v) = op
        .operands
        .iter()
        .chain(&op.results)
        .find(|&&v| ty(v).dtype == DType::F12E5M6)
        && !e5m6_kernel
    {
        return Err(fail(format!(
            "`{}` is {}: the emulated E5M6 format has GPU kernels only to quantize in 1 × tile \
             groups and to dequantize (DESIGN.md §8)",
            g.name(v),
            ty(v)
        )));
    }
    let dims = |v: ValueId| -> Vec<u64> { ty(v).shape.dims().to_vec() };
    let numel = |v: ValueId| ty(v).shape.numel();
    let last = |v: ValueId| ty(v).shape.last();
    let operand = |i: usize| op.operands[i];
    let result = |i: usize| op.results[i];
    let all_args = || op.operands.iter().chain(&op.results).copied().collect();
    let int_attr = |key: &str| -> Result<u64, CodegenError> {
        op.attrs
            .int(key)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| fail(format!("missing or negative attribute `{key}`")))
    };
    let scale_format = || -> Result<ScaleFormat, CodegenError> {
        match op.attrs.str("scale_format") {
            None => Ok(ScaleFormat::F32),
            Some(s) => ScaleFormat::parse(s).ok_or_else(|| fail(format!("scale_format `{s}`"))),
        }
    };
    let elementwise = |kind: ElementwiseOp| -> Result<Selection, CodegenError> {
        let out = result(0);
        // `add`'s rhs may be the result's trailing dims (a bias), repeated over the rows.
        let out_dims = dims(out);
        let rhs_len = (kind == ElementwiseOp::Add && numel(operand(1)) != numel(out))
            .then(|| dims(operand(1)))
            .filter(|b| out_dims.ends_with(b))
            .map(|_| numel(operand(1)));
        for (i, &v) in op.operands.iter().enumerate() {
            if numel(v) != numel(out) && !(i == 1 && rhs_len.is_some()) {
                return Err(fail(format!(
                    "operand shape {} differs from the result's {} (broadcasting has no GPU kernel)",
                    ty(v).shape,
                    ty(out).shape
                )));
            }
        }
        Ok(Selection::Launch {
            kernel: Box::new(GpuKernel::Elementwise(Elementwise {
                op: kind,
                len: numel(out),
                inputs: op.operands.iter().map(|&v| ty(v).dtype).collect(),
                output: ty(out).dtype,
                rhs_len,
            })),
            args: all_args(),
        })
    };
    let launch = |kernel: GpuKernel| Selection::Launch {
        kernel: Box::new(kernel),
        args: all_args(),
    };
    let rows_of = |v: ValueId| numel(v).checked_div(last(v)).unwrap_or(0);
    let named = |e: dsc_ir::OperandError| fail(e.to_string());
    // The sizes the kernels' specs read from operand shapes (`dsc_kernels::ops`).
    let sizes = |e: dsc_kernels::ops::OpError| fail(e.to_string());

    let kernel = match op.kind {
        OpKind::Reshape => return Ok(Selection::Alias),
        OpKind::Add => return elementwise(ElementwiseOp::Add),
        OpKind::Mul => return elementwise(ElementwiseOp::Mul),
        OpKind::Silu => return elementwise(ElementwiseOp::Silu),
        OpKind::Swiglu => return elementwise(ElementwiseOp::Swiglu),
        OpKind::Cast => {
            let (from, to) = (ty(operand(0)).dtype, ty(result(0)).dtype);
            if !is_plain_float(from) || !is_plain_float(to) {
                return Err(fail(format!(
                    "cast {from} -> {to} has no GPU kernel (f32 and bf16 only)"
                )));
            }
            return elementwise(ElementwiseOp::Cast);
        }
        OpKind::Slice => {
            let x = dims(operand(0));
            let axis = op
                .attrs
                .int("axis")
                .and_then(|a| ty(operand(0)).shape.axis(a))
                .ok_or_else(|| fail("bad `axis`".into()))?;
            let start = int_attr("start")?;
            GpuKernel::Slice(SliceCopy {
                dtype: ty(operand(0)).dtype,
                outer: x[..axis].iter().product(),
                axis_in: x[axis],
                axis_out: dims(result(0))[axis],
                start,
                inner: x[axis + 1..].iter().product(),
            })
        }
        OpKind::Transpose => {
            let perm = op
                .attrs
                .ints("perm")
                .ok_or_else(|| fail("missing `perm`".into()))?
                .iter()
                .map(|&p| usize::try_from(p).map_err(|_| fail(format!("bad perm entry {p}"))))
                .collect::<Result<Vec<_>, _>>()?;
            GpuKernel::Transpose(Transpose {
                dtype: ty(operand(0)).dtype,
                dims: dims(operand(0)),
                perm,
            })
        }
        OpKind::Concat => {
            let out = ty(result(0));
            let axis = op
                .attrs
                .int("axis")
                .and_then(|a| out.shape.axis(a))
                .ok_or_else(|| fail("bad `axis`".into()))?;
            let d = out.shape.dims();
            GpuKernel::Concat(Concat {
                dtype: out.dtype,
                outer: d[..axis].iter().product(),
                lens: op.operands.iter().map(|&v| dims(v)[axis]).collect(),
                inner: d[axis + 1..].iter().product(),
            })
        }
        OpKind::Matmul => {
            let x = dims(operand(0));
            let r = x.len();
            let transpose_b = op.attrs.bool("transpose_b").unwrap_or(false);
            let out = dims(result(0));
            GpuKernel::Matmul(Matmul {
                batch: x[..r - 2].iter().product(),
                m: x[r - 2],
                k: x[r - 1],
                n: out[r - 1],
                transpose_b,
                x: ty(operand(0)).dtype,
                y: ty(operand(1)).dtype,
                output: ty(result(0)).dtype,
            })
        }
        OpKind::Embedding => {
            let o = op.embedding_operands().map_err(named)?;
            let d =
                EmbeddingDims::from_shapes(&ty(o.ids).shape, &ty(o.table).shape).map_err(sizes)?;
            GpuKernel::Embedding(Embedding {
                tokens: d.tokens as u64,
                vocab: d.vocab as u64,
                dim: d.dim as u64,
                table: ty(o.table).dtype,
                output: ty(result(0)).dtype,
            })
        }
        OpKind::RmsNorm | OpKind::RmsNormQuant | OpKind::AddRmsNorm | OpKind::AddRmsNormQuant => {
            let eps = op
                .attrs
                .float("eps")
                .ok_or_else(|| fail("missing `eps`".into()))?;
            let residual = matches!(op.kind, OpKind::AddRmsNorm | OpKind::AddRmsNormQuant);
            let weight = if residual { operand(2) } else { operand(1) };
            let quant = if matches!(op.kind, OpKind::RmsNormQuant | OpKind::AddRmsNormQuant) {
                Some(QuantSpec {
                    tile: int_attr("act_tile")?,
                    format: ty(result(0)).dtype,
                    scale_format: scale_format()?,
                })
            } else {
                None
            };
            // The norm's rows are its results' (x's, or a column window of x's: `x_cols`).
            GpuKernel::RmsNorm(RmsNorm {
                rows: rows_of(operand(0)),
                dim: last(result(0)),
                eps: eps as f32,
                input: ty(operand(0)).dtype,
                weight: ty(weight).dtype,
                output: ty(result(0)).dtype,
                quant,
                residual,
                x_row: x_row(g, op),
            })
        }
        OpKind::Quantize
            if let Some(&[b, c]) = op.attrs.ints("block")
                && b == c
                && b > 1 =>
        {
            let (matrices, rows, cols) = matrices_of(&dims(operand(0)))
                .ok_or_else(|| fail("square-block quantization needs a matrix".into()))?;
            GpuKernel::BlockQuant(BlockQuant {
                matrices,
                rows,
                cols,
                input: ty(operand(0)).dtype,
                quant: QuantSpec {
                    tile: b as u64,
                    format: ty(result(0)).dtype,
                    scale_format: scale_format()?,
                },
            })
        }
        OpKind::Dequantize => {
            let block = match op.attrs.ints("block") {
                Some(&[br, bc]) if br > 0 && bc > 0 => [br as u64, bc as u64],
                other => return Err(fail(format!("bad `block` {other:?}"))),
            };
            let (matrices, rows, cols) = matrices_of(&dims(operand(0)))
                .ok_or_else(|| fail("dequantization needs a tensor".into()))?;
            GpuKernel::Dequantize(Dequantize {
                matrices,
                rows,
                cols,
                block,
                format: ty(operand(0)).dtype,
                output: ty(result(0)).dtype,
            })
        }
        OpKind::Quantize | OpKind::SwigluQuant => {
            let tile = if op.kind == OpKind::Quantize {
                match op.attrs.ints("block") {
                    Some([1, tile]) if *tile > 0 => *tile as u64,
                    other => {
                        return Err(fail(format!(
                            "only 1 × tile and square quantization blocks have a GPU kernel, \
                             got {other:?}"
                        )));
                    }
                }
            } else {
                int_attr("act_tile")?
            };
            let input = ty(operand(0)).dtype;
            let source = if op.kind == OpKind::Quantize {
                QuantSource::Plain(input)
            } else {
                QuantSource::Swiglu {
                    input,
                    activation: input,
                }
            };
            GpuKernel::ActQuant(ActQuant {
                rows: rows_of(operand(0)),
                dim: last(operand(0)),
                source,
                quant: QuantSpec {
                    tile,
                    format: ty(result(0)).dtype,
                    scale_format: scale_format()?,
                },
            })
        }
        OpKind::Rope => {
            // The rotated x is the result's shape (x's, or a column window of x's: `x_cols`).
            let x =
                four(&dims(result(0))).ok_or_else(|| fail("rope needs a rank-4 input".into()))?;
            let params = RopeParams::from_attrs(&op.attrs).map_err(|e| fail(e.to_string()))?;
            if ty(operand(0)).dtype != ty(result(0)).dtype {
                return Err(fail("rope must keep its dtype".into()));
            }
            GpuKernel::Rope(Rope {
                x_row: x_row(g, op),
                ..Rope::new(x, &params, ty(operand(0)).dtype)
            })
        }
        OpKind::Softmax => {
            let x = ty(operand(0));
            let axis = op.attrs.int("axis").and_then(|a| x.shape.axis(a));
            if axis != Some(x.shape.rank() - 1) {
                return Err(fail(
                    "only a softmax over the last axis has a GPU kernel".into(),
                ));
            }
            GpuKernel::Softmax(Softmax {
                rows: rows_of(operand(0)),
                len: last(operand(0)),
                input: x.dtype,
                output: ty(result(0)).dtype,
                causal_q_len: None,
            })
        }
        OpKind::AttnScores | OpKind::Attention | OpKind::AttentionQuant => {
            // The score side: q, k and the optional q_pe, k_pe (after v in `attention`).
            let s = op.score_operands().map_err(named)?;
            let rope = match s.pe() {
                Some((q_pe, k_pe)) => {
                    let (kv_heads, dim) = rope_pe_dims(&ty(k_pe).shape).map_err(sizes)?;
                    Some(HeadOperand {
                        kv_heads: kv_heads as u64,
                        dim: dim as u64,
                        dtype: ty(q_pe).dtype,
                    })
                }
                None => None,
            };
            if rope.is_some_and(|r| s.k_pe.is_some_and(|k_pe| r.dtype != ty(k_pe).dtype))
                || ty(s.q).dtype != ty(s.k).dtype
            {
                return Err(fail("q and k must share a dtype".into()));
            }
            let qk = ty(s.q).dtype;
            // A fused attention may read a column window of its q, k and v (`q_cols`, …).
            use dsc_ir::infer::{K_COLS, Q_COLS, V_COLS, attention_window_type};
            let window_of = |key: &str, v: ValueId| -> Result<_, CodegenError> {
                let read = attention_window_type(&op.attrs, key, ty(v)).map_err(fail)?;
                let row = op
                    .attrs
                    .ints(key)
                    .and_then(|c| c.first())
                    .map(|&start| RowWindow {
                        stride: last(v),
                        offset: start as u64,
                    });
                Ok((read, row))
            };
            let (q_ty, q_row) = window_of(Q_COLS, s.q)?;
            let (k_ty, k_row) = window_of(K_COLS, s.k)?;
            let scale = op
                .attrs
                .float("scale")
                .ok_or_else(|| fail("missing `scale`".into()))? as f32;
            let causal = op.attrs.bool("causal").unwrap_or(false);
            if op.kind == OpKind::AttnScores {
                GpuKernel::AttnScores(AttnScores {
                    dims: ScoreDims::from_shapes(&ty(s.q).shape, &ty(s.k).shape).map_err(sizes)?,
                    qk,
                    rope,
                    scale,
                    causal,
                })
            } else {
                let v = op.fused_attention_operands().map_err(named)?.v;
                let (v_ty, v_row) = window_of(V_COLS, v)?;
                // `attention_quant` stores its outputs as FP8 codes of v's dtype's values.
                let (output, quant) = if op.kind == OpKind::AttentionQuant {
                    let quant = QuantSpec {
                        tile: int_attr("act_tile")?,
                        format: ty(result(0)).dtype,
                        scale_format: scale_format()?,
                    };
                    (ty(v).dtype, Some(quant))
                } else {
                    (ty(result(0)).dtype, None)
                };
                let fused = FlashAttention {
                    dims: AttentionDims::from_shapes(&q_ty.shape, &k_ty.shape, &v_ty.shape)
                        .map_err(sizes)?,
                    q_row,
                    k_row,
                    v_row,
                    qk,
                    rope,
                    values: ty(v).dtype,
                    output,
                    quant,
                    scale,
                    causal,
                    form: AttentionForm::MmaSync,
                };
                fused.supported().map_err(fail)?;
                GpuKernel::FlashAttention(fused)
            }
        }
        OpKind::AttnValues => {
            let o = op.attn_values_operands().map_err(named)?;
            GpuKernel::AttnValues(AttnValues {
                dims: ValueDims::from_shapes(&ty(o.p).shape, &ty(o.v).shape).map_err(sizes)?,
                probs: ty(o.p).dtype,
                values: ty(o.v).dtype,
                output: ty(result(0)).dtype,
                causal: false,
            })
        }
        OpKind::Linear => {
            let o = op.linear_operands().map_err(named)?;
            let d = LinearDims::from_shapes(&ty(o.x).shape, &ty(o.w).shape).map_err(sizes)?;
            GpuKernel::Linear(Linear {
                m: d.m as u64,
                n: d.n as u64,
                k: d.k as u64,
                x: ty(o.x).dtype,
                w: ty(o.w).dtype,
                bias: o.bias.map(|b| ty(b).dtype),
                output: ty(result(0)).dtype,
                grouped: None,
            })
        }
        OpKind::GroupedLinear => {
            let o = op.grouped_linear_operands().map_err(named)?;
            let gd =
                GroupedDims::from_shapes(&ty(o.w).shape, &ty(o.indices).shape).map_err(sizes)?;
            GpuKernel::Linear(Linear {
                m: gd.rows() as u64,
                n: gd.out_features as u64,
                k: gd.in_features as u64,
                x: ty(o.x).dtype,
                w: ty(o.w).dtype,
                bias: None,
                output: ty(result(0)).dtype,
                grouped: Some(grouped(gd, &ty(o.x).shape)),
            })
        }
        OpKind::Fp8Gemm => {
            let o = op.fp8_gemm_operands().map_err(named)?;
            let x = ty(o.x);
            let w = dims(o.w);
            let k = x.shape.last();
            let grouped = match o.indices {
                Some(indices) => {
                    let gd = GroupedDims::from_shapes(&ty(o.w).shape, &ty(indices).shape)
                        .map_err(sizes)?;
                    Some(grouped(gd, &x.shape))
                }
                None => None,
            };
            let n = w[w.len() - 2];
            let promote_interval = int_attr("promote_interval")?;
            // Tensor cores whenever the interval is whole MMAs (DESIGN.md §3 requires it).
            let form = if promote_interval % 32 == 0 {
                GemmForm::MmaSync
            } else {
                GemmForm::Simt
            };
            GpuKernel::Fp8Gemm(Fp8Gemm {
                rows: numel(result(0)) / n.max(1),
                n,
                k,
                act_tile: int_attr("act_tile")?,
                weight_block: int_attr("weight_block")?,
                promote_interval,
                format: x.dtype,
                output: ty(result(0)).dtype,
                grouped,
                form,
                w_row_tiles: op.attrs.bool(dsc_ir::infer::W_ROW_TILES) == Some(true),
                x_square_blocks: op.attrs.bool(dsc_ir::infer::X_SQUARE_BLOCKS) == Some(true),
            })
        }
        OpKind::MoeTopk => {
            let o = op.moe_topk_operands().map_err(named)?;
            GpuKernel::MoeTopk(MoeTopk {
                dims: TopkDims::from_shapes(&ty(o.logits).shape).map_err(sizes)?,
                params: TopkParams::from_attrs(&op.attrs).map_err(sizes)?,
                bias: o.bias.is_some(),
                logits: ty(o.logits).dtype,
                weights: ty(result(0)).dtype,
            })
        }
        OpKind::MoeCombine => {
            let o = op.moe_combine_operands().map_err(named)?;
            let y = CombineDims::from_shapes(&ty(o.y).shape).map_err(sizes)?;
            GpuKernel::MoeCombine(MoeCombine {
                tokens: y.tokens as u64,
                top_k: y.top_k as u64,
                dim: y.dim as u64,
                routed: ty(o.y).dtype,
                weights: ty(o.weights).dtype,
                shared: o.shared.map(|s| ty(s).dtype),
                output: ty(result(0)).dtype,
            })
        }
        OpKind::Scale | OpKind::SiluGrad | OpKind::SwigluGrad => {
            let floats = |values: &[ValueId]| -> Result<Vec<DType>, CodegenError> {
                values
                    .iter()
                    .map(|&v| float_operand(ty(v).dtype).map_err(&fail))
                    .collect()
            };
            let inputs = floats(&op.operands)?;
            let outputs = floats(&op.results)?;
            let len = numel(result(0));
            if op.operands.iter().any(|&v| numel(v) != len) {
                return Err(fail("operands must have the result's shape".into()));
            }
            let op = match op.kind {
                OpKind::Scale => GradOp::Scale {
                    factor: op
                        .attrs
                        .float("factor")
                        .ok_or_else(|| fail("missing `factor`".into()))?
                        as f32,
                },
                OpKind::SiluGrad => GradOp::SiluGrad,
                _ => GradOp::SwigluGrad,
            };
            GpuKernel::ElementwiseGrad(ElementwiseGrad {
                op,
                len,
                inputs,
                outputs,
            })
        }
        OpKind::ReduceSum => {
            let x = dims(operand(0));
            let axis = op
                .attrs
                .int("axis")
                .and_then(|a| ty(operand(0)).shape.axis(a))
                .ok_or_else(|| fail("bad `axis`".into()))?;
            GpuKernel::ReduceSum(ReduceSum {
                outer: x[..axis].iter().product(),
                len: x[axis],
                inner: x[axis + 1..].iter().product(),
                input: float_operand(ty(operand(0)).dtype).map_err(&fail)?,
                output: float_operand(ty(result(0)).dtype).map_err(&fail)?,
            })
        }
        OpKind::GlobalNorm => GpuKernel::GlobalNorm(GlobalNorm {
            inputs: op
                .operands
                .iter()
                .map(|&v| {
                    Ok(NormInput {
                        dtype: float_operand(ty(v).dtype).map_err(&fail)?,
                        len: numel(v),
                    })
                })
                .collect::<Result<_, CodegenError>>()?,
        }),
        OpKind::AdamW => {
            // The CPU backend takes the attributes as f32.
            let attr = |key: &str| -> Result<f32, CodegenError> {
                op.attrs
                    .float(key)
                    .map(|v| v as f32)
                    .ok_or_else(|| fail(format!("missing `{key}`")))
            };
            let o = op.adamw_operands().map_err(named)?;
            let dtype = |v: ValueId| float_operand(ty(v).dtype).map_err(&fail);
            GpuKernel::AdamW(AdamW {
                len: numel(o.param),
                param: dtype(o.param)?,
                grad: dtype(o.grad)?,
                m: dtype(o.m)?,
                v: dtype(o.v)?,
                beta1: attr("beta1")?,
                beta2: attr("beta2")?,
                eps: attr("eps")?,
                weight_decay: attr("weight_decay")?,
                max_grad_norm: attr("max_grad_norm")?,
            })
        }
        OpKind::CrossEntropy | OpKind::CrossEntropyGrad => {
            if ty(operand(1)).dtype != DType::I32 {
                return Err(fail(format!(
                    "labels must be i32 on the GPU, got {}",
                    ty(operand(1)).dtype
                )));
            }
            if numel(operand(0)) == 0 {
                return Err(fail("cross-entropy over no logits".into()));
            }
            GpuKernel::CrossEntropy(CrossEntropy {
                rows: rows_of(operand(0)),
                vocab: last(operand(0)),
                logits: float_operand(ty(operand(0)).dtype).map_err(&fail)?,
                grad: op.kind == OpKind::CrossEntropyGrad,
            })
        }
        OpKind::ExpertBiasUpdate => {
            let o = op.expert_bias_update_operands().map_err(named)?;
            if ty(o.indices).dtype != DType::I32 {
                return Err(fail(format!(
                    "indices must be i32 on the GPU, got {}",
                    ty(o.indices).dtype
                )));
            }
            let kernel = ExpertBiasUpdate {
                experts: numel(o.bias),
                routed: numel(o.indices),
                bias: float_operand(ty(o.bias).dtype).map_err(&fail)?,
                // The CPU backend takes the attribute as f32.
                speed: op
                    .attrs
                    .float("speed")
                    .ok_or_else(|| fail("missing `speed`".into()))? as f32,
            };
            kernel.supported().map_err(&fail)?;
            GpuKernel::ExpertBiasUpdate(kernel)
        }
        OpKind::RmsNormGrad => {
            let eps = op
                .attrs
                .float("eps")
                .ok_or_else(|| fail("missing `eps`".into()))?;
            // As the reference: a non-positive eps divides by zero on a zero row.
            if eps.is_nan() || eps <= 0.0 {
                return Err(fail(format!("eps must be positive, got {eps}")));
            }
            let o = op.rms_norm_grad_operands().map_err(named)?;
            let dtype = |v: ValueId| float_operand(ty(v).dtype).map_err(&fail);
            let width = last(o.x);
            if numel(o.dy) != numel(o.x) || numel(o.w) != width || numel(result(1)) != width {
                return Err(fail(
                    "x and dy must share a shape, the weight and its gradient be [D]".into(),
                ));
            }
            GpuKernel::RmsNormGrad(RmsNormGrad {
                rows: rows_of(o.x),
                dim: width,
                // The CPU backend adds eps as an f32, as torch does.
                eps: eps as f32,
                input: dtype(o.x)?,
                weight: dtype(o.w)?,
                grad: dtype(o.dy)?,
                output: dtype(result(0))?,
                weight_grad: dtype(result(1))?,
            })
        }
        OpKind::SoftmaxGrad => {
            let y = dims(operand(0));
            let axis = op
                .attrs
                .int("axis")
                .and_then(|a| ty(operand(0)).shape.axis(a))
                .ok_or_else(|| fail("bad `axis`".into()))?;
            if numel(operand(1)) != numel(operand(0)) || numel(result(0)) != numel(operand(0)) {
                return Err(fail("y, dy and dx must share a shape".into()));
            }
            GpuKernel::SoftmaxGrad(SoftmaxGrad {
                outer: y[..axis].iter().product(),
                len: y[axis],
                inner: y[axis + 1..].iter().product(),
                probs: float_operand(ty(operand(0)).dtype).map_err(&fail)?,
                grad: float_operand(ty(operand(1)).dtype).map_err(&fail)?,
                output: float_operand(ty(result(0)).dtype).map_err(&fail)?,
            })
        }
        OpKind::Pad => {
            let x = dims(operand(0));
            let axis = op
                .attrs
                .int("axis")
                .and_then(|a| ty(operand(0)).shape.axis(a))
                .ok_or_else(|| fail("bad `axis`".into()))?;
            let (before, after) = (int_attr("before")?, int_attr("after")?);
            let len_out = x[axis]
                .checked_add(before)
                .and_then(|l| l.checked_add(after));
            if len_out != dims(result(0)).get(axis).copied()
                || ty(result(0)).dtype != ty(operand(0)).dtype
            {
                return Err(fail(
                    "the result must be the operand padded along `axis`".into(),
                ));
            }
            GpuKernel::Pad(Pad {
                dtype: ty(operand(0)).dtype,
                outer: x[..axis].iter().product(),
                len: x[axis],
                before,
                after,
                inner: x[axis + 1..].iter().product(),
            })
        }
        OpKind::RopeGrad => {
            let dy = four(&dims(operand(0)))
                .ok_or_else(|| fail("rope_grad needs a rank-4 input".into()))?;
            let params = RopeParams::from_attrs(&op.attrs).map_err(|e| fail(e.to_string()))?;
            // As the reference: an odd head dim has no pairs to rotate back.
            if dy[3] % 2 != 0 {
                return Err(fail(format!(
                    "rope_grad needs an even head_dim, got {}",
                    dy[3]
                )));
            }
            let dtype = float_operand(ty(operand(0)).dtype).map_err(&fail)?;
            if ty(result(0)).dtype != dtype || numel(result(0)) != numel(operand(0)) {
                return Err(fail("rope_grad must keep its operand's type".into()));
            }
            GpuKernel::RopeGrad(RopeGrad {
                rope: Rope::new(dy, &params, dtype),
            })
        }
        OpKind::EmbeddingGrad => {
            if ty(operand(0)).dtype != DType::I32 {
                return Err(fail(format!(
                    "ids must be i32 on the GPU, got {}",
                    ty(operand(0)).dtype
                )));
            }
            let (tokens, width) = (numel(operand(0)), last(operand(1)));
            let out = dims(result(0));
            if ty(result(0)).dtype != DType::F32
                || out.len() != 2
                || out[1] != width
                || Some(numel(operand(1))) != tokens.checked_mul(width)
            {
                return Err(fail(
                    "dy must be one row per id and the result f32 [vocab, D]".into(),
                ));
            }
            GpuKernel::EmbeddingGrad(EmbeddingGrad {
                tokens,
                vocab: out[0],
                dim: width,
                grad: float_operand(ty(operand(1)).dtype).map_err(&fail)?,
            })
        }
        OpKind::GroupedLinearWgrad => {
            let o = op.grouped_linear_wgrad_operands().map_err(named)?;
            if ty(o.indices).dtype != DType::I32 || ty(result(0)).dtype != DType::F32 {
                return Err(fail(
                    "indices must be i32 and the gradient f32 on the GPU".into(),
                ));
            }
            // The CPU backend's sizes: the gradient shaped as the experts' weights.
            let d = GroupedDims::from_shapes(&ty(result(0)).shape, &ty(o.indices).shape)
                .map_err(sizes)?;
            let x_per_slot = GroupedInput::of(&ty(o.x).shape) == GroupedInput::PerSlot;
            let x_rows = if x_per_slot { d.rows() } else { d.tokens };
            if numel(o.dy) != (d.rows() * d.out_features) as u64
                || numel(o.x) != (x_rows * d.in_features) as u64
            {
                return Err(fail(
                    "dy must be [T, k, N] and x [T, K] or [T, k, K] for the gradient".into(),
                ));
            }
            let kernel = GroupedLinearWgrad {
                tokens: d.tokens as u64,
                top_k: d.top_k as u64,
                experts: d.experts as u64,
                out_features: d.out_features as u64,
                in_features: d.in_features as u64,
                x_per_slot,
                grad: float_operand(ty(o.dy).dtype).map_err(&fail)?,
                input: float_operand(ty(o.x).dtype).map_err(&fail)?,
                fp8: GroupedWgradFp8::from_attrs(
                    op.precision.map_or(DType::F32, |p| p.compute),
                    &op.attrs,
                )
                .map_err(sizes)?,
            };
            kernel.supported().map_err(&fail)?;
            GpuKernel::GroupedLinearWgrad(kernel)
        }
        OpKind::MoeCombineGrad => {
            let o = op.moe_combine_grad_operands().map_err(named)?;
            let d = CombineDims::from_shapes(&ty(o.y).shape).map_err(sizes)?;
            let (rows, dim) = ((d.tokens * d.top_k) as u64, d.dim as u64);
            if numel(o.weights) != rows
                || numel(o.dout) != (d.tokens * d.dim) as u64
                || numel(result(0)) != rows * dim
                || numel(result(1)) != rows
            {
                return Err(fail(
                    "y and dy must be [T, k, D], weights and dweights [T, k], dout [T, D]".into(),
                ));
            }
            let dtype = |v: ValueId| float_operand(ty(v).dtype).map_err(&fail);
            GpuKernel::MoeCombineGrad(MoeCombineGrad {
                tokens: d.tokens as u64,
                top_k: d.top_k as u64,
                dim,
                routed: dtype(o.y)?,
                weights: dtype(o.weights)?,
                grad: dtype(o.dout)?,
                output: dtype(result(0))?,
                weights_grad: dtype(result(1))?,
            })
        }
        OpKind::BalanceLoss | OpKind::BalanceLossGrad => {
            let (logits, indices) = (operand(0), operand(1));
            if ty(indices).dtype != DType::I32 {
                return Err(fail(format!(
                    "indices must be i32 on the GPU, got {}",
                    ty(indices).dtype
                )));
            }
            let d = TopkDims::from_shapes(&ty(logits).shape).map_err(sizes)?;
            let kernel = BalanceLoss {
                tokens: d.tokens as u64,
                experts: d.experts as u64,
                top_k: last(indices),
                sequences: int_attr("sequences")?,
                // The reference multiplies by the attribute rounded to f32.
                alpha: op
                    .attrs
                    .float("alpha")
                    .ok_or_else(|| fail("missing `alpha`".into()))? as f32,
                score_func: dsc_kernels::ops::ScoreFunc::from_attrs(&op.attrs).map_err(sizes)?,
                logits: float_operand(ty(logits).dtype).map_err(&fail)?,
                grad: op.kind == OpKind::BalanceLossGrad,
            };
            kernel.supported().map_err(&fail)?;
            GpuKernel::BalanceLoss(kernel)
        }
        OpKind::MoeTopkGrad => {
            let o = op.moe_topk_grad_operands().map_err(named)?;
            if ty(o.indices).dtype != DType::I32 {
                return Err(fail(format!(
                    "indices must be i32 on the GPU, got {}",
                    ty(o.indices).dtype
                )));
            }
            let d = TopkDims::from_shapes(&ty(o.logits).shape).map_err(sizes)?;
            let route = RouteWeights::from_attrs(&op.attrs).map_err(sizes)?;
            let top_k = last(o.indices);
            if numel(o.indices) != d.tokens as u64 * top_k
                || numel(o.dweights) != numel(o.indices)
                || numel(result(0)) != numel(o.logits)
            {
                return Err(fail(
                    "indices and dweights must be [T, k], the gradient the logits' shape".into(),
                ));
            }
            let dtype = |v: ValueId| float_operand(ty(v).dtype).map_err(&fail);
            let kernel = MoeTopkGrad {
                tokens: d.tokens as u64,
                experts: d.experts as u64,
                top_k,
                score_func: route.score_func,
                norm_topk_prob: route.norm_topk_prob,
                // The reference multiplies by the attribute rounded to f32.
                route_scale: route.route_scale as f32,
                logits: dtype(o.logits)?,
                grad: dtype(o.dweights)?,
                output: dtype(result(0))?,
            };
            kernel.supported().map_err(&fail)?;
            GpuKernel::MoeTopkGrad(kernel)
        }
        other => {
            return Err(fail(format!(
                "no GPU kernel for `{}`; the default pipeline's fuse pass rewrites it into kernels that have one",
                other.name()
            )));
        }
    };
    Ok(launch(kernel))
}

/// `(matrices, rows, cols)` of a tensor read as a stack of matrices over its last two dims (a
/// vector is one row).
fn matrices_of(dims: &[u64]) -> Option<(u64, u64, u64)> {
    match dims {
        [] => None,
        [cols] => Some((1, 1, *cols)),
        [lead @ .., rows, cols] => Some((lead.iter().product(), *rows, *cols)),
    }
}

fn is_plain_float(dtype: DType) -> bool {
    dtype.is_kernel_float()
}

/// `dtype` when the training kernels read and write it (f32 or bf16).
fn float_operand(dtype: DType) -> Result<DType, String> {
    if dtype.is_kernel_float() {
        Ok(dtype)
    } else {
        Err(format!(
            "{dtype} operands have no GPU kernel (f32 and bf16 only)"
        ))
    }
}

/// The grouped form of a GEMM over experts of these sizes, whose input x has this shape.
fn grouped(dims: GroupedDims, x: &dsc_ir::Shape) -> Grouped {
    Grouped {
        experts: dims.experts as u64,
        tokens: dims.tokens as u64,
        top_k: dims.top_k as u64,
        x_per_slot: GroupedInput::of(x) == GroupedInput::PerSlot,
    }
}

fn four(dims: &[u64]) -> Option<[u64; 4]> {
    dims.try_into().ok()
}

/// Where a rope or norm reading a column window of its x (`x_cols`) finds it in x's rows.
fn x_row(g: &Graph, op: &Op) -> Option<RowWindow> {
    let &[start, _] = op.attrs.ints(dsc_ir::infer::X_COLS)? else {
        return None;
    };
    Some(RowWindow {
        stride: g.ty(op.operands[0]).shape.last(),
        offset: start as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_e5m6_cache_has_kernels_to_write_and_read_it_and_nothing_else() {
        let g = dsc_ir::text::parse(
            "graph \"g\"\ninput %x: bf16[4, 32]\n\
             %x.cache: f12e5m6[4, 32], %x.cache.scale: f32[4, 1] = quantize(%x) \
             {block = [1, 128], dtype = f12e5m6, scale_format = \"ue8m0\"} role=attn_proj \
             compute=f32\n\
             %x.back: bf16[4, 32] = dequantize(%x.cache, %x.cache.scale) \
             {block = [1, 128], dtype = bf16} role=attn_proj compute=f32\n\
             %x.t: f12e5m6[32, 4] = transpose(%x.cache) {perm = [1, 0]} role=other \
             compute=f12e5m6\n\
             output %x.back\noutput %x.t\n",
        )
        .unwrap();
        let kernel = |i: usize| match select(&g, &g.ops[i]).unwrap() {
            Selection::Launch { kernel, .. } => *kernel,
            Selection::Alias => panic!("op {i} aliases"),
        };
        assert!(matches!(kernel(0), GpuKernel::ActQuant(q) if q.quant.format == DType::F12E5M6));
        assert!(matches!(kernel(1), GpuKernel::Dequantize(d) if d.format == DType::F12E5M6));
        let err = select(&g, &g.ops[2]).unwrap_err().to_string();
        assert!(err.contains("x.cache") && err.contains("E5M6"), "{err}");
        assert!(err.contains("only to quantize"), "{err}");
    }
}
