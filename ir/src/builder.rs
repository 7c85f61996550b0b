//! Builds graphs op by op, inferring result types and keeping names unique.

use crate::infer::infer;
use crate::{Attrs, DType, Graph, Op, OpKind, Role, TensorType, ValueId};
use std::collections::HashMap;

/// An error while building: the op (or value) name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op `{name}` ({kind}): {message}")]
pub struct BuildError {
    pub name: String,
    pub kind: &'static str,
    pub message: String,
}

/// How an op's results are named and typed: `dtype` replaces the first result's natural
/// dtype where the kind leaves it free; `extra` labels the further results.
struct ResultNames<'a> {
    dtype: Option<DType>,
    extra: &'a [&'a str],
}

/// Appends ops to a graph, checking each one as it goes.
pub struct GraphBuilder {
    graph: Graph,
    names: HashMap<String, ValueId>,
}

impl GraphBuilder {
    /// Starts an empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            graph: Graph::new(name),
            names: HashMap::new(),
        }
    }

    /// The graph built so far.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Mutable access, for the policy and outputs.
    pub fn graph_mut(&mut self) -> &mut Graph {
        &mut self.graph
    }

    /// Finishes building.
    pub fn finish(self) -> Graph {
        self.graph
    }

    /// The value named `name`, if any.
    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    fn claim(&mut self, name: &str, kind: &'static str) -> Result<(), BuildError> {
        if name.is_empty() || self.names.contains_key(name) {
            return Err(BuildError {
                name: name.to_string(),
                kind,
                message: if name.is_empty() {
                    "empty name".into()
                } else {
                    format!("duplicate name `{name}`")
                },
            });
        }
        Ok(())
    }

    /// Adds a graph input.
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<ValueId, BuildError> {
        self.claim(name, "input")?;
        let id = self.graph.add_input(name, ty);
        self.names.insert(name.to_string(), id);
        Ok(id)
    }

    /// Adds a parameter (weight), or returns the existing one of that name and type (tied weights).
    pub fn param(&mut self, name: &str, ty: TensorType) -> Result<ValueId, BuildError> {
        if let Some(&id) = self.names.get(name)
            && self.graph.is_param(id)
        {
            if *self.graph.ty(id) == ty {
                return Ok(id);
            }
            return Err(BuildError {
                name: name.to_string(),
                kind: "param",
                message: format!(
                    "parameter is used as {ty} here but as {} elsewhere",
                    self.graph.ty(id)
                ),
            });
        }
        self.claim(name, "param")?;
        let id = self.graph.add_param(name, ty);
        self.names.insert(name.to_string(), id);
        Ok(id)
    }

    /// Appends an op whose first result is named `name` (further results `name.<label>` from
    /// `extra`), infers its result types and returns its results.
    pub fn op_multi(
        &mut self,
        kind: OpKind,
        name: &str,
        role: Role,
        operands: &[ValueId],
        attrs: Attrs,
        extra: &[&str],
    ) -> Result<Vec<ValueId>, BuildError> {
        self.append(
            kind,
            name,
            role,
            operands,
            attrs,
            ResultNames { dtype: None, extra },
        )
    }

    fn append(
        &mut self,
        kind: OpKind,
        name: &str,
        role: Role,
        operands: &[ValueId],
        attrs: Attrs,
        results: ResultNames<'_>,
    ) -> Result<Vec<ValueId>, BuildError> {
        let ResultNames { dtype, extra } = results;
        let err = |message: String| BuildError {
            name: name.to_string(),
            kind: kind.name(),
            message,
        };
        let ins: Vec<_> = operands.iter().map(|&v| self.graph.ty(v)).collect();
        let inferred = infer(kind, &attrs, &ins).map_err(err)?;
        if inferred.len() != extra.len() + 1 {
            return Err(err(format!(
                "{kind} has {} results, {} names given",
                inferred.len(),
                extra.len() + 1
            )));
        }
        let mut names = vec![name.to_string()];
        names.extend(extra.iter().map(|e| format!("{name}.{e}")));
        for n in &names {
            self.claim(n, kind.name())?;
        }
        let mut results = Vec::with_capacity(names.len());
        for (i, (n, inf)) in names.iter().zip(inferred).enumerate() {
            let d = match (i, dtype, inf.dtype) {
                (0, Some(d), crate::infer::ResultDType::Free(_)) => d,
                (_, _, rule) => rule.default_dtype(),
            };
            let id = self.graph.add_value(
                n.clone(),
                TensorType {
                    dtype: d,
                    shape: inf.shape,
                },
            );
            self.names.insert(n.clone(), id);
            results.push(id);
        }
        self.graph.ops.push(Op {
            kind,
            operands: operands.to_vec(),
            results: results.clone(),
            attrs,
            role,
            precision: None,
        });
        Ok(results)
    }

    /// Appends a single-result op named `name`; `dtype` overrides the natural result dtype
    /// where the kind leaves it free.
    pub fn op(
        &mut self,
        kind: OpKind,
        name: &str,
        role: Role,
        operands: &[ValueId],
        attrs: Attrs,
        dtype: Option<DType>,
    ) -> Result<ValueId, BuildError> {
        let results = ResultNames { dtype, extra: &[] };
        Ok(self.append(kind, name, role, operands, attrs, results)?[0])
    }

    /// Marks a value as a graph output.
    pub fn output(&mut self, v: ValueId) {
        self.graph.outputs.push(v);
    }
}
