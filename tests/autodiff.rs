//! `autodiff`'s VJP rules against finite differences: for each rule a small f32 graph ending in
//! `cross_entropy`, differentiated by the pass and run on the CPU backend; the directional
//! derivative `Σ grad · d` along a random direction `d` of each parameter in turn must match
//! the central difference `(L(p + εd) − L(p − εd)) / 2ε`, taken in f64 from the f32 losses.
//! One parameter at a time, so a wrong rule for any one operand shows.

use dsc_ir::text::parse;
use dsc_ir::{DType, Graph, ValueId};
use dsc_kernels::rng::SplitMix64;
use dsc_passes::{PassOptions, autodiff};
use dsc_runtime::cpu::{self, CpuOptions};
use dsc_runtime::{HostTensor, Weights};
use std::collections::HashMap;

fn dims(g: &Graph, v: ValueId) -> Vec<usize> {
    g.ty(v).shape.dims().iter().map(|&d| d as usize).collect()
}

/// Standard-normal weights for every parameter, drawn from `seed`.
fn weights(g: &Graph, seed: u64) -> HashMap<String, Vec<f32>> {
    let mut rng = SplitMix64(seed);
    g.params
        .iter()
        .map(|&p| {
            let n = dims(g, p).iter().product();
            let values = rng.normals(n).into_iter().map(|x| x as f32).collect();
            (g.name(p).to_string(), values)
        })
        .collect()
}

/// Integer inputs uniform in `0..bound` (labels and ids), keyed by name.
fn int_inputs(g: &Graph, bound: u64, seed: u64) -> HashMap<String, HostTensor> {
    let mut rng = SplitMix64(seed);
    g.inputs
        .iter()
        .filter(|&&i| g.ty(i).dtype.is_int())
        .map(|&i| {
            let shape = dims(g, i);
            let n = shape.iter().product();
            let ids = (0..n).map(|_| (rng.next_u64() % bound) as i32).collect();
            let t = HostTensor::from_i32(DType::I32, shape, ids).unwrap();
            (g.name(i).to_string(), t)
        })
        .collect()
}

fn to_weights(g: &Graph, values: &HashMap<String, Vec<f32>>) -> Weights {
    let mut w = Weights::new();
    for &p in &g.params {
        let t = HostTensor::from_f32(DType::F32, dims(g, p), values[g.name(p)].clone()).unwrap();
        w.insert(p, t);
    }
    w
}

fn run(
    g: &Graph,
    values: &HashMap<String, Vec<f32>>,
    inputs: &HashMap<String, HostTensor>,
) -> Vec<(String, HostTensor)> {
    cpu::run(g, &to_weights(g, values), inputs, &CpuOptions::default()).unwrap()
}

fn loss(
    g: &Graph,
    values: &HashMap<String, Vec<f32>>,
    inputs: &HashMap<String, HostTensor>,
) -> f64 {
    f64::from(run(g, values, inputs)[0].1.to_f32_vec()[0])
}

/// Checks every parameter's gradient of `text`'s loss (output 0) along a random direction.
fn check(text: &str, label_bound: u64) {
    check_with(text, label_bound, &[], &[], 1e-2);
}

