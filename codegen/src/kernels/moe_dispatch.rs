//! `moe_dispatch`: the permutation that groups the rows of a routed-expert GEMM by expert, in
//! DeepGEMM's contiguous layout — each expert's rows `r = t·top_k + slot` in increasing order,
//! its segment padded to a multiple of the GEMM's tile rows (16 for `mma.sync`, 64 for wgmma),
//! `rows[p] = r` (−1 for padding), and `tiles[p / tile_rows]` = the expert of each tile (−1 for
//! unused tiles).
//!
//! The spec and CPU reference are `dsc_kernels::ops::moe_dispatch`. One thread builds it (a
//! counting sort over `tokens · top_k` entries, the reference's algorithm step for step); it
//! runs once per layer and its result is shared by the layer's gate, up and down GEMMs.

use dsc_ir::DType;
use melior::dialect::memref;
use melior::ir::r#type::MemRefType;
use melior::ir::{BlockLike, Value};
use serde::Serialize;

use super::{Launch, Param, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// Rows of one `mma.sync` tile.
pub const TILE_ROWS: u64 = 16;

/// The dispatch of `tokens · top_k` routed rows over `experts` experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MoeDispatch {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Experts.
    pub experts: u64,
    /// Rows of the GEMMs' tiles (a power of two): every expert's segment is padded to a
    /// multiple of it.
    pub tile_rows: u64,
}

impl MoeDispatch {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_dispatch"
    }

    /// Padded rows: enough for every expert's segment rounded up to `tile_rows`.
    pub fn capacity(&self) -> u64 {
        dsc_kernels::ops::moe_dispatch::dispatch_capacity(
            self.tokens * self.top_k,
            self.experts,
            self.tile_rows,
        )
    }

    /// `(indices, rows, tiles)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("indices", DType::I32, self.tokens * self.top_k),
            Param::new("rows", DType::I32, self.capacity()),
            Param::new("tiles", DType::I32, self.capacity() / self.tile_rows),
        ]
    }

    /// One thread.
    pub fn launch(&self) -> Launch {
        Launch::blocks(1, 1)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let indices: Value = block.argument(0)?.into();
            let rows: Value = block.argument(1)?.into();
            let tiles: Value = block.argument(2)?.into();
            let experts = self.experts as i64;
            let array = MemRefType::new(e.int_type(32), &[experts], None, None);
            let start = e.push(memref::alloca(context, array, &[], &[], None, location))?;
            let cursor = e.push(memref::alloca(context, array, &[], &[], None, location))?;
            let routed = (self.tokens * self.top_k) as i64;
            let capacity = self.capacity() as i64;
            let tile = self.tile_rows as i64;

            let minus_one = e.int(32, -1)?;
            e.for_const(0, capacity, 1, |e, p| {
                e.store(minus_one, rows, p);
                Ok(())
            })?;
            e.for_const(0, capacity / tile, 1, |e, t| {
                e.store(minus_one, tiles, t);
                Ok(())
            })?;
            let zero = e.int(32, 0)?;
            e.for_const(0, experts, 1, |e, x| {
                e.store(zero, cursor, x);
                Ok(())
            })?;
            // Count rows per expert (into `cursor`), skipping indices outside 0..experts.
            e.for_const(0, routed, 1, |e, r| {
                let (x, valid) = expert_of(&e, indices, experts, r)?;
                e.if_then(valid, |e| {
                    let count = e.load(cursor, x)?;
                    let one = e.int(32, 1)?;
                    let count = e.addi(count, one)?;
                    e.store(count, cursor, x);
                    Ok(())
                })
            })?;
            // Padded segment starts; `cursor` becomes each segment's write position.
            let running = e.cell(zero)?;
            e.for_const(0, experts, 1, |e, x| {
                let begin = e.get(running)?;
                e.store(begin, start, x);
                let count = e.load(cursor, x)?;
                e.store(begin, cursor, x);
                let pad = e.int(32, tile - 1)?;
                let padded = e.addi(count, pad)?;
                let mask = e.int(32, !(tile - 1))?;
                let padded = e.andi(padded, mask)?;
                let end = e.addi(begin, padded)?;
                e.set(running, end)
            })?;
            e.for_const(0, routed, 1, |e, r| {
                let (x, valid) = expert_of(&e, indices, experts, r)?;
                e.if_then(valid, |e| {
                    let p = e.load(cursor, x)?;
                    let one = e.int(32, 1)?;
                    let next = e.addi(p, one)?;
                    e.store(next, cursor, x);
                    let p = e.index_cast(p, e.index_type())?;
                    let r32 = e.index_cast(r, e.int_type(32))?;
                    e.store(r32, rows, p);
                    Ok(())
                })
            })?;
            // Tiles of each segment: from its start to its end rounded up to a tile.
            e.for_const(0, experts, 1, |e, x| {
                let begin = e.load(start, x)?;
                let end = e.load(cursor, x)?;
                let pad = e.int(32, tile - 1)?;
                let end = e.addi(end, pad)?;
                let shift = e.int(32, tile.trailing_zeros() as i64)?;
                let first = e.shrui(begin, shift)?;
                let last = e.shrui(end, shift)?;
                let first = e.index_cast(first, e.index_type())?;
                let last = e.index_cast(last, e.index_type())?;
                let one = e.index(1)?;
                let expert = e.index_cast(x, e.int_type(32))?;
                e.for_range(first, last, one, |e, t| {
                    e.store(expert, tiles, t);
                    Ok(())
                })
            })
        })
    }
}

/// The expert of routed row `r` as an index (0 when invalid) and whether it is in 0..experts.
fn expert_of<'c, 'a>(
    e: &Emit<'c, 'a>,
    indices: Value<'c, '_>,
    experts: i64,
    r: Value<'c, 'a>,
) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
    let index = e.load(indices, r)?;
    e.checked_index(index, experts)
}
