//! `requantize-transposed`: DeepSeek-V3's way of feeding the Wgrad GEMM (report §3.5.2). A
//! training step's Wgrad contracts over the tokens, so quantize-linears quantizes the transposed
//! activations `xᵀ` and gradients `dyᵀ` in 1×128 tiles along the tokens — from the
//! high-precision tensors (Transformer Engine's way). When the same tensor already has an FP8
//! copy in 1×128 tiles along its features (the forward Fprop's input, the Dgrad's `dy`), this
//! pass makes the Wgrad read that copy instead:
//!
//! ```text
//! q, s  = quantize(transpose(reshape(x)))          before: from the BF16 x, kept for backward
//! q, s  = quantize(transpose(reshape(dequantize(x_q, x_s))))   after: from the cached FP8 x
//! ```
//!
//! so the backward needs only the FP8 copy of each linear input (DESIGN.md §8: linear inputs
//! cached in FP8), at the price of a second rounding. A GEMM whose input is cached in the
//! emulated E5M6 (`x_cache = f12e5m6`: the attention output projection's, added by
//! quantize-linears) has its Wgrad's xᵀ made from that copy instead (`….from_e5m6`).
//!
//! The routed experts' FP8 Wgrad (`grouped_linear_wgrad`, which tiles its operands along each
//! expert's rows inside) reads its dY and x the same way: `dequantize` of their FP8 copies
//! (the grouped Dgrad's dY, the forward's x), quantized again along the rows by the op.
//!
//! Leaving the pass out of the pipeline keeps the other way; `[train] wgrad_source` chooses
//! (`dsc train`).

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use dsc_ir::infer::infer;
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Precision, TensorType, ValueDef, ValueId};
use std::collections::HashMap;

const PASS: &str = "requantize-transposed";

