//! The training-step builder (DESIGN.md §8): a forward graph whose output is next-token logits
//! becomes one whole step —
//!
//! ```text
//! w.bf16  = cast(@w)                      FP32 master weights, read through high-precision casts
//! logits  = forward(input_ids, w.bf16…)
//! loss    = cross_entropy(logits, labels) mean over every position
//! grads   = autodiff(loss)                one VJP rule per op kind, seed `loss.grad`
//! norm    = global_norm(grads…)
//! w', m', v' = adamw(@w, grad, m, v, norm, schedule)   per parameter, moments BF16
//! b'      = expert_bias_update(@b, indices)  per routed layer's selection bias
//! ```
//!
//! The step's inputs are `input_ids`, `labels`, `loss.grad` (1), `train.schedule` (lr, step)
//! and each parameter's moments `{param}.adam_m` / `{param}.adam_v`; its outputs are the loss,
//! the gradient norm, every gradient, then every parameter's new value and moments, then the
//! new selection biases. A MoE layer's `e_score_correction_bias` gets no gradient (it only
//! changes which experts are chosen) and no moments: it moves by the auxiliary-loss-free
//! balancing step (DESIGN.md §8) fed by that layer's routing, `{bias}.next`. The
//! recipe's precision comes from the same passes as inference's (assign-precision,
//! quantize-linears), run over the step by [`TRAIN_PIPELINE`].

use crate::{PassError, PassOptions, autodiff};
use dsc_ir::infer::add_inferred_results;
use dsc_ir::operands::LinearOperands;
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Role, TensorType, ValueId};

const PASS: &str = "train-step";

/// The passes run over a built training step: no weight folding (the weights change every
/// step); the Wgrad GEMMs read the FP8 copies of their operands (`requantize-transposed`,
/// DeepSeek-V3 §3.5.2); `fuse` makes every FP8 GEMM one `fp8_gemm` (the same arithmetic as
/// quantize → fp8_partials → promote, and on the CPU the blocked GEMM rather than one partial
/// sum at a time: 5× faster steps on the headline model).
pub const TRAIN_PIPELINE: &str =
    "verify,infer-shapes,assign-precision,quantize-linears,cse,requantize-transposed,fuse,cse,dce";

/// [`TRAIN_PIPELINE`] with the Wgrad operands quantized from the BF16 tensors instead
/// (Transformer Engine's way; `[train] wgrad_source = "high"`).
pub const TRAIN_PIPELINE_WGRAD_FROM_HIGH: &str =
    "verify,infer-shapes,assign-precision,quantize-linears,fuse,cse,dce";

/// The pipeline for a step whose Wgrad operands come from `source`.
pub fn pipeline(source: dsc_ir::WgradSource) -> &'static str {
    match source {
        dsc_ir::WgradSource::Fp8 => TRAIN_PIPELINE,
        dsc_ir::WgradSource::High => TRAIN_PIPELINE_WGRAD_FROM_HIGH,
    }
}

/// The input holding `(lr, step)` of the current step (step counts from 1).
pub const SCHEDULE_INPUT: &str = "train.schedule";
/// The labels input: the token to predict at each position.
pub const LABELS_INPUT: &str = "labels";
/// The loss output.
pub const LOSS_OUTPUT: &str = "loss";

/// The position of a training step's loss op (the cross-entropy writing [`LOSS_OUTPUT`], or
/// [`LM_LOSS`] when balance losses are added to it): the forward is the ops before it. `None` for a graph that is not a training step.
pub fn loss_op(graph: &Graph) -> Option<usize> {
    graph.ops.iter().position(|op| {
        op.kind == OpKind::CrossEntropy
            && [LOSS_OUTPUT, LM_LOSS].contains(&graph.name(op.results[0]))
    })
}

/// Which values depend on the token ids (input 0), by value index: the step's activations, as
/// opposed to the weights and what is computed from them alone.
pub fn token_dependent(graph: &Graph) -> Vec<bool> {
    let mut tokens = vec![false; graph.values.len()];
    if let Some(&ids) = graph.inputs.first() {
        tokens[ids.index()] = true;
    }
    for op in &graph.ops {
        if op.operands.iter().any(|v| tokens[v.index()]) {
            for &r in &op.results {
                tokens[r.index()] = true;
            }
        }
    }
    tokens
}

