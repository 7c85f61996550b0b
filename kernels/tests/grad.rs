//! The backward kernels of `dsc_kernels::ops::grad` against central finite differences, in
//! f64, of small f64 re-implementations of their forwards written here; AdamW against a
//! two-step sequence computed in f64; and every error path's message.
//!
//! Each VJP test draws a random cotangent `u` and compares the kernel's `uᵀJ` with the finite
//! differences of `x ↦ u · f(x)`, so every row and column of the Jacobian counts.

use dsc_kernels::ops::grad::*;
use dsc_kernels::ops::{
    FloatFormat, GroupedDims, GroupedInput, OpError, RopeParams, RopeScaling, RopeStyle, ScoreFunc,
    TopkParams, moe_topk, rope, softmax,
};
use dsc_kernels::rng::SplitMix64;

/// Relative tolerance of a VJP against finite differences. The differences are central, in
/// f64, with steps of 1e-5: their error is ~1e-9 of the gradient's scale. The kernels compute
/// in f32, where cancellation (Σ dy⊙y in softmax, x·r³·mean in RMSNorm) leaves errors of a few
/// 1e-7 of the gradient's largest element, not of each element; 1e-4 of that largest element
/// is far above both and far below any wrong term, sign or factor (errors of order 1).
const TOL: f64 = 1e-4;

/// Widens to f64.
fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Central finite differences of `x ↦ u · f(x)` at `x`, in f64.
fn fd_vjp(x: &[f32], u: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut xs = f64s(x);
    let phi = |y: &[f64]| -> f64 {
        let out = f(y);
        assert_eq!(
            out.len(),
            u.len(),
            "the forward's size is not the cotangent's"
        );
        out.iter().zip(u).map(|(a, b)| a * b).sum()
    };
    (0..xs.len())
        .map(|i| {
            let x0 = xs[i];
            let h = 1e-5 * x0.abs().max(1.0);
            xs[i] = x0 + h;
            let plus = phi(&xs);
            xs[i] = x0 - h;
            let minus = phi(&xs);
            xs[i] = x0;
            (plus - minus) / (2.0 * h)
        })
        .collect()
}

/// Asserts `|got − want| ≤ TOL · max|want|` elementwise (see [`TOL`]).
#[track_caller]
fn assert_vjp(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    // A gradient of ~0 everywhere would let a kernel returning zeros pass.
    assert!(scale > 1e-3, "{what}: degenerate test, the gradient is ~0");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= TOL * scale,
            "{what}[{i}]: kernel {g} vs finite differences {w} (err {err:e}, scale {scale:e})"
        );
    }
}

/// The message of an error.
#[track_caller]
fn message<T: std::fmt::Debug>(r: Result<T, OpError>) -> String {
    r.expect_err("expected an error").to_string()
}

// ---- f64 forwards -------------------------------------------------------------------------

/// Mean cross-entropy of `[rows, vocab]` logits, in f64.
fn cross_entropy64(logits: &[f64], labels: &[i32], vocab: usize) -> f64 {
    let rows = labels.len();
    let total: f64 = logits
        .chunks(vocab)
        .zip(labels)
        .map(|(row, &l)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - row[l as usize]
        })
        .sum();
    total / rows as f64
}

/// `w ⊙ x / sqrt(mean(x²) + eps)` per row of `d`, in f64.
fn rms_norm64(x: &[f64], w: &[f64], d: usize, eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let r = 1.0 / (ms + eps).sqrt();
            row.iter().zip(w).map(move |(v, wv)| wv * v * r)
        })
        .collect()
}

/// (outer, len, inner) of `dims` around `axis`.
fn split(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = dims[..axis].iter().product();
    let inner = dims[axis + 1..].iter().product();
    (outer, dims[axis], inner)
}

/// Softmax along `axis` of `dims`, in f64.
fn softmax64(x: &[f64], dims: &[usize], axis: usize) -> Vec<f64> {
    let (outer, len, inner) = split(dims, axis);
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |a: usize| (o * len + a) * inner + j;
            let max = (0..len).map(|a| x[at(a)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|a| (x[at(a)] - max).exp()).sum();
            for a in 0..len {
                y[at(a)] = (x[at(a)] - max).exp() / sum;
            }
        }
    }
    y
}

/// The sum over `axis` of `dims`, which is dropped, in f64.
fn sum_axis64(x: &[f64], dims: &[usize], axis: usize) -> Vec<f64> {
    let (outer, len, inner) = split(dims, axis);
    let mut y = vec![0.0; outer * inner];
    for o in 0..outer {
        for a in 0..len {
            for j in 0..inner {
                y[o * inner + j] += x[(o * len + a) * inner + j];
            }
        }
    }
    y
}

/// `y` (shape `dims` without `axis`) repeated along `axis`: the forward whose VJP is a sum.
fn broadcast64(y: &[f64], dims: &[usize], axis: usize) -> Vec<f64> {
    let (outer, len, inner) = split(dims, axis);
    let mut x = vec![0.0; outer * len * inner];
    for o in 0..outer {
        for a in 0..len {
            for j in 0..inner {
                x[(o * len + a) * inner + j] = y[o * inner + j];
            }
        }
    }
    x
}

/// `x · sigmoid(x)` in f64.
fn silu64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// RoPE of `x[b, s, h, d]` without scaling, frequencies `theta^(−2i/d)` and angles in f64.
fn rope64(x: &[f64], dims: [usize; 4], style: RopeStyle, theta: f64) -> Vec<f64> {
    let [_, seq, heads, d] = dims;
    let half = d / 2;
    let mut y = vec![0.0; x.len()];
    for (row, (yr, xr)) in y.chunks_mut(heads * d).zip(x.chunks(heads * d)).enumerate() {
        let p = (row % seq) as f64;
        for (yh, xh) in yr.chunks_mut(d).zip(xr.chunks(d)) {
            for j in 0..half {
                let angle = p * theta.powf(-2.0 * j as f64 / d as f64);
                let (c, s) = (angle.cos(), angle.sin());
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                    RopeStyle::Half => (j, j + half),
                };
                yh[a] = xh[a] * c - xh[b] * s;
                yh[b] = xh[b] * c + xh[a] * s;
            }
        }
    }
    y
}

