//! A block-quantized FP8 tensor: codes plus the f32 scales of their blocks.

use crate::error::{KernelError, check_len};
use crate::numerics::fp8::{self, Fp8Format};
use rayon::prelude::*;

/// FP8 codes and their block scales, owned; scales are multipliers (`x ≈ decode(q) · s`).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// One FP8 code per element, in the layout of the source tensor.
    pub codes: Vec<u8>,
    /// One scale per block, row-major over the grid of blocks.
    pub scales: Vec<f32>,
}

impl Quantized {
    /// Borrows codes and scales as a GEMM operand.
    pub fn operand(&self) -> Fp8Operand<'_> {
        Fp8Operand {
            codes: &self.codes,
            scales: &self.scales,
        }
    }
}

/// FP8 codes and their block scales, borrowed (e.g. straight from a checkpoint).
#[derive(Debug, Clone, Copy)]
pub struct Fp8Operand<'a> {
    /// One FP8 code per element.
    pub codes: &'a [u8],
    /// One scale per block.
    pub scales: &'a [f32],
}

/// Writes `fp8(x / s)` for every `x` of `xs` into `out`: a true f32 division, then RNE-satfinite.
pub(crate) fn quantize_into(fmt: Fp8Format, xs: &[f32], s: f32, out: &mut [u8]) {
    // Divide into a small stack buffer so the encoder runs over a slice and vectorizes.
    const CHUNK: usize = 128;
    let mut buf = [0.0f32; CHUNK];
    for (src, dst) in xs.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let q = &mut buf[..src.len()];
        for (b, &x) in q.iter_mut().zip(src) {
            *b = x / s;
        }
        fp8::encode_slice(fmt, q, dst);
    }
}

/// `decode(q) · s` in f32 for every code of `q`, a tensor of `matrices` matrices `[rows, cols]`
/// quantized in `block = [br, bc]` blocks (scales `[matrices, ⌈rows/br⌉, ⌈cols/bc⌉]`,
/// row-major); rows in parallel.
pub fn dequantize_blocks(
    fmt: Fp8Format,
    q: Fp8Operand<'_>,
    matrices: usize,
    rows: usize,
    cols: usize,
    block: [usize; 2],
) -> Result<Vec<f32>, KernelError> {
    let [br, bc] = block;
    if br == 0 || bc == 0 {
        return Err(KernelError::Params(format!(
            "dequantize block {br}×{bc} must be positive"
        )));
    }
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    check_len("codes", q.codes.len(), matrices * rows * cols)?;
    check_len("scales", q.scales.len(), matrices * sr * sc)?;
    let mut out = vec![0.0f32; q.codes.len()];
    if cols == 0 {
        return Ok(out);
    }
    let table = fmt.table();
    out.par_chunks_mut(cols)
        .zip(q.codes.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (out_row, codes))| {
            let (matrix, row) = (r / rows, r % rows);
            let scales = &q.scales[(matrix * sr + row / br) * sc..][..sc];
            for (c, (o, &code)) in out_row.iter_mut().zip(codes).enumerate() {
                *o = table[code as usize] * scales[c / bc];
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantize_blocks_scales_each_code_by_its_blocks_scale() {
        // 2 matrices of 5 × 7 in 2 × 3 blocks: ragged in both directions.
        let (m, rows, cols, br, bc) = (2usize, 5usize, 7usize, 2usize, 3usize);
        let codes: Vec<u8> = (0..m * rows * cols).map(|i| (i * 37 % 251) as u8).collect();
        let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
        let scales: Vec<f32> = (0..m * sr * sc).map(|i| 0.5 + i as f32).collect();
        let q = Fp8Operand {
            codes: &codes,
            scales: &scales,
        };
        let got = dequantize_blocks(Fp8Format::E4M3, q, m, rows, cols, [br, bc]).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let (matrix, row, col) = (i / (rows * cols), i / cols % rows, i % cols);
            let s = scales[(matrix * sr + row / br) * sc + col / bc];
            let want = fp8::decode(Fp8Format::E4M3, codes[i]) * s;
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{i}"
            );
        }
        let short = Fp8Operand {
            codes: &codes,
            scales: &scales[1..],
        };
        let e = dequantize_blocks(Fp8Format::E4M3, short, m, rows, cols, [br, bc]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "scales: expected 18 elements, got 17"
        );
    }
}
