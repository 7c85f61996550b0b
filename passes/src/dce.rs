//! `dce`: removes ops whose results nothing reads, and parameters no remaining op reads.
//! Every op is pure, so liveness flows backwards from the graph outputs alone.

use crate::{PassError, PassOptions};
use dsc_ir::Graph;

/// Removes dead ops and unused parameters; inputs are the graph's interface and stay.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let mut live = vec![false; graph.values.len()];
    for &v in &graph.outputs {
        live[v.index()] = true;
    }
    let mut keep = vec![false; graph.ops.len()];
    for (i, op) in graph.ops.iter().enumerate().rev() {
        if op.results.iter().any(|r| live[r.index()]) {
            keep[i] = true;
            for &v in &op.operands {
                live[v.index()] = true;
            }
        }
    }
    let mut keep = keep.into_iter();
    graph.ops.retain(|_| keep.next().unwrap_or(true));
    graph.params.retain(|p| live[p.index()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_ir::{Attrs, DType, GraphBuilder, OpKind, Role, TensorType};

    #[test]
    fn removes_dead_ops_and_their_params_but_keeps_inputs() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", TensorType::new(DType::Bf16, [2, 8])).unwrap();
        let w = b.param("w", TensorType::new(DType::Bf16, [4, 8])).unwrap();
        let dead = b
            .op(
                OpKind::Linear,
                "dead",
                Role::Ffn,
                &[x, w],
                Attrs::new(),
                None,
            )
            .unwrap();
        b.op(
            OpKind::Silu,
            "dead2",
            Role::Ffn,
            &[dead],
            Attrs::new(),
            None,
        )
        .unwrap();
        let live = b
            .op(OpKind::Silu, "live", Role::Ffn, &[x], Attrs::new(), None)
            .unwrap();
        b.output(live);
        let mut g = b.finish();
        run(&mut g, &PassOptions::default()).unwrap();
        assert_eq!(g.ops.len(), 1);
        assert_eq!(g.op_name(&g.ops[0]), "live");
        assert!(g.params.is_empty());
        assert_eq!(g.inputs.len(), 1);
    }
}
