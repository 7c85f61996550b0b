//! The elementwise kernels alone on the emulator, for both targets, against the CPU references
//! (`dsc_kernels::ops::elementwise`, results rounded to the output dtype) under the ops'
//! tolerance rules: `add`, `mul`, `silu`, `swiglu` and `cast` in their 16-byte chunk form (every
//! operand f32 or bf16 and as long as the output; lengths with and without a ragged tail, mixed
//! dtypes) and `add` of a repeated bias in the one-element-per-thread form.

use super::training_kernels::{bytes, check, tensor, values};
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::elementwise::{Elementwise, ElementwiseOp};
use dsc_ir::{DType, OpKind};
use dsc_kernels::ops::{FloatFormat, elementwise};

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
