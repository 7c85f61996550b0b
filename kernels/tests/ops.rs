//! The high-precision reference kernels of `dsc_kernels::ops` on hand-computed cases, against
//! independent formulations (naive loops, Hugging Face's way of writing the same math), and
//! with expected RoPE frequencies computed independently (Python `math`, f64) from the formulas
//! of DESIGN.md §3b and Hugging Face's `modeling_rope_utils.py`.

use dsc_ir::{Attr, Attrs, DType};
use dsc_kernels::ops::*;
use dsc_kernels::rng::SplitMix64;

/// Asserts `|a - b| <= tol · max(1, |b|)` elementwise.
#[track_caller]
fn close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "lengths differ: {a:?} vs {b:?}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x as f64 - y).abs();
        assert!(
            err <= tol * y.abs().max(1.0),
            "element {i}: {x} vs {y} (err {err:e})\n  got {a:?}\n want {b:?}"
        );
    }
}

/// Asserts relative closeness `|a - b| <= tol · |b|` elementwise (for small magnitudes).
#[track_caller]
fn rel_close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x as f64 - y).abs();
        assert!(
            err <= tol * y.abs(),
            "element {i}: {x} vs {y} (rel err {:e})",
            err / y.abs()
        );
    }
}

/// Asserts that `result` is an error whose message contains `expected`.
#[track_caller]
fn assert_err<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>, expected: &str) {
    match result {
        Ok(value) => panic!("expected an error containing {expected:?}, got Ok({value:?})"),
        Err(e) => assert!(
            e.to_string().contains(expected),
            "the error `{e}` does not contain {expected:?}"
        ),
    }
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), so tests need no RNG crate.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32)
        .collect()
}

fn f64s(xs: &[f32]) -> Vec<f64> {
    xs.iter().map(|&x| x as f64).collect()
}

// ---------------------------------------------------------------- embedding

#[test]
fn embedding_gathers_rows_and_names_a_bad_id() {
    let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]; // [3, 2]
    let out = embedding(&[2i32, 0, 2], &table, 3, 2).unwrap();
    assert_eq!(out, [20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    assert_eq!(embedding(&[1i64], &table, 3, 2).unwrap(), [10.0, 11.0]);

    for bad in [3i32, -1] {
        let err = embedding(&[0, bad], &table, 3, 2).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OpError::OutOfRange(_)), "{msg}");
        assert!(
            msg.contains(&format!("id {bad}")) && msg.contains("3 rows"),
            "{msg}"
        );
    }
    assert!(matches!(
        embedding(&[0i32], &table, 2, 2),
        Err(OpError::Length { .. })
    ));
}

// ---------------------------------------------------------------- linear, matmul

#[test]
fn linear_by_hand() {
    // x [2, 3], w [2, 3] (out_features 2): y = x·wᵀ + b.
    let x = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
    let w = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
    let b = [0.25, -1.0];
    let y = linear(&x, &w, Some(&b), 2, 3, 2).unwrap();
    // Row 0: [1-3, 2+2+1.5] + b; row 1: [-1-2, -2+0.5+1] + b.
    assert_eq!(y, [-2.0 + 0.25, 5.5 - 1.0, -3.0 + 0.25, -0.5 - 1.0]);
    assert_eq!(
        linear(&x, &w, None, 2, 3, 2).unwrap(),
        [-2.0, 5.5, -3.0, -0.5]
    );
    // k = 0: empty sums are 0 (plus the bias).
    assert_eq!(
        linear(&[], &[], Some(&b), 2, 0, 2).unwrap(),
        [0.25, -1.0, 0.25, -1.0]
    );
    assert_err(
        linear(&x, &w, Some(&[0.0]), 2, 3, 2),
        "bias: expected 2 elements, got 1",
    );
}

#[test]
fn linear_matches_a_naive_loop() {
    let (m, k, n) = (37, 300, 129);
    let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
    let y = linear(&x, &w, Some(&b), m, k, n).unwrap();
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                .sum();
            want[i * n + j] = dot + b[j] as f64;
        }
    }
    close(&y, &want, 1e-5);
}

#[test]
fn matmul_plain_and_transposed_agree() {
    let (batch, m, k, n) = (3, 4, 5, 6);
    let a = values(batch * m * k, 4);
    let b = values(batch * k * n, 5);
    let c = matmul(&a, &b, batch, m, k, n, false).unwrap();
    // bᵀ per batch, then transpose_b must give the same product.
    let bt = transpose(&b, &[batch, k, n], &[0, 2, 1]).unwrap();
    let ct = matmul(&a, &bt, batch, m, k, n, true).unwrap();
    let mut want = vec![0.0f64; batch * m * n];
    for bb in 0..batch {
        for i in 0..m {
            for j in 0..n {
                want[(bb * m + i) * n + j] = (0..k)
                    .map(|kk| a[(bb * m + i) * k + kk] as f64 * b[(bb * k + kk) * n + j] as f64)
                    .sum();
            }
        }
    }
    close(&c, &want, 1e-6);
    close(&ct, &want, 1e-6);
    // [1, 2] · [2, 1] by hand.
    assert_eq!(
        matmul(&[1.0, 2.0], &[3.0, 4.0], 1, 1, 2, 1, false).unwrap(),
        [11.0]
    );
}

// ---------------------------------------------------------------- rms_norm

#[test]
fn rms_norm_by_hand() {
    // x = [3, 4]: mean(x²) = 12.5; y = x / sqrt(12.5 + eps) · w.
    let eps = 1e-6;
    let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 1, 2, eps, FloatFormat::F32).unwrap();
    let r = 1.0 / (12.5f64 + eps).sqrt();
    close(&y, &[3.0 * r, 2.0 * 4.0 * r], 1e-7);

    // Two rows, the second scaled: RMS normalization is scale-invariant.
    let x = [1.0, -2.0, 3.0, 10.0, -20.0, 30.0];
    let y = rms_norm(&x, &[1.0; 3], 2, 3, 1e-12, FloatFormat::F32).unwrap();
    let r = 1.0 / (14.0f64 / 3.0).sqrt();
    close(&y[..3], &[r, -2.0 * r, 3.0 * r], 1e-6);
    close(&y[3..], &f64s(&y[..3]), 1e-6);
}

#[test]
fn rms_norm_rounds_the_normalized_row_before_the_weight() {
    // x = [3, 4] normalizes to [0.8485281, 1.1313709]; bf16 holds 0.84765625 and 1.1328125.
    let w = [3.0, 0.5];
    let y = rms_norm(&[3.0, 4.0], &w, 1, 2, 1e-6, FloatFormat::Bf16).unwrap();
    assert_eq!(y, [3.0 * 0.847_656_25, 0.5 * 1.132_812_5]);
    let exact = rms_norm(&[3.0, 4.0], &w, 1, 2, 1e-6, FloatFormat::F32).unwrap();
    assert_ne!(y, exact);
}