/// [`check`] with some integer inputs given (`ints`, by name) instead of drawn, and the
/// parameters `no_grad` expected to get no gradient output: the loss must be locally constant
/// along a random direction of each (the selection bias of `moe_topk`). `eps` is the step of
/// the differences.
fn check_with(text: &str, label_bound: u64, ints: &[(&str, Vec<i32>)], no_grad: &[&str], eps: f32) {
    let forward = parse(text).unwrap();
    let mut backward = forward.clone();
    autodiff::run(&mut backward, &PassOptions::default()).unwrap();
    dsc_ir::verify(&backward).unwrap();
    let values = weights(&forward, 7);
    let mut inputs = int_inputs(&forward, label_bound, 11);
    for (name, ids) in ints {
        let t = inputs
            .get_mut(*name)
            .unwrap_or_else(|| panic!("no input `{name}`"));
        *t = HostTensor::from_i32(DType::I32, t.shape.clone(), ids.clone()).unwrap();
    }
    let mut with_seed = inputs.clone();
    with_seed.insert(
        autodiff::LOSS_GRAD_INPUT.into(),
        HostTensor::from_f32(DType::F32, vec![1], vec![1.0]).unwrap(),
    );
    let outputs = run(&backward, &values, &with_seed);
    inputs.retain(|k, _| forward.inputs.iter().any(|&i| forward.name(i) == k));
    let mut rng = SplitMix64(23);
    for &p in &forward.params {
        let name = forward.name(p);
        let grad_name = autodiff::grad_name(name);
        let found = outputs.iter().find(|(n, _)| *n == grad_name);
        assert_eq!(
            found.is_none(),
            no_grad.contains(&name),
            "`{name}`: gradient output present: {}",
            found.is_some()
        );
        let grad = match found {
            Some((_, t)) => t.to_f32_vec(),
            None => vec![0.0; dims(&forward, p).iter().product()],
        };
        let d: Vec<f32> = rng
            .normals(grad.len())
            .into_iter()
            .map(|x| x as f32)
            .collect();
        let analytic: f64 = grad
            .iter()
            .zip(&d)
            .map(|(&g, &d)| f64::from(g) * f64::from(d))
            .sum();
        let shifted = |sign: f32| {
            let mut v = values.clone();
            for (x, &dx) in v.get_mut(name).unwrap().iter_mut().zip(&d) {
                *x += sign * eps * dx;
            }
            loss(&forward, &v, &inputs)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * f64::from(eps));
        // f32 losses carry ~1e-7 relative error, ~1e-5 after the division by 2ε; the
        // difference's own truncation error is O(ε²) ~ 1e-4 for these O(1) functions.
        let tol = 2e-3 * analytic.abs().max(1.0);
        assert!(
            (numeric - analytic).abs() <= tol,
            "`{name}`: finite difference {numeric} vs autodiff {analytic}"
        );
    }
}

#[test]
fn linear_with_bias() {
    check(
        "graph \"t\"\n\
         input %labels: i32[2, 3]\n\
         param @x: f32[2, 3, 8]\n\
         param @w: f32[6, 8]\n\
         param @b: f32[6]\n\
         %y: f32[2, 3, 6] = linear(@x, @w, @b) role=ffn\n\
         %loss: f32[1] = cross_entropy(%y, %labels) role=other\n\
         output %loss\n",
        6,
    );
}

#[test]
fn weighted_loss_terms_over_slices_of_the_positions() {
    // The multi-token-prediction loss's shape: a second head's logits and the labels sliced to
    // the positions that have a label `k` ahead, its cross-entropy weighted by `scale` and
    // added to the main loss.
    check(
        "graph \"t\"\n\
         input %labels: i32[2, 4]\n\
         param @x: f32[2, 4, 8]\n\
         param @w: f32[6, 8]\n\
         param @w2: f32[6, 8]\n\
         %y: f32[2, 4, 6] = linear(@x, @w) role=ffn\n\
         %y2: f32[2, 4, 6] = linear(@x, @w2) role=ffn\n\
         %lm: f32[1] = cross_entropy(%y, %labels) role=other\n\
         %kept: f32[2, 3, 6] = slice(%y2) {axis = 1, start = 0, end = 3} role=other\n\
         %later: i32[2, 3] = slice(%labels) {axis = 1, start = 1, end = 4} role=other\n\
         %mtp: f32[1] = cross_entropy(%kept, %later) role=head\n\
         %weighted: f32[1] = scale(%mtp) {factor = 0.3} role=head\n\
         %loss: f32[1] = add(%lm, %weighted) role=head\n\
         output %loss\n",
        6,
    );
}

#[test]
fn embedding_norm_silu_mul_and_a_value_read_twice() {
    check(
        "graph \"t\"\n\
         input %ids: i32[2, 5]\n\
         input %labels: i32[2, 5]\n\
         param @table: f32[8, 8]\n\
         param @norm: f32[8]\n\
         %e: f32[2, 5, 8] = embedding(%ids, @table) role=other\n\
         %n: f32[2, 5, 8] = rms_norm(%e, @norm) {eps = 1e-5} role=other\n\
         %s: f32[2, 5, 8] = silu(%n) role=other\n\
         %m: f32[2, 5, 8] = mul(%s, %n) role=other\n\
         %r: f32[2, 5, 8] = add(%m, %e) role=other\n\
         %loss: f32[1] = cross_entropy(%r, %labels) role=other\n\
         output %loss\n",
        8,
    );
}

