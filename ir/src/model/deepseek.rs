//! The `deepseek` preset: DeepSeek-V2/V3 with MLA attention and a MoE of routed plus shared
//! experts (DESIGN.md §3b), named as the Hugging Face checkpoints name their modules.

use super::ModelError;
use super::layers::Net;
use super::preset::{self, Dim};
use super::rope::{self, RopeScaling};
use super::toml::{Spanned, Table};
use crate::rope_scaling::RopeStyle;
use crate::{Attr, Attrs, DType, Graph, OpKind, Role, ValueId};

/// The MoE half of the configuration (absent when every layer is dense).
struct Moe {
    inter: Spanned<u64>,
    routed: Spanned<u64>,
    shared: Spanned<u64>,
    activated: Spanned<u64>,
    groups: u64,
    limited: u64,
    score_func: &'static str,
    route_scale: f64,
    norm_topk_prob: bool,
    route_bias: bool,
}

/// A validated `[model]` of architecture deepseek.
struct Config {
    name: String,
    batch: Spanned<u64>,
    seq: Spanned<u64>,
    vocab: Spanned<u64>,
    dim: Spanned<u64>,
    layers: u64,
    dense_layers: u64,
    inter: Spanned<u64>,
    heads: Spanned<u64>,
    q_lora: Spanned<u64>,
    kv_lora: Spanned<u64>,
    nope: Spanned<u64>,
    rope: Spanned<u64>,
    v: Spanned<u64>,
    eps: f64,
    theta: f64,
    rope_scaling: Option<RopeScaling>,
    moe: Option<Moe>,
}

fn size(m: &Table, key: &str) -> Result<Spanned<u64>, ModelError> {
    m.required(key, m.size(key)?)
}

fn parse(m: &Table) -> Result<Config, ModelError> {
    preset::check_model_keys(m, "deepseek")?;
    let layers = preset::n_layers(m)?;
    let dense = m.required("n_dense_layers", m.count("n_dense_layers")?)?;
    if dense.value > layers.value {
        return Err(m.error(
            dense.at,
            format!(
                "`n_dense_layers` ({}) must not exceed `n_layers` ({})",
                dense.value, layers.value
            ),
        ));
    }
    let rope = size(m, "qk_rope_head_dim")?;
    if rope.value % 2 != 0 {
        return Err(m.error(
            rope.at,
            format!(
                "`qk_rope_head_dim` must be even (RoPE rotates pairs), not {}",
                rope.value
            ),
        ));
    }
    let cfg = Config {
        name: preset::name(m)?,
        batch: size(m, "batch")?,
        seq: size(m, "seq_len")?,
        vocab: size(m, "vocab_size")?,
        dim: size(m, "dim")?,
        layers: layers.value,
        dense_layers: dense.value,
        inter: size(m, "inter_dim")?,
        heads: size(m, "n_heads")?,
        q_lora: m.required("q_lora_rank", m.count("q_lora_rank")?)?,
        kv_lora: size(m, "kv_lora_rank")?,
        nope: size(m, "qk_nope_head_dim")?,
        rope,
        v: size(m, "v_head_dim")?,
        eps: m
            .required("rms_norm_eps", m.positive_float("rms_norm_eps")?)?
            .value,
        theta: m.positive_float("rope_theta")?.map_or(10000.0, |t| t.value),
        rope_scaling: rope::parse(m, "deepseek")?,
        moe: parse_moe(m, dense.value < layers.value)?,
    };
    check_sizes(m, &cfg)?;
    Ok(cfg)
}