/// The next-token cross-entropy when the loss adds balance losses to it (`[train]
/// balance_loss_alpha` > 0 in a model with routed layers); otherwise it is [`LOSS_OUTPUT`].
pub const LM_LOSS: &str = "loss.lm";
/// The global gradient norm output (before clipping).
pub const GRAD_NORM_OUTPUT: &str = "grad_norm";

/// The names of a parameter's moment inputs.
pub fn moment_names(param: &str) -> [String; 2] {
    [format!("{param}.adam_m"), format!("{param}.adam_v")]
}

/// The name of the output holding the updated value of `input` (a parameter or a moment).
pub fn next_name(input: &str) -> String {
    format!("{input}.next")
}

/// The optimizer and precision choices of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStepOptions {
    /// FP8 recipe (true) or the all-BF16 baseline (false).
    pub fp8: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (norm weights are not decayed).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Storage of the AdamW moments (BF16 in the recipe).
    pub moments: DType,
    /// γ of the auxiliary-loss-free balancing (0: the selection biases stay as they are).
    pub bias_update_speed: f64,
    /// dY of the Dgrad GEMMs scaled per 128 × 128 block (the report's ablation) instead of
    /// per 1 × 128 tile: marks each Dgrad `linear` `x_square_blocks = true`.
    pub act_grad_blocks: bool,
    /// The FP8 recipe's per-tensor formats ([`mark_tensor_formats`]; `[train] tensor_formats =
    /// "recipe"`); false gives every FP8 tensor the policy's format.
    pub tensor_formats: bool,
    /// α of the sequence-wise balance loss added for every routed layer (0: none).
    pub balance_loss_alpha: f64,
    /// Multi-token-prediction modules the forward has (its outputs after the logits).
    pub mtp_depth: u64,
    /// λ: the MTP losses' weight, `λ / depth` each.
    pub mtp_lambda: f64,
}

impl Default for TrainStepOptions {
    fn default() -> Self {
        TrainStepOptions {
            fp8: true,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            max_grad_norm: 1.0,
            moments: DType::Bf16,
            bias_update_speed: 0.001,
            act_grad_blocks: false,
            tensor_formats: true,
            balance_loss_alpha: 0.0,
            mtp_depth: 0,
            mtp_lambda: 0.3,
        }
    }
}

impl TrainStepOptions {
    /// The options `[train]` gives.
    pub fn from_config(config: &dsc_ir::TrainConfig) -> Self {
        TrainStepOptions {
            fp8: config.recipe == dsc_ir::Recipe::Fp8,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            max_grad_norm: config.grad_clip,
            bias_update_speed: config.bias_update_speed,
            act_grad_blocks: config.act_grad_scaling == dsc_ir::ActGradScaling::Block,
            tensor_formats: config.tensor_formats == dsc_ir::TensorFormats::Recipe,
            balance_loss_alpha: config.balance_loss_alpha,
            mtp_depth: config.mtp_depth,
            mtp_lambda: config.mtp_lambda,
            ..TrainStepOptions::default()
        }
    }
}