#[test]
fn swiglu_views_and_concat() {
    check(
        "graph \"t\"\n\
         input %labels: i32[4, 3]\n\
         param @a: f32[2, 4, 3]\n\
         param @b: f32[2, 4, 3]\n\
         param @c: f32[4, 3, 3]\n\
         %s: f32[2, 4, 3] = swiglu(@a, @b) role=other\n\
         %t: f32[4, 3, 2] = transpose(%s) {perm = [1, 2, 0]} role=other\n\
         %j: f32[4, 3, 5] = concat(%t, @c) {axis = 2} role=other\n\
         %f: f32[12, 5] = reshape(%j) {shape = [12, 5]} role=other\n\
         %g: f32[4, 3, 5] = reshape(%f) {shape = [4, 3, 5]} role=other\n\
         %p: f32[4, 3, 5] = softmax(%g) {axis = 1} role=other\n\
         %loss: f32[1] = cross_entropy(%p, %labels) role=other\n\
         output %loss\n",
        5,
    );
}

#[test]
fn causal_gqa_attention_with_rope_and_a_shared_rope_head() {
    check(
        "graph \"t\"\n\
         input %labels: i32[1, 5]\n\
         param @q: f32[1, 5, 4, 8]\n\
         param @k: f32[1, 5, 2, 8]\n\
         param @v: f32[1, 5, 2, 6]\n\
         param @q_pe: f32[1, 5, 4, 4]\n\
         param @k_pe: f32[1, 5, 1, 4]\n\
         %qr: f32[1, 5, 4, 8] = rope(@q) {style = \"half\", theta = 10000.0} role=other\n\
         %kr: f32[1, 5, 2, 8] = rope(@k) {style = \"half\", theta = 10000.0} role=other\n\
         %qp: f32[1, 5, 4, 4] = rope(@q_pe) {style = \"interleaved\", theta = 10000.0} role=other\n\
         %kp: f32[1, 5, 1, 4] = rope(@k_pe) {style = \"interleaved\", theta = 10000.0} role=other\n\
         %scores: f32[1, 4, 5, 5] = attn_scores(%qr, %kr, %qp, %kp) {causal = true, scale = 0.3} role=other\n\
         %probs: f32[1, 4, 5, 5] = softmax(%scores) {axis = -1} role=other\n\
         %o: f32[1, 5, 4, 6] = attn_values(%probs, @v) role=other\n\
         %flat: f32[1, 5, 24] = reshape(%o) {shape = [1, 5, 24]} role=other\n\
         %loss: f32[1] = cross_entropy(%flat, %labels) role=other\n\
         output %loss\n",
        24,
    );
}

#[test]
fn a_kind_without_a_rule_is_an_error_naming_the_op() {
    let mut g = parse(
        "graph \"t\"\n\
         input %labels: i32[2]\n\
         param @x: f32[2, 8]\n\
         %n: f32[2, 8] = silu(@x) role=other\n\
         %q: f8e4m3[2, 8], %q.scale: f32[2, 1] = quantize(%n) {block = [1, 8], dtype = f8e4m3, scale_format = \"f32\"} role=other\n\
         %d: f32[2, 8] = dequantize(%q, %q.scale) {block = [1, 8], dtype = f32} role=other\n\
         %loss: f32[1] = cross_entropy(%d, %labels) role=other\n\
         output %loss\n",
    )
    .unwrap();
    let e = autodiff::run(&mut g, &PassOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("op `d`") && e.contains("`dequantize` is an FP8 lowering"),
        "{e}"
    );
}

#[test]
fn the_loss_must_be_a_scalar() {
    let mut g = parse(
        "graph \"t\"\n\
         param @x: f32[2, 8]\n\
         %s: f32[2, 8] = silu(@x) role=other\n\
         output %s\n",
    )
    .unwrap();
    let e = autodiff::run(&mut g, &PassOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("must be the scalar loss f32[1], got f32[2, 8]"),
        "{e}"
    );
}

