//! The verifier: checks a graph is well formed and names the op in every error.
//!
//! It checks names (unique, non-empty), that every operand is defined before it is read (a
//! read of a later value is a cycle or misordering, a read of no value is dangling), arity,
//! attributes, shapes and fixed dtypes through `infer`, outputs, and precision annotations.

use crate::graph::ValueDef;
use crate::infer::{ResultDType, infer};
use crate::{Graph, ValueId};
use std::collections::HashMap;
use std::fmt;

/// One verifier finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The op's name and kind, `None` for graph-level errors.
    pub op: Option<(String, &'static str)>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Some((name, kind)) => write!(f, "op `{name}` ({kind}): {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Everything the verifier found, in graph order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Verifies `g`; returns every error found.
pub fn verify(g: &Graph) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    let graph_err = |message: String| VerifyError { op: None, message };

    // Every defined value, where, and whether defined twice.
    let mut defined_at: HashMap<ValueId, ValueDef> = HashMap::new();
    let mut by_name: HashMap<&str, ValueId> = HashMap::new();
    let mut define = |v: ValueId, def: ValueDef, errors: &mut Vec<VerifyError>| {
        if v.index() >= g.values.len() {
            errors.push(graph_err(format!("value #{} does not exist", v.0)));
            return;
        }
        let name = g.name(v);
        if name.is_empty() {
            errors.push(graph_err("a value has an empty name".into()));
        }
        if defined_at.insert(v, def).is_some() {
            errors.push(graph_err(format!("value `{name}` is defined twice")));
        }
        if let Some(prev) = by_name.insert(name, v)
            && prev != v
        {
            errors.push(graph_err(format!("duplicate name `{name}`")));
        }
    };
    for (i, &v) in g.inputs.iter().enumerate() {
        define(v, ValueDef::Input(i), &mut errors);
    }
    for (i, &v) in g.params.iter().enumerate() {
        define(v, ValueDef::Param(i), &mut errors);
    }
    for (op, o) in g.ops.iter().enumerate() {
        for (result, &v) in o.results.iter().enumerate() {
            define(v, ValueDef::OpResult { op, result }, &mut errors);
        }
    }
    if !errors.is_empty() {
        return Err(VerifyErrors(errors));
    }
    for &v in g.inputs.iter().chain(&g.params) {
        if g.ty(v).shape.checked_numel().is_none() {
            errors.push(graph_err(format!(
                "`{}` of type {} has more than 2^48 elements",
                g.name(v),
                g.ty(v)
            )));
        }
    }

    for (pos, op) in g.ops.iter().enumerate() {
        let here = || (g.op_name(op).to_string(), op.kind.name());
        let mut op_err = |message: String| {
            errors.push(VerifyError {
                op: Some(here()),
                message,
            })
        };
        if op.results.is_empty() {
            op_err("op has no results".into());
            continue;
        }
        let mut operands_ok = true;
        for &v in &op.operands {
            match defined_at.get(&v) {
                None => {
                    operands_ok = false;
                    op_err(if v.index() < g.values.len() {
                        format!("operand `{}` is not defined (dangling)", g.name(v))
                    } else {
                        format!("operand #{} does not exist", v.0)
                    });
                }
                Some(ValueDef::OpResult { op: def, .. }) if *def >= pos => {
                    operands_ok = false;
                    op_err(format!(
                        "operand `{}` is defined at or after this op (a cycle, or ops out of order)",
                        g.name(v)
                    ));
                }
                Some(_) => {}
            }
        }
        if !operands_ok {
            continue;
        }
        let ins: Vec<_> = op.operands.iter().map(|&v| g.ty(v)).collect();
        let inferred = match infer(op.kind, &op.attrs, &ins) {
            Ok(i) => i,
            Err(message) => {
                op_err(message);
                continue;
            }
        };
        if inferred.len() != op.results.len() {
            op_err(format!(
                "{} has {} results, expected {}",
                op.kind,
                op.results.len(),
                inferred.len()
            ));
            continue;
        }
        for (&r, want) in op.results.iter().zip(&inferred) {
            let have = g.ty(r);
            if have.shape != want.shape {
                op_err(format!(
                    "result `{}` has shape {}, but its operands give {}",
                    g.name(r),
                    have.shape,
                    want.shape
                ));
            }
            if let ResultDType::Fixed(d) = want.dtype
                && have.dtype != d
            {
                op_err(format!(
                    "result `{}` has dtype {}, but {} produces {d}",
                    g.name(r),
                    have.dtype,
                    op.kind
                ));
            }
        }
        if let Some(p) = op.precision
            && p.compute.is_fp8()
            && !op.kind.is_weight_gemm()
            && op.kind != crate::OpKind::GroupedLinearWgrad
            && !op.kind.is_data_movement()
        {
            op_err(format!(
                "compute dtype {} is only valid for GEMMs, not {}",
                p.compute, op.kind
            ));
        }
    }

    for &v in &g.outputs {
        if !defined_at.contains_key(&v) {
            let name = g.values.get(v.index()).map_or("?", |d| d.name.as_str());
            errors.push(graph_err(format!("output `{name}` is not defined")));
        }
    }
    if g.outputs.is_empty() {
        errors.push(graph_err("the graph has no outputs".into()));
    }
    if let Err(e) = g.policy.validate() {
        errors.push(graph_err(format!("policy: {e}")));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errors))
    }
}
