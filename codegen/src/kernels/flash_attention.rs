//! Fused `attention` on tensor cores (FlashAttention-2's scheme): one block of four warps per
//! 64 queries of one (batch, head), each warp 16 query rows; K and V stream through shared
//! memory in tiles of [`KV_TILE`] keys; scores live only in registers. Per tile:
//! - `S = Q·Kᵀ` by `mma.sync m16n8k16` BF16 (f32 sums; Q's fragments loaded once, for MLA the
//!   columns of `q_nope | q_pe` against `k_nope | k_pe`), times the scale, causal and ragged
//!   keys −inf;
//! - the online softmax of `dsc_kernels::ops::attention` in f32: the row max over the quad's
//!   lanes, `α = exp(m − m')`, `p = exp(s − m')`, `l = l·α + Σ p` (per lane, summed over the
//!   quad at the end), `O = O·α`; each `exp` one `ex2.approx` of the score scaled by `log2 e`
//!   (FlashAttention's way: the CPU reference's `exp` differs in the last f32 bits);
//! - `O += P·V` with `P` rounded to BF16 straight from the S accumulators (the m16n8 D layout
//!   of two adjacent key octets is the m16n8k16 A layout) and V's fragments read by
//!   `ldmatrix.trans` from its row-major tile (two keys of one dim per register).
//!
//! In the `mma.sync` form `cp.async` stages the tiles (zero fill past the keys' end) and
//! `ldmatrix.x4` reads K's fragments; V(j) is copied during Q·K(j)ᵀ and K(j + 1) during the
//! softmax and P·V(j). With causal masking a query block reads only the key tiles up to its
//! last query's position, and the blocks of the latest queries (the most tiles) are launched
//! first. Shared rows are padded by 8 elements so that each 8 × 16-byte `ldmatrix` matrix hits
//! 32 banks.

use dsc_ir::DType;
use dsc_kernels::ops::AttentionDims;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::{BlockLike, Value};
use serde::Serialize;

use super::attention::{HeadOperand, main_operand, row_index};
use super::flash_attention_tma as tma;
use super::flash_attention_wgmma as wgmma;
use super::mma::{mma, pack_k};
use super::quantize::QuantSpec;
use super::row_window::RowWindow;
use super::vector_access::{global_load_v4, pack_bf16x2, shared_store_v4};
use super::{Launch, Param, kernel_args, param_types, shared_bytes_type};
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
/// Padding of every shared row, in elements.
const PAD: u64 = dsc_kernels::ops::attention::ATTENTION_SHARED_PAD as u64;
const INSTRUCTION: &str = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";

/// Which tensor-core instructions a block multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttentionForm {
    /// `mma.sync m16n8k16` per warp (sm_89, and sm_90a when not upgraded).
    MmaSync,
    /// `wgmma.mma_async` per warpgroup ([`super::flash_attention_wgmma`], sm_90a).
    Wgmma,
    /// `wgmma.mma_async` fed by TMA through a ring of stages ([`super::flash_attention_tma`],
    /// sm_90a).
    WgmmaTma,
}

/// `out[b, s, h, :] = softmax_t(scores[b, h, s, t]) · v[b, t, h / group, :]`, fused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlashAttention {
    /// The sizes of q, k and v, as the CPU reference takes them (written in place: see
    /// [`super::canonical`]).
    #[serde(flatten)]
    pub dims: AttentionDims,
    /// q read in place from a wider tensor; `None`: q is its own tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q_row: Option<RowWindow>,
    /// k read in place from a wider tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k_row: Option<RowWindow>,
    /// v read in place from a wider tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v_row: Option<RowWindow>,
    /// Dtype of q and k.
    pub qk: DType,
    /// The RoPE pair (MLA), when present. Its heads and dims per head are not in
    /// [`AttentionDims`]: the reference takes them with the pair's data
    /// ([`dsc_kernels::ops::RopeOperands`]), so the spec keeps them here, with their dtype.
    pub rope: Option<HeadOperand>,
    /// Values' dtype.
    pub values: DType,
    /// Output dtype: what each output is rounded to (v's dtype when quantized).
    pub output: DType,
    /// The output quantized as it is written (`attention_quant`): FP8 codes and one scale per
    /// 1 × tile group of each head's row (the tile divides the value dim). `None`: the output
    /// itself is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant: Option<QuantSpec>,
    /// Softmax scale.
    pub scale: f32,
    /// Causal mask (keys after the query's position are −inf).
    pub causal: bool,
    /// The instructions of the products.
    pub form: AttentionForm,
}

