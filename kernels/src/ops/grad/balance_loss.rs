//! The sequence-wise balance loss of a routed layer (DeepSeek-V3 §2.1.2, eqs. 17–20) and its
//! gradient w.r.t. the gate's logits. For each sequence of `S` tokens:
//!
//! ```text
//! s[t, i]  = sigmoid(l[t, i])  (or softmax over the row)     the affinity scores
//! s'[t, i] = s[t, i] / Σ_j s[t, j]                           normalized to sum 1
//! P_i      = (1 / S) · Σ_t s'[t, i]
//! f_i      = E / (k · S) · |{t : i among indices[t]}|        (a repeated index counts once)
//! L_seq    = α · Σ_i f_i · P_i
//! ```
//!
//! and the loss is the mean of `L_seq` over the sequences. `f_i` is constant (the selection
//! is), so the gradient flows through `P`: `∂L/∂s'[t, i] = g_i = α · f_i / (S · sequences)`
//! times the cotangent; through the normalization `∂L/∂s[t, i] = (g_i − Σ_j g_j · s'[t, j]) /
//! Σ_j s[t, j]`; through sigmoid `· s (1 − s)`, through softmax `s_i · (ds_i − Σ_j ds_j s_j)`.
//!
//! In f32; every sum runs in index order (tokens, then experts), from +0.

use crate::ops::error::{OpError, check_shape};
use crate::ops::moe_topk::ScoreFunc;
use crate::ops::softmax::softmax_row;

/// The sizes and attributes of one `balance_loss` (or `balance_loss_grad`) op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// Tokens of all the sequences.
    pub tokens: usize,
    /// Routed experts.
    pub experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Sequences (each `tokens / sequences` long).
    pub sequences: usize,
    /// α.
    pub alpha: f32,
    /// How the logits become scores.
    pub score_func: ScoreFunc,
}

impl Balance {
    fn check(&self, logits: &[f32], indices: &[i32]) -> Result<usize, OpError> {
        let Balance {
            tokens: t,
            experts: e,
            top_k: k,
            sequences,
            ..
        } = *self;
        check_shape("logits", logits.len(), &[t, e])?;
        check_shape("indices", indices.len(), &[t, k])?;
        if sequences == 0 || !t.is_multiple_of(sequences) {
            return Err(OpError::Shape(format!(
                "{sequences} sequences do not divide {t} tokens"
            )));
        }
        if let Some((at, &i)) = indices
            .iter()
            .enumerate()
            .find(|&(_, &i)| usize::try_from(i).map_or(true, |i| i >= e))
        {
            return Err(OpError::OutOfRange(format!(
                "balance_loss expert index {i} (token {}, slot {}) is out of range for {e} \
                 experts",
                at / k,
                at % k
            )));
        }
        Ok(t / sequences)
    }

    /// Token `t`'s scores `s[t, ·]` and their sum.
    fn scores(&self, logits: &[f32], t: usize) -> (Vec<f32>, f32) {
        let mut s = logits[t * self.experts..][..self.experts].to_vec();
        match self.score_func {
            ScoreFunc::Sigmoid => s.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            ScoreFunc::Softmax => softmax_row(&mut s),
        }
        let sum = s.iter().fold(0.0f32, |a, &v| a + v);
        (s, sum)
    }

    /// `f_i` of sequence `seq` (`len` tokens).
    fn fractions(&self, indices: &[i32], seq: usize, len: usize) -> Vec<f32> {
        let (e, k) = (self.experts, self.top_k);
        let mut count = vec![0u32; e];
        for t in seq * len..(seq + 1) * len {
            let row = &indices[t * k..][..k];
            for (j, &i) in row.iter().enumerate() {
                if !row[..j].contains(&i) {
                    count[i as usize] += 1;
                }
            }
        }
        let per = e as f32 / (k as f32 * len as f32);
        count.iter().map(|&c| per * c as f32).collect()
    }
}

/// The balance loss `[1]` of `logits [T, E]` and `indices [T, k]`.
pub fn balance_loss(logits: &[f32], indices: &[i32], b: &Balance) -> Result<f32, OpError> {
    let len = b.check(logits, indices)?;
    let e = b.experts;
    let mut total = 0.0f32;
    for seq in 0..b.sequences {
        let f = b.fractions(indices, seq, len);
        let mut p = vec![0.0f32; e];
        for t in seq * len..(seq + 1) * len {
            let (s, sum) = b.scores(logits, t);
            for (p, &s) in p.iter_mut().zip(&s) {
                *p += s / sum;
            }
        }
        let dot = f
            .iter()
            .zip(&p)
            .fold(0.0f32, |a, (&f, &p)| a + f * (p / len as f32));
        total += b.alpha * dot;
    }
    Ok(total / b.sequences as f32)
}

