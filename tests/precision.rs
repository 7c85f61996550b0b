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
            if op.kind == OpKind::Fp8Partials {
                assert!(is_fp8_role(op.role), "{name}: {op_name}");
                assert_eq!(p.compute, DType::F8E4M3, "{name}: {op_name}");
                assert_eq!(p.accumulate, Some(DType::F32), "{name}: {op_name}");
                fp8_gemms += 1;
            }
            if !is_fp8_role(op.role) {
                assert!(!p.compute.is_fp8(), "{name}: {op_name} is FP8");
                for &v in op.operands.iter().chain(&op.results) {
                    assert!(
                        !g.ty(v).dtype.is_fp8(),
                        "{name}: {op_name} reads or writes FP8"
                    );
                }
            }
        }
        assert!(fp8_gemms > 0, "{name}: no FP8 GEMM");
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
        .filter(|o| o.kind == OpKind::Fp8Partials && o.operands.len() == 3)
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
