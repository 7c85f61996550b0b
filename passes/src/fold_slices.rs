//! `fold-slices`: a `rope`, `rms_norm` or `rms_norm_quant` whose x is a slice of the last axis
//! that nothing else reads reads the sliced tensor in place (`x_cols = [start, end]`), so the
//! slice's copy is never made: MLA's q_pe (the last 64 of each head's 192 columns of the q
//! projection's output) and k_pe (the last 64 of `kv_a_proj_with_mqa`'s 576 columns) read by
//! rope, its compressed kv (the first 512) by the kv norm. `fuse-attention` folds the slices
//! attention reads the same way (`q_cols`, `k_cols`, `v_cols`).
//!
//! A slice read through a reshape that keeps the last axis (k_pe, reshaped to one head) folds
//! too: the reshape then takes the whole tensor to the same leading dims with rows of the
//! source's width (keeping its name), and the op reads the window of those rows.
//!
//! The window's start and the source's rows must be whole 16-byte chunks, which the kernels
//! read; elsewhere the slice stays (the kernels' scalar forms would cost more than the copy
//! saves). The pass runs after the fusions: `fuse` forms `rms_norm_quant` and
//! `fuse-residual-norm` folds the add of a norm's x, neither of which carries a window.

use crate::{PassError, PassOptions};
use dsc_ir::infer::{X_COLS, X_WINDOWED};
use dsc_ir::{Attr, Graph, OpKind, ValueDef, ValueId};
use std::collections::HashMap;

/// A slice an op's x can read in place.
struct Fold {
    /// The index of the slice op.
    slice: usize,
    /// The index of the reshape between the slice and the op, if any.
    reshape: Option<usize>,
    /// The sliced tensor.
    source: ValueId,
    /// The window of its last axis.
    cols: [i64; 2],
}

/// Folds each foldable slice into the rope or norm that reads it.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let uses = graph.use_counts();
    let defs = graph.defs();
    let mut dead = vec![false; graph.ops.len()];
    for i in 0..graph.ops.len() {
        let op = &graph.ops[i];
        if !X_WINDOWED.contains(&op.kind) || op.attrs.get(X_COLS).is_some() {
            continue;
        }
        let Some(&x) = op.operands.first() else {
            continue;
        };
        let Some(fold) = foldable(graph, &defs, &uses, x) else {
            continue;
        };
        match fold.reshape {
            Some(r) => {
                // The reshape keeps x's leading dims, now of whole rows of the source.
                let mut dims = graph.ty(x).shape.dims().to_vec();
                if let Some(last) = dims.last_mut() {
                    *last = graph.ty(fold.source).shape.last();
                }
                let shape = dims.iter().map(|&d| d as i64).collect();
                let reshape = &mut graph.ops[r];
                reshape.operands[0] = fold.source;
                reshape.attrs.set("shape", Attr::Ints(shape));
                graph.values[x.index()].ty.shape = dsc_ir::Shape(dims);
            }
            None => graph.ops[i].operands[0] = fold.source,
        }
        graph.ops[i]
            .attrs
            .set(X_COLS, Attr::Ints(fold.cols.to_vec()));
        dead[fold.slice] = true;
    }
    graph.remove_ops(&dead);
    Ok(())
}

/// The slice `x` is (directly, or through a reshape keeping the last axis) when that slice
/// can be read in place: of the last axis, read by nothing else (and not a graph output),
/// its start and its source's rows whole 16-byte chunks.
fn foldable(
    graph: &Graph,
    defs: &HashMap<ValueId, ValueDef>,
    uses: &[u32],
    x: ValueId,
) -> Option<Fold> {
    let only_read_once = |v: ValueId| uses[v.index()] == 1;
    let defined_at = |v| match defs.get(&v) {
        Some(&ValueDef::OpResult { op, .. }) => Some(op),
        _ => None,
    };
    let mut at = defined_at(x)?;
    let mut reshape = None;
    if graph.ops[at].kind == OpKind::Reshape {
        let sliced = graph.ops[at].operands[0];
        let keeps_rows = graph.ty(sliced).shape.last() == graph.ty(x).shape.last();
        if !keeps_rows || !only_read_once(x) {
            return None;
        }
        reshape = Some(at);
        at = defined_at(sliced)?;
    }
    let slice = &graph.ops[at];
    let sliced = slice.results[0];
    if slice.kind != OpKind::Slice || !only_read_once(sliced) {
        return None;
    }
    let source = slice.operands[0];
    let ty = graph.ty(source);
    let rank = ty.shape.rank() as i64;
    let axis = slice
        .attrs
        .int("axis")
        .map(|a| if a < 0 { a + rank } else { a });
    let (start, end) = (slice.attrs.int("start")?, slice.attrs.int("end")?);
    let bytes = ty.dtype.size_bytes();
    let whole_chunks = |elements: u64| (elements * bytes).is_multiple_of(16);
    (axis == Some(rank - 1) && whole_chunks(start as u64) && whole_chunks(ty.shape.last()))
        .then_some(Fold {
            slice: at,
            reshape,
            source,
            cols: [start, end],
        })
}
