//! Builds the backward's ops: each typed by the shared inference rules, named after the value
//! it differentiates, and carrying the role of the forward op it comes from.

use crate::names::NameSet;
use dsc_ir::infer::{ResultDType, infer};
use dsc_ir::{Attr, Attrs, DType, Graph, Op, OpKind, Role, TensorType, ValueId};

/// The backward under construction: the graph's arena, fresh names and the ops emitted so far.
pub(super) struct Emit<'g> {
    pub graph: &'g mut Graph,
    names: NameSet,
    pub ops: Vec<Op>,
    /// The role of the forward op whose VJP is being emitted.
    pub role: Role,
}

type Result<T> = std::result::Result<T, String>;

impl<'g> Emit<'g> {
    /// A backward for `graph`, emitting nothing yet.
    pub fn new(graph: &'g mut Graph) -> Self {
        let names = NameSet::of(graph);
        Emit {
            graph,
            names,
            ops: Vec::new(),
            role: Role::Other,
        }
    }

    /// The type of `v`.
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.ty(v)
    }

    /// Emits `kind(operands) {attrs}`; result `i` is named `names[i]` (made unique) and stored
    /// in `dtypes[i]` where the kind leaves the dtype free.
    pub fn op(
        &mut self,
        kind: OpKind,
        operands: Vec<ValueId>,
        attrs: Attrs,
        names: &[String],
        dtypes: &[DType],
    ) -> Result<Vec<ValueId>> {
        let ins: Vec<&TensorType> = operands.iter().map(|&v| self.graph.ty(v)).collect();
        let inferred = infer(kind, &attrs, &ins).map_err(|e| format!("{kind}: {e}"))?;
        let mut results = Vec::with_capacity(inferred.len());
        for (i, inf) in inferred.into_iter().enumerate() {
            let dtype = match inf.dtype {
                ResultDType::Fixed(d) => d,
                ResultDType::Free(d) => dtypes.get(i).copied().unwrap_or(d),
            };
            let name = self.names.fresh(&names[i.min(names.len() - 1)]);
            let ty = TensorType {
                dtype,
                shape: inf.shape,
            };
            results.push(self.graph.add_value(name, ty));
        }
        self.ops.push(Op {
            kind,
            operands,
            results: results.clone(),
            attrs,
            role: self.role,
            precision: None,
        });
        Ok(results)
    }

    /// Emits a one-result op named `name`, stored in `dtype` where free.
    pub fn one(
        &mut self,
        kind: OpKind,
        operands: Vec<ValueId>,
        attrs: Attrs,
        name: &str,
        dtype: DType,
    ) -> Result<ValueId> {
        Ok(self.op(kind, operands, attrs, &[name.to_string()], &[dtype])?[0])
    }

    /// `x` reshaped to `dims` (no op when it already has them).
    pub fn reshape(&mut self, x: ValueId, dims: &[u64], name: &str) -> Result<ValueId> {
        if self.ty(x).shape.dims() == dims {
            return Ok(x);
        }
        let shape = Attr::Ints(dims.iter().map(|&d| d as i64).collect());
        let dtype = self.ty(x).dtype;
        self.one(
            OpKind::Reshape,
            vec![x],
            Attrs::new().with("shape", shape),
            name,
            dtype,
        )
    }

    /// `x` with its axes permuted by `perm`.
    pub fn transpose(&mut self, x: ValueId, perm: &[i64], name: &str) -> Result<ValueId> {
        let dtype = self.ty(x).dtype;
        let attrs = Attrs::new().with("perm", Attr::Ints(perm.to_vec()));
        self.one(OpKind::Transpose, vec![x], attrs, name, dtype)
    }

    /// `x` converted to `dtype` (no op when it already is).
    pub fn cast(&mut self, x: ValueId, dtype: DType, name: &str) -> Result<ValueId> {
        if self.ty(x).dtype == dtype {
            return Ok(x);
        }
        let attrs = Attrs::new().with("dtype", Attr::DType(dtype));
        self.one(OpKind::Cast, vec![x], attrs, name, dtype)
    }

    /// `x` summed over `axis`, stored in `dtype`.
    pub fn reduce_sum(
        &mut self,
        x: ValueId,
        axis: i64,
        name: &str,
        dtype: DType,
    ) -> Result<ValueId> {
        let attrs = Attrs::new().with("axis", Attr::Int(axis));
        self.one(OpKind::ReduceSum, vec![x], attrs, name, dtype)
    }
}