/// Reads the MoE keys: required when some layer is MoE, else optional but still checked.
fn parse_moe(m: &Table, needed: bool) -> Result<Option<Moe>, ModelError> {
    let get = |key: &str, v: Option<Spanned<u64>>| -> Result<Option<Spanned<u64>>, ModelError> {
        if needed {
            m.required(key, v).map(Some)
        } else {
            Ok(v)
        }
    };
    let inter = get("moe_inter_dim", m.size("moe_inter_dim")?)?;
    let routed = get("n_routed_experts", m.size("n_routed_experts")?)?;
    let shared = get("n_shared_experts", m.count("n_shared_experts")?)?;
    let activated = get("n_activated_experts", m.size("n_activated_experts")?)?;
    let groups = get("n_expert_groups", m.size("n_expert_groups")?)?;
    let limited = get("n_limited_groups", m.size("n_limited_groups")?)?;
    let score = m.str("score_func")?;
    let score_func = match score.map(|s| (s.value, s.at)) {
        None if needed => return Err(m.missing("score_func")),
        None => None,
        Some(("sigmoid", _)) => Some("sigmoid"),
        Some(("softmax", _)) => Some("softmax"),
        Some((other, at)) => {
            return Err(m.error(
                at,
                format!("`score_func` must be \"sigmoid\" or \"softmax\", not \"{other}\""),
            ));
        }
    };
    let route_scale = m.positive_float("route_scale")?;
    let route_scale = if needed {
        Some(m.required("route_scale", route_scale)?)
    } else {
        route_scale
    };
    let norm_topk_prob = m.bool("norm_topk_prob")?;
    let route_bias = m.bool("route_bias")?;

    if let (Some(a), Some(r)) = (activated, routed)
        && a.value > r.value
    {
        return Err(m.error(
            a.at,
            format!(
                "`n_activated_experts` ({}) must not exceed `n_routed_experts` ({})",
                a.value, r.value
            ),
        ));
    }
    if let (Some(g), Some(r)) = (groups, routed)
        && r.value % g.value != 0
    {
        return Err(m.error(
            g.at,
            format!(
                "`n_routed_experts` ({}) must be divisible by `n_expert_groups` ({})",
                r.value, g.value
            ),
        ));
    }
    if let (Some(l), Some(g)) = (limited, groups)
        && l.value > g.value
    {
        return Err(m.error(
            l.at,
            format!(
                "`n_limited_groups` ({}) must not exceed `n_expert_groups` ({})",
                l.value, g.value
            ),
        ));
    }
    if let (Some(l), Some(g), Some(r), Some(a)) = (limited, groups, routed, activated)
        && l.value * (r.value / g.value) < a.value
    {
        return Err(m.error(
            l.at,
            format!(
                "`n_limited_groups` = {} groups of {} experts cannot supply `n_activated_experts` = {}",
                l.value,
                r.value / g.value,
                a.value
            ),
        ));
    }
    let (Some(inter), Some(routed), Some(shared), Some(activated), Some(groups), Some(limited)) =
        (inter, routed, shared, activated, groups, limited)
    else {
        return Ok(None);
    };
    let (Some(score_func), Some(route_scale), true) = (score_func, route_scale, needed) else {
        return Ok(None);
    };
    // DeepSeek-V3 (sigmoid) normalizes the top-k weights and has a selection bias; V2 (softmax)
    // has neither. Explicit keys win.
    let sigmoid = score_func == "sigmoid";
    Ok(Some(Moe {
        inter,
        routed,
        shared,
        activated,
        groups: groups.value,
        limited: limited.value,
        score_func,
        route_scale: route_scale.value,
        norm_topk_prob: norm_topk_prob.map_or(sigmoid, |b| b.value),
        route_bias: route_bias.map_or(sigmoid, |b| b.value),
    }))
}

