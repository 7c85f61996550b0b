//! `cse`: merges ops of the same kind, operands, attributes, role, precision and result
//! types; later duplicates read the first op's results instead and become dead (dce removes
//! them).

use crate::{PassError, PassOptions};
use dsc_ir::{Graph, Op, OpKind, Role, ValueData, ValueId};
use rustc_hash::FxHashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// What makes two ops the same computation, borrowed from the op and the graph's values.
#[derive(PartialEq)]
struct OpKey<'a> {
    kind: OpKind,
    operands: &'a [ValueId],
    attrs: &'a dsc_ir::Attrs,
    role: Role,
    precision: Option<dsc_ir::Precision>,
    types: Vec<&'a dsc_ir::TensorType>,
}

impl<'a> OpKey<'a> {
    fn of(op: &'a Op, values: &'a [ValueData]) -> Self {
        OpKey {
            kind: op.kind,
            operands: &op.operands,
            attrs: &op.attrs,
            role: op.role,
            precision: op.precision,
            types: op.results.iter().map(|&r| &values[r.index()].ty).collect(),
        }
    }

    fn hash(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        (
            self.kind,
            self.operands,
            self.attrs,
            self.role,
            self.precision,
        )
            .hash(&mut h);
        self.types.hash(&mut h);
        h.finish()
    }
}

/// Redirects uses of duplicate ops to the first occurrence and drops the duplicates.
/// An op defining a graph output is never dropped: outputs keep their names.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let mut is_output = vec![false; graph.values.len()];
    for &v in &graph.outputs {
        is_output[v.index()] = true;
    }
    // The first op of each key, found by the key's hash (the ops are compared, not cloned).
    let hasher = rustc_hash::FxBuildHasher;
    let mut seen: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
    // Replacements apply to operands of later ops as we go, so chains of duplicates collapse
    // in one sweep.
    let mut replace: FxHashMap<ValueId, ValueId> = FxHashMap::default();
    let mut duplicate = vec![false; graph.ops.len()];
    for (i, is_duplicate) in duplicate.iter_mut().enumerate() {
        for v in &mut graph.ops[i].operands {
            if let Some(&r) = replace.get(v) {
                *v = r;
            }
        }
        let op = &graph.ops[i];
        let key = OpKey::of(op, &graph.values);
        let hash = key.hash(&hasher);
        let firsts = seen.entry(hash).or_default();
        let first = firsts
            .iter()
            .find(|&&j| OpKey::of(&graph.ops[j], &graph.values) == key);
        match first {
            Some(&j) if !op.results.iter().any(|r| is_output[r.index()]) => {
                *is_duplicate = true;
                for (&dup, &orig) in op.results.iter().zip(&graph.ops[j].results) {
                    replace.insert(dup, orig);
                }
            }
            Some(_) => {}
            None => firsts.push(i),
        }
    }
    graph.remove_ops(&duplicate);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_ir::{Attrs, DType, GraphBuilder, TensorType};

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
