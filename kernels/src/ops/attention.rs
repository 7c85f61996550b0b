//! Core attention in f32: scores `q·kᵀ (+ q_pe·k_peᵀ) · scale` with an optional causal mask,
//! and the probability-weighted sum of values. Grouped-query heads: query head `h` reads
//! key/value head `h / (H / Hk)`, as HF's `repeat_kv` lays them out.

use super::error::{OpError, check_shape, ranked};
use super::linear::{View, gemm_into};
use dsc_ir::Shape;
use rayon::prelude::*;
use serde::Serialize;

/// Sizes of `attn_scores`: q `[batch, q_len, heads, head_dim]`, k `[batch, kv_len, kv_heads,
/// head_dim]`. The GPU kernels' specs (scores, fused attention) hold them as they are
/// (`Serialize` gives them their manifest attributes and canonical text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ScoreDims {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl ScoreDims {
    /// The sizes of the op whose q and k have these shapes (both rank 4).
    pub fn from_shapes(q: &Shape, k: &Shape) -> Result<Self, OpError> {
        let [batch, q_len, heads, head_dim] = ranked("q", q)?;
        let [_, kv_len, kv_heads, _] = ranked("k", k)?;
        Ok(ScoreDims {
            batch,
            q_len,
            kv_len,
            heads,
            kv_heads,
            head_dim,
        })
    }
}

/// The heads and dims per head of MLA's `k_pe` `[batch, kv_len, kv_heads, dim]`: the
/// `kv_heads` and `dim` of [`RopeOperands`].
pub fn rope_pe_dims(k_pe: &Shape) -> Result<(usize, usize), OpError> {
    let [_, _, kv_heads, dim] = ranked("k_pe", k_pe)?;
    Ok((kv_heads, dim))
}

/// The decoupled RoPE part of MLA scores: q_pe `[batch, q_len, heads, dim]`, k_pe `[batch,
/// kv_len, kv_heads, dim]` (DeepSeek shares one k_pe head: `kv_heads = 1`).
#[derive(Debug, Clone, Copy)]
pub struct RopeOperands<'a> {
    pub q_pe: &'a [f32],
    pub k_pe: &'a [f32],
    pub kv_heads: usize,
    pub dim: usize,
}

/// Sizes of `attn_values`: p `[batch, heads, q_len, kv_len]`, v `[batch, kv_len, v_heads,
/// v_dim]`. The GPU kernel's spec holds them as they are (`Serialize` gives them its manifest
/// attributes and canonical text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ValueDims {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub heads: usize,
    pub v_heads: usize,
    pub v_dim: usize,
}

impl ValueDims {
    /// The sizes of the op whose p and v have these shapes (both rank 4).
    pub fn from_shapes(p: &Shape, v: &Shape) -> Result<Self, OpError> {
        let [batch, heads, q_len, kv_len] = ranked("p", p)?;
        let [_, _, v_heads, v_dim] = ranked("v", v)?;
        Ok(ValueDims {
            batch,
            q_len,
            kv_len,
            heads,
            v_heads,
            v_dim,
        })
    }
}

/// The number of query heads per key head, refusing kv head counts that do not divide.
fn group(what: &str, heads: usize, kv_heads: usize) -> Result<usize, OpError> {
    if heads == 0 {
        return Ok(1);
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(OpError::Shape(format!(
            "{what} has {kv_heads} heads, which does not divide the {heads} query heads"
        )));
    }
    Ok(heads / kv_heads)
}

/// `scores[b, h, s, t] = (q[b,s,h]·k[b,t,h/g] (+ q_pe[b,s,h]·k_pe[b,t,h/g_pe])) · scale` →
/// `[batch, heads, q_len, kv_len]`, f32; with `causal`, keys `t > s + (kv_len - q_len)` (later
/// than the query's position when the queries are the last `q_len` of the keys) are -inf.
pub fn attn_scores(
    q: &[f32],
    k: &[f32],
    dims: ScoreDims,
    pe: Option<RopeOperands<'_>>,
    scale: f64,
    causal: bool,
) -> Result<Vec<f32>, OpError> {
    let scores = Scores::new(q, k, dims, pe, scale, causal)?;
    let ScoreDims {
        batch: nb,
        q_len: s,
        kv_len: t,
        heads: h,
        ..
    } = dims;
    let mut out = vec![0.0f32; nb * h * s * t];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(s * t)
        .enumerate()
        .for_each(|(i, o)| scores.rows(i / h, i % h, 0, s, o));
    Ok(out)
}

