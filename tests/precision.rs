//! The precision policy on whole example models: which GEMMs end up FP8 (fused into one
//! `fp8_gemm` each), that kept roles never touch FP8, and how activations are quantized.

use crate::support::{path, read, small_examples};
use dsc_ir::model::load_model;
use dsc_ir::{DType, Graph, OpKind, Role, ValueDef};
use dsc_passes::{PassOptions, Pipeline};
use std::collections::HashSet;

fn compiled(file: &std::path::Path) -> Graph {
    let mut g = load_model(&read(file)).unwrap();
    Pipeline::default_pipeline()
        .run(&mut g, &PassOptions { verify_each: true }, |_, _| {})
        .unwrap();
    g
}

fn is_fp8_role(role: Role) -> bool {
    matches!(
        role,
        Role::AttnProj | Role::Ffn | Role::Expert | Role::SharedExpert
    )
}

#[test]
fn gemms_of_fp8_roles_are_fp8_and_kept_roles_never_touch_fp8() {
    for (name, file) in small_examples() {
        let g = compiled(&file);
        let mut fp8_gemms = 0;
        for op in &g.ops {
            let op_name = g.op_name(op);
            let p = op
                .precision
                .unwrap_or_else(|| panic!("{name}: {op_name} unassigned"));
            assert!(
                !matches!(op.kind, OpKind::Linear | OpKind::GroupedLinear) || !p.compute.is_fp8(),
                "{name}: {op_name} is an FP8 GEMM that quantize-linears left unlowered"
            );
            if op.kind == OpKind::Fp8Gemm {
                assert!(is_fp8_role(op.role), "{name}: {op_name}");
                assert_eq!(p.compute, DType::F8E4M3, "{name}: {op_name}");
                assert_eq!(p.accumulate, Some(DType::F32), "{name}: {op_name}");
                fp8_gemms += 1;
            }
            if !is_fp8_role(op.role) {
                assert!(!p.compute.is_fp8(), "{name}: {op_name} is FP8");
                // A norm fused with the quantization of its output (rms_norm_quant, or
                // add_rms_norm_quant with the residual add) writes FP8 codes by design: its
                // arithmetic is f32 (checked above), and the codes are what the FP8 GEMMs after
                // it read. Nothing else of a kept role touches FP8.
                let quantizing = matches!(op.kind, OpKind::RmsNormQuant | OpKind::AddRmsNormQuant);
                let reads_or_writes: Vec<_> = if quantizing {
                    op.operands.clone()
                } else {
                    op.operands.iter().chain(&op.results).copied().collect()
                };
                for v in reads_or_writes {
                    assert!(
                        !g.ty(v).dtype.is_fp8(),
                        "{name}: {op_name} reads or writes FP8"
                    );
                }
            }
        }
        assert!(fp8_gemms > 0, "{name}: no FP8 GEMM");
        // The unfused form is gone: every block-scaled GEMM is one fused kernel.
        for op in &g.ops {
            assert!(
                !matches!(op.kind, OpKind::Fp8Partials | OpKind::Promote),
                "{name}: {} is left unfused",
                g.op_name(op)
            );
        }
        // Every FP8 weight is a parameter with its block scales beside it: folded at load time.
        for op in &g.ops {
            if op.kind == OpKind::Quantize {
                assert!(
                    !g.is_param(op.operands[0]),
                    "{name}: a weight is quantized per forward"
                );
            }
        }
    }
}

/// Every GEMM that assign-precision makes FP8 ends up one `fp8_gemm` under its own name (the
/// fused GEMM keeps the value of the op it replaces); one with a bias (qwen2-small's q/k/v)
/// ends up the bias `add` under its name, reading an `fp8_gemm` and the high bias parameter.
#[test]
fn every_fp8_gemm_is_fused() {
    for (name, file) in small_examples() {
        let mut g = load_model(&read(&file)).unwrap();
        let options = PassOptions { verify_each: true };
        Pipeline::parse("verify,infer-shapes,assign-precision")
            .unwrap()
            .run(&mut g, &options, |_, _| {})
            .unwrap();
        let fp8: Vec<String> = g
            .ops
            .iter()
            .filter(|o| o.kind.is_weight_gemm() && o.precision.unwrap().compute.is_fp8())
            .map(|o| g.op_name(o).to_string())
            .collect();
        assert!(!fp8.is_empty(), "{name}: no FP8 GEMM");
        let g = compiled(&file);
        let mut biased = 0;
        for gemm in &fp8 {
            let op = g
                .ops
                .iter()
                .find(|o| g.op_name(o) == gemm)
                .unwrap_or_else(|| panic!("{name}: {gemm} is gone"));
            if op.kind == OpKind::Add {
                let defs = g.defs();
                let dsc_ir::ValueDef::OpResult { op: i, .. } = defs[&op.operands[0]] else {
                    panic!("{name}: {gemm} adds to no op's result");
                };
                assert_eq!(g.ops[i].kind, OpKind::Fp8Gemm, "{name}: {gemm}");
                let bias = op.operands[1];
                assert!(g.params.contains(&bias), "{name}: {gemm}");
                assert_eq!(g.name(bias), format!("{gemm}.bias"));
                assert_eq!(g.ty(bias).dtype, g.ty(op.results[0]).dtype);
                biased += 1;
                continue;
            }
            assert_eq!(op.kind, OpKind::Fp8Gemm, "{name}: {gemm}");
        }
        assert_eq!(biased, if name == "qwen2-small" { 6 } else { 0 }, "{name}");
    }
}

