//! Each rule on a small graph in the text format: the op kinds `fuse` leaves, and the names,
//! roles and precisions of what it builds.

use super::rules::holds_exactly;
use super::*;
use dsc_ir::text::parse;
use dsc_ir::{DType, Precision, verify};

/// Parses and verifies `body` (after a graph header), fuses it and verifies the result.
fn fuse(body: &str) -> Graph {
    let mut g = parse(&format!("graph \"t\"\n{body}")).unwrap();
    verify(&g).unwrap();
    run(&mut g, &PassOptions::default()).unwrap();
    verify(&g).unwrap_or_else(|e| panic!("{e}\n{g}"));
    g
}

fn kinds(g: &Graph) -> Vec<OpKind> {
    g.ops.iter().map(|o| o.kind).collect()
}

fn op<'g>(g: &'g Graph, name: &str) -> &'g Op {
    g.ops
        .iter()
        .find(|o| g.op_name(o) == name)
        .unwrap_or_else(|| panic!("no op `{name}` in\n{g}"))
}

const fn precision(compute: DType, accumulate: Option<DType>) -> Option<Precision> {
    Some(Precision {
        compute,
        accumulate,
    })
}

/// A dense block-scaled GEMM as quantize-linears and fold-weights leave it, reading `x`.
const GEMM: &str = "\
param @w: f8e4m3[128, 256]
param @w.scale: f32[1, 2]
%x_q: f8e4m3[4, 256], %x_q.scale: f32[4, 2] = quantize(%x) {block = [1, 128], dtype = f8e4m3, scale_format = \"f32\"} role=ffn compute=f32
%p: f32[4, 128, 2] = fp8_partials(%x_q, @w) {interval = 128} role=ffn compute=f8e4m3 accumulate=f32
%y: bf16[4, 128] = promote(%p, %x_q.scale, @w.scale) {act_tile = 128, promote_interval = 128, weight_block = 128} role=ffn compute=f32 accumulate=f32
";

#[test]
fn fp8_gemm_replaces_partials_and_promote_and_keeps_the_result() {
    let g = fuse(&format!("input %x: bf16[4, 256]\n{GEMM}output %y\n"));
    assert_eq!(kinds(&g), [OpKind::Quantize, OpKind::Fp8Gemm]);
    let gemm = op(&g, "y");
    assert_eq!(g.outputs, [gemm.results[0]]);
    assert_eq!(gemm.role, Role::Ffn);
    assert_eq!(gemm.precision, precision(DType::F8E4M3, Some(DType::F32)));
    let names: Vec<_> = gemm.operands.iter().map(|&v| g.name(v)).collect();
    assert_eq!(names, ["x_q", "x_q.scale", "w", "w.scale"]);
    assert_eq!(gemm.attrs.int("promote_interval"), Some(128));
}

#[test]
fn grouped_experts_stay_one_fp8_gemm_with_their_indices() {
    let g = fuse(
        "input %x: bf16[4, 256]
input %idx: i32[4, 2]
param @w: f8e4m3[8, 128, 256]
param @w.scale: f32[8, 1, 2]
%x_q: f8e4m3[4, 256], %x_q.scale: f32[4, 2] = quantize(%x) {block = [1, 128], dtype = f8e4m3, scale_format = \"f32\"} role=expert compute=f32
%p: f32[4, 2, 128, 2] = fp8_partials(%x_q, @w, %idx) {interval = 128} role=expert compute=f8e4m3 accumulate=f32
%y: bf16[4, 2, 128] = promote(%p, %x_q.scale, @w.scale, %idx) {act_tile = 128, promote_interval = 128, weight_block = 128} role=expert compute=f32 accumulate=f32
output %y
",
    );
    assert_eq!(kinds(&g), [OpKind::Quantize, OpKind::Fp8Gemm]);
    let gemm = op(&g, "y");
    assert_eq!(gemm.role, Role::Expert);
    assert_eq!(g.name(gemm.operands[4]), "idx");
}

#[test]
fn the_fused_gemm_promotes_at_the_partials_interval() {
    let text = format!("input %x: bf16[4, 256]\n{GEMM}output %y\n")
        .replace("{interval = 128}", "{interval = 64}")
        .replace("promote_interval = 128", "promote_interval = 64")
        .replace(
            "f32[4, 128, 2] = fp8_partials",
            "f32[4, 128, 4] = fp8_partials",
        );
    let g = fuse(&text);
    assert_eq!(kinds(&g), [OpKind::Quantize, OpKind::Fp8Gemm]);
    assert_eq!(op(&g, "y").attrs.int("promote_interval"), Some(64));
}

#[test]
fn rms_norm_quant_takes_the_quantize_results_and_the_norm_role() {
    let g = fuse(&format!(
        "input %h: bf16[4, 256]
param @n.weight: bf16[256]
%x: bf16[4, 256] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
{GEMM}output %y
"
    ));
    assert_eq!(kinds(&g), [OpKind::RmsNormQuant, OpKind::Fp8Gemm]);
    let fused = op(&g, "x_q");
    assert_eq!(g.name(fused.results[1]), "x_q.scale");
    assert_eq!(fused.role, Role::Norm);
    assert_eq!(fused.precision, precision(DType::F32, Some(DType::F32)));
    assert_eq!(fused.attrs.float("eps"), Some(1e-6));
    assert_eq!(fused.attrs.int("act_tile"), Some(128));
    assert_eq!(fused.attrs.dtype("dtype"), Some(DType::F8E4M3));
    assert_eq!(fused.attrs.str("scale_format"), Some("f32"));
}

#[test]
fn a_norm_that_stores_in_another_dtype_than_it_reads_is_not_fused() {
    // rms_norm_quant rounds to its input's dtype (f32 here) before quantizing; the unfused
    // norm rounded to bf16.
    let g = fuse(&format!(
        "input %h: f32[4, 256]
param @n.weight: bf16[256]
%x: bf16[4, 256] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
{GEMM}output %y
"
    ));
    assert_eq!(
        kinds(&g),
        [OpKind::RmsNorm, OpKind::Quantize, OpKind::Fp8Gemm]
    );
}

#[test]
fn a_norm_read_elsewhere_keeps_its_quantize() {
    // The norm output is also a graph output: it is written anyway, and quantizing it costs
    // what fusing would (minus reading the norm weight again).
    let g = fuse(&format!(
        "input %h: bf16[4, 256]
param @n.weight: bf16[256]
%x: bf16[4, 256] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
{GEMM}output %y
output %x
"
    ));
    assert_eq!(
        kinds(&g),
        [OpKind::RmsNorm, OpKind::Quantize, OpKind::Fp8Gemm]
    );
}

#[test]
fn a_reshaped_norm_output_is_fused_and_the_codes_and_scales_reshaped() {
    let g = fuse(&format!(
        "input %h: bf16[1, 4, 256]
param @n.weight: bf16[256]
%n: bf16[1, 4, 256] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
%x: bf16[4, 256] = reshape(%n) {{shape = [4, 256]}} role=other compute=bf16
{GEMM}output %y
"
    ));
    assert_eq!(
        kinds(&g),
        [
            OpKind::RmsNormQuant,
            OpKind::Reshape,
            OpKind::Reshape,
            OpKind::Fp8Gemm
        ]
    );
    let fused = op(&g, "n.x_q");
    assert_eq!(g.name(fused.results[1]), "n.x_q.scale");
    assert_eq!(g.ty(fused.results[1]).shape.dims(), [1, 4, 2]);
    let codes = op(&g, "x_q");
    assert_eq!(codes.kind, OpKind::Reshape);
    assert_eq!(codes.operands, [fused.results[0]]);
    let scales = op(&g, "x_q.scale");
    assert_eq!(scales.operands, [fused.results[1]]);
    assert_eq!(scales.attrs.ints("shape"), Some(&[4, 2][..]));
    assert_eq!(scales.role, Role::Other);
    assert_eq!(
        op(&g, "y").operands[..2],
        [codes.results[0], scales.results[0]]
    );
}

#[test]
fn a_reshape_that_moves_the_normalized_axis_is_not_fused() {
    let g = fuse(&format!(
        "input %h: bf16[1, 4, 512]
param @n.weight: bf16[512]
%n: bf16[1, 4, 512] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
%x: bf16[8, 256] = reshape(%n) {{shape = [8, 256]}} role=other compute=bf16
{}output %y
",
        GEMM.replace("[4, ", "[8, ")
    ));
    assert_eq!(
        kinds(&g),
        [
            OpKind::RmsNorm,
            OpKind::Reshape,
            OpKind::Quantize,
            OpKind::Fp8Gemm
        ]
    );
}

#[test]
fn swiglu_quant_replaces_swiglu_and_quantize() {
    let g = fuse(&format!(
        "input %g: bf16[4, 256]
input %u: bf16[4, 256]
%x: bf16[4, 256] = swiglu(%g, %u) role=shared_expert compute=f32
{GEMM}output %y
"
    ));
    assert_eq!(kinds(&g), [OpKind::SwigluQuant, OpKind::Fp8Gemm]);
    let fused = op(&g, "x_q");
    assert_eq!(fused.role, Role::SharedExpert);
    assert_eq!(fused.precision, precision(DType::F32, None));
    let names: Vec<_> = fused.operands.iter().map(|&v| g.name(v)).collect();
    assert_eq!(names, ["g", "u"]);
}

#[test]
fn weight_block_quantizes_are_not_activation_tiles() {
    let g = fuse(
        "input %g: bf16[256, 256]
input %u: bf16[256, 256]
%x: bf16[256, 256] = swiglu(%g, %u) role=ffn compute=f32
%q: f8e4m3[256, 256], %q.scale: f32[2, 2] = quantize(%x) {block = [128, 128], dtype = f8e4m3, scale_format = \"f32\"} role=ffn compute=f32
output %q
",
    );
    assert_eq!(kinds(&g), [OpKind::Swiglu, OpKind::Quantize]);
}

#[test]
fn one_quantize_serves_gemms_of_every_role() {
    let g = fuse(&format!(
        "input %x: bf16[4, 256]
{GEMM}%x_q2: f8e4m3[4, 256], %x_q2.scale: f32[4, 2] = quantize(%x) {{block = [1, 128], dtype = f8e4m3, scale_format = \"f32\"}} role=shared_expert compute=f32
%p2: f32[4, 128, 2] = fp8_partials(%x_q2, @w) {{interval = 128}} role=shared_expert compute=f8e4m3 accumulate=f32
%y2: bf16[4, 128] = promote(%p2, %x_q2.scale, @w.scale) {{act_tile = 128, promote_interval = 128, weight_block = 128}} role=shared_expert compute=f32 accumulate=f32
%s: bf16[4, 128] = add(%y, %y2) role=residual compute=f32
output %s
"
    ));
    assert_eq!(
        kinds(&g),
        [
            OpKind::Quantize,
            OpKind::Fp8Gemm,
            OpKind::Fp8Gemm,
            OpKind::Add
        ]
    );
    // The first quantize stays, with its role; both GEMMs keep theirs.
    assert_eq!(op(&g, "x_q").role, Role::Ffn);
    assert_eq!(op(&g, "y2").operands[0], op(&g, "x_q").results[0]);
    assert_eq!(op(&g, "y2").role, Role::SharedExpert);
}

#[test]
fn cast_chains_through_a_wider_dtype_collapse() {
    // bf16 → f32 → f16: f32 holds both, so one cast; f32 → bf16 → f32 loses bits, so both stay.
    let g = fuse(
        "input %x: bf16[4, 8]
input %w: f32[4, 8]
%a: f32[4, 8] = cast(%x) {dtype = f32} role=gating compute=f32
%b: f16[4, 8] = cast(%a) {dtype = f16} role=gating compute=f32
%c: bf16[4, 8] = cast(%w) {dtype = bf16} role=other compute=f32
%d: f32[4, 8] = cast(%c) {dtype = f32} role=other compute=f32
output %b
output %d
",
    );
    assert_eq!(kinds(&g), [OpKind::Cast, OpKind::Cast, OpKind::Cast]);
    let b = op(&g, "b");
    assert_eq!(g.name(b.operands[0]), "x");
    assert_eq!(b.role, Role::Gating);
    assert_eq!(g.name(op(&g, "d").operands[0]), "c");
}

#[test]
fn a_cast_round_trip_and_a_cast_to_the_same_dtype_vanish() {
    let g = fuse(
        "input %x: bf16[4, 8]
%a: f32[4, 8] = cast(%x) {dtype = f32} role=other compute=f32
%b: bf16[4, 8] = cast(%a) {dtype = bf16} role=other compute=f32
%c: bf16[4, 8] = cast(%x) {dtype = bf16} role=other compute=f32
%s: bf16[4, 8] = add(%b, %c) role=residual compute=f32
output %s
",
    );
    assert_eq!(kinds(&g), [OpKind::Add]);
    let x = g.inputs[0];
    assert_eq!(op(&g, "s").operands, [x, x]);
}

#[test]
fn outputs_keep_their_values_and_names() {
    // A no-op cast that is a graph output stays: the output keeps its name.
    let g = fuse(
        "input %x: bf16[4, 8]
%c: bf16[4, 8] = cast(%x) {dtype = bf16} role=other compute=f32
%d: bf16[4, 8] = cast(%x) {dtype = bf16} role=other compute=f32
output %c
output %d
",
    );
    assert_eq!(kinds(&g), [OpKind::Cast, OpKind::Cast]);
    let names: Vec<_> = g.outputs.iter().map(|&v| g.name(v)).collect();
    assert_eq!(names, ["c", "d"]);
}

#[test]
fn cast_width_is_exact_representability() {
    use DType::*;
    assert!(holds_exactly(F32, Bf16) && holds_exactly(F32, F16) && holds_exactly(F32, F8E4M3));
    assert!(holds_exactly(Bf16, F8E5M2) && holds_exactly(F16, F8E4M3));
    assert!(!holds_exactly(Bf16, F16) && !holds_exactly(F16, Bf16));
    assert!(!holds_exactly(F32, I32) && holds_exactly(I64, I32));
}

#[test]
fn fusing_twice_changes_nothing() {
    let text = format!(
        "input %h: bf16[4, 256]
input %g: bf16[4, 256]
param @n.weight: bf16[256]
%x: bf16[4, 256] = rms_norm(%h, @n.weight) {{eps = 1e-6}} role=norm compute=f32 accumulate=f32
{GEMM}output %y
"
    );
    let mut g = fuse(&text);
    let once = g.to_string();
    run(&mut g, &PassOptions::default()).unwrap();
    assert_eq!(g.to_string(), once);
}