/// The checked operands of [`attn_scores`], which compute any rows of one (batch, head)'s
/// scores: the fused [`attention`] takes them a block of rows at a time, so that it never
/// holds a `[q_len, kv_len]` matrix.
struct Scores<'a> {
    q: &'a [f32],
    k: &'a [f32],
    dims: ScoreDims,
    pe: Option<RopeOperands<'a>>,
    /// HF multiplies the f32 product by the Python float scale: scale rounded to f32.
    scale: f32,
    causal: bool,
    /// Query heads per key head, of k and of k_pe.
    g: usize,
    g_pe: usize,
}

impl<'a> Scores<'a> {
    fn new(
        q: &'a [f32],
        k: &'a [f32],
        dims: ScoreDims,
        pe: Option<RopeOperands<'a>>,
        scale: f64,
        causal: bool,
    ) -> Result<Self, OpError> {
        let ScoreDims {
            batch: nb,
            q_len: s,
            kv_len: t,
            heads: h,
            kv_heads: hk,
            head_dim: d,
        } = dims;
        check_shape("q", q.len(), &[nb, s, h, d])?;
        check_shape("k", k.len(), &[nb, t, hk, d])?;
        let g = group("k", h, hk)?;
        let g_pe = match &pe {
            Some(p) => {
                check_shape("q_pe", p.q_pe.len(), &[nb, s, h, p.dim])?;
                check_shape("k_pe", p.k_pe.len(), &[nb, t, p.kv_heads, p.dim])?;
                group("k_pe", h, p.kv_heads)?
            }
            None => 1,
        };
        if causal && t < s {
            return Err(OpError::Shape(format!(
                "causal attention needs at least as many keys ({t}) as queries ({s})"
            )));
        }
        Ok(Scores {
            q,
            k,
            dims,
            pe,
            scale: scale as f32,
            causal,
            g,
            g_pe,
        })
    }

    /// Rows `s0 .. s0 + rows` of batch `b`, head `hh`'s scores into `o` (`rows × kv_len`).
    fn rows(&self, b: usize, hh: usize, s0: usize, rows: usize, o: &mut [f32]) {
        let ScoreDims {
            q_len: s,
            kv_len: t,
            heads: h,
            kv_heads: hk,
            head_dim: d,
            ..
        } = self.dims;
        // q[b, s0.., hh, :] as the rows × d lhs; k[b, t, kv, :] as the d × t rhs.
        let qv = View {
            offset: ((b * s + s0) * h + hh) * d,
            rs: h * d,
            cs: 1,
        };
        let kv = View {
            offset: (b * t * hk + hh / self.g) * d,
            rs: 1,
            cs: hk * d,
        };
        gemm_into(
            o,
            View::rows(0, t),
            false,
            self.q,
            qv,
            self.k,
            kv,
            (rows, t, d),
            false,
        );
        if let Some(p) = &self.pe {
            let (r, hp) = (p.dim, p.kv_heads);
            let qpv = View {
                offset: ((b * s + s0) * h + hh) * r,
                rs: h * r,
                cs: 1,
            };
            let kpv = View {
                offset: (b * t * hp + hh / self.g_pe) * r,
                rs: 1,
                cs: hp * r,
            };
            gemm_into(
                o,
                View::rows(0, t),
                true,
                p.q_pe,
                qpv,
                p.k_pe,
                kpv,
                (rows, t, r),
                false,
            );
        }
        let offset = t - s.min(t);
        for (si, row) in o.chunks_mut(t).enumerate() {
            let si = s0 + si;
            for (ti, v) in row.iter_mut().enumerate() {
                *v = if self.causal && ti > si + offset {
                    f32::NEG_INFINITY
                } else {
                    *v * self.scale
                };
            }
        }
    }
}

