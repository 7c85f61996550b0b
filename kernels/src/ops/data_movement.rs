//! Ops that only move data, over row-major buffers of any element type (f32 values, i32
//! indices, FP8 codes).

use super::error::{OpError, check_shape, numel};
use rayon::prelude::*;

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
pub fn transpose<T: Copy + Send + Sync>(
    x: &[T],
    dims: &[usize],
    perm: &[usize],
) -> Result<Vec<T>, OpError> {
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
    if x.is_empty() {
        return Ok(Vec::new());
    }
    // Swapping the last two axes (a matrix transpose per leading index, the common case):
    // in tiles that stay in cache, matrices and tile rows in parallel.
    let batch_kept = perm[..r.saturating_sub(2)]
        .iter()
        .enumerate()
        .all(|(i, &p)| i == p);
    if r >= 2 && batch_kept && perm[r - 2] == r - 1 && perm[r - 1] == r - 2 {
        return Ok(transpose_matrices(x, dims[r - 2], dims[r - 1]));
    }
    let mut out = Vec::with_capacity(x.len());
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

/// Each `[rows, cols]` matrix of `x` (matrices back to back) transposed to `[cols, rows]`.
fn transpose_matrices<T: Copy + Send + Sync>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 32;
    let size = rows * cols;
    let mut out = x.to_vec();
    if size == 0 {
        return out;
    }
    // One task per matrix and band of TILE output rows (input columns).
    out.par_chunks_mut(size)
        .zip(x.par_chunks(size))
        .for_each(|(out_m, x_m)| {
            out_m
                .par_chunks_mut(TILE * rows)
                .enumerate()
                .for_each(|(band, out_band)| {
                    let c0 = band * TILE;
                    let width = out_band.len() / rows;
                    for r0 in (0..rows).step_by(TILE) {
                        for r in r0..(r0 + TILE).min(rows) {
                            let src = &x_m[r * cols + c0..][..width];
                            for (dc, &v) in src.iter().enumerate() {
                                out_band[dc * rows + r] = v;
                            }
                        }
                    }
                });
        });
    out
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
