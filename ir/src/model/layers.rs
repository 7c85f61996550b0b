//! Building blocks the presets share: parameters in the `high` dtype named as Hugging Face
//! names them, and the ops (linear, rms_norm, SwiGLU MLP, …) written once.
//!
//! Op names are HF module paths (`model.layers.3.mlp.gate_proj`) so precision overrides can
//! glob them; a linear's weight is its op name plus `.weight`, as in HF checkpoints. Pure
//! data-movement ops (reshape, slice) get their kind's default role, as in the explicit form:
//! roles describe computation, and moving data computes nothing.

use super::ModelError;
use super::rope::RopeScaling;
use super::toml::Table;
use crate::rope_scaling::{RopeStyle, attr};
use crate::{Attr, Attrs, BuildError, DType, GraphBuilder, OpKind, Role, TensorType, ValueId};

/// A graph under construction for a preset, reporting failures at the `[model]` table.
pub struct Net<'t, 'a> {
    pub b: GraphBuilder,
    /// The dtype of weights and activations (the policy's `high`).
    pub high: DType,
    model: &'t Table<'a>,
}

impl<'t, 'a> Net<'t, 'a> {
    /// Starts graph `name`; errors point at `model`.
    pub fn new(name: &str, high: DType, model: &'t Table<'a>) -> Self {
        Net {
            b: GraphBuilder::new(name),
            high,
            model,
        }
    }

    /// Validation runs before building, so a build error is a gap in it; it still becomes an
    /// error rather than a panic.
    pub fn fail(&self, e: BuildError) -> ModelError {
        self.model
            .error(self.model.at(), format!("cannot build the model: {e}"))
    }

    /// A parameter of the given dtype; too-large shapes are errors (the sizes were checked).
    pub fn param_of(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[u64],
    ) -> Result<ValueId, ModelError> {
        let ty = TensorType::new(dtype, dims);
        if ty.shape.checked_numel().is_none() {
            return Err(self.model.error(
                self.model.at(),
                format!("parameter `{name}` {ty} has more than 2^48 elements"),
            ));
        }
        self.b.param(name, ty).map_err(|e| self.fail(e))
    }

    /// A parameter in the `high` dtype.
    pub fn param(&mut self, name: &str, dims: &[u64]) -> Result<ValueId, ModelError> {
        self.param_of(name, self.high, dims)
    }

    /// Appends an op with the kind's natural result dtypes.
    pub fn op(
        &mut self,
        kind: OpKind,
        name: &str,
        role: Role,
        operands: &[ValueId],
        attrs: Attrs,
    ) -> Result<ValueId, ModelError> {
        self.b
            .op(kind, name, role, operands, attrs, None)
            .map_err(|e| self.fail(e))
    }

    /// `x · wᵀ` with weight `weight` `[out, in]` in the high dtype; `dtype` overrides the result's.
    pub fn linear_with(
        &mut self,
        name: &str,
        weight: &str,
        role: Role,
        x: ValueId,
        out: u64,
        dtype: Option<DType>,
    ) -> Result<ValueId, ModelError> {
        let k = self.b.graph().ty(x).shape.last();
        let w = self.param(weight, &[out, k])?;
        self.b
            .op(OpKind::Linear, name, role, &[x, w], Attrs::new(), dtype)
            .map_err(|e| self.fail(e))
    }

    /// `x · wᵀ` with weight `{name}.weight` `[out, in]`.
    pub fn linear(
        &mut self,
        name: &str,
        role: Role,
        x: ValueId,
        out: u64,
    ) -> Result<ValueId, ModelError> {
        self.linear_with(name, &format!("{name}.weight"), role, x, out, None)
    }

    /// `x · wᵀ + b` with weight `{name}.weight` `[out, in]` and bias `{name}.bias` `[out]`, both
    /// in the high dtype (an FP8 GEMM quantizes the weight only; the bias stays high).
    pub fn linear_biased(
        &mut self,
        name: &str,
        role: Role,
        x: ValueId,
        out: u64,
    ) -> Result<ValueId, ModelError> {
        let k = self.b.graph().ty(x).shape.last();
        let w = self.param(&format!("{name}.weight"), &[out, k])?;
        let bias = self.param(&format!("{name}.bias"), &[out])?;
        self.op(OpKind::Linear, name, role, &[x, w, bias], Attrs::new())
    }

    /// RMS norm over the last axis with weight `{name}.weight`.
    pub fn rms_norm(&mut self, name: &str, x: ValueId, eps: f64) -> Result<ValueId, ModelError> {
        let d = self.b.graph().ty(x).shape.last();
        let w = self.param(&format!("{name}.weight"), &[d])?;
        let attrs = Attrs::new().with("eps", Attr::Float(eps));
        self.op(OpKind::RmsNorm, name, Role::Norm, &[x, w], attrs)
    }

