//! Embedding lookup: rows of a table gathered by token id.

use super::error::{OpError, check_len, numel, ranked};
use dsc_ir::Shape;

/// Sizes of `embedding`: a table `[vocab, dim]` and every id a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmbeddingDims {
    /// Ids (tokens).
    pub tokens: usize,
    /// Rows of the table.
    pub vocab: usize,
    /// Columns of the table.
    pub dim: usize,
}

impl EmbeddingDims {
    /// The sizes of the op whose ids and table have these shapes (table rank 2).
    pub fn from_shapes(ids: &Shape, table: &Shape) -> Result<Self, OpError> {
        let [vocab, dim] = ranked("the embedding table", table)?;
        let tokens = usize::try_from(ids.numel())
            .map_err(|_| OpError::Shape(format!("ids: shape {ids} overflows")))?;
        Ok(EmbeddingDims { tokens, vocab, dim })
    }
}

/// `out[i, :] = table[ids[i], :]`: ids `[n]` (i32 or i64), table `[v, d]` → `[n, d]`; an id
/// outside `0..v` is an error naming the id, its position and `v`.
pub fn embedding<I: Copy + Into<i64>>(
    ids: &[I],
    table: &[f32],
    v: usize,
    d: usize,
) -> Result<Vec<f32>, OpError> {
    check_len("table", table.len(), numel("table", &[v, d])?)?;
    let mut out = Vec::with_capacity(numel("embedding output", &[ids.len(), d])?);
    for (pos, &id) in ids.iter().enumerate() {
        let id: i64 = id.into();
        // Negative ids are errors too: torch's nn.Embedding rejects them rather than wrapping.
        let row = usize::try_from(id).ok().filter(|&r| r < v).ok_or_else(|| {
            OpError::OutOfRange(format!(
                "embedding id {id} (at position {pos}) is out of range for a table of {v} rows"
            ))
        })?;
        out.extend_from_slice(&table[row * d..][..d]);
    }
    Ok(out)
}