/// The largest tensors the preset builds, each within 2^48 elements.
fn check_sizes(m: &Table, c: &Config) -> Result<(), ModelError> {
    let d = |k, v| Dim::of(k, v);
    let (b, s, h) = (
        d("batch", c.batch),
        d("seq_len", c.seq),
        d("n_heads", c.heads),
    );
    let dim = d("dim", c.dim);
    let vocab = d("vocab_size", c.vocab);
    let qk = Dim::sum(("qk_nope_head_dim", c.nope), ("qk_rope_head_dim", c.rope));
    let kv_b = Dim::sum(("qk_nope_head_dim", c.nope), ("v_head_dim", c.v));
    let kv_a = Dim::sum(("kv_lora_rank", c.kv_lora), ("qk_rope_head_dim", c.rope));
    let q_in = if c.q_lora.value > 0 {
        d("q_lora_rank", c.q_lora)
    } else {
        dim.clone()
    };
    let mut tensors = vec![
        ("the embedding table", vec![vocab.clone(), dim.clone()]),
        ("the logits", vec![b.clone(), s.clone(), vocab]),
        ("the hidden states", vec![b.clone(), s.clone(), dim.clone()]),
        (
            "the attention scores",
            vec![b.clone(), h.clone(), s.clone(), s.clone()],
        ),
        (
            "the q projection's weight",
            vec![h.clone(), qk.clone(), q_in],
        ),
        ("the queries", vec![b.clone(), s.clone(), h.clone(), qk]),
        (
            "kv_a_proj_with_mqa's weight",
            vec![kv_a.clone(), dim.clone()],
        ),
        ("the compressed kv", vec![b.clone(), s.clone(), kv_a]),
        (
            "kv_b_proj's weight",
            vec![h.clone(), kv_b.clone(), d("kv_lora_rank", c.kv_lora)],
        ),
        (
            "the keys and values",
            vec![b.clone(), s.clone(), h.clone(), kv_b],
        ),
        (
            "o_proj's weight",
            vec![dim.clone(), h.clone(), d("v_head_dim", c.v)],
        ),
        (
            "the dense MLP's weights",
            vec![d("inter_dim", c.inter), dim.clone()],
        ),
        (
            "the dense MLP's activations",
            vec![b.clone(), s.clone(), d("inter_dim", c.inter)],
        ),
    ];
    if c.q_lora.value > 0 {
        tensors.push((
            "q_a_proj's weight",
            vec![d("q_lora_rank", c.q_lora), dim.clone()],
        ));
    }
    if let Some(moe) = &c.moe {
        let e = d("n_routed_experts", moe.routed);
        let mi = d("moe_inter_dim", moe.inter);
        let k = d("n_activated_experts", moe.activated);
        tensors.extend([
            ("the gate logits", vec![b.clone(), s.clone(), e.clone()]),
            (
                "the routed experts' weights",
                vec![e, mi.clone(), dim.clone()],
            ),
            (
                "the routed experts' activations",
                vec![b.clone(), s.clone(), k.clone(), mi.clone()],
            ),
            (
                "the routed experts' outputs",
                vec![b.clone(), s.clone(), k, dim.clone()],
            ),
            (
                "the shared experts' weights",
                vec![mi.clone(), d("n_shared_experts", moe.shared), dim],
            ),
            (
                "the shared experts' activations",
                vec![b, s, mi, d("n_shared_experts", moe.shared)],
            ),
        ]);
    }
    preset::check_sizes(m, &tensors)
}

/// Builds the deepseek preset from `[model]`, with weights in `high`, and `mtp_depth`
/// multi-token-prediction modules after the main model (a training step's; their logits are
/// the outputs after the main logits).
pub fn build(model: &Table, high: DType, mtp_depth: u64) -> Result<Graph, ModelError> {
    let c = parse(model)?;
    let mut net = Net::new(&c.name, high, model);
    let (b, s, v) = (c.batch.value, c.seq.value, c.vocab.value);
    let mut x = net.embed(b, s, v, c.dim.value)?;
    for i in 0..c.layers {
        x = decoder_layer(&mut net, &c, i, x)?;
    }
    net.head(x, c.eps, v, "lm_head.weight")?;
    if mtp_depth >= s {
        return Err(model.error(
            c.seq.at,
            format!(
                "multi-token prediction of depth {mtp_depth} needs sequences longer than that, \
                 not {s}"
            ),
        ));
    }
    for k in 1..=mtp_depth {
        x = mtp_module(&mut net, &c, k, x)?;
    }
    Ok(net.b.finish())
}

/// Decoder layer `i` (MLA, then a dense MLP or the MoE) of the residual stream `x`.
fn decoder_layer(net: &mut Net, c: &Config, i: u64, x: ValueId) -> Result<ValueId, ModelError> {
    let p = format!("model.layers.{i}");
    let h = net.rms_norm(&format!("{p}.input_layernorm"), x, c.eps)?;
    let attn = mla(net, c, &p, h)?;
    let x = net.residual(&format!("{p}.self_attn.residual"), x, attn)?;
    let h = net.rms_norm(&format!("{p}.post_attention_layernorm"), x, c.eps)?;
    let ffn = match &c.moe {
        Some(moe) if i >= c.dense_layers => moe_block(net, c, moe, &p, h)?,
        _ => net.mlp(&format!("{p}.mlp"), Role::Ffn, h, c.inter.value)?,
    };
    net.residual(&format!("{p}.mlp.residual"), x, ffn)
}