/// `table[ids[i], :]` for every position, in f64.
fn embedding64(ids: &[i32], table: &[f64], d: usize) -> Vec<f64> {
    ids.iter()
        .flat_map(|&id| table[id as usize * d..][..d].to_vec())
        .collect()
}

// ---- cross-entropy ------------------------------------------------------------------------

#[test]
fn cross_entropy_is_the_mean_of_logsumexp_minus_the_label_logit() {
    let (rows, vocab) = (5, 11);
    let mut rng = SplitMix64(1);
    let logits = rng.symmetric_f32s(rows * vocab, 4.0);
    let labels = [3, 0, 10, 7, 3];
    let got = cross_entropy(&logits, &labels, rows, vocab).unwrap() as f64;
    let want = cross_entropy64(&f64s(&logits), &labels, vocab);
    assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    // Max-subtracted: logits near f32's largest values do not overflow.
    let big: Vec<f32> = logits.iter().map(|v| v + 1e30).collect();
    assert!(
        cross_entropy(&big, &labels, rows, vocab)
            .unwrap()
            .is_finite()
    );
}

#[test]
fn cross_entropy_grad_is_the_vjp() {
    let (rows, vocab) = (6, 9);
    let mut rng = SplitMix64(2);
    let logits = rng.symmetric_f32s(rows * vocab, 3.0);
    let labels = [8, 0, 4, 4, 1, 6];
    let dloss = 0.75f32;
    let got = cross_entropy_grad(&logits, &labels, rows, vocab, dloss).unwrap();
    let want = fd_vjp(&logits, &[dloss as f64], |x| {
        vec![cross_entropy64(x, &labels, vocab)]
    });
    assert_vjp("dlogits", &got, &want);
}

#[test]
fn cross_entropy_refuses_bad_labels_and_sizes() {
    let logits = [0.0f32; 12];
    let bad = [
        (
            vec![1, 2, 4],
            "cross_entropy label 4 (at row 2) is out of range for a vocabulary of 4",
        ),
        (
            vec![-1, 2, 3],
            "cross_entropy label -1 (at row 0) is out of range for a vocabulary of 4",
        ),
    ];
    for (labels, want) in bad {
        assert_eq!(message(cross_entropy(&logits, &labels, 3, 4)), want);
        assert_eq!(
            message(cross_entropy_grad(&logits, &labels, 3, 4, 1.0)),
            want
        );
    }
    assert_eq!(
        message(cross_entropy(&logits, &[0, 1], 3, 4)),
        "labels: expected 3 elements, got 2"
    );
    assert_eq!(
        message(cross_entropy_grad(&logits, &[0, 1, 2], 3, 5, 1.0)),
        "logits: expected 15 elements, got 12"
    );
    assert!(message(cross_entropy(&[], &[], 0, 4)).contains("at least one row"));
}

// ---- RMSNorm ------------------------------------------------------------------------------

/// Checks `rms_norm_grad` against finite differences for `rows` rows of `d`.
fn check_rms_norm_grad(rows: usize, d: usize, seed: u64) {
    let eps = 1e-6;
    let mut rng = SplitMix64(seed);
    let x = rng.symmetric_f32s(rows * d, 1.5);
    let w: Vec<f32> = rng.symmetric_f32s(d, 0.5).iter().map(|v| 1.0 + v).collect();
    let dy = rng.symmetric_f32s(rows * d, 1.0);
    let u = f64s(&dy);
    let (dx, dw) = rms_norm_grad(&x, &w, &dy, rows, d, eps).unwrap();
    let (x64, w64) = (f64s(&x), f64s(&w));
    assert_vjp("dx", &dx, &fd_vjp(&x, &u, |x| rms_norm64(x, &w64, d, eps)));
    assert_vjp("dw", &dw, &fd_vjp(&w, &u, |w| rms_norm64(&x64, w, d, eps)));
}

#[test]
fn rms_norm_grad_is_the_vjp() {
    check_rms_norm_grad(4, 16, 3);
}

#[test]
fn rms_norm_grad_sums_dw_over_many_rows() {
    // More rows than one leaf of the pairwise tree (32), so dw joins partial sums.
    check_rms_norm_grad(70, 6, 4);
}

#[test]
fn rms_norm_grad_refuses_bad_sizes() {
    let x = [1.0f32; 6];
    assert_eq!(
        message(rms_norm_grad(&x, &[1.0; 3], &[0.0; 5], 2, 3, 1e-6)),
        "dy: expected 6 elements, got 5"
    );
    assert_eq!(
        message(rms_norm_grad(&x, &[1.0; 2], &[0.0; 6], 2, 3, 1e-6)),
        "weight: expected 3 elements, got 2"
    );
    assert_eq!(
        message(rms_norm_grad(&x, &[1.0; 3], &[0.0; 6], 2, 3, 0.0)),
        "rms_norm_grad eps must be positive, got 0"
    );
}

// ---- softmax ------------------------------------------------------------------------------

#[test]
fn softmax_grad_is_the_vjp_along_every_axis() {
    let dims = [3, 5, 4];
    let mut rng = SplitMix64(5);
    let x = rng.symmetric_f32s(60, 3.0);
    for axis in 0..3 {
        let y = softmax(&x, &dims, axis).unwrap();
        let dy = rng.symmetric_f32s(60, 1.0);
        let got = softmax_grad(&y, &dy, &dims, axis).unwrap();
        let want = fd_vjp(&x, &f64s(&dy), |x| softmax64(x, &dims, axis));
        assert_vjp(&format!("dx along axis {axis}"), &got, &want);
    }
}