/// The FP8 Wgrad (`linear(dyᵀ, xᵀ) {gemm = "wgrad"}` of an FP8 role) is quantize-linears'
/// block-scaled GEMM with both operands in 1×128 tiles along the tokens: its result equals the
/// product of the two dequantized operands (the exact accumulator's f32 sums, checked in f64),
/// and differs from the BF16 product by FP8's rounding only.
#[test]
fn fp8_wgrad_tiles_both_operands_along_the_tokens() {
    use dsc_kernels::numerics::fp8::decode;
    use dsc_kernels::{Fp8Format, act_quant_1x128};
    let (n, k, m) = (6usize, 5usize, 300usize);
    let text = format!(
        "graph \"wgrad\"\n\
         input %dy_t: bf16[{n}, {m}]\n\
         input %x_t: bf16[{k}, {m}]\n\
         %dw: f32[{n}, {k}] = linear(%dy_t, %x_t) {{gemm = \"wgrad\"}} role=ffn\n\
         output %dw\n"
    );
    let mut g = parse(&text).unwrap();
    dsc_passes::Pipeline::parse("infer-shapes,assign-precision,quantize-linears")
        .unwrap()
        .run(&mut g, &PassOptions::default(), |_, _| {})
        .unwrap();
    let lowered = g.to_string();
    assert!(lowered.contains("block = [1, 128]"), "{lowered}");
    assert!(!lowered.contains("block = [128, 128]"), "{lowered}");
    assert!(lowered.contains("w_row_tiles = true"), "{lowered}");

    let mut rng = SplitMix64(41);
    let mut bf16 = |len: usize| -> Vec<f32> {
        rng.normals(len)
            .into_iter()
            .map(|v| dsc_runtime::tensor::round_to(DType::Bf16, (v * 3.0) as f32))
            .collect()
    };
    let (dy, x) = (bf16(n * m), bf16(k * m));
    let inputs = HashMap::from([
        (
            "dy_t".to_string(),
            HostTensor::from_f32(DType::Bf16, vec![n, m], dy.clone()).unwrap(),
        ),
        (
            "x_t".to_string(),
            HostTensor::from_f32(DType::Bf16, vec![k, m], x.clone()).unwrap(),
        ),
    ]);
    let out = cpu::run(&g, &Weights::new(), &inputs, &CpuOptions::default()).unwrap();
    let dw = out[0].1.to_f32_vec();

    let quant = |v: &[f32], rows: usize| {
        let q =
            act_quant_1x128(v, rows, m, 128, Fp8Format::E4M3, dsc_ir::ScaleFormat::F32).unwrap();
        let groups = m.div_ceil(128);
        (0..rows * m)
            .map(|i| {
                f64::from(decode(Fp8Format::E4M3, q.codes[i]))
                    * f64::from(q.scales[(i / m) * groups + (i % m) / 128])
            })
            .collect::<Vec<f64>>()
    };
    let (dq, xq) = (quant(&dy, n), quant(&x, k));
    let mut fp8_err = 0.0f64;
    let mut scale = 0.0f64;
    for i in 0..n {
        for j in 0..k {
            let dot =
                |a: &[f64], b: &[f64]| (0..m).map(|t| a[i * m + t] * b[j * m + t]).sum::<f64>();
            let want = dot(&dq, &xq);
            let got = f64::from(dw[i * k + j]);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "dw[{i},{j}] = {got}, dequantized product {want}"
            );
            let exact: f64 = (0..m)
                .map(|t| f64::from(dy[i * m + t]) * f64::from(x[j * m + t]))
                .sum();
            fp8_err += (got - exact).powi(2);
            scale += exact.powi(2);
        }
    }
    // E4M3 keeps 3 mantissa bits: a few percent per product, averaging down over 300 tokens.
    let rel = (fp8_err / scale).sqrt();
    assert!(
        rel > 1e-4 && rel < 0.05,
        "relative error against the BF16 product: {rel}"
    );
}

