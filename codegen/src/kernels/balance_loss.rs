//! `balance_loss` and `balance_loss_grad`: the sequence-wise balance loss of a routed layer
//! (DeepSeek-V3 §2.1.2, eqs. 17–20) and its gradient w.r.t. the gate's logits, as the CPU
//! references define them (`dsc_kernels::ops::grad::balance_loss`, whose doc spells out the
//! formulas).
//!
//! For each sequence, the fractions `f_i` come from a histogram of its (token, slot) pairs in
//! shared memory (a repeated index counted once), by integer atomics, whose order changes no
//! count. Tokens go one per warp, eight warps a block, lane `l` holding experts `l·P .. l·P +
//! P` (`P = ⌈E / 32⌉`, as `moe_topk`): scores by sigmoid or the warp softmax, their sum by a
//! warp reduction.
//! - `balance_loss`: one block for the whole op. Per sequence each lane adds its experts'
//!   normalized scores `s / Σ s` over the warp's tokens in registers; the warps' sums meet in
//!   shared memory (added in warp order), thread `i` forms `f_i · P_i`, a block reduction sums
//!   them, and thread 0 adds `α ·` that per sequence and writes the mean. It runs once per
//!   routed layer per step over `T · E` scores, so one block is enough.
//! - `balance_loss_grad`: one block per sequence. After the histogram, `g_i = α · dloss · f_i /
//!   (S · sequences)` is staged in shared memory; per token, `Σ_j g_j · s'_j` and (softmax)
//!   `Σ_j ds_j · s_j` are warp reductions, and each lane writes its experts' gradients.
//!
//! The sums are trees rather than the reference's sequential ones and `e^x` is
//! [`Emit::exp`]'s, so results agree with the reference to about 1e-6 relative, not bit for
//! bit. An expert index outside `0..E` (which the reference refuses) counts for no expert.

use dsc_ir::DType;
use dsc_kernels::ops::ScoreFunc;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::moe::warp_softmax;
use super::moe_dispatch::atomic_add;
use super::norm::block_reduce;
use super::vector_access::global_store_if;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Reduction};
use crate::mlir::kernel::Dimension;

/// Threads per block (the block reduction's size): eight warps, one token each at a time.
pub const THREADS: u32 = super::norm::THREADS;
const WARPS: u64 = THREADS as u64 / 32;

/// The balance loss of `tokens` tokens in `sequences` sequences over `experts` experts, or its
/// gradient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceLoss {
    /// Tokens of all the sequences.
    pub tokens: u64,
    /// Experts.
    pub experts: u64,
    /// Experts chosen per token.
    pub top_k: u64,
    /// Sequences, each `tokens / sequences` long.
    pub sequences: u64,
    /// α, as the f32 the reference multiplies by.
    pub alpha: f32,
    /// How the logits become scores.
    pub score_func: ScoreFunc,
    /// Dtype of the logits.
    pub logits: DType,
    /// The gradient w.r.t. the logits (`balance_loss_grad`) rather than the loss.
    pub grad: bool,
}

