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
    let forward = parse(text).unwrap();
    let mut backward = forward.clone();
    autodiff::run(&mut backward, &PassOptions::default()).unwrap();
    dsc_ir::verify(&backward).unwrap();
    let values = weights(&forward, 7);
    let mut inputs = int_inputs(&forward, label_bound, 11);
    let mut with_seed = inputs.clone();
    with_seed.insert(
        autodiff::LOSS_GRAD_INPUT.into(),
        HostTensor::from_f32(DType::F32, vec![1], vec![1.0]).unwrap(),
    );
    let outputs = run(&backward, &values, &with_seed);
    inputs.retain(|k, _| forward.inputs.iter().any(|&i| forward.name(i) == k));
    let mut rng = SplitMix64(23);
    let eps = 1e-2f32;
    for &p in &forward.params {
        let name = forward.name(p);
        let grad_name = autodiff::grad_name(name);
        let grad = outputs
            .iter()
            .find(|(n, _)| *n == grad_name)
            .unwrap_or_else(|| panic!("no gradient output for `{name}`"))
            .1
            .to_f32_vec();
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
fn a_rule_missing_is_an_error_naming_the_op() {
    let mut g = parse(
        "graph \"t\"\n\
         input %labels: i32[2]\n\
         param @x: f32[2, 8]\n\
         %s: f32[2, 4] = slice(@x) {axis = 1, start = 0, end = 4} role=other\n\
         %loss: f32[1] = cross_entropy(%s, %labels) role=other\n\
         output %loss\n",
    )
    .unwrap();
    let e = autodiff::run(&mut g, &PassOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("op `s`") && e.contains("no VJP rule yet for `slice`"),
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
