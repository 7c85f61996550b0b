//! Warp-level tensor-core instructions: `mma.sync.aligned.m16n8kK.row.col` (FP8 e4m3/e5m2,
//! bf16, f16, tf32 operands; f32 or f16 accumulators) with the PTX ISA's fragment layouts,
//! and `ldmatrix`/`stmatrix`. FP8 sums go through the CPU reference's accumulator models.

use dsc_kernels::Accumulator;
use dsc_kernels::numerics::fp8::{self, Fp8Format};

use super::float::{bf16_value, f16_value, to_f16_bits};
use super::warp::WARP;
use crate::ptx::Ty;

/// Bytes of one element of an MMA operand type (tf32 occupies a whole register).
pub(crate) fn elem_bytes(t: Ty) -> Option<usize> {
    Some(match t {
        Ty::E4m3 | Ty::E5m2 => 1,
        Ty::Bf16 | Ty::F16 => 2,
        Ty::Tf32 => 4,
        _ => return None,
    })
}

/// The exact value of one operand element.
pub(crate) fn elem_value(t: Ty, bits: u32) -> f64 {
    match t {
        Ty::E4m3 => f64::from(fp8::decode(Fp8Format::E4M3, bits as u8)),
        Ty::E5m2 => f64::from(fp8::decode(Fp8Format::E5M2, bits as u8)),
        Ty::Bf16 => bf16_value(u64::from(bits)),
        Ty::F16 => f16_value(u64::from(bits)),
        // tf32 reads the upper 19 bits of an f32.
        _ => f64::from(f32::from_bits(bits & 0xffff_e000)),
    }
}

/// Element `i` of a lane's fragment registers.
pub(crate) fn element(regs: &[u64], i: usize, bytes: usize) -> u32 {
    let per_reg = 4 / bytes;
    let r = regs[i / per_reg];
    let shift = (i % per_reg) * bytes * 8;
    let mask = if bytes == 4 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    };
    ((r >> shift) & mask) as u32
}

/// A validated `mma.sync` shape and types.
#[derive(Debug, Clone, Copy)]
pub struct MmaSpec {
    /// K.
    pub k: usize,
    /// A and B element type.
    pub a: Ty,
    /// B element type.
    pub b: Ty,
    /// Accumulator type (f32 or f16).
    pub c: Ty,
    /// Result type.
    pub d: Ty,
}

impl MmaSpec {
    /// The spec of an m16n8kK instruction, if implemented.
    pub fn new(shape: (u32, u32, u32), a: Ty, b: Ty, c: Ty, d: Ty) -> Option<MmaSpec> {
        let (m, n, k) = shape;
        let bytes = elem_bytes(a)?;
        elem_bytes(b)?;
        let full_k = 32 / bytes; // 32 for FP8, 16 for 16-bit, 8 for tf32
        let half = full_k / 2;
        let ok = m == 16 && n == 8 && (k as usize == full_k || k as usize == half);
        let fp8 = matches!(a, Ty::E4m3 | Ty::E5m2);
        let same_family = fp8 == matches!(b, Ty::E4m3 | Ty::E5m2) && (fp8 || a == b);
        let acc_ok = matches!((c, d), (Ty::F32, Ty::F32) | (Ty::F16, Ty::F16));
        (ok && same_family
            && acc_ok
            && (c == Ty::F32 || matches!(a, Ty::F16 | Ty::E4m3 | Ty::E5m2)))
        .then_some(MmaSpec {
            k: k as usize,
            a,
            b,
            c,
            d,
        })
    }

    /// Registers per lane of A, B, C and D.
    pub fn reg_counts(&self) -> (usize, usize, usize, usize) {
        let eb = elem_bytes(self.a).expect("validated");
        let a = (16 * self.k * eb).div_ceil(4 * WARP);
        let b = (8 * self.k * eb).div_ceil(4 * WARP);
        let c = if self.c == Ty::F32 { 4 } else { 2 };
        let d = if self.d == Ty::F32 { 4 } else { 2 };
        (a, b, c, d)
    }

