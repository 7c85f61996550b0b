//! The x86-64 parts of the exact path: the AVX2 + FMA and AVX-512F microkernels, and the
//! AVX-512F decoder that turns FP8 codes into f32 sixteen at a time.
//!
//! # The vector decoder
//!
//! For a code `c` with magnitude bits `e = c & 0x7f` (exponent and mantissa fields) the f32 is
//! built in integer arithmetic, never through a floating-point operation:
//!
//! - normal codes: the fields shifted into f32 position and the exponent rebiased,
//!   `(e << (23 - mant_bits)) + ((127 - bias) << 23)`;
//! - `e < 16` (zero, every subnormal, and the lowest normals): the table's value, picked from a
//!   register holding `table[0..16]` with a permute;
//! - `e` above the largest finite code (E4M3's NaN; E5M2's inf and NaNs): the table's value from
//!   a register holding `table[0x70..0x80]`;
//!
//! then the code's sign bit ORed in. A test checks all 256 codes of both formats against the
//! table, bit for bit.

use super::{MR, Tile};
use crate::numerics::fp8::Fp8Format;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Columns of the AVX-512 tile: two vectors of 16.
pub(super) const NR_AVX512: usize = 32;

/// The constants of the vector decoder for one format.
#[derive(Clone, Copy)]
struct Decoder {
    /// `table[0..16]`.
    low: __m512,
    /// `table[0x70..0x80]`.
    high: __m512,
    /// `23 - mant_bits`, as a shift count.
    shift: __m128i,
    /// `(127 - bias) << 23`.
    rebias: __m512i,
    /// The largest finite magnitude code.
    max_finite: __m512i,
}

impl Decoder {
    #[target_feature(enable = "avx512f")]
    fn new(fmt: Fp8Format) -> Self {
        let (mant_bits, bias, max_finite) = match fmt {
            Fp8Format::E4M3 => (3, 7, 0x7e),
            Fp8Format::E5M2 => (2, 15, 0x7b),
        };
        let table = fmt.table();
        Decoder {
            // SAFETY: both reads are 16 f32 inside the 256-entry table.
            low: unsafe { _mm512_loadu_ps(table.as_ptr()) },
            high: unsafe { _mm512_loadu_ps(table.as_ptr().add(0x70)) },
            shift: _mm_cvtsi32_si128(23 - mant_bits),
            rebias: _mm512_set1_epi32((127 - bias) << 23),
            max_finite: _mm512_set1_epi32(max_finite),
        }
    }

    /// The f32 values of 16 codes.
    #[target_feature(enable = "avx512f")]
    fn decode16(&self, codes: __m128i) -> __m512 {
        let c = _mm512_cvtepu8_epi32(codes);
        let e = _mm512_and_si512(c, _mm512_set1_epi32(0x7f));
        let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(c, _mm512_set1_epi32(0x80)));
        let normal = _mm512_add_epi32(_mm512_sll_epi32(e, self.shift), self.rebias);
        let v = _mm512_castsi512_ps(normal);
        let low = _mm512_cmplt_epi32_mask(e, _mm512_set1_epi32(16));
        let v = _mm512_mask_permutexvar_ps(v, low, e, self.low);
        let special = _mm512_cmpgt_epi32_mask(e, self.max_finite);
        let v = _mm512_mask_permutexvar_ps(v, special, e, self.high);
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign))
    }
}

/// Decodes `codes` into `out` (equal lengths), element for element as the format's table.
///
/// # Safety
///
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode_avx512(fmt: Fp8Format, codes: &[u8], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(codes.len(), out.len());
    let d = Decoder::new(fmt);
    let (c16, c_tail) = codes.as_chunks::<16>();
    let (o16, o_tail) = out.as_chunks_mut::<16>();
    for (c, o) in c16.iter().zip(o16) {
        // SAFETY: 16 bytes read from `c`, 16 f32 written to `o`.
        unsafe {
            let v = d.decode16(_mm_loadu_si128(c.as_ptr().cast()));
            _mm512_storeu_ps(o.as_mut_ptr().cast(), v);
        }
    }
    super::decode_scalar(fmt.table(), c_tail, o_tail);
}

