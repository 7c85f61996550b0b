//! `moe_topk_grad`: the gradient of `moe_topk`'s routing weights w.r.t. the gate's logits,
//! as the CPU reference (`dsc_kernels::ops::grad::moe_topk_grad`) computes it, step for step
//! and in its order: scores `s` (sigmoid, or softmax over the experts), the chosen scores'
//! cotangent `ds` (through the normalization `r / (Σ r + 1e-20)` when `norm_topk_prob`, times
//! the route scale), then through the score function.
//!
//! One warp per token, [`WARPS`] tokens per block, as `moe_topk`: lane `l` holds experts
//! `l·P .. l·P + P` (`P = ⌈E / 32⌉`) in registers. The `k` chosen experts are visited in slot
//! order (twice with the normalization: its denominator and `Σ dw·s` first), each score
//! fetched from the lane holding it by a shuffle; `ds` accumulates per expert in slot order
//! from +0 as the reference's `+=` does. The softmax's `Σ ds·s` is the reference's
//! sequential sum over all experts in index order, gathered by shuffles (`E` of them, as
//! `moe_topk`'s softmax sum). The only difference from the reference is `e^x`
//! ([`Emit::exp`], within ~2 f32 ulps of Rust's), so results agree to a relative error of about
//! 1e-6 rather than bit for bit.
//!
//! An expert index outside `0..E` (which the reference refuses) makes the token's whole row NaN,
//! and is never used as an address.

use dsc_ir::DType;
use dsc_kernels::ops::ScoreFunc;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::{BlockLike, Value};
use serde::Serialize;

use super::moe::{shuffle, shuffle_by, warp_softmax};
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Tokens (warps) per block.
pub const WARPS: u64 = 4;

/// The routing weights' gradient of `tokens` tokens over `experts` experts, `top_k` chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeTopkGrad {
    /// Tokens.
    pub tokens: u64,
    /// Experts.
    pub experts: u64,
    /// Experts chosen per token.
    pub top_k: u64,
    /// How logits became scores.
    pub score_func: ScoreFunc,
    /// Whether the weights were normalized to sum 1.
    pub norm_topk_prob: bool,
    /// The weights' scale, as the f32 the reference multiplies by.
    pub route_scale: f32,
    /// Dtype of the logits.
    pub logits: DType,
    /// Dtype of the weights' cotangent.
    pub grad: DType,
    /// Dtype of the result.
    pub output: DType,
}