#[test]
fn mla_slices_of_q_into_nope_and_pe_and_of_the_compressed_kv() {
    // MLA's views (ir/src/model/deepseek.rs): q split per head into nope and rope parts, the
    // kv_a projection split into the compressed kv and the shared k_pe; every part is read,
    // and q_pe is also read twice (the pads of its slices add up).
    check(
        "graph \"t\"\n\
         input %labels: i32[1, 5]\n\
         param @q: f32[1, 5, 2, 12]\n\
         param @kv: f32[1, 5, 10]\n\
         %q_nope: f32[1, 5, 2, 8] = slice(@q) {axis = 3, start = 0, end = 8} role=other\n\
         %q_pe: f32[1, 5, 2, 4] = slice(@q) {axis = 3, start = 8, end = 12} role=other\n\
         %q_rot: f32[1, 5, 2, 4] = rope(%q_pe) {style = \"interleaved\", theta = 10000.0} role=other\n\
         %c_kv: f32[1, 5, 6] = slice(@kv) {axis = -1, start = 0, end = 6} role=other\n\
         %k_pe: f32[1, 5, 4] = slice(@kv) {axis = 2, start = 6, end = 10} role=other\n\
         %k_pe4: f32[1, 5, 1, 4] = reshape(%k_pe) {shape = [1, 5, 1, 4]} role=other\n\
         %k_rot: f32[1, 5, 1, 4] = rope(%k_pe4) {style = \"interleaved\", theta = 10000.0} role=other\n\
         %k_nope: f32[1, 5, 2, 8] = reshape(%q_nope) {shape = [1, 5, 2, 8]} role=other\n\
         %scores: f32[1, 2, 5, 5] = attn_scores(%q_nope, %k_nope, %q_rot, %k_rot) {causal = true, scale = 0.3} role=other\n\
         %probs: f32[1, 2, 5, 5] = softmax(%scores) {axis = -1} role=other\n\
         %v: f32[1, 5, 2, 3] = reshape(%c_kv) {shape = [1, 5, 2, 3]} role=other\n\
         %o: f32[1, 5, 2, 3] = attn_values(%probs, %v) role=other\n\
         %flat: f32[1, 5, 6] = reshape(%o) {shape = [1, 5, 6]} role=other\n\
         %pe2: f32[1, 5, 8] = reshape(%q_pe) {shape = [1, 5, 8]} role=other\n\
         %pe6: f32[1, 5, 6] = slice(%pe2) {axis = 2, start = 1, end = 7} role=other\n\
         %r: f32[1, 5, 6] = add(%flat, %pe6) role=other\n\
         %loss: f32[1] = cross_entropy(%r, %labels) role=other\n\
         output %loss\n",
        6,
    );
}

#[test]
fn matmul_plain_and_with_transpose_b() {
    check(
        "graph \"t\"\n\
         input %labels: i32[2, 3]\n\
         param @a: f32[2, 3, 4]\n\
         param @b: f32[2, 4, 5]\n\
         param @c: f32[2, 6, 5]\n\
         %ab: f32[2, 3, 5] = matmul(@a, @b) role=other\n\
         %abc: f32[2, 3, 6] = matmul(%ab, @c) {transpose_b = true} role=other\n\
         %loss: f32[1] = cross_entropy(%abc, %labels) role=other\n\
         output %loss\n",
        6,
    );
}

#[test]
fn grouped_linear_with_repeated_experts_both_input_forms() {
    // 4 tokens × 2 slots over 3 experts: expert 1 serves five rows, expert 2 none (its
    // gradient is zero); the up projection reads one row per token, the down one per slot.
    check_with(
        "graph \"t\"\n\
         input %labels: i32[4]\n\
         input %idx: i32[4, 2]\n\
         param @x: f32[4, 6]\n\
         param @up: f32[3, 5, 6]\n\
         param @down: f32[3, 6, 5]\n\
         %h: f32[4, 2, 5] = grouped_linear(@x, @up, %idx) role=expert\n\
         %a: f32[4, 2, 5] = silu(%h) role=expert\n\
         %y: f32[4, 2, 6] = grouped_linear(%a, @down, %idx) role=expert\n\
         %f: f32[4, 12] = reshape(%y) {shape = [4, 12]} role=other\n\
         %loss: f32[1] = cross_entropy(%f, %labels) role=other\n\
         output %loss\n",
        12,
        &[("idx", vec![1, 0, 1, 1, 0, 1, 1, 1])],
        &[],
        1e-2,
    );
}

/// The finite differences' step through `moe_topk`: small enough that no perturbation along
/// the test's directions changes which experts are chosen (a jump the derivative does not
/// see), still far above the f32 loss's rounding (the tolerance covers ~1e-4 of it).
const MOE_EPS: f32 = 1e-3;

