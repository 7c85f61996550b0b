//! MoE routing and combination: `moe_topk` (one warp per token) and `moe_combine` (one 16-byte
//! chunk of a token's output per thread where the dtypes and the hidden size allow, else one
//! output element per thread).
//!
//! `moe_topk` follows the CPU reference step by step, one warp per token with no per-token
//! arrays in memory: lane `l` holds experts `l·P .. l·P + P` (`P = ⌈E / 32⌉`, 8 for 256
//! experts) in registers. Scores (sigmoid, or softmax over the experts: a warp max, and the
//! reference's pairwise sum over the experts in index order, gathered by shuffles), selection
//! scores `s + bias`, group scores (sum of the top two with a bias, else the top one; one warp
//! arg-max per group, or one segmented over each group's lanes when every group fills whole
//! lanes), the best `topk_groups` groups, then the best `top_k` experts among them by repeated
//! warp arg-max with shuffles, ranked by selection score with NaN first and ties to the lower
//! index (a total order, so the butterfly gives every lane the same winner); weights are the
//! unbiased scores, normalized (`/ (Σ + 1e-20)`, summed in the order chosen) when asked, times
//! `route_scale`. Every value is the one the former one-thread-per-token kernel computed.

use dsc_ir::DType;
use dsc_kernels::ops::{ScoreFunc, TopkDims, TopkParams};
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::operation::OperationBuilder;
use melior::ir::{Attribute, Identifier, Value, ValueLike};
use serde::Serialize;

use super::wide_access::{element_address, elements_per_thread, load_f32s, store_f32s};
use super::{Launch, Param, add_per_element_kernel, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Tokens (warps) per block of `moe_topk`.
const TOPK_WARPS: u64 = 4;

/// Top-k routing: the reference's [`TopkDims`] and [`TopkParams`] as they are (the kernel
/// multiplies by the route scale rounded to f32, as the reference does), and the operands the
/// reference leaves to its caller (the bias, the dtypes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeTopk {
    /// Tokens and experts.
    #[serde(flatten)]
    pub dims: TopkDims,
    /// Scoring and selection.
    #[serde(flatten)]
    pub params: TopkParams,
    /// Whether a selection bias (`e_score_correction_bias`) is given.
    pub bias: bool,
    /// Logits dtype.
    pub logits: DType,
    /// Weights' output dtype.
    pub weights: DType,
}

impl MoeTopk {
    /// Tokens.
    fn tokens(&self) -> u64 {
        self.dims.tokens as u64
    }

    /// Experts.
    pub fn experts(&self) -> u64 {
        self.dims.experts as u64
    }

    /// Experts chosen per token.
    pub fn top_k(&self) -> u64 {
        self.params.top_k as u64
    }

    /// Expert groups.
    fn groups(&self) -> u64 {
        self.params.n_groups as u64
    }

    /// Groups kept.
    fn topk_groups(&self) -> u64 {
        self.params.topk_groups as u64
    }
}

