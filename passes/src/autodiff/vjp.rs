//! One vector-Jacobian product rule per op kind: given the cotangents of an op's results, the
//! ops that compute the cotangents of its operands. Every rule is written with IR ops, so the
//! backward is a graph the other passes lower like the forward (a linear's gradients are
//! linears, which quantize-linears turns into the recipe's Dgrad and Wgrad FP8 GEMMs).

use super::emit::Emit;
use dsc_ir::operands::{AttnScoresOperands, LinearOperands, MoeCombineOperands};
use dsc_ir::{Attr, Attrs, DType, Op, OpKind, OperandError, ValueId};

type Result<T> = std::result::Result<T, String>;

/// Named operands (or their positions), the error as a message.
fn named<V>(view: std::result::Result<V, OperandError>) -> Result<V> {
    view.map_err(|e| e.to_string())
}

/// What a rule is asked for: the op, its results' cotangents and, per operand, the dtype its
/// cotangent is wanted in (`None`: no gradient needed).
pub(super) struct Request<'a> {
    pub op: &'a Op,
    /// The op's name (its first result's), the stem of the backward's value names.
    pub name: String,
    pub dy: Vec<Option<ValueId>>,
    pub want: Vec<Option<DType>>,
}

impl Request<'_> {
    fn dy0(&self) -> Result<ValueId> {
        self.dy[0].ok_or_else(|| format!("{}: its result has no gradient", self.name))
    }

    fn grad_name(&self, e: &Emit, operand: usize) -> String {
        format!("{}.grad", e.graph.name(self.op.operands[operand]))
    }

    fn bwd(&self, what: &str) -> String {
        format!("{}.bwd.{what}", self.name)
    }
}