/// The training step of `forward` as `config` asks for it, built and lowered by its pipeline
/// (then `recompute`, or `recompute-full` for `[train] recompute = "full"`, none for `"none"`;
/// and, for the FP8 recipe with its tensor formats and no whole-layer recomputation,
/// `cache-swiglu-inputs`; then `fuse-residual-norm`).
pub fn build_lowered(forward: &Graph, config: &dsc_ir::TrainConfig) -> Result<Graph, PassError> {
    let recompute = match config.recompute {
        dsc_ir::Recompute::Recipe => ",recompute",
        dsc_ir::Recompute::None => "",
        dsc_ir::Recompute::Full => ",recompute-full",
    };
    let options = TrainStepOptions::from_config(config);
    let mut step = build(forward, &options)?;
    // The recipe's FP8 cache of the MoE SwiGLU inputs (after recompute, whose copies it feeds;
    // whole-layer recomputation recomputes those inputs themselves instead).
    let cache =
        if options.fp8 && options.tensor_formats && config.recompute != dsc_ir::Recompute::Full {
            ",cache-swiglu-inputs"
        } else {
            ""
        };
    // The forward's residual adds fuse into the norms of their sums last: the recomputation
    // passes find norms and the residual stream by their unfused kinds, and the fused op keeps
    // the sum as a result, so the backward's readers of it (and the norms' recomputed copies)
    // are unchanged; the step's numbers are the pair's, bit for bit.
    let pipeline = format!(
        "{}{recompute}{cache},fuse-residual-norm",
        pipeline(config.wgrad_source)
    );
    crate::Pipeline::parse(&pipeline)?.run(&mut step, &PassOptions::default(), |_, _| {})?;
    Ok(step)
}