#[test]
fn softmax_grad_refuses_bad_sizes() {
    assert_eq!(
        message(softmax_grad(&[0.0; 6], &[0.0; 4], &[2, 3], 1)),
        "dy: expected 6 elements, got 4"
    );
    assert_eq!(
        message(softmax_grad(&[0.0; 6], &[0.0; 6], &[2, 3], 2)),
        "softmax_grad axis 2 is out of range for shape [2, 3]"
    );
    assert_eq!(
        message(softmax_grad(&[0.0; 5], &[0.0; 5], &[2, 3], 0)),
        "y: expected 6 elements, got 5"
    );
}

// ---- SiLU, SwiGLU, scale ------------------------------------------------------------------

#[test]
fn silu_grad_is_the_vjp() {
    let mut rng = SplitMix64(6);
    let x = rng.symmetric_f32s(64, 6.0);
    let dy = rng.symmetric_f32s(64, 1.0);
    let got = silu_grad(&x, &dy).unwrap();
    let want = fd_vjp(&x, &f64s(&dy), |x| x.iter().map(|&v| silu64(v)).collect());
    assert_vjp("dx", &got, &want);
}

#[test]
fn swiglu_grad_is_the_vjp() {
    let mut rng = SplitMix64(7);
    let gate = rng.symmetric_f32s(48, 5.0);
    let up = rng.symmetric_f32s(48, 2.0);
    let dy = rng.symmetric_f32s(48, 1.0);
    let (dgate, dup) = swiglu_grad(&gate, &up, &dy).unwrap();
    let (g64, u64s, dy64) = (f64s(&gate), f64s(&up), f64s(&dy));
    let fwd = |g: &[f64], u: &[f64]| -> Vec<f64> {
        g.iter().zip(u).map(|(&g, &u)| silu64(g) * u).collect()
    };
    assert_vjp("dgate", &dgate, &fd_vjp(&gate, &dy64, |g| fwd(g, &u64s)));
    assert_vjp("dup", &dup, &fd_vjp(&up, &dy64, |u| fwd(&g64, u)));
}

#[test]
fn elementwise_grads_refuse_mismatched_lengths_and_scale_scales() {
    assert_eq!(
        message(silu_grad(&[0.0; 3], &[0.0; 2])),
        "dy: expected 3 elements, got 2"
    );
    assert_eq!(
        message(swiglu_grad(&[0.0; 3], &[0.0; 4], &[0.0; 3])),
        "up: expected 3 elements, got 4"
    );
    assert_eq!(
        message(swiglu_grad(&[0.0; 3], &[0.0; 3], &[0.0; 1])),
        "dy: expected 3 elements, got 1"
    );
    assert_eq!(scale(&[1.0, -2.0, 0.5], 4.0), vec![4.0, -8.0, 2.0]);
    assert!(scale(&[], 2.0).is_empty());
}

// ---- RoPE ---------------------------------------------------------------------------------

#[test]
fn rope_grad_is_the_vjp_in_both_styles() {
    let dims = [2, 3, 2, 8];
    let theta = 10000.0;
    let n = dims.iter().product();
    for (seed, style) in [(8, RopeStyle::Interleaved), (9, RopeStyle::Half)] {
        let mut rng = SplitMix64(seed);
        let x = rng.symmetric_f32s(n, 1.0);
        let dy = rng.symmetric_f32s(n, 1.0);
        let params = RopeParams {
            style,
            theta,
            scaling: None,
        };
        let got = rope_grad(&dy, dims, &params).unwrap();
        let want = fd_vjp(&x, &f64s(&dy), |x| rope64(x, dims, style, theta));
        assert_vjp(&format!("dx ({style:?})"), &got, &want);
    }
}

#[test]
fn rope_grad_is_the_adjoint_of_rope_with_yarn_scaling() {
    // YaRN's attention factor makes the map a scaled rotation: its transpose is not its
    // inverse, so ⟨rope(x), u⟩ = ⟨x, rope_grad(u)⟩ checks the factor is applied.
    let dims = [1, 5, 3, 16];
    let n = dims.iter().product();
    for style in RopeStyle::ALL {
        let params = RopeParams {
            style,
            theta: 10000.0,
            scaling: Some(RopeScaling::Yarn {
                factor: 40.0,
                original_max_position: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 0.0,
            }),
        };
        assert!(params.attention_scaling() > 1.1);
        let mut rng = SplitMix64(10);
        let (x, u) = (rng.symmetric_f32s(n, 1.0), rng.symmetric_f32s(n, 1.0));
        let y = rope(&x, dims, &params, FloatFormat::F32).unwrap();
        let g = rope_grad(&u, dims, &params).unwrap();
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
        };
        let (lhs, rhs) = (dot(&y, &u), dot(&x, &g));
        assert!(
            (lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0),
            "{style:?}: <rope(x), u> = {lhs}, <x, rope_grad(u)> = {rhs}"
        );
    }
}

#[test]
fn rope_grad_refuses_bad_sizes() {
    let p = RopeParams {
        style: RopeStyle::Half,
        theta: 10000.0,
        scaling: None,
    };
    assert_eq!(
        message(rope_grad(&[0.0; 6], [1, 1, 2, 3], &p)),
        "rope_grad needs an even head_dim, got 3"
    );
    assert_eq!(
        message(rope_grad(&[0.0; 7], [1, 1, 2, 4], &p)),
        "dy: expected 8 elements, got 7"
    );
}

// ---- embedding ----------------------------------------------------------------------------

#[test]
fn embedding_grad_is_the_vjp() {
    let (vocab, d) = (6, 3);
    // Repeated ids accumulate; id 2 and 3 receive nothing.
    let ids = [1, 4, 1, 0, 5, 1];
    let mut rng = SplitMix64(11);
    let table = rng.symmetric_f32s(vocab * d, 1.0);
    let dy = rng.symmetric_f32s(ids.len() * d, 1.0);
    let got = embedding_grad(&ids, &dy, vocab, d).unwrap();
    let want = fd_vjp(&table, &f64s(&dy), |t| embedding64(&ids, t, d));
    assert_vjp("dtable", &got, &want);
    // Accumulated in position order, in f32: bit for bit the sequential sum.
    for k in 0..d {
        let row1 = 0.0f32 + dy[k] + dy[2 * d + k] + dy[5 * d + k];
        assert_eq!(got[d + k].to_bits(), row1.to_bits());
        assert_eq!(got[2 * d + k], 0.0);
    }
}

