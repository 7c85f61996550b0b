//! `fuse`: kernel fusion by equality saturation (egg).
//!
//! The graph becomes an e-graph (`lang.rs`): every value an e-class, every op a node whose
//! signature child carries its attributes, role, precision and result types; inputs and
//! parameters are leaves. The rules of `rules.rs` add fused alternatives (the FP8 GEMM of
//! quantize → fp8_partials → promote, a norm or SwiGLU that quantizes its own output, shorter
//! cast chains) until nothing new appears; then egg's `Extractor` picks, per e-class, the
//! cheapest term under the cost model of `cost.rs` (bytes between kernels plus launches), and
//! the pass writes the chosen terms back as ops.
//!
//! The translation back keeps the graph recognizable: ops come out in the original program
//! order (a fused op where the op it replaces was), every e-class that holds an original value
//! reuses that value (its id, name and type: the `fp8_gemm` keeps the promote's result, a
//! fused norm's codes and scales the quantize's), and graph outputs keep their values. Ops no
//! output depends on any more are not written back.

mod cost;
mod lang;
mod rules;

pub use cost::{HBM_BYTES_PER_US, LAUNCH_BYTES, LAUNCH_US};

use crate::names::NameSet;
use crate::{PassError, PassOptions};
use cost::KernelCost;
use dsc_ir::{Graph, Op, OpKind, Role, ValueId};
use egg::{Extractor, Id, Runner, SimpleScheduler, StopReason};
use lang::{Data, FuseAnalysis, FuseGraph, Node, Sig, SigId, SigRef, add_get, sig_id};
use rustc_hash::FxHashMap;
use std::time::Duration;

const PASS: &str = "fuse";

/// Rounds of rewriting at most. The rules saturate in three (a cast chain of length n needs
/// n − 1 more); the limit only stops a rule that keeps matching its own output.
const ITERATION_LIMIT: usize = 16;
/// E-nodes at most, as a multiple of the initial e-graph (plus a constant for tiny graphs).
/// Fusion adds at most a few nodes per op.
const NODE_LIMIT_FACTOR: usize = 4;
/// Wall-clock limit of the rewriting (the DeepSeek-V3 graph saturates in milliseconds).
const TIME_LIMIT: Duration = Duration::from_secs(2);

/// Fuses kernels: see the module documentation.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let mut input = Input::translate(graph)?;
    let initial = input.egraph.total_size();
    let shared = input.shared_classes(graph);
    let runner = Runner::default()
        .with_egraph(std::mem::take(&mut input.egraph))
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(ITERATION_LIMIT)
        .with_node_limit(initial * NODE_LIMIT_FACTOR + 1000)
        .with_time_limit(TIME_LIMIT)
        .run(&rules::rules());
    // A limit leaves an e-graph that holds only equal terms, just possibly fewer fused ones:
    // extraction from it is still correct.
    if let Some(StopReason::Other(why)) = &runner.stop_reason {
        return Err(fail(format!("rewriting stopped: {why}")));
    }
    let egraph = runner.egraph;
    let extractor = Extractor::new(&egraph, KernelCost::new(&egraph, shared));
    Output::new(graph, &egraph, &extractor, &input).write(graph)
}

fn fail(message: String) -> PassError {
    PassError::Failed {
        pass: PASS,
        message,
    }
}

/// The e-graph of a graph and where each value went.
struct Input {
    egraph: FuseGraph,
    /// The e-class of each value of the graph (indexed by value; `None` for dead values).
    class_of: Vec<Option<Id>>,
    /// The graph value of each leaf.
    leaf_values: Vec<ValueId>,
    /// The e-class of each op's node (a tuple for a multi-result op), in program order.
    op_classes: Vec<Id>,
    /// The signature of each op, in program order.
    op_sigs: Vec<SigId>,
}