/// Builds the training step of `forward` (inputs `input_ids [B, S]`, output 0 the logits
/// `[B, S, V]`); the result still needs [`TRAIN_PIPELINE`].
pub fn build(forward: &Graph, options: &TrainStepOptions) -> Result<Graph, PassError> {
    let fail = |message: String| PassError::Failed {
        pass: PASS,
        message,
    };
    let mut g = forward.clone();
    let &logits = g
        .outputs
        .first()
        .ok_or_else(|| fail("the model has no output (its logits)".into()))?;
    let &ids = g
        .inputs
        .first()
        .ok_or_else(|| fail("the model has no input (its token ids)".into()))?;
    let ids_ty = g.ty(ids).clone();
    if !ids_ty.dtype.is_int() {
        return Err(fail(format!(
            "input 0 `{}` must be token ids, got {ids_ty}",
            g.name(ids)
        )));
    }
    let logits_dims = g.ty(logits).shape.dims().to_vec();
    if logits_dims.len() != ids_ty.shape.rank() + 1
        || logits_dims[..ids_ty.shape.rank()] != *ids_ty.shape.dims()
    {
        return Err(fail(format!(
            "output 0 `{}` {} must be logits over the positions of `{}` {ids_ty}",
            g.name(logits),
            g.ty(logits),
            g.name(ids)
        )));
    }
    if !options.fp8 {
        // The all-BF16 baseline: no role's GEMMs are FP8.
        for role in [Role::AttnProj, Role::Ffn, Role::Expert, Role::SharedExpert] {
            if !g.policy.keep_high.contains(&role) {
                g.policy.keep_high.push(role);
            }
        }
    }
    if options.fp8 && options.tensor_formats {
        mark_tensor_formats(&mut g);
    }
    let mut ops = Vec::with_capacity(g.ops.len() + g.params.len());
    master_weights(&mut g, &mut ops).map_err(fail)?;
    ops.append(&mut g.ops);
    g.ops = ops;

    let labels = g.add_input(
        LABELS_INPUT,
        TensorType::new(DType::I32, ids_ty.shape.dims().to_vec()),
    );
    let routers: Vec<(ValueId, ValueId, Attr)> = g
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::MoeTopk)
        .filter_map(|op| {
            let score_func = op.attrs.get("score_func")?.clone();
            Some((
                op.moe_topk_operands().ok()?.logits,
                op.results[1],
                score_func,
            ))
        })
        .collect();
    let balanced = options.balance_loss_alpha > 0.0 && !routers.is_empty();
    let mtp_logits = g.outputs[1..].to_vec();
    if mtp_logits.len() as u64 != options.mtp_depth {
        return Err(fail(format!(
            "[train] mtp_depth = {} but the model has {} multi-token-prediction outputs (load \
             it with dsc_ir::model::load_model_with_mtp)",
            options.mtp_depth,
            mtp_logits.len()
        )));
    }
    let lm_name = if balanced || !mtp_logits.is_empty() {
        LM_LOSS
    } else {
        LOSS_OUTPUT
    };
    let lm = push(
        &mut g,
        OpKind::CrossEntropy,
        vec![logits, labels],
        Attrs::new(),
        &[lm_name],
        Role::Head,
    )
    .map_err(fail)?[0];
    let mut terms = Vec::new();
    if balanced {
        terms = balance_losses(
            &mut g,
            &routers,
            options.balance_loss_alpha,
            ids_ty.shape.dims()[0],
        )
        .map_err(fail)?;
    }
    terms.extend(mtp_losses(&mut g, &mtp_logits, labels, options.mtp_lambda).map_err(fail)?);
    let loss = sum_losses(&mut g, lm, &terms).map_err(fail)?;
    g.outputs = vec![loss];
    autodiff::run(&mut g, &PassOptions::default())?;

    let grads: Vec<(ValueId, ValueId)> = g
        .params
        .iter()
        .filter_map(|&p| {
            let name = autodiff::grad_name(g.name(p));
            g.outputs
                .iter()
                .find(|&&o| g.name(o) == name)
                .map(|&o| (p, o))
        })
        .collect();
    if grads.is_empty() {
        return Err(fail("no parameter influences the loss".into()));
    }
    let grad_values: Vec<ValueId> = grads.iter().map(|&(_, d)| d).collect();
    let norm = push(
        &mut g,
        OpKind::GlobalNorm,
        grad_values,
        Attrs::new(),
        &[GRAD_NORM_OUTPUT],
        Role::Other,
    )
    .map_err(fail)?[0];
    g.outputs.insert(1, norm);
    let schedule = g.add_input(SCHEDULE_INPUT, TensorType::new(DType::F32, vec![2]));
    let mut next = Vec::new();
    for (p, grad) in grads {
        let name = g.name(p).to_string();
        let shape = g.ty(p).shape.dims().to_vec();
        let [m_name, v_name] = moment_names(&name);
        let m = g.add_input(
            m_name.clone(),
            TensorType::new(options.moments, shape.clone()),
        );
        let v = g.add_input(
            v_name.clone(),
            TensorType::new(options.moments, shape.clone()),
        );
        let decay = if shape.len() >= 2 {
            options.weight_decay
        } else {
            0.0
        };
        let attrs = Attrs::new()
            .with("beta1", Attr::Float(options.beta1))
            .with("beta2", Attr::Float(options.beta2))
            .with("eps", Attr::Float(options.eps))
            .with("weight_decay", Attr::Float(decay))
            .with("max_grad_norm", Attr::Float(options.max_grad_norm));
        let names = [next_name(&name), next_name(&m_name), next_name(&v_name)];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = push(
            &mut g,
            OpKind::AdamW,
            vec![p, grad, m, v, norm, schedule],
            attrs,
            &names,
            Role::Other,
        )
        .map_err(fail)?;
        next.extend(r);
    }
    g.outputs.extend(next);
    if options.bias_update_speed > 0.0 {
        let updates = bias_updates(&mut g, options.bias_update_speed).map_err(fail)?;
        g.outputs.extend(updates);
    }
    if options.act_grad_blocks {
        block_scaled_act_grads(&mut g).map_err(fail)?;
    }
    Ok(g)
}

