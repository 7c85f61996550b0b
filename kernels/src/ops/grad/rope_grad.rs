//! The VJP of RoPE: each pair's rotation by `θ` transposed, i.e. rotated by `−θ`.

use crate::ops::cast::FloatFormat;
use crate::ops::error::{OpError, check_shape};
use crate::ops::rope::{RopeParams, RopeStyle};
use rayon::prelude::*;

/// The transpose of [`rope`](fn@crate::ops::rope)'s rotation for `dy[b, s, h, d]` at positions `s`:
/// for each pair `(a, b)` of `params.style`, `dx[a] = dy[a]·c + dy[b]·s` and
/// `dx[b] = dy[b]·c − dy[a]·s`, with `c`, `s` from `params.cos_sin(d, seq, F32)` (YaRN's
/// attention scaling included, so it is the transpose, not the inverse, of the forward).
pub fn rope_grad(dy: &[f32], dims: [usize; 4], params: &RopeParams) -> Result<Vec<f32>, OpError> {
    check_shape("dy", dy.len(), &dims)?;
    let [_, seq, heads, d] = dims;
    if d % 2 != 0 {
        return Err(OpError::Shape(format!(
            "rope_grad needs an even head_dim, got {d}"
        )));
    }
    let mut dx = vec![0.0f32; dy.len()];
    let row = heads * d;
    if row == 0 {
        return Ok(dx);
    }
    let half = d / 2;
    // The backward runs in FP32 (DESIGN.md §8: attention fwd + bwd in original precision), so
    // the tables are the unrounded ones.
    let (cos, sin) = params.cos_sin(d, seq, FloatFormat::F32);
    // One (batch, position) row of all heads per task; its position is the row index mod seq.
    dx.par_chunks_mut(row)
        .zip(dy.par_chunks(row))
        .enumerate()
        .for_each(|(i, (o, gr))| {
            let p = i % seq;
            let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
            for (oh, gh) in o.chunks_mut(d).zip(gr.chunks(d)) {
                for j in 0..half {
                    let (a, b) = match params.style {
                        RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                        RopeStyle::Half => (j, j + half),
                    };
                    let (g1, g2) = (gh[a], gh[b]);
                    oh[a] = g1 * c[j] + g2 * s[j];
                    oh[b] = g2 * c[j] - g1 * s[j];
                }
            }
        });
    Ok(dx)
}