/// The cotangents of `req.op`'s operands (`None` where not wanted or not differentiable).
pub(super) fn vjp(e: &mut Emit, req: &Request) -> Result<Vec<Option<ValueId>>> {
    use OpKind::*;
    let op = req.op;
    let mut out = vec![None; op.operands.len()];
    let ty = |e: &Emit, i: usize| e.ty(op.operands[i]).clone();
    if op.attrs.get(dsc_ir::infer::X_COLS).is_some() {
        return Err(format!(
            "`{}` reads a column window; differentiate before fold-slices",
            req.name
        ));
    }
    match op.kind {
        Embedding => {
            if let Some(d) = req.want[1] {
                let o = named(op.embedding_operands())?;
                let vocab = e.ty(o.table).shape.dims()[0] as i64;
                let attrs = Attrs::new().with("vocab", Attr::Int(vocab));
                let operands = vec![o.ids, req.dy0()?];
                out[1] = Some(e.one(EmbeddingGrad, operands, attrs, &req.grad_name(e, 1), d)?);
            }
        }
        Linear => linear(e, req, &mut out)?,
        RmsNorm => {
            let (x, w, dy) = (op.operands[0], op.operands[1], req.dy0()?);
            let names = [req.grad_name(e, 0), req.grad_name(e, 1)];
            let dx_dtype = req.want[0].unwrap_or(e.ty(x).dtype);
            let r = e.op(
                RmsNormGrad,
                vec![x, w, dy],
                op.attrs.clone(),
                &names,
                &[dx_dtype],
            )?;
            out[0] = req.want[0].map(|_| r[0]);
            out[1] = req.want[1].map(|_| r[1]);
        }
        Rope => {
            if let Some(d) = req.want[0] {
                let dy = req.dy0()?;
                out[0] = Some(e.one(
                    RopeGrad,
                    vec![dy],
                    op.attrs.clone(),
                    &req.grad_name(e, 0),
                    d,
                )?);
            }
        }
        Softmax => {
            if let Some(d) = req.want[0] {
                let operands = vec![op.results[0], req.dy0()?];
                let dx = e.one(
                    SoftmaxGrad,
                    operands,
                    op.attrs.clone(),
                    &req.grad_name(e, 0),
                    d,
                )?;
                out[0] = Some(dx);
            }
        }
        Silu => {
            if let Some(d) = req.want[0] {
                let operands = vec![op.operands[0], req.dy0()?];
                out[0] = Some(e.one(SiluGrad, operands, Attrs::new(), &req.grad_name(e, 0), d)?);
            }
        }
        Swiglu => {
            let operands = vec![op.operands[0], op.operands[1], req.dy0()?];
            let names = [req.grad_name(e, 0), req.grad_name(e, 1)];
            let d = req.want[0].or(req.want[1]).unwrap_or(DType::F32);
            let r = e.op(SwigluGrad, operands, Attrs::new(), &names, &[d, d])?;
            out[0] = req.want[0].map(|_| r[0]);
            out[1] = req.want[1].map(|_| r[1]);
        }
        Mul => {
            let dy = req.dy0()?;
            for (i, slot) in out.iter_mut().enumerate() {
                if let Some(d) = req.want[i] {
                    let other = op.operands[1 - i];
                    let name = req.grad_name(e, i);
                    *slot = Some(e.one(Mul, vec![dy, other], Attrs::new(), &name, d)?);
                }
            }
        }
        Add => {
            let dy = req.dy0()?;
            out[0] = req.want[0].map(|_| dy);
            if req.want[1].is_some() {
                out[1] = Some(broadcast_sum(e, req, dy, 1)?);
            }
        }
        AttnScores => attn_scores(e, req, &mut out)?,
        AttnValues => attn_values(e, req, &mut out)?,
        Reshape => {
            if req.want[0].is_some() {
                let dims = ty(e, 0).shape.dims().to_vec();
                out[0] = Some(e.reshape(req.dy0()?, &dims, &req.grad_name(e, 0))?);
            }
        }
        Transpose => {
            if req.want[0].is_some() {
                let perm = op.attrs.ints("perm").ok_or("transpose without perm")?;
                let mut inverse = vec![0i64; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p as usize] = i as i64;
                }
                out[0] = Some(e.transpose(req.dy0()?, &inverse, &req.grad_name(e, 0))?);
            }
        }
        Cast => {
            if let Some(d) = req.want[0] {
                out[0] = Some(e.cast(req.dy0()?, d, &req.grad_name(e, 0))?);
            }
        }
        Concat => {
            let dy = req.dy0()?;
            let axis = e
                .ty(op.results[0])
                .shape
                .axis(op.attrs.int("axis").unwrap_or(0))
                .ok_or("concat axis out of range")?;
            let mut start = 0i64;
            for (i, slot) in out.iter_mut().enumerate() {
                let len = ty(e, i).shape.dims()[axis] as i64;
                if req.want[i].is_some() {
                    let attrs = Attrs::new()
                        .with("axis", Attr::Int(axis as i64))
                        .with("start", Attr::Int(start))
                        .with("end", Attr::Int(start + len));
                    let dtype = e.ty(dy).dtype;
                    let name = req.grad_name(e, i);
                    *slot = Some(e.one(Slice, vec![dy], attrs, &name, dtype)?);
                }
                start += len;
            }
        }
        CrossEntropy => {
            if let Some(d) = req.want[0] {
                let operands = vec![op.operands[0], op.operands[1], req.dy0()?];
                let name = req.grad_name(e, 0);
                out[0] = Some(e.one(CrossEntropyGrad, operands, Attrs::new(), &name, d)?);
            }
        }
        Slice => {
            if req.want[0].is_some() {
                let dims = ty(e, 0).shape.dims().to_vec();
                let axis = axis_attr(e, op.operands[0], op)?;
                let (start, end) = (int_attr(op, "start")?, int_attr(op, "end")?);
                let attrs = Attrs::new()
                    .with("axis", Attr::Int(axis as i64))
                    .with("before", Attr::Int(start))
                    .with("after", Attr::Int(dims[axis] as i64 - end));
                let dy = req.dy0()?;
                let dtype = e.ty(dy).dtype;
                out[0] = Some(e.one(Pad, vec![dy], attrs, &req.grad_name(e, 0), dtype)?);
            }
        }
        Pad => {
            if req.want[0].is_some() {
                let len = ty(e, 0).shape.dims().to_vec();
                let axis = axis_attr(e, op.operands[0], op)?;
                let before = int_attr(op, "before")?;
                let attrs = Attrs::new()
                    .with("axis", Attr::Int(axis as i64))
                    .with("start", Attr::Int(before))
                    .with("end", Attr::Int(before + len[axis] as i64));
                let dy = req.dy0()?;
                let dtype = e.ty(dy).dtype;
                out[0] = Some(e.one(Slice, vec![dy], attrs, &req.grad_name(e, 0), dtype)?);
            }
        }
        Matmul => matmul(e, req, &mut out)?,
        MoeTopk => {
            // Only the weights are differentiable: the indices are integers, and the selection
            // (and so its bias, `e_score_correction_bias`) is piecewise constant.
            if let (Some(d), Some(dw)) = (req.want[0], req.dy[0]) {
                let mut attrs = Attrs::new();
                for key in ["score_func", "norm_topk_prob", "route_scale"] {
                    let v = op
                        .attrs
                        .get(key)
                        .ok_or_else(|| format!("moe_topk without `{key}`"))?;
                    attrs = attrs.with(key, v.clone());
                }
                let logits = named(op.moe_topk_operands())?.logits;
                let operands = vec![logits, op.results[1], dw];
                let name = req.grad_name(e, 0);
                out[0] = Some(e.one(MoeTopkGrad, operands, attrs, &name, d)?);
            }
        }
        GroupedLinear => grouped_linear(e, req, &mut out)?,
        // A loss term's weight (MTP's λ / D): the cotangent scaled alike.
        Scale => {
            if let (Some(d), Some(dy)) = (req.want[0], req.dy[0]) {
                let factor = op
                    .attrs
                    .get("factor")
                    .ok_or("scale without `factor`")?
                    .clone();
                let attrs = Attrs::new().with("factor", factor);
                out[0] = Some(e.one(Scale, vec![dy], attrs, &req.grad_name(e, 0), d)?);
            }
        }
        BalanceLoss => {
            // Only the logits are differentiable (the fractions f_i are the selection's).
            if let (Some(d), Some(dloss)) = (req.want[0], req.dy[0]) {
                let o = named(op.balance_loss_operands())?;
                let operands = vec![o.logits, o.indices, dloss];
                let name = req.grad_name(e, 0);
                let attrs = op.attrs.clone();
                out[0] = Some(e.one(BalanceLossGrad, operands, attrs, &name, d)?);
            }
        }
        MoeCombine => {
            let o = named(op.moe_combine_operands())?;
            let at = named(MoeCombineOperands::positions(op.operands.len()))?;
            let (y, w, dout) = (o.y, o.weights, req.dy0()?);
            if req.want[0].is_some() || req.want[1].is_some() {
                let names = [req.grad_name(e, 0), req.grad_name(e, 1)];
                let d = req.want[0].unwrap_or(e.ty(y).dtype);
                let r = e.op(MoeCombineGrad, vec![y, w, dout], Attrs::new(), &names, &[d])?;
                out[0] = req.want[0].map(|_| r[0]);
                out[1] = req.want[1].map(|_| r[1]);
            }
            // The shared experts' output is added as it is.
            if let Some(shared) = at.shared.filter(|&s| req.want[s].is_some()) {
                out[shared] = Some(dout);
            }
        }
        Attention | AttentionQuant => {
            return Err(format!(
                "`{}` is fused; differentiate before fuse-attention",
                op.kind
            ));
        }
        AddRmsNorm | AddRmsNormQuant => {
            return Err(format!(
                "`{}` is fused; differentiate before fuse-residual-norm",
                op.kind
            ));
        }
        Quantize | Dequantize | Fp8Partials | Promote | Fp8Gemm | RmsNormQuant | SwigluQuant => {
            return Err(format!(
                "`{}` is an FP8 lowering; differentiate before quantize-linears (the recipe is \
                 applied to the backward by the same passes)",
                op.kind
            ));
        }
        CrossEntropyGrad | RmsNormGrad | SoftmaxGrad | SiluGrad | SwigluGrad | RopeGrad
        | EmbeddingGrad | ReduceSum | GlobalNorm | AdamW | GroupedLinearWgrad | MoeCombineGrad
        | MoeTopkGrad | ExpertBiasUpdate | BalanceLossGrad => {
            return Err(format!(
                "`{}` is part of a backward or an optimizer step; higher-order gradients are not supported",
                op.kind
            ));
        }
    }
    Ok(out)
}

