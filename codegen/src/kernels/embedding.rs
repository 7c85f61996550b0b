//! `embedding`: `out[t, :] = table[ids[t], :]`, one output element per thread.
//!
//! Ids are checked against the vocabulary by the runtime before upload (the CPU reference
//! rejects an out-of-range id with an error); the kernel still never reads outside the table:
//! an out-of-range id yields zeros.

use dsc_ir::DType;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// A row gather of `tokens` rows of width `dim` from a `[vocab, dim]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Embedding {
    /// Ids (rows gathered).
    pub tokens: u64,
    /// Table rows.
    pub vocab: u64,
    /// Row width.
    pub dim: u64,
    /// Table dtype.
    pub table: DType,
    /// Output dtype.
    pub output: DType,
}

impl Embedding {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "embedding"
    }

    /// `(ids, table, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("ids", DType::I32, self.tokens),
            Param::new("table", self.table, self.vocab * self.dim),
            Param::new("out", self.output, self.tokens * self.dim),
        ]
    }

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.tokens * self.dim)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.tokens * self.dim,
            |e, args, i| {
                let ids = args[0];
                let table = args[1];
                let out = args[2];
                let dim = e.index(self.dim as i64)?;
                let t = e.divui(i, dim)?;
                let d = e.remui(i, dim)?;
                let id = e.load(ids, t)?;
                let (row, valid) = e.checked_index(id, self.vocab as i64)?;
                let source = e.muli(row, dim)?;
                let source = e.addi(source, d)?;
                let value = e.load(table, source)?;
                let value = e.to_f32(value)?;
                let zero = e.f32(0.0)?;
                let value = e.select(valid, value, zero)?;
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}
