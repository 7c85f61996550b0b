//! `moe_combine_grad`: the gradients of `moe_combine` (`out[t] = Σ_j w[t, j] · y[t, j]`),
//! `dy[t, j] = w[t, j] · dout[t]` and `dweights[t, j] = Σ_d y[t, j, d] · dout[t, d]`, exactly as
//! the CPU reference (`dsc_kernels::ops::grad::moe_combine_grad`), bit for bit.
//!
//! One block of [`THREADS`] per routed row `(t, j)`: its `dy` is one f32 product per element
//! rounded once (coalesced, each thread a column in steps of the block), and its `dweights`
//! entry is the reference's pairwise sum of the f32 products in the reference's own tree.
//! That tree splits a length `n` at `n / 2` until a part has at most 32 elements, summed in
//! order from +0; every node of depth `D` (the first depth at which a part can be a leaf: the
//! least `D` with `⌊n / 2^D⌋ ≤ 32`) is either such a leaf or a part of 33 split once into two,
//! and every node above is split (each has more than 32 elements). So the `2^D` nodes of depth
//! `D` ("segments") are summed on their own, each by one thread (or [`segments_per_thread`]
//! of them, joined as their subtree), and the perfect binary tree above them is a butterfly of
//! `shfl.xor` with offsets 1, 2, 4, … (IEEE addition is commutative, so both lanes of a pair
//! hold the same sum) and then the warps' sums in tree order. A segment's start is found by
//! walking its index's bits from the top, halving as the reference does.
//!
//! A thread's segment is ~16–33 contiguous elements (uncoalesced per instruction; the block's
//! loads together cover the row's lines, which L1 serves). The kernel is memory-bound: it
//! reads `y` and `dout` and writes `dy` once per row (`dout` once per slot, from L2).

use dsc_ir::DType;
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::moe::shuffle;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Threads per block (one block per routed row).
pub const THREADS: u32 = 128;

/// Elements the reference's pairwise sum adds in order (its leaves' most).
const LEAF: u64 = 32;

/// The depth `D` of the segments of a pairwise sum over `n` elements: the least `D` with
/// `⌊n / 2^D⌋ ≤ 32`.
pub fn segment_depth(n: u64) -> u32 {
    let mut depth = 0;
    while n >> depth > LEAF {
        depth += 1;
    }
    depth
}

/// Segments each thread sums (a power of two): one while there are at most [`THREADS`].
pub fn segments_per_thread(n: u64) -> u64 {
    (1u64 << segment_depth(n))
        .div_ceil(u64::from(THREADS))
        .max(1)
}

/// The gradients of `moe_combine` over `tokens × top_k` routed rows of `dim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoeCombineGrad {
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Hidden size.
    pub dim: u64,
    /// Dtype of the experts' outputs `y`.
    pub routed: DType,
    /// Dtype of the routing weights.
    pub weights: DType,
    /// Dtype of `dout`.
    pub grad: DType,
    /// Dtype of `dy`.
    pub output: DType,
    /// Dtype of `dweights`.
    pub weights_grad: DType,
}