#[test]
fn rms_norm_refuses_bad_sizes() {
    assert_err(
        rms_norm(&[1.0; 4], &[1.0; 3], 1, 4, 1e-6, FloatFormat::F32),
        "weight: expected 4 elements, got 3",
    );
    assert_err(
        rms_norm(&[1.0; 4], &[1.0; 4], 1, 4, 0.0, FloatFormat::F32),
        "eps must be positive",
    );
    assert!(
        rms_norm(&[], &[], 3, 0, 1e-6, FloatFormat::F32)
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_by_hand_and_masked_rows() {
    let ln = |x: f32| x.ln();
    let x = [0.0, ln(2.0), ln(3.0), 5.0, 5.0, f32::NEG_INFINITY];
    let y = softmax(&x, &[2, 3], 1).unwrap();
    close(&y, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.5, 0.5, 0.0], 1e-7);

    // A fully masked row gives zeros, not NaN.
    let y = softmax(&[f32::NEG_INFINITY; 3], &[1, 3], 1).unwrap();
    assert_eq!(y, [0.0; 3]);

    // Large logits: max subtraction keeps it finite.
    let y = softmax(&[1000.0, 1000.0], &[2], 0).unwrap();
    assert_eq!(y, [0.5, 0.5]);
}

#[test]
fn softmax_rows_sum_to_one_along_any_axis() {
    let dims = [3, 4, 5];
    let x: Vec<f32> = values(60, 7).iter().map(|v| v * 8.0).collect();
    for axis in 0..3 {
        let y = softmax(&x, &dims, axis).unwrap();
        // Moving the axis last, a last-axis softmax, and moving it back must agree.
        let mut perm: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
        perm.push(axis);
        let moved_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let moved = transpose(&x, &dims, &perm).unwrap();
        let last = softmax(&moved, &moved_dims, 2).unwrap();
        let mut inverse = [0usize; 3];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let back = transpose(&last, &moved_dims, &inverse).unwrap();
        assert_eq!(y, back, "axis {axis}");
        for row in last.chunks(dims[axis]) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "axis {axis}: row sums to {s}");
        }
    }
    assert_err(softmax(&x, &dims, 3), "softmax axis 3 is out of range");
}

// ---------------------------------------------------------------- elementwise

#[test]
fn elementwise_by_hand() {
    let s1 = 1.0 / (1.0 + (-1.0f64).exp()); // sigmoid(1)
    close(&silu(&[0.0, 1.0, -1.0]), &[0.0, s1, -(1.0 - s1)], 1e-7);
    assert_eq!(silu(&[-200.0]), [-0.0]);
    assert_eq!(mul(&[2.0, -3.0], &[4.0, 0.5]).unwrap(), [8.0, -1.5]);
    assert_eq!(add(&[2.0, -3.0], &[4.0, 0.5]).unwrap(), [6.0, -2.5]);
    close(
        &swiglu(&[1.0, 0.0], &[3.0, 7.0], FloatFormat::F32).unwrap(),
        &[3.0 * s1, 0.0],
        1e-7,
    );
    // With bf16 rounding of the activation: silu(1) = 0.7310586 → bf16 0.73046875.
    assert_eq!(
        swiglu(&[1.0], &[2.0], FloatFormat::Bf16).unwrap(),
        [2.0 * 0.730_468_75]
    );
    assert_err(add(&[1.0], &[1.0, 2.0]), "rhs: expected 1 elements, got 2");
    // A bias `[N]` repeats over the rows of `[M, N]`; a length that does not divide is refused.
    assert_eq!(
        add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[10.0, 20.0, 30.0]).unwrap(),
        [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
    );
    assert_err(
        add(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]),
        "rhs: expected 4 elements, got 3",
    );
    assert_err(add(&[1.0, 2.0], &[]), "rhs: expected 2 elements, got 0");
}

// ---------------------------------------------------------------- rope

fn plain(style: RopeStyle, theta: f64) -> RopeParams {
    RopeParams {
        style,
        theta,
        scaling: None,
    }
}

#[test]
fn rope_half_by_hand() {
    // d = 4, theta = 10000: inv_freq = [1, 0.01]; pairs (x0, x2) and (x1, x3).
    let p = plain(RopeStyle::Half, 10000.0);
    close(&p.inv_freq(4), &[1.0, 0.01], 1e-7);
    // Two positions, one head: position 0 is untouched, position 1 rotates by 1 and 0.01 rad.
    let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
    let y = rope(&x, [1, 2, 1, 4], &p, FloatFormat::F32).unwrap();
    let (c1, s1, c2, s2) = (1f64.cos(), 1f64.sin(), 0.01f64.cos(), 0.01f64.sin());
    let want = [
        1.0,
        2.0,
        3.0,
        4.0,
        c1 - 3.0 * s1,
        2.0 * c2 - 4.0 * s2,
        3.0 * c1 + s1,
        4.0 * c2 + 2.0 * s2,
    ];
    close(&y, &want, 1e-6);
}

#[test]
fn rope_interleaved_by_hand() {
    let p = plain(RopeStyle::Interleaved, 10000.0);
    let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
    let y = rope(&x, [1, 2, 1, 4], &p, FloatFormat::F32).unwrap();
    let (c1, s1, c2, s2) = (1f64.cos(), 1f64.sin(), 0.01f64.cos(), 0.01f64.sin());
    // Pairs (x0, x1) at angle 1, (x2, x3) at angle 0.01: (a, b) → (a·c - b·s, b·c + a·s).
    let want = [
        1.0,
        2.0,
        3.0,
        4.0,
        c1 - 2.0 * s1,
        2.0 * c1 + s1,
        3.0 * c2 - 4.0 * s2,
        4.0 * c2 + 3.0 * s2,
    ];
    close(&y, &want, 1e-6);
}

fn yarn_b() -> RopeParams {
    RopeParams {
        style: RopeStyle::Interleaved,
        theta: 10000.0,
        scaling: Some(RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 2048,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 0.707,
            mscale_all_dim: 0.0,
        }),
    }
}

fn llama3() -> RopeParams {
    RopeParams {
        style: RopeStyle::Half,
        theta: 500000.0,
        scaling: Some(RopeScaling::Llama3 {
            factor: 8.0,
            original_max_position: 8192,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
        }),
    }
}

