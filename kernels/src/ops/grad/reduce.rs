//! Sums over one axis: the VJP of a broadcast (a bias added to every row, a weight shared by
//! every position), and the reduction over tokens that gives a weight's gradient.

use crate::ops::error::{OpError, check_shape, numel};
use rayon::prelude::*;

/// Leaf size of the pairwise tree; the same as [`crate::ops::pairwise_sum`]'s, so a column sum
/// here equals `pairwise_sum` of that column bit for bit.
const BLOCK: usize = 32;

/// Above this many elements the two halves of the tree are summed on two rayon tasks; the tree
/// itself is fixed, so the result does not depend on the thread count.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// `out[j] = Σ_a x[a, j]` for `x` `[len, inner]` (`inner > 0`), each column summed by
/// [`crate::ops::pairwise_sum`]'s tree (in-order leaves of 32 rows joined as a balanced tree),
/// but row by row, so the strided columns are never gathered.
pub(crate) fn sum_rows_pairwise(x: &[f32], len: usize, inner: usize, out: &mut [f32]) {
    debug_assert!(inner > 0 && x.len() == len * inner && out.len() == inner);
    if len <= BLOCK {
        out.fill(0.0);
        for row in x.chunks(inner) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        return;
    }
    // pairwise_sum splits at len / 2 too: the lower half gets the floor.
    let half = len / 2;
    let (lo, hi) = x.split_at(half * inner);
    let mut upper = vec![0.0f32; inner];
    if x.len() >= PARALLEL_ELEMENTS {
        rayon::join(
            || sum_rows_pairwise(lo, half, inner, out),
            || sum_rows_pairwise(hi, len - half, inner, &mut upper),
        );
    } else {
        sum_rows_pairwise(lo, half, inner, out);
        sum_rows_pairwise(hi, len - half, inner, &mut upper);
    }
    for (o, u) in out.iter_mut().zip(&upper) {
        *o += u;
    }
}

/// Sums `x` (shape `dims`, row-major) over `axis` and drops that axis: the result has `dims`
/// without `axis`; each sum runs over the axis in index order, pairwise (see
/// `crate::ops::pairwise_sum`), so it does not depend on the layout or the thread count.
pub fn sum_axis(x: &[f32], dims: &[usize], axis: usize) -> Result<Vec<f32>, OpError> {
    check_shape("x", x.len(), dims)?;
    if axis >= dims.len() {
        return Err(OpError::Shape(format!(
            "sum_axis axis {axis} is out of range for shape {dims:?}"
        )));
    }
    let len = dims[axis];
    // x may be empty (len = 0) while the result is not, so its size is checked on its own.
    let outer = numel("sum_axis output", &dims[..axis])?;
    let inner = numel("sum_axis output", &dims[axis + 1..])?;
    let mut out = vec![0.0f32; numel("sum_axis output", &[outer, inner])?];
    if out.is_empty() || len == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(inner)
        .zip(x.par_chunks(len * inner))
        .for_each(|(o, block)| sum_rows_pairwise(block, len, inner, o));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sum_rows_pairwise;
    use crate::ops::pairwise_sum;
    use crate::rng::SplitMix64;

    #[test]
    fn column_sums_are_pairwise_sum_bit_for_bit() {
        // The doc's promise, which the integration tests cannot reach (pairwise_sum is
        // crate-private): the same leaves and splits, including odd lengths and the parallel
        // branch (70_000 · 2 elements).
        let mut rng = SplitMix64(1);
        for len in [0, 1, 31, 32, 33, 65, 70, 1000, 70_000] {
            let inner = 2;
            let x = rng.symmetric_f32s(len * inner, 1e3);
            let mut out = vec![0.0f32; inner];
            sum_rows_pairwise(&x, len, inner, &mut out);
            for (j, &o) in out.iter().enumerate() {
                let column: Vec<f32> = x.iter().skip(j).step_by(inner).copied().collect();
                assert_eq!(o.to_bits(), pairwise_sum(&column, |v| v).to_bits(), "{len}");
            }
        }
    }
}