/// The `axis` attribute of `op`, resolved against the rank of `v`.
fn axis_attr(e: &Emit, v: ValueId, op: &Op) -> Result<usize> {
    e.ty(v)
        .shape
        .axis(op.attrs.int("axis").unwrap_or(0))
        .ok_or_else(|| format!("{} axis out of range", op.kind))
}

fn int_attr(op: &Op, key: &str) -> Result<i64> {
    op.attrs
        .int(key)
        .ok_or_else(|| format!("{} without `{key}`", op.kind))
}

/// `matmul(a, b)` (`[.., M, K] · [.., K, N]`, or `[.., N, K]` with `transpose_b`), its VJP as
/// matmuls: `da = dc · bᵀ` (`dc · b` with `transpose_b`), `db = aᵀ · dc` (`dcᵀ · a`).
fn matmul(e: &mut Emit, req: &Request, out: &mut [Option<ValueId>]) -> Result<()> {
    let op = req.op;
    let (a, b, dc) = (op.operands[0], op.operands[1], req.dy0()?);
    let tb = op.attrs.bool("transpose_b").unwrap_or(false);
    let rank = e.ty(a).shape.rank();
    let mut swap: Vec<i64> = (0..rank as i64).collect();
    swap.swap(rank - 2, rank - 1);
    let transposed = Attrs::new().with("transpose_b", Attr::Bool(true));
    if let Some(d) = req.want[0] {
        let attrs = if tb { Attrs::new() } else { transposed.clone() };
        let name = req.grad_name(e, 0);
        out[0] = Some(e.one(OpKind::Matmul, vec![dc, b], attrs, &name, d)?);
    }
    if let Some(d) = req.want[1] {
        let operands = if tb {
            vec![e.transpose(dc, &swap, &req.bwd("dc_t"))?, a]
        } else {
            vec![e.transpose(a, &swap, &req.bwd("a_t"))?, dc]
        };
        let name = req.grad_name(e, 1);
        out[1] = Some(e.one(OpKind::Matmul, operands, Attrs::new(), &name, d)?);
    }
    Ok(())
}

