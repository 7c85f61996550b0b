//! `infer-shapes`: recomputes every op's result shapes (and the dtypes its kind fixes) from
//! its operands, in program order, so a pass that changes a shape upstream can rely on it.

use crate::{PassError, PassOptions};
use dsc_ir::Graph;
use dsc_ir::infer::{ResultDType, infer};

/// Rewrites result types to what the operands imply.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    for i in 0..graph.ops.len() {
        let op = &graph.ops[i];
        let ins: Vec<_> = op.operands.iter().map(|&v| graph.ty(v)).collect();
        let inferred = infer(op.kind, &op.attrs, &ins).map_err(|message| PassError::Op {
            pass: "infer-shapes",
            op: graph.op_name(op).to_string(),
            message,
        })?;
        let results = op.results.clone();
        for (r, inf) in results.into_iter().zip(inferred) {
            let ty = &mut graph.values[r.index()].ty;
            ty.shape = inf.shape;
            if let ResultDType::Fixed(d) = inf.dtype {
                ty.dtype = d;
            }
        }
    }
    Ok(())
}