/// Marks the forward GEMMs whose tensors the FP8 recipe gives their own formats (DESIGN.md §8,
/// DeepSeek-V3 report §3.3), whatever `[precision] scale_format` says; autodiff carries the
/// marks to their Dgrad and Wgrad, quantize-linears reads them:
///
/// - **MoE up-projections** (a routed or shared expert GEMM whose result a `swiglu` reads):
///   the input is quantized with power-of-2 scales (`x_scale_format = "ue8m0"`), in the Fprop
///   and, as xᵀ, in the Wgrad.
/// - **MoE down-projections** (an expert GEMM reading a `swiglu`): the activation gradient dY
///   entering their backward gets power-of-2 scales (`dy_scale_format = "ue8m0"`), in the
///   Dgrad and, as dYᵀ, in the Wgrad.
/// - **the attention output projection** (an `attn_proj` linear whose input is the output of
///   `attn_values` / `attention`, through reshapes or transposes): power-of-2 scales for its
///   input, which the backward keeps as an E5M6 copy (`x_cache = f12e5m6`) that the Wgrad's xᵀ
///   is requantized from.
///
/// Only GEMMs of roles the policy runs in FP8 are marked.
pub fn mark_tensor_formats(g: &mut Graph) {
    use dsc_ir::infer::{DY_SCALE_FORMAT, X_CACHE, X_SCALE_FORMAT};
    let pow2 = || Attr::Str(dsc_ir::ScaleFormat::Ue8m0.name().into());
    let producer: std::collections::HashMap<ValueId, usize> = g
        .ops
        .iter()
        .enumerate()
        .flat_map(|(i, op)| op.results.iter().map(move |&r| (r, i)))
        .collect();
    let read_by_swiglu: std::collections::HashSet<ValueId> = g
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::Swiglu)
        .flat_map(|op| op.operands.iter().copied())
        .collect();
    let made_by = |v: ValueId, kinds: &[OpKind], through_views: bool| {
        let mut v = v;
        while let Some(&i) = producer.get(&v) {
            let op = &g.ops[i];
            if kinds.contains(&op.kind) {
                return true;
            }
            if !(through_views && matches!(op.kind, OpKind::Reshape | OpKind::Transpose)) {
                return false;
            }
            v = op.operands[0];
        }
        false
    };
    let mut marks = Vec::new();
    for (i, op) in g.ops.iter().enumerate() {
        let gemm = matches!(op.kind, OpKind::Linear | OpKind::GroupedLinear)
            && op.attrs.str("gemm").is_none_or(|s| s == "fprop");
        if !gemm || g.policy.keep_high.contains(&op.role) {
            continue;
        }
        let x = op.operands[0];
        let mut attrs = Vec::new();
        match op.role {
            Role::Expert | Role::SharedExpert => {
                if read_by_swiglu.contains(&op.results[0]) {
                    attrs.push((X_SCALE_FORMAT, pow2()));
                }
                if made_by(x, &[OpKind::Swiglu], false) {
                    attrs.push((DY_SCALE_FORMAT, pow2()));
                }
            }
            Role::AttnProj if made_by(x, &[OpKind::AttnValues, OpKind::Attention], true) => {
                attrs.push((X_SCALE_FORMAT, pow2()));
                attrs.push((X_CACHE, Attr::DType(DType::F12E5M6)));
            }
            _ => {}
        }
        marks.push((i, attrs));
    }
    for (i, attrs) in marks {
        for (key, value) in attrs {
            g.ops[i].attrs.set(key, value);
        }
    }
}

/// One `expert_bias_update` per `moe_topk` whose selection bias is a parameter (read as it is
/// or through a cast), fed by that op's indices; returns the `{bias}.next` values.
fn bias_updates(g: &mut Graph, speed: f64) -> Result<Vec<ValueId>, String> {
    let param_of = |g: &Graph, v: ValueId| -> Option<ValueId> {
        if g.params.contains(&v) {
            return Some(v);
        }
        g.ops
            .iter()
            .find(|op| op.results.first() == Some(&v) && op.kind == OpKind::Cast)
            .map(|op| op.operands[0])
            .filter(|p| g.params.contains(p))
    };
    let routed: Vec<(ValueId, ValueId)> = g
        .ops
        .iter()
        .filter_map(|op| op.moe_topk_operands().ok()?.bias.map(|b| (b, op)))
        .filter_map(|(bias, op)| param_of(g, bias).map(|b| (b, op.results[1])))
        .collect();
    let mut next = Vec::new();
    for (bias, indices) in routed {
        let name = next_name(g.name(bias));
        let attrs = Attrs::new().with("speed", Attr::Float(speed));
        next.extend(push(
            g,
            OpKind::ExpertBiasUpdate,
            vec![bias, indices],
            attrs,
            &[name.as_str()],
            Role::Gating,
        )?);
    }
    Ok(next)
}

