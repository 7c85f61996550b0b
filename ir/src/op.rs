//! Op kinds, their signatures (arity and attributes), and op data.

use crate::attr::{AttrType, Attrs};
use crate::{DType, Role, ValueId};
use std::fmt;
use std::str::FromStr;

/// What an op computes. Shape rules live in `infer.rs`, semantics in DESIGN.md §2–§3b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `table[ids]`: ids `[*]` (integer), table `[V, D]` → `[*, D]`.
    Embedding,
    /// `x · wᵀ (+ bias)`: x `[*, K]`, w `[N, K]`, optional bias `[N]` → `[*, N]`.
    Linear,
    /// Batched `a · b` (or `a · bᵀ` with `transpose_b`): `[*b, M, K]` × `[*b, K, N]` → `[*b, M, N]`.
    Matmul,
    /// `x · rsqrt(mean(x²) + eps) · w` over the last axis, statistics in FP32.
    RmsNorm,
    /// Rotary embedding of `[batch, seq, heads, head_dim]`, positions along axis 1;
    /// `style` is `interleaved` (pairs `2i, 2i+1`) or `half` (pairs `i, i + d/2`).
    Rope,
    /// Softmax along `axis`, computed in FP32.
    Softmax,
    /// `x · sigmoid(x)`.
    Silu,
    /// Elementwise product of two same-shaped tensors.
    Mul,
    /// Elementwise sum of two same-shaped tensors.
    Add,
    /// `silu(gate) ⊙ up`.
    Swiglu,
    /// Attention scores `q·kᵀ (+ q_pe·k_peᵀ) · scale` with optional causal mask:
    /// q `[B, S, H, D]`, k `[B, T, Hk, D]` (Hk divides H) → `[B, H, S, T]`.
    AttnScores,
    /// Weighted sum `p · v`: p `[B, H, S, T]`, v `[B, T, Hv, Dv]` (Hv divides H) → `[B, S, H, Dv]`.
    AttnValues,
    /// Fused `attn_values(softmax(attn_scores(q, k[, q_pe, k_pe])), v)` with FlashAttention's
    /// rounding points (online softmax over key tiles, BF16 probabilities, one division at the
    /// end; `dsc_kernels::ops::attention`): operands q, k, v[, q_pe, k_pe] → `[B, S, H, Dv]`.
    Attention,
    /// `attention` whose output, rounded to v's dtype as `attention` stores it, is quantized in
    /// 1 × `act_tile` groups of each head's row (`quantize` of it, or of its `[B, S, H·Dv]`
    /// reshape, when `act_tile` divides Dv): FP8 codes `[B, S, H, Dv]` and f32 scales
    /// `[B, S, H, Dv / act_tile]`.
    AttentionQuant,
    /// MoE routing: scores (sigmoid/softmax) of logits `[T, E]`, optional selection bias `[E]`,
    /// group-limited top-k, normalization, route scale → weights f32 `[T, k]`, indices i32 `[T, k]`.
    MoeTopk,
    /// Per-token expert GEMM: x `[T, K]` or `[T, k, K]`, w `[E, N, K]`, indices `[T, k]` → `[T, k, N]`.
    GroupedLinear,
    /// `Σ_k weights[t, k] · y[t, k, :] (+ shared[t, :])`: y `[T, k, D]`, weights `[T, k]` → `[T, D]`.
    MoeCombine,
    /// Converts to `dtype` (round to nearest even, saturating for FP8).
    Cast,
    /// Block quantization to FP8: `block = [rows, cols]` over the last two axes
    /// (`[1, 128]` for activations, `[128, 128]` for weights) → codes and f32 scales.
    Quantize,
    /// Inverse of `quantize`: codes and scales → `dtype`.
    Dequantize,
    /// Same elements, new `shape`.
    Reshape,
    /// Permutes axes by `perm`.
    Transpose,
    /// Elements `start..end` along `axis`.
    Slice,
    /// Joins operands along `axis`.
    Concat,
    /// FP8 partial products per promotion interval: codes x `[*, K]` and w `[N, K]` (or, grouped,
    /// w `[E, N, K]` with indices `[T, k]`) → f32 `[*, N, ceil(K/interval)]`, each entry the
    /// tensor-core sum of `interval` decoded products (DESIGN.md §3, before scaling).
    Fp8Partials,
    /// Promotion: `Σ_j partials[.., n, j] · s_x[.., g(j)] · s_w[n / weight_block, g(j)]` in FP32,
    /// stored in the result dtype — the dequantizing half of a block-scaled GEMM.
    Promote,
    /// The fused block-scaled FP8 GEMM: codes and scales of x and w → `[*, N]` in the high
    /// dtype, promoting every `promote_interval` (quantize → partials → promote in one kernel).
    Fp8Gemm,
    /// `rms_norm` whose output is quantized in 1×`act_tile` tiles → codes and f32 scales.
    RmsNormQuant,
    /// `swiglu` whose output is quantized in 1×`act_tile` tiles → codes and f32 scales.
    SwigluQuant,
    /// A residual add fused into the `rms_norm` of its sum: x, residual, w → `rms_norm(sum, w)`
    /// and `sum = add(x, residual)` (stored, for the residual stream), one pass over the rows.
    AddRmsNorm,
    /// A residual add fused into the `rms_norm_quant` of its sum: x, residual, w → codes, f32
    /// scales and `sum = add(x, residual)`.
    AddRmsNormQuant,
    /// Mean next-token cross-entropy: logits `[*, V]`, labels `[*]` (integer) → f32 `[1]`.
    CrossEntropy,
    /// Gradient of `cross_entropy` w.r.t. the logits: logits, labels, dloss f32 `[1]` →
    /// f32 `[*, V]`.
    CrossEntropyGrad,
    /// Gradient of `rms_norm` (its statistics recomputed from x): x, w, dy → dx (x's shape),
    /// dw f32 `[D]`.
    RmsNormGrad,
    /// Gradient of `softmax` from its output: y, dy → dx.
    SoftmaxGrad,
    /// Gradient of `silu`: x, dy → dx.
    SiluGrad,
    /// Gradient of `swiglu` (silu recomputed): gate, up, dy → dgate, dup.
    SwigluGrad,
    /// Gradient of `rope`: the inverse rotation of dy, same attributes as the forward.
    RopeGrad,
    /// Gradient of `embedding` w.r.t. its table: ids, dy `[*, D]` → f32 `[vocab, D]`, rows
    /// summed over the positions that read them.
    EmbeddingGrad,
    /// Sum over `axis`, which is dropped from the shape.
    ReduceSum,
    /// Elementwise product with the constant `factor`.
    Scale,
    /// `sqrt(Σ g²)` over every element of every operand → f32 `[1]` (gradient clipping).
    GlobalNorm,
    /// One AdamW step (decoupled weight decay, gradients clipped to `max_grad_norm` by the
    /// global norm): param, grad, m, v, norm `[1]`, schedule f32 `[2]` = (lr, step) →
    /// param', m', v'.
    AdamW,
    /// Zeros around the operand along `axis`: `before` of them, the operand, `after` of them
    /// (the VJP of `slice`).
    Pad,
    /// The k-grouped Wgrad of `grouped_linear`: dy `[T, k, N]`, x `[T, K]` or `[T, k, K]`,
    /// indices `[T, k]` → f32 `[experts, N, K]`, `dw[e] = Σ_{(t, j): indices[t, j] = e}
    /// dy[t, j]ᵀ · x[t(, j)]` (each expert's rows are its contracted dim).
    GroupedLinearWgrad,
    /// Gradient of `moe_combine`: y `[T, k, D]`, weights `[T, k]`, dout `[T, D]` → dy
    /// `[T, k, D]` (`weights · dout`), dweights f32 `[T, k]` (`y · dout`); the shared
    /// operand's gradient is dout itself.
    MoeCombineGrad,
    /// Gradient of `moe_topk`'s weights w.r.t. its logits: logits `[T, E]`, indices `[T, k]`,
    /// dweights `[T, k]` → f32 `[T, E]`, through the unbiased scores of the chosen experts,
    /// their normalization and the route scale (the selection, and so its bias, is constant).
    MoeTopkGrad,
    /// The auxiliary-loss-free balancing step of a routed layer's selection bias (DESIGN.md §8):
    /// bias `[E]`, indices `[T, k]` → bias', `b_i + speed · sign(mean_load − load_i)` where
    /// `load_i` counts the (token, slot) pairs routed to expert `i` and `mean_load = T·k / E`.
    ExpertBiasUpdate,
    /// The sequence-wise balance loss of a routed layer (DeepSeek-V3 §2.1.2, eqs. 17–20):
    /// logits `[T, E]`, indices `[T, k]` → f32 `[1]`, `alpha · Σ_i f_i · P_i` per sequence
    /// (`sequences` of `T / sequences` tokens), averaged over the sequences, with `f_i = E /
    /// (k · S) · (tokens routed to i)` and `P_i` the mean over the tokens of the scores
    /// normalized to sum 1 (`score_func` of the logits).
    BalanceLoss,
    /// Gradient of `balance_loss` w.r.t. its logits: logits `[T, E]`, indices `[T, k]`, the
    /// loss's cotangent `[1]` → f32 `[T, E]` (`f_i` is constant: the selection is).
    BalanceLossGrad,
}