#[test]
fn rope_is_identity_at_position_zero_and_keeps_pair_norms() {
    let (b, s, h) = (2, 9, 3);
    for (p, d) in [
        (plain(RopeStyle::Half, 10000.0), 8),
        (plain(RopeStyle::Interleaved, 10000.0), 6),
        (llama3(), 128),
    ] {
        let x = values(b * s * h * d, 11);
        let y = rope(&x, [b, s, h, d], &p, FloatFormat::F32).unwrap();
        for (i, (xr, yr)) in x.chunks(h * d).zip(y.chunks(h * d)).enumerate() {
            if i % s == 0 {
                assert_eq!(xr, yr, "position 0 of batch {} changed", i / s);
            }
            for (xh, yh) in xr.chunks(d).zip(yr.chunks(d)) {
                for j in 0..d / 2 {
                    let (a, c) = match p.style {
                        RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                        RopeStyle::Half => (j, j + d / 2),
                    };
                    let n0 = xh[a].hypot(xh[c]);
                    let n1 = yh[a].hypot(yh[c]);
                    assert!((n0 - n1).abs() <= 1e-6 * n0.max(1.0), "{n0} vs {n1}");
                }
            }
        }
    }
}

/// HF DeepseekV3's `apply_rotary_pos_emb_interleave` on one `[seq, d]` head: de-interleave
/// to `[x[0::2], x[1::2]]`, then `x·cos + rotate_half(x)·sin` with `emb = cat(freqs, freqs)`.
fn hf_interleave(x: &[f32], seq: usize, d: usize, inv_freq: &[f32]) -> Vec<f32> {
    let half = d / 2;
    let mut out = Vec::with_capacity(x.len());
    for (p, row) in x.chunks(d).enumerate() {
        let perm: Vec<f32> = (0..half)
            .map(|i| row[2 * i])
            .chain((0..half).map(|i| row[2 * i + 1]))
            .collect();
        let rotated: Vec<f32> = (0..half)
            .map(|i| -perm[i + half])
            .chain((0..half).map(|i| perm[i]))
            .collect();
        for j in 0..d {
            let angle = p as f32 * inv_freq[j % half];
            out.push(perm[j] * angle.cos() + rotated[j] * angle.sin());
        }
    }
    assert_eq!(out.len(), seq * d);
    out
}

