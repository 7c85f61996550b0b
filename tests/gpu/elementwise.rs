//! The elementwise kernels alone on the emulator, for both targets, against the CPU references
//! (`dsc_kernels::ops::elementwise`, results rounded to the output dtype) under the ops'
//! tolerance rules: `add`, `mul`, `silu`, `swiglu` and `cast` in their 16-byte chunk form (every
//! operand f32 or bf16 and as long as the output; lengths with and without a ragged tail, mixed
//! dtypes) and `add` of a repeated bias in the one-element-per-thread form.
//!
//! The other memory-bound kernels with a 16-byte chunk form and a one-element form, both
//! forms each: `rope` (both pairings, bf16 and f32, plain and YaRN-scaled; the chunk form also
//! bit for bit against the one-pair form, whose cos/sin are the same but not the reference's),
//! `moe_combine` (with and without a shared expert, mixed dtypes; bit for bit against the
//! reference) and `slice` (along the last and a middle axis; bit for bit).

use super::kernel_run::{lower, run_ptx};
use super::training_kernels::{bytes, check, tensor, values};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::elementwise::{Elementwise, ElementwiseOp, SliceCopy};
use dsc_codegen::kernels::moe::MoeCombine;
use dsc_codegen::kernels::rope::Rope;
use dsc_ir::{DType, OpKind};
use dsc_kernels::ops::rope::{RopeParams, RopeStyle};
use dsc_kernels::ops::{FloatFormat, elementwise, moe_combine, rope, slice};

/// Runs `op` over inputs of `inputs`' dtypes (`len` elements; the second `rhs_len` when given)
/// into `output`, against the reference.
fn check_op(
    op: ElementwiseOp,
    len: usize,
    inputs: &[DType],
    output: DType,
    rhs_len: Option<usize>,
) {
    let x: Vec<Vec<f32>> = inputs
        .iter()
        .enumerate()
        .map(|(i, &dtype)| {
            let n = if i == 1 { rhs_len.unwrap_or(len) } else { len };
            values(n, 31 + i as u64 + len as u64, 6.0, dtype)
        })
        .collect();
    let format = |d: DType| match d {
        DType::Bf16 => FloatFormat::Bf16,
        _ => FloatFormat::F32,
    };
    let (kind, mut want) = match op {
        ElementwiseOp::Add => (OpKind::Add, elementwise::add(&x[0], &x[1]).unwrap()),
        ElementwiseOp::Mul => (OpKind::Mul, elementwise::mul(&x[0], &x[1]).unwrap()),
        ElementwiseOp::Silu => (OpKind::Silu, elementwise::silu(&x[0])),
        ElementwiseOp::Swiglu => (
            OpKind::Swiglu,
            elementwise::swiglu(&x[0], &x[1], format(output)).unwrap(),
        ),
        ElementwiseOp::Cast => (OpKind::Cast, x[0].clone()),
    };
    format(output).round_slice(&mut want);
    let kernel = GpuKernel::Elementwise(Elementwise {
        op,
        len: len as u64,
        inputs: inputs.to_vec(),
        output,
        rhs_len: rhs_len.map(|n| n as u64),
    });
    let inputs: Vec<Vec<u8>> = x.iter().zip(inputs).map(|(v, &d)| bytes(v, d)).collect();
    check(kind, &kernel, &inputs, &[tensor(output, &[len], want)]);
}

#[test]
fn elementwise_kernels_in_16_byte_chunks_and_per_element() {
    use DType::{Bf16, F32};
    use ElementwiseOp::*;
    // 1000 is whole chunks of 8 and of 4; 1003 leaves a tail; 5 is a tail alone.
    for len in [1000, 1003, 5] {
        check_op(Add, len, &[Bf16, Bf16], Bf16, None);
        check_op(Add, len, &[F32, Bf16], F32, None);
        check_op(Mul, len, &[F32, F32], F32, None);
        check_op(Mul, len, &[Bf16, F32], Bf16, None);
        check_op(Silu, len, &[Bf16], Bf16, None);
        check_op(Silu, len, &[F32], F32, None);
        check_op(Swiglu, len, &[Bf16, Bf16], Bf16, None);
        check_op(Swiglu, len, &[F32, F32], F32, None);
        check_op(Cast, len, &[F32], Bf16, None);
        check_op(Cast, len, &[Bf16], F32, None);
    }
    // A bias repeated over the rows keeps one element per thread.
    check_op(Add, 1000, &[Bf16, Bf16], Bf16, Some(40));
}

// ---- rope -------------------------------------------------------------------------------------

/// Runs `kernel` on the emulator for both targets with `inputs`, returning its one output of
/// `len` bytes per target.
fn outputs(kernel: &GpuKernel, inputs: &[Vec<u8>], len: usize) -> Vec<Vec<u8>> {
    Target::ALL
        .iter()
        .map(|&target| {
            let ptx = lower(kernel, target);
            run_ptx(kernel, target, &ptx, inputs, &[len]).remove(0)
        })
        .collect()
}