#[test]
fn embedding_grad_refuses_bad_ids_and_sizes() {
    assert_eq!(
        message(embedding_grad(&[0, 2, 1, 6], &[0.0; 8], 6, 2)),
        "embedding_grad id 6 (at position 3) is out of range for a table of 6 rows"
    );
    assert_eq!(
        message(embedding_grad(&[-2, 0], &[0.0; 4], 6, 2)),
        "embedding_grad id -2 (at position 0) is out of range for a table of 6 rows"
    );
    // Ids are checked even when rows are empty.
    assert!(message(embedding_grad(&[9], &[], 6, 0)).contains("id 9"));
    assert_eq!(
        message(embedding_grad(&[0, 1], &[0.0; 3], 6, 2)),
        "dy: expected 4 elements, got 3"
    );
}

// ---- sum over an axis ---------------------------------------------------------------------

#[test]
fn sum_axis_is_the_vjp_of_a_broadcast_along_every_axis() {
    let dims = [3, 4, 5];
    let mut rng = SplitMix64(12);
    for axis in 0..3 {
        let y = rng.symmetric_f32s(60 / dims[axis], 1.0);
        let u = rng.symmetric_f32s(60, 2.0);
        let got = sum_axis(&u, &dims, axis).unwrap();
        let want = fd_vjp(&y, &f64s(&u), |y| broadcast64(y, &dims, axis));
        assert_vjp(&format!("sum along axis {axis}"), &got, &want);
    }
}

#[test]
fn sum_axis_does_not_depend_on_the_layout() {
    // 70 rows: more than one leaf (32) of the pairwise tree. Summing the strided axis 0 of
    // [70, 3] and the contiguous axis 1 of its transpose [3, 70] must agree bit for bit.
    let (n, m) = (70, 3);
    let x = SplitMix64(13).symmetric_f32s(n * m, 1e3);
    let xt: Vec<f32> = (0..m * n).map(|k| x[(k % n) * m + k / n]).collect();
    let down = sum_axis(&x, &[n, m], 0).unwrap();
    let across = sum_axis(&xt, &[m, n], 1).unwrap();
    assert_eq!(
        down.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        across.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let want = sum_axis64(&f64s(&x), &[n, m], 0);
    for (&g, &w) in down.iter().zip(&want) {
        assert!((g as f64 - w).abs() <= 1e-6 * 1e3 * n as f64, "{g} vs {w}");
    }
}

#[test]
fn sum_axis_handles_empty_axes_and_refuses_bad_ones() {
    // Summing an empty axis gives zeros of the remaining shape.
    assert_eq!(sum_axis(&[], &[2, 0, 3], 1).unwrap(), vec![0.0; 6]);
    assert_eq!(sum_axis(&[1.0, 2.0], &[2], 0).unwrap(), vec![3.0]);
    assert_eq!(
        message(sum_axis(&[0.0; 6], &[2, 3], 2)),
        "sum_axis axis 2 is out of range for shape [2, 3]"
    );
    assert_eq!(
        message(sum_axis(&[0.0; 5], &[2, 3], 0)),
        "x: expected 6 elements, got 5"
    );
}

// ---- AdamW, clipping ----------------------------------------------------------------------

/// bfloat16 rounding (nearest even) of a finite value, via f32.
fn bf16(x: f64) -> f64 {
    let b = (x as f32).to_bits();
    f32::from_bits((b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000) as f64
}

/// One AdamW step in f64 as torch.optim.AdamW defines it; `round` stores the moments.
fn adamw64(
    p: &[f64],
    g: &[f64],
    m: &[f64],
    v: &[f64],
    hp: &AdamW,
    round: fn(f64) -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (lr, b1, b2) = (hp.lr as f64, hp.beta1 as f64, hp.beta2 as f64);
    let (eps, wd, gs) = (hp.eps as f64, hp.weight_decay as f64, hp.grad_scale as f64);
    let (bc1, bc2) = (1.0 - b1.powi(hp.step as i32), 1.0 - b2.powi(hp.step as i32));
    let mut out = (vec![], vec![], vec![]);
    for i in 0..p.len() {
        let g = g[i] * gs;
        let m1 = round(b1 * m[i] + (1.0 - b1) * g);
        let v1 = round(b2 * v[i] + (1.0 - b2) * g * g);
        out.0
            .push(p[i] * (1.0 - lr * wd) - lr * (m1 / bc1) / ((v1 / bc2).sqrt() + eps));
        out.1.push(m1);
        out.2.push(v1);
    }
    out
}

/// Asserts `|got − want| ≤ tol · max(|want|, floor)` elementwise.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * w.abs().max(floor),
            "{what}[{i}]: {g} vs {w} (err {err:e})"
        );
    }
}

/// The two-step test: parameters, the two gradients, and the hyperparameters of step 1 (step
/// 2 clips its gradient by 0.5).
fn adamw_case() -> (Vec<f32>, [Vec<f32>; 2], AdamW) {
    let p = vec![1.0, -0.5, 0.25, 2.0, -3.0, 0.0];
    let g1 = vec![0.1, -0.2, 0.3, 0.013, -1.7, 0.05];
    let g2 = vec![-0.07, -0.31, 0.29, 0.5, 0.9, 0.0];
    let hp = AdamW {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
        grad_scale: 1.0,
    };
    (p, [g1, g2], hp)
}