#[test]
fn interleaved_rope_equals_hf_permute_then_rotate_half() {
    let (seq, d) = (17, 16);
    for p in [plain(RopeStyle::Interleaved, 10000.0), yarn_b()] {
        // Keep cos/sin unscaled so both ways see the same table.
        let p = RopeParams {
            scaling: match p.scaling {
                Some(RopeScaling::Yarn {
                    factor,
                    original_max_position,
                    beta_fast,
                    beta_slow,
                    ..
                }) => Some(RopeScaling::Yarn {
                    factor,
                    original_max_position,
                    beta_fast,
                    beta_slow,
                    mscale: 1.0,
                    mscale_all_dim: 1.0,
                }),
                s => s,
            },
            ..p
        };
        let q = values(seq * d, 21);
        let k = values(seq * d, 22);
        let ours_q = rope(&q, [1, seq, 1, d], &p, FloatFormat::F32).unwrap();
        let ours_k = rope(&k, [1, seq, 1, d], &p, FloatFormat::F32).unwrap();
        let hf_q = hf_interleave(&q, seq, d, &p.inv_freq(d));
        let hf_k = hf_interleave(&k, seq, d, &p.inv_freq(d));
        // HF's result is ours in de-interleaved order: hf[i] = ours[2i], hf[i + d/2] = ours[2i+1].
        for (o, h) in ours_q.chunks(d).zip(hf_q.chunks(d)) {
            for i in 0..d / 2 {
                assert!((h[i] - o[2 * i]).abs() < 1e-6, "{} vs {}", h[i], o[2 * i]);
                assert!((h[i + d / 2] - o[2 * i + 1]).abs() < 1e-6);
            }
        }
        // So every q·k (what attention uses) is the same.
        for (qs, hq) in ours_q.chunks(d).zip(hf_q.chunks(d)) {
            for (ks, hk) in ours_k.chunks(d).zip(hf_k.chunks(d)) {
                let a: f32 = qs.iter().zip(ks).map(|(x, y)| x * y).sum();
                let b: f32 = hq.iter().zip(hk).map(|(x, y)| x * y).sum();
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}

#[test]
fn yarn_frequencies_match_an_independent_computation() {
    // Python, f64: corr(r) = d·ln(L/(2πr))/(2 ln base); d = 16, base 1e4, L = 2048 gives
    // low = floor(2.02) = 2, high = ceil(5.03) = 6; f_i = 1/(factor·base^(2i/d))·ramp_i +
    // base^(-2i/d)·(1 - ramp_i) with ramp_i = clamp((i - 2)/4, 0, 1).
    let p = yarn_b();
    let want = [
        1.0,
        0.316227766,
        0.1,
        0.02569350599,
        0.00625,
        0.001383496476,
        0.00025,
        7.90569415e-05,
    ];
    rel_close(&p.inv_freq(16), &want, 1e-6);
    // g(0.707) / g(0) with factor 4: 0.1·0.707·ln 4 + 1.
    assert!((p.attention_scaling() as f64 - 1.0980110113311763).abs() < 1e-7);
    // cos and sin at position 7, scaled by g(mscale)/g(mscale_all_dim).
    let (cos, sin) = p.cos_sin(16, 8, FloatFormat::F32);
    let want_cos = [
        0.8277929767,
        -0.6581888581,
        0.8398051436,
        1.08029979,
        1.096960348,
        1.097959521,
        1.09800933,
        1.098010843,
    ];
    let want_sin = [
        0.7213785197,
        0.8788717814,
        0.7073581143,
        0.1964193067,
        0.0480226586,
        0.01063349434,
        0.001921518289,
        0.000607637715,
    ];
    close(&cos[7 * 8..], &want_cos, 2e-6);
    close(&sin[7 * 8..], &want_sin, 2e-6);

    // DeepSeek-V3's setting (d = 64, factor 40, L = 4096, mscale = mscale_all_dim = 1): the
    // ramp runs from low = 10 to high = 23 and cos/sin are unscaled.
    let v3 = RopeParams {
        style: RopeStyle::Interleaved,
        theta: 10000.0,
        scaling: Some(RopeScaling::Yarn {
            factor: 40.0,
            original_max_position: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        }),
    };
    let f = v3.inv_freq(64);
    let picks = [0, 9, 10, 11, 16, 22, 23, 31];
    let want = [
        1.0,
        7.498942093e-02,
        5.623413252e-02,
        3.900692657e-02,
        5.5e-03,
        1.778279410e-04,
        3.333803580e-05,
        3.333803580e-06,
    ];
    let got: Vec<f32> = picks.iter().map(|&i| f[i]).collect();
    rel_close(&got, &want, 1e-6);
    assert_eq!(v3.attention_scaling(), 1.0);
}

#[test]
fn llama3_frequencies_match_an_independent_computation() {
    // Python, f64, HF `_compute_llama3_parameters` with d = 128, theta 5e5, factor 8,
    // low/high freq factors 1/4, original 8192: wavelengths below 2048 keep their frequency,
    // above 8192 divide it by 8, between interpolate smoothly.
    let f = llama3().inv_freq(128);
    let picks = [0, 20, 28, 29, 31, 34, 35, 63];
    let want = [
        1.0,             // high frequency: unchanged
        1.656044008e-02, // high
        3.211445995e-03, // high (wavelength 1956)
        2.166570764e-03, // medium (2402)
        8.567514129e-04, // medium
        1.785078128e-04, // medium (6695)
        9.556212354e-05, // low (8219): divided by 8
        3.068925989e-07, // low
    ];
    let got: Vec<f32> = picks.iter().map(|&i| f[i]).collect();
    rel_close(&got, &want, 1e-6);
    assert_eq!(llama3().attention_scaling(), 1.0);
}

#[test]
fn rope_params_read_the_ir_attributes() {
    let attrs = Attrs::new()
        .with("style", Attr::Str("interleaved".into()))
        .with("theta", Attr::Float(10000.0))
        .with("scaling", Attr::Str("yarn".into()))
        .with("factor", Attr::Float(4.0))
        .with("original_max_position", Attr::Int(2048))
        .with("beta_fast", Attr::Float(32.0))
        .with("beta_slow", Attr::Float(1.0))
        .with("mscale", Attr::Float(0.707))
        .with("mscale_all_dim", Attr::Float(0.0));
    assert_eq!(RopeParams::from_attrs(&attrs).unwrap(), yarn_b());
    let attrs = Attrs::new()
        .with("style", Attr::Str("half".into()))
        .with("theta", Attr::Float(500000.0))
        .with("scaling", Attr::Str("llama3".into()))
        .with("factor", Attr::Float(8.0))
        .with("original_max_position", Attr::Int(8192))
        .with("low_freq_factor", Attr::Float(1.0))
        .with("high_freq_factor", Attr::Float(4.0));
    assert_eq!(RopeParams::from_attrs(&attrs).unwrap(), llama3());
    let attrs = Attrs::new().with("style", Attr::Str("half".into()));
    assert_err(
        RopeParams::from_attrs(&attrs),
        "rope needs attribute `theta`",
    );
}

#[test]
fn rope_bf16_intermediates_round_cos_sin_and_products() {
    let p = plain(RopeStyle::Half, 10000.0);
    let x = values(2 * 8, 31);
    let y = rope(&x, [1, 2, 1, 8], &p, FloatFormat::Bf16).unwrap();
    let (cos, sin) = p.cos_sin(8, 2, FloatFormat::Bf16);
    let r = |v: f32| FloatFormat::Bf16.round(v);
    let row = &x[8..];
    let want: Vec<f64> = (0..8)
        .map(|j| {
            let i = j % 4;
            let (c, s) = (cos[4 + i], sin[4 + i]);
            let v = if j < 4 {
                r(row[j] * c) - r(row[j + 4] * s)
            } else {
                r(row[j] * c) + r(row[j - 4] * s)
            };
            v as f64
        })
        .collect();
    assert_eq!(f64s(&y[8..]), want);
    assert!(cos.iter().all(|&c| r(c) == c));
    assert_err(
        rope(&[0.0; 6], [1, 1, 2, 3], &p, FloatFormat::F32),
        "rope needs an even head_dim, got 3",
    );
}

// ---------------------------------------------------------------- attention

#[test]
fn attn_scores_map_query_heads_to_kv_heads() {
    // H = 4 query heads over Hk = 2 kv heads: heads 0, 1 read kv head 0; heads 2, 3 kv head 1.
    let (s, t, h, hk, d) = (1, 2, 4, 2, 2);
    let q = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0]; // [1, 1, 4, 2]
    // k[t, kv, :]: kv 0 = [1, 2] at t0, [3, 4] at t1; kv 1 = [10, 20], [30, 40].
    let k = [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
    let dims = ScoreDims {
        batch: 1,
        q_len: s,
        kv_len: t,
        heads: h,
        kv_heads: hk,
        head_dim: d,
    };
    let y = attn_scores(&q, &k, dims, None, 0.5, false).unwrap();
    // head 0: q [1,0]·k0 = [1, 3]; head 1: [0,1] → [2, 4]; head 2: [1,1]·k1 = [30, 70];
    // head 3: [2,0]·k1 = [20, 60]; all × 0.5.
    assert_eq!(y, [0.5, 1.5, 1.0, 2.0, 15.0, 35.0, 10.0, 30.0]);

    // Hk = 3 does not divide H = 4.
    let bad = ScoreDims {
        kv_heads: 3,
        ..dims
    };
    assert_err(
        attn_scores(&q, &[0.0; 12], bad, None, 1.0, false),
        "does not divide the 4 query heads",
    );
}

#[test]
fn attn_scores_causal_mask_and_rope_part() {
    // S = 2 queries as the last two of T = 3 keys: query 0 sees keys 0..=1, query 1 all.
    let (s, t, h, d, r) = (2, 3, 1, 1, 1);
    let q = [1.0, 2.0];
    let k = [1.0, 10.0, 100.0];
    let q_pe = [1.0, -1.0];
    let k_pe = [0.5, 0.25, 0.125];
    let dims = ScoreDims {
        batch: 1,
        q_len: s,
        kv_len: t,
        heads: h,
        kv_heads: 1,
        head_dim: d,
    };
    let pe = RopeOperands {
        q_pe: &q_pe,
        k_pe: &k_pe,
        kv_heads: 1,
        dim: r,
    };
    let y = attn_scores(&q, &k, dims, Some(pe), 2.0, true).unwrap();
    let ninf = f32::NEG_INFINITY;
    let want = [
        (1.0 + 0.5) * 2.0,
        (10.0 + 0.25) * 2.0,
        ninf,
        (2.0 - 0.5) * 2.0,
        (20.0 - 0.25) * 2.0,
        (200.0 - 0.125) * 2.0,
    ];
    assert_eq!(y, want);
    // Softmax of the masked scores: masked keys get probability 0.
    let p = softmax(&y, &[1, 1, s, t], 3).unwrap();
    assert_eq!(p[2], 0.0);
    assert!((p[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);

    // S = T: the usual lower-triangular pattern.
    let dims = ScoreDims {
        q_len: 3,
        kv_len: 3,
        ..dims
    };
    let y = attn_scores(&[1.0; 3], &[1.0; 3], dims, None, 1.0, true).unwrap();
    let masked: Vec<bool> = y.iter().map(|v| v.is_infinite()).collect();
    assert_eq!(
        masked,
        [false, true, true, false, false, true, false, false, false]
    );
    // Causal with fewer keys than queries is refused.
    let dims = ScoreDims {
        q_len: 3,
        kv_len: 2,
        ..dims
    };
    assert_err(
        attn_scores(&[1.0; 3], &[1.0; 2], dims, None, 1.0, true),
        "needs at least as many keys (2) as queries (3)",
    );
}

#[test]
fn fused_attention_over_several_row_blocks_is_the_unfused_composition() {
    // 150 queries: the fused reference takes its scores 64 rows at a time (two whole blocks
    // and a ragged one), with MLA's rope pair and the causal mask shifted by 10 extra keys.
    let (b, s, t, h, hk, d, r, hv, dv) = (1, 150, 160, 2, 1, 8, 4, 2, 6);
    let q = values(b * s * h * d, 51);
    let k = values(b * t * hk * d, 52);
    let q_pe = values(b * s * h * r, 53);
    let k_pe = values(b * t * r, 54);
    let v = values(b * t * hv * dv, 55);
    let scores = ScoreDims {
        batch: b,
        q_len: s,
        kv_len: t,
        heads: h,
        kv_heads: hk,
        head_dim: d,
    };
    let pe = RopeOperands {
        q_pe: &q_pe,
        k_pe: &k_pe,
        kv_heads: 1,
        dim: r,
    };
    let dims = AttentionDims {
        scores,
        v_heads: hv,
        v_dim: dv,
    };
    let fused = attention(&q, &k, &v, dims, Some(pe), 0.3, true, FloatFormat::F32).unwrap();
    let p = attn_scores(&q, &k, scores, Some(pe), 0.3, true).unwrap();
    let p = softmax(&p, &[b, h, s, t], 3).unwrap();
    let vdims = ValueDims {
        batch: b,
        q_len: s,
        kv_len: t,
        heads: h,
        v_heads: hv,
        v_dim: dv,
    };
    let want: Vec<f64> = attn_values(&p, &v, vdims)
        .unwrap()
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    close(&fused, &want, 1e-5);
}

#[test]
fn attention_matches_naive_loops() {
    let (b, s, t, h, hk, d, r, hv, dv) = (2, 5, 7, 6, 3, 8, 4, 2, 5);
    let q = values(b * s * h * d, 41);
    let k = values(b * t * hk * d, 42);
    let q_pe = values(b * s * h * r, 43);
    let k_pe = values(b * t * r, 44); // one shared k_pe head
    let dims = ScoreDims {
        batch: b,
        q_len: s,
        kv_len: t,
        heads: h,
        kv_heads: hk,
        head_dim: d,
    };
    let pe = RopeOperands {
        q_pe: &q_pe,
        k_pe: &k_pe,
        kv_heads: 1,
        dim: r,
    };
    let scale = 0.3;
    let scores = attn_scores(&q, &k, dims, Some(pe), scale, true).unwrap();
    let mut want = vec![0.0f64; b * h * s * t];
    for bb in 0..b {
        for hh in 0..h {
            for si in 0..s {
                for ti in 0..t {
                    let i = ((bb * h + hh) * s + si) * t + ti;
                    if ti > si + (t - s) {
                        want[i] = f64::NEG_INFINITY;
                        continue;
                    }
                    let kvh = hh / (h / hk);
                    let mut dot = 0.0f64;
                    for dd in 0..d {
                        dot += q[((bb * s + si) * h + hh) * d + dd] as f64
                            * k[((bb * t + ti) * hk + kvh) * d + dd] as f64;
                    }
                    for rr in 0..r {
                        dot += q_pe[((bb * s + si) * h + hh) * r + rr] as f64
                            * k_pe[(bb * t + ti) * r + rr] as f64;
                    }
                    want[i] = dot * scale;
                }
            }
        }
    }
    for (&g, &w) in scores.iter().zip(&want) {
        if w.is_infinite() {
            assert_eq!(g, f32::NEG_INFINITY);
        } else {
            assert!((g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    let p = softmax(&scores, &[b, h, s, t], 3).unwrap();
    let v = values(b * t * hv * dv, 45);
    let vdims = ValueDims {
        batch: b,
        q_len: s,
        kv_len: t,
        heads: h,
        v_heads: hv,
        v_dim: dv,
    };
    let o = attn_values(&p, &v, vdims).unwrap();
    let mut want = vec![0.0f64; b * s * h * dv];
    for bb in 0..b {
        for si in 0..s {
            for hh in 0..h {
                for e in 0..dv {
                    want[((bb * s + si) * h + hh) * dv + e] = (0..t)
                        .map(|ti| {
                            p[((bb * h + hh) * s + si) * t + ti] as f64
                                * v[((bb * t + ti) * hv + hh / (h / hv)) * dv + e] as f64
                        })
                        .sum();
                }
            }
        }
    }
    close(&o, &want, 1e-6);
}

#[test]
fn attn_values_by_hand() {
    // H = 2 heads sharing one v head; p one-hot picks rows of v.
    let p = [0.0, 1.0, 0.25, 0.75]; // [1, 2, 1, 2]
    let v = [1.0, 2.0, 3.0, 4.0]; // [1, 2, 1, 2]
    let dims = ValueDims {
        batch: 1,
        q_len: 1,
        kv_len: 2,
        heads: 2,
        v_heads: 1,
        v_dim: 2,
    };
    let o = attn_values(&p, &v, dims).unwrap();
    assert_eq!(o, [3.0, 4.0, 0.25 + 2.25, 0.5 + 3.0]);
}

// ---------------------------------------------------------------- moe_topk, moe_combine

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn topk(score_func: ScoreFunc, top_k: usize, n_groups: usize, topk_groups: usize) -> TopkParams {
    TopkParams {
        score_func,
        top_k,
        n_groups,
        topk_groups,
        norm_topk_prob: true,
        route_scale: 1.0,
    }
}

#[test]
fn moe_topk_group_limit_with_bias_drops_the_best_expert() {
    // 8 experts in 4 groups of 2. Sigmoid scores ≈ [.982 .018 | .881 .870 | .858 .846 | .047
    // .047]. Group scores (sum of top two, with a bias): 1.00, 1.75, 1.70, 0.09 → groups 1
    // and 2 stay, so expert 0 (the single best) is not chosen: experts 2 and 3 are.
    let logits = [4.0, -4.0, 2.0, 1.9, 1.8, 1.7, -3.0, -3.0];
    let zero_bias = [0.0; 8];
    let params = TopkParams {
        route_scale: 2.5,
        ..topk(ScoreFunc::Sigmoid, 2, 4, 2)
    };
    let r = moe_topk(&logits, Some(&zero_bias), 1, 8, &params).unwrap();
    assert_eq!(r.indices, [2, 3]);
    let (s2, s3) = (sigmoid(2.0), sigmoid(1.9));
    close(
        &r.weights,
        &[2.5 * s2 / (s2 + s3), 2.5 * s3 / (s2 + s3)],
        1e-6,
    );

    // Without the group limit the best two overall win.
    let r = moe_topk(
        &logits,
        Some(&zero_bias),
        1,
        8,
        &topk(ScoreFunc::Sigmoid, 2, 1, 1),
    )
    .unwrap();
    assert_eq!(r.indices, [0, 2]);

    // A bias of 0.2 on expert 5 makes it the best selection (1.046) and group 2 the best group;
    // the weights stay the unbiased sigmoid scores.
    let mut bias = [0.0; 8];
    bias[5] = 0.2;
    let r = moe_topk(&logits, Some(&bias), 1, 8, &params).unwrap();
    assert_eq!(r.indices, [5, 2]);
    let (s5, s2) = (sigmoid(1.7), sigmoid(2.0));
    close(
        &r.weights,
        &[2.5 * s5 / (s5 + s2), 2.5 * s2 / (s5 + s2)],
        1e-6,
    );

    // Unnormalized: the raw scores times the route scale.
    let raw = TopkParams {
        norm_topk_prob: false,
        ..params
    };
    let r = moe_topk(&logits, Some(&bias), 1, 8, &raw).unwrap();
    close(&r.weights, &[2.5 * s5, 2.5 * s2], 1e-6);
}

#[test]
fn moe_topk_group_limit_without_bias_uses_the_group_max() {
    // Groups of 2: [3, -1 | 2, -5 | 1, -1 | -2, -3]. Without a bias a group scores its max, so with one
    // group kept, both experts come from group 0 even though expert 2 beats expert 1.
    let logits = [3.0, -1.0, 2.0, -5.0, 1.0, -1.0, -2.0, -3.0];
    let r = moe_topk(&logits, None, 1, 8, &topk(ScoreFunc::Sigmoid, 2, 4, 1)).unwrap();
    assert_eq!(r.indices, [0, 1]);
    let (a, b) = (sigmoid(3.0), sigmoid(-1.0));
    close(&r.weights, &[a / (a + b), b / (a + b)], 1e-6);
    // With a bias the same logits score groups by their top-two sums: group 0 has
    // .953 + .269 = 1.22, group 1 .881 + .007 = 0.89, group 2 .731 + .269 = 1.0, so group 0
    // still wins alone.
    let r = moe_topk(
        &logits,
        Some(&[0.0; 8]),
        1,
        8,
        &topk(ScoreFunc::Sigmoid, 2, 4, 1),
    )
    .unwrap();
    assert_eq!(r.indices, [0, 1]);
    // Two groups kept: experts 0 and 2.
    let r = moe_topk(&logits, None, 1, 8, &topk(ScoreFunc::Sigmoid, 2, 4, 2)).unwrap();
    assert_eq!(r.indices, [0, 2]);
}

#[test]
fn moe_topk_softmax_scoring_and_normalization() {
    // Two tokens, 4 experts, softmax scores; token 1 has all-equal logits (ties → lower index).
    let logits = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5];
    let z: f64 = (1..=4).map(|i| (i as f64 - 4.0).exp()).sum();
    let p = |i: usize| ((i as f64 + 1.0) - 4.0).exp() / z;
    let raw = TopkParams {
        norm_topk_prob: false,
        ..topk(ScoreFunc::Softmax, 2, 1, 1)
    };
    let r = moe_topk(&logits, None, 2, 4, &raw).unwrap();
    assert_eq!(r.indices, [3, 2, 0, 1]);
    close(&r.weights, &[p(3), p(2), 0.25, 0.25], 1e-6);

    let norm = topk(ScoreFunc::Softmax, 2, 1, 1);
    let r = moe_topk(&logits, None, 2, 4, &norm).unwrap();
    close(
        &r.weights,
        &[p(3) / (p(3) + p(2)), p(2) / (p(3) + p(2)), 0.5, 0.5],
        1e-6,
    );
    for row in r.weights.chunks(2) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn moe_topk_reads_attributes_and_refuses_impossible_sizes() {
    let attrs = Attrs::new()
        .with("score_func", Attr::Str("sigmoid".into()))
        .with("top_k", Attr::Int(2))
        .with("n_groups", Attr::Int(4))
        .with("topk_groups", Attr::Int(2))
        .with("norm_topk_prob", Attr::Bool(true))
        .with("route_scale", Attr::Float(2.5));
    let p = TopkParams::from_attrs(&attrs).unwrap();
    assert_eq!(
        p,
        TopkParams {
            route_scale: 2.5,
            ..topk(ScoreFunc::Sigmoid, 2, 4, 2)
        }
    );
    let logits = [0.0; 8];
    // 1 group of 2 experts cannot supply 3; 3 groups do not divide 8; top_k 0.
    for (bad, expected) in [
        (topk(ScoreFunc::Sigmoid, 3, 4, 1), "cannot supply top_k = 3"),
        (
            topk(ScoreFunc::Sigmoid, 2, 3, 1),
            "n_groups 3 must divide the 8 experts",
        ),
        (
            topk(ScoreFunc::Sigmoid, 0, 1, 1),
            "top_k 0 must be in 1..=8",
        ),
    ] {
        assert_err(moe_topk(&logits, None, 1, 8, &bad), expected);
    }
    assert_err(
        moe_topk(&logits, Some(&[0.0; 7]), 1, 8, &p),
        "bias: expected 8 elements, got 7",
    );
}

#[test]
fn moe_combine_by_hand() {
    // T = 2, k = 2, D = 2.
    let y = [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
    let w = [0.5, 0.25, 1.0, 0.0];
    let shared = [100.0, 200.0, 300.0, 400.0];
    let out = moe_combine(&y, &w, Some(&shared), 2, 2, 2, FloatFormat::F32).unwrap();
    assert_eq!(out, [100.0 + 0.5 + 2.5, 200.0 + 1.0 + 5.0, 303.0, 404.0]);
    let out = moe_combine(&y, &w, None, 2, 2, 2, FloatFormat::F32).unwrap();
    assert_eq!(out, [3.0, 6.0, 3.0, 4.0]);
    // HF rounds the routed sum to bf16 before adding the shared experts: 1 + 2^-9 → 1.
    let out = moe_combine(
        &[1.0, 1.0 / 512.0],
        &[1.0, 1.0],
        Some(&[1.0]),
        1,
        2,
        1,
        FloatFormat::Bf16,
    )
    .unwrap();
    assert_eq!(out, [2.0]);
    assert_err(
        moe_combine(&y, &w[..3], None, 2, 2, 2, FloatFormat::F32),
        "weights: expected 4 elements, got 3",
    );
}

// ---------------------------------------------------------------- grouped_linear

#[test]
fn grouped_linear_by_hand_and_bad_index() {
    // E = 3 experts, N = 1, K = 2: w[e] = [[e + 1, 1]].
    let w = [1.0, 1.0, 2.0, 1.0, 3.0, 1.0];
    let x = [1.0, 10.0, 2.0, 20.0]; // [T = 2, K = 2]
    let idx = [2i32, 0, 1, 1]; // [T = 2, k = 2]
    let dims = GroupedDims {
        tokens: 2,
        top_k: 2,
        experts: 3,
        out_features: 1,
        in_features: 2,
    };
    let y = grouped_linear(&x, GroupedInput::PerToken, &w, &idx, dims).unwrap();
    assert_eq!(y, [3.0 + 10.0, 1.0 + 10.0, 4.0 + 20.0, 4.0 + 20.0]);
    // One row per slot: [T, k, K].
    let xs = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, -1.0, 1.0];
    let y = grouped_linear(&xs, GroupedInput::PerSlot, &w, &idx, dims).unwrap();
    assert_eq!(y, [3.0, 1.0, 6.0, -1.0]);

    let err = grouped_linear(&x, GroupedInput::PerToken, &w, &[0i32, 3, 1, 1], dims).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OpError::OutOfRange(_)));
    assert!(
        msg.contains("index 3") && msg.contains("3 experts") && msg.contains("token 0"),
        "{msg}"
    );
    assert_err(
        grouped_linear(&x, GroupedInput::PerToken, &w, &[-1i32, 0, 1, 1], dims),
        "expert index -1 (token 0, slot 0) is out of range",
    );
}

#[test]
fn grouped_linear_matches_per_row_linear() {
    let (t, k, e, n, kk) = (9, 3, 4, 7, 33);
    let x = values(t * kk, 51);
    let w = values(e * n * kk, 52);
    let idx: Vec<i32> = (0..t * k).map(|i| ((i * 7 + i / 3) % e) as i32).collect();
    let dims = GroupedDims {
        tokens: t,
        top_k: k,
        experts: e,
        out_features: n,
        in_features: kk,
    };
    let y = grouped_linear(&x, GroupedInput::PerToken, &w, &idx, dims).unwrap();
    for (row, &ex) in idx.iter().enumerate() {
        let ex = ex as usize;
        let want = linear(
            &x[(row / k) * kk..][..kk],
            &w[ex * n * kk..][..n * kk],
            None,
            1,
            kk,
            n,
        )
        .unwrap();
        close(&y[row * n..][..n], &f64s(&want), 1e-6);
    }
}

// ---------------------------------------------------------------- data movement

#[test]
fn transpose_by_hand_and_round_trip() {
    // [2, 3] → [3, 2].
    let x = [1, 2, 3, 4, 5, 6];
    assert_eq!(transpose(&x, &[2, 3], &[1, 0]).unwrap(), [1, 4, 2, 5, 3, 6]);
    let dims = [2, 3, 4, 5];
    let x: Vec<u32> = (0..120).collect();
    let perm = [2, 0, 3, 1];
    let y = transpose(&x, &dims, &perm).unwrap();
    // out[i0, i1, i2, i3] = x[i1, i3, i0, i2] (axis a of out is axis perm[a] of x).
    let (i0, i1, i2, i3) = (1, 1, 3, 2);
    let out_at = ((i0 * 2 + i1) * 5 + i2) * 3 + i3;
    let in_at = ((i1 * 3 + i3) * 4 + i0) * 5 + i2;
    assert_eq!(y[out_at], x[in_at]);
    let inverse = [1, 3, 0, 2];
    let out_dims = [4, 2, 5, 3];
    assert_eq!(transpose(&y, &out_dims, &inverse).unwrap(), x);
    assert_err(
        transpose(&x, &dims, &[0, 0, 1, 2]),
        "is not a permutation of the axes",
    );
}

#[test]
fn matrix_transposes_match_the_element_by_element_definition() {
    // Swapping the last two axes takes the tiled path: ragged against its 32-wide tiles, with
    // and without leading axes, one row or one column.
    for dims in [
        vec![37, 45],
        vec![3, 33, 70],
        vec![2, 2, 65, 31],
        vec![1, 200],
        vec![200, 1],
    ] {
        let n: usize = dims.iter().product();
        let x: Vec<u32> = (0..n as u32).collect();
        let r = dims.len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        let y = transpose(&x, &dims, &perm).unwrap();
        let (rows, cols) = (dims[r - 2], dims[r - 1]);
        for (i, &v) in y.iter().enumerate() {
            let (m, c, row) = (i / (rows * cols), i / rows % cols, i % rows);
            assert_eq!(v, x[m * rows * cols + row * cols + c], "{dims:?} at {i}");
        }
    }
}

#[test]
fn slice_and_concat_round_trip() {
    let dims = [2, 5, 3];
    let x: Vec<f32> = (0..30).map(|v| v as f32).collect();
    let a = slice(&x, &dims, 1, 0, 2).unwrap();
    let b = slice(&x, &dims, 1, 2, 5).unwrap();
    assert_eq!(&a[..6], &x[..6]);
    assert_eq!(&b[..3], &x[6..9]);
    let joined = concat(&[(&a[..], &[2, 2, 3][..]), (&b[..], &[2, 3, 3][..])], 1).unwrap();
    assert_eq!(joined, x);
    // Along the last axis, by hand.
    let m = [1, 2, 3, 4];
    let left = slice(&m, &[2, 2], 1, 0, 1).unwrap();
    assert_eq!(left, [1, 3]);
    let c = concat(&[(&left[..], &[2, 1][..]), (&[7, 8][..], &[2, 1][..])], 1).unwrap();
    assert_eq!(c, [1, 7, 3, 8]);
    assert_err(
        slice(&x, &dims, 1, 3, 6),
        "slice 3..6 along axis 1 is out of range",
    );
    assert_err(
        concat(&[(&a[..], &[2, 2, 3][..]), (&b[..], &[3, 3, 2][..])], 1),
        "must agree in every axis but 1",
    );
}

#[test]
fn reshape_keeps_elements_and_checks_counts() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(reshape(&x, &[2, 3], &[3, 2]).unwrap(), x);
    assert_err(reshape(&x, &[2, 3], &[4, 2]), "element counts differ");
    assert_err(reshape(&x, &[2, 2], &[4]), "x: expected 4 elements, got 6");
}

// ---------------------------------------------------------------- cast

#[test]
fn round_to_uses_round_to_nearest_even() {
    let mut xs = [
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -2.5,
        f32::NAN,
    ];
    round_to(DType::Bf16, &mut xs).unwrap();
    assert_eq!(&xs[..3], &[1.0, 1.0 + 2f32.powi(-6), -2.5]);
    assert!(xs[3].is_nan());
    // f16: 1 + 2^-11 ties to 1; 65520 rounds past the max to inf.
    let mut hs = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65520.0];
    round_to(DType::F16, &mut hs).unwrap();
    assert_eq!(hs, [1.0, 1.0 + 2f32.powi(-9), f32::INFINITY]);
    let mut fs = [0.1f32];
    round_to(DType::F32, &mut fs).unwrap();
    assert_eq!(fs, [0.1]);
    assert_err(
        round_to(DType::F8E4M3, &mut fs),
        "rounding to f8e4m3 is not a high-precision cast",
    );
    assert_err(
        round_to(DType::I32, &mut fs),
        "rounding to i32 is not a high-precision cast",
    );
    assert_eq!(FloatFormat::of(DType::Bf16), Some(FloatFormat::Bf16));
}

/// The sizes each kernel reads from its op's operand shapes (one derivation, which codegen's
/// selection and the CPU backend both call).
mod from_shapes {
    use dsc_ir::Shape;
    use dsc_kernels::ops::*;

    fn shape(dims: &[u64]) -> Shape {
        Shape::new(dims)
    }

    #[test]
    fn attention_sizes_come_from_q_k_and_v() {
        let (q, k, v) = (
            shape(&[2, 5, 8, 64]),
            shape(&[2, 7, 2, 64]),
            shape(&[2, 7, 2, 32]),
        );
        let scores = ScoreDims::from_shapes(&q, &k).unwrap();
        assert_eq!(
            scores,
            ScoreDims {
                batch: 2,
                q_len: 5,
                kv_len: 7,
                heads: 8,
                kv_heads: 2,
                head_dim: 64,
            }
        );
        assert_eq!(
            AttentionDims::from_shapes(&q, &k, &v).unwrap(),
            AttentionDims {
                scores,
                v_heads: 2,
                v_dim: 32,
            }
        );
        assert_eq!(rope_pe_dims(&shape(&[2, 7, 1, 16])).unwrap(), (1, 16));
        let e = ScoreDims::from_shapes(&shape(&[5, 8, 64]), &k).unwrap_err();
        assert_eq!(e.to_string(), "q must be rank 4, got [5, 8, 64]");
        let e = AttentionDims::from_shapes(&q, &k, &shape(&[7, 32])).unwrap_err();
        assert_eq!(e.to_string(), "v must be rank 4, got [7, 32]");
    }

    #[test]
    fn value_sizes_read_p_as_batch_heads_queries_keys() {
        let dims = ValueDims::from_shapes(&shape(&[2, 8, 5, 7]), &shape(&[2, 7, 4, 32])).unwrap();
        assert_eq!(
            dims,
            ValueDims {
                batch: 2,
                q_len: 5,
                kv_len: 7,
                heads: 8,
                v_heads: 4,
                v_dim: 32,
            }
        );
        let e = ValueDims::from_shapes(&shape(&[2, 8, 5]), &shape(&[2, 7, 4, 32])).unwrap_err();
        assert_eq!(e.to_string(), "p must be rank 4, got [2, 8, 5]");
    }

    #[test]
    fn moe_sizes_come_from_logits_weights_indices_and_outputs() {
        assert_eq!(
            TopkDims::from_shapes(&shape(&[64, 256])).unwrap(),
            TopkDims {
                tokens: 64,
                experts: 256,
            }
        );
        assert!(
            TopkDims::from_shapes(&shape(&[1, 64, 256]))
                .unwrap_err()
                .to_string()
                .contains("logits must be rank 2")
        );
        let dims = GroupedDims::from_shapes(&shape(&[8, 128, 256]), &shape(&[64, 2])).unwrap();
        assert_eq!(
            dims,
            GroupedDims {
                tokens: 64,
                top_k: 2,
                experts: 8,
                out_features: 128,
                in_features: 256,
            }
        );
        assert_eq!(dims.rows(), 128);
        assert!(
            GroupedDims::from_shapes(&shape(&[128, 256]), &shape(&[64, 2]))
                .unwrap_err()
                .to_string()
                .contains("grouped weights must be rank 3")
        );
        assert_eq!(GroupedInput::of(&shape(&[64, 256])), GroupedInput::PerToken);
        assert_eq!(
            GroupedInput::of(&shape(&[64, 2, 128])),
            GroupedInput::PerSlot
        );
        assert_eq!(
            CombineDims::from_shapes(&shape(&[64, 2, 256])).unwrap(),
            CombineDims {
                tokens: 64,
                top_k: 2,
                dim: 256,
            }
        );
        assert!(
            CombineDims::from_shapes(&shape(&[64, 256]))
                .is_err_and(|e| e.to_string().contains("expert outputs must be rank 3"))
        );
    }

    #[test]
    fn linear_and_embedding_sizes_come_from_their_operands() {
        let d = LinearDims::from_shapes(&shape(&[2, 5, 64]), &shape(&[48, 64])).unwrap();
        assert_eq!((d.m, d.n, d.k), (10, 48, 64));
        let e = LinearDims::from_shapes(&shape(&[10, 64]), &shape(&[48, 32])).unwrap_err();
        assert!(
            e.to_string()
                .contains("x's last dim 64 is not the weight's K 32"),
            "{e}"
        );
        let e = LinearDims::from_shapes(&shape(&[10, 64]), &shape(&[64])).unwrap_err();
        assert!(
            e.to_string()
                .contains("the weight of a linear must be rank 2"),
            "{e}"
        );
        let d = EmbeddingDims::from_shapes(&shape(&[2, 7]), &shape(&[512, 256])).unwrap();
        assert_eq!((d.tokens, d.vocab, d.dim), (14, 512, 256));
        let e = EmbeddingDims::from_shapes(&shape(&[7]), &shape(&[512])).unwrap_err();
        assert!(
            e.to_string().contains("the embedding table must be rank 2"),
            "{e}"
        );
    }
}