/// The `rope` kernel of `x[dims]` with `params`' frequencies and scaling.
fn rope_kernel(dims: [usize; 4], params: &RopeParams, dtype: DType) -> Rope {
    Rope::new(dims.map(|d| d as u64), params, dtype)
}

/// `rope` of `x[dims]` against the reference as the CPU backend dispatches it (cos, sin and
/// the products rounded to `dtype`) under the op's rule; the values.
fn check_rope(dims: [usize; 4], params: &RopeParams, dtype: DType, seed: u64) -> Vec<f32> {
    let x = values(dims.iter().product(), seed, 4.0, dtype);
    let format = match dtype {
        DType::Bf16 => FloatFormat::Bf16,
        _ => FloatFormat::F32,
    };
    let want = rope(&x, dims, params, format).expect("reference rope");
    let kernel = GpuKernel::Rope(rope_kernel(dims, params, dtype));
    check(
        OpKind::Rope,
        &kernel,
        &[bytes(&x, dtype)],
        &[tensor(dtype, &dims, want)],
    );
    x
}

/// The 16-byte form of `rope` over `x[dims]` (`dims[3]` whole chunks) gives the one-pair
/// form's bits: the same rotation run by the one-pair form on heads of `dims[3] + 2` (one pair
/// more, so that the pairs no longer split into chunks) whose extra pair (the last pair, or
/// the last element of each half) has a frequency of its own.
fn check_rope_forms(dims: [usize; 4], params: &RopeParams, dtype: DType, seed: u64) {
    let x = check_rope(dims, params, dtype, seed);
    let chunked = rope_kernel(dims, params, dtype);
    let d = dims[3];
    let (half, wide) = (d / 2, d + 2);
    let mut inv_freq = chunked.inv_freq.clone();
    inv_freq.push(0.37);
    let scalar = Rope {
        dim: wide as u64,
        inv_freq,
        ..chunked.clone()
    };
    // Where element `i` of a head of `d` sits in a head of `d + 2`.
    let place = |i: usize| match params.style {
        RopeStyle::Interleaved => i,
        RopeStyle::Half if i < half => i,
        RopeStyle::Half => i + 1,
    };
    let heads = x.len() / d;
    let mut wide_x = values(heads * wide, seed + 1, 4.0, dtype);
    for h in 0..heads {
        for i in 0..d {
            wide_x[h * wide + place(i)] = x[h * d + i];
        }
    }
    let size = dtype.size_bytes() as usize;
    let got = outputs(
        &GpuKernel::Rope(chunked),
        &[bytes(&x, dtype)],
        x.len() * size,
    );
    let reference = outputs(
        &GpuKernel::Rope(scalar),
        &[bytes(&wide_x, dtype)],
        wide_x.len() * size,
    );
    for (got, reference) in got.iter().zip(&reference) {
        for h in 0..heads {
            for i in 0..d {
                let at = (h * d + i) * size;
                let wide_at = (h * wide + place(i)) * size;
                assert_eq!(
                    got[at..at + size],
                    reference[wide_at..wide_at + size],
                    "rope {dims:?} {:?} {dtype}: head {h} element {i}",
                    params.style
                );
            }
        }
    }
}

#[test]
fn rope_in_16_byte_chunks_and_per_pair() {
    use DType::{Bf16, F32};
    let plain = |style| RopeParams {
        style,
        theta: 10_000.0,
        scaling: None,
    };
    let yarn = super::training_kernels::deepseek_yarn();
    let (interleaved, half) = (plain(RopeStyle::Interleaved), plain(RopeStyle::Half));
    // Whole chunks: 4 (f32) or 8 (bf16) elements of pairs for interleaved, 8 or 16 for half.
    check_rope_forms([2, 37, 3, 64], &yarn, Bf16, 1);
    check_rope_forms([1, 19, 2, 8], &interleaved, Bf16, 2);
    check_rope_forms([2, 11, 3, 12], &interleaved, F32, 3);
    check_rope_forms([1, 23, 2, 32], &half, Bf16, 4);
    check_rope_forms([2, 13, 3, 8], &half, F32, 5);
    // More than 16 heads: split into sets of adjacent-by-stride heads (2 of 16, 2 of 10, 17 of 1).
    check_rope_forms([1, 5, 32, 16], &interleaved, Bf16, 10);
    check_rope_forms([1, 4, 20, 32], &half, Bf16, 11);
    check_rope_forms([2, 3, 17, 8], &half, F32, 12);
    // Ragged heads: one pair per thread.
    check_rope([2, 17, 3, 10], &interleaved, Bf16, 6);
    check_rope([1, 9, 2, 6], &interleaved, F32, 7);
    check_rope([2, 15, 2, 24], &half, Bf16, 8);
    check_rope([1, 7, 3, 6], &half, F32, 9);
}