impl MoeCombineGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "moe_combine_grad"
    }

    fn rows(&self) -> u64 {
        self.tokens * self.top_k
    }

    /// `(y, weights, dout, dy, dweights)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("y", self.routed, self.rows() * self.dim),
            Param::new("weights", self.weights, self.rows()),
            Param::new("dout", self.grad, self.tokens * self.dim),
            Param::new("dy", self.output, self.rows() * self.dim),
            Param::new("dweights", self.weights_grad, self.rows()),
        ]
    }

    /// One block of [`THREADS`] per routed row.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.rows(), THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let warps = i64::from(THREADS / 32);
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Vec<Type> =
            vec![MemRefType::new(Type::float32(context), &[warps], None, workgroup).into()];
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (y, weights, dout, dy, dweights, partials) =
                (args[0], args[1], args[2], args[3], args[4], args[5]);
            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let rows = e.index(self.rows() as i64)?;
            let in_rows = e.lt(row, rows)?;
            // The whole block takes the branch together (its barrier and shuffles need it).
            e.if_then(in_rows, |e| {
                let k = e.index(self.top_k.max(1) as i64)?;
                let t = e.divui(row, k)?;
                let dim = e.index(self.dim as i64)?;
                let y_base = e.muli(row, dim)?;
                let g_base = e.muli(t, dim)?;
                let zero = e.index(0)?;

                let w = e.load_f32(weights, zero, row)?;
                let step = e.index(i64::from(THREADS))?;
                e.for_range(tid, dim, step, |e, c| {
                    let g = e.load_f32(dout, g_base, c)?;
                    let v = e.mulf(w, g)?;
                    let v = e.round_to(v, self.output)?;
                    let at = e.addi(y_base, c)?;
                    e.store(v, dy, at);
                    Ok(())
                })?;

                let rows = Rows {
                    y,
                    dout,
                    y_base,
                    g_base,
                };
                let total = self.pairwise_dot(&e, &rows, tid, partials)?;
                let first = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, tid, zero)?;
                e.if_then(first, |e| {
                    let total = e.round_to(total, self.weights_grad)?;
                    e.store(total, dweights, row);
                    Ok(())
                })
            })
        })
    }

    /// `Σ_d y[d] · dout[d]` over the row, in the reference's pairwise tree; valid in thread 0.
    fn pairwise_dot<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        rows: &Rows<'c, '_>,
        tid: Value<'c, 'a>,
        partials: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let depth = segment_depth(self.dim);
        let segments = 1u64 << depth;
        let per_thread = segments_per_thread(self.dim);
        // Threads holding a segment sum (a power of two), and lanes of a warp among them.
        let active = segments / per_thread;
        let lanes = active.min(32);
        let active_v = e.index(active as i64)?;
        let mine = e.lt(tid, active_v)?;
        let zero = e.f32(0.0)?;
        let own = e.cell(zero)?;
        e.if_then(mine, |e| {
            let first = e.muli(tid, e.index(per_thread as i64)?)?;
            let sum = self.subtree(&e, rows, first, per_thread, depth)?;
            e.set(own, sum)
        })?;
        let mut sum = e.get(own)?;
        let mut offset = 1;
        while offset < lanes {
            let other = shuffle(e, sum, offset as u32, "xor")?;
            sum = e.addf(sum, other)?;
            offset *= 2;
        }
        let warps = active / lanes;
        if warps == 1 {
            return Ok(sum);
        }
        let thirty_two = e.index(32)?;
        let lane = e.remui(tid, thirty_two)?;
        let warp = e.divui(tid, thirty_two)?;
        let zero_index = e.index(0)?;
        let lane0 = e.cmpi(melior::dialect::arith::CmpiPredicate::Eq, lane, zero_index)?;
        let leads = e.andi(lane0, mine)?;
        e.if_then(leads, |e| {
            e.store(sum, partials, warp);
            Ok(())
        })?;
        e.barrier();
        let mut level: Vec<Value<'c, 'a>> = (0..warps as i64)
            .map(|w| e.load(partials, e.index(w)?))
            .collect::<Result<_, _>>()?;
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| e.addf(pair[0], pair[1]))
                .collect::<Result<_, _>>()?;
        }
        Ok(level[0])
    }

    /// The sum of the `count` segments from `first` (an index; `count` a power of two) as
    /// their subtree of the reference's tree joins them.
    fn subtree<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        rows: &Rows<'c, '_>,
        first: Value<'c, 'a>,
        count: u64,
        depth: u32,
    ) -> Emitted<'c, 'a> {
        if count == 1 {
            return self.segment(e, rows, first, depth);
        }
        let half = count / 2;
        let low = self.subtree(e, rows, first, half, depth)?;
        let second = e.addi(first, e.index(half as i64)?)?;
        let high = self.subtree(e, rows, second, half, depth)?;
        e.addf(low, high)
    }

    /// The sum of segment `s` (an index) of the `2^depth`: a leaf summed in order, or a part
    /// of 33 as its two leaves.
    fn segment<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        rows: &Rows<'c, '_>,
        s: Value<'c, 'a>,
        depth: u32,
    ) -> Emitted<'c, 'a> {
        let mut start = e.index(0)?;
        let mut len = e.index(self.dim as i64)?;
        let one = e.index(1)?;
        let zero = e.index(0)?;
        for level in 0..depth {
            let shift = e.index(i64::from(depth - 1 - level))?;
            let bit = e.shrui(s, shift)?;
            let bit = e.andi(bit, one)?;
            let high = e.cmpi(melior::dialect::arith::CmpiPredicate::Ne, bit, zero)?;
            let half = e.shrui(len, one)?;
            let moved = e.addi(start, half)?;
            start = e.select(high, moved, start)?;
            let rest = e.subi(len, half)?;
            len = e.select(high, rest, half)?;
        }
        let leaf = e.index(LEAF as i64)?;
        let split = e.lt(leaf, len)?;
        let half = e.shrui(len, one)?;
        let low_len = e.select(split, half, len)?;
        let low_end = e.addi(start, low_len)?;
        let end = e.addi(start, len)?;
        let low = ordered_dot(e, rows, start, low_end)?;
        let high = ordered_dot(e, rows, low_end, end)?;
        let joined = e.addf(low, high)?;
        e.select(split, joined, low)
    }
}