/// `grouped_linear(x, w, indices)`: Dgrad `dx[t, j] = dy[t, j] · w[e]` as a grouped linear of
/// dy through the transposed experts `wᵀ [E, K, N]` (so quantize-linears gives the FP8 roles'
/// Dgrad the recipe's form), summed over the slots when x is one row per token; the k-grouped
/// Wgrad `dw[e] = Σ dyᵀ · x` over each expert's rows (`grouped_linear_wgrad`, with the
/// forward's scale formats of dY and x for its FP8 form).
fn grouped_linear(e: &mut Emit, req: &Request, out: &mut [Option<ValueId>]) -> Result<()> {
    let op = req.op;
    let o = named(op.grouped_linear_operands())?;
    let (x, w, indices, dy) = (o.x, o.w, o.indices, req.dy0()?);
    if let Some(d) = req.want[0] {
        let wt = e.transpose(w, &[0, 2, 1], &req.bwd("w_t"))?;
        let per_slot = e.ty(x).shape.rank() == 3;
        let name = if per_slot {
            req.grad_name(e, 0)
        } else {
            req.bwd("dx_slots")
        };
        let attrs = recipe_formats(op, Attrs::new(), BackwardGemm::Dgrad);
        let dx = e.one(
            OpKind::GroupedLinear,
            vec![dy, wt, indices],
            attrs,
            &name,
            d,
        )?;
        out[0] = Some(if per_slot {
            dx
        } else {
            e.reduce_sum(dx, 1, &req.grad_name(e, 0), d)?
        });
    }
    if let Some(d) = req.want[1] {
        let experts = e.ty(w).shape.dims()[0] as i64;
        let mut attrs = Attrs::new().with("experts", Attr::Int(experts));
        // The recipe's scale formats of dY and x (DESIGN.md §8), for its FP8 form.
        for key in [
            dsc_ir::infer::DY_SCALE_FORMAT,
            dsc_ir::infer::X_SCALE_FORMAT,
        ] {
            if let Some(f) = op.attrs.get(key) {
                attrs.set(key, f.clone());
            }
        }
        let name = req.grad_name(e, 1);
        out[1] = Some(e.one(
            OpKind::GroupedLinearWgrad,
            vec![dy, x, indices],
            attrs,
            &name,
            d,
        )?);
    }
    Ok(())
}

