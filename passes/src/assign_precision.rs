//! `assign-precision`: the precision policy of DESIGN.md §3 applied op by op.
//!
//! Each op gets a compute dtype (what its arithmetic consumes), an accumulate dtype (what its
//! sums are kept in) and a storage dtype (its results' dtype). GEMMs of the FP8 roles run in
//! the policy's FP8 format with FP32 accumulation and store in the op's high dtype; everything
//! else computes in FP32 or the high dtype. Overrides come last. Where an operand's dtype is
//! not the one its consumer reads, a cast is inserted (one per value and dtype).

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Precision, PrecisionPolicy, Role, ValueId};
use std::collections::HashMap;

/// The decision for one op.
struct Decision {
    precision: Precision,
    /// Storage dtype of the first result where the kind leaves it free.
    storage: Option<DType>,
    /// The high dtype the op reads and writes activations in.
    high: DType,
    /// True when the op is an FP8 GEMM.
    fp8: bool,
}

fn decide(op: &Op, name: &str, operand_dtype: DType, policy: &PrecisionPolicy) -> Decision {
    use OpKind::*;
    let over = policy.override_for(name);
    let high = match over {
        Some(d) if d.is_high_float() => d,
        _ => policy.high,
    };
    // The gate's logits, the loss and the weight gradients are FP32 (§3b, §8): a sum of the
    // gate's cotangents, of the loss and its extra terms, or of an embedding table's gradients
    // (a table the head or an MTP module reads too) stays FP32.
    let high = if op.kind == OpKind::Add
        && matches!(op.role, Role::Gating | Role::Head | Role::Embedding)
        && operand_dtype == DType::F32
    {
        DType::F32
    } else {
        high
    };
    let f32 = DType::F32;
    let p = |compute, accumulate| Precision {
        compute,
        accumulate,
    };
    // The FP8 format of a GEMM of this op's role: the override's, else the policy's for an FP8
    // role it does not keep high.
    let gemm_format = match over {
        Some(d) if d.is_fp8() => Some(d),
        Some(_) => None,
        None => (op.role.is_fp8_gemm_role() && !policy.keep_high.contains(&op.role))
            .then_some(policy.fp8_format),
    };
    let mut fp8 = false;
    let (precision, storage) = match op.kind {
        Linear | GroupedLinear | Matmul => {
            let wgrad = op.attrs.str("gemm") == Some("wgrad");
            let format = gemm_format;
            fp8 = format.is_some();
            // The MoE gate's logits are FP32 whatever the policy (§3b), as in the reference;
            // so are weight gradients (DESIGN.md §8).
            let storage = if op.role == Role::Gating || wgrad {
                f32
            } else {
                high
            };
            match format {
                Some(fmt) => (p(fmt, Some(f32)), Some(storage)),
                None if op.role == Role::Gating => (p(f32, Some(f32)), Some(f32)),
                None => (p(high, Some(f32)), Some(storage)),
            }
        }
        RmsNorm | AddRmsNorm | Softmax | MoeCombine => (p(f32, Some(f32)), Some(high)),
        Rope | Silu | Mul | Add | Swiglu => (p(f32, None), Some(high)),
        AttnScores => (p(high, Some(f32)), Some(f32)),
        AttnValues | Attention => (p(high, Some(f32)), Some(high)),
        AttentionQuant => (p(high, Some(f32)), None),
        MoeTopk => (p(f32, Some(f32)), None),
        Embedding => (p(high, None), Some(high)),
        Cast | Quantize | Dequantize => (p(f32, None), None),
        Reshape | Transpose | Slice | Concat | Pad => (p(operand_dtype, None), None),
        // Already lowered to FP8 by quantize-linears: the codes' format is the compute dtype.
        Fp8Partials => (p(operand_dtype, Some(f32)), None),
        Fp8Gemm => {
            fp8 = true;
            (p(operand_dtype, Some(f32)), Some(high))
        }
        Promote => (p(f32, Some(f32)), Some(high)),
        RmsNormQuant | AddRmsNormQuant => (p(f32, Some(f32)), None),
        SwigluQuant => (p(f32, None), None),
        // Training (DESIGN.md §8): gradients of high-precision ops are computed in FP32 and
        // stored like the forward's activations; the loss, the softmax's gradient (the scores
        // are f32), weight gradients and optimizer state keep the dtypes autodiff gave them.
        RmsNormGrad | MoeCombineGrad => (p(f32, Some(f32)), Some(high)),
        SiluGrad | SwigluGrad | RopeGrad => (p(f32, None), Some(high)),
        CrossEntropy | CrossEntropyGrad | SoftmaxGrad | EmbeddingGrad | ReduceSum | GlobalNorm
        | MoeTopkGrad | BalanceLoss | BalanceLossGrad => (p(f32, Some(f32)), None),
        // The routed experts' k-grouped Wgrad (each expert's rows are its contracted dim): FP8
        // products of both operands tiled along those rows when its role's GEMMs are FP8
        // (quantize-linears gives it the tiles), FP32 sums and result.
        GroupedLinearWgrad => (p(gemm_format.unwrap_or(high), Some(f32)), None),
        Scale | AdamW | ExpertBiasUpdate => (p(f32, None), None),
    };
    Decision {
        precision,
        storage,
        high,
        fp8,
    }
}

