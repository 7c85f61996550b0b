//! Ops that only move data, over row-major buffers of any element type (f32 values, i32
//! indices, FP8 codes).

use super::error::{OpError, check_shape, numel};

/// Reshape: the same elements in the same order; checks that `from` and `to` have equal
/// element counts and that `x` holds them.
pub fn reshape<T: Copy>(x: &[T], from: &[usize], to: &[usize]) -> Result<Vec<T>, OpError> {
    check_shape("x", x.len(), from)?;
    if numel("reshape target", to)? != x.len() {
        return Err(OpError::Shape(format!(
            "cannot reshape {from:?} to {to:?}: element counts differ"
        )));
    }
    Ok(x.to_vec())
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Transpose: `out` has axes `perm` of `x` (`out.dims[i] = dims[perm[i]]`), i.e.
/// `out[i_0, …] = x[j]` with `j[perm[a]] = i_a` — `torch.permute`.
pub fn transpose<T: Copy>(x: &[T], dims: &[usize], perm: &[usize]) -> Result<Vec<T>, OpError> {
    check_shape("x", x.len(), dims)?;
    let r = dims.len();
    let mut seen = vec![false; r];
    let valid = perm.len() == r
        && perm
            .iter()
            .all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(OpError::Shape(format!(
            "perm {perm:?} is not a permutation of the axes of {dims:?}"
        )));
    }
    let mut out = Vec::with_capacity(x.len());
    if x.is_empty() {
        return Ok(out);
    }
    let in_strides = strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    // The input stride each output axis steps by.
    let step: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    // Walk the output in row-major order, carrying the input offset along like an odometer.
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..x.len() {
        out.push(x[off]);
        for a in (0..r).rev() {
            idx[a] += 1;
            off += step[a];
            if idx[a] < out_dims[a] {
                break;
            }
            off -= step[a] * out_dims[a];
            idx[a] = 0;
        }
    }
    Ok(out)
}

/// Slice: elements `start..end` along `axis` of `x` (shape `dims`), every other axis whole.
pub fn slice<T: Copy>(
    x: &[T],
    dims: &[usize],
    axis: usize,
    start: usize,
    end: usize,
) -> Result<Vec<T>, OpError> {
    check_shape("x", x.len(), dims)?;
    if axis >= dims.len() || start > end || end > dims[axis] {
        return Err(OpError::Shape(format!(
            "slice {start}..{end} along axis {axis} is out of range for shape {dims:?}"
        )));
    }
    let inner: usize = dims[axis + 1..].iter().product();
    let (len, take) = (dims[axis] * inner, (end - start) * inner);
    let mut out = Vec::with_capacity(numel("slice output", &dims[..axis])? * take);
    if len == 0 {
        return Ok(out);
    }
    for block in x.chunks(len) {
        out.extend_from_slice(&block[start * inner..][..take]);
    }
    Ok(out)
}

/// Concat: joins `parts` (each a buffer and its shape) along `axis`; every other axis must
/// agree. The result has `Σ dims[axis]` along `axis`.
pub fn concat<T: Copy>(parts: &[(&[T], &[usize])], axis: usize) -> Result<Vec<T>, OpError> {
    let Some(&(_, first)) = parts.first() else {
        return Err(OpError::Shape("concat needs at least one operand".into()));
    };
    if axis >= first.len() {
        return Err(OpError::Shape(format!(
            "concat axis {axis} is out of range for shape {first:?}"
        )));
    }
    let mut total = 0usize;
    for &(data, dims) in parts {
        check_shape("concat operand", data.len(), dims)?;
        let agree =
            dims.len() == first.len() && (0..dims.len()).all(|i| i == axis || dims[i] == first[i]);
        if !agree {
            return Err(OpError::Shape(format!(
                "concat operands {first:?} and {dims:?} must agree in every axis but {axis}"
            )));
        }
        total += data.len();
    }
    let inner: usize = first[axis + 1..].iter().product();
    let outer: usize = first[..axis].iter().product();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for &(data, dims) in parts {
            let chunk = dims[axis] * inner;
            out.extend_from_slice(&data[o * chunk..][..chunk]);
        }
    }
    Ok(out)
}