/// The activation-gradient ablation: every Dgrad `linear` is marked `x_square_blocks` and reads
/// dY as `[tokens, features]` (through a reshape when dY has more axes, its result reshaped
/// back), so quantize-linears scales dY per 128 tokens of the flattened batch × 128 features.
fn block_scaled_act_grads(g: &mut Graph) -> Result<(), String> {
    let shape = |dims: &[u64]| {
        Attrs::new().with(
            "shape",
            Attr::Ints(dims.iter().map(|&d| d as i64).collect()),
        )
    };
    for mut op in std::mem::take(&mut g.ops) {
        if op.kind != OpKind::Linear || op.attrs.str("gemm") != Some("dgrad") {
            g.ops.push(op);
            continue;
        }
        op.attrs
            .set(dsc_ir::infer::X_SQUARE_BLOCKS, Attr::Bool(true));
        let o = op.linear_operands().map_err(|e| e.to_string())?;
        let dims = g.ty(o.x).shape.dims().to_vec();
        let Some((&features, rows)) = dims.split_last().filter(|_| dims.len() > 2) else {
            g.ops.push(op);
            continue;
        };
        let tokens: u64 = rows.iter().product();
        let y = op.results[0];
        let y_dims = g.ty(y).shape.dims().to_vec();
        let dy_name = format!("{}.dy_tokens", g.name(y));
        let y_name = format!("{}.tokens", g.name(y));
        let flat = new_op(
            g,
            OpKind::Reshape,
            vec![o.x],
            shape(&[tokens, features]),
            &[dy_name.as_str()],
            op.role,
        )?;
        let operands = LinearOperands {
            x: flat.results[0],
            ..o
        }
        .to_vec();
        let linear = new_op(
            g,
            OpKind::Linear,
            operands,
            op.attrs.clone(),
            &[y_name.as_str()],
            op.role,
        )?;
        let back = Op {
            kind: OpKind::Reshape,
            operands: vec![linear.results[0]],
            results: vec![y],
            attrs: shape(&y_dims),
            role: op.role,
            precision: None,
        };
        g.ops.extend([flat, linear, back]);
    }
    Ok(())
}

/// Makes every non-f32 float parameter an FP32 master weight read through a cast to its old
/// dtype (`{param}.{dtype}`), which every op that read the parameter now reads.
fn master_weights(g: &mut Graph, ops: &mut Vec<Op>) -> Result<(), String> {
    let params = g.params.clone();
    let mut replace = std::collections::HashMap::new();
    for p in params {
        let dtype = g.ty(p).dtype;
        if !dtype.is_float() || dtype == DType::F32 {
            continue;
        }
        g.values[p.index()].ty.dtype = DType::F32;
        let name = format!("{}.{dtype}", g.name(p));
        let attrs = Attrs::new().with("dtype", Attr::DType(dtype));
        let role = first_reader_role(g, p);
        let cast = new_op(g, OpKind::Cast, vec![p], attrs, &[name.as_str()], role)?;
        replace.insert(p, cast.results[0]);
        ops.push(cast);
    }
    for op in &mut g.ops {
        for v in &mut op.operands {
            if let Some(&c) = replace.get(v) {
                *v = c;
            }
        }
    }
    Ok(())
}

/// The role of the first op reading `v` (a master weight's cast belongs to its layer).
fn first_reader_role(g: &Graph, v: ValueId) -> Role {
    g.ops
        .iter()
        .find(|op| op.operands.contains(&v))
        .map_or(Role::Other, |op| op.role)
}

/// The sequence-wise balance loss (DeepSeek-V3 §2.1.2) of each routed layer's `(logits,
/// indices, score_func)`, with weight `alpha` over `sequences` sequences.
fn balance_losses(
    g: &mut Graph,
    routers: &[(ValueId, ValueId, Attr)],
    alpha: f64,
    sequences: u64,
) -> Result<Vec<ValueId>, String> {
    routers
        .iter()
        .map(|(logits, indices, score_func)| {
            let attrs = Attrs::new()
                .with("alpha", Attr::Float(alpha))
                .with("score_func", score_func.clone())
                .with("sequences", Attr::Int(sequences as i64));
            let name = format!("{}.balance_loss", g.name(*indices));
            let op = OpKind::BalanceLoss;
            Ok(push(
                g,
                op,
                vec![*logits, *indices],
                attrs,
                &[&name],
                Role::Gating,
            )?[0])
        })
        .collect()
}