impl Input {
    fn translate(graph: &Graph) -> Result<Input, PassError> {
        let mut egraph = FuseGraph::new(FuseAnalysis::default());
        let mut class_of = vec![None; graph.values.len()];
        let mut leaf_values = Vec::with_capacity(graph.inputs.len() + graph.params.len());
        for &v in graph.inputs.iter().chain(&graph.params) {
            let leaf = egraph.analysis.add_leaf(graph.ty(v).clone());
            class_of[v.index()] = Some(egraph.add(Node::Leaf(leaf)));
            leaf_values.push(v);
        }
        let mut is_output = vec![false; graph.values.len()];
        for &v in &graph.outputs {
            is_output[v.index()] = true;
        }
        let mut op_classes = Vec::with_capacity(graph.ops.len());
        let mut op_sigs = Vec::with_capacity(graph.ops.len());
        for op in &graph.ops {
            let sig = SigRef {
                attrs: &op.attrs,
                role: (op.kind != OpKind::Quantize).then_some(op.role),
                precision: op.precision,
                types: op.results.iter().map(|&r| graph.ty(r)),
                pin: op.results.iter().copied().find(|r| is_output[r.index()]),
            };
            let sig_id = egraph.analysis.intern(sig);
            op_sigs.push(sig_id);
            let mut children = Vec::with_capacity(op.operands.len() + 1);
            children.push(egraph.add(Node::Sig(sig_id)));
            for &v in &op.operands {
                let class = class_of.get(v.index()).copied().flatten().ok_or_else(|| {
                    fail(format!(
                        "op `{}` reads a value defined after it (run `verify`)",
                        graph.op_name(op)
                    ))
                })?;
                children.push(class);
            }
            let class = egraph.add(Node::Op(op.kind, children));
            op_classes.push(class);
            if op.results.len() == 1 {
                class_of[op.results[0].index()] = Some(class);
            } else {
                for (i, &r) in op.results.iter().enumerate() {
                    class_of[r.index()] = Some(add_get(&mut egraph, class, i));
                }
            }
        }
        Ok(Input {
            egraph,
            class_of,
            leaf_values,
            op_classes,
            op_sigs,
        })
    }

    /// The e-classes the input graph reads more than once or outputs: materialized whatever
    /// is extracted (see `cost.rs`).
    fn shared_classes(&self, graph: &Graph) -> Vec<Id> {
        let mut readers = vec![0u32; self.egraph.total_size() + 1];
        let mut read = |c: Id| {
            let c = usize::from(self.egraph.find(c));
            if c >= readers.len() {
                readers.resize(c + 1, 0);
            }
            readers[c] += 1;
        };
        for class in self.egraph.classes() {
            for node in class.iter() {
                if let Node::Op(_, children) = node {
                    children[1..].iter().for_each(|&c| read(c));
                }
            }
        }
        for &v in &graph.outputs {
            if let Some(c) = self.class_of[v.index()] {
                read(c);
            }
        }
        (0..readers.len())
            .filter(|&c| readers[c] > 1)
            .map(Id::from)
            .collect()
    }
}

/// A map from canonical e-classes, stored by index.
struct ClassMap<T>(Vec<Option<T>>);

impl<T> ClassMap<T> {
    fn new(egraph: &FuseGraph) -> Self {
        let len = egraph
            .classes()
            .map(|c| usize::from(c.id) + 1)
            .max()
            .unwrap_or(0);
        ClassMap((0..len).map(|_| None).collect())
    }

    fn get(&self, class: Id) -> Option<&T> {
        self.0.get(usize::from(class)).and_then(Option::as_ref)
    }

    fn contains(&self, class: Id) -> bool {
        self.get(class).is_some()
    }

    fn insert(&mut self, class: Id, value: T) {
        self.0[usize::from(class)] = Some(value);
    }

    fn insert_first(&mut self, class: Id, value: T) {
        let slot = &mut self.0[usize::from(class)];
        if slot.is_none() {
            *slot = Some(value);
        }
    }
}

/// Writes the extracted terms back as ops.
struct Output<'a, 'e> {
    egraph: &'a FuseGraph,
    extractor: &'e Extractor<'a, KernelCost<'a>, Node, FuseAnalysis>,
    input: &'a Input,
    /// The op result each e-class keeps: an output's, else the first in program order.
    /// (Inputs and parameters are written by their leaves.)
    orig: ClassMap<ValueId>,
    /// The role of the first original op of each op e-class, for ops whose signature has
    /// none (quantize).
    roles: ClassMap<Role>,
    /// How to name the results of new e-classes.
    hints: ClassMap<(Id, &'static [&'static str])>,
    /// For each signature, the original ops that have it: their attributes are moved into
    /// the ops written with that signature instead of cloned.
    donors: FxHashMap<SigId, Vec<usize>>,
    /// Every name in the graph, made when a fresh one is first needed.
    names: Option<NameSet>,
    /// The value written for each value e-class.
    written: ClassMap<ValueId>,
    /// The values written for each tuple e-class.
    tuples: ClassMap<Vec<ValueId>>,
    /// Work lists of [`Output::emit`], kept between calls.
    stack: Vec<(Id, bool)>,
    path: Vec<Id>,
    ops: Vec<Op>,
}

