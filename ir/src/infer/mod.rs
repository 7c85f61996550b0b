//! Type inference per op kind: checks arity, attributes and operand types, and derives result
//! shapes (and the dtypes that are fixed by the kind). The builder, the parser's verifier and
//! the `infer-shapes` pass all use it, so the rules exist once.
//!
//! This file checks arity and attributes and dispatches on the kind; the rules themselves are
//! grouped by op family: `linear` (dense GEMMs), `norm`, `elementwise`, `attention` (with RoPE),
//! `moe`, `quantize`, `data_movement` and `fp8` (the kinds the FP8 passes introduce).

use crate::attr::Attrs;
use crate::{DType, OpKind, Shape, TensorType};

mod attention;
mod data_movement;
mod elementwise;
mod fp8;
mod fused_attention;
mod linear;
mod moe;
mod norm;
mod quantize;
mod training;
mod window;

pub use fp8::{W_ROW_TILES, X_SQUARE_BLOCKS};
pub use fused_attention::{ATTENTION_WINDOWS, K_COLS, Q_COLS, V_COLS, attention_window_type};
pub use linear::{DY_SCALE_FORMAT, LINEAR_GEMMS, W_SCALE_FORMAT, X_CACHE, X_SCALE_FORMAT};
pub use training::{WGRAD_INTERVAL, WGRAD_TILE};
pub use window::{X_COLS, X_WINDOWED, window_type, x_window_type};

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

/// Checks `attrs` against the kind's signature: required present, types right, none unknown.
fn check_attrs(kind: OpKind, attrs: &Attrs) -> Result<()> {
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

/// Names the operand types of a kind whose count `infer` has checked against its layout.
fn named<V>(view: std::result::Result<V, crate::OperandError>) -> Result<V> {
    view.map_err(|e| e.to_string())
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

/// Adds the results of an op of `kind` over `operands` to `graph`, named `names` (one per
/// result) and typed by [`infer`] (default dtypes where inference leaves a choice).
pub fn add_inferred_results<N: Into<String>>(
    graph: &mut crate::Graph,
    kind: OpKind,
    attrs: &Attrs,
    operands: &[crate::ValueId],
    names: impl IntoIterator<Item = N>,
) -> Result<Vec<crate::ValueId>> {
    let ins: Vec<&TensorType> = operands.iter().map(|&v| graph.ty(v)).collect();
    let inferred = infer(kind, attrs, &ins)?;
    Ok(inferred
        .into_iter()
        .zip(names)
        .map(|(inf, name)| {
            let ty = TensorType {
                dtype: inf.dtype.default_dtype(),
                shape: inf.shape,
            };
            graph.add_value(name, ty)
        })
        .collect())
}

/// Infers the result types of `kind` applied to operands of types `ins`.
pub fn infer(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let a = kind.arity();
    if let Some(layout) = kind.operand_layout() {
        // Named operands: the layout says which counts fit and names them in the error.
        layout.check(ins.len()).map_err(|e| e.to_string())?;
    } else if ins.len() < a.min || a.max.is_some_and(|m| ins.len() > m) {
        let want = match a.max {
            Some(m) if m == a.min => format!("{m}"),
            Some(m) => format!("{} to {m}", a.min),
            None => format!("at least {}", a.min),
        };
        return Err(format!("{kind} takes {want} operands, got {}", ins.len()));
    }
    check_attrs(kind, attrs)?;
    // A rope or norm reading a column window of its x (`x_cols`) is typed as over the window;
    // the kinds sharing their attribute lists (rope_grad, add_rms_norm_quant) read none.
    let x_window;
    let mut ins = ins.to_vec();
    if attrs.get(X_COLS).is_some() {
        if !X_WINDOWED.contains(&kind) {
            return Err(format!("{kind} reads no column window (`{X_COLS}`)"));
        }
        if let Some(x) = ins.first_mut() {
            x_window = x_window_type(attrs, x)?;
            *x = &x_window;
        }
    }
    let ins = &ins[..];
    use OpKind::*;
    let out = match kind {
        Embedding => data_movement::embedding(ins)?,
        Linear => linear::linear(attrs, ins)?,
        Matmul => linear::matmul(attrs, ins)?,
        RmsNorm => norm::rms_norm(attrs, ins)?,
        AddRmsNorm | AddRmsNormQuant => norm::add_rms_norm(kind, attrs, ins)?,
        Rope => attention::rope(attrs, ins)?,
        Softmax => norm::softmax(kind, attrs, ins)?,
        Silu => elementwise::silu(ins)?,
        Add => elementwise::add(ins)?,
        Mul | Swiglu => elementwise::binary(kind, ins)?,
        AttnScores => attention::attn_scores(attrs, ins)?,
        AttnValues => attention::attn_values(ins)?,
        Attention => fused_attention::attention(attrs, ins)?,
        AttentionQuant => fused_attention::attention_quant(attrs, ins)?,
        MoeTopk => moe::moe_topk(attrs, ins)?,
        GroupedLinear => {
            linear::check_recipe_attrs(attrs)?;
            moe::grouped_linear(ins)?
        }
        MoeCombine => moe::moe_combine(ins)?,
        Cast => elementwise::cast(attrs, ins)?,
        Quantize => quantize::quantize(attrs, ins)?,
        Dequantize => quantize::dequantize(attrs, ins)?,
        Reshape => data_movement::reshape(attrs, ins)?,
        Transpose => data_movement::transpose(attrs, ins)?,
        Slice => data_movement::slice(kind, attrs, ins)?,
        Fp8Partials | Promote | Fp8Gemm | RmsNormQuant | SwigluQuant => {
            fp8::infer(kind, attrs, ins)?
        }
        Concat => data_movement::concat(kind, attrs, ins)?,
        CrossEntropy => training::cross_entropy(ins)?,
        CrossEntropyGrad => training::cross_entropy_grad(ins)?,
        RmsNormGrad => training::rms_norm_grad(attrs, ins)?,
        SoftmaxGrad | SiluGrad => training::binary_grad(kind, attrs, ins)?,
        SwigluGrad => training::swiglu_grad(ins)?,
        RopeGrad => {
            attention::rope(attrs, ins)?;
            training::same_shape(ins)?
        }
        EmbeddingGrad => training::embedding_grad(attrs, ins)?,
        ReduceSum => training::reduce_sum(attrs, ins)?,
        Scale => training::same_shape(ins)?,
        GlobalNorm => training::global_norm(ins)?,
        AdamW => training::adamw(attrs, ins)?,
        Pad => training::pad(kind, attrs, ins)?,
        GroupedLinearWgrad => training::grouped_linear_wgrad(attrs, ins)?,
        MoeCombineGrad => training::moe_combine_grad(ins)?,
        MoeTopkGrad => training::moe_topk_grad(attrs, ins)?,
        ExpertBiasUpdate => training::expert_bias_update(attrs, ins)?,
        BalanceLoss => training::balance_loss(attrs, ins, false)?,
        BalanceLossGrad => training::balance_loss(attrs, ins, true)?,
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