/// Runs the two steps with the kernel and in f64, compares each state, returns the kernel's
/// final (param, m).
fn run_two_steps(moments: FloatFormat, round: fn(f64) -> f64) -> (Vec<f32>, Vec<f32>) {
    let (p0, grads, hp1) = adamw_case();
    let hp2 = AdamW {
        step: 2,
        grad_scale: 0.5,
        ..hp1
    };
    let zeros = vec![0.0f32; p0.len()];
    let (mut p, mut m, mut v) = (p0.clone(), zeros.clone(), zeros);
    let (mut pe, mut me, mut ve) = (f64s(&p), f64s(&m), f64s(&v));
    for (g, hp) in grads.iter().zip([hp1, hp2]) {
        (p, m, v) = adamw(&p, g, &m, &v, &hp, moments).unwrap();
        (pe, me, ve) = adamw64(&pe, &f64s(g), &me, &ve, &hp, round);
        let what = format!("{moments:?} step {}", hp.step);
        // f32 against f64: a few ulps of each state. The moments are compared to 1e-6,
        // tighter than a bf16 ulp (2^-8), so the BF16 values must be the f64 ones rounded.
        assert_close(&format!("{what} param"), &p, &pe, 1e-6, 1.0);
        assert_close(&format!("{what} m"), &m, &me, 1e-6, 1e-12);
        assert_close(&format!("{what} v"), &v, &ve, 1e-6, 1e-12);
    }
    (p, m)
}

#[test]
fn adamw_matches_a_two_step_f64_sequence() {
    let (p32, m32) = run_two_steps(FloatFormat::F32, |x| x);
    let (p16, m16) = run_two_steps(FloatFormat::Bf16, bf16);
    // BF16 moments are bf16 values, and their rounding shows in the moments and parameters.
    assert!(m16.iter().all(|m| m.to_bits() & 0xffff == 0), "{m16:?}");
    assert!(m32.iter().zip(&m16).any(|(a, b)| a != b));
    let dp = p32
        .iter()
        .zip(&p16)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        dp > 1e-6,
        "bf16 moments changed the parameters by only {dp}"
    );
}

#[test]
fn adamw_first_step_moves_each_parameter_by_lr_against_its_gradient() {
    // At step 1 from zero moments the bias-corrected update is g / (|g| + eps) ≈ sign(g).
    let (p, [g, _], hp) = adamw_case();
    let zeros = vec![0.0f32; p.len()];
    let (p1, m1, v1) = adamw(&p, &g, &zeros, &zeros, &hp, FloatFormat::F32).unwrap();
    for i in 0..p.len() {
        let decayed = p[i] as f64 * (1.0 - 0.01 * 0.1);
        let step = if g[i] == 0.0 {
            0.0
        } else {
            0.01 * (g[i] as f64).signum()
        };
        let err = (p1[i] as f64 - (decayed - step)).abs();
        assert!(err < 1e-6, "param {i}: {} vs {}", p1[i], decayed - step);
        // (1 − β) of the f32 betas: 0.999f32 is 0.99900001287…, so 1 − β2 is 1.3e-5 off 0.001.
        let (m_want, v_want) = (
            (1.0 - hp.beta1 as f64) * g[i] as f64,
            (1.0 - hp.beta2 as f64) * g[i] as f64 * g[i] as f64,
        );
        assert!(
            (m1[i] as f64 - m_want).abs() <= 1e-6 * m_want.abs(),
            "m {i}"
        );
        assert!(
            (v1[i] as f64 - v_want).abs() <= 1e-6 * v_want.abs(),
            "v {i}"
        );
    }
}

#[test]
fn adamw_with_a_small_beta1_takes_the_other_lerp_branch() {
    // β1 < 1/2 makes torch's lerp weight 1 − β1 exceed 1/2, where it switches formulas.
    let (p, [g, _], hp) = adamw_case();
    let hp = AdamW {
        beta1: 0.2,
        step: 3,
        ..hp
    };
    let mut rng = SplitMix64(14);
    let m = rng.symmetric_f32s(p.len(), 0.5);
    let v: Vec<f32> = rng
        .symmetric_f32s(p.len(), 0.1)
        .iter()
        .map(|x| x * x)
        .collect();
    let (p1, m1, v1) = adamw(&p, &g, &m, &v, &hp, FloatFormat::F32).unwrap();
    let (pe, me, ve) = adamw64(&f64s(&p), &f64s(&g), &f64s(&m), &f64s(&v), &hp, |x| x);
    assert_close("param", &p1, &pe, 1e-6, 1.0);
    assert_close("m", &m1, &me, 1e-6, 1e-3);
    assert_close("v", &v1, &ve, 1e-6, 1e-6);
}

#[test]
fn adamw_refuses_bad_hyperparameters_and_sizes() {
    let (p, [g, _], hp) = adamw_case();
    let z = vec![0.0f32; p.len()];
    let run = |hp: AdamW| message(adamw(&p, &g, &z, &z, &hp, FloatFormat::Bf16));
    assert_eq!(
        run(AdamW { step: 0, ..hp }),
        "adamw: step is 1-based, got 0"
    );
    assert_eq!(
        run(AdamW { lr: f32::NAN, ..hp }),
        "adamw: lr must be finite, got NaN"
    );
    assert_eq!(
        run(AdamW {
            grad_scale: f32::INFINITY,
            ..hp
        }),
        "adamw: grad_scale must be finite, got inf"
    );
    assert_eq!(
        run(AdamW { beta2: 1.0, ..hp }),
        "adamw: beta2 must be below 1, got 1"
    );
    assert_eq!(
        run(AdamW {
            weight_decay: -0.1,
            ..hp
        }),
        "adamw: weight_decay must not be negative, got -0.1"
    );
    assert_eq!(
        message(adamw(&p, &g, &z[..5], &z, &hp, FloatFormat::F32)),
        "m: expected 6 elements, got 5"
    );
    assert_eq!(
        message(adamw(&p, &g[..2], &z, &z, &hp, FloatFormat::F32)),
        "grad: expected 6 elements, got 2"
    );
}

#[test]
fn global_norm_accumulates_in_f64() {
    assert_eq!(global_norm(&[&[3.0], &[], &[4.0]]), 5.0);
    assert_eq!(global_norm(&[]), 0.0);
    // 1e8 + 1000 ones: in f32 each 1 would vanish against 1e8 (its ulp is 8) and the norm be
    // 10000 exactly; in f64 it is sqrt(1e8 + 1000).
    let ones = vec![1.0f32; 1000];
    let norm = global_norm(&[&[1e4], &ones]);
    assert_eq!(norm, (1e8f64 + 1000.0).sqrt() as f32);
    assert_ne!(norm, 1e4);
}