impl FlashAttention {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "attention"
    }

    pub(super) fn batch(&self) -> u64 {
        self.dims.scores.batch as u64
    }

    fn q_len(&self) -> u64 {
        self.dims.scores.q_len as u64
    }

    pub(super) fn kv_len(&self) -> u64 {
        self.dims.scores.kv_len as u64
    }

    fn heads(&self) -> u64 {
        self.dims.scores.heads as u64
    }

    /// The main q/k pair.
    pub(super) fn main(&self) -> HeadOperand {
        main_operand(&self.dims.scores, self.qk)
    }

    pub(super) fn v_heads(&self) -> u64 {
        self.dims.v_heads as u64
    }

    /// Dims per value head.
    pub(super) fn v_dim(&self) -> u64 {
        self.dims.v_dim as u64
    }

    /// Whether these shapes have the tensor-core form: BF16 operands and the head dims of
    /// [`dsc_kernels::ops::attention_fusable`].
    pub fn supported(&self) -> Result<(), String> {
        let operands = std::iter::once(self.main()).chain(self.rope);
        if operands
            .map(|o| o.dtype)
            .chain([self.values])
            .any(|d| d != DType::Bf16)
        {
            return Err("fused attention reads bf16 q, k and v".into());
        }
        if let Some(quant) = self.quant
            && (quant.tile == 0
                || !quant.tile.is_multiple_of(8)
                || !self.v_dim().is_multiple_of(quant.tile)
                || !quant.format.is_fp8())
        {
            return Err(format!(
                "fused attention quantizes FP8 groups of whole octets within one head's row: tile {} of value dim {} in {}",
                quant.tile,
                self.v_dim(),
                quant.format
            ));
        }
        dsc_kernels::ops::attention_fusable(
            self.main().dim as usize,
            self.rope_dim() as usize,
            self.v_dim() as usize,
        )
    }

    pub(super) fn rope_dim(&self) -> u64 {
        self.rope.map_or(0, |r| r.dim)
    }

    /// Score dims (main + RoPE) in whole MMA steps.
    pub(crate) fn qk_padded(&self) -> u64 {
        (self.main().dim + self.rope_dim()).div_ceil(16) * 16
    }

    /// Elements per K row in shared memory.
    fn k_stride(&self) -> u64 {
        self.qk_padded() + PAD
    }

    /// Elements per row (one key) of the V tile.
    fn v_stride(&self) -> u64 {
        self.v_dim() + PAD
    }

    fn k_tile_bytes(&self) -> u64 {
        match self.form {
            AttentionForm::MmaSync => 2 * KV_TILE * self.k_stride(),
            AttentionForm::Wgmma | AttentionForm::WgmmaTma => wgmma::k_tile_bytes(self),
        }
    }

    /// The K and V tiles (and, for wgmma, room to align them); static shared memory (the
    /// TMA form's ring is dynamic: [`super::flash_attention_tma::dynamic_shared_bytes`]).
    pub fn shared_bytes(&self) -> u64 {
        match self.form {
            AttentionForm::MmaSync => dsc_kernels::ops::attention_shared_bytes(
                (self.main().dim + self.rope_dim()) as usize,
                self.v_dim() as usize,
            ) as u64,
            AttentionForm::Wgmma => wgmma::shared_bytes(self),
            AttentionForm::WgmmaTma => 0,
        }
    }

    /// Queries per block: [`BLOCK_Q`] per warpgroup that multiplies.
    pub(super) fn block_q(&self) -> u64 {
        match self.form {
            AttentionForm::WgmmaTma => BLOCK_Q * tma::CONSUMERS,
            AttentionForm::MmaSync | AttentionForm::Wgmma => BLOCK_Q,
        }
    }

    pub(super) fn q_blocks(&self) -> u64 {
        self.q_len().div_ceil(self.block_q())
    }

    /// Elements per (token, head) row of the q tensor: the head dim, or the wider row q is
    /// read from.
    fn q_row_len(&self) -> u64 {
        self.q_row.map_or(self.main().dim, |r| r.stride)
    }

    /// k's rows: `(elements per row of its tensor, where k starts in it)`.
    pub(super) fn k_window(&self) -> (u64, u64) {
        self.k_row
            .map_or((self.main().dim, 0), |r| (r.stride, r.offset))
    }

    /// v's rows: `(elements per row of its tensor, where v starts in it)`.
    pub(super) fn v_window(&self) -> (u64, u64) {
        self.v_row
            .map_or((self.v_dim(), 0), |r| (r.stride, r.offset))
    }

    fn out_len(&self) -> u64 {
        self.batch() * self.q_len() * self.heads() * self.v_dim()
    }

    /// `(q, k, v, [q_pe, k_pe,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let side = |name, len, o: HeadOperand, heads| {
            Param::new(name, o.dtype, self.batch() * len * heads * o.dim)
        };
        let q = HeadOperand {
            dim: self.q_row_len(),
            ..self.main()
        };
        let mut params = vec![
            side("q", self.q_len(), q, self.heads()),
            side(
                "k",
                self.kv_len(),
                HeadOperand {
                    dim: self.k_window().0,
                    ..self.main()
                },
                self.main().kv_heads,
            ),
            Param::new(
                "v",
                self.values,
                self.batch() * self.kv_len() * self.v_heads() * self.v_window().0,
            ),
        ];
        if let Some(r) = self.rope {
            params.push(side("q_pe", self.q_len(), r, self.heads()));
            params.push(side("k_pe", self.kv_len(), r, r.kv_heads));
        }
        if self.form == AttentionForm::WgmmaTma {
            params.extend(tma::map_params(self));
        }
        match self.quant {
            Some(quant) => {
                let rows = self.out_len() / self.v_dim();
                params.extend(quant.output_params(rows, self.v_dim()));
            }
            None => params.push(Param::new("out", self.output, self.out_len())),
        }
        params
    }

    /// How many of the last params are outputs: the output, or its codes and scales.
    pub(super) fn output_params(&self) -> usize {
        if self.quant.is_some() { 2 } else { 1 }
    }

    /// One block per [`Self::block_q`] queries of one (batch, head).
    pub fn launch(&self) -> Launch {
        let threads = match self.form {
            AttentionForm::WgmmaTma => tma::THREADS,
            AttentionForm::MmaSync | AttentionForm::Wgmma => THREADS,
        };
        Launch::blocks(self.batch() * self.heads() * self.q_blocks(), threads)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(CodegenError::invalid_kernel(entry))?;
        if self.form == AttentionForm::WgmmaTma {
            return tma::build(self, module, entry);
        }
        let context = module.context();
        let params = self.params();
        let types = param_types(context, &params);
        let shared = shared_bytes_type(context, self.shared_bytes());
        let n_params = params.len();
        module.add_kernel_with_shared(entry, &types, &[shared], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let operands = Operands::new(self, &args[..n_params]);
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
        let at = Place::new(self, e, e.thread_x()?, e.index(0)?)?;

        // Shared tiles (32-bit shared addresses; swizzled tiles 1024-byte aligned).
        let k_smem = e.address_of(smem)?;
        let k_smem = e.trunci(k_smem, i32_type)?;
        let k_smem = match self.form {
            AttentionForm::MmaSync => k_smem,
            AttentionForm::Wgmma | AttentionForm::WgmmaTma => {
                let k_smem = e.addi(k_smem, e.int(32, wgmma::ATOM as i64 - 1)?)?;
                e.andi(k_smem, e.int(32, !(wgmma::ATOM as i64 - 1))?)?
            }
        };
        let k_bytes = e.int(32, self.k_tile_bytes() as i64)?;
        let v_smem = e.addi(k_smem, k_bytes)?;
        // The row this lane gives each `ldmatrix.x4`: row `lane mod 8` of matrix `lane / 8`.
        // K's matrices (keys × 8 dims, plain) are two octets of keys × two dim halves, V's
        // (keys × 8 value dims, transposed) two key halves × two value-dim octets.
        let lane = e.remui(at.tid, e.index(32)?)?;
        let (matrix, row) = (e.divui(lane, e.index(8)?)?, e.remui(lane, e.index(8)?)?);
        let (high, low) = (e.divui(matrix, e.index(2)?)?, e.remui(matrix, e.index(2)?)?);
        let ld_base = |tile, stride: u64, row_step, col_step| -> Emitted<'c, 'a> {
            let r = e.addi(e.muli(row_step, e.index(8)?)?, row)?;
            let at = e.muli(r, e.index(stride as i64)?)?;
            let at = e.addi(at, e.muli(col_step, e.index(8)?)?)?;
            let bytes = e.muli(at, e.index(2)?)?;
            e.addi(tile, e.index_cast(bytes, i32_type)?)
        };
        let k_ld = ld_base(k_smem, self.k_stride(), high, low)?;
        let v_ld = ld_base(v_smem, self.v_stride(), low, high)?;

        let running = Running::new(self, e)?;
        let q_frags = self.q_fragments(e, ops, &at)?;
        let tiles = self.tiles(e, at.qb)?;
        let start = e.index(0)?;
        let one = e.index(1)?;
        // mma.sync: FlashAttention-2's pipeline of cp.async copies, K and V a half-tile apart
        // (one buffer each, so that the shared memory stays one tile's): K(j + 1) streams in
        // during the softmax and P·V of tile j, V(j) during its Q·Kᵀ.
        let pipelined = self.form == AttentionForm::MmaSync;
        if pipelined {
            self.stage_k(e, ops, &at, start, k_smem)?;
            e.cp_async_commit()?;
        }
        e.for_range(start, tiles, one, |e, tile| {
            let t0 = e.muli(tile, e.index(KV_TILE as i64)?)?;
            if pipelined {
                // K(j) has landed for every thread, and P·V(j − 1) is done with V.
                e.cp_async_wait(0)?;
                e.barrier();
                self.stage_v(&e, ops, &at, t0, v_smem)?;
                e.cp_async_commit()?;
            } else {
                // The previous tile's reads are done before the tiles are overwritten.
                e.barrier();
                self.stage_k(&e, ops, &at, t0, k_smem)?;
                self.stage_v(&e, ops, &at, t0, v_smem)?;
                e.barrier();
            }

            let (k, v) = match self.form {
                AttentionForm::MmaSync => (k_ld, v_ld),
                AttentionForm::Wgmma | AttentionForm::WgmmaTma => (k_smem, v_smem),
            };
            self.tile(&e, &at, &running, &q_frags, t0, [k, v], |e| {
                if pipelined {
                    // V(j) has landed, and every warp is done with K(j).
                    e.cp_async_wait(0)?;
                    e.barrier();
                    let next = e.addi(tile, one)?;
                    let more = e.lt(next, tiles)?;
                    e.if_then(more, |e| {
                        let t1 = e.addi(t0, e.index(KV_TILE as i64)?)?;
                        self.stage_k(&e, ops, &at, t1, k_smem)
                    })?;
                    e.cp_async_commit()?;
                }
                Ok(())
            })
        })?;
        self.finish(e, ops, &at, &running)
    }

    /// Q's A fragments, once: chunk c of 16 score dims, registers as in `linear_mma`.
    pub(super) fn q_fragments<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
    ) -> Result<Vec<[Value<'c, 'a>; 4]>, CodegenError> {
        let (b, h) = (at.b, at.h);
        let q_len = e.index(self.q_len() as i64)?;
        let rows = at.rows;
        let real = [e.lt(rows[0], q_len)?, e.lt(rows[1], q_len)?];
        let two = e.index(2)?;
        let q2 = e.muli(at.quad, two)?;
        let mut q_frags = Vec::new();
        for c in 0..self.qk_padded() / 16 {
            let (matrix, dim, col) = if 16 * c < self.main().dim {
                (ops.q, self.main().dim, 16 * c)
            } else {
                let (q_pe, _) = ops.pe.expect("score dims past the head dim are RoPE dims");
                (q_pe, self.rope_dim(), 16 * c - self.main().dim)
            };
            let col = e.index(col as i64)?;
            let low = e.addi(col, q2)?;
            let eight = e.index(8)?;
            let high = e.addi(low, eight)?;
            // q's rows may lie in a wider tensor's (`q_row`); q_pe's are its own.
            let (stride, offset) = match self.q_row {
                Some(r) if 16 * c < self.main().dim => (r.stride, r.offset),
                _ => (dim, 0),
            };
            let mut base = Vec::with_capacity(2);
            for (&row, &ok) in rows.iter().zip(&real) {
                let zero = e.index(0)?;
                let row = e.select(ok, row, zero)?;
                let r = row_index(e, b, row, h, self.q_len(), self.heads())?;
                let at = e.muli(r, e.index(stride as i64)?)?;
                base.push(e.addi(at, e.index(offset as i64)?)?);
            }
            let pack = |row: usize, k| pack_k(e, matrix, base[row], real[row], k, dim, 16);
            q_frags.push([pack(0, low)?, pack(1, low)?, pack(0, high)?, pack(1, high)?]);
        }

        Ok(q_frags)
    }

    /// Key tiles the block of query block `qb` reads: all, or (causal) up to its last query's
    /// position.
    pub(super) fn tiles<'c, 'a>(&self, e: &Emit<'c, 'a>, qb: Value<'c, '_>) -> Emitted<'c, 'a> {
        Ok(if self.causal {
            let offset = self.kv_len().saturating_sub(self.q_len()) + self.block_q();
            let block_q = e.index(self.block_q() as i64)?;
            let end = e.muli(qb, block_q)?;
            let end = e.addi(end, e.index(offset as i64)?)?;
            let end = e.minui(end, e.index(self.kv_len() as i64)?)?;
            let end = e.addi(end, e.index(KV_TILE as i64 - 1)?)?;
            e.divui(end, e.index(KV_TILE as i64)?)?
        } else {
            e.index(self.kv_len().div_ceil(KV_TILE) as i64)?
        })
    }

    /// One key tile `t0 ..` of the block's: S = Q·Kᵀ, the mask, `between(e)` (what the
    /// loading needs once S is done), the online softmax and O += P·V into `running`. `[k, v]`
    /// are the tiles' shared addresses (wgmma), or this lane's `ldmatrix` rows in them
    /// (mma.sync).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        at: &Place<'c, '_>,
        running: &Running<'c, '_>,
        q_frags: &[[Value<'c, '_>; 4]],
        t0: Value<'c, '_>,
        [k_ld, v_ld]: [Value<'c, '_>; 2],
        between: impl FnOnce(&Emit<'c, 'a>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let zero = e.f32(0.0)?;
        let zero_i32 = e.int(32, 0)?;
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        let rows = at.rows;
        let q2 = e.muli(at.quad, e.index(2)?)?;
        let Running { o, m, l } = running;
        // S = Q·Kᵀ: 8 key octets × the score dims.
        let mut s = match self.form {
            AttentionForm::Wgmma | AttentionForm::WgmmaTma => wgmma::scores(e, q_frags, k_ld)?,
            AttentionForm::MmaSync => {
                let mut s: Vec<[Value; 4]> = vec![[zero; 4]; (KV_TILE / 8) as usize];
                for (c, a) in q_frags.iter().enumerate() {
                    for (pair, accs) in s.chunks_mut(2).enumerate() {
                        // Keys 16·pair + g (+ 8), score dims 16c + 2q (+ 8).
                        let at = 2 * (16 * pair as u64 * self.k_stride() + 16 * c as u64);
                        let b = e.ldmatrix(e.addi(k_ld, e.int(32, at as i64)?)?, 4)?;
                        for (acc, b) in accs.iter_mut().zip(b.chunks(2)) {
                            *acc = mma(e, INSTRUCTION, *a, [b[0], b[1]], *acc)?;
                        }
                    }
                }
                s
            }
        };

        // Scale (to log2 units, for ex2) and mask: element i of octet nt is key
        // t0 + 8nt + 2q + i % 2 of row i / 2, visible when that is below the row's limit.
        let i32_type = e.int_type(32);
        let t_lane = e.addi(t0, q2)?;
        let kv_len = e.index(self.kv_len() as i64)?;
        let offset = e.index((self.kv_len().saturating_sub(self.q_len()) + 1) as i64)?;
        let mut limit = [zero_i32; 2];
        for (r, limit) in limit.iter_mut().enumerate() {
            let end = if self.causal {
                let end = e.addi(rows[r], offset)?;
                e.minui(end, kv_len)?
            } else {
                kv_len
            };
            let end = e.index_cast(end, i32_type)?;
            let lane_start = e.index_cast(t_lane, i32_type)?;
            *limit = e.subi(end, lane_start)?;
        }
        let log2_scale = e.f32(self.scale * std::f32::consts::LOG2_E)?;
        for (nt, acc) in s.iter_mut().enumerate() {
            for (i, x) in acc.iter_mut().enumerate() {
                let col = e.int(32, (8 * nt + i % 2) as i64)?;
                let visible = e.cmpi(CmpiPredicate::Slt, col, limit[i / 2])?;
                let scaled = e.mulf(*x, log2_scale)?;
                *x = e.select(visible, scaled, neg_inf)?;
            }
        }

        between(e)?;

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
            alpha[r] = ex2(e, d)?;
        }
        let mut sums = [zero; 2];
        for acc in s.iter_mut() {
            for (i, x) in acc.iter_mut().enumerate() {
                let d = e.subf(*x, m_use[i / 2])?;
                *x = ex2(e, d)?;
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
        for cells in o {
            let mut vals = [zero; 4];
            for (i, (&cell, v)) in cells.iter().zip(vals.iter_mut()).enumerate() {
                let x = e.get(cell)?;
                *v = e.mulf(x, alpha[i / 2])?;
            }
            o_vals.push(vals);
        }

        // O += P·V over the tile's 4 key chunks of 16 (P rounded to BF16 from S).
        let p: Vec<[Value; 4]> = (0..(KV_TILE / 16) as usize)
            .map(|kc| {
                let (lo, hi) = (&s[2 * kc], &s[2 * kc + 1]);
                Ok([
                    pack_bf16x2(e, lo[0], lo[1])?,
                    pack_bf16x2(e, lo[2], lo[3])?,
                    pack_bf16x2(e, hi[0], hi[1])?,
                    pack_bf16x2(e, hi[2], hi[3])?,
                ])
            })
            .collect::<Result<_, CodegenError>>()?;
        match self.form {
            AttentionForm::Wgmma | AttentionForm::WgmmaTma => {
                o_vals = wgmma::values(e, self, &p, v_ld, &o_vals)?;
            }
            AttentionForm::MmaSync => {
                for (kc, a) in p.iter().enumerate() {
                    for (pair, accs) in o_vals.chunks_mut(2).enumerate() {
                        // Value dims 16·pair + g (+ 8), keys 16kc + 2q, + 1 (b0) and + 8,
                        // + 9 (b1); an odd last octet takes two matrices.
                        let at = 2 * (16 * kc as u64 * self.v_stride() + 16 * pair as u64);
                        let address = e.addi(v_ld, e.int(32, at as i64)?)?;
                        let b = e.ldmatrix_trans(address, 2 * accs.len() as u32)?;
                        for (acc, b) in accs.iter_mut().zip(b.chunks(2)) {
                            *acc = mma(e, INSTRUCTION, *a, [b[0], b[1]], *acc)?;
                        }
                    }
                }
            }
        }
        for (cells, vals) in o.iter().zip(&o_vals) {
            for (&cell, &v) in cells.iter().zip(vals) {
                e.set(cell, v)?;
            }
        }
        Ok(())
    }

    /// l over the quad's lanes, then O / l rounded; a row without keys stays zeros.
    pub(super) fn finish<'c>(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
        running: &Running<'c, '_>,
    ) -> Result<(), CodegenError> {
        let zero = e.f32(0.0)?;
        let (b, h, rows) = (at.b, at.h, at.rows);
        let q2 = e.muli(at.quad, e.index(2)?)?;
        let q_len = e.index(self.q_len() as i64)?;
        let real = [e.lt(rows[0], q_len)?, e.lt(rows[1], q_len)?];
        let Running { o, l, .. } = running;
        let mut inv = [zero; 2];
        for r in 0..2 {
            let mut total = e.get(l[r])?;
            for offset in [1, 2] {
                let other = e.shuffle_xor(total, offset)?;
                total = e.addf(total, other)?;
            }
            inv[r] = total;
        }
        let v_dim = e.index(self.v_dim() as i64)?;
        // Each output, as `attention` stores it, in f32.
        let mut ys = Vec::with_capacity(o.len());
        for cells in o {
            let mut y = [zero; 4];
            for (i, &cell) in cells.iter().enumerate() {
                let r = i / 2;
                let x = e.get(cell)?;
                let has_keys = e.cmpf(CmpfPredicate::Ogt, inv[r], zero)?;
                let quotient = e.divf(x, inv[r])?;
                y[i] = e.select(has_keys, quotient, zero)?;
            }
            ys.push(y);
        }
        let store = |nt: usize, i: usize, value: Value<'c, '_>, to: Value<'c, '_>| {
            let r = i / 2;
            e.if_then(real[r], |e| {
                let row = row_index(&e, b, rows[r], h, self.q_len(), self.heads())?;
                let col = e.index((8 * nt + i % 2) as i64)?;
                let col = e.addi(col, q2)?;
                let at = e.muli(row, v_dim)?;
                let at = e.addi(at, col)?;
                e.store(value, to, at);
                Ok(())
            })
        };
        let (Some(quant), Some(scales)) = (self.quant, ops.scales) else {
            for (nt, y) in ys.iter().enumerate() {
                for (i, &y) in y.iter().enumerate() {
                    store(nt, i, e.round_to(y, self.output)?, ops.out)?;
                }
            }
            return Ok(());
        };
        // Quantized: a group's 1 × tile outputs of a row lie in its quad's four lanes (two
        // columns of each octet per lane), so its amax is the lanes' maxima over the quad.
        let octets = (quant.tile / 8) as usize;
        let groups = self.v_dim() / quant.tile;
        let first_lane = e.cmpi(CmpiPredicate::Eq, at.quad, e.index(0)?)?;
        for g in 0..groups as usize {
            let span = g * octets..(g + 1) * octets;
            for r in 0..2 {
                let mut values = Vec::with_capacity(2 * octets);
                let mut amax = zero;
                for nt in span.clone() {
                    for i in [2 * r, 2 * r + 1] {
                        let y = e.round_through(ys[nt][i], self.output)?;
                        amax = e.max_skip_nan(amax, e.absf(y)?)?;
                        values.push((nt, i, y));
                    }
                }
                for offset in [1, 2] {
                    let other = e.shuffle_xor(amax, offset)?;
                    amax = e.max_skip_nan(amax, other)?;
                }
                let s = e.scale_for(amax, quant.format, quant.scale_format)?;
                for (nt, i, y) in values {
                    let code = e.encode_code(e.divf(y, s)?, quant.format)?;
                    store(nt, i, code, ops.out)?;
                }
                let writes = e.andi(first_lane, real[r])?;
                e.if_then(writes, |e| {
                    let row = row_index(&e, b, rows[r], h, self.q_len(), self.heads())?;
                    let at = e.muli(row, e.index(groups as i64)?)?;
                    let at = e.addi(at, e.index(g as i64)?)?;
                    e.store(s, scales, at);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Copies keys `t0 .. t0 + KV_TILE` into the K tile: row `t − t0` holds `k_nope | k_pe` and
    /// zeros to the padded width; keys past the end are zeros. Each thread copies one 16-byte
    /// chunk column of rows `r0`, `r0 + rows_per_step`, … (constant offsets from one address).
    fn stage_k<'c>(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
        t0: Value<'c, '_>,
        k_smem: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let lane = StageLane::new(e, at.tid, self.qk_padded() / 8)?;
        let main_chunks = self.main().dim / 8;
        let main_chunks_v = e.index(main_chunks as i64)?;
        let is_main = e.lt(lane.c, main_chunks_v)?;
        let row = e.addi(t0, lane.r0)?;
        let main_at = self.chunk_address(
            e,
            ops.k,
            at,
            row,
            at.kh,
            self.main(),
            self.k_window(),
            lane.c,
        )?;
        let main_row = self.main().kv_heads * self.k_window().0 * 2;
        let (source, row_bytes, in_dims) = match (self.rope, ops.pe) {
            (Some(r), Some((_, k_pe))) => {
                let zero = e.index(0)?;
                let c_pe = e.subi(lane.c, main_chunks_v)?;
                let c_pe = e.select(is_main, zero, c_pe)?;
                let pe_at = self.chunk_address(e, k_pe, at, row, at.kh_pe, r, (r.dim, 0), c_pe)?;
                let end = e.index((main_chunks + r.dim / 8) as i64)?;
                let in_dims = e.lt(lane.c, end)?;
                let pe_row = e.int(64, (r.kv_heads * r.dim * 2) as i64)?;
                let main_row = e.int(64, main_row as i64)?;
                (
                    e.select(is_main, main_at, pe_at)?,
                    e.select(is_main, main_row, pe_row)?,
                    in_dims,
                )
            }
            _ => (main_at, e.int(64, main_row as i64)?, is_main),
        };
        let eight_c = e.muli(lane.c, e.index(8)?)?;
        let place = lane.place(e, k_smem, self.k_stride(), lane.r0, eight_c)?;
        let tile = Tile {
            base: k_smem,
            first: place,
            stride: self.k_stride(),
            fallback: e.address_of(ops.k)?,
        };
        self.copy_rows(e, &lane, t0, source, row_bytes, Some(in_dims), tile)
    }

    /// Copies this lane's chunk column of keys `t0 + r0`, `t0 + r0 + rows_per_step`, … from
    /// `source` (the chunk of key `t0 + r0`; keys `row_bytes` apart) into `tile`; keys past
    /// the end, and the whole column when `in_dims` is false, as zeros.
    #[allow(clippy::too_many_arguments)]
    fn copy_rows<'c>(
        &self,
        e: &Emit<'c, '_>,
        lane: &StageLane<'c, '_>,
        t0: Value<'c, '_>,
        source: Value<'c, '_>,
        row_bytes: Value<'c, '_>,
        in_dims: Option<Value<'c, '_>>,
        tile: Tile<'c, '_>,
    ) -> Result<(), CodegenError> {
        let kv_len = e.index(self.kv_len() as i64)?;
        for step in 0..KV_TILE.div_ceil(lane.rows_per_step) {
            let rows = step * lane.rows_per_step;
            let r = e.addi(lane.r0, e.index(rows as i64)?)?;
            let t = e.addi(t0, r)?;
            let in_tile = e.lt(r, e.index(KV_TILE as i64)?)?;
            let in_tile = e.andi(lane.active, in_tile)?;
            let key_ok = e.lt(t, kv_len)?;
            let mut ok = e.andi(in_tile, key_ok)?;
            if let Some(in_dims) = in_dims {
                ok = e.andi(ok, in_dims)?;
            }
            let step_bytes = e.muli(e.int(64, rows as i64)?, row_bytes)?;
            let address = e.addi(source, step_bytes)?;
            match self.form {
                // Where nothing is read (src-size 0: zeros) the source is a real address.
                AttentionForm::MmaSync => {
                    let offset = e.int(32, (2 * rows * tile.stride) as i64)?;
                    let place = e.addi(tile.first, offset)?;
                    let address = e.select(ok, address, tile.fallback)?;
                    let size = e.select(ok, e.int(32, 16)?, e.int(32, 0)?)?;
                    e.cp_async_16_if(place, address, size, in_tile)?;
                }
                // (The TMA form stages nothing itself.)
                AttentionForm::Wgmma | AttentionForm::WgmmaTma => {
                    let words = global_load_v4(e, address, ok)?;
                    e.if_then(in_tile, |e| {
                        let place = wgmma::place(&e, tile.base, r, lane.c)?;
                        shared_store_v4(&e, place, words)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The global address of 16-byte chunk `c` of row `t`, head `head` of a `[batch, kv_len,
    /// heads, dim]` BF16 operand `matrix` whose rows are `window = (stride, offset)`: `dim`
    /// elements from `offset` of each `stride` (`(dim, 0)` for its own tensor), as an `i64`.
    #[allow(clippy::too_many_arguments)]
    fn chunk_address<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        matrix: Value<'c, '_>,
        at: &Place<'c, '_>,
        t: Value<'c, '_>,
        head: Value<'c, '_>,
        operand: HeadOperand,
        (stride, offset): (u64, u64),
        c: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let row = row_index(e, at.b, t, head, self.kv_len(), operand.kv_heads)?;
        let element = e.muli(row, e.index(stride as i64)?)?;
        let element = e.addi(element, e.index(offset as i64)?)?;
        let c8 = e.muli(c, e.index(8)?)?;
        let element = e.addi(element, c8)?;
        let bytes = e.muli(element, e.index(2)?)?;
        let bytes = e.index_cast(bytes, e.int_type(64))?;
        let base = e.address_of(matrix)?;
        e.addi(base, bytes)
    }

    /// Copies the values of keys `t0 .. t0 + KV_TILE` into the V tile (row `t − t0`); keys
    /// past the end are zeros.
    fn stage_v<'c>(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        at: &Place<'c, '_>,
        t0: Value<'c, '_>,
        v_smem: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let lane = StageLane::new(e, at.tid, self.v_dim() / 8)?;
        let values = HeadOperand {
            kv_heads: self.v_heads(),
            dim: self.v_dim(),
            dtype: self.values,
        };
        let row = e.addi(t0, lane.r0)?;
        let source =
            self.chunk_address(e, ops.v, at, row, at.vh, values, self.v_window(), lane.c)?;
        let row_bytes = e.int(64, (self.v_heads() * self.v_window().0 * 2) as i64)?;
        let eight_c = e.muli(lane.c, e.index(8)?)?;
        let place = lane.place(e, v_smem, self.v_stride(), lane.r0, eight_c)?;
        let tile = Tile {
            base: v_smem,
            first: place,
            stride: self.v_stride(),
            fallback: e.address_of(ops.v)?,
        };
        self.copy_rows(e, &lane, t0, source, row_bytes, None, tile)
    }
}

/// A shared tile being staged: its base, this lane's first place in the padded layout, the
/// padded layout's elements per row, and a global address a copy of nothing may name.
#[derive(Clone, Copy)]
struct Tile<'c, 'a> {
    base: Value<'c, 'a>,
    first: Value<'c, 'a>,
    stride: u64,
    fallback: Value<'c, 'a>,
}

/// A thread's part in staging a tile of `chunks_per_row` 16-byte chunks per row: chunk column
/// `c` of rows `r0 + k · rows_per_step` (threads past `rows_per_step · chunks_per_row` idle).
struct StageLane<'c, 'a> {
    c: Value<'c, 'a>,
    r0: Value<'c, 'a>,
    active: Value<'c, 'a>,
    rows_per_step: u64,
}

impl<'c, 'a> StageLane<'c, 'a> {
    fn new(
        e: &Emit<'c, 'a>,
        tid: Value<'c, '_>,
        chunks_per_row: u64,
    ) -> Result<Self, CodegenError> {
        let rows_per_step = (u64::from(THREADS) / chunks_per_row).max(1);
        let per_row = e.index(chunks_per_row as i64)?;
        let used = e.index((rows_per_step * chunks_per_row) as i64)?;
        Ok(StageLane {
            c: e.remui(tid, per_row)?,
            r0: e.divui(tid, per_row)?,
            active: e.lt(tid, used)?,
            rows_per_step,
        })
    }

    /// The shared address of element `(row, col)` of a tile with `stride` elements per row.
    fn place(
        &self,
        e: &Emit<'c, 'a>,
        tile: Value<'c, '_>,
        stride: u64,
        row: Value<'c, '_>,
        col: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let at = e.muli(row, e.index(stride as i64)?)?;
        let at = e.addi(at, col)?;
        let at = e.muli(at, e.index(2)?)?;
        let at = e.index_cast(at, e.int_type(32))?;
        e.addi(tile, at)
    }
}

/// The kernel's buffers.
pub(super) struct Operands<'c, 'a> {
    pub(super) q: Value<'c, 'a>,
    pub(super) k: Value<'c, 'a>,
    pub(super) v: Value<'c, 'a>,
    /// `(q_pe, k_pe)`.
    pub(super) pe: Option<(Value<'c, 'a>, Value<'c, 'a>)>,
    /// The output, or its codes when quantized.
    pub(super) out: Value<'c, 'a>,
    /// The scales of a quantized output.
    pub(super) scales: Option<Value<'c, 'a>>,
}

impl<'c, 'a> Operands<'c, 'a> {
    /// The buffers among the kernel's arguments `args` (in [`FlashAttention::params`]' order).
    pub(super) fn new(spec: &FlashAttention, args: &[Value<'c, 'a>]) -> Self {
        let n = args.len();
        let (out, scales) = match spec.quant {
            Some(_) => (args[n - 2], Some(args[n - 1])),
            None => (args[n - 1], None),
        };
        Operands {
            q: args[0],
            k: args[1],
            v: args[2],
            pe: spec.rope.map(|_| (args[3], args[4])),
            out,
            scales,
        }
    }
}

/// A thread's running softmax: the O accumulators (value-dim octets × 4 registers) and the
/// max and sum of its two rows, as cells (made in the entry block, where they stay registers).
pub(super) struct Running<'c, 'a> {
    o: Vec<[Value<'c, 'a>; 4]>,
    m: [Value<'c, 'a>; 2],
    l: [Value<'c, 'a>; 2],
}

impl<'c, 'a> Running<'c, 'a> {
    pub(super) fn new(spec: &FlashAttention, e: &Emit<'c, 'a>) -> Result<Self, CodegenError> {
        let zero = e.f32(0.0)?;
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        Ok(Running {
            o: (0..spec.v_dim() / 8)
                .map(|_| Ok([e.cell(zero)?, e.cell(zero)?, e.cell(zero)?, e.cell(zero)?]))
                .collect::<Result<_, CodegenError>>()?,
            m: [e.cell(neg_inf)?, e.cell(neg_inf)?],
            l: [e.cell(zero)?, e.cell(zero)?],
        })
    }
}

/// Where a thread works: its block's batch, head and query block, the heads it reads, and its
/// lane's place in the warp's 16 rows.
pub(super) struct Place<'c, 'a> {
    tid: Value<'c, 'a>,
    pub(super) b: Value<'c, 'a>,
    h: Value<'c, 'a>,
    pub(super) qb: Value<'c, 'a>,
    /// Key, RoPE-key and value heads of `h`.
    pub(super) kh: Value<'c, 'a>,
    pub(super) kh_pe: Value<'c, 'a>,
    pub(super) vh: Value<'c, 'a>,
    /// `lane % 4`.
    quad: Value<'c, 'a>,
    /// The lane's two query rows: `block_q · qb + first + 16 warp + lane / 4`, `+ 8`.
    rows: [Value<'c, 'a>; 2],
}

impl<'c, 'a> Place<'c, 'a> {
    /// The place of thread `tid` (of its warpgroup: warps `tid / 32` of 16 rows each) whose
    /// warpgroup's rows start `first` (an index) into the block's queries.
    pub(super) fn new(
        spec: &FlashAttention,
        e: &Emit<'c, 'a>,
        tid: Value<'c, 'a>,
        first: Value<'c, '_>,
    ) -> Result<Self, CodegenError> {
        let block = e.block_index(Dimension::X)?;
        let bh_count = e.index((spec.batch() * spec.heads()) as i64)?;
        let bh = e.remui(block, bh_count)?;
        let late_first = e.divui(block, bh_count)?;
        let last = e.index(spec.q_blocks().max(1) as i64 - 1)?;
        let qb = e.subi(last, late_first)?;
        let heads = e.index(spec.heads() as i64)?;
        let b = e.divui(bh, heads)?;
        let h = e.remui(bh, heads)?;
        let head_of = |kv_heads: u64| -> Emitted<'c, 'a> {
            let group = e.index((spec.heads() / kv_heads.max(1)).max(1) as i64)?;
            e.divui(h, group)
        };
        let kh = head_of(spec.main().kv_heads)?;
        let kh_pe = head_of(spec.rope.map_or(1, |r| r.kv_heads))?;
        let vh = head_of(spec.v_heads())?;
        let thirty_two = e.index(32)?;
        let warp = e.divui(tid, thirty_two)?;
        let lane = e.remui(tid, thirty_two)?;
        let four = e.index(4)?;
        let group = e.divui(lane, four)?;
        let quad = e.remui(lane, four)?;
        let row0 = e.muli(qb, e.index(spec.block_q() as i64)?)?;
        let row0 = e.addi(row0, first)?;
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
            quad,
            rows: [row0, row1],
        })
    }
}

/// `2^x` by `ex2.approx.ftz.f32` (one MUFU instruction; −inf gives +0), as FlashAttention
/// takes `exp(s − m)` on log2e-scaled scores.
fn ex2<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, '_>) -> Emitted<'c, 'a> {
    e.inline_asm("ex2.approx.ftz.f32 $0, $1;", "=f,f", &[x], e.f32_type())
}