// ---- moe_combine ------------------------------------------------------------------------------

/// `moe_combine` of `tokens × top_k` routed rows of `dim` against the reference as the CPU
/// backend dispatches it (the routed sum rounded to the output dtype), bit for bit.
fn check_combine(
    tokens: usize,
    top_k: usize,
    dim: usize,
    dtypes: [DType; 3],
    shared: Option<DType>,
) {
    let [routed, weights, output] = dtypes;
    let seed = (tokens * 31 + top_k * 7 + dim) as u64;
    let y = values(tokens * top_k * dim, seed, 3.0, routed);
    let w = values(tokens * top_k, seed + 1, 1.0, weights);
    let s = shared.map(|dtype| values(tokens * dim, seed + 2, 3.0, dtype));
    let format = match output {
        DType::Bf16 => FloatFormat::Bf16,
        _ => FloatFormat::F32,
    };
    let mut want = moe_combine(&y, &w, s.as_deref(), tokens, top_k, dim, format).unwrap();
    format.round_slice(&mut want);
    let kernel = GpuKernel::MoeCombine(MoeCombine {
        tokens: tokens as u64,
        top_k: top_k as u64,
        dim: dim as u64,
        routed,
        weights,
        shared,
        output,
    });
    let mut inputs = vec![bytes(&y, routed), bytes(&w, weights)];
    if let (Some(s), Some(dtype)) = (&s, shared) {
        inputs.push(bytes(s, dtype));
    }
    check(
        OpKind::MoeCombine,
        &kernel,
        &inputs,
        &[tensor(output, &[tokens, dim], want.clone())],
    );
    let want = bytes(&want, output);
    for (target, got) in Target::ALL
        .iter()
        .zip(outputs(&kernel, &inputs, want.len()))
    {
        assert!(
            got == want,
            "{target}: {}: not the reference's bits",
            kernel.canonical()
        );
    }
}

#[test]
fn moe_combine_in_16_byte_chunks_and_per_element() {
    use DType::{Bf16, F32};
    // Whole chunks (8 of bf16, 4 of f32; 8 where bf16 and f32 mix), with and without a shared
    // expert.
    check_combine(37, 8, 64, [Bf16, F32, Bf16], Some(Bf16));
    check_combine(37, 8, 64, [Bf16, F32, Bf16], None);
    check_combine(13, 3, 12, [F32, F32, F32], Some(F32));
    check_combine(13, 2, 24, [Bf16, Bf16, F32], Some(Bf16));
    check_combine(9, 1, 16, [F32, Bf16, Bf16], None);
    // Ragged rows: one element per thread.
    check_combine(11, 4, 20, [Bf16, F32, Bf16], Some(Bf16));
    check_combine(7, 2, 6, [F32, F32, F32], None);
}

// ---- slice ------------------------------------------------------------------------------------

/// `slice` of `x[dims]` along `axis` from `start` to `end`, bit for bit.
fn check_slice(dims: &[usize], axis: usize, start: usize, end: usize, dtype: DType) {
    let x = values(
        dims.iter().product(),
        dims.len() as u64 + start as u64,
        5.0,
        dtype,
    );
    let want = slice(&x, dims, axis, start, end).unwrap();
    let mut out = dims.to_vec();
    out[axis] = end - start;
    let kernel = GpuKernel::Slice(SliceCopy {
        dtype,
        outer: dims[..axis].iter().product::<usize>() as u64,
        axis_in: dims[axis] as u64,
        axis_out: (end - start) as u64,
        start: start as u64,
        inner: dims[axis + 1..].iter().product::<usize>() as u64,
    });
    check(
        OpKind::Slice,
        &kernel,
        &[bytes(&x, dtype)],
        &[tensor(dtype, &out, want)],
    );
}

#[test]
fn slice_in_16_byte_chunks_and_per_element() {
    use DType::{Bf16, F32};
    // V3's q split into q_nope and q_pe (last axis), at fewer heads and tokens: whole chunks.
    check_slice(&[37, 4, 192], 2, 0, 128, Bf16);
    check_slice(&[37, 4, 192], 2, 128, 192, Bf16);
    check_slice(&[5, 6, 24], 2, 8, 20, F32);
    // A middle axis: rows of `inner` elements, whole chunks of them.
    check_slice(&[3, 10, 8], 1, 2, 7, Bf16);
    check_slice(&[3, 10, 2], 1, 2, 8, F32);
    // Ragged: a row, a start or an input row not whole chunks.
    check_slice(&[7, 3, 20], 2, 0, 10, Bf16);
    check_slice(&[7, 3, 24], 2, 4, 20, Bf16);
    check_slice(&[7, 3, 24], 2, 8, 13, F32);
    check_slice(&[4, 9, 3], 1, 1, 5, F32);
}