impl<'a, 'e> Output<'a, 'e> {
    fn new(
        graph: &Graph,
        egraph: &'a FuseGraph,
        extractor: &'e Extractor<'a, KernelCost<'a>, Node, FuseAnalysis>,
        input: &'a Input,
    ) -> Self {
        let mut orig = ClassMap::new(egraph);
        let mut is_result = vec![false; graph.values.len()];
        for &r in graph.ops.iter().flat_map(|o| &o.results) {
            is_result[r.index()] = true;
        }
        let outputs = graph.outputs.iter().filter(|v| is_result[v.index()]);
        for &v in outputs.chain(graph.ops.iter().flat_map(|o| &o.results)) {
            if let Some(c) = input.class_of[v.index()] {
                orig.insert_first(egraph.find(c), v);
            }
        }
        let mut roles = ClassMap::new(egraph);
        for (op, &class) in graph.ops.iter().zip(&input.op_classes) {
            roles.insert_first(egraph.find(class), op.role);
        }
        let mut hints = ClassMap::new(egraph);
        for (class, hint) in &egraph.analysis.hints {
            hints.insert_first(egraph.find(*class), (hint.base, hint.suffixes));
        }
        let mut donors: FxHashMap<SigId, Vec<usize>> = FxHashMap::default();
        for (j, &s) in input.op_sigs.iter().enumerate().rev() {
            donors.entry(s).or_default().push(j);
        }
        Output {
            egraph,
            extractor,
            input,
            orig,
            roles,
            hints,
            donors,
            names: None,
            written: ClassMap::new(egraph),
            tuples: ClassMap::new(egraph),
            stack: Vec::new(),
            path: Vec::new(),
            ops: Vec::with_capacity(graph.ops.len()),
        }
    }

    /// Emits every op the outputs need, in the original program order where there is one.
    fn write(mut self, graph: &mut Graph) -> Result<(), PassError> {
        let roots: Vec<Id> = graph
            .outputs
            .iter()
            .map(|v| self.class(*v))
            .collect::<Result<_, _>>()?;
        let needed = self.needed(&roots);
        let order: Vec<Id> = graph
            .ops
            .iter()
            .flat_map(|o| &o.results)
            .filter_map(|r| self.input.class_of[r.index()].map(|c| self.egraph.find(c)))
            .filter(|&c| needed.contains(c))
            .chain(roots.iter().copied())
            .collect();
        for class in order {
            self.emit(graph, class)?;
        }
        let outputs: Vec<ValueId> = roots
            .iter()
            .map(|&c| self.written.get(c).copied().unwrap_or(ValueId(u32::MAX)))
            .collect();
        for (&old, &new) in graph.outputs.iter().zip(&outputs) {
            if old != new {
                return Err(fail(format!(
                    "output `{}` would not keep its value",
                    graph.name(old)
                )));
            }
        }
        graph.ops = self.ops;
        Ok(())
    }

    /// The canonical e-class of a graph value.
    fn class(&self, v: ValueId) -> Result<Id, PassError> {
        self.input.class_of[v.index()]
            .map(|c| self.egraph.find(c))
            .ok_or_else(|| fail(format!("output `{}` is not defined", v.0)))
    }

    /// The e-classes a node reads (its signature aside).
    fn deps(node: &Node) -> &[Id] {
        match node {
            Node::Get([_, tuple]) => std::slice::from_ref(tuple),
            Node::Op(_, children) => &children[1..],
            Node::Index(_) | Node::Sig(_) | Node::Leaf(_) => &[],
        }
    }

    /// Every e-class the extracted terms of `roots` reach.
    fn needed(&self, roots: &[Id]) -> ClassMap<()> {
        let mut seen = ClassMap::new(self.egraph);
        let mut stack = Vec::new();
        for &r in roots {
            if !seen.contains(r) {
                seen.insert(r, ());
                stack.push(r);
            }
        }
        while let Some(c) = stack.pop() {
            for &d in Self::deps(self.extractor.find_best_node(c)) {
                let d = self.egraph.find(d);
                if !seen.contains(d) {
                    seen.insert(d, ());
                    stack.push(d);
                }
            }
        }
        seen
    }

    /// True when `class` (a value or a tuple) is written.
    fn is_written(&self, class: Id) -> bool {
        self.written.contains(class) || self.tuples.contains(class)
    }

    /// The value written for the value class `class`.
    fn value(&self, class: Id) -> ValueId {
        let class = self.egraph.find(class);
        self.written
            .get(class)
            .copied()
            .unwrap_or(ValueId(u32::MAX))
    }

