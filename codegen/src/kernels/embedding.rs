//! `embedding`: `out[t, :] = table[ids[t], :]`: one 16-byte chunk of a row per thread where rows
//! split into whole chunks ([`super::row_chunks`]), else one output element per thread.
//!
//! Ids are checked against the vocabulary by the runtime before upload (the CPU reference
//! rejects an out-of-range id with an error); the kernel still never reads outside the table:
//! an out-of-range id yields zeros.

use dsc_ir::DType;
use serde::Serialize;

use super::row_chunks::{RowChunks, load_elements, store_elements};
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

    /// The chunk form's layout: rows in whole 16-byte chunks of the table, stored as f32 or
    /// bf16.
    fn chunks(&self) -> Option<RowChunks> {
        let chunks = RowChunks::for_rows(self.dim, self.table)?;
        matches!(self.output, DType::F32 | DType::Bf16).then_some(chunks)
    }

    /// One thread per 16-byte chunk of a row, else per output element.
    pub fn launch(&self) -> Launch {
        match self.chunks() {
            Some(chunks) => Launch::per_element(self.tokens * chunks.per_row(self.dim)),
            None => Launch::per_element(self.tokens * self.dim),
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(chunks) = self.chunks() {
            return self.build_chunked(chunks, module, entry);
        }
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

    /// The chunk form: thread `i` copies chunk `i % per_row` of row `i / per_row`, read (zeros
    /// for an id outside the table) and written 16 bytes at a time.
    fn build_chunked(
        &self,
        chunks: RowChunks,
        module: &KernelModule<'_>,
        entry: &str,
    ) -> Result<(), CodegenError> {
        let per_row = chunks.per_row(self.dim);
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.tokens * per_row,
            |e, args, i| {
                let (ids, table, out) = (args[0], args[1], args[2]);
                let per_row = e.index(per_row as i64)?;
                let t = e.divui(i, per_row)?;
                let c = e.remui(i, per_row)?;
                let id = e.load(ids, t)?;
                let (row, valid) = e.checked_index(id, self.vocab as i64)?;
                let dim = e.index(self.dim as i64)?;
                let offset = e.muli(c, e.index(chunks.per_chunk as i64)?)?;
                let source = e.addi(e.muli(row, dim)?, offset)?;
                let values = load_elements(&e, table, self.table, source, chunks.per_chunk, valid)?;
                let destination = e.addi(e.muli(t, dim)?, offset)?;
                let always = e.int(1, 1)?;
                store_elements(&e, &values, out, self.output, destination, always)
            },
        )
    }
}