/// The row's operands: `y` from `y_base`, `dout` from `g_base`.
struct Rows<'c, 'a> {
    y: Value<'c, 'a>,
    dout: Value<'c, 'a>,
    y_base: Value<'c, 'a>,
    g_base: Value<'c, 'a>,
}

/// `Σ y[d] · dout[d]` for `d` in `begin..end`, in order from +0 (each product rounded to f32).
fn ordered_dot<'c, 'a>(
    e: &Emit<'c, 'a>,
    rows: &Rows<'c, '_>,
    begin: Value<'c, 'a>,
    end: Value<'c, 'a>,
) -> Emitted<'c, 'a> {
    let zero = e.f32(0.0)?;
    let acc = e.cell(zero)?;
    e.for_range(begin, end, e.index(1)?, |e, d| {
        let a = e.load_f32(rows.y, rows.y_base, d)?;
        let b = e.load_f32(rows.dout, rows.g_base, d)?;
        let p = e.mulf(a, b)?;
        e.accumulate(acc, p)
    })?;
    e.get(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's pairwise sum (`dsc_kernels::ops::pairwise_sum`), the spec.
    fn pairwise(xs: &[f32]) -> f32 {
        if xs.len() <= 32 {
            xs.iter().fold(0.0f32, |acc, &x| acc + x)
        } else {
            let (lo, hi) = xs.split_at(xs.len() / 2);
            pairwise(lo) + pairwise(hi)
        }
    }

    /// The kernel's order: segments found by their index's bits, each a leaf or a split 33,
    /// joined as a perfect binary tree.
    fn segmented(xs: &[f32]) -> f32 {
        let n = xs.len() as u64;
        let depth = segment_depth(n);
        let mut level: Vec<f32> = (0..1u64 << depth)
            .map(|s| {
                let (mut start, mut len) = (0u64, n);
                for l in 0..depth {
                    let half = len / 2;
                    if (s >> (depth - 1 - l)) & 1 == 1 {
                        start += half;
                        len -= half;
                    } else {
                        len = half;
                    }
                }
                let seq = |a: u64, b: u64| {
                    xs[a as usize..b as usize]
                        .iter()
                        .fold(0.0f32, |acc, &x| acc + x)
                };
                if len > LEAF {
                    seq(start, start + len / 2) + seq(start + len / 2, start + len)
                } else {
                    seq(start, start + len)
                }
            })
            .collect();
        while level.len() > 1 {
            level = level.chunks(2).map(|p| p[0] + p[1]).collect();
        }
        level[0]
    }

    #[test]
    fn the_segments_are_the_reference_tree() {
        let mut rng = dsc_kernels::rng::SplitMix64(7);
        for n in (0..3000).chain([4096, 7168, 7169, 16_383, 20_000]) {
            let xs = rng.symmetric_f32s(n, 1000.0);
            assert_eq!(pairwise(&xs).to_bits(), segmented(&xs).to_bits(), "n = {n}");
        }
    }
}