#[test]
fn clip_scale_clips_only_above_the_maximum() {
    assert_eq!(clip_scale(10.0, 1.0), 1.0 / (10.0 + 1e-6));
    assert!((clip_scale(4.0, 2.0) - 0.5).abs() < 1e-6);
    assert_eq!(clip_scale(0.5, 1.0), 1.0);
    assert_eq!(clip_scale(1.0, 1.0), 1.0);
    // max_norm 0 (or negative) turns clipping off.
    assert_eq!(clip_scale(1e9, 0.0), 1.0);
    assert_eq!(clip_scale(1e9, -1.0), 1.0);
}

// ---- pad (the VJP of slice) ---------------------------------------------------------------

#[test]
fn pad_is_the_vjp_of_slice_along_every_axis() {
    let dims = [3, 5, 4];
    let mut rng = SplitMix64(21);
    let x = rng.symmetric_f32s(60, 1.0);
    for (axis, start, end) in [(0, 1, 3), (1, 0, 2), (1, 2, 5), (2, 1, 2)] {
        let mut sliced = dims;
        sliced[axis] = end - start;
        let u = rng.symmetric_f32s(sliced.iter().product(), 1.0);
        let got = pad(&u, &sliced, axis, start, dims[axis] - end, 0.0).unwrap();
        let want = fd_vjp(&x, &f64s(&u), |x| {
            dsc_kernels::ops::slice(x, &dims, axis, start, end).unwrap()
        });
        assert_vjp(&format!("pad along axis {axis}"), &got, &want);
    }
}

#[test]
fn pad_puts_zeros_around_and_refuses_bad_axes() {
    assert_eq!(
        pad(&[1, 2, 3, 4], &[2, 2], 1, 1, 2, 0).unwrap(),
        vec![0, 1, 2, 0, 0, 0, 3, 4, 0, 0]
    );
    assert_eq!(pad(&[7u8], &[1], 0, 0, 0, 0).unwrap(), vec![7]);
    assert_eq!(
        message(pad(&[0.0; 4], &[2, 2], 2, 1, 1, 0.0)),
        "pad axis 2 is out of range for shape [2, 2]"
    );
    assert_eq!(
        message(pad(&[0.0; 3], &[2, 2], 0, 1, 1, 0.0)),
        "x: expected 4 elements, got 3"
    );
}

// ---- MoE: grouped Wgrad, combine, routing weights -----------------------------------------

/// `out[t, j] = x[t(, j)] · w[idx[t, j]]ᵀ` in f64: w `[e, n, kk]`, idx `[t, k]`, x `[t, kk]`
/// (per token) or `[t, k, kk]` (per slot).
fn grouped_linear64(
    x: &[f64],
    per_slot: bool,
    w: &[f64],
    idx: &[i32],
    k: usize,
    n: usize,
    kk: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(idx.len() * n);
    for (row, &ex) in idx.iter().enumerate() {
        let xr = &x[if per_slot { row } else { row / k } * kk..][..kk];
        let wm = &w[ex as usize * n * kk..][..n * kk];
        out.extend((0..n).map(|o| (0..kk).map(|c| xr[c] * wm[o * kk + c]).sum::<f64>()));
    }
    out
}

fn moe_dims(t: usize, k: usize, e: usize, n: usize, kk: usize) -> GroupedDims {
    GroupedDims {
        tokens: t,
        top_k: k,
        experts: e,
        out_features: n,
        in_features: kk,
    }
}

