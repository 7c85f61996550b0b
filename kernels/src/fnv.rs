// FNV-1a (Fowler–Noll–Vo), the workspace's one stable hash: the same in every build and on every
// machine, unlike `std`'s `DefaultHasher`. Kernel entry names, the PTX cache's keys, the
// codegen version, random weights' per-parameter seeds and the emulator's tensor-map checksum
// use it.
//
// This file holds items only, with full paths and no inner attributes or `//!` docs, because
// dsc-codegen's build script `include!`s it too (a build script cannot use the crate it
// builds before, and making dsc-kernels a build dependency would compile it twice).

/// 64-bit FNV-1a offset basis.
pub const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// 64-bit FNV prime.
pub const FNV64_PRIME: u64 = 0x0100_0000_01b3;

/// 64-bit FNV-1a, as a [`std::hash::Hasher`] for streaming input.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV64_OFFSET)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV64_PRIME);
        }
    }
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv1a::default();
    std::hash::Hasher::write(&mut hasher, bytes);
    hasher.0
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::{fnv1a32, fnv1a64};

    #[test]
    fn known_values() {
        // The published test vectors of FNV-1a.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }
}
