//! Activation quantization: 1 × tile groups along K (DESIGN.md §3, tile 128 by default).
//!
//! For row r and group g, `amax = max |x[r, g·tile .. (g+1)·tile]|` (the last group of a ragged
//! K uses only its real elements), `s = max(amax, 1e-4) / fp8_max` (or its UE8M0 power of two),
//! and `q = fp8(x / s)`. Activations arrive as f32; BF16 activations are widened exactly first.

use crate::error::{KernelError, check_len};
use crate::numerics::fp8::Fp8Format;
use crate::numerics::scale::{amax, scale_for};
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