/// Operand count bounds of an op kind: `min..=max` (`max = None` for variadic).
#[derive(Debug, Clone, Copy)]
pub struct Arity {
    /// The fewest operands.
    pub min: usize,
    /// The most operands, `None` for variadic kinds.
    pub max: Option<usize>,
}

/// One attribute an op kind takes.
#[derive(Debug, Clone, Copy)]
pub struct AttrSpec {
    pub name: &'static str,
    pub ty: AttrType,
    pub required: bool,
}

const fn req(name: &'static str, ty: AttrType) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: AttrType) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: false,
    }
}

const fn arity(min: usize, max: usize) -> Arity {
    Arity {
        min,
        max: Some(max),
    }
}

/// The fused attention's attributes: `attention`'s (the first [`ATTENTION_ATTRS`]), then the
/// quantization `attention_quant` adds.
const FUSED_ATTENTION_ATTRS: [AttrSpec; 8] = [
    req("scale", AttrType::Float),
    req("causal", AttrType::Bool),
    opt(crate::infer::Q_COLS, AttrType::Ints),
    opt(crate::infer::K_COLS, AttrType::Ints),
    opt(crate::infer::V_COLS, AttrType::Ints),
    req("dtype", AttrType::DType),
    req("act_tile", AttrType::Int),
    req("scale_format", AttrType::Str),
];
/// How many of [`FUSED_ATTENTION_ATTRS`] are `attention`'s.
const ATTENTION_ATTRS: usize = 5;

