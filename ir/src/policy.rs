//! The precision policy: which ops run in FP8, the FP8 recipe's parameters, and overrides.

use crate::{DType, Role};
use std::fmt;

/// How block scales are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleFormat {
    /// Any f32 multiplier.
    F32,
    /// Powers of two, `s = 2^ceil(log2 s)` (UE8M0).
    Ue8m0,
}

impl ScaleFormat {
    /// The spelling used in model.toml and the IR.
    pub fn name(self) -> &'static str {
        match self {
            ScaleFormat::F32 => "f32",
            ScaleFormat::Ue8m0 => "ue8m0",
        }
    }

    /// Parses `f32` or `ue8m0`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(ScaleFormat::F32),
            "ue8m0" => Some(ScaleFormat::Ue8m0),
            _ => None,
        }
    }
}

impl fmt::Display for ScaleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[[precision.override]]`: ops whose name matches `pattern` use `dtype`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrecisionOverride {
    /// A glob over op names: `*` any run of characters, `?` one character.
    pub pattern: String,
    /// An FP8 dtype makes matched GEMMs FP8; a high dtype becomes the matched ops' high dtype.
    pub dtype: DType,
}

/// The names of the policy's fields, as model.toml's `[precision]` and the IR's `policy` line
/// spell them; FP8 ops (`promote`, `fp8_gemm`) carry the recipe's sizes as attributes of the
/// same names.
pub mod keys {
    /// Roles kept in the high dtype.
    pub const KEEP_HIGH: &str = "keep_high";
    /// The high dtype.
    pub const HIGH: &str = "high";
    /// The FP8 format of GEMM operands.
    pub const FP8_FORMAT: &str = "fp8_format";
    /// Activation tile width along K.
    pub const ACT_TILE: &str = "act_tile";
    /// Weight block size.
    pub const WEIGHT_BLOCK: &str = "weight_block";
    /// Elements of K between promotions into FP32.
    pub const PROMOTE_INTERVAL: &str = "promote_interval";
    /// How block scales are represented.
    pub const SCALE_FORMAT: &str = "scale_format";
    /// Every key, in the order the IR's `policy` line prints them.
    pub const ALL: [&str; 7] = [
        KEEP_HIGH,
        HIGH,
        FP8_FORMAT,
        ACT_TILE,
        WEIGHT_BLOCK,
        PROMOTE_INTERVAL,
        SCALE_FORMAT,
    ];
}

/// The DeepSeek-V3 recipe's activation tile: activations are scaled per 1 × 128 tile along K.
pub const DEFAULT_ACT_TILE: u32 = 128;
/// The DeepSeek-V3 recipe's weight block: weights are scaled per 128 × 128 block.
pub const DEFAULT_WEIGHT_BLOCK: u32 = 128;
/// The DeepSeek-V3 recipe's promotion interval: partial sums move into FP32 every 128
/// elements of K.
pub const DEFAULT_PROMOTE_INTERVAL: u32 = 128;

/// The FP8 recipe of DESIGN.md §3 with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrecisionPolicy {
    /// Roles whose ops stay in the high dtype.
    pub keep_high: Vec<Role>,
    /// Storage dtype of everything not FP8 (bf16 or f32; f16 also accepted).
    pub high: DType,
    /// FP8 format of GEMM operands (f8e4m3 or f8e5m2).
    pub fp8_format: DType,
    /// Activation tile width along K (1 × act_tile).
    pub act_tile: u32,
    /// Weight block size (weight_block × weight_block).
    pub weight_block: u32,
    /// Elements of K between promotions of the partial sum into the FP32 accumulator.
    pub promote_interval: u32,
    pub scale_format: ScaleFormat,
    /// Applied last, in order; a later match wins.
    pub overrides: Vec<PrecisionOverride>,
}

impl Default for PrecisionPolicy {
    fn default() -> Self {
        PrecisionPolicy {
            keep_high: vec![
                Role::Embedding,
                Role::Head,
                Role::Gating,
                Role::Norm,
                Role::Attention,
            ],
            high: DType::Bf16,
            fp8_format: DType::F8E4M3,
            act_tile: DEFAULT_ACT_TILE,
            weight_block: DEFAULT_WEIGHT_BLOCK,
            promote_interval: DEFAULT_PROMOTE_INTERVAL,
            scale_format: ScaleFormat::F32,
            overrides: Vec::new(),
        }
    }
}

/// A policy field with an impossible value: the field's name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    /// The model.toml key under `[precision]` that is wrong.
    pub field: &'static str,
    pub message: String,
}

/// The MMA depth of FP8 tensor-core instructions: promotion happens at multiples of it.
pub const MMA_K: u32 = 32;

impl PrecisionPolicy {
    /// Checks the recipe's invariants (§3); the error names the offending field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |field, message: String| Err(PolicyError { field, message });
        if !self.high.is_high_float() {
            return err(
                keys::HIGH,
                format!("`high` must be bf16, f16 or f32, not {}", self.high),
            );
        }
        if !self.fp8_format.is_fp8() {
            return err(
                keys::FP8_FORMAT,
                format!("`fp8_format` must be e4m3 or e5m2, not {}", self.fp8_format),
            );
        }
        if self.act_tile == 0 || !self.act_tile.is_multiple_of(MMA_K) {
            return err(
                keys::ACT_TILE,
                format!(
                    "`act_tile` must be a positive multiple of {MMA_K}, not {}",
                    self.act_tile
                ),
            );
        }
        if self.weight_block == 0 || !self.weight_block.is_multiple_of(self.act_tile) {
            return err(
                keys::WEIGHT_BLOCK,
                format!(
                    "`weight_block` must be a positive multiple of act_tile ({}), not {}: \
                     a K block of the weight must cover whole activation tiles",
                    self.act_tile, self.weight_block
                ),
            );
        }
        let p = self.promote_interval;
        if p == 0 || !p.is_multiple_of(MMA_K) || !self.act_tile.is_multiple_of(p) {
            return err(
                keys::PROMOTE_INTERVAL,
                format!(
                    "`promote_interval` must be a multiple of {MMA_K} (the MMA depth) that divides \
                     act_tile ({}), so a partial sum never spans two scale groups; got {p}",
                    self.act_tile
                ),
            );
        }
        for o in &self.overrides {
            if !o.dtype.is_fp8() && !o.dtype.is_high_float() {
                return err(
                    "override",
                    format!(
                        "override `{}`: dtype must be an FP8 or high float type, not {}",
                        o.pattern, o.dtype
                    ),
                );
            }
        }
        Ok(())
    }

    /// The dtype the last override matching `op_name` names, if any.
    pub fn override_for(&self, op_name: &str) -> Option<DType> {
        self.overrides
            .iter()
            .rev()
            .find(|o| glob_match(&o.pattern, op_name))
            .map(|o| o.dtype)
    }
}

/// Matches `name` against a glob of `*` (any run, dots included) and `?` (one character).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Serialized as model.toml and the IR spell it (`f32`, `ue8m0`).
impl serde::Serialize for ScaleFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("model.layers.0.*", "model.layers.0.mlp.up"));
        assert!(!glob_match("model.layers.0.*", "model.layers.10.mlp.up"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*.up", "layers.3.mlp.experts.up"));
        assert!(glob_match("layers.?.attn*", "layers.3.attn.wq"));
        assert!(!glob_match("layers.?.attn*", "layers.13.attn.wq"));
        assert!(glob_match("a*b*c", "axxbyybc"));
        assert!(!glob_match("a*b*c", "axxbyyb"));
    }

    #[test]
    fn promote_interval_must_divide_tile() {
        let mut p = PrecisionPolicy::default();
        assert!(p.validate().is_ok());
        for ok in [32, 64, 128] {
            p.promote_interval = ok;
            assert!(p.validate().is_ok(), "{ok}");
        }
        for bad in [0, 16, 96, 256] {
            p.promote_interval = bad;
            assert_eq!(p.validate().unwrap_err().field, "promote_interval", "{bad}");
        }
    }
}