/// A MoE block as the deepseek preset wires it (gate linear, moe_topk, grouped up/gate/down,
/// swiglu, moe_combine with a shared expert) with `topk` the routing attributes.
fn moe_block(topk: &str, bias: bool) -> String {
    let (bias_param, bias_operand) = if bias {
        ("param @bias: f32[6]\n", ", @bias")
    } else {
        ("", "")
    };
    format!(
        "graph \"t\"\n\
         input %labels: i32[5]\n\
         param @x: f32[5, 8]\n\
         param @gate: f32[6, 8]\n\
         {bias_param}\
         param @wg: f32[6, 4, 8]\n\
         param @wu: f32[6, 4, 8]\n\
         param @wd: f32[6, 8, 4]\n\
         param @shared: f32[8, 8]\n\
         %logits: f32[5, 6] = linear(@x, @gate) role=gating\n\
         %w: f32[5, 2], %idx: i32[5, 2] = moe_topk(%logits{bias_operand}) {{{topk}}} role=gating\n\
         %g: f32[5, 2, 4] = grouped_linear(@x, @wg, %idx) role=expert\n\
         %u: f32[5, 2, 4] = grouped_linear(@x, @wu, %idx) role=expert\n\
         %act: f32[5, 2, 4] = swiglu(%g, %u) role=expert\n\
         %d: f32[5, 2, 8] = grouped_linear(%act, @wd, %idx) role=expert\n\
         %s: f32[5, 8] = linear(@x, @shared) role=shared_expert\n\
         %y: f32[5, 8] = moe_combine(%d, %w, %s) role=expert\n\
         %loss: f32[1] = cross_entropy(%y, %labels) role=other\n\
         output %loss\n"
    )
}

#[test]
fn moe_sigmoid_routing_with_bias_groups_norm_topk_prob_and_route_scale() {
    // DeepSeek-V3's gate: the selection bias changes which experts are chosen but not their
    // weights, so it gets no gradient and the loss is locally constant along it.
    let text = moe_block(
        "n_groups = 2, norm_topk_prob = true, route_scale = 2.5, score_func = \"sigmoid\", \
         top_k = 2, topk_groups = 1",
        true,
    );
    check_with(&text, 8, &[], &["bias"], MOE_EPS);
}

#[test]
fn moe_softmax_routing_without_normalization() {
    // DeepSeek-V2's gate.
    let text = moe_block(
        "n_groups = 1, norm_topk_prob = false, route_scale = 1.0, score_func = \"softmax\", \
         top_k = 2, topk_groups = 1",
        false,
    );
    check_with(&text, 8, &[], &[], MOE_EPS);
}

#[test]
fn moe_softmax_routing_with_normalization_and_route_scale() {
    let text = moe_block(
        "n_groups = 3, norm_topk_prob = true, route_scale = 1.5, score_func = \"softmax\", \
         top_k = 2, topk_groups = 2",
        false,
    );
    check_with(&text, 8, &[], &[], MOE_EPS);
}

#[test]
fn moe_sigmoid_routing_without_normalization() {
    let text = moe_block(
        "n_groups = 1, norm_topk_prob = false, route_scale = 2.0, score_func = \"sigmoid\", \
         top_k = 2, topk_groups = 1",
        false,
    );
    check_with(&text, 8, &[], &[], MOE_EPS);
}

#[test]
fn moe_routing_with_the_sequence_wise_balance_loss() {
    // `[train] balance_loss_alpha`: the balance loss of the gate's scores is added to the
    // loss; its gradient reaches the gate through the scores' normalization (the fractions
    // f_i are the selection's, constant), on top of the routing weights' own.
    for score_func in ["sigmoid", "softmax"] {
        let text = moe_block(
            &format!(
                "n_groups = 1, norm_topk_prob = true, route_scale = 1.0, score_func = \
                 \"{score_func}\", top_k = 2, topk_groups = 1"
            ),
            false,
        )
        .replace(
            "%loss: f32[1] = cross_entropy(%y, %labels) role=other\n",
            &format!(
                "%lm: f32[1] = cross_entropy(%y, %labels) role=other\n\
                 %balance: f32[1] = balance_loss(%logits, %idx) {{alpha = 0.5, score_func = \
                 \"{score_func}\", sequences = 1}} role=gating\n\
                 %loss: f32[1] = add(%lm, %balance) role=head\n"
            ),
        );
        assert!(text.contains("balance_loss"), "{text}");
        check_with(&text, 8, &[], &[], MOE_EPS);
    }
}