/// Transposes the 16 × 16 matrix whose rows are `r`.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    // Pairs of rows interleaved: within each 128-bit lane, t[2i] = (r2i0 r2i+1,0 r2i1 r2i+1,1).
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Quads: within each lane, r[4i + j] holds column 4·lane + j of rows 4i .. 4i + 3.
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        let (a, b, c, d) = (
            _mm512_castps_pd(a),
            _mm512_castps_pd(b),
            _mm512_castps_pd(c),
            _mm512_castps_pd(d),
        );
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // Lanes: gather lanes 0 and 2 (0x88) or 1 and 3 (0xdd) of two quads, twice.
    for j in 0..4 {
        t[j] = _mm512_shuffle_f32x4::<0x88>(r[j], r[4 + j]);
        t[4 + j] = _mm512_shuffle_f32x4::<0xdd>(r[j], r[4 + j]);
        t[8 + j] = _mm512_shuffle_f32x4::<0x88>(r[8 + j], r[12 + j]);
        t[12 + j] = _mm512_shuffle_f32x4::<0xdd>(r[8 + j], r[12 + j]);
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
    }
}

/// One full panel of 32 rows of `w` codes (`codes` is `32 × k`, row-major) decoded K-major
/// into `panel` (`k × 32`, 64-byte aligned): sixteen K steps at a time, each half of the
/// panel decoded as 16 row vectors and transposed.
///
/// # Safety
///
/// The CPU has AVX-512F; `panel` starts 64-byte aligned.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_panel_avx512(
    fmt: Fp8Format,
    codes: &[u8],
    k: usize,
    panel: &mut [MaybeUninit<f32>],
) {
    const NR: usize = NR_AVX512;
    assert!(codes.len() == NR * k && panel.len() == NR * k);
    debug_assert_eq!(panel.as_ptr() as usize % 64, 0);
    let d = Decoder::new(fmt);
    let k16 = k / 16 * 16;
    for kb in (0..k16).step_by(16) {
        for half in 0..2 {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (i, row) in rows.iter_mut().enumerate() {
                let src = &codes[(16 * half + i) * k + kb..][..16];
                // SAFETY: 16 bytes of `src`.
                *row = d.decode16(unsafe { _mm_loadu_si128(src.as_ptr().cast()) });
            }
            transpose16(&mut rows);
            for (t, row) in rows.iter().enumerate() {
                let dst = &mut panel[(kb + t) * NR + 16 * half..][..16];
                // SAFETY: 16 f32 of `dst`, 64-byte aligned (the panel is, and the offset is a
                // multiple of 16 elements).
                unsafe { _mm512_store_ps(dst.as_mut_ptr().cast(), *row) };
            }
        }
    }
    let table = fmt.table();
    for kk in k16..k {
        for r in 0..NR {
            panel[kk * NR + r].write(table[codes[r * k + kk] as usize]);
        }
    }
}

/// The `6 × 16` tile with AVX2 and FMA: twelve partials in registers.
///
/// # Safety
///
/// As `run_tile`, with `NR = 16`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(t: Tile) {
    const NR: usize = 16;
    let zero = _mm256_setzero_ps();
    let mut acc = [[zero; 2]; MR];
    // SAFETY (whole body): every pointer access stays inside what `Tile` promises.
    unsafe {
        if t.load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.ldc);
                *row = [_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))];
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|r| t.a.add(r * t.lda));
        let mut b = t.b;
        let mut k0 = 0;
        let mut iv = 0;
        while k0 < t.len {
            let len = t.interval.min(t.len - k0);
            let mut p = [[zero; 2]; MR];
            for kk in k0..k0 + len {
                let b0 = _mm256_load_ps(b);
                let b1 = _mm256_load_ps(b.add(8));
                for (pr, row) in p.iter_mut().zip(rows) {
                    let ar = _mm256_broadcast_ss(&*row.add(kk));
                    pr[0] = _mm256_fmadd_ps(ar, b0, pr[0]);
                    pr[1] = _mm256_fmadd_ps(ar, b1, pr[1]);
                }
                b = b.add(NR);
            }
            let sw = t.sw.add(iv * NR);
            let (sw0, sw1) = (_mm256_loadu_ps(sw), _mm256_loadu_ps(sw.add(8)));
            for r in 0..MR {
                let s_x = _mm256_broadcast_ss(&*t.sx.add(iv * MR + r));
                let (s0, s1) = (_mm256_mul_ps(s_x, sw0), _mm256_mul_ps(s_x, sw1));
                acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(p[r][0], s0));
                acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(p[r][1], s1));
            }
            k0 += len;
            iv += 1;
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            _mm256_storeu_ps(c, row[0]);
            _mm256_storeu_ps(c.add(8), row[1]);
        }
    }
}