/// Rewrites every row-tiled quantize of a transposed tensor that has an FP8 copy.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let defs = graph.defs();
    let def_op = |v: ValueId| match defs.get(&v) {
        Some(ValueDef::OpResult { op, .. }) => Some(*op),
        _ => None,
    };
    // The FP8 copies: (source, attrs) → (quantize position, codes, scales).
    let mut copies: HashMap<ValueId, Vec<(usize, ValueId, ValueId)>> = HashMap::new();
    for (i, op) in graph.ops.iter().enumerate() {
        if op.kind == OpKind::Quantize && row_tile(&op.attrs).is_some() {
            copies
                .entry(op.operands[0])
                .or_default()
                .push((i, op.results[0], op.results[1]));
        }
    }
    let mut matches = Vec::new();
    for (i, op) in graph.ops.iter().enumerate() {
        if op.kind != OpKind::Quantize || row_tile(&op.attrs).is_none() {
            continue;
        }
        let Some(t) = def_op(op.operands[0]).map(|t| &graph.ops[t]) else {
            continue;
        };
        if t.kind != OpKind::Transpose || t.attrs.ints("perm") != Some(&[1, 0][..]) {
            continue;
        }
        let rows = t.operands[0];
        // The tensor autodiff flattened to rows (`…bwd.x_rows`), or, when it was already 2-D,
        // the transposed tensor itself — which may happen to be a reshape too (a MoE layer's
        // `mlp.tokens`), so both are tried.
        let mut candidates = vec![(rows, false)];
        if let Some(r) = def_op(rows).map(|r| &graph.ops[r])
            && r.kind == OpKind::Reshape
        {
            candidates.insert(0, (r.operands[0], true));
        }
        // A copy quantized earlier with the same tile and scale format, and the same format —
        // or an E5M6 cache (`x_cache`, DESIGN.md §8), which is preferred: it is the copy kept
        // for the backward.
        let copy_of = |source: ValueId| {
            let c = copies.get(&source)?;
            let usable = |copy: &&(usize, ValueId, ValueId)| {
                let (j, q, _) = **copy;
                let a = &graph.ops[j].attrs;
                j < i
                    && graph.ty(q).shape == graph.ty(source).shape
                    && a.get("block") == op.attrs.get("block")
                    && a.get("scale_format") == op.attrs.get("scale_format")
            };
            let cache = c
                .iter()
                .filter(usable)
                .find(|&&(_, q, _)| graph.ty(q).dtype == DType::F12E5M6);
            cache.or_else(|| {
                c.iter()
                    .filter(usable)
                    .find(|&&(j, _, _)| graph.ops[j].attrs == op.attrs)
            })
        };
        let found = candidates
            .into_iter()
            .find_map(|(source, reshaped)| Some((source, reshaped, copy_of(source)?)));
        if let Some((source, reshaped, &(_, codes, scales))) = found {
            matches.push(Match {
                at: i,
                source,
                rows: reshaped.then_some(rows),
                codes,
                scales,
            });
        }
    }
    let mut names = NameSet::of(graph);
    let mut rewrites: HashMap<usize, Vec<Op>> = HashMap::new();
    for m in matches {
        let op = graph.ops[m.at].clone();
        let name = graph.op_name(&op).to_string();
        let mut emitted = Vec::new();
        let mut emit =
            |graph: &mut Graph, kind, operands: Vec<ValueId>, attrs: Attrs, suffix: &str| {
                let ins: Vec<&TensorType> = operands.iter().map(|&v| graph.ty(v)).collect();
                let inferred = infer(kind, &attrs, &ins).map_err(|message| PassError::Op {
                    pass: PASS,
                    op: name.clone(),
                    message,
                })?;
                let ty = TensorType {
                    dtype: inferred[0].dtype.default_dtype(),
                    shape: inferred[0].shape.clone(),
                };
                let compute = if kind == OpKind::Dequantize {
                    DType::F32
                } else {
                    ty.dtype
                };
                let v = graph.add_value(names.fresh(&format!("{name}.{suffix}")), ty);
                emitted.push(Op {
                    kind,
                    operands,
                    results: vec![v],
                    attrs,
                    role: op.role,
                    precision: Some(Precision {
                        compute,
                        accumulate: None,
                    }),
                });
                Ok::<ValueId, PassError>(v)
            };
        let high = graph.ty(m.source).dtype;
        let deq_attrs = Attrs::new()
            .with("dtype", Attr::DType(high))
            .with("block", op.attrs.get("block").expect("row tile").clone());
        let from = if graph.ty(m.codes).dtype == DType::F12E5M6 {
            "from_e5m6"
        } else {
            "from_fp8"
        };
        let codes = vec![m.codes, m.scales];
        let mut v = emit(graph, OpKind::Dequantize, codes, deq_attrs, from)?;
        if let Some(rows) = m.rows {
            let shape = graph
                .ty(rows)
                .shape
                .dims()
                .iter()
                .map(|&d| d as i64)
                .collect();
            let attrs = Attrs::new().with("shape", Attr::Ints(shape));
            v = emit(
                graph,
                OpKind::Reshape,
                vec![v],
                attrs,
                &format!("{from}.rows"),
            )?;
        }
        let attrs = Attrs::new().with("perm", Attr::Ints(vec![1, 0]));
        v = emit(
            graph,
            OpKind::Transpose,
            vec![v],
            attrs,
            &format!("{from}.t"),
        )?;
        let mut requant = op;
        requant.operands = vec![v];
        emitted.push(requant);
        rewrites.insert(m.at, emitted);
    }
    let feeds: Vec<(usize, GroupedWgradFeed)> = (graph.ops.iter().enumerate())
        .filter_map(|(i, op)| Some((i, grouped_wgrad_feed(graph, &copies, i, op)?)))
        .collect();
    for (i, feed) in feeds {
        let op = graph.ops[i].clone();
        rewrites.insert(i, feed.ops(graph, &mut names, &op));
    }
    if rewrites.is_empty() {
        return Ok(());
    }
    let ops = std::mem::take(&mut graph.ops);
    for (i, op) in ops.into_iter().enumerate() {
        match rewrites.remove(&i) {
            Some(replacement) => graph.ops.extend(replacement),
            None => graph.ops.push(op),
        }
    }
    Ok(())
}

