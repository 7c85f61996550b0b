//! Named operands per op kind, the one definition of each kind's operand layout (as MLIR's ODS
//! declares an op's operands once and generates their accessors).
//!
//! A layout is the required operands in order, then optional ones, present all together or
//! not at all (`attention`'s `q_pe, k_pe`). Each view is generic over what it names: an op's
//! [`ValueId`]s (`op.linear_operands()`), their types (the type rules in `infer`) or the
//! tensors a backend reads (`LinearOperands::from_slice(ins)`). The operand count of these
//! kinds ([`OpKind::arity`]) and the type rules' count check come from the same layout.

use crate::op::Arity;
use crate::{Op, OpKind, ValueId};
use std::fmt;

/// The operand layout of one op kind: its required operands, then its optional ones.
#[derive(Debug, PartialEq, Eq)]
pub struct OperandLayout {
    /// The kind it belongs to.
    pub kind: OpKind,
    /// The operands every op of the kind has, in order.
    pub required: &'static [&'static str],
    /// The operands after them, all present or all absent.
    pub optional: &'static [&'static str],
}

impl OperandLayout {
    /// True when `count` operands fit the layout (with or without the optional ones).
    pub fn accepts(&self, count: usize) -> bool {
        count == self.required.len()
            || (!self.optional.is_empty() && count == self.required.len() + self.optional.len())
    }

    /// The operand count bounds the layout allows.
    pub fn arity(&self) -> Arity {
        Arity {
            min: self.required.len(),
            max: Some(self.required.len() + self.optional.len()),
        }
    }

    /// `Ok` when `count` operands fit, else the error naming the layout.
    pub fn check(&'static self, count: usize) -> Result<(), OperandError> {
        if self.accepts(count) {
            Ok(())
        } else {
            Err(OperandError::Count {
                layout: self,
                got: count,
            })
        }
    }
}

impl fmt::Display for OperandLayout {
    /// `linear takes x, w or x, w, bias`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} takes {}", self.kind, self.required.join(", "))?;
        if !self.optional.is_empty() {
            let all: Vec<_> = self.required.iter().chain(self.optional).copied().collect();
            write!(f, " or {}", all.join(", "))?;
        }
        Ok(())
    }
}

/// Why operands could not be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperandError {
    /// The op is of another kind than the view's.
    #[error("expected an op of kind `{expected}`, got `{found}`")]
    Kind {
        /// The view's kind.
        expected: OpKind,
        /// The op's kind.
        found: OpKind,
    },
    /// The operand count fits none of the kind's layouts.
    #[error("{layout}, got {got} operand{}", if *got == 1 { "" } else { "s" })]
    Count {
        /// The kind's layout.
        layout: &'static OperandLayout,
        /// The operand count found.
        got: usize,
    },
}

