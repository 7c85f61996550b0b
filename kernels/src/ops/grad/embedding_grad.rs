//! The VJP of the embedding lookup: each position's gradient added to its token's row.

use crate::ops::error::{OpError, check_len, numel};

/// `[vocab, d]` zeros with `dy[i, :]` added to row `ids[i]` for positions `i` in order (a
/// token seen twice accumulates in position order, so the sum is deterministic); `dy` is
/// `[ids.len(), d]`; an id outside `0..vocab` is an error naming the id and its position.
pub fn embedding_grad(
    ids: &[i32],
    dy: &[f32],
    vocab: usize,
    d: usize,
) -> Result<Vec<f32>, OpError> {
    check_len("dy", dy.len(), numel("dy", &[ids.len(), d])?)?;
    let mut table = vec![0.0f32; numel("embedding gradient", &[vocab, d])?];
    // Every id is checked before any row is touched (and also when d = 0, where no row is).
    let rows =
        ids.iter()
            .enumerate()
            .map(|(pos, &id)| {
                usize::try_from(id).ok().filter(|&r| r < vocab).ok_or_else(|| {
                OpError::OutOfRange(format!(
                    "embedding_grad id {id} (at position {pos}) is out of range for a table of \
                     {vocab} rows"
                ))
            })
            })
            .collect::<Result<Vec<usize>, OpError>>()?;
    if d == 0 {
        return Ok(table);
    }
    for (&row, g) in rows.iter().zip(dy.chunks(d)) {
        for (t, &v) in table[row * d..][..d].iter_mut().zip(g) {
            *t += v;
        }
    }
    Ok(table)
}
