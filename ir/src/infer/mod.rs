//! Type inference per op kind: checks arity, attributes and operand types, and derives result
//! shapes (and the dtypes that are fixed by the kind). The builder, the parser's verifier and
//! the `infer-shapes` pass all use it, so the rules exist once.

use crate::attr::Attrs;
use crate::{DType, OpKind, Shape, TensorType};

mod fp8;

/// The dtype rule of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultDType {
    /// The kind fixes the dtype (indices are i32, a cast's result is its `dtype`, …).
    Fixed(DType),
    /// The storage dtype is a precision decision; this is the natural default.
    Free(DType),
}

impl ResultDType {
    /// The dtype this rule yields for a freshly built op.
    pub fn default_dtype(self) -> DType {
        match self {
            ResultDType::Fixed(d) | ResultDType::Free(d) => d,
        }
    }
}

/// One inferred result type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    pub shape: Shape,
    pub dtype: ResultDType,
}

type Result<T> = std::result::Result<T, String>;

fn free(dtype: DType, dims: Vec<u64>) -> Inferred {
    Inferred {
        shape: Shape(dims),
        dtype: ResultDType::Free(dtype),
    }
}

fn fixed(dtype: DType, dims: Vec<u64>) -> Inferred {
    Inferred {
        shape: Shape(dims),
        dtype: ResultDType::Fixed(dtype),
    }
}

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

/// Checks `attrs` against the kind's signature: required present, types right, none unknown.
pub fn check_attrs(kind: OpKind, attrs: &Attrs) -> Result<()> {
    let specs = kind.attr_specs();
    for (name, value) in attrs.iter() {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let known: Vec<_> = specs.iter().map(|s| s.name).collect();
            return Err(if known.is_empty() {
                format!("{kind} takes no attributes, got `{name}`")
            } else {
                format!(
                    "unknown attribute `{name}` for {kind} (expected {})",
                    known.join(", ")
                )
            });
        };
        if value.ty() != spec.ty {
            return Err(format!(
                "attribute `{name}` of {kind} must be {}",
                spec.ty.name()
            ));
        }
        if let crate::Attr::Float(f) = value
            && !f.is_finite()
        {
            return Err(format!("attribute `{name}` must be finite, got {f}"));
        }
    }
    for spec in specs.iter().filter(|s| s.required) {
        if attrs.get(spec.name).is_none() {
            return Err(format!("{kind} needs attribute `{}`", spec.name));
        }
    }
    Ok(())
}

fn need_float(what: &str, t: &TensorType) -> Result<()> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {t}"))
    }
}

fn need_int(what: &str, t: &TensorType) -> Result<()> {
    if t.dtype.is_int() {
        Ok(())
    } else {
        Err(format!("{what} must be an integer tensor, got {t}"))
    }
}

fn need_rank(what: &str, t: &TensorType, rank: usize) -> Result<()> {
    if t.shape.rank() == rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank {rank}, got {t}"))
    }
}

fn need_min_rank(what: &str, t: &TensorType, rank: usize) -> Result<()> {
    if t.shape.rank() >= rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank at least {rank}, got {t}"))
    }
}

fn dims_eq(what: &str, a: &TensorType, b: &TensorType) -> Result<()> {
    if a.shape == b.shape {
        Ok(())
    } else {
        Err(format!("{what}: shapes differ, {a} vs {b}"))
    }
}

fn heads_divide(what: &str, heads: u64, kv_heads: u64) -> Result<()> {
    if kv_heads != 0 && heads.is_multiple_of(kv_heads) {
        Ok(())
    } else {
        Err(format!(
            "{what} has {kv_heads} heads, which does not divide the {heads} query heads"
        ))
    }
}

fn axis_of(kind: OpKind, attrs: &Attrs, t: &TensorType) -> Result<usize> {
    let axis = attrs.int("axis").unwrap_or(0);
    t.shape
        .axis(axis)
        .ok_or_else(|| format!("{kind} axis {axis} is out of range for {t}"))
}

/// Scale-grid shape of a block quantization: the last two axes divided (rounding up) by `block`.
pub fn block_scale_shape(shape: &Shape, block: &[i64]) -> Result<Vec<u64>> {
    let [br, bc] = block else {
        return Err(format!(
            "`block` must be [rows, cols], got {} values",
            block.len()
        ));
    };
    if *br <= 0 || *bc <= 0 {
        return Err(format!("`block` sizes must be positive, got [{br}, {bc}]"));
    }
    let mut dims = shape.0.clone();
    let n = dims.len();
    match n {
        0 => return Err("cannot block-quantize a scalar".into()),
        1 => dims[0] = dims[0].div_ceil(*bc as u64),
        _ => {
            dims[n - 2] = dims[n - 2].div_ceil(*br as u64);
            dims[n - 1] = dims[n - 1].div_ceil(*bc as u64);
        }
    }
    Ok(dims)
}