/// The activation-gradient ablation (`[train] act_grad_scaling = "128x128"`): a Dgrad linear
/// marked `x_square_blocks` quantizes dY in 128 × 128 blocks, the fused GEMM keeps the mark, and
/// its result is the product of dY dequantized per block and W dequantized per block; a token
/// row with small gradients next to one with large ones loses them to the shared scale.
#[test]
fn the_block_scaled_activation_gradient_ablation_shares_one_scale_per_128_tokens() {
    use dsc_kernels::numerics::fp8::decode;
    use dsc_kernels::{Fp8Format, weight_quant_128x128};
    let (t, n, k) = (130usize, 256usize, 64usize);
    let text = format!(
        "graph \"dgrad\"\n\
         input %dy: bf16[{t}, {n}]\n\
         param @w_t: bf16[{k}, {n}]\n\
         %dx: bf16[{t}, {k}] = linear(%dy, @w_t) {{gemm = \"dgrad\", x_square_blocks = true}} role=ffn\n\
         output %dx\n"
    );
    let mut g = parse(&text).unwrap();
    dsc_passes::Pipeline::parse("infer-shapes,assign-precision,quantize-linears,fuse")
        .unwrap()
        .run(&mut g, &PassOptions::default(), |_, _| {})
        .unwrap();
    let lowered = g.to_string();
    assert!(lowered.contains("f32[2, 2] = quantize(%dy)"), "{lowered}");
    assert!(lowered.contains("fp8_gemm("), "{lowered}");
    assert!(lowered.contains("x_square_blocks = true"), "{lowered}");

    // Token 0's gradients are 1e6 times the others': with one scale per block, token 1's
    // (and every other small token's) round to zero; per 1 × 128 tile they would survive.
    let mut rng = SplitMix64(43);
    let round = |v: f64| dsc_runtime::tensor::round_to(DType::Bf16, v as f32);
    let dy: Vec<f32> = (0..t * n)
        .map(|i| round(rng.normals(1)[0] * if i / n == 0 { 1e3 } else { 1e-3 }))
        .collect();
    let w: Vec<f32> = rng.normals(k * n).into_iter().map(round).collect();
    let mut weights = Weights::new();
    let w_id = g.params[0];
    weights.insert(
        w_id,
        HostTensor::from_f32(DType::Bf16, vec![k, n], w.clone()).unwrap(),
    );
    let inputs = HashMap::from([(
        "dy".to_string(),
        HostTensor::from_f32(DType::Bf16, vec![t, n], dy.clone()).unwrap(),
    )]);
    let out = cpu::run(&g, &weights, &inputs, &CpuOptions::default()).unwrap();
    let dx = out[0].1.to_f32_vec();

    let blocks = |v: &[f32], rows: usize| {
        let (f, sf) = (Fp8Format::E4M3, dsc_ir::ScaleFormat::F32);
        let q = weight_quant_128x128(v, rows, n, 128, f, sf).unwrap();
        let groups = n.div_ceil(128);
        (0..rows * n)
            .map(|i| {
                f64::from(decode(f, q.codes[i]))
                    * f64::from(q.scales[(i / n / 128) * groups + (i % n) / 128])
            })
            .collect::<Vec<f64>>()
    };
    let (dq, wq) = (blocks(&dy, t), blocks(&w, k));
    for i in 0..t {
        for j in 0..k {
            let want: f64 = (0..n).map(|c| dq[i * n + c] * wq[j * n + c]).sum();
            let got = f64::from(dx[i * k + j]);
            // One BF16 rounding of the f32 result.
            assert!(
                (got - want).abs() <= 1e-2 * want.abs().max(1e-3),
                "dx[{i},{j}] = {got}, dequantized product {want}"
            );
        }
    }
    // Rows 1..128 share token 0's scale: their codes are zero, so is their gradient. Rows 128
    // and 129 are a block of their own and keep theirs.
    assert!(dx[k..128 * k].iter().all(|&v| v == 0.0));
    assert!(dx[128 * k..].iter().any(|&v| v != 0.0));
}
