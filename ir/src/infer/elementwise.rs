//! Type rules of the elementwise kinds: `silu`, `add`, `mul`, `swiglu` and `cast`.

use super::{Inferred, Result, dims_eq, fixed, free, need_float};
use crate::attr::Attrs;
use crate::{OpKind, TensorType};

/// `silu`: one float operand, same shape.
pub(super) fn silu(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    need_float("input", ins[0])?;
    Ok(vec![free(ins[0].dtype, ins[0].shape.0.clone())])
}

/// `add`: the rhs has the lhs's shape or is a trailing slice of it.
pub(super) fn add(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    // `add` also takes an rhs that is a trailing slice of the lhs's shape (`[.., N] +
    // [N]`): a linear's bias after its FP8 GEMM (quantize-linears), repeated per row.
    need_float("lhs", ins[0])?;
    need_float("rhs", ins[1])?;
    let (a, b) = (ins[0].shape.dims(), ins[1].shape.dims());
    if a.len() < b.len() || a[a.len() - b.len()..] != *b {
        return Err(format!(
            "add: shapes differ, {} vs {} (the rhs may only be the lhs's trailing dims)",
            ins[0], ins[1]
        ));
    }
    Ok(vec![free(ins[0].dtype, ins[0].shape.0.clone())])
}

/// `mul` and `swiglu`: two float operands of one shape.
pub(super) fn binary(kind: OpKind, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    need_float("lhs", ins[0])?;
    need_float("rhs", ins[1])?;
    dims_eq(kind.name(), ins[0], ins[1])?;
    Ok(vec![free(ins[0].dtype, ins[0].shape.0.clone())])
}

/// `cast` to its `dtype`, same shape.
pub(super) fn cast(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let d = attrs.dtype("dtype").expect("checked");
    Ok(vec![fixed(d, ins[0].shape.0.clone())])
}
