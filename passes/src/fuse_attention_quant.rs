//! `fuse-attention-quant`: a fused `attention` whose output only a `quantize` reads
//! (directly, or through the `[B, S, H·Dv]` reshape that feeds the output projection) becomes
//! `attention_quant`, which quantizes its output as it writes it. The output projection's
//! activation quantize (one more launch that reads the whole BF16 output back) goes, and the
//! attention writes one byte per element where it wrote two.
//!
//! The numbers are the pair's: the kernel rounds each output to v's dtype, as `attention`
//! stores it, then quantizes 1 × `act_tile` groups as `quantize` does. A group must lie within
//! one head's row (each attention block holds whole rows of one head), so `act_tile` divides
//! Dv; through a reshape it also divides the reshaped row, so the groups are the same runs of
//! memory either way and the quantize's codes and scales are reshapes of the fused op's.

use crate::{PassError, PassOptions};
use dsc_ir::{Attr, Graph, OpKind, Precision, ValueId};

/// Folds each eligible `quantize` of a fused attention's output into the attention.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let uses = graph.use_counts();
    // The one op reading `v`, when `v` is read once and is not a graph output.
    let mut reader = vec![None; graph.values.len()];
    for (i, op) in graph.ops.iter().enumerate() {
        for v in &op.operands {
            reader[v.index()] = Some(i);
        }
    }
    let only_reader = |v: ValueId| {
        let read_once = uses[v.index()] == 1 && !graph.outputs.contains(&v);
        reader[v.index()].filter(|_| read_once)
    };
    let mut folds = Vec::new();
    for (i, op) in graph.ops.iter().enumerate() {
        if op.kind != OpKind::Attention {
            continue;
        }
        let out = op.results[0];
        let Some(next) = only_reader(out) else {
            continue;
        };
        let (reshape, quantize) = match graph.ops[next].kind {
            OpKind::Quantize => (None, next),
            OpKind::Reshape => match only_reader(graph.ops[next].results[0]) {
                Some(q) if graph.ops[q].kind == OpKind::Quantize => (Some(next), q),
                _ => continue,
            },
            _ => continue,
        };
        let quantized = graph.ops[quantize].operands[0];
        let tile = match graph.ops[quantize].attrs.ints("block") {
            Some(&[1, tile]) if tile > 0 => tile as u64,
            _ => continue,
        };
        let fp8 = graph.ops[quantize]
            .attrs
            .dtype("dtype")
            .is_some_and(|d| d.is_fp8());
        let v_dim = graph.ty(out).shape.last();
        let row = graph.ty(quantized).shape.last();
        let stored_as_v = op
            .fused_attention_operands()
            .is_ok_and(|o| graph.ty(o.v).dtype == graph.ty(out).dtype);
        if fp8 && stored_as_v && v_dim.is_multiple_of(tile) && row.is_multiple_of(tile) {
            folds.push((i, reshape, quantize, tile));
        }
    }
    let mut dead = vec![false; graph.ops.len()];
    for (i, reshape, quantize, tile) in folds {
        let q = graph.ops[quantize].clone();
        let (codes, scales) = match reshape {
            None => (q.results[0], q.results[1]),
            Some(r) => {
                // Per-head codes and scales, reshaped into the quantize's results.
                let out = graph.ops[i].results[0];
                let mut codes_ty = graph.ty(out).clone();
                codes_ty.dtype = graph.ty(q.results[0]).dtype;
                let mut scales_ty = graph.ty(q.results[1]).clone();
                let mut dims = codes_ty.shape.dims().to_vec();
                if let Some(d) = dims.last_mut() {
                    *d /= tile;
                }
                scales_ty.shape = dsc_ir::Shape(dims);
                let name = fresh(graph, &format!("{}.scale", graph.name(out)));
                let scales = graph.add_value(name, scales_ty);
                graph.values[out.index()].ty = codes_ty;
                let to = |v: ValueId, g: &Graph| {
                    let dims = g.ty(v).shape.dims().iter().map(|&d| d as i64).collect();
                    Attr::Ints(dims)
                };
                let codes_shape = to(q.results[0], graph);
                let scales_shape = to(q.results[1], graph);
                // A reshape computes in its operand's dtype (assign-precision's rule).
                let moves = |dtype| {
                    Some(Precision {
                        compute: dtype,
                        accumulate: None,
                    })
                };
                let (codes_dtype, scales_dtype) = (graph.ty(out).dtype, graph.ty(scales).dtype);
                let view = graph.ops[r].clone();
                let op = &mut graph.ops[r];
                op.results = vec![q.results[0]];
                op.attrs.set("shape", codes_shape);
                op.precision = view.precision.and(moves(codes_dtype));
                let op = &mut graph.ops[quantize];
                op.kind = OpKind::Reshape;
                op.operands = vec![scales];
                op.results = vec![q.results[1]];
                op.attrs = view.attrs;
                op.attrs.set("shape", scales_shape);
                op.role = view.role;
                op.precision = view.precision.and(moves(scales_dtype));
                (out, scales)
            }
        };
        if reshape.is_none() {
            dead[quantize] = true;
        }
        let op = &mut graph.ops[i];
        op.kind = OpKind::AttentionQuant;
        op.results = vec![codes, scales];
        for key in ["dtype", "scale_format"] {
            if let Some(a) = q.attrs.get(key) {
                op.attrs.set(key, a.clone());
            }
        }
        op.attrs.set("act_tile", Attr::Int(tile as i64));
    }
    graph.remove_ops(&dead);
    Ok(())
}

/// `base`, or `base.N` for the first N that no value of `graph` is named.
fn fresh(graph: &Graph, base: &str) -> String {
    let taken = |name: &str| graph.values.iter().any(|v| v.name == name);
    if !taken(base) {
        return base.to_string();
    }
    (1..)
        .map(|n| format!("{base}.{n}"))
        .find(|name| !taken(name))
        .expect("some suffix is free")
}
