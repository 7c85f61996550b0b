//! `quantize-linears`: every GEMM that assign-precision made FP8 becomes the explicit
//! DeepSeek-V3 block-scaled form (DESIGN.md §3):
//!
//! ```text
//! x_q, x_s = quantize(x)  {block = [1, act_tile]}        activation, online, per forward
//! w_q, w_s = quantize(@w) {block = [weight_block]²}      weight (fold-weights moves it to load time)
//! partials = fp8_partials(x_q, w_q) {interval}           FP8 products, FP32 sums per interval
//! y        = promote(partials, x_s, w_s)                 scaled into the FP32 accumulator, stored high
//! ```
//!
//! `y` keeps its value (and so its name); routed experts stay one grouped op each, with the
//! token → expert indices as an extra operand. A training step's FP8 `grouped_linear_wgrad`
//! stays one op too, given its tiles along the contracted rows (it quantizes inside).
//!
//! A linear with a bias (`linear(x, @w, @b)`, Qwen2's q/k/v projections) keeps the bias out of
//! the FP8 GEMM: promote's result is the GEMM's output in the high dtype, and an `add` whose rhs
//! is the bias `[N]`, broadcast over the rows (`[.., N] + [N]`), produces `y`:
//!
//! ```text
//! y.gemm = promote(partials, x_s, w_s)                  x·wᵀ, rounded to the high dtype
//! y      = add(y.gemm, @b)                              in f32, rounded to the high dtype
//! ```
//!
//! The bias is therefore added after the GEMM's rounding, not to its f32 accumulator. That keeps
//! `promote` / `fp8_gemm` (their optional operand is the grouped GEMM's expert indices) and the
//! GPU's FP8 GEMM unchanged, and fusion cannot change the result: `fuse` rewrites the promote
//! into `fp8_gemm` and leaves the `add` as it is, so the fused and unfused graphs are the same
//! arithmetic. With `high = "f32"` the order is exact (promote's output is the f32 accumulator);
//! with `bf16` it costs one extra bf16 rounding of `x·wᵀ` against an epilogue that adds the bias
//! before rounding. The bias stays a parameter in the high dtype (never quantized).

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use dsc_ir::infer::{add_inferred_results, infer};
use dsc_ir::operands::{Fp8PartialsOperands, PromoteOperands};
use dsc_ir::policy::keys;
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Precision, TensorType, ValueId};

const PASS: &str = "quantize-linears";

/// Rewrites every FP8 linear and grouped linear into quantize → fp8_partials → promote.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let ops = std::mem::take(&mut graph.ops);
    let mut out = Vec::with_capacity(ops.len() * 2);
    let mut names = NameSet::of(graph);
    for op in ops {
        let fp8 = op.precision.filter(|p| p.compute.is_fp8());
        match (op.kind, fp8) {
            (OpKind::Linear | OpKind::GroupedLinear, Some(p)) => {
                lower(graph, &mut names, &op, p.compute, &mut out)?;
            }
            (OpKind::GroupedLinearWgrad, Some(_)) => out.push(tile_grouped_wgrad(graph, op)),
            (OpKind::Matmul, Some(_)) => {
                return Err(PassError::Op {
                    pass: PASS,
                    op: graph.op_name(&op).to_string(),
                    message: "an FP8 matmul of two activations has no block-scaled form; \
                              keep it high (remove the FP8 override)"
                        .into(),
                });
            }
            _ => out.push(op),
        }
    }
    graph.ops = out;
    Ok(())
}