/// `out[b, s, h, :] = Σ_t p[b, h, s, t] · v[b, t, h/g, :]` → `[batch, q_len, heads, v_dim]`,
/// f32 accumulation.
pub fn attn_values(p: &[f32], v: &[f32], dims: ValueDims) -> Result<Vec<f32>, OpError> {
    let ValueDims {
        batch: nb,
        q_len: s,
        kv_len: t,
        heads: h,
        v_heads: hv,
        v_dim: dv,
    } = dims;
    check_shape("p", p.len(), &[nb, h, s, t])?;
    check_shape("v", v.len(), &[nb, t, hv, dv])?;
    let g = group("v", h, hv)?;
    let mut out = vec![0.0f32; nb * s * h * dv];
    if out.is_empty() {
        return Ok(out);
    }
    // One [s, dv] block per (batch, head) in parallel, then interleaved into [b, s, h, dv].
    let blocks: Vec<Vec<f32>> = (0..nb * h)
        .into_par_iter()
        .map(|i| {
            let (b, hh) = (i / h, i % h);
            let mut o = vec![0.0f32; s * dv];
            let vv = View {
                offset: (b * t * hv + hh / g) * dv,
                rs: hv * dv,
                cs: 1,
            };
            let pv = View::rows(i * s * t, t);
            gemm_into(
                &mut o,
                View::rows(0, dv),
                false,
                p,
                pv,
                v,
                vv,
                (s, dv, t),
                false,
            );
            o
        })
        .collect();
    interleave_heads(&blocks, &mut out, s, h, dv);
    Ok(out)
}

/// Keys per tile of fused [`attention`]'s online softmax: the running max and sum are rescaled
/// once per tile, so the tile is part of the op's rounding (the GPU kernel streams K/V in tiles
/// of exactly this many keys).
pub const ATTENTION_KV_TILE: usize = 64;

/// Elements each shared-memory row of the fused kernel's tiles is padded by (so that fragment
/// reads of 8 rows hit distinct banks).
pub const ATTENTION_SHARED_PAD: usize = 8;
/// Shared memory a block of the fused kernel may use (static).
pub const ATTENTION_SHARED_LIMIT: usize = 48 * 1024;

/// Shared bytes of the fused kernel's tiles: [`ATTENTION_KV_TILE`] keys by the score dims
/// (`head_dim + rope_dim`, padded to 16) and by the value dims, BF16, rows padded.
pub fn attention_shared_bytes(qk_dim: usize, v_dim: usize) -> usize {
    let k_stride = qk_dim.div_ceil(16) * 16 + ATTENTION_SHARED_PAD;
    let v_stride = v_dim + ATTENTION_SHARED_PAD;
    2 * ATTENTION_KV_TILE * (k_stride + v_stride)
}

/// Whether fused attention's tensor-core kernel takes these head dims: the head dim in whole
/// MMA steps (16), the RoPE and value dims in 16-byte chunks (8), and the tiles within
/// [`ATTENTION_SHARED_LIMIT`]. The `fuse-attention` pass fuses only such attention.
pub fn attention_fusable(head_dim: usize, rope_dim: usize, v_dim: usize) -> Result<(), String> {
    if head_dim == 0 || !head_dim.is_multiple_of(16) {
        return Err(format!(
            "fused attention needs a head dim in multiples of 16, got {head_dim}"
        ));
    }
    if !rope_dim.is_multiple_of(8) || v_dim == 0 || !v_dim.is_multiple_of(8) {
        return Err(format!(
            "fused attention needs rope and value dims in multiples of 8, got {rope_dim} and {v_dim}"
        ));
    }
    let bytes = attention_shared_bytes(head_dim + rope_dim, v_dim);
    if bytes > ATTENTION_SHARED_LIMIT {
        return Err(format!(
            "fused attention's K/V tiles would take {bytes} bytes of shared memory (limit {ATTENTION_SHARED_LIMIT})"
        ));
    }
    Ok(())
}

/// Sizes of fused [`attention`]: the score side as in [`ScoreDims`], and v `[batch, kv_len,
/// v_heads, v_dim]`. Serialized flat (the score sizes in place), as the GPU kernel's spec
/// writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct AttentionDims {
    #[serde(flatten)]
    pub scores: ScoreDims,
    pub v_heads: usize,
    pub v_dim: usize,
}

impl AttentionDims {
    /// The sizes of the fused op whose q, k and v have these shapes (all rank 4).
    pub fn from_shapes(q: &Shape, k: &Shape, v: &Shape) -> Result<Self, OpError> {
        let [_, _, v_heads, v_dim] = ranked("v", v)?;
        Ok(AttentionDims {
            scores: ScoreDims::from_shapes(q, k)?,
            v_heads,
            v_dim,
        })
    }
}

