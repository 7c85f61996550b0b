//! The high-precision per-token expert GEMM: each (token, slot) row is multiplied by the
//! weight of the expert its index names, `out[t, j, :] = x[t(, j), :] · w[idx[t, j]]ᵀ`.
//!
//! Rows are bucketed by expert and each expert runs one f32 GEMM over its rows (experts in
//! parallel), as a grouped GEMM does on the GPU; every output row is the same dot products
//! as a per-row loop, up to the library's summation order.

use super::error::{OpError, check_shape, ranked};
use super::linear::{View, gemm_into};
use dsc_ir::Shape;
use rayon::prelude::*;

/// Whether each token has one input row for all its slots or one per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupedInput {
    /// x `[tokens, in_features]`: the same row feeds every slot (gate and up projections).
    PerToken,
    /// x `[tokens, top_k, in_features]`: one row per slot (the down projection).
    PerSlot,
}

impl GroupedInput {
    /// The input form of x with this shape: `[tokens, in_features]` is per token, anything
    /// else (`[tokens, top_k, in_features]`) per slot.
    pub fn of(x: &Shape) -> Self {
        if x.rank() == 2 {
            GroupedInput::PerToken
        } else {
            GroupedInput::PerSlot
        }
    }

    /// The row of x that routed row `row` (`token · top_k + slot`) reads.
    pub fn x_row(self, row: usize, top_k: usize) -> usize {
        match self {
            GroupedInput::PerToken => row / top_k,
            GroupedInput::PerSlot => row,
        }
    }
}

/// Sizes of `grouped_linear`: w `[experts, out_features, in_features]`, indices `[tokens,
/// top_k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupedDims {
    pub tokens: usize,
    pub top_k: usize,
    pub experts: usize,
    pub out_features: usize,
    pub in_features: usize,
}

impl GroupedDims {
    /// The sizes of the op whose expert weights (or their gradient) are `w` `[experts,
    /// out_features, in_features]` and whose indices are `[tokens, top_k]`.
    pub fn from_shapes(w: &Shape, indices: &Shape) -> Result<Self, OpError> {
        let [experts, out_features, in_features] = ranked("grouped weights", w)?;
        let [tokens, top_k] = ranked("indices", indices)?;
        Ok(GroupedDims {
            tokens,
            top_k,
            experts,
            out_features,
            in_features,
        })
    }

    /// Rows of the output: one per (token, slot).
    pub fn rows(&self) -> usize {
        self.tokens * self.top_k
    }
}

/// `out[t, j, :] = x[t(, j), :] · w[indices[t, j]]ᵀ` → `[tokens, top_k, out_features]`, f32
/// accumulation; an index outside `0..experts` is an error naming it and its token and slot.
pub fn grouped_linear<I: Copy + Into<i64>>(
    x: &[f32],
    input: GroupedInput,
    w: &[f32],
    indices: &[I],
    dims: GroupedDims,
) -> Result<Vec<f32>, OpError> {
    let GroupedDims {
        tokens,
        top_k,
        experts,
        out_features: n,
        in_features: kk,
    } = dims;
    match input {
        GroupedInput::PerToken => check_shape("x", x.len(), &[tokens, kk])?,
        GroupedInput::PerSlot => check_shape("x", x.len(), &[tokens, top_k, kk])?,
    }
    check_shape("weight", w.len(), &[experts, n, kk])?;
    check_shape("indices", indices.len(), &[tokens, top_k])?;

    // The (token · top_k + slot) rows of each expert, in row order.
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); experts];
    for (row, &idx) in indices.iter().enumerate() {
        let idx: i64 = idx.into();
        let expert = usize::try_from(idx)
            .ok()
            .filter(|&ex| ex < experts)
            .ok_or_else(|| {
                OpError::OutOfRange(format!(
                    "grouped_linear expert index {idx} (token {}, slot {}) is out of range for {experts} experts",
                    row / top_k,
                    row % top_k
                ))
            })?;
        rows_of[expert].push(row);
    }

    let mut out = vec![0.0f32; tokens * top_k * n];
    if out.is_empty() {
        return Ok(out);
    }
    let x_row = |row: usize| input.x_row(row, top_k);
    let results: Vec<(usize, Vec<f32>)> = rows_of
        .par_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(ex, rows)| {
            let mut xs = Vec::with_capacity(rows.len() * kk);
            for &row in rows {
                xs.extend_from_slice(&x[x_row(row) * kk..][..kk]);
            }
            let mut ys = vec![0.0f32; rows.len() * n];
            // w[ex] is [n, kk]; read as the kk × n matrix w[ex]ᵀ.
            let wt = View {
                offset: ex * n * kk,
                rs: 1,
                cs: kk,
            };
            let m = rows.len();
            gemm_into(
                &mut ys,
                View::rows(0, n),
                false,
                &xs,
                View::rows(0, kk),
                w,
                wt,
                (m, n, kk),
                false,
            );
            (ex, ys)
        })
        .collect();
    for (ex, ys) in results {
        for (&row, y) in rows_of[ex].iter().zip(ys.chunks(n)) {
            out[row * n..][..n].copy_from_slice(y);
        }
    }
    Ok(out)
}
