//! Type rules of fused `attention` and `attention_quant`: the score side checked as `attn_scores`' (q, k and the
//! optional q_pe, k_pe), v `[B, T, Hv, Dv]` with Hv dividing H; the result is `[B, S, H, Dv]`
//! in v's dtype.
//!
//! With `q_cols = [start, end]` the op reads q's last axis in `start..end` only: a slice of
//! its q folded in (MLA's q_nope, read in place from the q projection's output), q's type
//! then being the slice's; `k_cols` and `v_cols` the same for k and v (MLA's k_nope and values,
//! read in place from `kv_b_proj`'s output).

use super::attention::attn_scores;
use super::fp8::quantized_rows;
use super::{Inferred, Result, free, heads_divide, named, need_float, need_rank};
use crate::attr::Attrs;
use crate::operands::AttentionOperands;
use crate::{OpKind, TensorType};

/// The attribute of a fused `attention` that reads a column window of its q.
pub const Q_COLS: &str = "q_cols";
/// The attribute of a fused `attention` that reads a column window of its k.
pub const K_COLS: &str = "k_cols";
/// The attribute of a fused `attention` that reads a column window of its v.
pub const V_COLS: &str = "v_cols";
/// Each windowed operand of `attention` (q, k, v) with the attribute of its window.
pub const ATTENTION_WINDOWS: [(usize, &str); 3] = [(0, Q_COLS), (1, K_COLS), (2, V_COLS)];

/// The type of what an `attention` with `attrs` reads from an operand of type `ty` whose
/// window attribute is `key` (one of [`ATTENTION_WINDOWS`]): the operand's, or with the
/// attribute its window `[start, end]` of the last axis.
pub fn attention_window_type(attrs: &Attrs, key: &str, ty: &TensorType) -> Result<TensorType> {
    super::window::window_type(attrs, key, ty)
}

/// `attention_quant(q, k, v[, q_pe, k_pe])`: `attention`'s output quantized in 1 × `act_tile`
/// groups of each head's row, `act_tile` dividing Dv so that no group spans two heads.
pub(super) fn attention_quant(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let out = attention(attrs, ins)?.remove(0).shape;
    let dv = out.last();
    if attrs
        .int("act_tile")
        .is_some_and(|t| t <= 0 || dv % t as u64 != 0)
    {
        return Err(format!(
            "act_tile {} must divide the value head dim {dv}: a group never spans two heads",
            attrs.int("act_tile").unwrap_or_default()
        ));
    }
    quantized_rows(OpKind::AttentionQuant, attrs, &out)
}

/// `attention(q, k, v[, q_pe, k_pe])`.
pub(super) fn attention(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let mut operands = named(AttentionOperands::from_slice(ins))?;
    let q = attention_window_type(attrs, Q_COLS, operands.q)?;
    let k = attention_window_type(attrs, K_COLS, operands.k)?;
    let v = attention_window_type(attrs, V_COLS, operands.v)?;
    (operands.q, operands.k, operands.v) = (&q, &k, &v);
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