/// `linear(x, w[, b])`: Dgrad `dx = dy · w` as `linear(dy, wᵀ)`, Wgrad `dw = dyᵀ · x` as
/// `linear(dyᵀ, xᵀ)` over the flattened tokens, `db = Σ_tokens dy`.
fn linear(e: &mut Emit, req: &Request, out: &mut [Option<ValueId>]) -> Result<()> {
    let op = req.op;
    if op.attrs.str("gemm").is_some_and(|g| g != "fprop") {
        return Err("a backward linear (dgrad/wgrad) has no gradient here".into());
    }
    let o = named(op.linear_operands())?;
    let at = named(LinearOperands::positions(op.operands.len()))?;
    let (x, w, dy) = (o.x, o.w, req.dy0()?);
    // The bias's wanted gradient dtype, when it has one.
    let want_bias = at.bias.and_then(|b| req.want[b]);
    let (n, k) = {
        let d = e.ty(w).shape.dims();
        (d[0], d[1])
    };
    let rows = e.ty(x).shape.numel() / k.max(1);
    let gemm = |g: &str| Attrs::new().with("gemm", Attr::Str(g.into()));
    if let Some(d) = req.want[0] {
        let wt = e.transpose(w, &[1, 0], &req.bwd("w_t"))?;
        out[0] = Some(e.one(
            OpKind::Linear,
            vec![dy, wt],
            recipe_formats(op, gemm("dgrad"), BackwardGemm::Dgrad),
            &req.grad_name(e, 0),
            d,
        )?);
    }
    let needs_rows = req.want[1].is_some() || want_bias.is_some();
    if !needs_rows {
        return Ok(());
    }
    let dy2 = e.reshape(dy, &[rows, n], &req.bwd("dy_rows"))?;
    if let Some(d) = req.want[1] {
        let x2 = e.reshape(x, &[rows, k], &req.bwd("x_rows"))?;
        let dy_t = e.transpose(dy2, &[1, 0], &req.bwd("dy_t"))?;
        let x_t = e.transpose(x2, &[1, 0], &req.bwd("x_t"))?;
        let name = req.grad_name(e, 1);
        let attrs = recipe_formats(op, gemm("wgrad"), BackwardGemm::Wgrad);
        out[1] = Some(e.one(OpKind::Linear, vec![dy_t, x_t], attrs, &name, d)?);
    }
    if let (Some(b), Some(d)) = (at.bias, want_bias) {
        let name = req.grad_name(e, b);
        out[b] = Some(e.reduce_sum(dy2, 0, &name, d)?);
    }
    Ok(())
}

/// Which backward GEMM of a forward one [`recipe_formats`] marks.
#[derive(Clone, Copy, PartialEq)]
enum BackwardGemm {
    /// `dx = dy · w`: its x is dY.
    Dgrad,
    /// `dw = dyᵀ · xᵀ`: its x is dYᵀ, its w the forward's xᵀ.
    Wgrad,
}

/// `attrs` plus the scale formats the forward GEMM `fwd` names for its tensors (DESIGN.md §8,
/// set by the training-step builder): dY's (`dy_scale_format`) on the Dgrad's and Wgrad's x,
/// x's (`x_scale_format`) on the Wgrad's w, which is xᵀ. The Dgrad's w, the weight's
/// transpose, keeps the policy's.
fn recipe_formats(fwd: &dsc_ir::Op, mut attrs: Attrs, gemm: BackwardGemm) -> Attrs {
    use dsc_ir::infer::{DY_SCALE_FORMAT, W_SCALE_FORMAT, X_SCALE_FORMAT};
    if let Some(dy) = fwd.attrs.get(DY_SCALE_FORMAT) {
        attrs.set(X_SCALE_FORMAT, dy.clone());
    }
    if gemm == BackwardGemm::Wgrad
        && let Some(x) = fwd.attrs.get(X_SCALE_FORMAT)
    {
        attrs.set(W_SCALE_FORMAT, x.clone());
    }
    attrs
}

/// The cotangent of an `add` operand that was broadcast over leading axes: `dy` summed over them.
fn broadcast_sum(e: &mut Emit, req: &Request, dy: ValueId, i: usize) -> Result<ValueId> {
    let target = e.ty(req.op.operands[i]).shape.dims().to_vec();
    let full = e.ty(dy).shape.dims().to_vec();
    if full == target {
        return Ok(dy);
    }
    let lead: u64 = full[..full.len() - target.len()].iter().product();
    let mut dims = vec![lead];
    dims.extend(&target);
    let rows = e.reshape(dy, &dims, &req.bwd("dy_lead"))?;
    let d = req.want[i].unwrap_or(DType::F32);
    let name = req.grad_name(e, i);
    e.reduce_sum(rows, 0, &name, d)
}

