//! Rotary position embedding of `x[batch, seq, heads, head_dim]` at positions `0..seq`,
//! following Hugging Face `transformers` (`modeling_rope_utils.py`: default, YaRN and Llama 3
//! frequencies; `DeepseekV3RotaryEmbedding` / `LlamaRotaryEmbedding` for cos and sin).
//!
//! Frequencies are computed in f32 as torch computes them: `inv_freq = 1 / base^(2i/d)`, and
//! `base ** t`, `s / t` (a Python number over a tensor is `t.reciprocal() * s` in torch) in f32
//! with the Python numbers rounded to f32; YaRN's correction range and attention factor are
//! Python (f64) arithmetic. The angle is `position · inv_freq` in f32, then f32 cos and sin.
//!
//! `interleaved` rotates pairs `(x[2i], x[2i+1])` by angle `pos · inv_freq[i]` — DeepSeek's
//! `apply_rotary_emb` (complex multiply). HF's DeepseekV3 instead de-interleaves q and k to
//! `[x[0::2], x[1::2]]` and applies `rotate_half`: the same values, in de-interleaved order,
//! and since q and k are permuted alike, the same attention scores. `half` rotates
//! `(x[i], x[i + d/2])` — Llama's `rotate_half`.

use super::cast::FloatFormat;
use super::error::{OpError, check_shape};
use dsc_ir::Attrs;
pub use dsc_ir::rope_scaling::{RopeScaling, RopeStyle};
use dsc_ir::rope_scaling::{attr, yarn_mscale};
use rayon::prelude::*;
use std::f64::consts::PI;

/// The attributes of one rope op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    pub style: RopeStyle,
    /// The base (`rope_theta`).
    pub theta: f64,
    /// `None` for plain `inv_freq[i] = theta^(-2i/d)`.
    pub scaling: Option<RopeScaling>,
}

impl RopeParams {
    /// Reads the rope op's attributes (`style`, `theta`, `scaling`, `factor`,
    /// `original_max_position`, `beta_fast`, `beta_slow`, `mscale`, `mscale_all_dim`,
    /// `low_freq_factor`, `high_freq_factor`); value ranges are the verifier's to check.
    pub fn from_attrs(attrs: &Attrs) -> Result<Self, OpError> {
        let missing = |name: &str| OpError::Shape(format!("rope needs attribute `{name}`"));
        let float = |name: &str| attrs.float(name).ok_or_else(|| missing(name));
        let style = attrs.str(attr::STYLE);
        let Some(style) = style.and_then(RopeStyle::from_name) else {
            return Err(OpError::Shape(format!(
                "rope style must be \"{}\" or \"{}\", got {style:?}",
                RopeStyle::NAMES[0],
                RopeStyle::NAMES[1]
            )));
        };
        let theta = float(attr::THETA)?;
        let scaling = RopeScaling::from_attrs(attrs).map_err(OpError::Shape)?;
        Ok(RopeParams {
            style,
            theta,
            scaling,
        })
    }

