//! Fused `attention` on tensor cores (FlashAttention-2's scheme): one block of four warps per
//! 64 queries of one (batch, head), each warp 16 query rows; K and V stream through shared
//! memory in tiles of [`KV_TILE`] keys; scores live only in registers. Per tile:
//! - `S = Q·Kᵀ` by `mma.sync m16n8k16` BF16 (f32 sums; Q's fragments loaded once, for MLA the
//!   columns of `q_nope | q_pe` against `k_nope | k_pe`), times the scale, causal and ragged
//!   keys −inf;
//! - the online softmax of `dsc_kernels::ops::attention` in f32: the row max over the quad's
//!   lanes, `α = exp(m − m')`, `p = exp(s − m')`, `l = l·α + Σ p` (per lane, summed over the
//!   quad at the end), `O = O·α`;
//! - `O += P·V` with `P` rounded to BF16 straight from the S accumulators (the m16n8 D layout
//!   of two adjacent key octets is the m16n8k16 A layout) and V read from a transposed tile.
//!
//! With causal masking a query block reads only the key tiles up to its last query's position,
//! and the blocks of the latest queries (the most tiles) are launched first. Shared rows are
//! padded by 8 elements so that the fragment reads (8 rows × 4 words per warp) hit 32 banks.

use dsc_ir::DType;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::attribute::Attribute;
use melior::ir::r#type::MemRefType;
use melior::ir::{BlockLike, Type, Value};
use serde::Serialize;

use super::attention::{HeadOperand, row_index};
use super::mma::{mma, pack_k};
use super::vector_access::{
    global_load_v4, pack_bf16x2, shared_load_u32, shared_store_u16, shared_store_v4,
};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Queries per block.
pub const BLOCK_Q: u64 = 64;
/// Keys per tile: the CPU reference's rescaling tile.
pub const KV_TILE: u64 = dsc_kernels::ops::ATTENTION_KV_TILE as u64;
/// Four warps.
pub const THREADS: u32 = 128;
/// Static shared memory a block may use.
const SHARED_LIMIT: u64 = 48 * 1024;
/// Padding of every shared row, in elements.
const PAD: u64 = 8;
const INSTRUCTION: &str = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";

/// `out[b, s, h, :] = softmax_t(scores[b, h, s, t]) · v[b, t, h / group, :]`, fused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlashAttention {
    /// Batch.
    pub batch: u64,
    /// Queries.
    pub q_len: u64,
    /// Keys.
    pub kv_len: u64,
    /// Query heads.
    pub heads: u64,
    /// The main q/k pair.
    pub main: HeadOperand,
    /// The RoPE pair (MLA), when present.
    pub rope: Option<HeadOperand>,
    /// Value heads.
    pub v_heads: u64,
    /// Dims per value head.
    pub v_dim: u64,
    /// Values' dtype.
    pub values: DType,
    /// Output dtype.
    pub output: DType,
    /// Softmax scale.
    pub scale: f32,
    /// Causal mask (keys after the query's position are −inf).
    pub causal: bool,
}

