//! Core attention, as two kernels around `softmax`: `attn_scores` (`q·kᵀ` over the head dims,
//! plus the RoPE part for MLA, times the softmax scale, causal mask to -inf) and `attn_values`
//! (`p·v`). One output element per thread, f32 accumulation of exact products.
//!
//! Heads share keys and values in groups (GQA, and MLA's single `k_pe` head): query head `h`
//! reads key head `h / (heads / kv_heads)`.

use dsc_ir::DType;
use dsc_kernels::ops::{ScoreDims, ValueDims};
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// One `[batch, len, heads, dim]` operand pair of a score dot product: the main q/k pair (from
/// [`ScoreDims`] and the specs' q/k dtype) or MLA's RoPE pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeadOperand {
    /// Heads of the key side (the query side has [`ScoreDims::heads`]).
    pub kv_heads: u64,
    /// Dims per head.
    pub dim: u64,
    /// Dtype of both sides.
    pub dtype: DType,
}

/// `scores[b, h, s, t]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttnScores {
    /// The sizes of q and k, as the CPU reference takes them (written in place: see
    /// [`super::canonical`]).
    #[serde(flatten)]
    pub dims: ScoreDims,
    /// Dtype of q and k.
    pub qk: DType,
    /// The RoPE pair (MLA), when present. Its heads and dims per head are not in
    /// [`ScoreDims`]: the reference takes them with the pair's data
    /// ([`dsc_kernels::ops::RopeOperands`]), so the spec keeps them here, with their dtype.
    pub rope: Option<HeadOperand>,
    /// Softmax scale.
    pub scale: f32,
    /// Causal mask (keys after the query's position are -inf).
    pub causal: bool,
}

impl AttnScores {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "attn_scores"
    }

    fn batch(&self) -> u64 {
        self.dims.batch as u64
    }

    fn q_len(&self) -> u64 {
        self.dims.q_len as u64
    }

    fn kv_len(&self) -> u64 {
        self.dims.kv_len as u64
    }

    fn heads(&self) -> u64 {
        self.dims.heads as u64
    }

    /// The main q/k pair.
    fn main(&self) -> HeadOperand {
        main_operand(&self.dims, self.qk)
    }

    fn out_len(&self) -> u64 {
        self.batch() * self.heads() * self.q_len() * self.kv_len()
    }

    /// `(q, k, [q_pe, k_pe,] scores)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = Vec::new();
        let pairs =
            std::iter::once(("q", "k", self.main())).chain(self.rope.map(|r| ("q_pe", "k_pe", r)));
        for (q, k, operand) in pairs {
            params.push(Param::new(
                q,
                operand.dtype,
                self.batch() * self.q_len() * self.heads() * operand.dim,
            ));
            params.push(Param::new(
                k,
                operand.dtype,
                self.batch() * self.kv_len() * operand.kv_heads * operand.dim,
            ));
        }
        params.push(Param::new("scores", DType::F32, self.out_len()));
        params
    }

    /// One thread per score.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.out_len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.out_len(),
            |e, args, i| {
                let out = *args.last().expect("scores");
                let [b, h, s, t] = unflatten(
                    &e,
                    i,
                    [self.batch(), self.heads(), self.q_len(), self.kv_len()],
                )?;
                let offset = e.index(self.kv_len().saturating_sub(self.q_len()) as i64)?;
                let last_key = e.addi(s, offset)?;
                let visible = if self.causal {
                    e.cmpi(CmpiPredicate::Ule, t, last_key)?
                } else {
                    e.cmpi(CmpiPredicate::Eq, t, t)?
                };
                let neg_inf = e.f32(f32::NEG_INFINITY)?;
                let result = e.cell(neg_inf)?;
                e.if_then(visible, |e| {
                    let zero = e.f32(0.0)?;
                    let acc = e.cell(zero)?;
                    let pairs = std::iter::once(self.main()).chain(self.rope);
                    for (pair, operand) in pairs.enumerate() {
                        let (q, k) = (args[2 * pair], args[2 * pair + 1]);
                        let group = self.heads() / operand.kv_heads.max(1);
                        let dim = e.index(operand.dim as i64)?;
                        let q_row = row_index(&e, b, s, h, self.q_len(), self.heads())?;
                        let q_base = e.muli(q_row, dim)?;
                        let group_v = e.index(group as i64)?;
                        let kh = e.divui(h, group_v)?;
                        let k_row = row_index(&e, b, t, kh, self.kv_len(), operand.kv_heads)?;
                        let k_base = e.muli(k_row, dim)?;
                        let part_cell = e.cell(zero)?;
                        e.for_const(0, operand.dim as i64, 1, |e, d| {
                            let qv = e.load_f32(q, q_base, d)?;
                            let kv = e.load_f32(k, k_base, d)?;
                            let product = e.mulf(qv, kv)?;
                            e.accumulate(part_cell, product)
                        })?;
                        let part = e.get(part_cell)?;
                        let total = e.get(acc)?;
                        let total = if pair == 0 {
                            part
                        } else {
                            e.addf(total, part)?
                        };
                        e.set(acc, total)?;
                    }
                    let total = e.get(acc)?;
                    let scale = e.f32(self.scale)?;
                    let scaled = e.mulf(total, scale)?;
                    e.set(result, scaled)
                })?;
                let value = e.get(result)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}