/// `[B, T, H, D]` summed over each group of `H / kv_heads` heads → `[B, T, kv_heads, D]`
/// (query head `h` reads kv head `h / group`).
fn sum_head_groups(
    e: &mut Emit,
    x: ValueId,
    kv_heads: u64,
    name: &str,
    dtype: DType,
) -> Result<ValueId> {
    let d = e.ty(x).shape.dims().to_vec();
    if d[2] == kv_heads {
        return e.cast(x, dtype, name);
    }
    let grouped = e.reshape(
        x,
        &[d[0], d[1], kv_heads, d[2] / kv_heads, d[3]],
        &format!("{name}.heads"),
    )?;
    e.reduce_sum(grouped, 3, name, dtype)
}

/// `attn_scores(q, k[, q_pe, k_pe])`: `s = scale·(q·kᵀ + q_pe·k_peᵀ)`, so `dq = scale·ds·k` and
/// `dk = scale·dsᵀ·q` (summed over the heads sharing a kv head), each an `attn_values`.
fn attn_scores(e: &mut Emit, req: &Request, out: &mut [Option<ValueId>]) -> Result<()> {
    let op = req.op;
    let ds = req.dy0()?;
    let scale = op.attrs.float("scale").ok_or("attn_scores without scale")?;
    let scale_attrs = Attrs::new().with("factor", Attr::Float(scale));
    let mut ds_t = None;
    // The main pair and the decoupled RoPE pair, by their positions among the operands.
    let at = named(AttnScoresOperands::positions(op.operands.len()))?;
    for (qi, ki) in [Some((at.q, at.k)), at.pe()].into_iter().flatten() {
        let (q, k) = (op.operands[qi], op.operands[ki]);
        if let Some(d) = req.want[qi] {
            let raw = e.one(
                OpKind::AttnValues,
                vec![ds, k],
                Attrs::new(),
                &req.bwd("dq"),
                d,
            )?;
            let name = req.grad_name(e, qi);
            out[qi] = Some(e.one(OpKind::Scale, vec![raw], scale_attrs.clone(), &name, d)?);
        }
        if let Some(d) = req.want[ki] {
            let t = match ds_t {
                Some(t) => t,
                None => *ds_t.insert(e.transpose(ds, &[0, 1, 3, 2], &req.bwd("ds_t"))?),
            };
            let per_head = e.one(
                OpKind::AttnValues,
                vec![t, q],
                Attrs::new(),
                &req.bwd("dk_heads"),
                d,
            )?;
            let kv_heads = e.ty(k).shape.dims()[2];
            let raw = sum_head_groups(e, per_head, kv_heads, &req.bwd("dk"), d)?;
            let name = req.grad_name(e, ki);
            out[ki] = Some(e.one(OpKind::Scale, vec![raw], scale_attrs.clone(), &name, d)?);
        }
    }
    Ok(())
}

/// `attn_values(p, v)`: `dp = do·vᵀ` (an unmasked, unscaled `attn_scores`; the softmax's
/// gradient zeroes the masked entries) and `dv = pᵀ·do` summed over the heads sharing v's.
fn attn_values(e: &mut Emit, req: &Request, out: &mut [Option<ValueId>]) -> Result<()> {
    let op = req.op;
    let o = named(op.attn_values_operands())?;
    let (p, v, dout) = (o.p, o.v, req.dy0()?);
    if let Some(d) = req.want[0] {
        let attrs = Attrs::new()
            .with("scale", Attr::Float(1.0))
            .with("causal", Attr::Bool(false));
        let name = req.grad_name(e, 0);
        out[0] = Some(e.one(OpKind::AttnScores, vec![dout, v], attrs, &name, d)?);
    }
    if let Some(d) = req.want[1] {
        let p_t = e.transpose(p, &[0, 1, 3, 2], &req.bwd("p_t"))?;
        let per_head = e.one(
            OpKind::AttnValues,
            vec![p_t, dout],
            Attrs::new(),
            &req.bwd("dv_heads"),
            d,
        )?;
        let v_heads = e.ty(v).shape.dims()[2];
        let name = req.grad_name(e, 1);
        out[1] = Some(sum_head_groups(e, per_head, v_heads, &name, d)?);
    }
    Ok(())
}