    /// Runs the MMA over all 32 lanes' fragments: `a[lane]`, `b[lane]`, `c[lane]` registers
    /// in, `d[lane]` registers out.
    pub fn run(
        &self,
        a: &[Vec<u64>],
        b: &[Vec<u64>],
        c: &[Vec<u64>],
        accumulator: Accumulator,
    ) -> Vec<Vec<u64>> {
        let k = self.k;
        let ab = elem_bytes(self.a).expect("validated");
        let bb = elem_bytes(self.b).expect("validated");
        let e_a = 4 / ab.min(4);
        let e_b = 4 / bb.min(4);
        let full_k = 32 / ab;
        let mut ma = vec![0f64; 16 * k];
        let mut mb = vec![0f64; k * 8];
        let mut mc = [0f32; 16 * 8];
        for lane in 0..WARP {
            let (group, tig) = (lane / 4, lane % 4);
            for i in 0..(16 * k / WARP) {
                let row = group + 8 * ((i / e_a) & 1);
                let col = tig * e_a + (i % e_a) + (full_k / 2) * (i / (2 * e_a));
                ma[row * k + col] = elem_value(self.a, element(&a[lane], i, ab));
            }
            for i in 0..(8 * k / WARP) {
                let row = tig * e_b + (i % e_b) + (full_k / 2) * (i / e_b);
                mb[row * 8 + group] = elem_value(self.b, element(&b[lane], i, bb));
            }
            for i in 0..4 {
                let (row, col) = (group + 8 * (i >> 1), tig * 2 + (i & 1));
                mc[row * 8 + col] = if self.c == Ty::F32 {
                    f32::from_bits(c[lane][i] as u32)
                } else {
                    f16_value((c[lane][i / 2] >> (16 * (i & 1))) & 0xffff) as f32
                };
            }
        }
        let fp8 = matches!(self.a, Ty::E4m3 | Ty::E5m2);
        let mut md = [0f32; 16 * 8];
        let mut products = Vec::with_capacity(k);
        for row in 0..16 {
            for col in 0..8 {
                products.clear();
                // Products of FP8, bf16, f16 and tf32 values are exact in f32.
                products.extend((0..k).map(|kk| (ma[row * k + kk] * mb[kk * 8 + col]) as f32));
                let acc = mc[row * 8 + col];
                md[row * 8 + col] = if fp8 {
                    accumulator.mma(acc, &products)
                } else {
                    products.iter().fold(acc, |s, &p| s + p)
                };
            }
        }
        (0..WARP)
            .map(|lane| {
                let (group, tig) = (lane / 4, lane % 4);
                let at = |i: usize| md[(group + 8 * (i >> 1)) * 8 + tig * 2 + (i & 1)];
                if self.d == Ty::F32 {
                    (0..4).map(|i| u64::from(at(i).to_bits())).collect()
                } else {
                    (0..2)
                        .map(|j| {
                            let lo = u64::from(to_f16_bits(f64::from(at(2 * j))));
                            let hi = u64::from(to_f16_bits(f64::from(at(2 * j + 1))));
                            (hi << 16) | lo
                        })
                        .collect()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A·B with A[r][k] = r + 1 and B[k][c] = 1 for k < 2 (else 0), in bf16 m16n8k16: every
    /// D[r][c] = 2(r + 1) + C, which pins the row mapping of A and D.
    #[test]
    fn bf16_fragments_follow_the_ptx_layout() {
        let spec = MmaSpec::new((16, 8, 16), Ty::Bf16, Ty::Bf16, Ty::F32, Ty::F32).unwrap();
        assert_eq!(spec.reg_counts(), (4, 2, 4, 4));
        let bf = |x: f32| u64::from(half::bf16::from_f32(x).to_bits());
        let mut a = vec![vec![0u64; 4]; 32];
        let mut b = vec![vec![0u64; 2]; 32];
        let c = vec![vec![u64::from(0.5f32.to_bits()); 4]; 32];
        for lane in 0..32 {
            let (group, tig) = (lane / 4, lane % 4);
            for i in 0..8 {
                let row = group + 8 * ((i / 2) & 1);
                a[lane][i / 2] |= bf(row as f32 + 1.0) << (16 * (i % 2));
            }
            for i in 0..4 {
                let k = tig * 2 + (i % 2) + 8 * (i / 2);
                if k < 2 {
                    b[lane][i / 2] |= bf(1.0) << (16 * (i % 2));
                }
            }
        }
        let d = spec.run(&a, &b, &c, Accumulator::Exact);
        for (lane, regs) in d.iter().enumerate() {
            let group = lane / 4;
            for (i, &v) in regs.iter().enumerate() {
                let row = group + 8 * (i >> 1);
                assert_eq!(f32::from_bits(v as u32), 2.0 * (row as f32 + 1.0) + 0.5);
            }
        }
    }

    #[test]
    fn fp8_k32_sums_through_the_accumulator_model() {
        let spec = MmaSpec::new((16, 8, 32), Ty::E4m3, Ty::E4m3, Ty::F32, Ty::F32).unwrap();
        assert_eq!(spec.reg_counts(), (4, 2, 4, 4));
        let one = u64::from(fp8::encode(Fp8Format::E4M3, 1.0));
        let ones4 = one | one << 8 | one << 16 | one << 24;
        let a = vec![vec![ones4; 4]; 32];
        let b = vec![vec![ones4; 2]; 32];
        let c = vec![vec![0u64; 4]; 32];
        let d = spec.run(&a, &b, &c, Accumulator::Exact);
        assert!(
            d.iter()
                .flatten()
                .all(|&v| f32::from_bits(v as u32) == 32.0)
        );
        assert!(MmaSpec::new((16, 8, 32), Ty::E4m3, Ty::Bf16, Ty::F32, Ty::F32).is_none());
    }
}
