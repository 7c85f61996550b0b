//! `cache-swiglu-inputs`: DeepSeek-V3 caches the inputs of the MoE's SwiGLU in FP8 and
//! recomputes SwiGLU from them in the backward (report §3.3, "Inputs of the SwiGLU operator in
//! MoE"; DESIGN.md §8). After `recompute` has moved SwiGLU's recomputation into the backward,
//! the backward still reads the gate and up projections in BF16 (`swiglu_grad`, the recomputed
//! `swiglu`). This pass keeps an FP8 copy of each instead:
//!
//! ```text
//! %act = swiglu(%gate, %up)                                  forward, as before
//! %gate.cache, %gate.cache.scale = quantize(%gate) {block = [1, 128]}   right after it
//! ...  %loss = cross_entropy(...)
//! %gate.from_cache = dequantize(%gate.cache, %gate.cache.scale)         before the first
//! %act.recomputed = swiglu(%gate.from_cache, %up.from_cache)            backward reader
//! %gate.grad, %up.grad = swiglu_grad(%gate.from_cache, %up.from_cache, %act.grad)
//! ```
//!
//! so the forward leaves 1×128-tiled FP8 codes (and their scales) for the backward, not BF16.
//! The copies use the policy's FP8 format, activation tile and scale format. Only the SwiGLU of
//! routed and shared experts (roles `expert`, `shared_expert`) is cached; a dense FFN's is not.
//! Unlike `recompute` alone this changes the numbers: the backward sees the SwiGLU of
//! FP8-rounded inputs. A graph without a loss is not a training step and is left as it is.
//! Run it after `recompute` (whose copies it rewrites) and last (`cse` would merge nothing away,
//! but `dce` is not needed either).

use crate::names::NameSet;
use crate::train_step::loss_op;
use crate::{PassError, PassOptions};
use dsc_ir::infer::add_inferred_results;
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Precision, Role, ValueDef, ValueId};
use std::collections::{BTreeMap, HashMap};

const PASS: &str = "cache-swiglu-inputs";

/// Caches the MoE SwiGLU inputs the backward reads in FP8 (see the module docs).
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let Some(loss_at) = loss_op(graph) else {
        return Ok(());
    };
    let defs = graph.defs();
    // The forward SwiGLU inputs of the MoE roles, each with the position of its (first) SwiGLU.
    let mut cached: BTreeMap<usize, Vec<ValueId>> = BTreeMap::new();
    let mut is_cached: HashMap<ValueId, usize> = HashMap::new();
    for (i, op) in graph.ops[..loss_at].iter().enumerate() {
        let moe = matches!(op.role, Role::Expert | Role::SharedExpert);
        if !moe || !matches!(op.kind, OpKind::Swiglu | OpKind::SwigluQuant) {
            continue;
        }
        for &v in &op.operands[..2] {
            let forward =
                matches!(defs.get(&v), Some(ValueDef::OpResult { op, .. }) if *op < loss_at);
            if forward && graph.ty(v).dtype.is_high_float() && !is_cached.contains_key(&v) {
                is_cached.insert(v, i);
            }
        }
    }
    // The first backward op reading each.
    let mut first_reader: HashMap<ValueId, usize> = HashMap::new();
    for (i, op) in graph.ops.iter().enumerate().skip(loss_at + 1) {
        for v in &op.operands {
            if is_cached.contains_key(v) {
                first_reader.entry(*v).or_insert(i);
            }
        }
    }
    if first_reader.is_empty() {
        return Ok(());
    }
    for (&v, _) in first_reader.iter() {
        cached.entry(is_cached[&v]).or_default().push(v);
    }
    for vs in cached.values_mut() {
        vs.sort_by_key(|v| v.index());
    }
    let mut dequantize_at: BTreeMap<usize, Vec<ValueId>> = BTreeMap::new();
    for (&v, &at) in &first_reader {
        dequantize_at.entry(at).or_default().push(v);
    }
    for vs in dequantize_at.values_mut() {
        vs.sort_by_key(|v| v.index());
    }

    let policy = graph.policy.clone();
    let mut names = NameSet::of(graph);
    let f32_compute = Precision {
        compute: DType::F32,
        accumulate: None,
    };
    // Value → (codes, scales, the caching SwiGLU's role), then value → its dequantized copy.
    let mut copies: HashMap<ValueId, (ValueId, ValueId, Role)> = HashMap::new();
    let mut restored: HashMap<ValueId, ValueId> = HashMap::new();
    let old_ops = std::mem::take(&mut graph.ops);
    let mut ops = Vec::with_capacity(old_ops.len() + 2 * first_reader.len());
    for (i, mut op) in old_ops.into_iter().enumerate() {
        for &v in dequantize_at.get(&i).into_iter().flatten() {
            let (codes, scales, role) = copies[&v];
            let attrs = Attrs::new()
                .with("dtype", Attr::DType(graph.ty(v).dtype))
                .with("block", Attr::Ints(vec![1, i64::from(policy.act_tile)]));
            let name = names.fresh(&format!("{}.from_cache", graph.name(v)));
            let op = new_op(
                graph,
                OpKind::Dequantize,
                vec![codes, scales],
                attrs,
                &[name],
            )?;
            restored.insert(v, op.results[0]);
            ops.push(Op {
                role,
                precision: Some(f32_compute),
                ..op
            });
        }
        if i > loss_at {
            for v in &mut op.operands {
                if let Some(&r) = restored.get(v) {
                    *v = r;
                }
            }
        }
        let role = op.role;
        ops.push(op);
        for &v in cached.get(&i).into_iter().flatten() {
            let attrs = Attrs::new()
                .with("dtype", Attr::DType(policy.fp8_format))
                .with("block", Attr::Ints(vec![1, i64::from(policy.act_tile)]))
                .with(
                    "scale_format",
                    Attr::Str(policy.scale_format.name().to_string()),
                );
            let base = format!("{}.cache", graph.name(v));
            let result_names = [names.fresh(&base), names.fresh(&format!("{base}.scale"))];
            let q = new_op(graph, OpKind::Quantize, vec![v], attrs, &result_names)?;
            copies.insert(v, (q.results[0], q.results[1], role));
            ops.push(Op {
                role,
                precision: Some(f32_compute),
                ..q
            });
        }
    }
    graph.ops = ops;
    Ok(())
}

/// An op of `kind` with fresh results named `names`, typed by inference.
fn new_op(
    graph: &mut Graph,
    kind: OpKind,
    operands: Vec<ValueId>,
    attrs: Attrs,
    names: &[String],
) -> Result<Op, PassError> {
    let results = add_inferred_results(graph, kind, &attrs, &operands, names.iter().cloned())
        .map_err(|message| PassError::Failed {
            pass: PASS,
            message: format!("{kind}: {message}"),
        })?;
    Ok(Op {
        kind,
        operands,
        results,
        attrs,
        role: Role::Other,
        precision: None,
    })
}