impl MoeTopkGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_topk_grad"
    }

    /// `(logits, indices, dweights, dlogits)`.
    pub fn params(&self) -> Vec<Param> {
        let logits = self.tokens * self.experts;
        let chosen = self.tokens * self.top_k;
        vec![
            Param::new("logits", self.logits, logits),
            Param::new("indices", DType::I32, chosen),
            Param::new("dweights", self.grad, chosen),
            Param::new("dlogits", self.output, logits),
        ]
    }

    /// One warp per token, [`WARPS`] per block.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.tokens.div_ceil(WARPS), (32 * WARPS) as u32)
    }

    /// Why the kernel cannot take these shapes, if it cannot: expert indices are `i32`.
    pub fn supported(&self) -> Result<(), String> {
        if self.experts > i32::MAX as u64 {
            return Err(format!("{} experts: at most {}", self.experts, i32::MAX));
        }
        Ok(())
    }

    /// Experts per lane.
    fn per_lane(&self) -> u64 {
        self.experts.div_ceil(32)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(CodegenError::invalid_kernel(entry))?;
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let tid = e.thread_x()?;
            let thirty_two = e.index(32)?;
            let warp = e.divui(tid, thirty_two)?;
            let lane = e.remui(tid, thirty_two)?;
            let first = e.muli(e.block_index(Dimension::X)?, e.index(WARPS as i64)?)?;
            let t = e.addi(first, warp)?;
            // Per-lane state carried through the slot loops, made in the entry block (LLVM
            // promotes only entry-block allocas to registers).
            let zero = e.f32(0.0)?;
            let no = e.int(1, 0)?;
            let cells = Cells {
                ds: (0..self.per_lane())
                    .map(|_| e.cell(zero))
                    .collect::<Result<_, _>>()?,
                denominator: e.cell(zero)?,
                dot: e.cell(zero)?,
                bad: e.cell(no)?,
            };
            let in_bounds = e.lt(t, e.index(self.tokens as i64)?)?;
            // The whole warp takes the branch together: its shuffles see all 32 lanes.
            e.if_then(in_bounds, |e| self.token(&e, &args, t, lane, &cells))
        })
    }

    fn token<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        args: &[Value<'c, '_>],
        t: Value<'c, 'a>,
        lane: Value<'c, 'a>,
        cells: &Cells<'c, '_>,
    ) -> Result<(), CodegenError> {
        let (logits, indices, dweights, dlogits) = (args[0], args[1], args[2], args[3]);
        let p = self.per_lane();
        let experts = e.index(self.experts as i64)?;
        let row = e.muli(t, experts)?;
        let lane_first = e.muli(lane, e.index(p as i64)?)?;
        let last = e.index(self.experts as i64 - 1)?;

        // This lane's experts: index, whether real, score.
        let mut ids = Vec::new();
        let mut real = Vec::new();
        let mut scores = Vec::new();
        for s in 0..p {
            let x = e.addi(lane_first, e.index(s as i64)?)?;
            let safe = e.minui(x, last)?;
            let logit = e.load_f32(logits, row, safe)?;
            scores.push(match self.score_func {
                ScoreFunc::Sigmoid => e.sigmoid(logit)?,
                ScoreFunc::Softmax => logit,
            });
            ids.push(x);
            real.push(e.lt(x, experts)?);
        }
        if self.score_func == ScoreFunc::Softmax {
            scores = warp_softmax(e, &scores, &real, self.experts)?;
        }

        let zero = e.f32(0.0)?;
        for &cell in &cells.ds {
            e.set(cell, zero)?;
        }
        e.set(cells.denominator, zero)?;
        e.set(cells.dot, zero)?;
        e.set(cells.bad, e.int(1, 0)?)?;
        let k = e.index(self.top_k as i64)?;
        let slots = e.muli(t, k)?;
        let route_scale = e.f32(self.route_scale)?;
        let (denominator, correction) = if self.norm_topk_prob {
            e.for_const(0, self.top_k as i64, 1, |e, j| {
                let c = chosen(&e, indices, dweights, slots, j, self.experts)?;
                let s = self.gather(&e, &scores, c.expert)?;
                e.accumulate(cells.denominator, s)?;
                let gs = e.mulf(c.g, s)?;
                e.accumulate(cells.dot, gs)
            })?;
            let tiny = e.f32(1e-20)?;
            let denominator = e.addf(e.get(cells.denominator)?, tiny)?;
            let square = e.mulf(denominator, denominator)?;
            let correction = e.divf(e.get(cells.dot)?, square)?;
            (Some(denominator), Some(correction))
        } else {
            (None, None)
        };

        e.for_const(0, self.top_k as i64, 1, |e, j| {
            let c = chosen(&e, indices, dweights, slots, j, self.experts)?;
            let ok = e.get(cells.bad)?;
            let one = e.int(1, 1)?;
            let invalid = e.push(melior::dialect::arith::xori(c.valid, one, e.location))?;
            e.set(cells.bad, e.ori(ok, invalid)?)?;
            let share = match (denominator, correction) {
                (Some(d), Some(corr)) => {
                    let q = e.divf(c.g, d)?;
                    e.subf(q, corr)?
                }
                _ => c.g,
            };
            let share = e.mulf(route_scale, share)?;
            for (s, &cell) in cells.ds.iter().enumerate() {
                let is = e.cmpi(CmpiPredicate::Eq, ids[s], c.expert)?;
                let hit = e.andi(is, c.valid)?;
                let current = e.get(cell)?;
                let sum = e.addf(current, share)?;
                e.set(cell, e.select(hit, sum, current)?)?;
            }
            Ok(())
        })?;

        let ds: Vec<Value<'c, 'a>> = cells
            .ds
            .iter()
            .map(|&cell| e.get(cell))
            .collect::<Result<_, _>>()?;
        let one = e.f32(1.0)?;
        let mut out = Vec::new();
        match self.score_func {
            ScoreFunc::Sigmoid => {
                for (&g, &s) in ds.iter().zip(&scores) {
                    let gs = e.mulf(g, s)?;
                    let rest = e.subf(one, s)?;
                    out.push(e.mulf(gs, rest)?);
                }
            }
            ScoreFunc::Softmax => {
                let terms = ds
                    .iter()
                    .zip(&scores)
                    .map(|(&g, &s)| e.mulf(g, s))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut dot = zero;
                for x in 0..self.experts {
                    let term = shuffle(e, terms[(x % p) as usize], (x / p) as u32, "idx")?;
                    dot = e.addf(dot, term)?;
                }
                for (&g, &s) in ds.iter().zip(&scores) {
                    let centered = e.subf(g, dot)?;
                    out.push(e.mulf(s, centered)?);
                }
            }
        }
        let bad = e.get(cells.bad)?;
        let nan = e.f32(f32::NAN)?;
        for (s, &v) in out.iter().enumerate() {
            let v = e.select(bad, nan, v)?;
            let v = e.round_to(v, self.output)?;
            e.if_then(real[s], |e| {
                let at = e.addi(row, ids[s])?;
                e.store(v, dlogits, at);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The score of `expert` (an index, the same in every lane), from the lane holding it.
    fn gather<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        scores: &[Value<'c, 'a>],
        expert: Value<'c, 'a>,
    ) -> Emitted<'c, 'a> {
        let p = e.index(self.per_lane() as i64)?;
        let owner = e.divui(expert, p)?;
        let slot = e.remui(expert, p)?;
        let mut v = scores[0];
        for (s, &score) in scores.iter().enumerate().skip(1) {
            let is = e.cmpi(CmpiPredicate::Eq, slot, e.index(s as i64)?)?;
            v = e.select(is, score, v)?;
        }
        let owner = e.index_cast(owner, e.int_type(32))?;
        shuffle_by(e, v, owner, "idx")
    }
}

/// Slot `j` (an index) of the token whose slots start at `slots`.
fn chosen<'c, 'b>(
    e: &Emit<'c, 'b>,
    indices: Value<'c, '_>,
    dweights: Value<'c, '_>,
    slots: Value<'c, '_>,
    j: Value<'c, '_>,
    experts: u64,
) -> Result<Chosen<'c, 'b>, CodegenError> {
    let at = e.addi(slots, j)?;
    let index = e.load(indices, at)?;
    let (expert, valid) = e.checked_index(index, experts as i64)?;
    let g = e.load_f32(dweights, slots, j)?;
    Ok(Chosen { expert, valid, g })
}

/// The per-lane state of the slot loops.
struct Cells<'c, 'a> {
    /// `ds` of each of the lane's experts.
    ds: Vec<Value<'c, 'a>>,
    /// `Σ s` over the chosen experts.
    denominator: Value<'c, 'a>,
    /// `Σ dw · s` over the chosen experts.
    dot: Value<'c, 'a>,
    /// Whether an index was out of range.
    bad: Value<'c, 'a>,
}

/// One chosen expert: its index (0 when out of range), whether in range, its weight's cotangent.
struct Chosen<'c, 'a> {
    expert: Value<'c, 'a>,
    valid: Value<'c, 'a>,
    g: Value<'c, 'a>,
}
