//! Type rule of fused `attention`: the score side checked as `attn_scores`' (q, k and the
//! optional q_pe, k_pe), v `[B, T, Hv, Dv]` with Hv dividing H; the result is `[B, S, H, Dv]`
//! in v's dtype.

use super::attention::attn_scores;
use super::{Inferred, Result, free, heads_divide, named, need_float, need_rank};
use crate::TensorType;
use crate::attr::Attrs;
use crate::operands::AttentionOperands;

/// `attention(q, k, v[, q_pe, k_pe])`.
pub(super) fn attention(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let operands = named(AttentionOperands::from_slice(ins))?;
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
