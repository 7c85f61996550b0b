//! A block-quantized FP8 tensor: codes plus the f32 scales of their blocks.

use crate::numerics::fp8::{self, Fp8Format};

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
