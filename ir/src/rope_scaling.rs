//! RoPE as the IR carries it: the rope op's attributes ([`attr`]: `style`, `theta`, and the
//! `scaling` with the parameters beside it), the [`RopeStyle`] and [`RopeScaling`] they
//! spell. model.toml produces them, the kernels read them; the attribute names and their
//! values live here once.

use crate::{Attr, Attrs};

/// The rope op's attribute names.
pub mod attr {
    /// Which elements pair up: a [`super::RopeStyle`] name.
    pub const STYLE: &str = "style";
    /// The frequency base (`rope_theta`).
    pub const THETA: &str = "theta";
    /// The frequency scaling, if any: `yarn` or `llama3` ([`super::RopeScaling`]).
    pub const SCALING: &str = "scaling";
    /// Both scalings: the context extension factor.
    pub const FACTOR: &str = "factor";
    /// Both scalings: the pretrained context length.
    pub const ORIGINAL_MAX_POSITION: &str = "original_max_position";
    /// YaRN's correction range and attention factors.
    pub const BETA_FAST: &str = "beta_fast";
    /// See [`BETA_FAST`].
    pub const BETA_SLOW: &str = "beta_slow";
    /// See [`BETA_FAST`].
    pub const MSCALE: &str = "mscale";
    /// See [`BETA_FAST`].
    pub const MSCALE_ALL_DIM: &str = "mscale_all_dim";
    /// Llama 3's wavelength bounds.
    pub const LOW_FREQ_FACTOR: &str = "low_freq_factor";
    /// See [`LOW_FREQ_FACTOR`].
    pub const HIGH_FREQ_FACTOR: &str = "high_freq_factor";
    /// The values of [`SCALING`].
    pub const SCALINGS: [&str; 2] = [YARN, LLAMA3];
    /// YaRN ([`super::RopeScaling::Yarn`]).
    pub const YARN: &str = "yarn";
    /// Llama 3.1 ([`super::RopeScaling::Llama3`]).
    pub const LLAMA3: &str = "llama3";
}

/// Which elements of a head form a rotated pair (the `style` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)` (DeepSeek).
    Interleaved,
    /// Pairs `(i, i + d/2)` (Llama, GPT-NeoX).
    Half,
}

impl RopeStyle {
    /// Every style.
    pub const ALL: [RopeStyle; 2] = [RopeStyle::Interleaved, RopeStyle::Half];
    /// Every style's name, as the attribute spells it.
    pub const NAMES: [&str; 2] = ["interleaved", "half"];

    /// The attribute's spelling: `interleaved` or `half`.
    pub fn name(self) -> &'static str {
        match self {
            RopeStyle::Interleaved => Self::NAMES[0],
            RopeStyle::Half => Self::NAMES[1],
        }
    }

    /// The style the attribute `name` spells.
    pub fn from_name(name: &str) -> Option<RopeStyle> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

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
                .with(attr::SCALING, Attr::Str(attr::YARN.into()))
                .with(attr::FACTOR, Attr::Float(factor))
                .with(attr::ORIGINAL_MAX_POSITION, pos(original_max_position))
                .with(attr::BETA_FAST, Attr::Float(beta_fast))
                .with(attr::BETA_SLOW, Attr::Float(beta_slow))
                .with(attr::MSCALE, Attr::Float(mscale))
                .with(attr::MSCALE_ALL_DIM, Attr::Float(mscale_all_dim)),
            RopeScaling::Llama3 {
                factor,
                original_max_position,
                low_freq_factor,
                high_freq_factor,
            } => attrs
                .with(attr::SCALING, Attr::Str(attr::LLAMA3.into()))
                .with(attr::FACTOR, Attr::Float(factor))
                .with(attr::ORIGINAL_MAX_POSITION, pos(original_max_position))
                .with(attr::LOW_FREQ_FACTOR, Attr::Float(low_freq_factor))
                .with(attr::HIGH_FREQ_FACTOR, Attr::Float(high_freq_factor)),
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
                .int(attr::ORIGINAL_MAX_POSITION)
                .and_then(|p| u64::try_from(p).ok())
                .ok_or_else(|| missing(attr::ORIGINAL_MAX_POSITION))
        };
        Ok(match attrs.str(attr::SCALING) {
            None => None,
            Some(attr::YARN) => Some(RopeScaling::Yarn {
                factor: float(attr::FACTOR)?,
                original_max_position: original_max_position()?,
                beta_fast: float(attr::BETA_FAST)?,
                beta_slow: float(attr::BETA_SLOW)?,
                mscale: float(attr::MSCALE)?,
                mscale_all_dim: float(attr::MSCALE_ALL_DIM)?,
            }),
            Some(attr::LLAMA3) => Some(RopeScaling::Llama3 {
                factor: float(attr::FACTOR)?,
                original_max_position: original_max_position()?,
                low_freq_factor: float(attr::LOW_FREQ_FACTOR)?,
                high_freq_factor: float(attr::HIGH_FREQ_FACTOR)?,
            }),
            Some(other) => {
                return Err(format!(
                    "rope scaling must be \"{}\" or \"{}\", got {other:?}",
                    attr::YARN,
                    attr::LLAMA3
                ));
            }
        })
    }
}