impl MoeTopk {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_topk"
    }

    /// `(logits, [bias,] weights, indices)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![Param::new(
            "logits",
            self.logits,
            self.tokens() * self.experts(),
        )];
        if self.bias {
            params.push(Param::new("bias", DType::F32, self.experts()));
        }
        params.push(Param::new(
            "weights",
            self.weights,
            self.tokens() * self.top_k(),
        ));
        params.push(Param::new(
            "indices",
            DType::I32,
            self.tokens() * self.top_k(),
        ));
        params
    }

    /// One warp per token, [`TOPK_WARPS`] per block.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.tokens().div_ceil(TOPK_WARPS), (32 * TOPK_WARPS) as u32)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        module.add_kernel(entry, &types, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, types.len())?;
            let tid = e.thread_x()?;
            let thirty_two = e.index(32)?;
            let warp = e.divui(tid, thirty_two)?;
            let lane = e.remui(tid, thirty_two)?;
            let block_index = e.block_index(Dimension::X)?;
            let warps = e.index(TOPK_WARPS as i64)?;
            let first = e.muli(block_index, warps)?;
            let t = e.addi(first, warp)?;
            let tokens = e.index(self.tokens() as i64)?;
            let in_bounds = e.lt(t, tokens)?;
            let cells = RoundCells::new(self, &e)?;
            // The whole warp takes the branch together: its shuffles see all 32 lanes.
            e.if_then(in_bounds, |e| {
                let logits = args[0];
                let bias = self.bias.then(|| args[1]);
                let (weights, indices) = (args[args.len() - 2], args[args.len() - 1]);
                let outputs = Outputs { weights, indices };
                self.route_token(&e, t, lane, logits, bias, &cells, outputs)
            })
        })
    }

    /// Experts per lane.
    fn per_lane(&self) -> u64 {
        self.experts().div_ceil(32)
    }

    /// Lanes per group when every group fills whole lanes (a power of two of them, every lane
    /// full): the group stage is then one segmented arg-max for all groups.
    fn lanes_per_group(&self) -> Option<u64> {
        let p = self.per_lane();
        let size = self.experts() / self.groups().max(1);
        (self.experts() == 32 * p && size.is_multiple_of(p) && (size / p).is_power_of_two())
            .then_some(size / p)
    }

    #[allow(clippy::too_many_arguments)]
    fn route_token<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        t: Value<'c, '_>,
        lane: Value<'c, '_>,
        logits: Value<'c, '_>,
        bias: Option<Value<'c, '_>>,
        cells: &RoundCells<'c, '_>,
        outputs: Outputs<'c, '_>,
    ) -> Result<(), CodegenError> {
        let p = self.per_lane();
        let n = self.experts() as i64;
        let experts = e.index(n)?;
        let row = e.muli(t, experts)?;
        let i32_type = e.int_type(32);
        let per_lane = e.index(p as i64)?;
        let lane_first = e.muli(lane, per_lane)?;
        let last = e.index(n - 1)?;

        // This lane's experts: index, whether real, logit.
        let mut ids = Vec::new();
        let mut real = Vec::new();
        let mut scores = Vec::new();
        for s in 0..p {
            let offset = e.index(s as i64)?;
            let x = e.addi(lane_first, offset)?;
            let x_real = e.lt(x, experts)?;
            let safe = e.minui(x, last)?;
            let logit = e.load_f32(logits, row, safe)?;
            let score = match self.params.score_func {
                ScoreFunc::Sigmoid => e.sigmoid(logit)?,
                ScoreFunc::Softmax => logit,
            };
            ids.push(e.index_cast(safe, i32_type)?);
            real.push(x_real);
            scores.push(score);
        }
        if self.params.score_func == ScoreFunc::Softmax {
            scores = warp_softmax(e, &scores, &real, self.experts())?;
        }
        let mut select = Vec::new();
        for s in 0..p as usize {
            let b = match bias {
                Some(bias) => {
                    let at = e.index_cast(ids[s], e.index_type())?;
                    e.load(bias, at)?
                }
                None => e.f32(0.0)?,
            };
            select.push(e.addf(scores[s], b)?);
        }

        // Groups: `taken` starts as "not eligible" (a lane's padding, or a dropped group).
        let mut taken: Vec<Value<'c, 'a>> = Vec::new();
        for &x_real in &real {
            let one = e.int(1, 1)?;
            taken.push(e.push(melior::dialect::arith::xori(x_real, one, e.location))?);
        }
        if self.groups() > 1 {
            let kept = self.kept_groups(e, &ids, &real, &select, &cells.groups)?;
            let size = e.int(32, (self.experts() / self.groups()) as i64)?;
            for s in 0..p as usize {
                let g = e.divui(ids[s], size)?;
                let mut ok = e.int(1, 0)?;
                for (gi, &kept) in kept.iter().enumerate() {
                    let this = e.int(32, gi as i64)?;
                    let is = e.cmpi(CmpiPredicate::Eq, g, this)?;
                    let is_kept = e.andi(is, kept)?;
                    ok = e.ori(ok, is_kept)?;
                }
                let one = e.int(1, 1)?;
                let dropped = e.push(melior::dialect::arith::xori(ok, one, e.location))?;
                taken[s] = e.ori(taken[s], dropped)?;
            }
        }

        // Experts: `top_k` rounds of one warp arg-max, each winner then taken. The rounds are a
        // loop (unrolled, V3's 8 rounds of 8 experts per lane took LLVM ~180 ms to compile):
        // the state lives in cells, and lane `l` keeps the winners of rounds `l`, `l + 32`, ….
        for (&cell, &taken) in cells.taken.iter().zip(&taken) {
            e.set(cell, taken)?;
        }
        e.set(cells.denominator, e.f32(0.0)?)?;
        e.for_const(0, self.top_k() as i64, 1, |e, round| {
            let mut taken = Vec::new();
            for &cell in &cells.taken {
                taken.push(e.get(cell)?);
            }
            let candidates = (0..p as usize)
                .map(|s| candidate(&e, select[s], ids[s], scores[s], taken[s]))
                .collect::<Result<Vec<_>, _>>()?;
            let best = warp_argbest(&e, &candidates, 32, Some(p))?;
            for s in 0..p as usize {
                let is = e.cmpi(CmpiPredicate::Eq, ids[s], best.index)?;
                let now = e.ori(taken[s], is)?;
                e.set(cells.taken[s], now)?;
            }
            // Summed in the order chosen, as the reference does.
            e.accumulate(cells.denominator, best.payload)?;
            for (r, kept) in cells.kept.iter().enumerate() {
                let slot_round = e.addi(lane, e.index(32 * r as i64)?)?;
                let mine = e.cmpi(CmpiPredicate::Eq, slot_round, round)?;
                let index = e.get(kept.index)?;
                e.set(kept.index, e.select(mine, best.index, index)?)?;
                let payload = e.get(kept.payload)?;
                e.set(kept.payload, e.select(mine, best.payload, payload)?)?;
            }
            Ok(())
        })?;
        let denominator = e.get(cells.denominator)?;
        let tiny = e.f32(1e-20)?;
        let d = e.addf(denominator, tiny)?;
        let route_scale = e.f32(self.params.route_scale as f32)?;
        let k = e.index(self.top_k() as i64)?;
        let out_row = e.muli(t, k)?;
        for (r, kept) in cells.kept.iter().enumerate() {
            let mut w = e.get(kept.payload)?;
            if self.params.norm_topk_prob {
                w = e.divf(w, d)?;
            }
            let w = e.mulf(w, route_scale)?;
            let w = e.round_to(w, self.weights)?;
            let index = e.get(kept.index)?;
            let round = e.addi(lane, e.index(32 * r as i64)?)?;
            let holds_one = e.lt(round, k)?;
            e.if_then(holds_one, |e| {
                let at = e.addi(out_row, round)?;
                e.store(index, outputs.indices, at);
                e.store(w, outputs.weights, at);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Whether each group is among the `topk_groups` best (the same in every lane), worked out
    /// in the cells `kept`, one per group.
    fn kept_groups<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        ids: &[Value<'c, 'a>],
        real: &[Value<'c, 'a>],
        select: &[Value<'c, 'a>],
        kept: &[Value<'c, '_>],
    ) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
        let size = self.experts() / self.groups();
        let size_v = e.int(32, size as i64)?;
        let no = e.int(1, 0)?;
        // The score of a group from its top two: (0 + top1) + top2 with a bias, else top1.
        let group_score =
            |first: &Best<'c, 'a>, second: Option<&Best<'c, 'a>>| -> Emitted<'c, 'a> {
                if !self.bias {
                    return Ok(first.value);
                }
                let zero = e.f32(0.0)?;
                let score = e.addf(zero, first.value)?;
                match second {
                    Some(second) if size > 1 => e.addf(score, second.value),
                    _ => Ok(score),
                }
            };
        let mut group_scores = Vec::new();
        if let Some(lanes) = self.lanes_per_group() {
            // Every lane's experts are in one group, whose lanes are aligned: reduce over them.
            let all = (0..ids.len())
                .map(|s| candidate(e, select[s], ids[s], select[s], no))
                .collect::<Result<Vec<_>, _>>()?;
            let first = warp_argbest(e, &all, lanes as u32, None)?;
            let second = if self.bias && size > 1 {
                let rest = (0..ids.len())
                    .map(|s| {
                        let is = e.cmpi(CmpiPredicate::Eq, ids[s], first.index)?;
                        candidate(e, select[s], ids[s], select[s], is)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(warp_argbest(e, &rest, lanes as u32, None)?)
            } else {
                None
            };
            let own = group_score(&first, second.as_ref())?;
            for g in 0..self.groups() {
                group_scores.push(shuffle(e, own, (g * lanes) as u32, "idx")?);
            }
        } else {
            for g in 0..self.groups() {
                let this = e.int(32, g as i64)?;
                let mut outside = Vec::new();
                for s in 0..ids.len() {
                    let group = e.divui(ids[s], size_v)?;
                    let inside = e.cmpi(CmpiPredicate::Eq, group, this)?;
                    let inside = e.andi(inside, real[s])?;
                    let one = e.int(1, 1)?;
                    outside.push(e.push(melior::dialect::arith::xori(inside, one, e.location))?);
                }
                let all = (0..ids.len())
                    .map(|s| candidate(e, select[s], ids[s], select[s], outside[s]))
                    .collect::<Result<Vec<_>, _>>()?;
                let first = warp_argbest(e, &all, 32, None)?;
                let second = if self.bias && size > 1 {
                    let rest = (0..ids.len())
                        .map(|s| {
                            let is = e.cmpi(CmpiPredicate::Eq, ids[s], first.index)?;
                            let skip = e.ori(outside[s], is)?;
                            candidate(e, select[s], ids[s], select[s], skip)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(warp_argbest(e, &rest, 32, None)?)
                } else {
                    None
                };
                group_scores.push(group_score(&first, second.as_ref())?);
            }
        }
        // The best `topk_groups` groups, by the same rank, one a round (a loop, as the experts').
        for &cell in kept {
            e.set(cell, no)?;
        }
        e.for_const(0, self.topk_groups() as i64, 1, |e, _| {
            let mut flags = Vec::new();
            for &cell in kept {
                flags.push(e.get(cell)?);
            }
            let mut best = empty(&e)?;
            for (g, &score) in group_scores.iter().enumerate() {
                let index = e.int(32, g as i64)?;
                let entry = candidate(&e, score, index, score, flags[g])?;
                best = better_of(&e, best, entry)?;
            }
            for (g, &cell) in kept.iter().enumerate() {
                let index = e.int(32, g as i64)?;
                let is = e.cmpi(CmpiPredicate::Eq, best.index, index)?;
                e.set(cell, e.ori(flags[g], is)?)?;
            }
            Ok(())
        })?;
        kept.iter().map(|&cell| e.get(cell)).collect()
    }
}

/// The expert rounds' per-lane state, made in the kernel's entry block (LLVM promotes only
/// entry-block allocas to registers): whether each of the lane's experts is taken or
/// ineligible, the sum of the winners' weights so far, and the winners this lane keeps.
struct RoundCells<'c, 'a> {
    /// Per group (none with one group): whether it is among the best kept so far.
    groups: Vec<Value<'c, 'a>>,
    taken: Vec<Value<'c, 'a>>,
    denominator: Value<'c, 'a>,
    kept: Vec<KeptWinner<'c, 'a>>,
}

/// One winner a lane keeps: its expert index and weight.
struct KeptWinner<'c, 'a> {
    index: Value<'c, 'a>,
    payload: Value<'c, 'a>,
}

impl<'c, 'a> RoundCells<'c, 'a> {
    fn new(topk: &MoeTopk, e: &Emit<'c, 'a>) -> Result<Self, CodegenError> {
        let no = e.int(1, 0)?;
        let groups = if topk.groups() > 1 { topk.groups() } else { 0 };
        Ok(Self {
            groups: (0..groups).map(|_| e.cell(no)).collect::<Result<_, _>>()?,
            taken: (0..topk.per_lane())
                .map(|_| e.cell(no))
                .collect::<Result<_, _>>()?,
            denominator: e.cell(e.f32(0.0)?)?,
            kept: (0..topk.top_k().div_ceil(32))
                .map(|_| {
                    Ok(KeptWinner {
                        index: e.cell(e.int(32, 0)?)?,
                        payload: e.cell(e.f32(0.0)?)?,
                    })
                })
                .collect::<Result<_, CodegenError>>()?,
        })
    }
}

/// `moe_topk`'s outputs: `[tokens, top_k]` weights and expert indices.
#[derive(Clone, Copy)]
struct Outputs<'c, 'a> {
    weights: Value<'c, 'a>,
    indices: Value<'c, 'a>,
}

/// A ranked entry: selection value, expert (or group) index, and the value it carries.
#[derive(Clone, Copy)]
struct Best<'c, 'a> {
    value: Value<'c, 'a>,
    index: Value<'c, 'a>,
    payload: Value<'c, 'a>,
}

/// The entry that ranks below every other: −∞ at index `i32::MAX`.
fn empty<'c, 'a>(e: &Emit<'c, 'a>) -> Result<Best<'c, 'a>, CodegenError> {
    Ok(Best {
        value: e.f32(f32::NEG_INFINITY)?,
        index: e.int(32, i64::from(i32::MAX))?,
        payload: e.f32(0.0)?,
    })
}

/// `(value, index, payload)`, or [`empty`] where `skip` is set.
fn candidate<'c, 'a>(
    e: &Emit<'c, 'a>,
    value: Value<'c, '_>,
    index: Value<'c, '_>,
    payload: Value<'c, '_>,
    skip: Value<'c, '_>,
) -> Result<Best<'c, 'a>, CodegenError> {
    let none = empty(e)?;
    Ok(Best {
        value: e.select(skip, none.value, value)?,
        index: e.select(skip, none.index, index)?,
        payload: e.select(skip, none.payload, payload)?,
    })
}

/// The better of `a` and `b` by the reference's rank: NaN above every number, then the larger
/// value, ties (and two NaN) to the lower index.
fn better_of<'c, 'a>(
    e: &Emit<'c, 'a>,
    a: Best<'c, 'a>,
    b: Best<'c, 'a>,
) -> Result<Best<'c, 'a>, CodegenError> {
    let a_nan = e.cmpf(CmpfPredicate::Uno, a.value, a.value)?;
    let b_nan = e.cmpf(CmpfPredicate::Uno, b.value, b.value)?;
    let a_number = e.cmpf(CmpfPredicate::Ord, a.value, a.value)?;
    let only_b_nan = e.andi(b_nan, a_number)?;
    let same_kind = e.cmpi(CmpiPredicate::Eq, a_nan, b_nan)?;
    let larger = e.cmpf(CmpfPredicate::Ogt, b.value, a.value)?;
    let tie = e.cmpf(CmpfPredicate::Ueq, b.value, a.value)?;
    let lower = e.cmpi(CmpiPredicate::Slt, b.index, a.index)?;
    let tie_lower = e.andi(tie, lower)?;
    let wins = e.ori(larger, tie_lower)?;
    let wins = e.andi(same_kind, wins)?;
    let take_b = e.ori(only_b_nan, wins)?;
    Ok(Best {
        value: e.select(take_b, b.value, a.value)?,
        index: e.select(take_b, b.index, a.index)?,
        payload: e.select(take_b, b.payload, a.payload)?,
    })
}

/// The best of `entries` over each aligned group of `lanes` lanes (32: the whole warp), the
/// same in every lane of the group: the lane's own best, then a butterfly of shuffles over one
/// 64-bit key per entry that orders as the rank does (the rank is a total order, so every lane
/// ends with the same entry). With `per_lane`, the winner's payload is fetched from the lane
/// holding it (expert `i` is in lane `i / per_lane`); without, the payload is left undefined.
fn warp_argbest<'c, 'a>(
    e: &Emit<'c, 'a>,
    entries: &[Best<'c, 'a>],
    lanes: u32,
    per_lane: Option<u64>,
) -> Result<Best<'c, 'a>, CodegenError> {
    let mut own = entries[0];
    for &entry in &entries[1..] {
        own = better_of(e, own, entry)?;
    }
    let mut key = rank_key(e, own.value, own.index)?;
    let i64_type = e.int_type(64);
    let i32_type = e.int_type(32);
    let thirty_two = e.int(64, 32)?;
    let mut offset = lanes / 2;
    while offset > 0 {
        let high = e.shrui(key, thirty_two)?;
        let high = e.trunci(high, i32_type)?;
        let low = e.trunci(key, i32_type)?;
        let high = shuffle(e, high, offset, "xor")?;
        let low = shuffle(e, low, offset, "xor")?;
        let high = e.extui(high, i64_type)?;
        let high = e.shli(high, thirty_two)?;
        let low = e.extui(low, i64_type)?;
        let other = e.ori(high, low)?;
        let greater = e.cmpi(CmpiPredicate::Ugt, other, key)?;
        key = e.select(greater, other, key)?;
        offset /= 2;
    }
    // Decode: the index from the low word, the value (−0 as +0, NaN as one NaN) from the high.
    let all = e.int(32, -1)?;
    let low = e.trunci(key, i32_type)?;
    let index = e.push(melior::dialect::arith::xori(low, all, e.location))?;
    let high = e.shrui(key, thirty_two)?;
    let high = e.trunci(high, i32_type)?;
    let zero = e.int(32, 0)?;
    let positive = e.cmpi(CmpiPredicate::Slt, high, zero)?;
    let magnitude = e.int(32, i64::from(i32::MAX))?;
    let positive_bits = e.andi(high, magnitude)?;
    let negative_bits = e.push(melior::dialect::arith::xori(high, all, e.location))?;
    let bits = e.select(positive, positive_bits, negative_bits)?;
    let value = e.bitcast(bits, e.f32_type())?;
    let payload = match per_lane {
        Some(p) => {
            let p = e.int(32, p as i64)?;
            let owner = e.divui(index, p)?;
            shuffle_by(e, own.payload, owner, "idx")?
        }
        None => own.payload,
    };
    Ok(Best {
        value,
        index,
        payload,
    })
}

/// A 64-bit key of `(value, index)` whose unsigned order is the rank's: the value's bits made
/// monotone (−0 first made +0: the rank ties them) in the high word, NaN all ones; the index
/// complemented in the low word (ties to the lower index). [`empty`] keys below every entry.
fn rank_key<'c, 'a>(
    e: &Emit<'c, 'a>,
    value: Value<'c, 'a>,
    index: Value<'c, 'a>,
) -> Emitted<'c, 'a> {
    let plus_zero = e.f32(0.0)?;
    let canonical = e.addf(value, plus_zero)?;
    let bits = e.bitcast(canonical, e.int_type(32))?;
    let zero = e.int(32, 0)?;
    let negative = e.cmpi(CmpiPredicate::Slt, bits, zero)?;
    let all = e.int(32, -1)?;
    let flipped = e.push(melior::dialect::arith::xori(bits, all, e.location))?;
    let sign = e.int(32, i64::from(i32::MIN))?;
    let raised = e.ori(bits, sign)?;
    let ordered = e.select(negative, flipped, raised)?;
    let nan = e.cmpf(CmpfPredicate::Uno, value, value)?;
    let high = e.select(nan, all, ordered)?;
    let low = e.push(melior::dialect::arith::xori(index, all, e.location))?;
    let i64_type = e.int_type(64);
    let high = e.extui(high, i64_type)?;
    let thirty_two = e.int(64, 32)?;
    let high = e.shli(high, thirty_two)?;
    let low = e.extui(low, i64_type)?;
    e.ori(high, low)
}

/// Softmax over the warp's `experts` experts of the logits each lane holds (lane `l` holds
/// experts `l·P .. l·P + P`, `P = ⌈experts / 32⌉`; `real` says which are experts, not padding),
/// as the CPU reference's `softmax_row`: the maximum skipping NaN, `e^(x − max)`, the
/// reference's pairwise sum in expert order, one division; all zero when every logit is −∞.
pub(crate) fn warp_softmax<'c, 'a>(
    e: &Emit<'c, 'a>,
    logits: &[Value<'c, 'a>],
    real: &[Value<'c, 'a>],
    experts: u64,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let p = experts.div_ceil(32);
    let neg_inf = e.f32(f32::NEG_INFINITY)?;
    let mut max = neg_inf;
    for (&x, &x_real) in logits.iter().zip(real) {
        let x = e.select(x_real, x, neg_inf)?;
        max = e.max_skip_nan(max, x)?;
    }
    for offset in [16, 8, 4, 2, 1] {
        let other = shuffle(e, max, offset, "xor")?;
        max = e.max_skip_nan(max, other)?;
    }
    let mut exps = Vec::new();
    for &x in logits {
        let shifted = e.subf(x, max)?;
        exps.push(e.exp(shifted)?);
    }
    // Every lane gathers every expert's term (expert j: lane j / P, slot j % P).
    let mut terms = Vec::new();
    for j in 0..experts {
        terms.push(shuffle(e, exps[(j % p) as usize], (j / p) as u32, "idx")?);
    }
    let sum = pairwise_sum(e, &terms)?;
    let all_masked = e.cmpf(CmpfPredicate::Oeq, max, neg_inf)?;
    let zero = e.f32(0.0)?;
    exps.iter()
        .map(|&x| {
            let q = e.divf(x, sum)?;
            e.select(all_masked, zero, q)
        })
        .collect()
}

/// `gpu.shuffle <mode> value, lane_or_offset, 32` over the full warp.
pub(crate) fn shuffle<'c, 'a>(
    e: &Emit<'c, 'a>,
    value: Value<'c, '_>,
    lane_or_offset: u32,
    mode: &str,
) -> Emitted<'c, 'a> {
    let offset = e.int(32, i64::from(lane_or_offset))?;
    shuffle_by(e, value, offset, mode)
}

/// [`shuffle`] with a lane or offset computed at run time (an `i32`).
pub(crate) fn shuffle_by<'c, 'a>(
    e: &Emit<'c, 'a>,
    value: Value<'c, '_>,
    lane_or_offset: Value<'c, '_>,
    mode: &str,
) -> Emitted<'c, 'a> {
    let width = e.int(32, 32)?;
    let mode = Attribute::parse(e.context, &format!("#gpu<shuffle_mode {mode}>"))
        .expect("shuffle mode attribute parses");
    e.push(
        OperationBuilder::new("gpu.shuffle", e.location)
            .add_operands(&[value, lane_or_offset, width])
            .add_attributes(&[(Identifier::new(e.context, "mode"), mode)])
            .add_results(&[value.r#type(), e.int_type(1)])
            .build()?,
    )
}

/// The reference's pairwise sum of `values`: sequential (from 0) up to 32 elements, else the sum
/// of the two halves.
fn pairwise_sum<'c, 'a>(e: &Emit<'c, 'a>, values: &[Value<'c, 'a>]) -> Emitted<'c, 'a> {
    if values.len() <= 32 {
        let mut acc = e.f32(0.0)?;
        for &v in values {
            acc = e.addf(acc, v)?;
        }
        Ok(acc)
    } else {
        let half = values.len() / 2;
        let low = pairwise_sum(e, &values[..half])?;
        let high = pairwise_sum(e, &values[half..])?;
        e.addf(low, high)
    }
}

/// `out[t, d] = round(Σ_j w[t, j] · y[t, j, d]) + shared[t, d]`, rounded to the output dtype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoeCombine {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Hidden size.
    pub dim: u64,
    /// Dtype of the routed outputs.
    pub routed: DType,
    /// Dtype of the weights.
    pub weights: DType,
    /// Dtype of the shared expert's output, when there is one.
    pub shared: Option<DType>,
    /// Output dtype (the routed sum is rounded to it before the shared output is added).
    pub output: DType,
}

impl MoeCombine {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_combine"
    }

    /// `(y, weights, [shared,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![
            Param::new("y", self.routed, self.tokens * self.top_k * self.dim),
            Param::new("weights", self.weights, self.tokens * self.top_k),
        ];
        if let Some(shared) = self.shared {
            params.push(Param::new("shared", shared, self.tokens * self.dim));
        }
        params.push(Param::new("out", self.output, self.tokens * self.dim));
        params
    }

    /// Elements per thread of the 16-byte form ([`super::wide_access`]): the routed outputs,
    /// the shared output and the output f32 or bf16 (weights f32 or bf16, read one at a time)
    /// and a row of `dim` whole chunks of `per`, the elements of one 16-byte access of the
    /// narrowest, so that every chunk is 16-byte aligned; `None` for one element per thread.
    fn chunk(&self) -> Option<u64> {
        let dtypes: Vec<DType> = [self.routed, self.output]
            .into_iter()
            .chain(self.shared)
            .collect();
        let floats = |d: &DType| matches!(d, DType::F32 | DType::Bf16);
        if !dtypes.iter().all(floats) || !floats(&self.weights) {
            return None;
        }
        let per = elements_per_thread(&dtypes);
        (self.dim > 0 && self.dim.is_multiple_of(per)).then_some(per)
    }

    /// One thread per 16-byte chunk of the output, or per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.tokens * self.dim / self.chunk().unwrap_or(1))
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(per) = self.chunk() {
            return self.build_chunked(module, entry, per);
        }
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.tokens * self.dim,
            |e, args, i| {
                let (y, w, out) = (args[0], args[1], *args.last().expect("out"));
                let dim = e.index(self.dim as i64)?;
                let t = e.divui(i, dim)?;
                let d = e.remui(i, dim)?;
                let k = e.index(self.top_k as i64)?;
                let w_base = e.muli(t, k)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.top_k as i64, 1, |e, j| {
                    let wv = e.load_f32(w, w_base, j)?;
                    let slot = e.addi(w_base, j)?;
                    let y_base = e.muli(slot, dim)?;
                    let yv = e.load_f32(y, y_base, d)?;
                    let product = e.mulf(wv, yv)?;
                    e.accumulate(acc, product)
                })?;
                let value = e.get(acc)?;
                let mut value = e.round_through(value, self.output)?;
                if self.shared.is_some() {
                    let zero_index = e.index(0)?;
                    let s = e.load_f32(args[2], zero_index, i)?;
                    value = e.addf(value, s)?;
                }
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }

    /// Thread `c` handles elements `d0 .. d0 + per` of token `t` (`c = t · dim/per + d0/per`):
    /// one weight and one 16-byte chunk (two of f32 beside bf16) of each slot's routed output
    /// per slot, the sums in f32 in slot order as the one-element form adds them, then the
    /// shared output's chunk and one chunk stored.
    fn build_chunked(
        &self,
        module: &KernelModule<'_>,
        entry: &str,
        per: u64,
    ) -> Result<(), CodegenError> {
        let chunks = self.dim / per;
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.tokens * chunks,
            |e, args, c| {
                let (y, w, out) = (args[0], args[1], *args.last().expect("out"));
                let chunks = e.index(chunks as i64)?;
                let t = e.divui(c, chunks)?;
                let d0 = e.remui(c, chunks)?;
                let d0 = e.muli(d0, e.index(per as i64)?)?;
                let dim = e.index(self.dim as i64)?;
                let k = e.index(self.top_k as i64)?;
                let w_base = e.muli(t, k)?;
                let zero = e.f32(0.0)?;
                let acc = (0..per)
                    .map(|_| e.cell(zero))
                    .collect::<Result<Vec<_>, _>>()?;
                e.for_const(0, self.top_k as i64, 1, |e, j| {
                    let wv = e.load_f32(w, w_base, j)?;
                    let slot = e.addi(w_base, j)?;
                    let first = e.muli(slot, dim)?;
                    let first = e.addi(first, d0)?;
                    let at = element_address(&e, y, self.routed, first)?;
                    for (&cell, yv) in acc.iter().zip(load_f32s(&e, at, self.routed, per)?) {
                        let product = e.mulf(wv, yv)?;
                        e.accumulate(cell, product)?;
                    }
                    Ok(())
                })?;
                let first = e.muli(t, dim)?;
                let first = e.addi(first, d0)?;
                let shared = match self.shared {
                    Some(dtype) => {
                        let at = element_address(&e, args[2], dtype, first)?;
                        Some(load_f32s(&e, at, dtype, per)?)
                    }
                    None => None,
                };
                let mut values = Vec::with_capacity(per as usize);
                for (n, &cell) in acc.iter().enumerate() {
                    let value = e.get(cell)?;
                    let mut value = e.round_through(value, self.output)?;
                    if let Some(shared) = &shared {
                        value = e.addf(value, shared[n])?;
                    }
                    values.push(value);
                }
                let at = element_address(&e, out, self.output, first)?;
                store_f32s(&e, &values, at, self.output)
            },
        )
    }
}
