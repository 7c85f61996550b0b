//! Activation quantization: 1 × tile groups along K (DESIGN.md §3, tile 128 by default).
//!
//! For row r and group g, `amax = max |x[r, g·tile .. (g+1)·tile]|` (the last group of a ragged
//! K uses only its real elements), `s = max(amax, 1e-4) / fp8_max` (or its UE8M0 power of two),
//! and `q = fp8(x / s)`. Activations arrive as f32; BF16 activations are widened exactly first.

use crate::error::{KernelError, check_len};
use crate::numerics::e5m6;
use crate::numerics::fp8::Fp8Format;
use crate::numerics::scale::{amax, scale_for, scale_for_max};
use crate::quantized::{Quantized, quantize_into};
use dsc_ir::ScaleFormat;
use rayon::prelude::*;

/// Quantizes `x[rows, k]` in 1 × `tile` groups; scales have shape `[rows, ceil(k / tile)]`.
pub fn act_quant_1x128(
    x: &[f32],
    rows: usize,
    k: usize,
    tile: usize,
    fmt: Fp8Format,
    scale_format: ScaleFormat,
) -> Result<Quantized, KernelError> {
    if tile == 0 {
        return Err(KernelError::Params(
            "activation tile must be positive".into(),
        ));
    }
    check_len("x", x.len(), rows * k)?;
    let groups = k.div_ceil(tile);
    let mut q = Quantized {
        codes: vec![0; rows * k],
        scales: vec![0.0; rows * groups],
    };
    if k == 0 {
        return Ok(q);
    }
    x.par_chunks(k)
        .zip(q.codes.par_chunks_mut(k))
        .zip(q.scales.par_chunks_mut(groups))
        .for_each(|((x_row, q_row), s_row)| {
            for ((xs, qs), s) in x_row.chunks(tile).zip(q_row.chunks_mut(tile)).zip(s_row) {
                *s = scale_for(amax(xs), fmt, scale_format);
                quantize_into(fmt, xs, *s, qs);
            }
        });
    Ok(q)
}

/// Quantizes `x[rows, k]` in 1 × `tile` groups to the emulated 12-bit E5M6 (the attention
/// output projection's cached input, DESIGN.md §8): `s = max(amax, 1e-4) / 65024` (or its UE8M0
/// power of two) and `q = e5m6(x / s)`, a true f32 division, then round to nearest even,
/// saturating. Returns `(q, scales)` with `q` the E5M6 values held exactly in f32 (the CPU's
/// container for the format; `e5m6::encode` gives their 12-bit codes) and scales of shape
/// `[rows, ceil(k / tile)]`.
pub fn act_quant_e5m6(
    x: &[f32],
    rows: usize,
    k: usize,
    tile: usize,
    scale_format: ScaleFormat,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    if tile == 0 {
        return Err(KernelError::Params(
            "activation tile must be positive".into(),
        ));
    }
    check_len("x", x.len(), rows * k)?;
    let groups = k.div_ceil(tile);
    let mut q = vec![0.0f32; rows * k];
    let mut scales = vec![0.0f32; rows * groups];
    if k == 0 {
        return Ok((q, scales));
    }
    x.par_chunks(k)
        .zip(q.par_chunks_mut(k))
        .zip(scales.par_chunks_mut(groups))
        .for_each(|((x_row, q_row), s_row)| {
            for ((xs, qs), s) in x_row.chunks(tile).zip(q_row.chunks_mut(tile)).zip(s_row) {
                *s = scale_for_max(amax(xs), e5m6::MAX, scale_format);
                for (o, &v) in qs.iter_mut().zip(xs) {
                    *o = e5m6::round(v / *s);
                }
            }
        });
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e5m6_tiles_against_an_f64_reference() {
        // Two rows, K = 200: a full tile and a ragged one; the second row all zeros.
        let (rows, k, tile) = (2, 200, 128);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| {
                if i >= k {
                    0.0
                } else {
                    ((i as f32) * 0.731).sin() * 3.0e3 / (1.0 + i as f32)
                }
            })
            .collect();
        for sf in [ScaleFormat::F32, ScaleFormat::Ue8m0] {
            let (q, s) = act_quant_e5m6(&x, rows, k, tile, sf).unwrap();
            assert_eq!(s.len(), rows * 2);
            for r in 0..rows {
                for g in 0..2 {
                    let xs = &x[r * k + g * tile..(r * k + (g + 1) * tile).min((r + 1) * k)];
                    let a = xs.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
                    let want = (a.max(1e-4f32 as f64) / 65024.0) as f32;
                    let got = s[r * 2 + g];
                    match sf {
                        ScaleFormat::F32 => assert!((got / want - 1.0).abs() < 1e-6),
                        ScaleFormat::Ue8m0 => {
                            assert_eq!(got, 2f32.powi(got.log2().round() as i32), "power of 2");
                            assert!(got >= want && got < 2.0 * want, "{got} vs {want}");
                        }
                    }
                    for (i, &v) in xs.iter().enumerate() {
                        let qv = q[r * k + g * tile + i];
                        // The value is an E5M6 value within half an E5M6 ulp of x / s.
                        assert_eq!(e5m6::decode(e5m6::encode(qv)), qv);
                        let exact = f64::from(v) / f64::from(got);
                        assert!(exact.abs() <= 65024.0 * (1.0 + 1e-6));
                        let ulp = if exact.abs() < 2f64.powi(-14) {
                            2f64.powi(-20)
                        } else {
                            2f64.powi(exact.abs().log2().floor() as i32 - 6)
                        };
                        assert!((f64::from(qv) - exact).abs() <= ulp / 2.0 * (1.0 + 1e-6));
                    }
                }
            }
        }
    }
}