#[test]
fn grouped_linear_wgrad_is_the_vjp_for_both_input_forms() {
    // 5 tokens × 2 slots over 4 experts: expert 1 serves six rows (one token twice), expert 3
    // none, so its gradient must be zero.
    let (t, k, e, n, kk) = (5, 2, 4, 3, 6);
    let idx = [1, 0, 1, 1, 2, 1, 0, 1, 1, 2];
    let mut rng = SplitMix64(22);
    let w = rng.symmetric_f32s(e * n * kk, 1.0);
    let dy = rng.symmetric_f32s(t * k * n, 1.0);
    for (input, rows) in [(GroupedInput::PerToken, t), (GroupedInput::PerSlot, t * k)] {
        let x = rng.symmetric_f32s(rows * kk, 1.0);
        let got = grouped_linear_wgrad(&dy, &x, input, &idx, moe_dims(t, k, e, n, kk)).unwrap();
        let per_slot = input == GroupedInput::PerSlot;
        let want = fd_vjp(&w, &f64s(&dy), |w| {
            grouped_linear64(&f64s(&x), per_slot, w, &idx, k, n, kk)
        });
        assert_vjp(&format!("dw {input:?}"), &got, &want);
        assert!(got[3 * n * kk..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn grouped_linear_wgrad_refuses_bad_indices_and_sizes() {
    let d = moe_dims(2, 1, 3, 2, 2);
    assert_eq!(
        message(grouped_linear_wgrad(
            &[0.0; 4],
            &[0.0; 4],
            GroupedInput::PerToken,
            &[0, 3],
            d
        )),
        "grouped_linear_wgrad expert index 3 (token 1, slot 0) is out of range for 3 experts"
    );
    assert_eq!(
        message(grouped_linear_wgrad(
            &[0.0; 3],
            &[0.0; 4],
            GroupedInput::PerToken,
            &[0, 1],
            d
        )),
        "dy: expected 4 elements, got 3"
    );
}

/// The FP8 Wgrad of the routed experts as its definition reads, one element at a time: the
/// expert's rows in row order, groups of `tile` of them, each column's scale from its group's
/// amax, the decoded codes' products summed in row order per interval from +0, then
/// `acc = acc + partial · (s_dy · s_x)`.
fn grouped_wgrad_fp8_scalar(
    dy: &[f32],
    x: &[f32],
    per_slot: bool,
    idx: &[i32],
    d: GroupedDims,
    f: GroupedWgradFp8,
) -> Vec<f32> {
    use dsc_kernels::numerics::fp8::{Fp8Format, decode, encode};
    use dsc_kernels::numerics::scale::scale_for;
    let fmt = Fp8Format::from_dtype(f.format).unwrap();
    let (n, kk) = (d.out_features, d.in_features);
    let mut dw = vec![0.0f32; d.experts * n * kk];
    for ex in 0..d.experts {
        let rows: Vec<usize> = (0..idx.len()).filter(|&r| idx[r] == ex as i32).collect();
        let dy_at = |r: usize, j: usize| dy[rows[r] * n + j];
        let x_at = |r: usize, c: usize| {
            let row = if per_slot { rows[r] } else { rows[r] / d.top_k };
            x[row * kk + c]
        };
        for j in 0..n {
            for c in 0..kk {
                let mut acc = 0.0f32;
                for g0 in (0..rows.len()).step_by(f.tile) {
                    let g1 = (g0 + f.tile).min(rows.len());
                    let amax =
                        |v: &dyn Fn(usize) -> f32| (g0..g1).fold(0.0f32, |a, r| a.max(v(r).abs()));
                    let s_dy = scale_for(amax(&|r| dy_at(r, j)), fmt, f.dy_scale_format);
                    let s_x = scale_for(amax(&|r| x_at(r, c)), fmt, f.x_scale_format);
                    let q = |v: f32, s: f32| decode(fmt, encode(fmt, v / s));
                    for i0 in (g0..g1).step_by(f.interval) {
                        let mut partial = 0.0f32;
                        for r in i0..(i0 + f.interval).min(g1) {
                            partial += q(dy_at(r, j), s_dy) * q(x_at(r, c), s_x);
                        }
                        acc += partial * (s_dy * s_x);
                    }
                }
                dw[(ex * n + j) * kk + c] = acc;
            }
        }
    }
    dw
}

#[test]
fn grouped_linear_wgrad_fp8_is_its_definition_bit_for_bit() {
    use dsc_ir::{DType, ScaleFormat};
    use dsc_kernels::numerics::accumulate::Accumulator;
    // 150 tokens × 2 slots over 3 experts, most rows to expert 0 (two groups of 128 and a
    // ragged one), expert 2 none; tiles of 128 and 64 with 32-row intervals; both scale
    // formats; x per token and per slot; an outlier column, a NaN and an infinity.
    let (t, k, e, n, kk) = (150, 2, 3, 5, 7);
    let mut rng = SplitMix64(41);
    let idx: Vec<i32> = (0..t * k)
        .map(|_| i32::from(rng.next_u64().is_multiple_of(5)))
        .collect();
    let mut dy = rng.symmetric_f32s(t * k * n, 1.0);
    dy[3 * n + 1] = 300.0;
    for (tile, interval, dy_format, x_format) in [
        (128, 128, ScaleFormat::F32, ScaleFormat::Ue8m0),
        (64, 32, ScaleFormat::Ue8m0, ScaleFormat::F32),
    ] {
        let f = GroupedWgradFp8 {
            format: DType::F8E4M3,
            tile,
            interval,
            dy_scale_format: dy_format,
            x_scale_format: x_format,
        };
        for (input, rows) in [(GroupedInput::PerToken, t), (GroupedInput::PerSlot, t * k)] {
            let mut x = rng.symmetric_f32s(rows * kk, 2.0);
            x[10 * kk + 2] = f32::NAN;
            x[20 * kk + 3] = f32::INFINITY;
            let per_slot = input == GroupedInput::PerSlot;
            let d = moe_dims(t, k, e, n, kk);
            let got =
                grouped_linear_wgrad_fp8(&dy, &x, input, &idx, d, f, Accumulator::Exact).unwrap();
            let want = grouped_wgrad_fp8_scalar(&dy, &x, per_slot, &idx, d, f);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "tile {tile}, {input:?}: dw[{i}] = {g}, want {w}"
                );
            }
            assert!(got[2 * n * kk..].iter().all(|&v| v == 0.0));
            // Near the f32 Wgrad where both are finite (FP8 rounds each operand by up to 2^-4
            // relatively, at random; dy has an outlier column): within 10% in Frobenius norm.
            let exact = grouped_linear_wgrad(&dy, &x, input, &idx, d).unwrap();
            let (mut diff, mut norm) = (0.0f64, 0.0f64);
            for (g, w) in got
                .iter()
                .zip(&exact)
                .filter(|(g, w)| g.is_finite() && w.is_finite())
            {
                diff += f64::from(g - w).powi(2);
                norm += f64::from(*w).powi(2);
            }
            let relative = (diff / norm).sqrt();
            assert!(
                relative < 0.1,
                "tile {tile}, {input:?}: {relative} from the f32 Wgrad"
            );
        }
    }
}

#[test]
fn grouped_linear_wgrad_fp8_attributes_are_all_or_none() {
    use dsc_ir::{Attr, Attrs, DType};
    let attrs = Attrs::new()
        .with("tile", Attr::Int(128))
        .with("interval", Attr::Int(96));
    assert_eq!(
        GroupedWgradFp8::from_attrs(DType::F8E4M3, &attrs).map_err(|e| e.to_string()),
        Err("grouped_linear_wgrad in FP8: the interval (96) must be a multiple of 32 that divides the tile (128)".into())
    );
    assert_eq!(
        GroupedWgradFp8::from_attrs(DType::Bf16, &Attrs::new()),
        Ok(None)
    );
    let e = GroupedWgradFp8::from_attrs(DType::Bf16, &attrs).unwrap_err();
    assert!(
        e.to_string()
            .contains("asks for FP8 but it computes in bf16"),
        "{e}"
    );
}

/// `out[t] = Σ_j w[t, j] · y[t, j] + shared[t]` in f64.
fn moe_combine64(y: &[f64], w: &[f64], shared: &[f64], k: usize, d: usize) -> Vec<f64> {
    shared
        .chunks(d)
        .enumerate()
        .flat_map(|(tok, s)| {
            (0..d).map(move |c| {
                s[c] + (0..k)
                    .map(|j| w[tok * k + j] * y[(tok * k + j) * d + c])
                    .sum::<f64>()
            })
        })
        .collect()
}

#[test]
fn moe_combine_grad_is_the_vjp_of_both_operands() {
    let (t, k, d) = (3, 2, 5);
    let mut rng = SplitMix64(23);
    let y = rng.symmetric_f32s(t * k * d, 1.0);
    let w = rng.symmetric_f32s(t * k, 1.0);
    let shared = rng.symmetric_f32s(t * d, 1.0);
    let dout = rng.symmetric_f32s(t * d, 1.0);
    let (dy, dw) = moe_combine_grad(&y, &w, &dout, t, k, d).unwrap();
    let u = f64s(&dout);
    let want_dy = fd_vjp(&y, &u, |y| {
        moe_combine64(y, &f64s(&w), &f64s(&shared), k, d)
    });
    assert_vjp("dy", &dy, &want_dy);
    let want_dw = fd_vjp(&w, &u, |w| {
        moe_combine64(&f64s(&y), w, &f64s(&shared), k, d)
    });
    assert_vjp("dweights", &dw, &want_dw);
    assert_eq!(
        message(moe_combine_grad(&y, &w, &dout[1..], t, k, d)),
        "dout: expected 15 elements, got 14"
    );
}

/// The routing weights of the chosen `idx` as `moe_topk` computes them, in f64.
fn route_weights64(logits: &[f64], idx: &[i32], e: usize, p: &RouteWeights) -> Vec<f64> {
    let k = idx.len() / (logits.len() / e);
    logits
        .chunks(e)
        .zip(idx.chunks(k))
        .flat_map(|(row, chosen)| {
            let s: Vec<f64> = match p.score_func {
                ScoreFunc::Sigmoid => row.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
                ScoreFunc::Softmax => {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|x| (x - max).exp()).sum();
                    row.iter().map(|x| (x - max).exp() / sum).collect()
                }
            };
            let r: Vec<f64> = chosen.iter().map(|&i| s[i as usize]).collect();
            let denominator = if p.norm_topk_prob {
                r.iter().sum::<f64>() + 1e-20
            } else {
                1.0
            };
            r.into_iter()
                .map(move |v| v / denominator * p.route_scale)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn moe_topk_grad_is_the_vjp_of_the_routing_weights() {
    let (t, e, k) = (4, 6, 3);
    let idx = [0, 5, 2, 3, 1, 4, 5, 0, 1, 2, 4, 3];
    let mut rng = SplitMix64(24);
    let logits = rng.symmetric_f32s(t * e, 3.0);
    let dw = rng.symmetric_f32s(t * k, 1.0);
    for score_func in [ScoreFunc::Sigmoid, ScoreFunc::Softmax] {
        for (norm_topk_prob, route_scale) in [(true, 2.5), (false, 1.0), (false, 2.5), (true, 1.0)]
        {
            let p = RouteWeights {
                score_func,
                norm_topk_prob,
                route_scale,
            };
            let got = moe_topk_grad(&logits, &idx, &dw, t, e, &p).unwrap();
            let want = fd_vjp(&logits, &f64s(&dw), |l| route_weights64(l, &idx, e, &p));
            assert_vjp(&format!("{p:?}"), &got, &want);
        }
    }
}

#[test]
fn moe_topk_grad_matches_the_weights_moe_topk_computes() {
    // The f64 weights above are moe_topk's: same indices, same values (to f32 rounding).
    let (t, e) = (5, 8);
    let logits = SplitMix64(25).symmetric_f32s(t * e, 3.0);
    for (score_func, norm) in [(ScoreFunc::Sigmoid, true), (ScoreFunc::Softmax, false)] {
        let params = TopkParams {
            score_func,
            top_k: 2,
            n_groups: 2,
            topk_groups: 1,
            norm_topk_prob: norm,
            route_scale: 2.5,
        };
        let routing = moe_topk(&logits, None, t, e, &params).unwrap();
        let p = RouteWeights {
            score_func,
            norm_topk_prob: norm,
            route_scale: 2.5,
        };
        let want = route_weights64(&f64s(&logits), &routing.indices, e, &p);
        for (&g, &w) in routing.weights.iter().zip(&want) {
            assert!(
                (g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{g} vs {w}"
            );
        }
    }
}

#[test]
fn moe_topk_grad_refuses_bad_indices_and_sizes() {
    let p = RouteWeights {
        score_func: ScoreFunc::Sigmoid,
        norm_topk_prob: true,
        route_scale: 1.0,
    };
    assert_eq!(
        message(moe_topk_grad(&[0.0; 6], &[0, 3], &[0.0; 2], 2, 3, &p)),
        "moe_topk_grad expert index 3 (token 1, slot 0) is out of range for 3 experts"
    );
    assert_eq!(
        message(moe_topk_grad(&[0.0; 6], &[0, 1], &[0.0; 3], 2, 3, &p)),
        "dweights: expected 2 elements, got 3"
    );
}

#[test]
fn expert_bias_update_moves_each_bias_towards_the_mean_load() {
    // 4 experts, 6 tokens × 2 slots: loads 5, 3, 3, 1 against a mean of 3.
    let idx = [0, 1, 0, 2, 0, 3, 0, 1, 2, 0, 1, 2];
    let bias = [0.5f32, -0.25, 0.0, 1.0];
    let got = expert_bias_update(&bias, &idx, 0.001).unwrap();
    assert_eq!(got, vec![0.5 - 0.001, -0.25, 0.0, 1.0 + 0.001]);
    // A mean that is not a whole number: 3 slots over 2 experts, loads 2 and 1.
    assert_eq!(
        expert_bias_update(&[0.0, 0.0], &[1, 1, 0], 0.5).unwrap(),
        vec![0.5, -0.5]
    );
    assert_eq!(
        message(expert_bias_update(&bias, &[0, 4], 0.1)),
        "expert_bias_update expert index 4 (slot 1) is out of range for 4 experts"
    );
}