/// The gradient `[T, E]` of [`balance_loss`] w.r.t. the logits, for the loss's cotangent
/// `dloss`.
pub fn balance_loss_grad(
    logits: &[f32],
    indices: &[i32],
    dloss: f32,
    b: &Balance,
) -> Result<Vec<f32>, OpError> {
    let len = b.check(logits, indices)?;
    let e = b.experts;
    let mut out = vec![0.0f32; logits.len()];
    let per = b.alpha * dloss / (len as f32 * b.sequences as f32);
    for seq in 0..b.sequences {
        let g: Vec<f32> = b
            .fractions(indices, seq, len)
            .iter()
            .map(|&f| per * f)
            .collect();
        for t in seq * len..(seq + 1) * len {
            let (s, sum) = b.scores(logits, t);
            let dot = g
                .iter()
                .zip(&s)
                .fold(0.0f32, |a, (&g, &s)| a + g * (s / sum));
            let ds: Vec<f32> = g.iter().map(|&g| (g - dot) / sum).collect();
            let dl = &mut out[t * e..][..e];
            match b.score_func {
                ScoreFunc::Sigmoid => {
                    for ((o, &d), &s) in dl.iter_mut().zip(&ds).zip(&s) {
                        *o = d * s * (1.0 - s);
                    }
                }
                ScoreFunc::Softmax => {
                    let dot = ds.iter().zip(&s).fold(0.0f32, |a, (&d, &s)| a + d * s);
                    for ((o, &d), &s) in dl.iter_mut().zip(&ds).zip(&s) {
                        *o = s * (d - dot);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(score_func: ScoreFunc) -> (Vec<f32>, Vec<i32>, Balance) {
        let (t, e, k) = (12, 5, 2);
        let logits: Vec<f32> = (0..t * e)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
            .collect();
        // Token t chooses experts t mod 5 and (t + 1 + t / 6) mod 5.
        let indices: Vec<i32> = (0..t)
            .flat_map(|t| [(t % e) as i32, ((t + 1 + t / 6) % e) as i32])
            .collect();
        let b = Balance {
            tokens: t,
            experts: e,
            top_k: k,
            sequences: 2,
            alpha: 0.3,
            score_func,
        };
        (logits, indices, b)
    }

    /// The loss as the report writes it, in f64.
    fn loss_f64(logits: &[f32], indices: &[i32], b: &Balance) -> f64 {
        let (e, k, len) = (b.experts, b.top_k, b.tokens / b.sequences);
        let mut total = 0.0;
        for seq in 0..b.sequences {
            let mut fp = 0.0;
            for i in 0..e {
                let mut count = 0.0;
                let mut p = 0.0;
                for t in seq * len..(seq + 1) * len {
                    let row: Vec<f64> =
                        logits[t * e..][..e].iter().map(|&x| f64::from(x)).collect();
                    let s: Vec<f64> = match b.score_func {
                        ScoreFunc::Sigmoid => {
                            row.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
                        }
                        ScoreFunc::Softmax => {
                            let m = row.iter().cloned().fold(f64::MIN, f64::max);
                            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
                            row.iter().map(|x| (x - m).exp() / z).collect()
                        }
                    };
                    let sum: f64 = s.iter().sum();
                    p += s[i] / sum / len as f64;
                    if indices[t * k..][..k].contains(&(i as i32)) {
                        count += 1.0;
                    }
                }
                fp += e as f64 / (k as f64 * len as f64) * count * p;
            }
            total += f64::from(b.alpha) * fp;
        }
        total / b.sequences as f64
    }

    #[test]
    fn the_loss_is_the_reports_formula() {
        for score_func in [ScoreFunc::Sigmoid, ScoreFunc::Softmax] {
            let (logits, indices, b) = case(score_func);
            let got = f64::from(balance_loss(&logits, &indices, &b).unwrap());
            let want = loss_f64(&logits, &indices, &b);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "{score_func:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        for score_func in [ScoreFunc::Sigmoid, ScoreFunc::Softmax] {
            let (logits, indices, b) = case(score_func);
            let grad = balance_loss_grad(&logits, &indices, 2.0, &b).unwrap();
            for i in 0..logits.len() {
                let h = 1e-3f32;
                let mut up = logits.clone();
                up[i] += h;
                let mut down = logits.clone();
                down[i] -= h;
                let fd = 2.0 * (loss_f64(&up, &indices, &b) - loss_f64(&down, &indices, &b))
                    / (f64::from(up[i]) - f64::from(down[i]));
                let g = f64::from(grad[i]);
                assert!(
                    (g - fd).abs() <= 1e-4 * fd.abs().max(1e-3),
                    "{score_func:?} logit {i}: {g} vs finite difference {fd}"
                );
            }
        }
    }

    #[test]
    fn a_bad_index_or_sequence_count_is_an_error() {
        let (logits, mut indices, mut b) = case(ScoreFunc::Sigmoid);
        b.sequences = 5;
        assert!(
            balance_loss(&logits, &indices, &b)
                .unwrap_err()
                .to_string()
                .contains("5 sequences")
        );
        b.sequences = 2;
        indices[3] = 5;
        let err = balance_loss_grad(&logits, &indices, 1.0, &b)
            .unwrap_err()
            .to_string();
        assert!(err.contains("index 5 (token 1, slot 1)"), "{err}");
    }
}
