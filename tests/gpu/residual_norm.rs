//! `add_rms_norm` and `add_rms_norm_quant` (the residual add fused into the norm) alone on the
//! emulator, for both targets, bit for bit against the unfused pair's CPU reference: the sum
//! `add` stores (f32 addition, one rounding to bf16), `rms_norm` over it, and for the quantized
//! form `act_quant_1x128` of the normalized row rounded to bf16. Every form of the norm kernel:
//! rows in registers (512 and 7168 wide, and 520, which is whole chunks but not whole 128-wide
//! groups), in shared memory (1030: not whole chunks), and recomputed per group from the stored
//! sum (16392: wider than both); the plain form in registers and per element.

use super::kernel_run::{assert_same_bytes, lower, run_ptx};
use super::training_kernels::{bytes, values};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::norm::RmsNorm;
use dsc_codegen::kernels::quantize::QuantSpec;
use dsc_ir::{DType, ScaleFormat};
use dsc_kernels::Fp8Format;
use dsc_kernels::ops::{FloatFormat, elementwise, rms_norm};

const EPS: f64 = 1e-6;

/// What a norm kernel writes of the normalized rows `y` (rounded to bf16) of `rows × dim`: the
/// E4M3 codes and f32 scales of their 1 × 128 groups, `quantized`, or `y` in bf16.
pub(super) fn normalized_outputs(
    y: &[f32],
    rows: usize,
    dim: usize,
    quantized: bool,
) -> Vec<Vec<u8>> {
    if quantized {
        let q = dsc_kernels::act_quant_1x128(y, rows, dim, 128, Fp8Format::E4M3, ScaleFormat::F32)
            .unwrap();
        vec![q.codes, bytes(&q.scales, DType::F32)]
    } else {
        vec![bytes(y, DType::Bf16)]
    }
}

/// Runs the fused kernel over `rows` rows of `dim` (bf16 x, residual and weight) and compares
/// every output byte with the reference's.
fn check(rows: usize, dim: usize, quantized: bool) {
    let n = rows * dim;
    let seed = (rows * 7919 + dim) as u64;
    let x = values(n, seed, 4.0, DType::Bf16);
    // The residual stream is larger than the branch that is added to it.
    let residual = values(n, seed + 1, 40.0, DType::Bf16);
    let w = values(dim, seed + 2, 2.0, DType::Bf16);

    let mut sum = elementwise::add(&x, &residual).unwrap();
    FloatFormat::Bf16.round_slice(&mut sum);
    let mut y = rms_norm(&sum, &w, rows, dim, EPS, FloatFormat::Bf16).unwrap();
    FloatFormat::Bf16.round_slice(&mut y);
    let quant = quantized.then_some(QuantSpec {
        tile: 128,
        format: DType::F8E4M3,
        scale_format: ScaleFormat::F32,
    });
    let mut want = normalized_outputs(&y, rows, dim, quantized);
    want.push(bytes(&sum, DType::Bf16));

    let kernel = GpuKernel::RmsNorm(RmsNorm {
        rows: rows as u64,
        dim: dim as u64,
        eps: EPS as f32,
        input: DType::Bf16,
        weight: DType::Bf16,
        output: DType::Bf16,
        quant,
        residual: true,
        x_row: None,
    });
    let inputs = [
        bytes(&x, DType::Bf16),
        bytes(&residual, DType::Bf16),
        bytes(&w, DType::Bf16),
    ];
    let sizes: Vec<usize> = want.iter().map(Vec::len).collect();
    for target in Target::ALL {
        let ptx = lower(&kernel, target);
        let got = run_ptx(&kernel, target, &ptx, &inputs, &sizes);
        assert_same_bytes(&kernel, target, &got, &want);
    }
}

#[test]
fn the_fused_residual_norm_is_the_add_then_the_norm_bit_for_bit() {
    // Rows in registers: 512 (64 threads), 7168 (V3's hidden), 520 (a ragged last group).
    check(3, 512, true);
    check(2, 7168, true);
    check(2, 520, true);
    // In shared memory: 1030 is not whole 16-byte chunks.
    check(3, 1030, true);
    // Recomputed per group from the stored sum: wider than registers and shared memory hold.
    check(2, 16392, true);
    // The plain norm, in registers and per element.
    check(3, 512, false);
    check(3, 1030, false);
}