/// A Wgrad operand's quantize with an earlier FP8 copy of its source.
struct Match {
    /// The quantize's position.
    at: usize,
    /// The tensor that was transposed (through `rows`, a reshape to 2-D, when there is one).
    source: ValueId,
    rows: Option<ValueId>,
    /// The earlier copy's codes and scales.
    codes: ValueId,
    scales: ValueId,
}

/// The tile width of a `[1, t]` quantize.
fn row_tile(attrs: &Attrs) -> Option<i64> {
    match attrs.ints("block") {
        Some(&[1, t]) => Some(t),
        _ => None,
    }
}

/// The FP8 copies of a value: (quantize position, codes, scales).
type Copies = HashMap<ValueId, Vec<(usize, ValueId, ValueId)>>;

/// The earlier FP8 copies an FP8 `grouped_linear_wgrad` (the routed experts' Wgrad, which
/// quantizes its operands along the contracted rows itself) can read its dY and x from.
struct GroupedWgradFeed {
    /// Per operand (dy, x): the copy's codes and scales and its tile, when there is one.
    copies: [Option<(ValueId, ValueId, i64)>; 2],
}

/// Finds the copies for op `i` when it is an FP8 `grouped_linear_wgrad`: quantized earlier in
/// 1 × tile groups along the features, in its format, with the scale format it quantizes that
/// operand with.
fn grouped_wgrad_feed(
    graph: &Graph,
    copies: &Copies,
    i: usize,
    op: &Op,
) -> Option<GroupedWgradFeed> {
    use dsc_ir::infer::{DY_SCALE_FORMAT, X_SCALE_FORMAT};
    let format = op.precision.map(|p| p.compute).filter(|d| d.is_fp8())?;
    if op.kind != OpKind::GroupedLinearWgrad {
        return None;
    }
    let o = op.grouped_linear_wgrad_operands().ok()?;
    let copy_of = |source: ValueId, key: &str| {
        let scale_format = op.attrs.get(key)?;
        copies.get(&source)?.iter().find_map(|&(j, q, scales)| {
            let a = &graph.ops[j].attrs;
            let usable = j < i
                && graph.ty(q).dtype == format
                && graph.ty(q).shape == graph.ty(source).shape
                && a.get("scale_format") == Some(scale_format);
            usable.then(|| Some((q, scales, row_tile(a)?)))?
        })
    };
    let copies = [copy_of(o.dy, DY_SCALE_FORMAT), copy_of(o.x, X_SCALE_FORMAT)];
    copies
        .iter()
        .any(Option::is_some)
        .then_some(GroupedWgradFeed { copies })
}

impl GroupedWgradFeed {
    /// `dequantize` of each copy, then `op` reading them in place of its operands.
    fn ops(&self, graph: &mut Graph, names: &mut NameSet, op: &Op) -> Vec<Op> {
        let name = graph.op_name(op).to_string();
        let mut out = Vec::new();
        let mut op = op.clone();
        for (slot, (copy, what)) in self.copies.iter().zip(["dy", "x"]).enumerate() {
            let Some((codes, scales, tile)) = *copy else {
                continue;
            };
            let source = op.operands[slot];
            let ty = graph.ty(source).clone();
            let attrs = Attrs::new()
                .with("dtype", Attr::DType(ty.dtype))
                .with("block", Attr::Ints(vec![1, tile]));
            let v = graph.add_value(names.fresh(&format!("{name}.{what}.from_fp8")), ty);
            out.push(Op {
                kind: OpKind::Dequantize,
                operands: vec![codes, scales],
                results: vec![v],
                attrs,
                role: op.role,
                precision: Some(Precision {
                    compute: DType::F32,
                    accumulate: None,
                }),
            });
            op.operands[slot] = v;
        }
        out.push(op);
        out
    }
}