impl OpKind {
    /// Every op kind.
    pub const ALL: [OpKind; 50] = [
        OpKind::Embedding,
        OpKind::Linear,
        OpKind::Matmul,
        OpKind::RmsNorm,
        OpKind::Rope,
        OpKind::Softmax,
        OpKind::Silu,
        OpKind::Mul,
        OpKind::Add,
        OpKind::Swiglu,
        OpKind::AttnScores,
        OpKind::AttnValues,
        OpKind::Attention,
        OpKind::AttentionQuant,
        OpKind::MoeTopk,
        OpKind::GroupedLinear,
        OpKind::MoeCombine,
        OpKind::Cast,
        OpKind::Quantize,
        OpKind::Dequantize,
        OpKind::Reshape,
        OpKind::Transpose,
        OpKind::Slice,
        OpKind::Concat,
        OpKind::Fp8Partials,
        OpKind::Promote,
        OpKind::Fp8Gemm,
        OpKind::RmsNormQuant,
        OpKind::SwigluQuant,
        OpKind::AddRmsNorm,
        OpKind::AddRmsNormQuant,
        OpKind::CrossEntropy,
        OpKind::CrossEntropyGrad,
        OpKind::RmsNormGrad,
        OpKind::SoftmaxGrad,
        OpKind::SiluGrad,
        OpKind::SwigluGrad,
        OpKind::RopeGrad,
        OpKind::EmbeddingGrad,
        OpKind::ReduceSum,
        OpKind::Scale,
        OpKind::GlobalNorm,
        OpKind::AdamW,
        OpKind::Pad,
        OpKind::GroupedLinearWgrad,
        OpKind::MoeCombineGrad,
        OpKind::MoeTopkGrad,
        OpKind::ExpertBiasUpdate,
        OpKind::BalanceLoss,
        OpKind::BalanceLossGrad,
    ];

