//! `fold-weights`: weight quantization happens once, at load or compile time, never per
//! forward pass. Each `quantize` of a parameter becomes two parameters in the layout of
//! DeepSeek-V3's Hugging Face checkpoints: the weight itself, now FP8 (`….weight`), and its
//! block scales (`….weight_scale_inv`, f32, the multipliers). A BF16 checkpoint is quantized
//! by the loader under the graph's policy; an FP8 one is read as it is.

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use dsc_ir::param_names::scale_name;
use dsc_ir::{Graph, OpKind, ValueId};
use std::collections::{HashMap, HashSet};

const PASS: &str = "fold-weights";

/// Replaces every quantize of a parameter by an FP8 parameter and its scale parameter.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let mut is_param = vec![false; graph.values.len()];
    for &p in &graph.params {
        is_param[p.index()] = true;
    }
    // How many ops read each parameter: a weight read in high precision elsewhere cannot
    // become FP8 in place.
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, op) in graph.ops.iter().enumerate() {
        for &v in &op.operands {
            if is_param[v.index()] {
                readers.entry(v).or_default().push(i);
            }
        }
    }
    let mut names = NameSet::of(graph);
    let mut replace: HashMap<ValueId, ValueId> = HashMap::new();
    let mut folded = HashSet::new();
    // Each weight's new scale parameter, placed right after it once every quantize is seen
    // (inserting one at a time would move the rest of the list each time).
    let mut scale_of: HashMap<ValueId, ValueId> = HashMap::new();
    for i in 0..graph.ops.len() {
        let op = &graph.ops[i];
        let w = match op.operands.first() {
            Some(&w) if op.kind == OpKind::Quantize && is_param[w.index()] => w,
            _ => continue,
        };
        let others: Vec<_> = readers[&w].iter().filter(|&&j| j != i).collect();
        if let Some(&&j) = others.first() {
            return Err(PassError::Op {
                pass: PASS,
                op: graph.op_name(op).to_string(),
                message: format!(
                    "weight `{}` is quantized here but also read by `{}`; a weight is stored \
                     once, so give both uses the same precision",
                    graph.name(w),
                    graph.op_name(&graph.ops[j])
                ),
            });
        }
        let (q, s) = (op.results[0], op.results[1]);
        let (q_ty, s_ty) = (graph.ty(q).clone(), graph.ty(s).clone());
        let scale = graph.add_value(names.fresh(&scale_name(graph.name(w))), s_ty);
        graph.values[w.index()].ty = q_ty;
        scale_of.insert(w, scale);
        replace.insert(q, w);
        replace.insert(s, scale);
        folded.insert(i);
    }
    if !scale_of.is_empty() {
        let mut params = Vec::with_capacity(graph.params.len() + scale_of.len());
        for &p in &graph.params {
            params.push(p);
            params.extend(scale_of.get(&p));
        }
        graph.params = params;
    }
    for op in &mut graph.ops {
        for v in &mut op.operands {
            if let Some(&r) = replace.get(v) {
                *v = r;
            }
        }
    }
    let mut index = 0..;
    graph
        .ops
        .retain(|_| !folded.contains(&index.next().unwrap_or(0)));
    Ok(())
}