/// The multi-token-prediction losses (DeepSeek-V3 §2.2), `λ / D ·` each depth's: depth `k`'s
/// logits `[B, S, V]` at positions `0 .. S − k` predict the labels `k` positions later
/// (`labels[:, k..]`: the token `k + 1` after the position), the last `k` positions have no
/// label in the window and are left out.
fn mtp_losses(
    g: &mut Graph,
    logits: &[ValueId],
    labels: ValueId,
    lambda: f64,
) -> Result<Vec<ValueId>, String> {
    let depth = logits.len() as f64;
    let s = g.ty(labels).shape.dims()[1];
    let mut losses = Vec::new();
    for (i, &l) in logits.iter().enumerate() {
        let k = i as u64 + 1;
        let slice = |start: u64, end: u64| {
            Attrs::new()
                .with("axis", Attr::Int(1))
                .with("start", Attr::Int(start as i64))
                .with("end", Attr::Int(end as i64))
        };
        let name = format!("loss.mtp{k}");
        let kept = push(
            g,
            OpKind::Slice,
            vec![l],
            slice(0, s - k),
            &[&format!("{name}.logits")],
            Role::Head,
        )?[0];
        let later = push(
            g,
            OpKind::Slice,
            vec![labels],
            slice(k, s),
            &[&format!("{name}.labels")],
            Role::Head,
        )?[0];
        let ce = push(
            g,
            OpKind::CrossEntropy,
            vec![kept, later],
            Attrs::new(),
            &[&name],
            Role::Head,
        )?[0];
        let attrs = Attrs::new().with("factor", Attr::Float(lambda / depth));
        let weighted = push(
            g,
            OpKind::Scale,
            vec![ce],
            attrs,
            &[&format!("{name}.weighted")],
            Role::Head,
        )?[0];
        losses.push(weighted);
    }
    Ok(losses)
}

/// `loss = lm + Σ terms` (f32 adds of role head), named [`LOSS_OUTPUT`]; `lm` itself when there
/// is no term.
fn sum_losses(g: &mut Graph, lm: ValueId, terms: &[ValueId]) -> Result<ValueId, String> {
    let mut total = lm;
    for (i, &term) in terms.iter().enumerate() {
        let name = if i + 1 == terms.len() {
            LOSS_OUTPUT.to_string()
        } else {
            format!("{LM_LOSS}.plus{i}")
        };
        total = push(
            g,
            OpKind::Add,
            vec![total, term],
            Attrs::new(),
            &[&name],
            Role::Head,
        )?[0];
    }
    Ok(total)
}

/// An op of `kind` with fresh results named `names`, typed by inference.
fn new_op(
    g: &mut Graph,
    kind: OpKind,
    operands: Vec<ValueId>,
    attrs: Attrs,
    names: &[&str],
    role: Role,
) -> Result<Op, String> {
    if let Some(taken) = names
        .iter()
        .find(|n| g.values.iter().any(|v| v.name == **n))
    {
        return Err(format!("the model already has a value named `{taken}`"));
    }
    let results = add_inferred_results(g, kind, &attrs, &operands, names.iter().copied())
        .map_err(|e| format!("{kind}: {e}"))?;
    Ok(Op {
        kind,
        operands,
        results,
        attrs,
        role,
        precision: None,
    })
}

/// [`new_op`], appended to the graph's ops; returns the results.
fn push(
    g: &mut Graph,
    kind: OpKind,
    operands: Vec<ValueId>,
    attrs: Attrs,
    names: &[&str],
    role: Role,
) -> Result<Vec<ValueId>, String> {
    let op = new_op(g, kind, operands, attrs, names, role)?;
    let results = op.results.clone();
    g.ops.push(op);
    Ok(results)
}
