//! `rope`, `rms_norm` and `rms_norm_quant` reading their x in place (`x_row`, what
//! fold-slices gives them: a window of each row of a wider tensor) alone on the emulator, for
//! both targets, against the CPU reference over the slice's copy: rope under its rule and bit
//! for bit against the same kernel reading the copy, the norms bit for bit. DeepSeek-V3's
//! shapes: q_pe, 64 of each head's 192 columns at 128, and k_pe, 64 of 576 at 512, read by
//! rope; the compressed kv, 512 of 576 at 0, by rms_norm_quant. Every form of the kernels:
//! rope's 16-byte form and, off whole chunks, its one-pair form; the norm's rows in registers,
//! and off whole chunks in shared memory, per element, or recomputed per group.

use super::kernel_run::{assert_same_bytes, lower, run_ptx};
use super::residual_norm::normalized_outputs;
use super::training_kernels::{bytes, check, deepseek_yarn, tensor, values};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::norm::RmsNorm;
use dsc_codegen::kernels::quantize::QuantSpec;
use dsc_codegen::kernels::rope::Rope;
use dsc_codegen::kernels::row_window::RowWindow;
use dsc_ir::{DType, OpKind, ScaleFormat};
use dsc_kernels::ops::rope::{RopeParams, RopeStyle};
use dsc_kernels::ops::{FloatFormat, rms_norm, rope, slice};

const EPS: f64 = 1e-6;

fn format(dtype: DType) -> FloatFormat {
    match dtype {
        DType::Bf16 => FloatFormat::Bf16,
        _ => FloatFormat::F32,
    }
}

/// `rows` rows of `stride` values (of `dtype`) and the window `offset .. offset + dim` of
/// each, as the slice folded into the kernel would copy it.
fn wide_and_window(
    rows: usize,
    stride: usize,
    offset: usize,
    dim: usize,
    dtype: DType,
) -> (Vec<f32>, Vec<f32>) {
    let wide = values(
        rows * stride,
        (rows * 131 + stride * 7 + offset) as u64,
        4.0,
        dtype,
    );
    let window = slice(&wide, &[rows, stride], 1, offset, offset + dim).expect("window");
    (wide, window)
}

/// Runs `kernel` for every target over `inputs`; its one output of `len` bytes per target.
fn outputs(kernel: &GpuKernel, inputs: &[Vec<u8>], len: usize) -> Vec<Vec<u8>> {
    Target::ALL
        .iter()
        .map(|&target| run_ptx(kernel, target, &lower(kernel, target), inputs, &[len]).remove(0))
        .collect()
}

/// `rope` of `x[dims]` read at `offset` in rows of `stride`: against the reference over the
/// window under the op's rule, and bit for bit against the kernel reading the window's copy.
fn check_rope(dims: [usize; 4], stride: usize, offset: usize, params: &RopeParams, dtype: DType) {
    let rows = dims[0] * dims[1] * dims[2];
    let (wide, window) = wide_and_window(rows, stride, offset, dims[3], dtype);
    let contiguous = Rope::new(dims.map(|d| d as u64), params, dtype);
    let in_place = GpuKernel::Rope(Rope {
        x_row: Some(RowWindow {
            stride: stride as u64,
            offset: offset as u64,
        }),
        ..contiguous.clone()
    });
    let want = rope(&window, dims, params, format(dtype)).expect("reference rope");
    let wide = bytes(&wide, dtype);
    check(
        OpKind::Rope,
        &in_place,
        std::slice::from_ref(&wide),
        &[tensor(dtype, &dims, want)],
    );
    let len = window.len() * dtype.size_bytes() as usize;
    let got = outputs(&in_place, &[wide], len);
    let copied = outputs(&GpuKernel::Rope(contiguous), &[bytes(&window, dtype)], len);
    for (target, (got, copied)) in Target::ALL.iter().zip(got.iter().zip(&copied)) {
        assert!(
            got == copied,
            "{target}: rope {dims:?} at {offset} of {stride}: in place differs from the copy's"
        );
    }
}

#[test]
fn rope_reads_x_in_place_as_it_reads_the_slice() {
    let yarn = deepseek_yarn();
    let plain = |style| RopeParams {
        style,
        theta: 10_000.0,
        scaling: None,
    };
    // V3's q_pe: 64 of each head's 192 columns at 128, 128 heads (the 16-byte form, 8 sets).
    check_rope([1, 3, 128, 64], 192, 128, &yarn, DType::Bf16);
    // V3's k_pe: 64 of 576 at 512, one head.
    check_rope([1, 9, 1, 64], 576, 512, &yarn, DType::Bf16);
    // f32 halves in whole chunks of 4.
    check_rope([2, 5, 3, 8], 20, 12, &plain(RopeStyle::Half), DType::F32);
    // Off whole chunks (offset 6 bf16): one pair per thread.
    check_rope(
        [1, 7, 2, 16],
        24,
        6,
        &plain(RopeStyle::Interleaved),
        DType::Bf16,
    );
}

/// `rms_norm` (or, `quantized`, `rms_norm_quant` in 1 × 128 groups) of `rows` rows of `dim`
/// read at `offset` in bf16 rows of `stride`, bit for bit against the reference over the
/// window's copy.
fn check_norm(rows: usize, dim: usize, stride: usize, offset: usize, quantized: bool) {
    let (wide, window) = wide_and_window(rows, stride, offset, dim, DType::Bf16);
    let w = values(dim, (dim + 5) as u64, 2.0, DType::Bf16);
    let mut y = rms_norm(&window, &w, rows, dim, EPS, FloatFormat::Bf16).unwrap();
    FloatFormat::Bf16.round_slice(&mut y);
    let want = normalized_outputs(&y, rows, dim, quantized);
    let kernel = GpuKernel::RmsNorm(RmsNorm {
        rows: rows as u64,
        dim: dim as u64,
        eps: EPS as f32,
        input: DType::Bf16,
        weight: DType::Bf16,
        output: DType::Bf16,
        quant: quantized.then_some(QuantSpec {
            tile: 128,
            format: DType::F8E4M3,
            scale_format: ScaleFormat::F32,
        }),
        residual: false,
        x_row: Some(RowWindow {
            stride: stride as u64,
            offset: offset as u64,
        }),
    });
    let inputs = [bytes(&wide, DType::Bf16), bytes(&w, DType::Bf16)];
    let sizes: Vec<usize> = want.iter().map(Vec::len).collect();
    for target in Target::ALL {
        let got = run_ptx(&kernel, target, &lower(&kernel, target), &inputs, &sizes);
        assert_same_bytes(&kernel, target, &got, &want);
    }
}

#[test]
fn the_norms_read_x_in_place_as_they_read_the_slice() {
    // In registers: V3's compressed kv (512 of 576 at 0), k_pe's columns (64 at 512, one
    // ragged group) and a window in the middle (256 at 320); plain, 512 at 64.
    check_norm(3, 512, 576, 0, true);
    check_norm(3, 64, 576, 512, true);
    check_norm(2, 256, 576, 320, true);
    check_norm(3, 512, 576, 64, false);
    // Off whole chunks (offset 4): in shared memory, per element, recomputed per group.
    check_norm(3, 512, 576, 4, true);
    check_norm(3, 500, 576, 4, false);
    check_norm(2, 8200, 8208, 4, true);
}