/// The dtype `op` reads operand `i` in, or `None` when it reads any dtype as it is.
fn expected_operand(op: &Op, i: usize, d: &Decision) -> Option<DType> {
    use OpKind::*;
    match op.kind {
        Linear | GroupedLinear => (i == 0).then_some(activation_dtype(d)),
        Matmul => Some(activation_dtype(d)),
        RmsNorm | AddRmsNorm | Rope | Silu | Mul | Add | Swiglu | AttnScores | Attention
        | AttentionQuant | Concat | SwigluQuant => Some(d.high),
        RmsNormQuant => (i == 0).then_some(d.high),
        AddRmsNormQuant => (i < 2).then_some(d.high),
        AttnValues => (i == 1).then_some(d.high),
        MoeTopk => (i == 0).then_some(DType::F32),
        MoeCombine => Some(if i == 1 { DType::F32 } else { d.high }),
        Embedding | Softmax | Cast | Quantize | Dequantize | Reshape | Transpose | Slice | Pad
        | Fp8Partials | Promote | Fp8Gemm => None,
        CrossEntropy | CrossEntropyGrad | RmsNormGrad | SoftmaxGrad | SiluGrad | SwigluGrad
        | RopeGrad | EmbeddingGrad | ReduceSum | Scale | GlobalNorm | AdamW
        | GroupedLinearWgrad | MoeCombineGrad | MoeTopkGrad | ExpertBiasUpdate | BalanceLoss
        | BalanceLossGrad => None,
    }
}

/// An FP8 GEMM quantizes its activation from the high dtype; others read their compute dtype.
fn activation_dtype(d: &Decision) -> DType {
    if d.fp8 { d.high } else { d.precision.compute }
}

