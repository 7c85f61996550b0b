//! Weight quantization: block × block tiles of `w[N, K]` (DESIGN.md §3, 128 × 128 by default).
//!
//! Each block's scale is `max(amax_block, 1e-4) / fp8_max` (or its UE8M0 power of two), edge
//! blocks using only their real elements; `q = fp8(w / s)`. The scales are stored as Hugging Face
//! DeepSeek-V3 checkpoints store `weight_scale_inv`: the multiplier, shape
//! `[ceil(N / block), ceil(K / block)]`.

use crate::error::{KernelError, check_len};
use crate::numerics::fp8::Fp8Format;
use crate::numerics::scale::{amax, scale_for};
use crate::quantized::{Quantized, quantize_into};
use dsc_ir::ScaleFormat;
use rayon::prelude::*;

/// Quantizes `w[n, k]` in `block × block` tiles; scales have shape `[ceil(n/block), ceil(k/block)]`.
pub fn weight_quant_128x128(
    w: &[f32],
    n: usize,
    k: usize,
    block: usize,
    fmt: Fp8Format,
    scale_format: ScaleFormat,
) -> Result<Quantized, KernelError> {
    if block == 0 {
        return Err(KernelError::Params("weight block must be positive".into()));
    }
    check_len("w", w.len(), n * k)?;
    let k_blocks = k.div_ceil(block);
    let mut q = Quantized {
        codes: vec![0; n * k],
        scales: vec![0.0; n.div_ceil(block) * k_blocks],
    };
    if k == 0 {
        return Ok(q);
    }
    // One task per block row: `block` whole rows of w, contiguous, and their row of scales.
    w.par_chunks(block * k)
        .zip(q.codes.par_chunks_mut(block * k))
        .zip(q.scales.par_chunks_mut(k_blocks))
        .for_each(|((w_rows, q_rows), s_row)| {
            for (kb, s) in s_row.iter_mut().enumerate() {
                let cols = kb * block..((kb + 1) * block).min(k);
                let block_amax = w_rows
                    .chunks(k)
                    .map(|row| amax(&row[cols.clone()]))
                    .fold(0.0f32, f32::max);
                *s = scale_for(block_amax, fmt, scale_format);
                for (row, q_row) in w_rows.chunks(k).zip(q_rows.chunks_mut(k)) {
                    quantize_into(fmt, &row[cols.clone()], *s, &mut q_row[cols.clone()]);
                }
            }
        });
    Ok(q)
}

/// Quantizes grouped expert weights `w[experts, n, k]`, each expert on its own block grid;
/// codes are `[experts, n, k]` and scales `[experts, ceil(n/block), ceil(k/block)]`.
pub fn weight_quant_experts(
    w: &[f32],
    experts: usize,
    n: usize,
    k: usize,
    block: usize,
    fmt: Fp8Format,
    scale_format: ScaleFormat,
) -> Result<Quantized, KernelError> {
    check_len("w", w.len(), experts * n * k)?;
    let mut all = Quantized {
        codes: Vec::with_capacity(w.len()),
        scales: Vec::new(),
    };
    let size = n * k;
    for e in 0..experts {
        let q = weight_quant_128x128(&w[e * size..(e + 1) * size], n, k, block, fmt, scale_format)?;
        all.codes.extend(q.codes);
        all.scales.extend(q.scales);
    }
    Ok(all)
}
