//! `autodiff`: reverse-mode differentiation of a graph whose first output is a scalar loss
//! (f32 `[1]`). It appends the backward — the VJP rule of every op that leads from a parameter
//! to the loss (`vjp.rs`, one rule per kind), in reverse program order — and adds each float
//! parameter's gradient as an output named `{param}.grad`, after the existing outputs.
//!
//! The seed cotangent is a graph input, `loss.grad` (f32 `[1]`): 1 for plain training, a loss
//! scale otherwise; the graph holds no constants.
//!
//! A value read by several ops gets the sum of their cotangents (`add`, in program order). A
//! cotangent is stored in its value's dtype, except that the result of a `cast` from an f32
//! value takes f32: a training step reads FP32 master weights through BF16 casts, and their
//! gradients (the Wgrad GEMMs' outputs) stay FP32 (DESIGN.md §8).

mod emit;
mod vjp;

use crate::{PassError, PassOptions};
use dsc_ir::{DType, Graph, OpKind, TensorType, ValueId};
use emit::Emit;
use std::collections::HashMap;

const PASS: &str = "autodiff";

/// The name of the seed cotangent input.
pub const LOSS_GRAD_INPUT: &str = "loss.grad";

/// The name of the gradient output of the parameter named `param`.
pub fn grad_name(param: &str) -> String {
    format!("{param}.grad")
}

/// Appends the backward of output 0 and every parameter's gradient as an output.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let fail = |message: String| PassError::Failed {
        pass: PASS,
        message,
    };
    let &loss = graph
        .outputs
        .first()
        .ok_or_else(|| fail("the graph has no output to differentiate".into()))?;
    let loss_ty = graph.ty(loss).clone();
    if loss_ty != TensorType::new(DType::F32, vec![1]) {
        return Err(fail(format!(
            "output 0 `{}` must be the scalar loss f32[1], got {loss_ty}",
            graph.name(loss)
        )));
    }
    let needs = needs_grad(graph);
    let grad_dtype = grad_dtypes(graph);
    // Values from here on are the backward's.
    let first_backward = graph.values.len();
    let seed = graph.add_input(LOSS_GRAD_INPUT, loss_ty);
    let forward = graph.ops.clone();
    let mut grads: HashMap<ValueId, ValueId> = HashMap::from([(loss, seed)]);
    let mut e = Emit::new(graph);
    for op in forward.iter().rev() {
        let dy: Vec<Option<ValueId>> = op.results.iter().map(|r| grads.get(r).copied()).collect();
        if dy.iter().all(Option::is_none) {
            continue;
        }
        let want: Vec<Option<DType>> = op
            .operands
            .iter()
            .map(|&v| needs[v.index()].then(|| grad_dtype[v.index()]))
            .collect();
        if want.iter().all(Option::is_none) {
            continue;
        }
        let name = e.graph.op_name(op).to_string();
        let op_fail = |message: String| PassError::Op {
            pass: PASS,
            op: name.clone(),
            message,
        };
        e.role = op.role;
        let req = vjp::Request {
            op,
            name: name.clone(),
            dy,
            want,
        };
        let contributions = vjp::vjp(&mut e, &req).map_err(op_fail)?;
        for (&v, contribution) in op.operands.iter().zip(contributions) {
            let Some(c) = contribution else { continue };
            let c = e
                .cast(
                    c,
                    grad_dtype[v.index()],
                    &format!("{}.grad", e.graph.name(v)),
                )
                .map_err(op_fail)?;
            let total = match grads.get(&v) {
                None => c,
                Some(&acc) => {
                    let name = format!("{}.grad", e.graph.name(v));
                    let d = grad_dtype[v.index()];
                    e.one(OpKind::Add, vec![acc, c], Default::default(), &name, d)
                        .map_err(op_fail)?
                }
            };
            grads.insert(v, total);
        }
    }
    let backward = std::mem::take(&mut e.ops);
    graph.ops.extend(backward);
    let params = graph.params.clone();
    for p in params {
        if let Some(&g) = grads.get(&p) {
            let name = grad_name(graph.name(p));
            rename(graph, g, name, first_backward);
            graph.outputs.push(g);
        }
    }
    Ok(())
}

/// Names the gradient value of a parameter `{param}.grad` (the name it was built under may
/// carry a uniquing suffix, or be an `add` of contributions). A backward value holding the
/// name (the first contribution of a parameter read by several ops) is renamed
/// `{param}.grad.part…`; a forward value holding it keeps it.
fn rename(graph: &mut Graph, v: ValueId, name: String, first_backward: usize) {
    if graph.name(v) == name {
        return;
    }
    let Some(holder) = graph.values.iter().position(|d| d.name == name) else {
        graph.values[v.index()].name = name;
        return;
    };
    if holder < first_backward {
        return;
    }
    let taken = |n: &str| graph.values.iter().any(|d| d.name == n);
    let mut part = format!("{name}.part");
    let mut i = 1;
    while taken(&part) {
        part = format!("{name}.part{i}");
        i += 1;
    }
    graph.values[holder].name = part;
    graph.values[v.index()].name = name;
}

/// True for values that depend on a float parameter (whose gradient is wanted).
fn needs_grad(graph: &Graph) -> Vec<bool> {
    let mut needs = vec![false; graph.values.len()];
    for &p in &graph.params {
        needs[p.index()] = graph.ty(p).dtype.is_float();
    }
    for op in &graph.ops {
        // Indices and FP8 codes carry no gradient; neither does an integer result.
        if op.operands.iter().any(|v| needs[v.index()]) {
            for &r in &op.results {
                needs[r.index()] = graph.ty(r).dtype.is_float();
            }
        }
    }
    needs
}

/// The dtype each value's cotangent is kept in (see the module docs).
fn grad_dtypes(graph: &Graph) -> Vec<DType> {
    let mut dtypes: Vec<DType> = graph.values.iter().map(|v| v.ty.dtype).collect();
    for op in &graph.ops {
        if op.kind == OpKind::Cast && graph.ty(op.operands[0]).dtype == DType::F32 {
            dtypes[op.results[0].index()] = DType::F32;
        }
    }
    dtypes
}
