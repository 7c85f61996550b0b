//! The presets' optional `[model.rope_scaling]` (DESIGN.md §3b): YaRN for deepseek, Llama 3's
//! frequency scaling for llama. Keys are named as in Hugging Face configs; the values become
//! attributes of the rope ops (and, for YaRN, a factor of the attention's softmax scale).

use super::ModelError;
use super::toml::{Spanned, Table};
pub use crate::rope_scaling::RopeScaling;
use crate::rope_scaling::attr;

/// The keys of `type = "yarn"`.
const YARN_KEYS: &[&str] = &[
    "type",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
];

/// The keys of `type = "llama3"`.
const LLAMA3_KEYS: &[&str] = &[
    "type",
    "factor",
    "original_max_position_embeddings",
    "low_freq_factor",
    "high_freq_factor",
];

/// The scaling types, and the architecture each applies to.
const TYPES: [(&str, &str); 2] = [(attr::YARN, "deepseek"), (attr::LLAMA3, "llama")];

/// Hugging Face's defaults (`DeepseekV2YarnRotaryEmbedding`; the attention reads
/// `rope_scaling.get("mscale_all_dim", 0)`, so an absent `mscale_all_dim` leaves the softmax
/// scale alone and scales cos/sin by `g(mscale)`).
const DEFAULT_BETA_FAST: f64 = 32.0;
const DEFAULT_BETA_SLOW: f64 = 1.0;
const DEFAULT_MSCALE: f64 = 1.0;
const DEFAULT_MSCALE_ALL_DIM: f64 = 0.0;

fn keys(ty: &str) -> &'static [&'static str] {
    if ty == attr::LLAMA3 {
        LLAMA3_KEYS
    } else {
        YARN_KEYS
    }
}

/// Reads `[model.rope_scaling]` of a model of architecture `arch`, if present.
pub fn parse(model: &Table, arch: &str) -> Result<Option<RopeScaling>, ModelError> {
    let Some(t) = model.table("rope_scaling", "[model.rope_scaling]")? else {
        return Ok(None);
    };
    let ty = t.required("type", t.str("type")?)?;
    let allowed: Vec<&str> = TYPES
        .iter()
        .filter(|&&(_, a)| a == arch)
        .map(|&(ty, _)| ty)
        .collect();
    if !allowed.contains(&ty.value) {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        return Err(t.error(
            ty.at,
            format!(
                "`type` of [model.rope_scaling] must be {} for architecture {arch}, not \"{}\"",
                list.join(" or "),
                ty.value
            ),
        ));
    }
    let own = keys(ty.value);
    for (key, at) in t.keys() {
        if own.contains(&key) {
            continue;
        }
        let other = TYPES
            .iter()
            .find(|&&(o, _)| o != ty.value && keys(o).contains(&key));
        return Err(match other {
            Some((o, _)) => t.error(
                at,
                format!(
                    "`{key}` belongs to rope scaling type \"{o}\", not \"{}\"",
                    ty.value
                ),
            ),
            None => t.unknown_key(key, at, own),
        });
    }

    let factor = t.required("factor", t.float("factor")?)?;
    if factor.value < 1.0 {
        return Err(t.error(
            factor.at,
            format!("`factor` must be at least 1, not {}", factor.value),
        ));
    }
    let factor = factor.value;
    let original_max_position = t
        .required(
            "original_max_position_embeddings",
            t.size("original_max_position_embeddings")?,
        )?
        .value;
    if ty.value == attr::LLAMA3 {
        let low = t.required("low_freq_factor", t.positive_float("low_freq_factor")?)?;
        let high = t.required("high_freq_factor", t.positive_float("high_freq_factor")?)?;
        if high.value <= low.value {
            return Err(t.error(
                high.at,
                format!(
                    "`high_freq_factor` ({}) must be greater than `low_freq_factor` ({})",
                    high.value, low.value
                ),
            ));
        }
        return Ok(Some(RopeScaling::Llama3 {
            factor,
            original_max_position,
            low_freq_factor: low.value,
            high_freq_factor: high.value,
        }));
    }
    let beta_fast = t.positive_float("beta_fast")?;
    let beta_slow = t.positive_float("beta_slow")?;
    let fast = beta_fast.map_or(DEFAULT_BETA_FAST, |b| b.value);
    let slow = beta_slow.map_or(DEFAULT_BETA_SLOW, |b| b.value);
    if fast <= slow {
        // Blame the key that was written (both defaults are fine together).
        let at = beta_fast.or(beta_slow).map(|b: Spanned<f64>| b.at);
        return Err(t.error(
            at.unwrap_or(t.at()),
            format!("`beta_fast` ({fast}) must be greater than `beta_slow` ({slow})"),
        ));
    }
    let mscale = |key: &str, default: f64| -> Result<f64, ModelError> {
        match t.float(key)? {
            Some(m) if m.value < 0.0 => Err(t.error(
                m.at,
                format!("`{key}` must be zero or positive, not {}", m.value),
            )),
            Some(m) => Ok(m.value),
            None => Ok(default),
        }
    };
    Ok(Some(RopeScaling::Yarn {
        factor,
        original_max_position,
        beta_fast: fast,
        beta_slow: slow,
        mscale: mscale("mscale", DEFAULT_MSCALE)?,
        mscale_all_dim: mscale("mscale_all_dim", DEFAULT_MSCALE_ALL_DIM)?,
    }))
}