/// Declares each view: its struct, `from_slice`, `map`, `to_vec`, the `Op` accessor and the
/// kind's entry in [`OpKind::operand_layout`].
macro_rules! operand_views {
    ($(
        $(#[$doc:meta])*
        $kind:ident => $view:ident, $method:ident {
            $( $(#[$rdoc:meta])* $req:ident ),+
            $( ; $( $(#[$odoc:meta])* $opt:ident ),+ )?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $view<T = ValueId> {
                $( $(#[$rdoc])* pub $req: T, )+
                $( $( $(#[$odoc])* pub $opt: Option<T>, )+ )?
            }

            impl<T: Copy> $view<T> {
                /// The kind's operand layout.
                pub const LAYOUT: &'static OperandLayout = &OperandLayout {
                    kind: OpKind::$kind,
                    required: &[$(stringify!($req)),+],
                    optional: &[$($(stringify!($opt)),+)?],
                };

                /// Names `operands` (an op's values, their types or tensors, in operand order).
                pub fn from_slice(operands: &[T]) -> Result<Self, OperandError> {
                    Self::LAYOUT.check(operands.len())?;
                    #[allow(unused_variables)]
                    let full = operands.len() > Self::LAYOUT.required.len();
                    // Fields are initialized in the order written: the operands' order.
                    let mut it = operands.iter().copied();
                    Ok(Self {
                        $( $req: it.next().expect("count checked"), )+
                        $( $( $opt: if full { it.next() } else { None }, )+ )?
                    })
                }

                /// The same view with each operand mapped by `f`, in operand order.
                pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> $view<U> {
                    $view {
                        $( $req: f(self.$req), )+
                        $( $( $opt: self.$opt.map(&mut f), )+ )?
                    }
                }

                /// The operands in order, the optional ones when present.
                pub fn to_vec(self) -> Vec<T> {
                    #[allow(unused_mut)]
                    let mut all = vec![$(self.$req),+];
                    $( all.extend([$(self.$opt),+].into_iter().flatten()); )?
                    all
                }
            }

            impl $view<usize> {
                /// Each operand's position among `count` operands (for arrays parallel to
                /// the operands, such as their gradients).
                pub fn positions(count: usize) -> Result<Self, OperandError> {
                    Self::from_slice(&(0..count).collect::<Vec<_>>())
                }
            }
        )*

        impl Op {
            $(
                #[doc = concat!("The named operands of a `", stringify!($kind), "` op; an error for another kind or a wrong count.")]
                pub fn $method(&self) -> Result<$view, OperandError> {
                    if self.kind != OpKind::$kind {
                        return Err(OperandError::Kind {
                            expected: OpKind::$kind,
                            found: self.kind,
                        });
                    }
                    $view::from_slice(&self.operands)
                }
            )*
        }

        impl OpKind {
            /// The kind's named operand layout, `None` for kinds without one (unary,
            /// elementwise and variadic kinds, whose operands are all alike).
            pub fn operand_layout(self) -> Option<&'static OperandLayout> {
                match self {
                    $( OpKind::$kind => Some($view::<ValueId>::LAYOUT), )*
                    _ => None,
                }
            }
        }
    };
}

operand_views! {
    /// `embedding(ids, table)`.
    Embedding => EmbeddingOperands, embedding_operands {
        /// Token ids `[*]` (integer).
        ids,
        /// The table `[V, D]`.
        table
    }
    /// `linear(x, w[, bias])`: `x · wᵀ (+ bias)`.
    Linear => LinearOperands, linear_operands {
        /// The activation `[*, K]`.
        x,
        /// The weight `[N, K]`.
        w;
        /// The bias `[N]`.
        bias
    }
    /// `grouped_linear(x, w, indices)`: each token's rows through its experts.
    GroupedLinear => GroupedLinearOperands, grouped_linear_operands {
        /// The activation `[T, K]` or `[T, k, K]`.
        x,
        /// The experts' weights `[E, N, K]`.
        w,
        /// The chosen experts `[T, k]` (integer).
        indices
    }
    /// `attn_scores(q, k[, q_pe, k_pe])`.
    AttnScores => AttnScoresOperands, attn_scores_operands {
        /// Queries `[B, S, H, D]`.
        q,
        /// Keys `[B, T, Hk, D]`.
        k;
        /// The queries' decoupled RoPE part `[B, S, H, R]`.
        q_pe,
        /// The keys' decoupled RoPE part `[B, T, Hr, R]`.
        k_pe
    }
    /// `attn_values(p, v)`.
    AttnValues => AttnValuesOperands, attn_values_operands {
        /// Probabilities `[B, H, S, T]`.
        p,
        /// Values `[B, T, Hv, Dv]`.
        v
    }
    /// `attention(q, k, v[, q_pe, k_pe])`: the fused score, softmax and value product.
    Attention => AttentionOperands, attention_operands {
        /// Queries `[B, S, H, D]`.
        q,
        /// Keys `[B, T, Hk, D]`.
        k,
        /// Values `[B, T, Hv, Dv]`.
        v;
        /// The queries' decoupled RoPE part `[B, S, H, R]`.
        q_pe,
        /// The keys' decoupled RoPE part `[B, T, Hr, R]`.
        k_pe
    }
    /// `attention_quant(q, k, v[, q_pe, k_pe])`: `attention`'s operands.
    AttentionQuant => AttentionQuantOperands, attention_quant_operands {
        /// Queries `[B, S, H, D]`.
        q,
        /// Keys `[B, T, Hk, D]`.
        k,
        /// Values `[B, T, Hv, Dv]`.
        v;
        /// The queries' decoupled RoPE part `[B, S, H, R]`.
        q_pe,
        /// The keys' decoupled RoPE part `[B, T, Hr, R]`.
        k_pe
    }
    /// `moe_topk(logits[, bias])`.
    MoeTopk => MoeTopkOperands, moe_topk_operands {
        /// Gate logits `[T, E]`.
        logits;
        /// The selection bias `[E]` (`e_score_correction_bias`).
        bias
    }
    /// `moe_combine(y, weights[, shared])`.
    MoeCombine => MoeCombineOperands, moe_combine_operands {
        /// The experts' outputs `[T, k, D]`.
        y,
        /// The routing weights `[T, k]`.
        weights;
        /// The shared experts' output `[T, D]`, added as it is.
        shared
    }
    /// `dequantize(codes, scales)`.
    Dequantize => DequantizeOperands, dequantize_operands {
        /// FP8 codes.
        codes,
        /// Their f32 block scales.
        scales
    }
    /// `fp8_partials(x, w[, indices])`: dense, or grouped with the indices.
    Fp8Partials => Fp8PartialsOperands, fp8_partials_operands {
        /// Activation codes `[*, K]`.
        x,
        /// Weight codes `[N, K]`, or `[E, N, K]` when grouped.
        w;
        /// The chosen experts `[T, k]` of a grouped GEMM.
        indices
    }
    /// `promote(partials, x_scale, w_scale[, indices])`: dense, or grouped with the indices.
    Promote => PromoteOperands, promote_operands {
        /// The f32 partial sums `[*, N, groups]`.
        partials,
        /// The activation scales.
        x_scale,
        /// The weight scales.
        w_scale;
        /// The chosen experts `[T, k]` of a grouped GEMM.
        indices
    }
    /// `fp8_gemm(x, x_scale, w, w_scale[, indices])`: dense, or grouped with the indices.
    Fp8Gemm => Fp8GemmOperands, fp8_gemm_operands {
        /// Activation codes `[*, K]`.
        x,
        /// The activation scales.
        x_scale,
        /// Weight codes `[N, K]`, or `[E, N, K]` when grouped.
        w,
        /// The weight scales.
        w_scale;
        /// The chosen experts `[T, k]` of a grouped GEMM.
        indices
    }
    /// `add_rms_norm(x, residual, w)`.
    AddRmsNorm => AddRmsNormOperands, add_rms_norm_operands {
        /// The add's first operand.
        x,
        /// The add's second operand (the residual stream).
        residual,
        /// The norm's weight `[D]`.
        w
    }
    /// `add_rms_norm_quant(x, residual, w)`.
    AddRmsNormQuant => AddRmsNormQuantOperands, add_rms_norm_quant_operands {
        /// The add's first operand.
        x,
        /// The add's second operand (the residual stream).
        residual,
        /// The norm's weight `[D]`.
        w
    }
    /// `rms_norm_grad(x, w, dy)`.
    RmsNormGrad => RmsNormGradOperands, rms_norm_grad_operands {
        /// The forward's input.
        x,
        /// The norm's weight `[D]`.
        w,
        /// The result's cotangent.
        dy
    }
    /// `adamw(param, grad, m, v, norm, schedule)`.
    AdamW => AdamWOperands, adamw_operands {
        /// The parameter.
        param,
        /// Its gradient.
        grad,
        /// The first moment.
        m,
        /// The second moment.
        v,
        /// The gradients' global norm f32 `[1]`.
        norm,
        /// f32 `[2]`: (learning rate, step).
        schedule
    }
    /// `grouped_linear_wgrad(dy, x, indices)`.
    GroupedLinearWgrad => GroupedLinearWgradOperands, grouped_linear_wgrad_operands {
        /// The output's cotangent `[T, k, N]`.
        dy,
        /// The forward's activation `[T, K]` or `[T, k, K]`.
        x,
        /// The chosen experts `[T, k]`.
        indices
    }
    /// `moe_combine_grad(y, weights, dout)`.
    MoeCombineGrad => MoeCombineGradOperands, moe_combine_grad_operands {
        /// The experts' outputs `[T, k, D]`.
        y,
        /// The routing weights `[T, k]`.
        weights,
        /// The combination's cotangent `[T, D]`.
        dout
    }
    /// `moe_topk_grad(logits, indices, dweights)`.
    MoeTopkGrad => MoeTopkGradOperands, moe_topk_grad_operands {
        /// Gate logits `[T, E]`.
        logits,
        /// The chosen experts `[T, k]`.
        indices,
        /// The routing weights' cotangent `[T, k]`.
        dweights
    }
    /// `expert_bias_update(bias, indices)`.
    ExpertBiasUpdate => ExpertBiasUpdateOperands, expert_bias_update_operands {
        /// The selection bias `[E]`.
        bias,
        /// The chosen experts `[T, k]`.
        indices
    }
    /// `balance_loss(logits, indices)`.
    BalanceLoss => BalanceLossOperands, balance_loss_operands {
        /// Gate logits `[T, E]`.
        logits,
        /// The chosen experts `[T, k]`.
        indices
    }
    /// `balance_loss_grad(logits, indices, dloss)`.
    BalanceLossGrad => BalanceLossGradOperands, balance_loss_grad_operands {
        /// Gate logits `[T, E]`.
        logits,
        /// The chosen experts `[T, k]`.
        indices,
        /// The loss's cotangent `[1]`.
        dloss
    }
}

impl<T: Copy> AttentionOperands<T> {
    /// The score side, `attn_scores`' operands: q, k and the optional q_pe, k_pe.
    pub fn scores(self) -> AttnScoresOperands<T> {
        AttnScoresOperands {
            q: self.q,
            k: self.k,
            q_pe: self.q_pe,
            k_pe: self.k_pe,
        }
    }
}

impl<T: Copy> AttnScoresOperands<T> {
    /// The decoupled RoPE pair `(q_pe, k_pe)`, when present.
    pub fn pe(self) -> Option<(T, T)> {
        self.q_pe.zip(self.k_pe)
    }
}

impl<T: Copy> From<AttentionQuantOperands<T>> for AttentionOperands<T> {
    fn from(o: AttentionQuantOperands<T>) -> Self {
        AttentionOperands {
            q: o.q,
            k: o.k,
            v: o.v,
            q_pe: o.q_pe,
            k_pe: o.k_pe,
        }
    }
}

impl Op {
    /// The operands of a fused attention, `attention` or `attention_quant` (same layout); an
    /// error for another kind or a wrong count.
    pub fn fused_attention_operands(&self) -> Result<AttentionOperands, OperandError> {
        match self.kind {
            OpKind::AttentionQuant => self.attention_quant_operands().map(Into::into),
            _ => self.attention_operands(),
        }
    }

    /// The score side of an `attn_scores`, `attention` or `attention_quant` op (q, k and the
    /// optional q_pe, k_pe); an error for another kind or a wrong count.
    pub fn score_operands(&self) -> Result<AttnScoresOperands, OperandError> {
        match self.kind {
            OpKind::Attention | OpKind::AttentionQuant => self
                .fused_attention_operands()
                .map(AttentionOperands::scores),
            _ => self.attn_scores_operands(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attrs, Role};

    fn op(kind: OpKind, n: u32) -> Op {
        Op {
            kind,
            operands: (0..n).map(ValueId).collect(),
            results: vec![ValueId(100)],
            attrs: Attrs::new(),
            role: Role::Other,
            precision: None,
        }
    }

    #[test]
    fn a_linear_names_its_bias_when_present() {
        let o = op(OpKind::Linear, 2).linear_operands().unwrap();
        assert_eq!((o.x, o.w, o.bias), (ValueId(0), ValueId(1), None));
        let o = op(OpKind::Linear, 3).linear_operands().unwrap();
        assert_eq!(o.bias, Some(ValueId(2)));
        assert_eq!(o.to_vec(), (0..3).map(ValueId).collect::<Vec<_>>());
    }

    #[test]
    fn an_fp8_gemm_is_grouped_with_its_fifth_operand() {
        let o = op(OpKind::Fp8Gemm, 4).fp8_gemm_operands().unwrap();
        assert_eq!(
            (o.x, o.x_scale, o.w, o.w_scale, o.indices),
            (ValueId(0), ValueId(1), ValueId(2), ValueId(3), None)
        );
        let o = op(OpKind::Fp8Gemm, 5).fp8_gemm_operands().unwrap();
        assert_eq!(o.indices, Some(ValueId(4)));
        let p = op(OpKind::Promote, 4).promote_operands().unwrap();
        assert_eq!((p.w_scale, p.indices), (ValueId(2), Some(ValueId(3))));
    }

    #[test]
    fn attention_names_its_rope_pair_after_v() {
        let o = op(OpKind::Attention, 5).attention_operands().unwrap();
        assert_eq!(
            (o.v, o.q_pe, o.k_pe),
            (ValueId(2), Some(ValueId(3)), Some(ValueId(4)))
        );
        let s = op(OpKind::Attention, 5).score_operands().unwrap();
        assert_eq!(s.pe(), Some((ValueId(3), ValueId(4))));
        let s = op(OpKind::AttnScores, 4).score_operands().unwrap();
        assert_eq!((s.k, s.pe()), (ValueId(1), Some((ValueId(2), ValueId(3)))));
        assert_eq!(
            op(OpKind::AttnScores, 2).score_operands().unwrap().pe(),
            None
        );
    }

    #[test]
    fn another_kind_is_an_error_naming_both() {
        let e = op(OpKind::Add, 2).linear_operands().unwrap_err();
        assert_eq!(e.to_string(), "expected an op of kind `linear`, got `add`");
        let e = op(OpKind::Matmul, 2).score_operands().unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected an op of kind `attn_scores`, got `matmul`"
        );
    }

    #[test]
    fn a_wrong_count_is_an_error_naming_the_layout() {
        let e = op(OpKind::Linear, 4).linear_operands().unwrap_err();
        assert_eq!(
            e.to_string(),
            "linear takes x, w or x, w, bias, got 4 operands"
        );
        // The optional operands come all together or not at all.
        let e = op(OpKind::Attention, 4).attention_operands().unwrap_err();
        assert_eq!(
            e.to_string(),
            "attention takes q, k, v or q, k, v, q_pe, k_pe, got 4 operands"
        );
        let e = op(OpKind::GroupedLinear, 2)
            .grouped_linear_operands()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "grouped_linear takes x, w, indices, got 2 operands"
        );
        let e = op(OpKind::MoeTopk, 0).moe_topk_operands().unwrap_err();
        assert!(e.to_string().ends_with("got 0 operands"), "{e}");
        let e = MoeTopkOperands::from_slice(&[1, 2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "moe_topk takes logits or logits, bias, got 3 operands"
        );
    }

    #[test]
    fn positions_name_the_indices_of_parallel_arrays() {
        let at = LinearOperands::positions(3).unwrap();
        assert_eq!((at.x, at.w, at.bias), (0, 1, Some(2)));
        let at = AttentionOperands::positions(3).unwrap();
        assert_eq!((at.v, at.scores().pe()), (2, None));
        assert!(AttnScoresOperands::positions(3).is_err());
    }

    #[test]
    fn views_name_any_operand_type_and_map() {
        let o = MoeCombineOperands::from_slice(&["y", "w", "s"]).unwrap();
        assert_eq!(o.shared, Some("s"));
        let lens = o.map(str::len);
        assert_eq!((lens.y, lens.shared), (1, Some(1)));
    }

    #[test]
    fn layouts_give_the_arity_of_their_kinds() {
        for kind in OpKind::ALL {
            let Some(layout) = kind.operand_layout() else {
                continue;
            };
            assert_eq!(layout.kind, kind);
            let a = kind.arity();
            assert_eq!(
                (a.min, a.max),
                (
                    layout.required.len(),
                    Some(layout.required.len() + layout.optional.len())
                ),
                "{kind}"
            );
        }
        assert!(OpKind::Add.operand_layout().is_none());
        assert!(OpKind::Concat.operand_layout().is_none());
    }
}