/// Multi-token-prediction module `k` (DeepSeek-V3 §2.2), as the Hugging Face checkpoints
/// name it (`model.layers.{n_layers + k − 1}`): the hidden states `h` of depth `k − 1` (the
/// main model's last layer output for k = 1) and the embedding of the token `k` positions
/// ahead, each RMS-normed (`hnorm`, `enorm`), concatenated `[emb; h]` and projected back to
/// the model width (`eh_proj`), one more decoder layer, then the shared head after the
/// module's own norm (`shared_head.norm`; the head weight is `lm_head.weight`). The ids ahead
/// are the input rolled left by `k`: the last `k` positions wrap around, and the training
/// loss leaves them out (their labels are not in the window). Returns the module's output,
/// depth `k`'s hidden states; its logits `mtp.{k}.logits` become an output.
fn mtp_module(net: &mut Net, c: &Config, k: u64, h: ValueId) -> Result<ValueId, ModelError> {
    let i = c.layers + k - 1;
    let p = format!("model.layers.{i}");
    let s = c.seq.value;
    let (ids, table, head) = match ["input_ids", "model.embed_tokens.weight", "lm_head.weight"]
        .map(|name| net.b.lookup(name))
    {
        [Some(ids), Some(table), Some(head)] => (ids, table, head),
        _ => unreachable!("the main model made its ids, embedding and head"),
    };
    let ahead = net.slice(&format!("{p}.ids_ahead"), ids, 1, k, s)?;
    let wrapped = net.slice(&format!("{p}.ids_wrapped"), ids, 1, 0, k)?;
    let axis = Attrs::new().with("axis", Attr::Int(1));
    let rolled = net.op(
        OpKind::Concat,
        &format!("{p}.ids_rolled"),
        OpKind::Concat.default_role(),
        &[ahead, wrapped],
        axis,
    )?;
    let e = net.op(
        OpKind::Embedding,
        &format!("{p}.embed_tokens"),
        Role::Embedding,
        &[rolled, table],
        Attrs::new(),
    )?;
    let e = net.rms_norm(&format!("{p}.enorm"), e, c.eps)?;
    let h = net.rms_norm(&format!("{p}.hnorm"), h, c.eps)?;
    let axis = Attrs::new().with("axis", Attr::Int(-1));
    let both = net.op(
        OpKind::Concat,
        &format!("{p}.eh"),
        OpKind::Concat.default_role(),
        &[e, h],
        axis,
    )?;
    let x = net.linear(&format!("{p}.eh_proj"), Role::Other, both, c.dim.value)?;
    let x = decoder_layer(net, c, i, x)?;
    let normed = net.rms_norm(&format!("{p}.shared_head.norm"), x, c.eps)?;
    let logits = net.op(
        OpKind::Linear,
        &format!("mtp.{k}.logits"),
        Role::Head,
        &[normed, head],
        Attrs::new(),
    )?;
    net.b.output(logits);
    Ok(x)
}

/// Multi-head latent attention (prefill): `h` `[B, S, D]` → `o_proj` output `[B, S, D]`.
fn mla(net: &mut Net, c: &Config, p: &str, h: ValueId) -> Result<ValueId, ModelError> {
    let a = format!("{p}.self_attn");
    let (b, s, heads) = (c.batch.value, c.seq.value, c.heads.value);
    let (nope, rope, vd) = (c.nope.value, c.rope.value, c.v.value);
    let (kv_lora, theta) = (c.kv_lora.value, c.theta);
    let role = Role::AttnProj;

    let q = if c.q_lora.value == 0 {
        net.linear(&format!("{a}.q_proj"), role, h, heads * (nope + rope))?
    } else {
        let qa = net.linear(&format!("{a}.q_a_proj"), role, h, c.q_lora.value)?;
        let qa = net.rms_norm(&format!("{a}.q_a_layernorm"), qa, c.eps)?;
        net.linear(&format!("{a}.q_b_proj"), role, qa, heads * (nope + rope))?
    };
    let q = net.reshape(&format!("{a}.q_heads"), q, &[b, s, heads, nope + rope])?;
    let q_nope = net.slice(&format!("{a}.q_nope"), q, 3, 0, nope)?;
    let q_pe = net.slice(&format!("{a}.q_pe"), q, 3, nope, nope + rope)?;
    let scaling = c.rope_scaling.as_ref();
    let q_pe = net.rope(
        &format!("{a}.q_rope"),
        q_pe,
        RopeStyle::Interleaved,
        theta,
        scaling,
    )?;

    let kv = net.linear(&format!("{a}.kv_a_proj_with_mqa"), role, h, kv_lora + rope)?;
    let c_kv = net.slice(&format!("{a}.compressed_kv"), kv, 2, 0, kv_lora)?;
    let k_pe = net.slice(&format!("{a}.k_pe"), kv, 2, kv_lora, kv_lora + rope)?;
    let k_pe = net.reshape(&format!("{a}.k_pe_heads"), k_pe, &[b, s, 1, rope])?;
    let k_pe = net.rope(
        &format!("{a}.k_rope"),
        k_pe,
        RopeStyle::Interleaved,
        theta,
        scaling,
    )?;
    let c_kv = net.rms_norm(&format!("{a}.kv_a_layernorm"), c_kv, c.eps)?;
    let kv = net.linear(&format!("{a}.kv_b_proj"), role, c_kv, heads * (nope + vd))?;
    let kv = net.reshape(&format!("{a}.kv_heads"), kv, &[b, s, heads, nope + vd])?;
    let k_nope = net.slice(&format!("{a}.k_nope"), kv, 3, 0, nope)?;
    let value = net.slice(&format!("{a}.value_states"), kv, 3, nope, nope + vd)?;

    // YaRN multiplies the softmax scale by m² (DESIGN.md §3b).
    let mut scale = ((nope + rope) as f64).powf(-0.5);
    if let Some(s) = scaling {
        scale *= s.softmax_factor();
    }
    let o = net.attention(&a, &[q_nope, k_nope, q_pe, k_pe], value, scale)?;
    let o = net.reshape(&format!("{a}.attn_output_flat"), o, &[b, s, heads * vd])?;
    net.linear(&format!("{a}.o_proj"), role, o, c.dim.value)
}

