//! The `llama` preset: GQA attention with half-split RoPE and a SwiGLU MLP (DESIGN.md §3b),
//! named as the Hugging Face checkpoints name their modules. `attention_bias = true` gives the
//! q/k/v projections a bias `{proj}.bias`, as Qwen2 has (o_proj has none).

use super::ModelError;
use super::layers::Net;
use super::preset::{self, Dim};
use super::rope::{self, RopeScaling};
use super::toml::{Spanned, Table};
use crate::rope_scaling::RopeStyle;
use crate::{DType, Graph, Role, ValueId};

/// A validated `[model]` of architecture llama.
struct Config {
    name: String,
    batch: Spanned<u64>,
    seq: Spanned<u64>,
    vocab: Spanned<u64>,
    dim: Spanned<u64>,
    layers: u64,
    heads: Spanned<u64>,
    kv_heads: Spanned<u64>,
    inter: Spanned<u64>,
    theta: f64,
    rope_scaling: Option<RopeScaling>,
    eps: f64,
    tie_embeddings: bool,
    /// q/k/v projections with a bias (Qwen2); o_proj never has one.
    attention_bias: bool,
}

impl Config {
    fn head_dim(&self) -> u64 {
        self.dim.value / self.heads.value
    }
}

fn size(m: &Table, key: &str) -> Result<Spanned<u64>, ModelError> {
    m.required(key, m.size(key)?)
}

fn parse(m: &Table) -> Result<Config, ModelError> {
    preset::check_model_keys(m, "llama")?;
    let dim = size(m, "dim")?;
    let heads = size(m, "n_heads")?;
    let kv_heads = size(m, "n_kv_heads")?;
    if dim.value % heads.value != 0 {
        return Err(m.error(
            heads.at,
            format!(
                "`n_heads` ({}) must divide `dim` ({})",
                heads.value, dim.value
            ),
        ));
    }
    let head_dim = dim.value / heads.value;
    if head_dim % 2 != 0 {
        return Err(m.error(
            heads.at,
            format!(
                "`n_heads` ({}) gives an odd head_dim of {head_dim} (`dim` / `n_heads`); RoPE rotates pairs",
                heads.value
            ),
        ));
    }
    if heads.value % kv_heads.value != 0 {
        return Err(m.error(
            kv_heads.at,
            format!(
                "`n_kv_heads` ({}) must divide `n_heads` ({})",
                kv_heads.value, heads.value
            ),
        ));
    }
    let cfg = Config {
        name: preset::name(m)?,
        batch: size(m, "batch")?,
        seq: size(m, "seq_len")?,
        vocab: size(m, "vocab_size")?,
        dim,
        layers: preset::n_layers(m)?.value,
        heads,
        kv_heads,
        inter: size(m, "inter_dim")?,
        theta: m
            .required("rope_theta", m.positive_float("rope_theta")?)?
            .value,
        rope_scaling: rope::parse(m, "llama")?,
        eps: m
            .required("rms_norm_eps", m.positive_float("rms_norm_eps")?)?
            .value,
        tie_embeddings: m.bool("tie_embeddings")?.is_some_and(|b| b.value),
        attention_bias: m.bool("attention_bias")?.is_some_and(|b| b.value),
    };
    check_sizes(m, &cfg)?;
    Ok(cfg)
}

/// The largest tensors the preset builds, each within 2^48 elements. The q/k/v/o weights are
/// at most `dim × dim` and so covered by the hidden-state and embedding checks.
fn check_sizes(m: &Table, c: &Config) -> Result<(), ModelError> {
    let d = |k, v| Dim::of(k, v);
    let (b, s) = (d("batch", c.batch), d("seq_len", c.seq));
    let (dim, vocab, inter) = (
        d("dim", c.dim),
        d("vocab_size", c.vocab),
        d("inter_dim", c.inter),
    );
    preset::check_sizes(
        m,
        &[
            ("the embedding table", vec![vocab.clone(), dim.clone()]),
            ("the logits", vec![b.clone(), s.clone(), vocab]),
            ("the hidden states", vec![b.clone(), s.clone(), dim.clone()]),
            ("q_proj's weight", vec![dim.clone(), dim.clone()]),
            (
                "the attention scores",
                vec![b.clone(), d("n_heads", c.heads), s.clone(), s.clone()],
            ),
            ("the MLP's weights", vec![inter.clone(), dim]),
            ("the MLP's activations", vec![b, s, inter]),
        ],
    )
}

/// Builds the llama preset from `[model]`, with weights in `high`.
pub fn build(model: &Table, high: DType) -> Result<Graph, ModelError> {
    let c = parse(model)?;
    let mut net = Net::new(&c.name, high, model);
    let mut x = net.embed(c.batch.value, c.seq.value, c.vocab.value, c.dim.value)?;
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        let h = net.rms_norm(&format!("{p}.input_layernorm"), x, c.eps)?;
        let attn = attention(&mut net, &c, &p, h)?;
        x = net.residual(&format!("{p}.self_attn.residual"), x, attn)?;
        let h = net.rms_norm(&format!("{p}.post_attention_layernorm"), x, c.eps)?;
        let ffn = net.mlp(&format!("{p}.mlp"), Role::Ffn, h, c.inter.value)?;
        x = net.residual(&format!("{p}.mlp.residual"), x, ffn)?;
    }
    // A tied head reads the embedding table (the builder returns the existing parameter).
    let head = if c.tie_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    net.head(x, c.eps, c.vocab.value, head)?;
    Ok(net.b.finish())
}

/// Grouped-query attention: `h` `[B, S, D]` → `o_proj` output `[B, S, D]`.
fn attention(net: &mut Net, c: &Config, p: &str, h: ValueId) -> Result<ValueId, ModelError> {
    let a = format!("{p}.self_attn");
    let (b, s, hd) = (c.batch.value, c.seq.value, c.head_dim());
    let (heads, kv_heads) = (c.heads.value, c.kv_heads.value);
    let role = Role::AttnProj;
    // With `attention_bias` (Qwen2), q/k/v are `x·Wᵀ + b` (HF's `nn.Linear(bias=True)`).
    let mut proj = |name: &str, out: u64| {
        let name = format!("{a}.{name}");
        if c.attention_bias {
            net.linear_biased(&name, role, h, out)
        } else {
            net.linear(&name, role, h, out)
        }
    };
    let q = proj("q_proj", heads * hd)?;
    let k = proj("k_proj", kv_heads * hd)?;
    let v = proj("v_proj", kv_heads * hd)?;
    let q = net.reshape(&format!("{a}.q_heads"), q, &[b, s, heads, hd])?;
    let k = net.reshape(&format!("{a}.k_heads"), k, &[b, s, kv_heads, hd])?;
    let v = net.reshape(&format!("{a}.v_heads"), v, &[b, s, kv_heads, hd])?;
    let scaling = c.rope_scaling.as_ref();
    let q = net.rope(&format!("{a}.q_rope"), q, RopeStyle::Half, c.theta, scaling)?;
    let k = net.rope(&format!("{a}.k_rope"), k, RopeStyle::Half, c.theta, scaling)?;
    let scale = (hd as f64).powf(-0.5);
    let o = net.attention(&a, &[q, k], v, scale)?;
    let o = net.reshape(&format!("{a}.attn_output_flat"), o, &[b, s, heads * hd])?;
    net.linear(&format!("{a}.o_proj"), role, o, c.dim.value)
}
