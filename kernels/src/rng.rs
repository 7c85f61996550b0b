//! The workspace's one pseudo-random generator: SplitMix64, seeded, with no dependencies, so
//! random weights (`dsc run --random-weights SEED`), generated inputs, the numerics report and
//! test data are the same on every machine and in every build.
//!
//! Everything drawn from a seed is pinned by tests and snapshots: changing any function here
//! changes those values.

/// SplitMix64 (Steele, Lea and Flood 2014): a small, fast, well-mixed 64-bit generator. The
/// state is public so a generator can be seeded by `SplitMix64(seed)`.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1), with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `n` f32 values uniform on [−amplitude, amplitude), for test inputs.
    pub fn symmetric_f32s(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (2.0 * self.uniform() - 1.0) as f32 * amplitude)
            .collect()
    }

    /// Uniform on (0, 1], with 53 random bits: never 0, so its logarithm is finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `n` standard normal samples by Box–Muller on two [`SplitMix64::unit`]s, both outputs of
    /// each pair used (cosine first).
    pub fn normals(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.unit(), self.unit());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            out.push(r * t.cos());
            out.push(r * t.sin());
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn the_sequence_is_the_reference_one() {
        // The first outputs for seed 0 of the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn uniform_and_unit_stay_in_their_ranges() {
        let mut rng = SplitMix64(7);
        for _ in 0..1000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u), "{u}");
            let v = rng.unit();
            assert!(v > 0.0 && v <= 1.0, "{v}");
        }
        assert_eq!(SplitMix64(3).normals(5).len(), 5);
    }
}
