//! Type rules of the kinds that move data without arithmetic: `embedding` (a row gather),
//! `reshape`, `transpose`, `slice` and `concat`.

use super::{Inferred, Result, axis_of, fixed, free, named, need_float, need_int, need_rank};
use crate::attr::Attrs;
use crate::operands::EmbeddingOperands;
use crate::{OpKind, Shape, TensorType};

/// `embedding`: integer ids `[..]` gather rows of `table [V, D]` → `[.., D]`.
pub(super) fn embedding(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let EmbeddingOperands { ids, table } = named(EmbeddingOperands::from_slice(ins))?;
    need_int("ids", ids)?;
    need_float("table", table)?;
    need_rank("table", table, 2)?;
    let mut dims = ids.shape.0.clone();
    dims.push(table.shape.0[1]);
    Ok(vec![free(table.dtype, dims)])
}

/// `reshape` to `shape`, same element count.
pub(super) fn reshape(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    let dims = attrs.ints("shape").expect("checked");
    if dims.iter().any(|&d| d <= 0) {
        return Err(format!("reshape sizes must be positive, got {dims:?}"));
    }
    let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    let target = Shape(dims.clone());
    if target.checked_numel() != x.shape.checked_numel() {
        return Err(format!(
            "cannot reshape {x} to {target}: element counts differ"
        ));
    }
    Ok(vec![fixed(x.dtype, dims)])
}

/// `transpose` by the permutation `perm`.
pub(super) fn transpose(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    let perm = attrs.ints("perm").expect("checked");
    let r = x.shape.rank();
    let mut seen = vec![false; r];
    let valid = perm.len() == r
        && perm.iter().all(|&p| {
            (0..r as i64).contains(&p) && !std::mem::replace(&mut seen[p as usize], true)
        });
    if !valid {
        return Err(format!(
            "perm {perm:?} is not a permutation of the axes of {x}"
        ));
    }
    let dims = perm.iter().map(|&p| x.shape.0[p as usize]).collect();
    Ok(vec![fixed(x.dtype, dims)])
}

/// `slice` `start..end` along `axis`.
pub(super) fn slice(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    let axis = axis_of(kind, attrs, x)?;
    let (start, end) = (
        attrs.int("start").unwrap_or(0),
        attrs.int("end").unwrap_or(0),
    );
    let len = x.shape.0[axis] as i64;
    if start < 0 || end <= start || end > len {
        return Err(format!(
            "slice {start}..{end} is out of range for axis {axis} of {x}"
        ));
    }
    let mut dims = x.shape.0.clone();
    dims[axis] = (end - start) as u64;
    Ok(vec![fixed(x.dtype, dims)])
}

/// `concat` along `axis`: one dtype, every other axis equal.
pub(super) fn concat(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let first = ins[0];
    let axis = axis_of(kind, attrs, first)?;
    let mut dims = first.shape.0.clone();
    for t in &ins[1..] {
        let same_rest = t.shape.rank() == first.shape.rank()
            && (0..dims.len()).all(|i| i == axis || t.shape.0[i] == first.shape.0[i]);
        if !same_rest || t.dtype != first.dtype {
            return Err(format!(
                "concat operands {first} and {t} must agree in dtype and in every axis but {axis}"
            ));
        }
        dims[axis] += t.shape.0[axis];
    }
    Ok(vec![fixed(first.dtype, dims)])
}