impl BalanceLoss {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        if self.grad {
            "balance_loss_grad"
        } else {
            "balance_loss"
        }
    }

    fn seq_len(&self) -> u64 {
        self.tokens / self.sequences.max(1)
    }

    fn per_lane(&self) -> u64 {
        self.experts.div_ceil(32)
    }

    /// `(logits, indices, loss)` or `(logits, indices, dloss, dlogits)`.
    pub fn params(&self) -> Vec<Param> {
        let logits = self.tokens * self.experts;
        let mut params = vec![
            Param::new("logits", self.logits, logits),
            Param::new("indices", DType::I32, self.tokens * self.top_k),
        ];
        if self.grad {
            params.push(Param::new("dloss", DType::F32, 1));
            params.push(Param::new("dlogits", DType::F32, logits));
        } else {
            params.push(Param::new("loss", DType::F32, 1));
        }
        params
    }

    /// One block (the loss) or one per sequence (the gradient).
    pub fn launch(&self) -> Launch {
        Launch::blocks(if self.grad { self.sequences } else { 1 }, THREADS)
    }

    /// Why the kernel cannot take these shapes, if it cannot.
    pub fn supported(&self) -> Result<(), String> {
        if self.sequences == 0 || !self.tokens.is_multiple_of(self.sequences) {
            return Err(format!(
                "{} sequences do not divide {} tokens",
                self.sequences, self.tokens
            ));
        }
        // The per-warp sums (a row of 32·P per warp) and the histogram live in shared memory.
        if self.experts == 0 || 32 * self.per_lane() * (WARPS + 2) * 4 > 40 * 1024 {
            return Err(format!("{} experts (1 to 1088)", self.experts));
        }
        Ok(())
    }

    /// Builds the kernel.
    pub fn build<'c>(&self, module: &KernelModule<'c>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(CodegenError::invalid_kernel(entry))?;
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let memref = |element: Type<'c>, len: u64| -> Type<'c> {
            MemRefType::new(element, &[len as i64], None, workgroup).into()
        };
        let f32_type = Type::float32(context);
        let i32_type: Type = IntegerType::new(context, 32).into();
        let e_len = self.experts;
        // The block reduction's partials, the warps' sums (loss) or g (gradient), the counts.
        // The partials come first: LLVM reads them with 16-byte loads (they are read at
        // constant offsets) though workgroup buffers are declared 4-byte aligned, so they must
        // start where the block's shared memory does.
        let shared = vec![
            memref(f32_type, WARPS),
            memref(
                f32_type,
                if self.grad {
                    e_len
                } else {
                    WARPS * 32 * self.per_lane()
                },
            ),
            memref(i32_type, e_len),
        ];
        let n = types.len();
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let smem = Shared {
                partials: args[n],
                staged: args[n + 1],
                counts: args[n + 2],
            };
            let tid = e.thread_x()?;
            let lanes = Lanes {
                tid,
                warp: e.divui(tid, e.index(32)?)?,
                lane: e.remui(tid, e.index(32)?)?,
            };
            if self.grad {
                let seq = e.block_index(Dimension::X)?;
                self.gradient(&e, &args, &smem, &lanes, seq)
            } else {
                self.loss(&e, &args, &smem, &lanes)
            }
        })
    }

    /// The histogram of sequence `seq`'s (token, slot) pairs in `counts`, a repeated index
    /// counted once; ends with a barrier. Branch-free (every lane of a warp takes every
    /// loop trip and adds 0 where it has nothing to count), so the warps stay converged for the
    /// shuffles that follow.
    fn count<'c>(
        &self,
        e: &Emit<'c, '_>,
        indices: Value<'c, '_>,
        counts: Value<'c, '_>,
        tid: Value<'c, '_>,
        seq: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let threads = e.index(i64::from(THREADS))?;
        let zero_index = e.index(0)?;
        let zero = e.int(32, 0)?;
        let last_expert = e.index(self.experts as i64 - 1)?;
        e.for_range(
            zero_index,
            e.index(self.experts as i64)?,
            threads,
            |e, i0| {
                let i = e.minui(e.addi(i0, tid)?, last_expert)?;
                e.store(zero, counts, i);
                Ok(())
            },
        )?;
        e.barrier();
        let k = self.top_k;
        let pairs = self.seq_len() * k;
        let first = e.muli(seq, e.index(pairs as i64)?)?;
        let last_pair = e.index(pairs as i64 - 1)?;
        e.for_range(zero_index, e.index(pairs as i64)?, threads, |e, r0| {
            let r = e.addi(r0, tid)?;
            let real = e.lt(r, e.index(pairs as i64)?)?;
            let r = e.minui(r, last_pair)?;
            let at = e.addi(first, r)?;
            let j = e.remui(r, e.index(k as i64)?)?;
            let base = e.subi(at, j)?;
            let index = e.load(indices, at)?;
            let (expert, valid) = e.checked_index(index, self.experts as i64)?;
            let mut repeated = e.int(1, 0)?;
            for earlier in 0..k.saturating_sub(1) {
                let before = e.lt(e.index(earlier as i64)?, j)?;
                let other = e.load(indices, e.addi(base, e.index(earlier as i64)?)?)?;
                let same = e.cmpi(CmpiPredicate::Eq, other, index)?;
                repeated = e.ori(repeated, e.andi(before, same)?)?;
            }
            let fresh = e.xori(repeated, e.int(1, 1)?)?;
            let counted = e.andi(e.andi(real, valid)?, fresh)?;
            let add = e.select(counted, e.int(32, 1)?, zero)?;
            atomic_add(&e, counts, expert, add)
        })?;
        e.barrier();
        Ok(())
    }

    /// `f_i` of the counted sequence, from its count.
    fn fraction<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        count: Value<'c, '_>,
    ) -> Result<Value<'c, 'a>, CodegenError> {
        let per = self.experts as f32 / (self.top_k as f32 * self.seq_len() as f32);
        let count = e.sitofp(count, e.f32_type())?;
        e.mulf(e.f32(per)?, count)
    }

    /// Token `t`'s scores for this lane's experts (0 for padding), their sum over the
    /// experts (every lane), and which of the lane's slots are experts.
    fn scores<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        logits: Value<'c, '_>,
        t: Value<'c, '_>,
        lane: Value<'c, '_>,
    ) -> Result<Token<'c, 'a>, CodegenError> {
        let p = self.per_lane();
        let experts = e.index(self.experts as i64)?;
        let row = e.muli(t, experts)?;
        let lane_first = e.muli(lane, e.index(p as i64)?)?;
        let last = e.index(self.experts as i64 - 1)?;
        let zero = e.f32(0.0)?;
        let (mut ids, mut real, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..p {
            let x = e.addi(lane_first, e.index(s as i64)?)?;
            let logit = e.load_f32(logits, row, e.minui(x, last)?)?;
            ids.push(x);
            real.push(e.lt(x, experts)?);
            values.push(logit);
        }
        let scores = match self.score_func {
            ScoreFunc::Sigmoid => values
                .iter()
                .zip(&real)
                .map(|(&l, &ok)| e.select(ok, e.sigmoid(l)?, zero))
                .collect::<Result<Vec<_>, _>>()?,
            ScoreFunc::Softmax => warp_softmax(e, &values, &real, self.experts)?
                .iter()
                .zip(&real)
                .map(|(&s, &ok)| e.select(ok, s, zero))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut own = zero;
        for &s in &scores {
            own = e.addf(own, s)?;
        }
        let sum = e.warp_reduce(own, Reduction::Sum)?;
        Ok(Token {
            row,
            ids,
            real,
            scores,
            sum,
        })
    }

    fn loss<'c>(
        &self,
        e: &Emit<'c, '_>,
        args: &[Value<'c, '_>],
        smem: &Shared<'c, '_>,
        lanes: &Lanes<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (logits, indices, out) = (args[0], args[1], args[2]);
        let zero = e.f32(0.0)?;
        // Made in the entry block, so that they stay in registers.
        let acc = (0..self.per_lane())
            .map(|_| e.cell(zero))
            .collect::<Result<Vec<_>, _>>()?;
        let total = e.cell(zero)?;
        let len = self.seq_len();

        let experts = e.index(self.experts as i64)?;
        e.for_const(0, self.sequences as i64, 1, |e, seq| {
            self.count(&e, indices, smem.counts, lanes.tid, seq)?;
            for &cell in &acc {
                e.set(cell, zero)?;
            }
            self.each_token(&e, logits, seq, lanes, |e, token| {
                for (&cell, &s) in acc.iter().zip(&token.scores) {
                    e.accumulate(cell, e.divf(s, token.sum)?)?;
                }
                Ok(())
            })?;
            // Every lane stores all its slots (padding's are 0) in a row of 32·P per warp.
            let stride = 32 * self.per_lane();
            let lane_first = e.muli(lanes.lane, e.index(self.per_lane() as i64)?)?;
            let warp_row = e.muli(lanes.warp, e.index(stride as i64)?)?;
            for (s, &cell) in acc.iter().enumerate() {
                let x = e.addi(lane_first, e.index(s as i64)?)?;
                e.store(e.get(cell)?, smem.staged, e.addi(warp_row, x)?);
            }
            e.barrier();
            // Thread i takes experts i, i + 256, … (unrolled, predicated: no thread branches
            // before the block reduction's shuffles).
            let mut own = zero;
            for pass in 0..self.experts.div_ceil(u64::from(THREADS)) {
                let i = e.addi(lanes.tid, e.index((pass * u64::from(THREADS)) as i64)?)?;
                let real = e.lt(i, experts)?;
                let i = e.minui(i, e.index(self.experts as i64 - 1)?)?;
                let mut p = zero;
                for w in 0..WARPS {
                    let at = e.addi(e.index((w * stride) as i64)?, i)?;
                    p = e.addf(p, e.load(smem.staged, at)?)?;
                }
                let p = e.divf(p, e.f32(len as f32)?)?;
                let f = self.fraction(&e, e.load(smem.counts, i)?)?;
                own = e.addf(own, e.select(real, e.mulf(f, p)?, zero)?)?;
            }
            let term = block_reduce(&e, own, Reduction::Sum, lanes.tid, smem.partials)?;
            e.accumulate(total, e.mulf(e.f32(self.alpha)?, term)?)
        })?;
        let first = e.cmpi(CmpiPredicate::Eq, lanes.tid, e.index(0)?)?;
        e.if_then(first, |e| {
            let mean = e.divf(e.get(total)?, e.f32(self.sequences as f32)?)?;
            e.store(mean, out, e.index(0)?);
            Ok(())
        })
    }

    fn gradient<'c>(
        &self,
        e: &Emit<'c, '_>,
        args: &[Value<'c, '_>],
        smem: &Shared<'c, '_>,
        lanes: &Lanes<'c, '_>,
        seq: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (logits, indices, dloss, out) = (args[0], args[1], args[2], args[3]);
        let len = self.seq_len();
        self.count(e, indices, smem.counts, lanes.tid, seq)?;
        let experts = e.index(self.experts as i64)?;
        let per = e.mulf(e.f32(self.alpha)?, e.load(dloss, e.index(0)?)?)?;
        let per = e.divf(per, e.f32((len * self.sequences) as f32)?)?;
        let threads = e.index(i64::from(THREADS))?;
        // A uniform trip count: threads past E rewrite expert E − 1's value.
        let last_expert = e.index(self.experts as i64 - 1)?;
        e.for_range(e.index(0)?, experts, threads, |e, i0| {
            let i = e.minui(e.addi(i0, lanes.tid)?, last_expert)?;
            let f = self.fraction(&e, e.load(smem.counts, i)?)?;
            e.store(e.mulf(per, f)?, smem.staged, i);
            Ok(())
        })?;
        e.barrier();
        self.each_token(e, logits, seq, lanes, |e, token| {
            let zero = e.f32(0.0)?;
            let last = e.index(self.experts as i64 - 1)?;
            let g = token
                .ids
                .iter()
                .zip(&token.real)
                .map(|(&x, &ok)| e.select(ok, e.load(smem.staged, e.minui(x, last)?)?, zero))
                .collect::<Result<Vec<_>, _>>()?;
            let mut own = zero;
            for (&g, &s) in g.iter().zip(&token.scores) {
                own = e.addf(own, e.mulf(g, e.divf(s, token.sum)?)?)?;
            }
            let dot = e.warp_reduce(own, Reduction::Sum)?;
            let ds = g
                .iter()
                .map(|&g| e.divf(e.subf(g, dot)?, token.sum))
                .collect::<Result<Vec<_>, _>>()?;
            let dl = match self.score_func {
                ScoreFunc::Sigmoid => {
                    let one = e.f32(1.0)?;
                    ds.iter()
                        .zip(&token.scores)
                        .map(|(&d, &s)| e.mulf(e.mulf(d, s)?, e.subf(one, s)?))
                        .collect::<Result<Vec<_>, _>>()?
                }
                ScoreFunc::Softmax => {
                    let mut own = zero;
                    for (&d, &s) in ds.iter().zip(&token.scores) {
                        own = e.addf(own, e.mulf(d, s)?)?;
                    }
                    let dot = e.warp_reduce(own, Reduction::Sum)?;
                    ds.iter()
                        .zip(&token.scores)
                        .map(|(&d, &s)| e.mulf(s, e.subf(d, dot)?))
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            // Predicated stores: a branch around them would leave the warp diverged at the next
            // token's shuffles.
            let base = e.address_of(out)?;
            for ((&v, &x), &ok) in dl.iter().zip(&token.ids).zip(&token.real) {
                let at = e.muli(e.addi(token.row, x)?, e.index(4)?)?;
                let at = e.addi(base, e.index_cast(at, e.int_type(64))?)?;
                let word = e.bitcast(v, e.int_type(32))?;
                global_store_if(e, ok, at, &[word])?;
            }
            Ok(())
        })
    }

    /// Runs `body` on every token of sequence `seq`, one token per warp at a time (the trip
    /// count is the warp's, so its lanes stay together for the shuffles).
    fn each_token<'c>(
        &self,
        e: &Emit<'c, '_>,
        logits: Value<'c, '_>,
        seq: Value<'c, '_>,
        lanes: &Lanes<'c, '_>,
        body: impl for<'b> FnOnce(&Emit<'c, 'b>, Token<'c, 'b>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let len = e.index(self.seq_len() as i64)?;
        let first = e.muli(seq, len)?;
        let step = e.index(WARPS as i64)?;
        e.for_range(lanes.warp, len, step, |e, r| {
            let token = self.scores(&e, logits, e.addi(first, r)?, lanes.lane)?;
            body(&e, token)
        })
    }
}

/// The kernel's shared buffers.
struct Shared<'c, 'a> {
    /// The histogram, `i32 [E]`.
    counts: Value<'c, 'a>,
    /// The warps' sums `[WARPS, 32·P]` (loss) or `g [E]` (gradient).
    staged: Value<'c, 'a>,
    /// The block reduction's per-warp partials.
    partials: Value<'c, 'a>,
}

/// A thread's place in its block.
struct Lanes<'c, 'a> {
    tid: Value<'c, 'a>,
    warp: Value<'c, 'a>,
    lane: Value<'c, 'a>,
}

/// One token as a lane sees it.
struct Token<'c, 'a> {
    /// Offset of its logits' row.
    row: Value<'c, 'a>,
    /// The lane's experts.
    ids: Vec<Value<'c, 'a>>,
    /// Which of them are experts (not padding).
    real: Vec<Value<'c, 'a>>,
    /// Their scores (0 for padding).
    scores: Vec<Value<'c, 'a>>,
    /// The scores' sum over every expert.
    sum: Value<'c, 'a>,
}
