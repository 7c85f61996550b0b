//! The graph: values (inputs, parameters, op results), ops in program order, outputs.

use crate::{Op, PrecisionPolicy, TensorType};
use std::collections::HashMap;
use std::fmt;

/// Index of a value in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index into [`Graph::values`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A named tensor value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueData {
    /// Unique in the graph; parameters carry their Hugging Face name (`{e}` marks the expert axis).
    pub name: String,
    pub ty: TensorType,
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueDef {
    /// The n-th graph input.
    Input(usize),
    /// The n-th parameter (weight).
    Param(usize),
    /// Result `result` of the op at position `op` in program order.
    OpResult { op: usize, result: usize },
}

/// A model graph. Ops are kept in program (topological) order; the verifier checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    pub policy: PrecisionPolicy,
    /// The value arena; values of removed ops stay here unreferenced.
    pub values: Vec<ValueData>,
    pub inputs: Vec<ValueId>,
    pub params: Vec<ValueId>,
    pub ops: Vec<Op>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// An empty graph with the default precision policy.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            policy: PrecisionPolicy::default(),
            values: Vec::new(),
            inputs: Vec::new(),
            params: Vec::new(),
            ops: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds a value to the arena (not yet an input, parameter or result).
    pub fn add_value(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueData {
            name: name.into(),
            ty,
        });
        id
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.add_value(name, ty);
        self.inputs.push(id);
        id
    }

    /// Adds a parameter (weight).
    pub fn add_param(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.add_value(name, ty);
        self.params.push(id);
        id
    }

    /// The data of a value.
    pub fn value(&self, id: ValueId) -> &ValueData {
        &self.values[id.index()]
    }

    /// The type of a value.
    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    /// The name of a value.
    pub fn name(&self, id: ValueId) -> &str {
        &self.values[id.index()].name
    }

    /// The name of an op: the name of its first result.
    pub fn op_name(&self, op: &Op) -> &str {
        op.results.first().map_or("<no result>", |&r| self.name(r))
    }

    /// Where each live value is defined.
    pub fn defs(&self) -> HashMap<ValueId, ValueDef> {
        let mut defs = HashMap::with_capacity(self.values.len());
        for (i, &v) in self.inputs.iter().enumerate() {
            defs.insert(v, ValueDef::Input(i));
        }
        for (i, &v) in self.params.iter().enumerate() {
            defs.insert(v, ValueDef::Param(i));
        }
        for (op, o) in self.ops.iter().enumerate() {
            for (result, &v) in o.results.iter().enumerate() {
                defs.insert(v, ValueDef::OpResult { op, result });
            }
        }
        defs
    }

    /// Removes the ops whose entry in `marked` (indexed like `ops`) is true, keeping the
    /// others in order; ops past the end of `marked` stay.
    pub fn remove_ops(&mut self, marked: &[bool]) {
        let mut marked = marked.iter();
        self.ops
            .retain(|_| !marked.next().copied().unwrap_or(false));
    }

    /// How many times each value is read (by ops and as a graph output).
    pub fn use_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.values.len()];
        for op in &self.ops {
            for &v in &op.operands {
                counts[v.index()] += 1;
            }
        }
        for &v in &self.outputs {
            counts[v.index()] += 1;
        }
        counts
    }

    /// True when `v` is a parameter.
    pub fn is_param(&self, v: ValueId) -> bool {
        self.params.contains(&v)
    }
}

impl fmt::Display for Graph {
    /// The text format (see `text/print.rs`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::print(self))
    }
}
