//! Fused `attention` (online softmax over key tiles) against an independent f64 formulation of
//! `softmax(q·kᵀ·scale, causal) · v`: equal up to f32 rounding with unrounded probabilities,
//! and within the bound of one BF16 rounding per probability otherwise.

use dsc_kernels::ops::{
    ATTENTION_KV_TILE, AttentionDims, FloatFormat, RopeOperands, ScoreDims, attention,
};
use dsc_kernels::rng::SplitMix64;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    SplitMix64(seed).symmetric_f32s(n, 1.0)
}

struct Case {
    b: usize,
    s: usize,
    t: usize,
    h: usize,
    hk: usize,
    d: usize,
    /// RoPE dims and k_pe heads (MLA), if any.
    pe: Option<(usize, usize)>,
    hv: usize,
    dv: usize,
    causal: bool,
    /// Added to the scores of keys in the last tile (extreme, late maxima force rescaling).
    late_boost: f32,
}

impl Case {
    fn run(&self, probs: FloatFormat) -> (Vec<f32>, Vec<f64>, f64) {
        let Case {
            b,
            s,
            t,
            h,
            hk,
            d,
            hv,
            dv,
            ..
        } = *self;
        let q = values(b * s * h * d, 1);
        let mut k = values(b * t * hk * d, 2);
        let v = values(b * t * hv * dv, 3);
        let (r, hp) = self.pe.unwrap_or((0, 1));
        let q_pe = values(b * s * h * r, 4);
        let k_pe = values(b * t * hp * r, 5);
        // A late boost: the keys of the last tile get a component along q's first dim.
        let last_tile = (t - 1) / ATTENTION_KV_TILE * ATTENTION_KV_TILE;
        for bb in 0..b {
            for ti in last_tile..t {
                for kh in 0..hk {
                    k[((bb * t + ti) * hk + kh) * d] += self.late_boost;
                }
            }
        }
        let scale = 1.0 / ((d + r) as f64).sqrt();
        let dims = AttentionDims {
            scores: ScoreDims {
                batch: b,
                q_len: s,
                kv_len: t,
                heads: h,
                kv_heads: hk,
                head_dim: d,
            },
            v_heads: hv,
            v_dim: dv,
        };
        let pe = self.pe.map(|_| RopeOperands {
            q_pe: &q_pe,
            k_pe: &k_pe,
            kv_heads: hp,
            dim: r,
        });
        let got = attention(&q, &k, &v, dims, pe, scale, self.causal, probs).unwrap();

        let scale32 = scale as f32 as f64;
        let mut want = vec![0.0f64; b * s * h * dv];
        let mut v_max = 0.0f64;
        for bb in 0..b {
            for hh in 0..h {
                for si in 0..s {
                    let visible = if self.causal { si + (t - s) + 1 } else { t };
                    let scores: Vec<f64> = (0..visible)
                        .map(|ti| {
                            let kh = hh / (h / hk);
                            let mut dot: f64 = (0..d)
                                .map(|x| {
                                    q[((bb * s + si) * h + hh) * d + x] as f64
                                        * k[((bb * t + ti) * hk + kh) * d + x] as f64
                                })
                                .sum();
                            if r > 0 {
                                let ph = hh / (h / hp);
                                dot += (0..r)
                                    .map(|x| {
                                        q_pe[((bb * s + si) * h + hh) * r + x] as f64
                                            * k_pe[((bb * t + ti) * hp + ph) * r + x] as f64
                                    })
                                    .sum::<f64>();
                            }
                            dot * scale32
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for e in 0..dv {
                        let o = &mut want[((bb * s + si) * h + hh) * dv + e];
                        for (ti, x) in scores.iter().enumerate() {
                            let vv = v[((bb * t + ti) * hv + hh / (h / hv)) * dv + e] as f64;
                            v_max = v_max.max(vv.abs());
                            *o += (x - max).exp() / sum * vv;
                        }
                    }
                }
            }
        }
        (got, want, v_max)
    }
}

fn case() -> Case {
    Case {
        b: 2,
        s: 70,
        t: 150,
        h: 4,
        hk: 2,
        d: 16,
        pe: None,
        hv: 2,
        dv: 24,
        causal: true,
        late_boost: 0.0,
    }
}

#[track_caller]
fn assert_within(got: &[f32], want: &[f64], bound: f64) {
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst <= bound, "worst error {worst:e} > {bound:e}");
}

#[test]
fn f32_probabilities_give_softmax_times_v() {
    for causal in [true, false] {
        let (got, want, _) = Case { causal, ..case() }.run(FloatFormat::F32);
        assert_within(&got, &want, 2e-6);
    }
}

#[test]
fn mla_shapes_with_a_shared_rope_key_head() {
    let mla = Case {
        h: 4,
        hk: 4,
        d: 32,
        pe: Some((16, 1)),
        hv: 4,
        dv: 32,
        ..case()
    };
    let (got, want, _) = mla.run(FloatFormat::F32);
    assert_within(&got, &want, 2e-6);
}

#[test]
fn bf16_probabilities_stay_within_one_rounding_each() {
    // Each probability is off by at most 2^-9 relative, so the output by 2^-9 · max|v|.
    let (got, want, v_max) = case().run(FloatFormat::Bf16);
    assert_within(&got, &want, v_max / 512.0 + 1e-6);
    // And the rounding is really applied: unrounded probabilities land elsewhere.
    let (exact, _, _) = case().run(FloatFormat::F32);
    assert!(got.iter().zip(&exact).any(|(a, b)| a != b));
}

#[test]
fn a_large_maximum_in_a_later_tile_rescales_the_earlier_ones() {
    // Scores of the last tile move by up to ±100: without the rescale exp overflows or the
    // early tiles keep their full weight.
    let late = Case {
        late_boost: 400.0,
        causal: false,
        ..case()
    };
    let (got, want, _) = late.run(FloatFormat::F32);
    assert!(got.iter().all(|x| x.is_finite()));
    assert_within(&got, &want, 2e-5);
}

#[test]
fn queries_without_keys_give_zeros() {
    let dims = AttentionDims {
        scores: ScoreDims {
            batch: 1,
            q_len: 3,
            kv_len: 0,
            heads: 2,
            kv_heads: 2,
            head_dim: 8,
        },
        v_heads: 2,
        v_dim: 8,
    };
    let q = values(3 * 2 * 8, 9);
    let out = attention(&q, &[], &[], dims, None, 1.0, false, FloatFormat::Bf16).unwrap();
    assert_eq!(out.len(), 3 * 2 * 8);
    assert!(out.iter().all(|&x| x == 0.0), "{out:?}");
}