    /// The `d / 2` inverse frequencies of head dim `d`, in f32 (see the module doc).
    pub fn inv_freq(&self, d: usize) -> Vec<f32> {
        let base = self.theta as f32;
        // HF: base ** (torch.arange(0, dim, 2).float() / dim), all f32.
        let pos_freqs: Vec<f32> = (0..d / 2)
            .map(|i| base.powf((2 * i) as f32 / d as f32))
            .collect();
        match self.scaling {
            None => pos_freqs.iter().map(|&p| 1.0 / p).collect(),
            Some(RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                ..
            }) => {
                let (low, high) = yarn_correction_range(
                    beta_fast,
                    beta_slow,
                    d,
                    self.theta,
                    original_max_position,
                );
                // HF linear_ramp_factor: `if min == max: max += 0.001`, then
                // (arange(dim // 2) - min) / (max - min) in f32, clamped to [0, 1].
                let high = if low == high { high + 0.001 } else { high };
                let span = (high - low) as f32;
                let factor = factor as f32;
                pos_freqs
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let extrapolation = 1.0 / p;
                        let interpolation = 1.0 / (factor * p);
                        let ramp = ((i as f32 - low as f32) / span).clamp(0.0, 1.0);
                        // HF: inv_freq_extrapolation_factor = 1 - ramp; both terms as written.
                        let extra = 1.0 - ramp;
                        interpolation * (1.0 - extra) + extrapolation * extra
                    })
                    .collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                original_max_position,
                low_freq_factor,
                high_freq_factor,
            }) => {
                let old = original_max_position as f64;
                // Python floats, compared with and applied to f32 tensors in f32.
                let low_wavelen = (old / low_freq_factor) as f32;
                let high_wavelen = (old / high_freq_factor) as f32;
                let (two_pi, old32) = ((2.0 * PI) as f32, old as f32);
                let (lo_ff, span) = (
                    low_freq_factor as f32,
                    (high_freq_factor - low_freq_factor) as f32,
                );
                let factor = factor as f32;
                pos_freqs
                    .iter()
                    .map(|&p| {
                        let inv = 1.0 / p;
                        // `2 * math.pi / inv_freq` is inv_freq.reciprocal() * 2π in torch.
                        let wavelen = (1.0 / inv) * two_pi;
                        let scaled = if wavelen > low_wavelen {
                            inv / factor
                        } else {
                            inv
                        };
                        // HF: ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen).
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            let smooth = ((1.0 / wavelen) * old32 - lo_ff) / span;
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }

    /// The factor cos and sin are multiplied by: YaRN's `g(mscale) / g(mscale_all_dim)` with
    /// `g(m) = 0.1·m·ln(factor) + 1` (1 when `factor` ≤ 1), else 1.
    pub fn attention_scaling(&self) -> f32 {
        match self.scaling {
            Some(RopeScaling::Yarn {
                factor,
                mscale,
                mscale_all_dim,
                ..
            }) => (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)) as f32,
            _ => 1.0,
        }
    }

    /// cos and sin tables `[positions, d / 2]`: `round(cos(p · inv_freq[i]) · scaling)`, the
    /// product and cos in f32; `round` is `fmt` (HF casts cos and sin to the input's dtype).
    pub fn cos_sin(&self, d: usize, positions: usize, fmt: FloatFormat) -> (Vec<f32>, Vec<f32>) {
        let inv_freq = self.inv_freq(d);
        let scale = self.attention_scaling();
        let n = positions * inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(fmt.round(angle.cos() * scale));
                sin.push(fmt.round(angle.sin() * scale));
            }
        }
        (cos, sin)
    }
}

/// HF `find_correction_range` with truncation, in f64: the dimensions `(low, high)` where the
/// ramp from extrapolation (`beta_fast` rotations) to interpolation (`beta_slow`) runs.
fn yarn_correction_range(
    beta_fast: f64,
    beta_slow: f64,
    d: usize,
    base: f64,
    original_max_position: u64,
) -> (f64, f64) {
    let dim = d as f64;
    let max_pos = original_max_position as f64;
    let corr = |rotations: f64| (dim * (max_pos / (rotations * 2.0 * PI)).ln()) / (2.0 * base.ln());
    let low = corr(beta_fast).floor().max(0.0);
    let high = corr(beta_slow).ceil().min(dim - 1.0);
    (low, high)
}

/// Rotates `x[b, s, h, d]` (dims in that order) at positions `s`; `intermediate` is the dtype
/// HF rounds cos, sin and both products to (`(x·cos) + (rotate(x)·sin)` in the input's dtype);
/// [`FloatFormat::F32`] computes it all in f32, as DeepSeek's complex multiply does.
pub fn rope(
    x: &[f32],
    dims: [usize; 4],
    params: &RopeParams,
    intermediate: FloatFormat,
) -> Result<Vec<f32>, OpError> {
    check_shape("x", x.len(), &dims)?;
    let [_, seq, heads, d] = dims;
    if d % 2 != 0 {
        return Err(OpError::Shape(format!(
            "rope needs an even head_dim, got {d}"
        )));
    }
    let mut out = vec![0.0f32; x.len()];
    let row = heads * d;
    if row == 0 {
        return Ok(out);
    }
    let half = d / 2;
    let (cos, sin) = params.cos_sin(d, seq, intermediate);
    let r = |v: f32| intermediate.round(v);
    // One (batch, position) row of all heads per task; its position is the row index mod seq.
    out.par_chunks_mut(row)
        .zip(x.par_chunks(row))
        .enumerate()
        .for_each(|(i, (o, xr))| {
            let p = i % seq;
            let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
            for (oh, xh) in o.chunks_mut(d).zip(xr.chunks(d)) {
                for j in 0..half {
                    let (a, b) = match params.style {
                        RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                        RopeStyle::Half => (j, j + half),
                    };
                    let (x1, x2) = (xh[a], xh[b]);
                    oh[a] = r(x1 * c[j]) - r(x2 * s[j]);
                    oh[b] = r(x2 * c[j]) + r(x1 * s[j]);
                }
            }
        });
    Ok(out)
}