/// The MoE feed-forward: gate, group-limited top-k, routed experts as grouped GEMMs, shared
/// experts as one MLP, combined; `h` `[B, S, D]` → `[B, S, D]`.
fn moe_block(
    net: &mut Net,
    c: &Config,
    moe: &Moe,
    p: &str,
    h: ValueId,
) -> Result<ValueId, ModelError> {
    let m = format!("{p}.mlp");
    let (b, s, d) = (c.batch.value, c.seq.value, c.dim.value);
    let (e, mi) = (moe.routed.value, moe.inter.value);
    let t = net.reshape(&format!("{m}.tokens"), h, &[b * s, d])?;

    // The gate's logits are FP32 whatever `high` is, as in the reference (§3b).
    let gate = format!("{m}.gate");
    let logits = net.linear_with(
        &gate,
        &format!("{gate}.weight"),
        Role::Gating,
        t,
        e,
        Some(DType::F32),
    )?;
    let mut topk_in = vec![logits];
    if moe.route_bias {
        topk_in.push(net.param_of(&format!("{gate}.e_score_correction_bias"), DType::F32, &[e])?);
    }
    let attrs = Attrs::new()
        .with("score_func", Attr::Str(moe.score_func.into()))
        .with("top_k", Attr::Int(moe.activated.value as i64))
        .with("n_groups", Attr::Int(moe.groups as i64))
        .with("topk_groups", Attr::Int(moe.limited as i64))
        .with("norm_topk_prob", Attr::Bool(moe.norm_topk_prob))
        .with("route_scale", Attr::Float(moe.route_scale));
    let routed = net
        .b
        .op_multi(
            OpKind::MoeTopk,
            &format!("{m}.topk"),
            Role::Gating,
            &topk_in,
            attrs,
            &["indices"],
        )
        .map_err(|err| net.fail(err))?;
    let (weights, indices) = (routed[0], routed[1]);

    let experts = format!("{m}.experts");
    let g = grouped(net, &experts, "gate_proj", t, indices, [e, mi, d])?;
    let u = grouped(net, &experts, "up_proj", t, indices, [e, mi, d])?;
    let act = net.op(
        OpKind::Swiglu,
        &format!("{experts}.act"),
        Role::Expert,
        &[g, u],
        Attrs::new(),
    )?;
    let down = grouped(net, &experts, "down_proj", act, indices, [e, d, mi])?;

    let mut combine_in = vec![down, weights];
    if moe.shared.value > 0 {
        let width = mi * moe.shared.value;
        combine_in.push(net.mlp(&format!("{m}.shared_experts"), Role::SharedExpert, t, width)?);
    }
    let y = net.op(
        OpKind::MoeCombine,
        &format!("{m}.combine"),
        Role::Expert,
        &combine_in,
        Attrs::new(),
    )?;
    net.reshape(&format!("{m}.output"), y, &[b, s, d])
}

/// One projection of every routed expert as a grouped GEMM, weight `[E, N, K]` named
/// `{experts}.{e}.{proj}.weight` (`{e}` marks the expert axis).
fn grouped(
    net: &mut Net,
    experts: &str,
    proj: &str,
    x: ValueId,
    indices: ValueId,
    weight: [u64; 3],
) -> Result<ValueId, ModelError> {
    let w = net.param(&format!("{experts}.{{e}}.{proj}.weight"), &weight)?;
    let name = format!("{experts}.{proj}");
    net.op(
        OpKind::GroupedLinear,
        &name,
        Role::Expert,
        &[x, w, indices],
        Attrs::new(),
    )
}