    /// Reshape to `dims`.
    pub fn reshape(&mut self, name: &str, x: ValueId, dims: &[u64]) -> Result<ValueId, ModelError> {
        // Sizes were checked against 2^48, so they fit in i64.
        let dims = dims.iter().map(|&d| d as i64).collect();
        let attrs = Attrs::new().with("shape", Attr::Ints(dims));
        self.op(
            OpKind::Reshape,
            name,
            OpKind::Reshape.default_role(),
            &[x],
            attrs,
        )
    }

    /// Elements `start..end` along `axis`.
    pub fn slice(
        &mut self,
        name: &str,
        x: ValueId,
        axis: i64,
        start: u64,
        end: u64,
    ) -> Result<ValueId, ModelError> {
        let attrs = Attrs::new()
            .with("axis", Attr::Int(axis))
            .with("start", Attr::Int(start as i64))
            .with("end", Attr::Int(end as i64));
        self.op(
            OpKind::Slice,
            name,
            OpKind::Slice.default_role(),
            &[x],
            attrs,
        )
    }

    /// Rotary embedding of `[B, S, H, d]` in `style` (`interleaved` or `half`), with the
    /// model's `[model.rope_scaling]` if it has one.
    pub fn rope(
        &mut self,
        name: &str,
        x: ValueId,
        style: RopeStyle,
        theta: f64,
        scaling: Option<&RopeScaling>,
    ) -> Result<ValueId, ModelError> {
        let mut attrs = Attrs::new()
            .with(attr::STYLE, Attr::Str(style.name().into()))
            .with(attr::THETA, Attr::Float(theta));
        if let Some(s) = scaling {
            attrs = s.add_attrs(attrs);
        }
        self.op(OpKind::Rope, name, Role::Attention, &[x], attrs)
    }

    /// `scores → softmax → · v`: causal attention core, returning `[B, S, H, Dv]`.
    pub fn attention(
        &mut self,
        prefix: &str,
        qk: &[ValueId],
        v: ValueId,
        scale: f64,
    ) -> Result<ValueId, ModelError> {
        let attrs = Attrs::new()
            .with("scale", Attr::Float(scale))
            .with("causal", Attr::Bool(true));
        let scores = self.op(
            OpKind::AttnScores,
            &format!("{prefix}.scores"),
            Role::Attention,
            qk,
            attrs,
        )?;
        let attrs = Attrs::new().with("axis", Attr::Int(-1));
        let probs = self.op(
            OpKind::Softmax,
            &format!("{prefix}.probs"),
            Role::Attention,
            &[scores],
            attrs,
        )?;
        self.op(
            OpKind::AttnValues,
            &format!("{prefix}.attn_output"),
            Role::Attention,
            &[probs, v],
            Attrs::new(),
        )
    }

    /// `down(swiglu(gate(x), up(x)))` of width `inter` with HF names under `prefix`.
    pub fn mlp(
        &mut self,
        prefix: &str,
        role: Role,
        x: ValueId,
        inter: u64,
    ) -> Result<ValueId, ModelError> {
        let d = self.b.graph().ty(x).shape.last();
        let gate = self.linear(&format!("{prefix}.gate_proj"), role, x, inter)?;
        let up = self.linear(&format!("{prefix}.up_proj"), role, x, inter)?;
        let act = self.op(
            OpKind::Swiglu,
            &format!("{prefix}.act"),
            role,
            &[gate, up],
            Attrs::new(),
        )?;
        self.linear(&format!("{prefix}.down_proj"), role, act, d)
    }

    /// `x + y`, the residual connection.
    pub fn residual(&mut self, name: &str, x: ValueId, y: ValueId) -> Result<ValueId, ModelError> {
        self.op(OpKind::Add, name, Role::Residual, &[x, y], Attrs::new())
    }

    /// The model's input `input_ids` i32 `[batch, seq_len]` and its embedding.
    pub fn embed(
        &mut self,
        batch: u64,
        seq: u64,
        vocab: u64,
        dim: u64,
    ) -> Result<ValueId, ModelError> {
        let ids = self
            .b
            .input("input_ids", TensorType::new(DType::I32, [batch, seq]))
            .map_err(|e| self.fail(e))?;
        let table = self.param("model.embed_tokens.weight", &[vocab, dim])?;
        self.op(
            OpKind::Embedding,
            "model.embed_tokens",
            Role::Embedding,
            &[ids, table],
            Attrs::new(),
        )
    }

    /// The final norm and the head `logits` (weight `head_weight`), the single output.
    pub fn head(
        &mut self,
        x: ValueId,
        eps: f64,
        vocab: u64,
        head_weight: &str,
    ) -> Result<(), ModelError> {
        let h = self.rms_norm("model.norm", x, eps)?;
        let logits = self.linear_with("logits", head_weight, Role::Head, h, vocab, None)?;
        self.b.output(logits);
        Ok(())
    }
}