    /// Emits `root` after everything it reads (depth first, without recursion).
    fn emit(&mut self, graph: &mut Graph, root: Id) -> Result<(), PassError> {
        let (mut stack, mut path) = (
            std::mem::take(&mut self.stack),
            std::mem::take(&mut self.path),
        );
        stack.clear();
        path.clear();
        stack.push((root, false));
        while let Some((class, ready)) = stack.pop() {
            if self.is_written(class) {
                continue;
            }
            let node = self.extractor.find_best_node(class);
            if ready {
                path.pop();
                self.materialize(graph, class, node)?;
                continue;
            }
            path.push(class);
            stack.push((class, true));
            for &d in Self::deps(node) {
                let d = self.egraph.find(d);
                if path.contains(&d) {
                    return Err(fail("extraction chose a cyclic term".into()));
                }
                if !self.is_written(d) {
                    stack.push((d, false));
                }
            }
        }
        (self.stack, self.path) = (stack, path);
        Ok(())
    }

    /// Writes the value(s) of `class`, whose chosen node is `node` and whose dependencies are
    /// written.
    fn materialize(&mut self, graph: &mut Graph, class: Id, node: &Node) -> Result<(), PassError> {
        match node {
            Node::Leaf(l) => {
                let v = self.input.leaf_values[l.0 as usize];
                self.written.insert(class, v);
            }
            Node::Get([index, tuple]) => {
                let Data::Index(i) = self.egraph[*index].data else {
                    return Err(fail("a projection without an index".into()));
                };
                let tuple = self.tuples.get(self.egraph.find(*tuple));
                let v = tuple.map_or(ValueId(u32::MAX), |t| t[i as usize]);
                self.written.insert(class, v);
            }
            Node::Op(kind, children) => {
                let sig_id = sig_id(self.egraph, children[0]);
                let sig = self.egraph.analysis.sig(sig_id);
                let operands: Vec<ValueId> = children[1..].iter().map(|&c| self.value(c)).collect();
                let results = self.results(graph, class, *kind, sig, &operands);
                if kind.num_results() == 1 {
                    self.written.insert(class, results[0]);
                } else {
                    self.tuples.insert(class, results.clone());
                }
                let role = sig
                    .role
                    .or_else(|| self.roles.get(class).copied())
                    .unwrap_or(Role::Other);
                let donor = self.donors.get_mut(&sig_id).and_then(Vec::pop);
                let attrs = match donor {
                    Some(j) => std::mem::take(&mut graph.ops[j].attrs),
                    None => sig.attrs.clone(),
                };
                self.ops.push(Op {
                    kind: *kind,
                    operands,
                    results,
                    attrs,
                    role,
                    precision: sig.precision,
                });
            }
            Node::Index(_) | Node::Sig(_) => {
                return Err(fail("extraction reached a signature".into()));
            }
        }
        Ok(())
    }

    /// The result values of the op chosen for `class`: the original values of the e-classes
    /// they define where there are some, else fresh ones.
    fn results(
        &mut self,
        graph: &mut Graph,
        class: Id,
        kind: OpKind,
        sig: &Sig,
        operands: &[ValueId],
    ) -> Vec<ValueId> {
        if kind.num_results() == 1 {
            let v = match self.orig.get(class) {
                Some(&v) => {
                    debug_assert_eq!(*graph.ty(v), sig.types[0]);
                    v
                }
                None => {
                    let base = operands.first().map_or("fused", |&v| graph.name(v));
                    let name = format!("{base}.{kind}");
                    let name = self.fresh(graph, &name);
                    graph.add_value(name, sig.types[0].clone())
                }
            };
            return vec![v];
        }
        let mut results = Vec::with_capacity(sig.types.len());
        for (i, ty) in sig.types.iter().enumerate() {
            // The e-class of result i, if this op is what defines it.
            let index = self.egraph.lookup(Node::Index(i as u32));
            let own = index.and_then(|index| {
                let get = Node::Get([index, class]);
                let c = self.egraph.lookup(get.clone())?;
                (*self.extractor.find_best_node(c) == get).then_some(c)
            });
            let v = match own.and_then(|c| self.orig.get(c).copied()) {
                Some(v) => {
                    debug_assert_eq!(graph.ty(v), ty);
                    v
                }
                None => {
                    let name = match self.hints.get(class) {
                        Some(&(base, suffixes)) => {
                            let base = self.orig.get(self.egraph.find(base));
                            let base = base.map_or("fused", |&v| graph.name(v));
                            format!("{base}.{}", suffixes.get(i).unwrap_or(&"result"))
                        }
                        None => format!("fused.{kind}.{i}"),
                    };
                    let name = self.fresh(graph, &name);
                    graph.add_value(name, ty.clone())
                }
            };
            results.push(v);
        }
        results
    }

    /// An unused name derived from `base`.
    fn fresh(&mut self, graph: &Graph, base: &str) -> String {
        self.names
            .get_or_insert_with(|| NameSet::of(graph))
            .fresh(base)
    }
}

#[cfg(test)]
mod tests;
