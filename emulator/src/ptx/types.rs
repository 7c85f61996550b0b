//! PTX's fundamental types and state spaces, as instructions name them (`.b32`, `.f32`,
//! `.global`, …).

/// A PTX type suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    /// `.pred`.
    Pred,
    /// Untyped bits.
    B8,
    /// Untyped bits.
    B16,
    /// Untyped bits.
    B32,
    /// Untyped bits.
    B64,
    /// Untyped bits.
    B128,
    /// Unsigned.
    U8,
    /// Unsigned.
    U16,
    /// Unsigned.
    U32,
    /// Unsigned.
    U64,
    /// Signed.
    S8,
    /// Signed.
    S16,
    /// Signed.
    S32,
    /// Signed.
    S64,
    /// IEEE half.
    F16,
    /// Two halves in 32 bits.
    F16x2,
    /// bfloat16.
    Bf16,
    /// Two bfloat16 in 32 bits.
    Bf16x2,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
    /// TensorFloat-32 (in 32 bits).
    Tf32,
    /// FP8 E4M3.
    E4m3,
    /// FP8 E5M2.
    E5m2,
    /// Two E4M3 in 16 bits.
    E4m3x2,
    /// Two E5M2 in 16 bits.
    E5m2x2,
}

impl Ty {
    /// Every type with its PTX suffix (without the dot).
    const SUFFIXES: [(Ty, &'static str); 25] = [
        (Ty::Pred, "pred"),
        (Ty::B8, "b8"),
        (Ty::B16, "b16"),
        (Ty::B32, "b32"),
        (Ty::B64, "b64"),
        (Ty::B128, "b128"),
        (Ty::U8, "u8"),
        (Ty::U16, "u16"),
        (Ty::U32, "u32"),
        (Ty::U64, "u64"),
        (Ty::S8, "s8"),
        (Ty::S16, "s16"),
        (Ty::S32, "s32"),
        (Ty::S64, "s64"),
        (Ty::F16, "f16"),
        (Ty::F16x2, "f16x2"),
        (Ty::Bf16, "bf16"),
        (Ty::Bf16x2, "bf16x2"),
        (Ty::F32, "f32"),
        (Ty::F64, "f64"),
        (Ty::Tf32, "tf32"),
        (Ty::E4m3, "e4m3"),
        (Ty::E5m2, "e5m2"),
        (Ty::E4m3x2, "e4m3x2"),
        (Ty::E5m2x2, "e5m2x2"),
    ];

    /// The type of a suffix without its dot (`b32`), if it is one.
    pub fn parse(s: &str) -> Option<Ty> {
        Self::SUFFIXES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(t, _)| *t)
    }

    /// The suffix PTX writes for this type, without the dot (`b32`).
    pub fn suffix(self) -> &'static str {
        Self::SUFFIXES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("?", |(_, name)| name)
    }

    /// Width in bits (1 for `.pred`).
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 | Ty::E4m3 | Ty::E5m2 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 | Ty::E4m3x2 | Ty::E5m2x2 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::B128 => 128,
        }
    }

    /// Width in bytes (at least 1).
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    /// Signed integer.
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    /// Any floating-point type (scalar or packed).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16
                | Ty::F16x2
                | Ty::Bf16
                | Ty::Bf16x2
                | Ty::F32
                | Ty::F64
                | Ty::Tf32
                | Ty::E4m3
                | Ty::E5m2
                | Ty::E4m3x2
                | Ty::E5m2x2
        )
    }
}

/// A state space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Device memory.
    Global,
    /// The CTA's shared memory (`.shared`, `.shared::cta`).
    Shared,
    /// Shared memory of any CTA of the cluster (`.shared::cluster`).
    SharedCluster,
    /// Per-thread memory.
    Local,
    /// Kernel parameters.
    Param,
    /// Constant memory.
    Const,
    /// A generic address, resolved through the windows of [`crate::memory`].
    Generic,
}

impl Space {
    /// The space of a suffix without its dot (`global`, `shared::cta`), if it is one.
    pub fn parse(s: &str) -> Option<Space> {
        Some(match s {
            "global" => Space::Global,
            "shared" | "shared::cta" => Space::Shared,
            "shared::cluster" => Space::SharedCluster,
            "local" => Space::Local,
            "param" | "param::entry" | "param::func" => Space::Param,
            "const" => Space::Const,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_round_trip() {
        for (t, name) in Ty::SUFFIXES {
            assert_eq!(Ty::parse(name), Some(t));
            assert_eq!(t.suffix(), name);
        }
        assert_eq!(Ty::parse("e4m3"), Some(Ty::E4m3));
        assert_eq!(Ty::parse("f8"), None);
    }
}
