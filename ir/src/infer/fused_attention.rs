//! Type rule of fused `attention`: the score side checked as `attn_scores`' (q, k and the
//! optional q_pe, k_pe), v `[B, T, Hv, Dv]` with Hv dividing H; the result is `[B, S, H, Dv]`
//! in v's dtype.
//!
//! With `q_cols = [start, end]` the op reads q's last axis in `start..end` only: a slice of
//! its q folded in (MLA's q_nope, read in place from the q projection's output), q's type
//! then being the slice's.

use super::attention::attn_scores;
use super::{Inferred, Result, free, heads_divide, named, need_float, need_rank};
use crate::attr::Attrs;
use crate::operands::AttentionOperands;
use crate::{Shape, TensorType};

/// The attribute of a fused `attention` that reads a column window of its q.
pub const Q_COLS: &str = "q_cols";

/// The type of the q an `attention` with `attrs` reads from its q operand of type `q`: the
/// operand's, or with `q_cols` its window of the last axis.
pub fn attention_q_type(attrs: &Attrs, q: &TensorType) -> Result<TensorType> {
    let Some(cols) = attrs.ints(Q_COLS) else {
        return Ok(q.clone());
    };
    let last = q.shape.last();
    match *cols {
        [start, end] if 0 <= start && start < end && end as u64 <= last => {
            let mut dims = q.shape.dims().to_vec();
            if let Some(d) = dims.last_mut() {
                *d = (end - start) as u64;
            }
            Ok(TensorType {
                dtype: q.dtype,
                shape: Shape(dims),
            })
        }
        _ => Err(format!(
            "{Q_COLS} must be [start, end] with 0 <= start < end <= {last} (q is {q}), got {cols:?}"
        )),
    }
}

/// `attention(q, k, v[, q_pe, k_pe])`.
pub(super) fn attention(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let mut operands = named(AttentionOperands::from_slice(ins))?;
    let q = attention_q_type(attrs, operands.q)?;
    operands.q = &q;
    let scores = attn_scores(attrs, &operands.scores().to_vec())?;
    let [b, h, s, t] = scores[0].shape.0[..] else {
        unreachable!("attn_scores is rank 4")
    };
    let v = operands.v;
    need_float("v", v)?;
    need_rank("v", v, 4)?;
    let [vb, vt, vh, dv] = v.shape.0[..] else {
        unreachable!()
    };
    if vb != b || vt != t {
        return Err(format!(
            "v {v} and k {} disagree on batch or key length",
            operands.k
        ));
    }
    heads_divide("v", h, vh)?;
    Ok(vec![free(v.dtype, vec![b, s, h, dv])])
}