impl FlashAttention {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "attention"
    }

    /// Whether these shapes have the tensor-core form: BF16 operands, the main head dim in
    /// whole MMA steps (16), the RoPE and value dims in 16-byte chunks, and the tiles within
    /// static shared memory.
    pub fn supported(&self) -> Result<(), String> {
        let operands = std::iter::once(self.main).chain(self.rope);
        if operands
            .map(|o| o.dtype)
            .chain([self.values])
            .any(|d| d != DType::Bf16)
        {
            return Err("fused attention reads bf16 q, k and v".into());
        }
        if !self.main.dim.is_multiple_of(16) {
            return Err(format!(
                "fused attention needs a head dim in multiples of 16, got {}",
                self.main.dim
            ));
        }
        let rope_dim = self.rope.map_or(0, |r| r.dim);
        if !rope_dim.is_multiple_of(8) || !self.v_dim.is_multiple_of(8) || self.v_dim == 0 {
            return Err(format!(
                "fused attention needs rope and value dims in multiples of 8, got {rope_dim} and {}",
                self.v_dim
            ));
        }
        if self.shared_bytes() > SHARED_LIMIT {
            return Err(format!(
                "fused attention's K/V tiles take {} bytes of shared memory (limit {SHARED_LIMIT})",
                self.shared_bytes()
            ));
        }
        Ok(())
    }

    fn rope_dim(&self) -> u64 {
        self.rope.map_or(0, |r| r.dim)
    }

    /// Score dims (main + RoPE) in whole MMA steps.
    fn qk_padded(&self) -> u64 {
        (self.main.dim + self.rope_dim()).div_ceil(16) * 16
    }

    /// Elements per K row in shared memory.
    fn k_stride(&self) -> u64 {
        self.qk_padded() + PAD
    }

    /// Elements per row (one value dim) of the transposed V tile.
    fn v_stride(&self) -> u64 {
        KV_TILE + PAD
    }

    fn k_tile_bytes(&self) -> u64 {
        2 * KV_TILE * self.k_stride()
    }

    /// The K tile and the transposed V tile.
    pub fn shared_bytes(&self) -> u64 {
        self.k_tile_bytes() + 2 * self.v_dim * self.v_stride()
    }

    fn q_blocks(&self) -> u64 {
        self.q_len.div_ceil(BLOCK_Q)
    }

    fn out_len(&self) -> u64 {
        self.batch * self.q_len * self.heads * self.v_dim
    }

    /// `(q, k, v, [q_pe, k_pe,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let side = |name, len, o: HeadOperand, heads| {
            Param::new(name, o.dtype, self.batch * len * heads * o.dim)
        };
        let mut params = vec![
            side("q", self.q_len, self.main, self.heads),
            side("k", self.kv_len, self.main, self.main.kv_heads),
            Param::new(
                "v",
                self.values,
                self.batch * self.kv_len * self.v_heads * self.v_dim,
            ),
        ];
        if let Some(r) = self.rope {
            params.push(side("q_pe", self.q_len, r, self.heads));
            params.push(side("k_pe", self.kv_len, r, r.kv_heads));
        }
        params.push(Param::new("out", self.output, self.out_len()));
        params
    }

    /// One block per 64 queries of one (batch, head).
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.batch * self.heads * self.q_blocks(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(|message| CodegenError::InvalidKernel {
                kernel: entry.to_string(),
                message,
            })?;
        let context = module.context();
        let params = self.params();
        let types = param_types(context, &params);
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Type = MemRefType::new(
            Type::parse(context, "i8").expect("i8 parses"),
            &[self.shared_bytes() as i64],
            None,
            workgroup,
        )
        .into();
        let n_params = params.len();
        module.add_kernel_with_shared(entry, &types, &[shared], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let operands = Operands {
                q: args[0],
                k: args[1],
                v: args[2],
                pe: self.rope.map(|_| (args[3], args[4])),
                out: args[n_params - 1],
            };
            self.body(&e, &operands, args[n_params])
        })
    }

    fn body<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        ops: &Operands<'c, '_>,
        smem: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let i32_type = e.int_type(32);
        let at = Place::new(self, e)?;
        let (b, h, qb) = (at.b, at.h, at.qb);

        // Shared tiles (32-bit shared addresses).
        let k_smem = e.address_of(smem)?;
        let k_smem = e.trunci(k_smem, i32_type)?;
        let k_bytes = e.int(32, self.k_tile_bytes() as i64)?;
        let v_smem = e.addi(k_smem, k_bytes)?;

        // Q's A fragments, once: chunk c of 16 score dims, registers as in `linear_mma`.
        let q_len = e.index(self.q_len as i64)?;
        let rows = at.rows;
        let real = [e.lt(rows[0], q_len)?, e.lt(rows[1], q_len)?];
        let two = e.index(2)?;
        let q2 = e.muli(at.quad, two)?;
        let mut q_frags = Vec::new();
        for c in 0..self.qk_padded() / 16 {
            let (matrix, dim, col) = if 16 * c < self.main.dim {
                (ops.q, self.main.dim, 16 * c)
            } else {
                let (q_pe, _) = ops.pe.expect("score dims past the head dim are RoPE dims");
                (q_pe, self.rope_dim(), 16 * c - self.main.dim)
            };
            let col = e.index(col as i64)?;
            let low = e.addi(col, q2)?;
            let eight = e.index(8)?;
            let high = e.addi(low, eight)?;
            let mut base = Vec::with_capacity(2);
            for (&row, &ok) in rows.iter().zip(&real) {
                let zero = e.index(0)?;
                let row = e.select(ok, row, zero)?;
                let r = row_index(e, b, row, h, self.q_len, self.heads)?;
                base.push(e.muli(r, e.index(dim as i64)?)?);
            }
            let pack = |row: usize, k| pack_k(e, matrix, base[row], real[row], k, dim, 16);
            q_frags.push([pack(0, low)?, pack(1, low)?, pack(0, high)?, pack(1, high)?]);
        }

        let zero = e.f32(0.0)?;
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        let n_tiles_v = self.v_dim / 8;
        let o: Vec<[Value; 4]> = (0..n_tiles_v)
            .map(|_| Ok([e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?]))
            .collect::<Result<_, CodegenError>>()?;
        let m = [e.cell(neg_inf)?, e.cell(neg_inf)?];
        let l = [e.cell(zero)?, e.cell(zero)?];

        // Key tiles this block reads: all, or (causal) up to its last query's position.
        let tiles = if self.causal {
            let offset = self.kv_len.saturating_sub(self.q_len) + BLOCK_Q;
            let block_q = e.index(BLOCK_Q as i64)?;
            let end = e.muli(qb, block_q)?;
            let end = e.addi(end, e.index(offset as i64)?)?;
            let end = e.minui(end, e.index(self.kv_len as i64)?)?;
            let end = e.addi(end, e.index(KV_TILE as i64 - 1)?)?;
            e.divui(end, e.index(KV_TILE as i64)?)?
        } else {
            e.index(self.kv_len.div_ceil(KV_TILE) as i64)?
        };
        let start = e.index(0)?;
        let one = e.index(1)?;
        e.for_range(start, tiles, one, |e, tile| {
            let t0 = e.muli(tile, e.index(KV_TILE as i64)?)?;
            // The previous tile's reads are done before the tiles are overwritten.
            e.barrier();
            self.stage_k(&e, ops, &at, t0, k_smem)?;
            self.stage_v(&e, ops, &at, t0, v_smem)?;
            e.barrier();

            // S = Q·Kᵀ: 8 key octets × the score dims.
            let mut s: Vec<[Value; 4]> = vec![[zero; 4]; (KV_TILE / 8) as usize];
            for (c, a) in q_frags.iter().enumerate() {
                for (nt, acc) in s.iter_mut().enumerate() {
                    let row = (nt as u64 * 8) as i64;
                    let key = e.addi(at.group, e.index(row)?)?;
                    let col = e.addi(e.index(16 * c as i64)?, q2)?;
                    let b0 = self.shared_word(&e, k_smem, key, col, self.k_stride())?;
                    let col = e.addi(col, e.index(8)?)?;
                    let b1 = self.shared_word(&e, k_smem, key, col, self.k_stride())?;
                    *acc = mma(&e, INSTRUCTION, *a, [b0, b1], *acc)?;
                }
            }

            // Scale and mask: element i of octet nt is key t0 + 8nt + 2q + i % 2 of row i / 2.
            let kv_len = e.index(self.kv_len as i64)?;
            let offset = e.index(self.kv_len.saturating_sub(self.q_len) as i64)?;
            let last_key = [e.addi(rows[0], offset)?, e.addi(rows[1], offset)?];
            let scale = e.f32(self.scale)?;
            for (nt, acc) in s.iter_mut().enumerate() {
                for (i, x) in acc.iter_mut().enumerate() {
                    let col = e.index((8 * nt + i % 2) as i64)?;
                    let t = e.addi(t0, col)?;
                    let t = e.addi(t, q2)?;
                    let mut visible = e.lt(t, kv_len)?;
                    if self.causal {
                        let seen = e.cmpi(CmpiPredicate::Ule, t, last_key[i / 2])?;
                        visible = e.andi(visible, seen)?;
                    }
                    let scaled = e.mulf(*x, scale)?;
                    *x = e.select(visible, scaled, neg_inf)?;
                }
            }

            // The online softmax, row by row.
            let mut alpha = [zero; 2];
            let mut m_use = [zero; 2];
            for r in 0..2 {
                let mut max = neg_inf;
                for acc in &s {
                    max = e.maxf(max, acc[2 * r])?;
                    max = e.maxf(max, acc[2 * r + 1])?;
                }
                for offset in [1, 2] {
                    let other = e.shuffle_xor(max, offset)?;
                    max = e.maxf(max, other)?;
                }
                let m_old = e.get(m[r])?;
                let m_new = e.maxf(m_old, max)?;
                e.set(m[r], m_new)?;
                // No visible key yet: subtract 0 (every p is exp(−inf) = 0, α = 0).
                let none = e.cmpf(CmpfPredicate::Oeq, m_new, neg_inf)?;
                m_use[r] = e.select(none, zero, m_new)?;
                let d = e.subf(m_old, m_use[r])?;
                alpha[r] = e.exp(d)?;
            }
            let mut sums = [zero; 2];
            for acc in s.iter_mut() {
                for (i, x) in acc.iter_mut().enumerate() {
                    let d = e.subf(*x, m_use[i / 2])?;
                    *x = e.exp(d)?;
                    sums[i / 2] = e.addf(sums[i / 2], *x)?;
                }
            }
            for r in 0..2 {
                let old = e.get(l[r])?;
                let old = e.mulf(old, alpha[r])?;
                let new = e.addf(old, sums[r])?;
                e.set(l[r], new)?;
            }
            let mut o_vals: Vec<[Value; 4]> = Vec::with_capacity(o.len());
            for cells in &o {
                let mut vals = [zero; 4];
                for (i, (&cell, v)) in cells.iter().zip(vals.iter_mut()).enumerate() {
                    let x = e.get(cell)?;
                    *v = e.mulf(x, alpha[i / 2])?;
                }
                o_vals.push(vals);
            }

            // O += P·V over the tile's 4 key chunks of 16.
            for kc in 0..(KV_TILE / 16) as usize {
                let (lo, hi) = (&s[2 * kc], &s[2 * kc + 1]);
                let a = [
                    pack_bf16x2(&e, lo[0], lo[1])?,
                    pack_bf16x2(&e, lo[2], lo[3])?,
                    pack_bf16x2(&e, hi[0], hi[1])?,
                    pack_bf16x2(&e, hi[2], hi[3])?,
                ];
                for (nt, acc) in o_vals.iter_mut().enumerate() {
                    let dim = e.addi(at.group, e.index((8 * nt) as i64)?)?;
                    let col = e.addi(e.index(16 * kc as i64)?, q2)?;
                    let b0 = self.shared_word(&e, v_smem, dim, col, self.v_stride())?;
                    let col = e.addi(col, e.index(8)?)?;
                    let b1 = self.shared_word(&e, v_smem, dim, col, self.v_stride())?;
                    *acc = mma(&e, INSTRUCTION, a, [b0, b1], *acc)?;
                }
            }
            for (cells, vals) in o.iter().zip(&o_vals) {
                for (&cell, &v) in cells.iter().zip(vals) {
                    e.set(cell, v)?;
                }
            }
            Ok(())
        })?;

        // l over the quad's lanes, then O / l rounded; a row without keys stays zeros.
        let mut inv = [zero; 2];
        for r in 0..2 {
            let mut total = e.get(l[r])?;
            for offset in [1, 2] {
                let other = e.shuffle_xor(total, offset)?;
                total = e.addf(total, other)?;
            }
            inv[r] = total;
        }
        let v_dim = e.index(self.v_dim as i64)?;
        for (nt, cells) in o.iter().enumerate() {
            for (i, &cell) in cells.iter().enumerate() {
                let r = i / 2;
                let x = e.get(cell)?;
                let has_keys = e.cmpf(CmpfPredicate::Ogt, inv[r], zero)?;
                let y = e.divf(x, inv[r])?;
                let y = e.select(has_keys, y, zero)?;
                let y = e.round_to(y, self.output)?;
                e.if_then(real[r], |e| {
                    let row = row_index(&e, b, rows[r], h, self.q_len, self.heads)?;
                    let col = e.index((8 * nt + i % 2) as i64)?;
                    let col = e.addi(col, q2)?;
                    let at = e.muli(row, v_dim)?;
                    let at = e.addi(at, col)?;
                    e.store(y, ops.out, at);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// The word of bf16 pair `(row, col..col + 2)` of a shared tile with `stride` elements per
    /// row.
    fn shared_word<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        base: Value<'c, '_>,
        row: Value<'c, '_>,
        col: Value<'c, '_>,
        stride: u64,
    ) -> Emitted<'c, 'a> {
        let at = e.muli(row, e.index(stride as i64)?)?;
        let at = e.addi(at, col)?;
        let at = e.muli(at, e.index(2)?)?;
        let at = e.index_cast(at, e.int_type(32))?;
        let at = e.addi(base, at)?;
        shared_load_u32(e, at)
    }

    /// Copies keys `t0 .. t0 + KV_TILE` into the K tile: row `t − t0` holds `k_nope | k_pe` and
    /// zeros to the padded width; keys past the end are zeros. 16 bytes per thread and step.
    fn stage_k<'c>(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
        t0: Value<'c, '_>,
        k_smem: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let chunks_per_row = self.qk_padded() / 8;
        let main_chunks = self.main.dim / 8;
        let rope_chunks = self.rope_dim() / 8;
        let kv_len = e.index(self.kv_len as i64)?;
        let k_global = e.address_of(ops.k)?;
        let pe_global = match ops.pe {
            Some((_, k_pe)) => Some(e.address_of(k_pe)?),
            None => None,
        };
        let total = KV_TILE * chunks_per_row;
        for step in 0..total.div_ceil(u64::from(THREADS)) {
            let x = e.addi(at.tid, e.index((step * u64::from(THREADS)) as i64)?)?;
            let in_tile = e.lt(x, e.index(total as i64)?)?;
            let per_row = e.index(chunks_per_row as i64)?;
            let row = e.divui(x, per_row)?;
            let c = e.remui(x, per_row)?;
            let t = e.addi(t0, row)?;
            let key_ok = e.lt(t, kv_len)?;
            let ok = e.andi(in_tile, key_ok)?;
            let main_chunks_v = e.index(main_chunks as i64)?;
            let is_main = e.lt(c, main_chunks_v)?;
            let main_at = self.key_chunk(e, at, t, at.kh, self.main, c)?;
            let main_at = e.addi(k_global, main_at)?;
            let (address, ok) = match (self.rope, pe_global) {
                (Some(r), Some(pe_global)) => {
                    let zero = e.index(0)?;
                    let c_pe = e.subi(c, main_chunks_v)?;
                    let c_pe = e.select(is_main, zero, c_pe)?;
                    let pe_at = self.key_chunk(e, at, t, at.kh_pe, r, c_pe)?;
                    let pe_at = e.addi(pe_global, pe_at)?;
                    let end = e.index((main_chunks + rope_chunks) as i64)?;
                    let in_dims = e.lt(c, end)?;
                    let ok = e.andi(ok, in_dims)?;
                    (e.select(is_main, main_at, pe_at)?, ok)
                }
                _ => (main_at, e.andi(ok, is_main)?),
            };
            let words = global_load_v4(e, address, ok)?;
            e.if_then(in_tile, |e| {
                let place = e.muli(row, e.index(self.k_stride() as i64)?)?;
                let c8 = e.muli(c, e.index(8)?)?;
                let place = e.addi(place, c8)?;
                let place = e.muli(place, e.index(2)?)?;
                let place = e.index_cast(place, e.int_type(32))?;
                let place = e.addi(k_smem, place)?;
                shared_store_v4(&e, place, words)
            })?;
        }
        Ok(())
    }

    /// The byte offset of 16-byte chunk `c` of key `t`'s row of head `head` in a
    /// `[batch, kv_len, heads, dim]` operand, as an `i64`.
    fn key_chunk<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        at: &Place<'c, '_>,
        t: Value<'c, '_>,
        head: Value<'c, '_>,
        operand: HeadOperand,
        c: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let row = row_index(e, at.b, t, head, self.kv_len, operand.kv_heads)?;
        let element = e.muli(row, e.index(operand.dim as i64)?)?;
        let c8 = e.muli(c, e.index(8)?)?;
        let element = e.addi(element, c8)?;
        let bytes = e.muli(element, e.index(2)?)?;
        e.index_cast(bytes, e.int_type(64))
    }

    /// Copies the values of keys `t0 .. t0 + KV_TILE` transposed into the V tile (row `d`,
    /// column `t − t0`); keys past the end are zeros.
    fn stage_v<'c>(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
        t0: Value<'c, '_>,
        v_smem: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let chunks_per_row = self.v_dim / 8;
        let kv_len = e.index(self.kv_len as i64)?;
        let v_global = e.address_of(ops.v)?;
        let values = HeadOperand {
            kv_heads: self.v_heads,
            dim: self.v_dim,
            dtype: self.values,
        };
        let total = KV_TILE * chunks_per_row;
        for step in 0..total.div_ceil(u64::from(THREADS)) {
            let x = e.addi(at.tid, e.index((step * u64::from(THREADS)) as i64)?)?;
            let in_tile = e.lt(x, e.index(total as i64)?)?;
            let per_row = e.index(chunks_per_row as i64)?;
            let row = e.divui(x, per_row)?;
            let c = e.remui(x, per_row)?;
            let t = e.addi(t0, row)?;
            let key_ok = e.lt(t, kv_len)?;
            let ok = e.andi(in_tile, key_ok)?;
            let offset = self.key_chunk(e, at, t, at.vh, values, c)?;
            let address = e.addi(v_global, offset)?;
            let words = global_load_v4(e, address, ok)?;
            e.if_then(in_tile, |e| {
                for (j, &word) in words.iter().enumerate() {
                    for half in 0..2 {
                        let value = if half == 0 {
                            word
                        } else {
                            e.shrui(word, e.int(32, 16)?)?
                        };
                        let d = e.muli(c, e.index(8)?)?;
                        let d = e.addi(d, e.index((2 * j + half) as i64)?)?;
                        let place = e.muli(d, e.index(self.v_stride() as i64)?)?;
                        let place = e.addi(place, row)?;
                        let place = e.muli(place, e.index(2)?)?;
                        let place = e.index_cast(place, e.int_type(32))?;
                        let place = e.addi(v_smem, place)?;
                        shared_store_u16(&e, place, value)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// The kernel's buffers.
struct Operands<'c, 'a> {
    q: Value<'c, 'a>,
    k: Value<'c, 'a>,
    v: Value<'c, 'a>,
    /// `(q_pe, k_pe)`.
    pe: Option<(Value<'c, 'a>, Value<'c, 'a>)>,
    out: Value<'c, 'a>,
}

/// Where a thread works: its block's batch, head and query block, the heads it reads, and its
/// lane's place in the warp's 16 rows.
struct Place<'c, 'a> {
    tid: Value<'c, 'a>,
    b: Value<'c, 'a>,
    h: Value<'c, 'a>,
    qb: Value<'c, 'a>,
    /// Key, RoPE-key and value heads of `h`.
    kh: Value<'c, 'a>,
    kh_pe: Value<'c, 'a>,
    vh: Value<'c, 'a>,
    /// `lane / 4`, `lane % 4`.
    group: Value<'c, 'a>,
    quad: Value<'c, 'a>,
    /// The lane's two query rows: `64 qb + 16 warp + lane / 4`, `+ 8`.
    rows: [Value<'c, 'a>; 2],
}

impl<'c, 'a> Place<'c, 'a> {
    fn new(spec: &FlashAttention, e: &Emit<'c, 'a>) -> Result<Self, CodegenError> {
        let block = e.block_index(Dimension::X)?;
        let bh_count = e.index((spec.batch * spec.heads) as i64)?;
        let bh = e.remui(block, bh_count)?;
        let late_first = e.divui(block, bh_count)?;
        let last = e.index(spec.q_blocks().max(1) as i64 - 1)?;
        let qb = e.subi(last, late_first)?;
        let heads = e.index(spec.heads as i64)?;
        let b = e.divui(bh, heads)?;
        let h = e.remui(bh, heads)?;
        let head_of = |kv_heads: u64| -> Emitted<'c, 'a> {
            let group = e.index((spec.heads / kv_heads.max(1)).max(1) as i64)?;
            e.divui(h, group)
        };
        let kh = head_of(spec.main.kv_heads)?;
        let kh_pe = head_of(spec.rope.map_or(1, |r| r.kv_heads))?;
        let vh = head_of(spec.v_heads)?;
        let tid = e.thread_x()?;
        let thirty_two = e.index(32)?;
        let warp = e.divui(tid, thirty_two)?;
        let lane = e.remui(tid, thirty_two)?;
        let four = e.index(4)?;
        let group = e.divui(lane, four)?;
        let quad = e.remui(lane, four)?;
        let row0 = e.muli(qb, e.index(BLOCK_Q as i64)?)?;
        let warp_rows = e.muli(warp, e.index(16)?)?;
        let row0 = e.addi(row0, warp_rows)?;
        let row0 = e.addi(row0, group)?;
        let row1 = e.addi(row0, e.index(8)?)?;
        Ok(Place {
            tid,
            b,
            h,
            qb,
            kh,
            kh_pe,
            vh,
            group,
            quad,
            rows: [row0, row1],
        })
    }
}
