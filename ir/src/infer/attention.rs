//! Type rules of attention: `rope` (with its scaling attributes), `attn_scores` and
//! `attn_values`.

use super::{Inferred, Result, free, heads_divide, named, need_float, need_rank};
use crate::attr::Attrs;
use crate::operands::{AttnScoresOperands, AttnValuesOperands};
use crate::{DType, TensorType};

/// The attributes of YaRN scaling (besides `factor` and `original_max_position`).
const YARN_ATTRS: [&str; 4] = ["beta_fast", "beta_slow", "mscale", "mscale_all_dim"];
/// The attributes of Llama 3 scaling (besides `factor` and `original_max_position`).
const LLAMA3_ATTRS: [&str; 2] = ["low_freq_factor", "high_freq_factor"];

/// Checks a rope's scaling attributes: a scaling takes exactly its own parameters, all present
/// and possible (`factor` ≥ 1, positive sizes and frequencies, `beta_fast` > `beta_slow`,
/// `high_freq_factor` > `low_freq_factor`); without `scaling` a rope takes none of them.
fn rope_scaling(attrs: &Attrs) -> Result<()> {
    let (scaling, other): (_, &[&str]) = match attrs.str("scaling") {
        None => {
            let common = ["factor", "original_max_position"];
            let mut all = common.iter().chain(&YARN_ATTRS).chain(&LLAMA3_ATTRS);
            return match all.find(|a| attrs.get(a).is_some()) {
                Some(a) => Err(format!("rope attribute `{a}` needs a `scaling`")),
                None => Ok(()),
            };
        }
        Some(s @ "yarn") => (s, &LLAMA3_ATTRS),
        Some(s @ "llama3") => (s, &YARN_ATTRS),
        Some(other) => {
            return Err(format!(
                "rope scaling must be \"yarn\" or \"llama3\", got {other:?}"
            ));
        }
    };
    if let Some(a) = other.iter().find(|a| attrs.get(a).is_some()) {
        return Err(format!(
            "rope attribute `{a}` does not apply to {scaling} scaling"
        ));
    }
    let float = |name: &str| {
        attrs
            .float(name)
            .ok_or_else(|| format!("rope with {scaling} scaling needs attribute `{name}`"))
    };
    let factor = float("factor")?;
    if factor < 1.0 {
        return Err(format!(
            "rope scaling factor must be at least 1, got {factor}"
        ));
    }
    match attrs.int("original_max_position") {
        Some(p) if p > 0 => {}
        Some(p) => {
            return Err(format!(
                "rope original_max_position must be positive, got {p}"
            ));
        }
        None => {
            return Err(format!(
                "rope with {scaling} scaling needs attribute `original_max_position`"
            ));
        }
    }
    if scaling == "yarn" {
        let (fast, slow) = (float("beta_fast")?, float("beta_slow")?);
        if slow <= 0.0 || fast <= slow {
            return Err(format!(
                "rope yarn needs beta_fast > beta_slow > 0, got beta_fast {fast}, beta_slow {slow}"
            ));
        }
        for name in ["mscale", "mscale_all_dim"] {
            let m = float(name)?;
            if m < 0.0 {
                return Err(format!("rope {name} must not be negative, got {m}"));
            }
        }
    } else {
        let (low, high) = (float("low_freq_factor")?, float("high_freq_factor")?);
        if low <= 0.0 || high <= low {
            return Err(format!(
                "rope llama3 needs high_freq_factor > low_freq_factor > 0, got low_freq_factor {low}, high_freq_factor {high}"
            ));
        }
    }
    Ok(())
}

/// `rope` on `x [B, S, H, D]` (D even) with a `style` and optional scaling.
pub(super) fn rope(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    need_float("input", x)?;
    need_rank("input", x, 4)?;
    if !x.shape.last().is_multiple_of(2) {
        return Err(format!("rope needs an even head_dim, got {x}"));
    }
    match attrs.str("style") {
        Some("interleaved" | "half") => {}
        other => {
            return Err(format!(
                "rope style must be \"interleaved\" or \"half\", got {other:?}"
            ));
        }
    }
    if attrs.float("theta").is_some_and(|t| t <= 0.0) {
        return Err("rope theta must be positive".into());
    }
    rope_scaling(attrs)?;
    Ok(vec![free(x.dtype, x.shape.0.clone())])
}

/// `attn_scores`: `q [B, S, H, D]`, `k [B, T, Hk, D]` (+ `q_pe`, `k_pe`) → f32 `[B, H, S, T]`.
pub(super) fn attn_scores(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let scores = named(AttnScoresOperands::from_slice(ins))?;
    let (q, k) = (scores.q, scores.k);
    for (what, t) in [("q", q), ("k", k)] {
        need_float(what, t)?;
        need_rank(what, t, 4)?;
    }
    let [b, s, h, d] = q.shape.0[..] else {
        unreachable!()
    };
    let [kb, t, kh, kd] = k.shape.0[..] else {
        unreachable!()
    };
    if kb != b || kd != d {
        return Err(format!("q {q} and k {k} disagree on batch or head_dim"));
    }
    heads_divide("k", h, kh)?;
    if let Some((qp, kp)) = scores.pe() {
        for (what, t) in [("q_pe", qp), ("k_pe", kp)] {
            need_float(what, t)?;
            need_rank(what, t, 4)?;
        }
        if qp.shape.0[..3] != [b, s, h] {
            return Err(format!("q_pe {qp} must be [{b}, {s}, {h}, rope_dim]"));
        }
        if kp.shape.0[0] != b || kp.shape.0[1] != t || kp.shape.0[3] != qp.shape.0[3] {
            return Err(format!("k_pe {kp} does not match k {k} and q_pe {qp}"));
        }
        heads_divide("k_pe", h, kp.shape.0[2])?;
    }
    if attrs.bool("causal") == Some(true) && t < s {
        return Err(format!(
            "causal attention needs at least as many keys ({t}) as queries ({s})"
        ));
    }
    Ok(vec![free(DType::F32, vec![b, h, s, t])])
}

/// `attn_values`: `p [B, H, S, T]` · `v [B, T, Hv, Dv]` → `[B, S, H, Dv]`.
pub(super) fn attn_values(ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let AttnValuesOperands { p, v } = named(AttnValuesOperands::from_slice(ins))?;
    need_float("p", p)?;
    need_float("v", v)?;
    need_rank("p", p, 4)?;
    need_rank("v", v, 4)?;
    let [b, h, s, t] = p.shape.0[..] else {
        unreachable!()
    };
    let [vb, vt, vh, dv] = v.shape.0[..] else {
        unreachable!()
    };
    if vb != b || vt != t {
        return Err(format!("p {p} and v {v} disagree on batch or key length"));
    }
    heads_divide("v", h, vh)?;
    Ok(vec![free(v.dtype, vec![b, s, h, dv])])
}