/// The `6 × 32` tile with AVX-512F: twelve partials and twelve accumulators in registers.
///
/// # Safety
///
/// As `run_tile`, with `NR = 32`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512(t: Tile) {
    const NR: usize = NR_AVX512;
    let zero = _mm512_setzero_ps();
    let mut acc = [[zero; 2]; MR];
    // SAFETY (whole body): every pointer access stays inside what `Tile` promises.
    unsafe {
        if t.load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.ldc);
                *row = [_mm512_loadu_ps(c), _mm512_loadu_ps(c.add(16))];
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|r| t.a.add(r * t.lda));
        let mut b = t.b;
        let mut k0 = 0;
        let mut iv = 0;
        while k0 < t.len {
            let len = t.interval.min(t.len - k0);
            let mut p = [[zero; 2]; MR];
            for kk in k0..k0 + len {
                let b0 = _mm512_load_ps(b);
                let b1 = _mm512_load_ps(b.add(16));
                for (pr, row) in p.iter_mut().zip(rows) {
                    let ar = _mm512_set1_ps(*row.add(kk));
                    pr[0] = _mm512_fmadd_ps(ar, b0, pr[0]);
                    pr[1] = _mm512_fmadd_ps(ar, b1, pr[1]);
                }
                b = b.add(NR);
            }
            let sw = t.sw.add(iv * NR);
            let (sw0, sw1) = (_mm512_loadu_ps(sw), _mm512_loadu_ps(sw.add(16)));
            for r in 0..MR {
                let s_x = _mm512_set1_ps(*t.sx.add(iv * MR + r));
                let (s0, s1) = (_mm512_mul_ps(s_x, sw0), _mm512_mul_ps(s_x, sw1));
                acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_mul_ps(p[r][0], s0));
                acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_mul_ps(p[r][1], s1));
            }
            k0 += len;
            iv += 1;
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            _mm512_storeu_ps(c, row[0]);
            _mm512_storeu_ps(c.add(16), row[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_decoder_matches_the_table_for_every_code() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let codes: Vec<u8> = (0..=255).collect();
        for fmt in Fp8Format::ALL {
            let mut out = vec![MaybeUninit::new(0.0f32); 256 + 7];
            let mut codes = codes.clone();
            codes.extend_from_slice(&[0x7f, 0xff, 0x80, 0x00, 0x01, 0x81, 0x7c]);
            // SAFETY: AVX-512F was detected.
            unsafe { decode_avx512(fmt, &codes, &mut out) };
            for (&c, o) in codes.iter().zip(&out) {
                // SAFETY: every element was written.
                let got = unsafe { o.assume_init() };
                let want = fmt.table()[c as usize];
                assert_eq!(got.to_bits(), want.to_bits(), "{fmt:?} code {c:#04x}");
            }
        }
    }

    #[test]
    fn vector_packing_matches_the_table_loop() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut rng = crate::rng::SplitMix64(5);
        for fmt in Fp8Format::ALL {
            for k in [1, 16, 37, 64, 300] {
                let codes: Vec<u8> = (0..NR_AVX512 * k).map(|_| rng.next_u64() as u8).collect();
                let mut want = vec![MaybeUninit::new(0.0f32); NR_AVX512 * k];
                super::super::pack_panel_scalar(
                    fmt.table(),
                    &codes,
                    NR_AVX512,
                    k,
                    NR_AVX512,
                    &mut want,
                );
                let got = super::super::Decoded::build(NR_AVX512 * k, |out| {
                    // SAFETY: AVX-512F was detected; `build` aligns the slice to 64 bytes.
                    unsafe { pack_panel_avx512(fmt, &codes, k, out) }
                });
                for (i, (g, w)) in got.as_slice().iter().zip(&want).enumerate() {
                    // SAFETY: every element was written.
                    let w = unsafe { w.assume_init() };
                    assert_eq!(g.to_bits(), w.to_bits(), "{fmt:?} k {k} element {i}");
                }
            }
        }
    }
}
