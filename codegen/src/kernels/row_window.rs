//! An operand read in place from a wider tensor: each of its rows is a window of a row of
//! that tensor, a slice of the last axis folded into the kernel so that its copy is never made
//! (MLA's q_nope, k_nope and values read by attention; q_pe and k_pe by rope; the compressed kv
//! by its norm).

use melior::ir::Value;
use serde::Serialize;

use crate::mlir::emit::{Emit, Emitted};

/// Where an operand read in place lies: each row of it is its own row length's elements from
/// `offset` of a row of `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowWindow {
    /// Elements per row of the tensor the operand is read from.
    pub stride: u64,
    /// Where the operand's elements start in that row.
    pub offset: u64,
}

impl RowWindow {
    /// Whether every `per`-element chunk of the window is aligned to `per` in the wider rows
    /// too (the 16-byte forms read whole chunks).
    pub fn whole_chunks(window: Option<Self>, per: u64) -> bool {
        window.is_none_or(|r| r.stride.is_multiple_of(per) && r.offset.is_multiple_of(per))
    }

    /// The index of row `row`'s first element in the tensor read: `row · len` for an operand
    /// that is its own tensor (`window` `None`, rows of `len`), else `row · stride + offset`.
    pub fn row_start<'c, 'a>(
        window: Option<Self>,
        e: &Emit<'c, 'a>,
        row: Value<'c, 'a>,
        len: u64,
    ) -> Emitted<'c, 'a> {
        let (stride, offset) = window.map_or((len, 0), |r| (r.stride, r.offset));
        let start = e.muli(row, e.index(stride as i64)?)?;
        if offset == 0 {
            return Ok(start);
        }
        e.addi(start, e.index(offset as i64)?)
    }
}