/// Infers the result types of `kind` applied to operands of types `ins`.
pub fn infer(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let a = kind.arity();
    if ins.len() < a.min || a.max.is_some_and(|m| ins.len() > m) {
        let want = match a.max {
            Some(m) if m == a.min => format!("{m}"),
            Some(m) => format!("{} to {m}", a.min),
            None => format!("at least {}", a.min),
        };
        return Err(format!("{kind} takes {want} operands, got {}", ins.len()));
    }
    check_attrs(kind, attrs)?;
    use OpKind::*;
    let out = match kind {
        Embedding => {
            let (ids, table) = (ins[0], ins[1]);
            need_int("ids", ids)?;
            need_float("table", table)?;
            need_rank("table", table, 2)?;
            let mut dims = ids.shape.0.clone();
            dims.push(table.shape.0[1]);
            vec![free(table.dtype, dims)]
        }
        Linear => {
            let (x, w) = (ins[0], ins[1]);
            need_float("input", x)?;
            need_float("weight", w)?;
            need_min_rank("input", x, 1)?;
            need_rank("weight", w, 2)?;
            let (n, k) = (w.shape.0[0], w.shape.0[1]);
            if x.shape.last() != k {
                return Err(format!(
                    "input {x} has {} features but weight {w} expects {k}",
                    x.shape.last()
                ));
            }
            if let Some(b) = ins.get(2) {
                need_float("bias", b)?;
                if b.shape.0 != [n] {
                    return Err(format!("bias {b} must have shape [{n}]"));
                }
            }
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank checked") = n;
            vec![free(x.dtype, dims)]
        }
        Matmul => {
            let (x, y) = (ins[0], ins[1]);
            need_float("lhs", x)?;
            need_float("rhs", y)?;
            need_min_rank("lhs", x, 2)?;
            if x.shape.rank() != y.shape.rank() {
                return Err(format!("matmul operands differ in rank: {x} vs {y}"));
            }
            let r = x.shape.rank();
            if x.shape.0[..r - 2] != y.shape.0[..r - 2] {
                return Err(format!("matmul batch dimensions differ: {x} vs {y}"));
            }
            let tb = attrs.bool("transpose_b").unwrap_or(false);
            let (yk, yn) = if tb {
                (y.shape.0[r - 1], y.shape.0[r - 2])
            } else {
                (y.shape.0[r - 2], y.shape.0[r - 1])
            };
            if x.shape.0[r - 1] != yk {
                return Err(format!(
                    "matmul contraction sizes differ: {x} vs {y} (transpose_b = {tb})"
                ));
            }
            let mut dims = x.shape.0.clone();
            dims[r - 1] = yn;
            vec![free(x.dtype, dims)]
        }
        RmsNorm => {
            let (x, w) = (ins[0], ins[1]);
            need_float("input", x)?;
            need_float("weight", w)?;
            need_min_rank("input", x, 1)?;
            if w.shape.0 != [x.shape.last()] {
                return Err(format!(
                    "weight {w} must have shape [{}] to match input {x}",
                    x.shape.last()
                ));
            }
            if attrs.float("eps").is_some_and(|e| e <= 0.0) {
                return Err("eps must be positive".into());
            }
            vec![free(x.dtype, x.shape.0.clone())]
        }
        Rope => {
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
            vec![free(x.dtype, x.shape.0.clone())]
        }
        Softmax => {
            let x = ins[0];
            need_float("input", x)?;
            axis_of(kind, attrs, x)?;
            vec![free(x.dtype, x.shape.0.clone())]
        }
        Silu => {
            need_float("input", ins[0])?;
            vec![free(ins[0].dtype, ins[0].shape.0.clone())]
        }
        Add => {
            // `add` also takes an rhs that is a trailing slice of the lhs's shape (`[.., N] +
            // [N]`): a linear's bias after its FP8 GEMM (quantize-linears), repeated per row.
            need_float("lhs", ins[0])?;
            need_float("rhs", ins[1])?;
            let (a, b) = (ins[0].shape.dims(), ins[1].shape.dims());
            if a.len() < b.len() || a[a.len() - b.len()..] != *b {
                return Err(format!(
                    "add: shapes differ, {} vs {} (the rhs may only be the lhs's trailing dims)",
                    ins[0], ins[1]
                ));
            }
            vec![free(ins[0].dtype, ins[0].shape.0.clone())]
        }
        Mul | Swiglu => {
            need_float("lhs", ins[0])?;
            need_float("rhs", ins[1])?;
            dims_eq(kind.name(), ins[0], ins[1])?;
            vec![free(ins[0].dtype, ins[0].shape.0.clone())]
        }
        AttnScores => {
            if ins.len() == 3 {
                return Err("attn_scores takes q, k or q, k, q_pe, k_pe".into());
            }
            let (q, k) = (ins[0], ins[1]);
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
            if let (Some(qp), Some(kp)) = (ins.get(2), ins.get(3)) {
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
            vec![free(DType::F32, vec![b, h, s, t])]
        }
        AttnValues => {
            let (p, v) = (ins[0], ins[1]);
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
            vec![free(v.dtype, vec![b, s, h, dv])]
        }
        MoeTopk => {
            let logits = ins[0];
            need_float("logits", logits)?;
            need_rank("logits", logits, 2)?;
            let [t, e] = logits.shape.0[..] else {
                unreachable!()
            };
            if let Some(bias) = ins.get(1) {
                need_float("bias", bias)?;
                if bias.shape.0 != [e] {
                    return Err(format!("bias {bias} must have shape [{e}]"));
                }
            }
            let top_k = attrs.int("top_k").unwrap_or(0);
            let groups = attrs.int("n_groups").unwrap_or(0);
            let topk_groups = attrs.int("topk_groups").unwrap_or(0);
            if top_k <= 0 || top_k as u64 > e {
                return Err(format!("top_k {top_k} must be in 1..={e}"));
            }
            if groups <= 0 || !e.is_multiple_of(groups as u64) {
                return Err(format!("n_groups {groups} must divide the {e} experts"));
            }
            if topk_groups <= 0 || topk_groups > groups {
                return Err(format!("topk_groups {topk_groups} must be in 1..={groups}"));
            }
            if (topk_groups as u64) * (e / groups as u64) < top_k as u64 {
                return Err(format!(
                    "{topk_groups} groups of {} experts cannot supply top_k = {top_k}",
                    e / groups as u64
                ));
            }
            match attrs.str("score_func") {
                Some("sigmoid" | "softmax") => {}
                other => {
                    return Err(format!(
                        "score_func must be \"sigmoid\" or \"softmax\", got {other:?}"
                    ));
                }
            }
            let k = top_k as u64;
            vec![fixed(DType::F32, vec![t, k]), fixed(DType::I32, vec![t, k])]
        }
        GroupedLinear => {
            if ins.len() != 3 {
                return Err("grouped_linear takes x, weight, indices".into());
            }
            let (x, w, idx) = (ins[0], ins[1], ins[2]);
            need_float("input", x)?;
            need_float("weight", w)?;
            need_int("indices", idx)?;
            need_rank("weight", w, 3)?;
            need_rank("indices", idx, 2)?;
            let [t, k] = idx.shape.0[..] else {
                unreachable!()
            };
            let (n, kk) = (w.shape.0[1], w.shape.0[2]);
            let ok = match x.shape.0[..] {
                [xt, xk] => xt == t && xk == kk,
                [xt, xs, xk] => xt == t && xs == k && xk == kk,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "input {x} must be [{t}, {kk}] or [{t}, {k}, {kk}] for weight {w} and indices {idx}"
                ));
            }
            vec![free(x.dtype, vec![t, k, n])]
        }
        MoeCombine => {
            let (y, w) = (ins[0], ins[1]);
            need_float("expert outputs", y)?;
            need_float("weights", w)?;
            need_rank("expert outputs", y, 3)?;
            if w.shape.0[..] != y.shape.0[..2] {
                return Err(format!(
                    "weights {w} must match expert outputs {y} in [T, k]"
                ));
            }
            let (t, d) = (y.shape.0[0], y.shape.0[2]);
            if let Some(s) = ins.get(2) {
                need_float("shared", s)?;
                if s.shape.0 != [t, d] {
                    return Err(format!("shared {s} must have shape [{t}, {d}]"));
                }
            }
            vec![free(y.dtype, vec![t, d])]
        }
        Cast => {
            let d = attrs.dtype("dtype").expect("checked");
            vec![fixed(d, ins[0].shape.0.clone())]
        }
        Quantize => {
            let x = ins[0];
            need_float("input", x)?;
            let d = attrs.dtype("dtype").expect("checked");
            if !d.is_fp8() {
                return Err(format!("quantize dtype must be an FP8 type, not {d}"));
            }
            if !matches!(attrs.str("scale_format"), Some("f32" | "ue8m0")) {
                return Err("scale_format must be \"f32\" or \"ue8m0\"".into());
            }
            let scale = block_scale_shape(&x.shape, attrs.ints("block").expect("checked"))?;
            vec![fixed(d, x.shape.0.clone()), fixed(DType::F32, scale)]
        }
        Dequantize => {
            let (q, s) = (ins[0], ins[1]);
            if !q.dtype.is_fp8() {
                return Err(format!("dequantize input must be FP8, got {q}"));
            }
            let want = block_scale_shape(&q.shape, attrs.ints("block").expect("checked"))?;
            if s.dtype != DType::F32 || s.shape.0 != want {
                return Err(format!("scales {s} must be f32{}", Shape(want)));
            }
            let d = attrs.dtype("dtype").expect("checked");
            vec![fixed(d, q.shape.0.clone())]
        }
        Reshape => {
            let x = ins[0];
            let dims = attrs.ints("shape").expect("checked");
            if dims.iter().any(|&d| d <= 0) {
                return Err(format!("reshape sizes must be positive, got {dims:?}"));
            }
            let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
            let target = Shape(dims.clone());
            if target.checked_numel() != x.shape.checked_numel() {
                return Err(format!(
                    "cannot reshape {x} to {target}: element counts differ"
                ));
            }
            vec![fixed(x.dtype, dims)]
        }
        Transpose => {
            let x = ins[0];
            let perm = attrs.ints("perm").expect("checked");
            let r = x.shape.rank();
            let mut seen = vec![false; r];
            let valid = perm.len() == r
                && perm.iter().all(|&p| {
                    (0..r as i64).contains(&p) && !std::mem::replace(&mut seen[p as usize], true)
                });
            if !valid {
                return Err(format!(
                    "perm {perm:?} is not a permutation of the axes of {x}"
                ));
            }
            let dims = perm.iter().map(|&p| x.shape.0[p as usize]).collect();
            vec![fixed(x.dtype, dims)]
        }
        Slice => {
            let x = ins[0];
            let axis = axis_of(kind, attrs, x)?;
            let (start, end) = (
                attrs.int("start").unwrap_or(0),
                attrs.int("end").unwrap_or(0),
            );
            let len = x.shape.0[axis] as i64;
            if start < 0 || end <= start || end > len {
                return Err(format!(
                    "slice {start}..{end} is out of range for axis {axis} of {x}"
                ));
            }
            let mut dims = x.shape.0.clone();
            dims[axis] = (end - start) as u64;
            vec![fixed(x.dtype, dims)]
        }
        Fp8Partials | Promote | Fp8Gemm | RmsNormQuant | SwigluQuant => {
            fp8::infer(kind, attrs, ins)?
        }
        Concat => {
            let first = ins[0];
            let axis = axis_of(kind, attrs, first)?;
            let mut dims = first.shape.0.clone();
            for t in &ins[1..] {
                let same_rest = t.shape.rank() == first.shape.rank()
                    && (0..dims.len()).all(|i| i == axis || t.shape.0[i] == first.shape.0[i]);
                if !same_rest || t.dtype != first.dtype {
                    return Err(format!(
                        "concat operands {first} and {t} must agree in dtype and in every axis but {axis}"
                    ));
                }
                dims[axis] += t.shape.0[axis];
            }
            vec![fixed(first.dtype, dims)]
        }
    };
    for r in &out {
        if r.shape.checked_numel().is_none() {
            return Err(format!(
                "result shape {} has more than 2^48 elements",
                r.shape
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: &[u64], b: &[u64]) -> Result<Vec<Inferred>> {
        let (a, b) = (
            TensorType::new(DType::Bf16, a.to_vec()),
            TensorType::new(DType::Bf16, b.to_vec()),
        );
        infer(OpKind::Add, &Attrs::new(), &[&a, &b])
    }

    #[test]
    fn add_broadcasts_a_trailing_rhs_only() {
        for (a, b) in [
            (&[2, 3, 8][..], &[2, 3, 8][..]),
            (&[2, 3, 8], &[8]),
            (&[2, 3, 8], &[3, 8]),
        ] {
            let r = add(a, b).unwrap();
            assert_eq!(r[0].shape.dims(), a, "{a:?} + {b:?}");
        }
        for (a, b) in [
            (&[2, 3, 8][..], &[3][..]),
            (&[8], &[2, 8]),
            (&[2, 8], &[2, 1]),
        ] {
            let e = add(a, b).unwrap_err();
            assert!(e.contains("trailing dims"), "{a:?} + {b:?}: {e}");
        }
        // `mul` stays strict.
        let (x, y) = (
            TensorType::new(DType::Bf16, vec![2, 8]),
            TensorType::new(DType::Bf16, vec![8]),
        );
        assert!(infer(OpKind::Mul, &Attrs::new(), &[&x, &y]).is_err());
    }
}
