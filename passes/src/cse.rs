//! `cse`: merges ops of the same kind, operands, attributes, role, precision and result
//! types; later duplicates read the first op's results instead and become dead (dce removes
//! them).

use crate::{PassError, PassOptions};
use dsc_ir::{Attrs, Graph, OpKind, Precision, Role, TensorType, ValueId};
use std::collections::HashMap;

#[derive(PartialEq, Eq, Hash)]
struct OpKey {
    kind: OpKind,
    operands: Vec<ValueId>,
    attrs: Attrs,
    role: Role,
    precision: Option<Precision>,
    types: Vec<TensorType>,
}

/// Redirects uses of duplicate ops to the first occurrence and drops the duplicates.
/// An op defining a graph output is never dropped: outputs keep their names.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let outputs: std::collections::HashSet<ValueId> = graph.outputs.iter().copied().collect();
    let mut seen: HashMap<OpKey, Vec<ValueId>> = HashMap::new();
    // Replacements apply to operands of later ops as we go, so chains of duplicates collapse
    // in one sweep.
    let mut replace: HashMap<ValueId, ValueId> = HashMap::new();
    let mut duplicate = vec![false; graph.ops.len()];
    for (i, op) in graph.ops.iter_mut().enumerate() {
        for v in &mut op.operands {
            if let Some(&r) = replace.get(v) {
                *v = r;
            }
        }
        let key = OpKey {
            kind: op.kind,
            operands: op.operands.clone(),
            attrs: op.attrs.clone(),
            role: op.role,
            precision: op.precision,
            types: op
                .results
                .iter()
                .map(|&r| graph.values[r.index()].ty.clone())
                .collect(),
        };
        match seen.get(&key) {
            Some(first) if !op.results.iter().any(|r| outputs.contains(r)) => {
                duplicate[i] = true;
                for (&dup, &orig) in op.results.iter().zip(first) {
                    replace.insert(dup, orig);
                }
            }
            Some(_) => {}
            None => {
                seen.insert(key, op.results.clone());
            }
        }
    }
    let mut dup = duplicate.into_iter();
    graph.ops.retain(|_| !dup.next().unwrap_or(false));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_ir::{DType, GraphBuilder, TensorType};

    #[test]
    fn merges_duplicates_transitively_but_never_an_output() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", TensorType::new(DType::Bf16, [2, 8])).unwrap();
        let a1 = b
            .op(OpKind::Silu, "a1", Role::Ffn, &[x], Attrs::new(), None)
            .unwrap();
        let a2 = b
            .op(OpKind::Silu, "a2", Role::Ffn, &[x], Attrs::new(), None)
            .unwrap();
        let s1 = b
            .op(
                OpKind::Add,
                "s1",
                Role::Residual,
                &[a1, x],
                Attrs::new(),
                None,
            )
            .unwrap();
        let s2 = b
            .op(
                OpKind::Add,
                "s2",
                Role::Residual,
                &[a2, x],
                Attrs::new(),
                None,
            )
            .unwrap();
        let m = b
            .op(OpKind::Mul, "m", Role::Other, &[s1, s2], Attrs::new(), None)
            .unwrap();
        // Same computation as `a1` but a graph output: must survive under its own name.
        let out2 = b
            .op(OpKind::Silu, "out2", Role::Ffn, &[x], Attrs::new(), None)
            .unwrap();
        b.output(m);
        b.output(out2);
        let mut g = b.finish();
        run(&mut g, &PassOptions::default()).unwrap();
        let names: Vec<_> = g.ops.iter().map(|o| g.op_name(o).to_string()).collect();
        assert_eq!(names, ["a1", "s1", "m", "out2"]);
        assert_eq!(g.ops[2].operands, vec![s1, s1]);
        dsc_ir::verify(&g).unwrap();
    }
}
