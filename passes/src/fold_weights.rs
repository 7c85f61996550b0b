//! `fold-weights`: weight quantization happens once, at load or compile time, never per
//! forward pass. Each `quantize` of a parameter becomes two parameters in the layout of
//! DeepSeek-V3's Hugging Face checkpoints: the weight itself, now FP8 (`….weight`), and its
//! block scales (`….weight_scale_inv`, f32, the multipliers). A BF16 checkpoint is quantized
//! by the loader under the graph's policy; an FP8 one is read as it is.

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use dsc_ir::param_names::scale_name;
use dsc_ir::{Graph, OpKind, ValueId};

const PASS: &str = "fold-weights";

/// Replaces every quantize of a parameter by an FP8 parameter and its scale parameter.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let mut is_param = vec![false; graph.values.len()];
    for &p in &graph.params {
        is_param[p.index()] = true;
    }
    // The first op reading each parameter, and the first other op reading it: a weight read
    // in high precision elsewhere cannot become FP8 in place.
    const NONE: usize = usize::MAX;
    let mut readers = vec![[NONE; 2]; graph.values.len()];
    for (i, op) in graph.ops.iter().enumerate() {
        for &v in &op.operands {
            let r = &mut readers[v.index()];
            if is_param[v.index()] && r[0] != i && r[1] == NONE {
                if r[0] == NONE {
                    r[0] = i;
                } else {
                    r[1] = i;
                }
            }
        }
    }
    let mut names = NameSet::of(graph);
    // Indexed by value: what a quantize's results become, and each weight's new scale
    // parameter (placed right after it once every quantize is seen: inserting one at a time
    // would move the rest of the list each time).
    let mut replace: Vec<Option<ValueId>> = vec![None; graph.values.len()];
    let mut scale_of: Vec<Option<ValueId>> = vec![None; graph.values.len()];
    let mut folded = vec![false; graph.ops.len()];
    for (i, is_folded) in folded.iter_mut().enumerate() {
        let op = &graph.ops[i];
        let w = match op.operands.first() {
            Some(&w) if op.kind == OpKind::Quantize && is_param[w.index()] => w,
            _ => continue,
        };
        let [first, second] = readers[w.index()];
        let other = if first != i { first } else { second };
        if other != NONE {
            return Err(PassError::Op {
                pass: PASS,
                op: graph.op_name(op).to_string(),
                message: format!(
                    "weight `{}` is quantized here but also read by `{}`; a weight is stored \
                     once, so give both uses the same precision",
                    graph.name(w),
                    graph.op_name(&graph.ops[other])
                ),
            });
        }
        let (q, s) = (op.results[0], op.results[1]);
        let (q_ty, s_ty) = (graph.ty(q).clone(), graph.ty(s).clone());
        let scale = graph.add_value(names.fresh(&scale_name(graph.name(w))), s_ty);
        graph.values[w.index()].ty = q_ty;
        scale_of[w.index()] = Some(scale);
        replace[q.index()] = Some(w);
        replace[s.index()] = Some(scale);
        *is_folded = true;
    }
    if folded.contains(&true) {
        let mut params = Vec::with_capacity(graph.params.len() * 2);
        for &p in &graph.params {
            params.push(p);
            params.extend(scale_of[p.index()]);
        }
        graph.params = params;
    }
    for op in &mut graph.ops {
        for v in &mut op.operands {
            if let Some(r) = replace.get(v.index()).copied().flatten() {
                *v = r;
            }
        }
    }
    graph.remove_ops(&folded);
    Ok(())
}
