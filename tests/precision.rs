//! The precision policy on whole example models: which GEMMs end up FP8, that kept roles never
//! touch FP8, and what the report says.

use crate::support::{path, read, small_examples};
use dsc_ir::model::load_model;
use dsc_ir::{DType, Graph, OpKind, Role};
use dsc_passes::{PassOptions, Pipeline};

fn compiled(file: &std::path::Path) -> Graph {
    let mut g = load_model(&read(file)).unwrap();
    Pipeline::default_pipeline()
        .run(&mut g, &PassOptions { verify_each: true }, |_, _| {})
        .unwrap();
    g
}

#[test]
fn gemms_of_fp8_roles_are_fp8_and_kept_roles_never_touch_fp8() {
    for (name, file) in small_examples() {
        let g = compiled(&file);
        let mut fp8_gemms = 0;
        for op in &g.ops {
            let p = op
                .precision
                .unwrap_or_else(|| panic!("{name}: {} unassigned", g.op_name(op)));
            let fp8_role = matches!(
                op.role,
                Role::AttnProj | Role::Ffn | Role::Expert | Role::SharedExpert
            );
            if op.kind.is_weight_gemm() && fp8_role {
                assert_eq!(p.compute, DType::F8E4M3, "{name}: {}", g.op_name(op));
                assert_eq!(p.accumulate, Some(DType::F32), "{name}: {}", g.op_name(op));
                fp8_gemms += 1;
            } else {
                assert!(!p.compute.is_fp8(), "{name}: {} is FP8", g.op_name(op));
            }
            // No value anywhere is FP8 before quantize-linears: FP8 lives inside GEMMs.
            for &v in op.operands.iter().chain(&op.results) {
                assert!(
                    !g.ty(v).dtype.is_fp8(),
                    "{name}: {} reads or writes FP8",
                    g.op_name(op)
                );
            }
        }
        assert!(fp8_gemms > 0, "{name}: no FP8 GEMM");
    }
}

#[test]
fn deepseek_norms_softmax_and_gate_compute_in_f32() {
    let g = compiled(&path("examples/tiny-moe.toml"));
    for op in &g.ops {
        let p = op.precision.unwrap();
        match op.kind {
            OpKind::RmsNorm | OpKind::Softmax | OpKind::MoeTopk => {
                assert_eq!(p.compute, DType::F32, "{}", g.op_name(op))
            }
            OpKind::Linear if op.role == Role::Gating => {
                assert_eq!(p.compute, DType::F32);
                assert_eq!(g.ty(op.results[0]).dtype, DType::F32);
                assert_eq!(g.ty(op.operands[0]).dtype, DType::F32, "the gate reads f32");
            }
            OpKind::Linear if op.role == Role::Head => assert_eq!(p.compute, DType::Bf16),
            _ => {}
        }
    }
    let experts = g
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::GroupedLinear)
        .count();
    assert_eq!(
        experts,
        3 * 3,
        "three grouped GEMMs per MoE layer, three MoE layers"
    );
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
            assert_eq!(p.compute, DType::Bf16, "{name}");
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