/// Applies the policy to every op and inserts casts where dtypes disagree.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let ops = std::mem::take(&mut graph.ops);
    let mut out = Vec::with_capacity(ops.len() + ops.len() / 8);
    let mut casts: HashMap<(ValueId, DType), ValueId> = HashMap::new();
    let mut names = NameSet::of(graph);
    let mut is_param = vec![false; graph.values.len()];
    for &p in &graph.params {
        is_param[p.index()] = true;
    }
    for mut op in ops {
        let name = graph.op_name(&op).to_string();
        let first_operand = op
            .operands
            .first()
            .map_or(DType::F32, |&v| graph.ty(v).dtype);
        let d = decide(&op, &name, first_operand, &graph.policy);
        for i in 0..op.operands.len() {
            let v = op.operands[i];
            if is_param[v.index()] {
                // Weights are read in their stored dtype and widened inside the kernel;
                // FP8 weights are the quantize-linears pass's business.
                continue;
            }
            let have = graph.ty(v).dtype;
            let Some(want) = expected_operand(&op, i, &d) else {
                continue;
            };
            if have == want || !have.is_float() {
                continue;
            }
            let cast = *casts.entry((v, want)).or_insert_with(|| {
                let cast_name = names.fresh(&format!("{}.to_{want}", graph.name(v)));
                let ty = dsc_ir::TensorType {
                    dtype: want,
                    shape: graph.ty(v).shape.clone(),
                };
                let r = graph.add_value(cast_name, ty);
                out.push(Op {
                    kind: OpKind::Cast,
                    operands: vec![v],
                    results: vec![r],
                    attrs: Attrs::new().with("dtype", Attr::DType(want)),
                    role: op.role,
                    precision: Some(Precision {
                        compute: DType::F32,
                        accumulate: None,
                    }),
                });
                r
            });
            op.operands[i] = cast;
        }
        let storage = if op.kind.is_data_movement() {
            op.operands.first().map(|&v| graph.ty(v).dtype)
        } else {
            d.storage
        };
        if let (Some(s), Some(&r)) = (storage, op.results.first()) {
            graph.values[r.index()].ty.dtype = s;
        }
        op.precision = Some(if op.kind.is_data_movement() {
            Precision {
                compute: storage.unwrap_or(first_operand),
                accumulate: None,
            }
        } else {
            d.precision
        });
        out.push(op);
    }
    graph.ops = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_ir::{GraphBuilder, PrecisionOverride, TensorType, verify};

    /// x → norm → {ffn linear, gate linear → topk}; outputs the ffn result and the weights.
    fn graph(policy: PrecisionPolicy) -> Graph {
        let mut b = GraphBuilder::new("t");
        b.graph_mut().policy = policy;
        let x = b
            .input("x", TensorType::new(DType::Bf16, [4, 256]))
            .unwrap();
        let nw = b
            .param("norm.weight", TensorType::new(DType::Bf16, [256]))
            .unwrap();
        let n = b
            .op(
                OpKind::RmsNorm,
                "norm",
                Role::Norm,
                &[x, nw],
                Attrs::new().with("eps", Attr::Float(1e-6)),
                None,
            )
            .unwrap();
        let w = b
            .param("up.weight", TensorType::new(DType::Bf16, [512, 256]))
            .unwrap();
        let up = b
            .op(OpKind::Linear, "up", Role::Ffn, &[n, w], Attrs::new(), None)
            .unwrap();
        let gw = b
            .param("gate.weight", TensorType::new(DType::Bf16, [8, 256]))
            .unwrap();
        let logits = b
            .op(
                OpKind::Linear,
                "gate",
                Role::Gating,
                &[n, gw],
                Attrs::new(),
                Some(DType::F32),
            )
            .unwrap();
        let attrs = Attrs::new()
            .with("score_func", Attr::Str("sigmoid".into()))
            .with("top_k", Attr::Int(2))
            .with("n_groups", Attr::Int(1))
            .with("topk_groups", Attr::Int(1))
            .with("norm_topk_prob", Attr::Bool(true))
            .with("route_scale", Attr::Float(1.0));
        let topk = b
            .op_multi(
                OpKind::MoeTopk,
                "topk",
                Role::Gating,
                &[logits],
                attrs,
                &["indices"],
            )
            .unwrap();
        b.output(up);
        b.output(topk[0]);
        b.finish()
    }

    fn op<'g>(g: &'g Graph, name: &str) -> &'g Op {
        g.ops.iter().find(|o| g.op_name(o) == name).unwrap()
    }

    #[test]
    fn default_policy_makes_ffn_gemms_fp8_and_keeps_the_rest_high() {
        let mut g = graph(PrecisionPolicy::default());
        run(&mut g, &PassOptions::default()).unwrap();
        verify(&g).unwrap();
        let up = op(&g, "up");
        assert_eq!(up.precision.unwrap().compute, DType::F8E4M3);
        assert_eq!(up.precision.unwrap().accumulate, Some(DType::F32));
        assert_eq!(g.ty(up.results[0]).dtype, DType::Bf16);
        let gate = op(&g, "gate");
        assert_eq!(gate.precision.unwrap().compute, DType::F32);
        assert_eq!(g.ty(gate.results[0]).dtype, DType::F32);
        let norm = op(&g, "norm");
        assert_eq!(norm.precision.unwrap().compute, DType::F32);
        assert_eq!(g.ty(norm.results[0]).dtype, DType::Bf16);
        // The gate reads the bf16 norm output through one cast to f32.
        let cast = g.ty(gate.operands[0]);
        assert_eq!(cast.dtype, DType::F32);
        assert_eq!(g.ops.iter().filter(|o| o.kind == OpKind::Cast).count(), 1);
    }

    #[test]
    fn keep_high_and_overrides_win() {
        let mut policy = PrecisionPolicy::default();
        policy.keep_high.push(Role::Ffn);
        let mut g = graph(policy.clone());
        run(&mut g, &PassOptions::default()).unwrap();
        assert_eq!(op(&g, "up").precision.unwrap().compute, DType::Bf16);

        policy.overrides.push(PrecisionOverride {
            pattern: "u*".into(),
            dtype: DType::F8E5M2,
        });
        let mut g = graph(policy);
        run(&mut g, &PassOptions::default()).unwrap();
        assert_eq!(op(&g, "up").precision.unwrap().compute, DType::F8E5M2);
    }

    #[test]
    fn high_f32_override_inserts_casts_both_ways() {
        let mut policy = PrecisionPolicy::default();
        policy.overrides.push(PrecisionOverride {
            pattern: "norm".into(),
            dtype: DType::F32,
        });
        let mut g = graph(policy);
        run(&mut g, &PassOptions::default()).unwrap();
        verify(&g).unwrap();
        // x (bf16) is cast up for the f32 norm; the norm's f32 output feeds the FP8 GEMM,
        // which quantizes from bf16, so it is cast down.
        let norm = op(&g, "norm");
        assert_eq!(g.ty(norm.operands[0]).dtype, DType::F32);
        assert_eq!(g.ty(norm.results[0]).dtype, DType::F32);
        let up = op(&g, "up");
        assert_eq!(g.ty(up.operands[0]).dtype, DType::Bf16);
        // The gate reads the f32 norm output directly.
        assert_eq!(op(&g, "gate").operands[0], norm.results[0]);
    }

    #[test]
    fn running_twice_changes_nothing() {
        let mut g = graph(PrecisionPolicy::default());
        run(&mut g, &PassOptions::default()).unwrap();
        let once = g.to_string();
        run(&mut g, &PassOptions::default()).unwrap();
        assert_eq!(g.to_string(), once);
    }
}
