//! The role of an op in the model, which the precision policy keys on.

use std::fmt;
use std::str::FromStr;

/// What part of the model an op belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Embedding,
    Head,
    Gating,
    Norm,
    /// Core attention: scores, softmax, weighted sum, RoPE.
    Attention,
    /// The q/kv/o projections around attention.
    AttnProj,
    Ffn,
    Expert,
    SharedExpert,
    Residual,
    Other,
}

impl Role {
    /// Every role, in the order DESIGN.md lists them.
    pub const ALL: [Role; 11] = [
        Role::Embedding,
        Role::Head,
        Role::Gating,
        Role::Norm,
        Role::Attention,
        Role::AttnProj,
        Role::Ffn,
        Role::Expert,
        Role::SharedExpert,
        Role::Residual,
        Role::Other,
    ];

    /// The spelling used in the text format and model.toml.
    pub fn name(self) -> &'static str {
        match self {
            Role::Embedding => "embedding",
            Role::Head => "head",
            Role::Gating => "gating",
            Role::Norm => "norm",
            Role::Attention => "attention",
            Role::AttnProj => "attn_proj",
            Role::Ffn => "ffn",
            Role::Expert => "expert",
            Role::SharedExpert => "shared_expert",
            Role::Residual => "residual",
            Role::Other => "other",
        }
    }

    /// Roles whose GEMMs run in FP8 under the DeepSeek-V3 recipe (unless kept high).
    pub fn is_fp8_gemm_role(self) -> bool {
        matches!(
            self,
            Role::AttnProj | Role::Ffn | Role::Expert | Role::SharedExpert
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a string that names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role `{0}` (expected one of embedding, head, gating, norm, attention, attn_proj, ffn, expert, shared_expert, residual, other)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}