    /// The spelling used in the text format and model.toml.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding",
            OpKind::Linear => "linear",
            OpKind::Matmul => "matmul",
            OpKind::RmsNorm => "rms_norm",
            OpKind::Rope => "rope",
            OpKind::Softmax => "softmax",
            OpKind::Silu => "silu",
            OpKind::Mul => "mul",
            OpKind::Add => "add",
            OpKind::Swiglu => "swiglu",
            OpKind::AttnScores => "attn_scores",
            OpKind::AttnValues => "attn_values",
            OpKind::Attention => "attention",
            OpKind::AttentionQuant => "attention_quant",
            OpKind::MoeTopk => "moe_topk",
            OpKind::GroupedLinear => "grouped_linear",
            OpKind::MoeCombine => "moe_combine",
            OpKind::Cast => "cast",
            OpKind::Quantize => "quantize",
            OpKind::Dequantize => "dequantize",
            OpKind::Reshape => "reshape",
            OpKind::Transpose => "transpose",
            OpKind::Slice => "slice",
            OpKind::Concat => "concat",
            OpKind::Fp8Partials => "fp8_partials",
            OpKind::Promote => "promote",
            OpKind::Fp8Gemm => "fp8_gemm",
            OpKind::RmsNormQuant => "rms_norm_quant",
            OpKind::SwigluQuant => "swiglu_quant",
            OpKind::AddRmsNorm => "add_rms_norm",
            OpKind::AddRmsNormQuant => "add_rms_norm_quant",
            OpKind::CrossEntropy => "cross_entropy",
            OpKind::CrossEntropyGrad => "cross_entropy_grad",
            OpKind::RmsNormGrad => "rms_norm_grad",
            OpKind::SoftmaxGrad => "softmax_grad",
            OpKind::SiluGrad => "silu_grad",
            OpKind::SwigluGrad => "swiglu_grad",
            OpKind::RopeGrad => "rope_grad",
            OpKind::EmbeddingGrad => "embedding_grad",
            OpKind::ReduceSum => "reduce_sum",
            OpKind::Scale => "scale",
            OpKind::GlobalNorm => "global_norm",
            OpKind::AdamW => "adamw",
            OpKind::Pad => "pad",
            OpKind::GroupedLinearWgrad => "grouped_linear_wgrad",
            OpKind::MoeCombineGrad => "moe_combine_grad",
            OpKind::MoeTopkGrad => "moe_topk_grad",
            OpKind::ExpertBiasUpdate => "expert_bias_update",
            OpKind::BalanceLoss => "balance_loss",
            OpKind::BalanceLossGrad => "balance_loss_grad",
        }
    }

    /// How many operands the kind takes (for kinds with named operands, their layout's).
    pub fn arity(self) -> Arity {
        use OpKind::*;
        if let Some(layout) = self.operand_layout() {
            return layout.arity();
        }
        match self {
            Mul | Add | Swiglu | RmsNorm => arity(2, 2),
            Matmul => arity(2, 2),
            Rope | Softmax | Silu | Cast | Quantize | Reshape | Transpose | Slice => arity(1, 1),
            Concat => Arity { min: 1, max: None },
            RmsNormQuant | SwigluQuant => arity(2, 2),
            CrossEntropy | SoftmaxGrad | SiluGrad | EmbeddingGrad => arity(2, 2),
            CrossEntropyGrad | SwigluGrad => arity(3, 3),
            RopeGrad | ReduceSum | Scale => arity(1, 1),
            GlobalNorm => Arity { min: 1, max: None },
            Pad => arity(1, 1),
            _ => unreachable!("{self} has a named operand layout"),
        }
    }

    /// Number of results the kind produces.
    pub fn num_results(self) -> usize {
        match self {
            OpKind::MoeTopk
            | OpKind::Quantize
            | OpKind::RmsNormQuant
            | OpKind::SwigluQuant
            | OpKind::AttentionQuant
            | OpKind::RmsNormGrad
            | OpKind::SwigluGrad
            | OpKind::MoeCombineGrad
            | OpKind::AddRmsNorm => 2,
            OpKind::AdamW | OpKind::AddRmsNormQuant => 3,
            _ => 1,
        }
    }

    /// The attributes the kind takes; any other attribute is an error.
    pub fn attr_specs(self) -> &'static [AttrSpec] {
        use AttrType as T;
        use OpKind::*;
        match self {
            Matmul => const { &[opt("transpose_b", T::Bool)] },
            RmsNorm => const { &[req("eps", T::Float), opt(crate::infer::X_COLS, T::Ints)] },
            RmsNormGrad | AddRmsNorm => const { &[req("eps", T::Float)] },
            Rope | RopeGrad => {
                const {
                    &[
                        req("style", T::Str),
                        req("theta", T::Float),
                        opt("scaling", T::Str),
                        opt("factor", T::Float),
                        opt("original_max_position", T::Int),
                        opt("beta_fast", T::Float),
                        opt("beta_slow", T::Float),
                        opt("mscale", T::Float),
                        opt("mscale_all_dim", T::Float),
                        opt("low_freq_factor", T::Float),
                        opt("high_freq_factor", T::Float),
                        opt(crate::infer::X_COLS, T::Ints),
                    ]
                }
            }
            Softmax | SoftmaxGrad => const { &[req("axis", T::Int)] },
            EmbeddingGrad => const { &[req("vocab", T::Int)] },
            ReduceSum => const { &[req("axis", T::Int)] },
            Scale => const { &[req("factor", T::Float)] },
            AdamW => {
                const {
                    &[
                        req("beta1", T::Float),
                        req("beta2", T::Float),
                        req("eps", T::Float),
                        req("weight_decay", T::Float),
                        req("max_grad_norm", T::Float),
                    ]
                }
            }
            AttnScores => const { &[req("scale", T::Float), req("causal", T::Bool)] },
            Attention => const { FUSED_ATTENTION_ATTRS.split_at(ATTENTION_ATTRS).0 },
            AttentionQuant => const { FUSED_ATTENTION_ATTRS.as_slice() },
            MoeTopk => {
                const {
                    &[
                        req("score_func", T::Str),
                        req("top_k", T::Int),
                        req("n_groups", T::Int),
                        req("topk_groups", T::Int),
                        req("norm_topk_prob", T::Bool),
                        req("route_scale", T::Float),
                    ]
                }
            }
            MoeTopkGrad => {
                const {
                    &[
                        req("score_func", T::Str),
                        req("norm_topk_prob", T::Bool),
                        req("route_scale", T::Float),
                    ]
                }
            }
            GroupedLinearWgrad => {
                const {
                    &[
                        req("experts", T::Int),
                        opt(crate::infer::WGRAD_TILE, T::Int),
                        opt(crate::infer::WGRAD_INTERVAL, T::Int),
                        opt(crate::infer::DY_SCALE_FORMAT, T::Str),
                        opt(crate::infer::X_SCALE_FORMAT, T::Str),
                    ]
                }
            }
            ExpertBiasUpdate => const { &[req("speed", T::Float)] },
            BalanceLoss | BalanceLossGrad => {
                const {
                    &[
                        req("alpha", T::Float),
                        req("score_func", T::Str),
                        req("sequences", T::Int),
                    ]
                }
            }
            Pad => {
                const {
                    &[
                        req("axis", T::Int),
                        req("before", T::Int),
                        req("after", T::Int),
                    ]
                }
            }
            Cast => const { &[req("dtype", T::DType)] },
            Quantize => {
                const {
                    &[
                        req("dtype", T::DType),
                        req("block", T::Ints),
                        req("scale_format", T::Str),
                    ]
                }
            }
            Dequantize => const { &[req("dtype", T::DType), req("block", T::Ints)] },
            Reshape => const { &[req("shape", T::Ints)] },
            Transpose => const { &[req("perm", T::Ints)] },
            Slice => {
                const {
                    &[
                        req("axis", T::Int),
                        req("start", T::Int),
                        req("end", T::Int),
                    ]
                }
            }
            Concat => const { &[req("axis", T::Int)] },
            Fp8Partials => const { &[req("interval", T::Int)] },
            Promote | Fp8Gemm => {
                const {
                    &[
                        req("act_tile", T::Int),
                        req("weight_block", T::Int),
                        req("promote_interval", T::Int),
                        opt(crate::infer::W_ROW_TILES, T::Bool),
                        opt(crate::infer::X_SQUARE_BLOCKS, T::Bool),
                    ]
                }
            }
            RmsNormQuant | AddRmsNormQuant => {
                const {
                    &[
                        req("eps", T::Float),
                        req("dtype", T::DType),
                        req("act_tile", T::Int),
                        req("scale_format", T::Str),
                        opt(crate::infer::X_COLS, T::Ints),
                    ]
                }
            }
            SwigluQuant => {
                const {
                    &[
                        req("dtype", T::DType),
                        req("act_tile", T::Int),
                        req("scale_format", T::Str),
                    ]
                }
            }
            Linear => {
                const {
                    &[
                        opt("gemm", T::Str),
                        opt(crate::infer::X_SQUARE_BLOCKS, T::Bool),
                        opt(crate::infer::X_SCALE_FORMAT, T::Str),
                        opt(crate::infer::W_SCALE_FORMAT, T::Str),
                        opt(crate::infer::DY_SCALE_FORMAT, T::Str),
                        opt(crate::infer::X_CACHE, T::DType),
                    ]
                }
            }
            GroupedLinear => {
                const {
                    &[
                        opt(crate::infer::X_SCALE_FORMAT, T::Str),
                        opt(crate::infer::DY_SCALE_FORMAT, T::Str),
                        opt(crate::infer::X_CACHE, T::DType),
                    ]
                }
            }
            Embedding | Silu | Mul | Add | Swiglu | AttnValues | MoeCombine | CrossEntropy
            | CrossEntropyGrad | SiluGrad | SwigluGrad | GlobalNorm | MoeCombineGrad => {
                const { &[] }
            }
        }
    }

    /// True for kinds that are matrix products of activations with weights (FP8 candidates).
    pub fn is_weight_gemm(self) -> bool {
        matches!(
            self,
            OpKind::Linear
                | OpKind::GroupedLinear
                | OpKind::Matmul
                | OpKind::Fp8Partials
                | OpKind::Fp8Gemm
        )
    }

    /// True for kinds that only move or view data (their result dtype is their operand's).
    pub fn is_data_movement(self) -> bool {
        matches!(
            self,
            OpKind::Reshape | OpKind::Transpose | OpKind::Slice | OpKind::Concat | OpKind::Pad
        )
    }

    /// The role an op of this kind gets when model.toml names none.
    pub fn default_role(self) -> Role {
        match self {
            OpKind::Embedding | OpKind::EmbeddingGrad => Role::Embedding,
            OpKind::RmsNorm
            | OpKind::RmsNormQuant
            | OpKind::AddRmsNorm
            | OpKind::AddRmsNormQuant
            | OpKind::RmsNormGrad => Role::Norm,
            OpKind::CrossEntropy | OpKind::CrossEntropyGrad => Role::Head,
            OpKind::Rope
            | OpKind::RopeGrad
            | OpKind::SoftmaxGrad
            | OpKind::Softmax
            | OpKind::AttnScores
            | OpKind::AttnValues
            | OpKind::Attention
            | OpKind::AttentionQuant => Role::Attention,
            OpKind::MoeTopk
            | OpKind::MoeTopkGrad
            | OpKind::ExpertBiasUpdate
            | OpKind::BalanceLoss
            | OpKind::BalanceLossGrad => Role::Gating,
            OpKind::GroupedLinear
            | OpKind::GroupedLinearWgrad
            | OpKind::MoeCombine
            | OpKind::MoeCombineGrad => Role::Expert,
            OpKind::Add => Role::Residual,
            _ => Role::Other,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a string that names no op kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown op kind `{0}`")]
pub struct UnknownOpKind(pub String);

impl FromStr for OpKind {
    type Err = UnknownOpKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownOpKind(s.to_string()))
    }
}

/// The precision assign-precision chose for an op. Its storage dtype is its results' dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Precision {
    /// The dtype the op's arithmetic consumes (`f8e4m3` for an FP8 GEMM, `f32` for a norm).
    pub compute: DType,
    /// The dtype sums are kept in; `None` for ops without reductions.
    pub accumulate: Option<DType>,
}

/// One op: a kind applied to operand values, defining result values.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub operands: Vec<ValueId>,
    /// The op's name is the name of its first result.
    pub results: Vec<ValueId>,
    pub attrs: Attrs,
    pub role: Role,
    pub precision: Option<Precision>,
}