/// In every MoE layer the routed and the shared experts read one quantization of `tokens`:
/// one `quantize` of it (or the norm in front quantizes its own output, `rms_norm_quant`).
#[test]
fn moe_layers_quantize_tokens_once_for_routed_and_shared_experts() {
    let g = compiled(&path("examples/tiny-moe.toml"));
    let defs = g.defs();
    let op_of = |v| match defs[&v] {
        ValueDef::OpResult { op, .. } => Some(&g.ops[op]),
        _ => None,
    };
    let named = |n: &str| g.ops.iter().find(|o| g.op_name(o) == n);
    let moe_layers: Vec<String> = g
        .ops
        .iter()
        .filter_map(|o| g.op_name(o).strip_suffix(".combine").map(str::to_string))
        .collect();
    assert_eq!(moe_layers.len(), 3, "tiny-moe has three MoE layers");
    for prefix in &moe_layers {
        let gemms = [
            "experts.gate_proj",
            "experts.up_proj",
            "shared_experts.gate_proj",
            "shared_experts.up_proj",
        ];
        let codes: HashSet<_> = gemms
            .iter()
            .map(|n| {
                let op = named(&format!("{prefix}.{n}")).unwrap();
                assert_eq!(op.kind, OpKind::Fp8Gemm, "{prefix}.{n}");
                (op.operands[0], op.operands[1])
            })
            .collect();
        assert_eq!(
            codes.len(),
            1,
            "{prefix}: experts read different quantizations"
        );
        let (x_q, _) = codes.into_iter().next().unwrap();
        let tokens = named(&format!("{prefix}.tokens")).unwrap().results[0];
        let quantizes_of_tokens = g
            .ops
            .iter()
            .filter(|o| o.kind == OpKind::Quantize && o.operands == [tokens])
            .count();
        // The codes come from the one quantize of tokens, or from the fused norm (through a
        // reshape to the tokens' shape).
        let producer = op_of(x_q).unwrap();
        match producer.kind {
            OpKind::Quantize => {
                assert_eq!(producer.operands, [tokens], "{prefix}");
                assert_eq!(quantizes_of_tokens, 1, "{prefix}");
            }
            OpKind::Reshape => {
                let fused = op_of(producer.operands[0]).unwrap();
                assert!(
                    matches!(fused.kind, OpKind::RmsNormQuant | OpKind::AddRmsNormQuant),
                    "{prefix}: {}",
                    fused.kind
                );
                assert_eq!(quantizes_of_tokens, 0, "{prefix}");
            }
            other => panic!("{prefix}: the experts' codes come from {other}"),
        }
    }
}

#[test]
fn deepseek_norms_softmax_and_gate_compute_in_f32() {
    let g = compiled(&path("examples/tiny-moe.toml"));
    for op in &g.ops {
        let p = op.precision.unwrap();
        match op.kind {
            OpKind::RmsNorm
            | OpKind::AddRmsNorm
            | OpKind::RmsNormQuant
            | OpKind::AddRmsNormQuant
            | OpKind::Softmax
            | OpKind::MoeTopk => {
                assert_eq!(p.compute, DType::F32, "{}", g.op_name(op))
            }
            OpKind::Linear if op.role == Role::Gating => {
                assert_eq!(p.compute, DType::F32);
                assert_eq!(g.ty(op.results[0]).dtype, DType::F32);
                // The BF16 tokens, which the kernel widens to f32 exactly as the cast that
                // fold-widening-casts removed did.
                assert_eq!(g.ty(op.operands[0]).dtype, DType::Bf16, "the gate's tokens");
            }
            OpKind::Linear if op.role == Role::Head => assert_eq!(p.compute, DType::Bf16),
            _ => {}
        }
    }
    let experts = g
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Fp8Gemm && o.operands.len() == 5)
        .count();
    assert_eq!(
        experts,
        3 * 3,
        "three grouped GEMMs per MoE layer, three MoE layers"
    );
    for &p in &g.params {
        let name = g.name(p);
        if name.contains(".experts.{e}.") && name.ends_with(".weight") {
            assert_eq!(g.ty(p).dtype, DType::F8E4M3, "{name}");
            assert_eq!(g.ty(p).shape.rank(), 3, "{name} stays one [E, N, K] tensor");
        }
    }
}

#[test]
fn overrides_and_high_f32_reach_every_op() {
    let base = read(&path("examples/tiny-moe.toml"));
    let text = format!(
        "{base}\n[precision]\nhigh = \"f32\"\n\n[[precision.override]]\nmatch = \"model.layers.0.*\"\ndtype = \"bf16\"\n"
    );
    let mut g = load_model(&text).unwrap();
    Pipeline::default_pipeline()
        .run(&mut g, &PassOptions { verify_each: true }, |_, _| {})
        .unwrap();
    for op in &g.ops {
        let name = g.op_name(op);
        let p = op.precision.unwrap();
        if op.kind.is_weight_gemm() && name.starts_with("model.layers.0.") {
            assert_eq!(p.compute, DType::Bf16, "{name}: the override keeps it high");
        }
        if op.kind == OpKind::Linear && op.role == Role::Head {
            assert_eq!(p.compute, DType::F32, "{name}");
        }
    }
    assert!(
        g.ops.iter().any(|o| o.kind == OpKind::Cast),
        "layer 0 in bf16 inside an f32 model needs casts"
    );
}