/// `out[b, s, h, d] = Σ_t p[b, h, s, t] · v[b, t, h / group, d]` (over the visible keys only
/// when `p` is a causal softmax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttnValues {
    /// The sizes, as the CPU reference takes them (written in place: see
    /// [`super::canonical`]).
    #[serde(flatten)]
    pub dims: ValueDims,
    /// Probabilities' dtype.
    pub probs: DType,
    /// Values' dtype.
    pub values: DType,
    /// Output dtype.
    pub output: DType,
    /// `p` is a causal softmax: key `t` of query `s` is 0 beyond `s + kv_len − q_len`, so the
    /// sum stops there (the masked half is never read).
    pub causal: bool,
}

impl AttnValues {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "attn_values"
    }

    fn out_len(&self) -> u64 {
        let d = self.dims;
        (d.batch * d.q_len * d.heads * d.v_dim) as u64
    }

    /// `(p, v, out)`.
    pub fn params(&self) -> Vec<Param> {
        let d = self.dims;
        let (p, v) = (
            d.batch * d.heads * d.q_len * d.kv_len,
            d.batch * d.kv_len * d.v_heads * d.v_dim,
        );
        vec![
            Param::new("p", self.probs, p as u64),
            Param::new("v", self.values, v as u64),
            Param::new("out", self.output, self.out_len()),
        ]
    }

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.out_len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let n = self.dims;
        let sizes = [n.batch, n.q_len, n.heads, n.v_dim].map(|x| x as u64);
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.out_len(),
            |e, args, i| {
                let p = args[0];
                let v = args[1];
                let out = args[2];
                let [b, s, h, d] = unflatten(&e, i, sizes)?;
                let heads = e.index(n.heads as i64)?;
                let q_len = e.index(n.q_len as i64)?;
                let kv_len = e.index(n.kv_len as i64)?;
                let p_row = e.muli(b, heads)?;
                let p_row = e.addi(p_row, h)?;
                let p_row = e.muli(p_row, q_len)?;
                let p_row = e.addi(p_row, s)?;
                let p_base = e.muli(p_row, kv_len)?;
                let group = e.index((n.heads / n.v_heads.max(1)) as i64)?;
                let vh = e.divui(h, group)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                let v_dim = e.index(n.v_dim as i64)?;
                // Keys past the causal limit hold probability 0: adding their products would
                // change nothing but the sign of a zero sum.
                let end = if self.causal {
                    let offset = e.index((n.kv_len.saturating_sub(n.q_len) + 1) as i64)?;
                    let last = e.addi(s, offset)?;
                    e.minui(last, kv_len)?
                } else {
                    kv_len
                };
                let start = e.index(0)?;
                let one = e.index(1)?;
                e.for_range(start, end, one, |e, t| {
                    let pv = e.load_f32(p, p_base, t)?;
                    let v_row = row_index(&e, b, t, vh, n.kv_len as u64, n.v_heads as u64)?;
                    let v_base = e.muli(v_row, v_dim)?;
                    let vv = e.load_f32(v, v_base, d)?;
                    let product = e.mulf(pv, vv)?;
                    e.accumulate(acc, product)
                })?;
                let value = e.get(acc)?;
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}

/// `((b · len) + pos) · heads + head`: the row of a `[batch, len, heads, dim]` tensor.
pub(crate) fn row_index<'c, 'a>(
    e: &Emit<'c, 'a>,
    b: Value<'c, '_>,
    pos: Value<'c, '_>,
    head: Value<'c, '_>,
    len: u64,
    heads: u64,
) -> Emitted<'c, 'a> {
    let len = e.index(len as i64)?;
    let heads = e.index(heads as i64)?;
    let row = e.muli(b, len)?;
    let row = e.addi(row, pos)?;
    let row = e.muli(row, heads)?;
    e.addi(row, head)
}

/// The 4-D index of flat row-major `i` in `dims`.
pub(crate) fn unflatten<'c, 'a>(
    e: &Emit<'c, 'a>,
    i: Value<'c, 'a>,
    dims: [u64; 4],
) -> Result<[Value<'c, 'a>; 4], CodegenError> {
    let mut rest = i;
    let mut out = [i; 4];
    for axis in (1..4).rev() {
        let size = e.index(dims[axis] as i64)?;
        out[axis] = e.remui(rest, size)?;
        rest = e.divui(rest, size)?;
    }
    out[0] = rest;
    Ok(out)
}

/// The main q/k pair of scores of these sizes, q and k in `dtype`.
pub(super) fn main_operand(dims: &ScoreDims, dtype: DType) -> HeadOperand {
    HeadOperand {
        kv_heads: dims.kv_heads as u64,
        dim: dims.head_dim as u64,
        dtype,
    }
}
