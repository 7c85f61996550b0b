//! Next-token cross-entropy over a vocabulary, mean-reduced over rows (torch's
//! `F.cross_entropy(logits, labels)`), and its gradient with respect to the logits.

use crate::ops::error::{OpError, check_len, check_shape};
use crate::ops::pairwise_sum;
use crate::ops::softmax::softmax_row;
use rayon::prelude::*;

/// Checks the operands and returns each row's label as an index.
fn labels_of(
    logits: &[f32],
    labels: &[i32],
    rows: usize,
    vocab: usize,
) -> Result<Vec<usize>, OpError> {
    check_shape("logits", logits.len(), &[rows, vocab])?;
    check_len("labels", labels.len(), rows)?;
    if rows == 0 {
        return Err(OpError::Shape(
            "cross_entropy needs at least one row (a mean over no rows is 0/0)".into(),
        ));
    }
    labels
        .iter()
        .enumerate()
        .map(|(row, &label)| {
            // Negative labels too: torch's ignore_index (-100) is not part of this op.
            usize::try_from(label)
                .ok()
                .filter(|&l| l < vocab)
                .ok_or_else(|| {
                    OpError::OutOfRange(format!(
                        "cross_entropy label {label} (at row {row}) is out of range for a \
                     vocabulary of {vocab}"
                    ))
                })
        })
        .collect()
}

/// `mean_r(logsumexp(logits[r, :]) − logits[r, labels[r]])` for logits `[rows, vocab]` and
/// labels `[rows]`, max-subtracted, in f32; the mean is the pairwise sum over rows / `rows`.
pub fn cross_entropy(
    logits: &[f32],
    labels: &[i32],
    rows: usize,
    vocab: usize,
) -> Result<f32, OpError> {
    let labels = labels_of(logits, labels, rows, vocab)?;
    let losses: Vec<f32> = logits
        .par_chunks(vocab)
        .zip(labels.par_iter())
        .map(|(row, &label)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum = pairwise_sum(row, |v| (v - max).exp());
            // As torch's log_softmax then nll_loss: −((x_l − max) − ln Σ exp(x − max)).
            -((row[label] - max) - sum.ln())
        })
        .collect();
    Ok(pairwise_sum(&losses, |v| v) / rows as f32)
}

/// `(softmax(logits[r, :]) − onehot(labels[r])) · dloss / rows` for logits `[rows, vocab]`:
/// the gradient of [`cross_entropy`] scaled by the incoming `dloss`, `[rows, vocab]`.
pub fn cross_entropy_grad(
    logits: &[f32],
    labels: &[i32],
    rows: usize,
    vocab: usize,
    dloss: f32,
) -> Result<Vec<f32>, OpError> {
    let labels = labels_of(logits, labels, rows, vocab)?;
    // The mean's 1/rows folded into the incoming gradient once, as torch's nll_loss backward.
    let factor = dloss / rows as f32;
    let mut grad = logits.to_vec();
    grad.par_chunks_mut(vocab)
        .zip(labels.par_iter())
        .for_each(|(row, &label)| {
            softmax_row(row);
            row[label] -= 1.0;
            for v in row.iter_mut() {
                *v *= factor;
            }
        });
    Ok(grad)
}