/// Query rows whose scores the fused [`attention`] holds at once per (batch, head), as the GPU
/// kernel's block of 64 queries (fewer when the rows are longer than 2^16 keys).
const ATTENTION_ROW_BLOCK: usize = 64;

/// Fused attention `softmax(scores) · v` → `[batch, q_len, heads, v_dim]` (f32, before the
/// output's rounding), computed as FlashAttention does and with its rounding points: scores as
/// [`attn_scores`] (f32 dot products times the f32 scale, causal keys −inf); then per row,
/// over key tiles of [`ATTENTION_KV_TILE`] (tiles with no visible key are skipped):
/// `m' = max(m, max_tile s)`, `α = exp(m − m')`, `p_t = exp(s_t − m')`, `l = l·α + Σ p_t`,
/// `o = o·α + Σ probs(p_t)·v_t` (the probabilities rounded to `probs`, the dtype the PV
/// product reads, BF16 on tensor cores); finally `o / l`. A row with no visible key is zeros.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttentionDims,
    pe: Option<RopeOperands<'_>>,
    scale: f64,
    causal: bool,
    probs: super::FloatFormat,
) -> Result<Vec<f32>, OpError> {
    let ScoreDims {
        batch: nb,
        q_len: s,
        kv_len: t,
        heads: h,
        ..
    } = dims.scores;
    let (hv, dv) = (dims.v_heads, dims.v_dim);
    check_shape("v", v.len(), &[nb, t, hv, dv])?;
    let g = group("v", h, hv)?;
    let scores = Scores::new(q, k, dims.scores, pe, scale, causal)?;
    let mut out = vec![0.0f32; nb * s * h * dv];
    if out.is_empty() || t == 0 {
        return Ok(out);
    }
    // A block of query rows' scores at a time (at most 2^22 floats), never all of them.
    let block_rows = ATTENTION_ROW_BLOCK.min((1 << 22) / t).clamp(1, s.max(1));
    let blocks: Vec<Vec<f32>> = (0..nb * h)
        .into_par_iter()
        .map(|i| {
            let (b, hh) = (i / h, i % h);
            let mut o = vec![0.0f32; s * dv];
            let mut block = vec![0.0f32; block_rows * t];
            for s0 in (0..s).step_by(block_rows) {
                let rows = block_rows.min(s - s0);
                scores.rows(b, hh, s0, rows, &mut block[..rows * t]);
                for (si, row) in block[..rows * t].chunks(t).enumerate() {
                    let si = s0 + si;
                    let o = &mut o[si * dv..][..dv];
                    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
                    for (tile, start) in row
                        .chunks(ATTENTION_KV_TILE)
                        .zip((0..).step_by(ATTENTION_KV_TILE))
                    {
                        let tile_max = tile.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        if tile_max == f32::NEG_INFINITY {
                            continue;
                        }
                        let m_new = m.max(tile_max);
                        let alpha = (m - m_new).exp();
                        let mut sum = 0.0f32;
                        for x in o.iter_mut() {
                            *x *= alpha;
                        }
                        for (j, &x) in tile.iter().enumerate() {
                            let p = (x - m_new).exp();
                            sum += p;
                            let p = probs.round(p);
                            let row = ((b * t + start + j) * hv + hh / g) * dv;
                            for (x, &vv) in o.iter_mut().zip(&v[row..row + dv]) {
                                *x += p * vv;
                            }
                        }
                        l = l * alpha + sum;
                        m = m_new;
                    }
                    if l > 0.0 {
                        for x in o.iter_mut() {
                            *x /= l;
                        }
                    }
                }
            }
            o
        })
        .collect();
    interleave_heads(&blocks, &mut out, s, h, dv);
    Ok(out)
}

/// Writes one `[s, dv]` block per (batch, head) (`blocks[b · h + head]`) into `out`, laid out
/// `[batch, s, h, dv]`.
fn interleave_heads(blocks: &[Vec<f32>], out: &mut [f32], s: usize, h: usize, dv: usize) {
    for (i, block) in blocks.iter().enumerate() {
        let (b, hh) = (i / h, i % h);
        for (si, row) in block.chunks(dv).enumerate() {
            out[((b * s + si) * h + hh) * dv..][..dv].copy_from_slice(row);
        }
    }
}