/// The routed experts' FP8 Wgrad keeps its one op (its groups of rows follow the routing,
/// known only when it runs): it gets its tiles along the contracted rows, as wide as the
/// activations' along K, its promotion interval, and a scale format for each operand — the
/// recipe's, which autodiff copied from the forward GEMM, else the policy's.
fn tile_grouped_wgrad(graph: &Graph, mut op: Op) -> Op {
    use dsc_ir::infer::{DY_SCALE_FORMAT, WGRAD_INTERVAL, WGRAD_TILE, X_SCALE_FORMAT};
    let policy = &graph.policy;
    op.attrs
        .set(WGRAD_TILE, Attr::Int(i64::from(policy.act_tile)));
    op.attrs.set(
        WGRAD_INTERVAL,
        Attr::Int(i64::from(policy.promote_interval)),
    );
    for key in [DY_SCALE_FORMAT, X_SCALE_FORMAT] {
        if op.attrs.get(key).is_none() {
            op.attrs
                .set(key, Attr::Str(policy.scale_format.name().to_string()));
        }
    }
    op
}

fn lower(
    graph: &mut Graph,
    names: &mut NameSet,
    op: &Op,
    fmt: DType,
    out: &mut Vec<Op>,
) -> Result<(), PassError> {
    let name = graph.op_name(op).to_string();
    let fail = |message: String| PassError::Op {
        pass: PASS,
        op: name.clone(),
        message,
    };
    // A dense linear may have a bias, a grouped one has the experts' indices.
    let (x, w, indices, bias) = match op.kind {
        OpKind::GroupedLinear => {
            let o = op
                .grouped_linear_operands()
                .map_err(|e| fail(e.to_string()))?;
            (o.x, o.w, Some(o.indices), None)
        }
        _ => {
            let o = op.linear_operands().map_err(|e| fail(e.to_string()))?;
            (o.x, o.w, None, o.bias)
        }
    };
    let policy = graph.policy.clone();
    // The recipe's per-tensor scale formats (DESIGN.md §8: power-of-2 scales for the tensors
    // it names), set on the GEMM by the training-step builder; the policy's otherwise.
    let scale_format_of = |key: &str| {
        let s = op.attrs.str(key).unwrap_or(policy.scale_format.name());
        Attr::Str(s.to_string())
    };
    let (x_scale_format, w_scale_format) = (
        scale_format_of(dsc_ir::infer::X_SCALE_FORMAT),
        scale_format_of(dsc_ir::infer::W_SCALE_FORMAT),
    );
    let quantize = |dtype: DType, block: [u32; 2], scale_format: &Attr| {
        Attrs::new()
            .with("dtype", Attr::DType(dtype))
            .with(
                "block",
                Attr::Ints(vec![i64::from(block[0]), i64::from(block[1])]),
            )
            .with("scale_format", scale_format.clone())
    };
    let f32_only = Precision {
        compute: DType::F32,
        accumulate: None,
    };
    let mut emit = |graph: &mut Graph,
                    kind: OpKind,
                    operands: Vec<ValueId>,
                    attrs: Attrs,
                    result_names: &[String],
                    precision: Precision|
     -> Result<Vec<ValueId>, PassError> {
        let fresh: Vec<String> = result_names.iter().map(|n| names.fresh(n)).collect();
        let results = add_inferred_results(graph, kind, &attrs, &operands, fresh).map_err(&fail)?;
        out.push(Op {
            kind,
            operands,
            results: results.clone(),
            attrs,
            role: op.role,
            precision: Some(precision),
        });
        Ok(results)
    };

    // The activation-gradient ablation (`x_square_blocks`, set on a training step's Dgrad by
    // [train] act_grad_scaling = "128x128") quantizes x in act_tile × act_tile blocks.
    let x_square_blocks = op.attrs.bool(dsc_ir::infer::X_SQUARE_BLOCKS) == Some(true);
    let x_rows = if x_square_blocks { policy.act_tile } else { 1 };
    let x_q = emit(
        graph,
        OpKind::Quantize,
        vec![x],
        quantize(fmt, [x_rows, policy.act_tile], &x_scale_format),
        &[format!("{name}.x_q"), format!("{name}.x_q.scale")],
        f32_only,
    )?;
    // The copy of x the backward keeps (`x_cache`, DESIGN.md §8: the attention output
    // projection's input in E5M6), in the same 1 × act_tile tiles and scale format as the FP8
    // copy; only the training step's Wgrad reads it (through requantize-transposed), so it is
    // dead code, and dce removes it, wherever that pass does not run.
    if let Some(cache) = op.attrs.dtype(dsc_ir::infer::X_CACHE) {
        emit(
            graph,
            OpKind::Quantize,
            vec![x],
            quantize(cache, [1, policy.act_tile], &x_scale_format),
            &[format!("{name}.x_cache"), format!("{name}.x_cache.scale")],
            f32_only,
        )?;
    }
    // A training step's Wgrad (`linear(dyᵀ, xᵀ) {gemm = "wgrad"}`, DESIGN.md §8) contracts over
    // the tokens and its "weight" is the activation xᵀ: both operands are tiled 1 × act_tile
    // along the tokens, so w's scales are per row, in groups as wide as x's.
    let wgrad = op.attrs.str("gemm") == Some("wgrad");
    let w_block = if wgrad {
        [1, policy.act_tile]
    } else {
        [policy.weight_block, policy.weight_block]
    };
    let w_q = emit(
        graph,
        OpKind::Quantize,
        vec![w],
        quantize(fmt, w_block, &w_scale_format),
        &[format!("{name}.w_q"), format!("{name}.w_q.scale")],
        f32_only,
    )?;
    let partial_operands = Fp8PartialsOperands {
        x: x_q[0],
        w: w_q[0],
        indices,
    };
    let partials = emit(
        graph,
        OpKind::Fp8Partials,
        partial_operands.to_vec(),
        Attrs::new().with("interval", Attr::Int(i64::from(policy.promote_interval))),
        &[format!("{name}.partials")],
        Precision {
            compute: fmt,
            accumulate: Some(DType::F32),
        },
    )?;
    // The original result becomes promote's result: same value, same name, same storage.
    let promote_operands = PromoteOperands {
        partials: partials[0],
        x_scale: x_q[1],
        w_scale: w_q[1],
        indices,
    }
    .to_vec();
    let mut attrs = Attrs::new()
        .with(keys::ACT_TILE, Attr::Int(i64::from(policy.act_tile)))
        .with(keys::WEIGHT_BLOCK, Attr::Int(i64::from(w_block[1])))
        .with(
            keys::PROMOTE_INTERVAL,
            Attr::Int(i64::from(policy.promote_interval)),
        );
    if wgrad {
        attrs.set(dsc_ir::infer::W_ROW_TILES, Attr::Bool(true));
    }
    if x_square_blocks {
        attrs.set(dsc_ir::infer::X_SQUARE_BLOCKS, Attr::Bool(true));
    }
    let ins: Vec<&TensorType> = promote_operands.iter().map(|&v| graph.ty(v)).collect();
    let inferred = infer(OpKind::Promote, &attrs, &ins).map_err(&fail)?;
    if inferred[0].shape != graph.ty(op.results[0]).shape {
        return Err(fail(format!(
            "promote would produce {}, not the GEMM's {}",
            inferred[0].shape,
            graph.ty(op.results[0])
        )));
    }
    let promote_precision = Precision {
        compute: DType::F32,
        accumulate: Some(DType::F32),
    };
    let Some(bias) = bias else {
        out.push(Op {
            kind: OpKind::Promote,
            operands: promote_operands,
            results: op.results.clone(),
            attrs,
            role: op.role,
            precision: Some(promote_precision),
        });
        return Ok(());
    };
    // With a bias, promote's result is a new value of the GEMM's type and `add` produces the
    // original one.
    let ty = graph.ty(op.results[0]).clone();
    let gemm = graph.add_value(names.fresh(&format!("{name}.gemm")), ty);
    out.push(Op {
        kind: OpKind::Promote,
        operands: promote_operands,
        results: vec![gemm],
        attrs,
        role: op.role,
        precision: Some(promote_precision),
    });
    let ins = [graph.ty(gemm), graph.ty(bias)];
    infer(OpKind::Add, &Attrs::new(), &ins).map_err(&fail)?;
    out.push(Op {
        kind: OpKind::Add,
        operands: vec![gemm, bias],
        results: op.results.clone(),
        attrs: Attrs::new(),
        role: op.role,
        precision: Some(Precision {
            compute: DType::F32,
            accumulate: None,
        }),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_ir::Role;
    use dsc_ir::text::parse;

    fn lower(text: &str) -> Result<Graph, PassError> {
        let mut g = parse(text).unwrap();
        dsc_ir::verify(&g).unwrap();
        run(&mut g, &PassOptions::default())?;
        dsc_ir::verify(&g).unwrap();
        Ok(g)
    }

    #[test]
    fn the_result_keeps_its_name_and_ragged_shapes_get_partial_groups() {
        let g = lower(
            "graph \"g\"\ninput %x: bf16[3, 300]\nparam @w: bf16[200, 300]\n\
             %y: bf16[3, 200] = linear(%x, @w) role=ffn compute=f8e4m3 accumulate=f32\noutput %y\n",
        )
        .unwrap();
        let kinds: Vec<_> = g.ops.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                OpKind::Quantize,
                OpKind::Quantize,
                OpKind::Fp8Partials,
                OpKind::Promote
            ]
        );
        let y = g.ops[3].results[0];
        assert_eq!(g.outputs, [y]);
        assert_eq!(g.name(y), "y");
        // K = 300: three 1×128 activation tiles, three 128-wide partial groups, 2×3 weight blocks.
        assert_eq!(g.ty(g.ops[0].results[1]).shape.dims(), [3, 3]);
        assert_eq!(g.ty(g.ops[1].results[1]).shape.dims(), [2, 3]);
        assert_eq!(g.ty(g.ops[2].results[0]).shape.dims(), [3, 200, 3]);
    }

    #[test]
    fn a_bias_is_added_after_the_promote_in_the_high_dtype() {
        let g = lower(
            "graph \"g\"\ninput %x: bf16[2, 3, 128]\nparam @w: bf16[64, 128]\nparam @b: bf16[64]\n\
             %y: bf16[2, 3, 64] = linear(%x, @w, @b) role=attn_proj compute=f8e4m3 accumulate=f32\n\
             output %y\n",
        )
        .unwrap();
        let kinds: Vec<_> = g.ops.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                OpKind::Quantize,
                OpKind::Quantize,
                OpKind::Fp8Partials,
                OpKind::Promote,
                OpKind::Add
            ]
        );
        let (promote, add) = (&g.ops[3], &g.ops[4]);
        assert_eq!(promote.operands.len(), 3, "the bias is no promote operand");
        let gemm = promote.results[0];
        assert_eq!(g.name(gemm), "y.gemm");
        assert_eq!(g.ty(gemm).to_string(), "bf16[2, 3, 64]");
        assert_eq!(g.name(add.operands[1]), "b");
        assert_eq!(add.operands[0], gemm);
        assert_eq!(g.outputs, add.results);
        assert_eq!(g.name(add.results[0]), "y");
        assert_eq!(add.role, Role::AttnProj);
        let p = add.precision.unwrap();
        assert_eq!((p.compute, p.accumulate), (DType::F32, None));
    }

    #[test]
    fn high_gemms_are_left_alone_and_unsupported_fp8_forms_are_errors() {
        let g = lower(
            "graph \"g\"\ninput %x: bf16[3, 128]\nparam @w: bf16[64, 128]\n\
             %y: bf16[3, 64] = linear(%x, @w) role=head compute=bf16 accumulate=f32\noutput %y\n",
        )
        .unwrap();
        assert_eq!(g.ops.len(), 1);

        let err = lower(
            "graph \"g\"\ninput %a: bf16[2, 4, 128]\ninput %b: bf16[2, 128, 4]\n\
             %y: bf16[2, 4, 4] = matmul(%a, %b) role=ffn compute=f8e4m3 accumulate=f32\noutput %y\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("two activations"), "{err}");
    }
}
