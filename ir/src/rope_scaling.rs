//! RoPE frequency scaling as the IR carries it: the `scaling` attribute of a rope op and the
//! parameters beside it. model.toml produces it, the kernels read it; the attribute names live
//! here once.

use crate::{Attr, Attrs};

/// Frequency scaling for contexts beyond the pretrained length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// YaRN (HF `_compute_yarn_parameters`, DeepSeek-V2/V3).
    Yarn {
        factor: f64,
        original_max_position: u64,
        beta_fast: f64,
        beta_slow: f64,
        mscale: f64,
        mscale_all_dim: f64,
    },
    /// Llama 3.1 (HF `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        original_max_position: u64,
        low_freq_factor: f64,
        high_freq_factor: f64,
    },
}

/// YaRN's attention factor `g(m) = 0.1·m·ln(factor) + 1`, 1 when `factor` ≤ 1 (HF
/// `yarn_get_mscale`).
pub fn yarn_mscale(factor: f64, m: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

impl RopeScaling {
    /// `attrs` of a rope op with this scaling's attributes added.
    pub fn add_attrs(&self, attrs: Attrs) -> Attrs {
        // Sizes come from positive i64s, so they fit back.
        let pos = |p: u64| Attr::Int(p as i64);
        match *self {
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            } => attrs
                .with("scaling", Attr::Str("yarn".into()))
                .with("factor", Attr::Float(factor))
                .with("original_max_position", pos(original_max_position))
                .with("beta_fast", Attr::Float(beta_fast))
                .with("beta_slow", Attr::Float(beta_slow))
                .with("mscale", Attr::Float(mscale))
                .with("mscale_all_dim", Attr::Float(mscale_all_dim)),
            RopeScaling::Llama3 {
                factor,
                original_max_position,
                low_freq_factor,
                high_freq_factor,
            } => attrs
                .with("scaling", Attr::Str("llama3".into()))
                .with("factor", Attr::Float(factor))
                .with("original_max_position", pos(original_max_position))
                .with("low_freq_factor", Attr::Float(low_freq_factor))
                .with("high_freq_factor", Attr::Float(high_freq_factor)),
        }
    }

    /// What the attention's softmax scale is multiplied by: YaRN's `m²` with
    /// `m = g(mscale_all_dim)` when `mscale_all_dim` is not 0 (HF DeepseekV2/V3 attention), else 1.
    pub fn softmax_factor(&self) -> f64 {
        match *self {
            RopeScaling::Yarn {
                factor,
                mscale_all_dim,
                ..
            } if mscale_all_dim != 0.0 => {
                let m = yarn_mscale(factor, mscale_all_dim);
                m * m
            }
            _ => 1.0,
        }
    }

    /// Reads a rope op's scaling attributes: `None` without a `scaling` attribute.
    pub fn from_attrs(attrs: &Attrs) -> Result<Option<RopeScaling>, String> {
        let missing = |name: &str| format!("rope needs attribute `{name}`");
        let float = |name: &str| attrs.float(name).ok_or_else(|| missing(name));
        let original_max_position = || {
            attrs
                .int("original_max_position")
                .and_then(|p| u64::try_from(p).ok())
                .ok_or_else(|| missing("original_max_position"))
        };
        Ok(match attrs.str("scaling") {
            None => None,
            Some("yarn") => Some(RopeScaling::Yarn {
                factor: float("factor")?,
                original_max_position: original_max_position()?,
                beta_fast: float("beta_fast")?,
                beta_slow: float("beta_slow")?,
                mscale: float("mscale")?,
                mscale_all_dim: float("mscale_all_dim")?,
            }),
            Some("llama3") => Some(RopeScaling::Llama3 {
                factor: float("factor")?,
                original_max_position: original_max_position()?,
                low_freq_factor: float("low_freq_factor")?,
                high_freq_factor: float("high_freq_factor")?,
            }),
            Some(other) => {
                return Err(format!(
                    "rope scaling must be \"yarn\" or \"llama3\", got {other:?}"
                ));
            }
        })
    }
}
