//! `expert_bias_update`: the auxiliary-loss-free balancing step of DeepSeek-V3's router —
//! `b'ᵢ = bᵢ + speed · sign(mean load − loadᵢ)`, where `loadᵢ` counts the entries of the
//! `[T, k]` indices equal to `i` — exactly the CPU reference
//! (`dsc_kernels::ops::grad::expert_bias_update`), bit for bit.
//!
//! The reference compares `loadᵢ · E` with `T·k` in integers; that is `loadᵢ < ⌈T·k / E⌉`
//! (less: `+speed`) and `loadᵢ > ⌊T·k / E⌋` (greater: `−speed`), both constants of the kernel,
//! so no product can overflow. The new bias is `b ± speed` in f32, rounded to the bias's dtype
//! once, as the CPU backend rounds the reference's f32 result.
//!
//! One block of [`THREADS`] threads: a histogram of [`THREADS`] experts at a time in shared
//! memory, the threads reading the indices in 16-byte accesses (the ragged tail one by one) and
//! counting with shared integer atomics (whose order changes no count, so the result is
//! deterministic); then thread `t` updates expert `t` of the pass. More than [`THREADS`]
//! experts take one pass over the indices each. It runs once per routed layer per step, on a
//! few hundred KiB of indices, so one block suffices.
//!
//! Where the reference refuses an index outside `0..E`, the kernel leaves it out of every
//! expert's load (no pass's range holds it), though it stays one of the `T·k` entries the mean
//! is taken over: nothing is read or written out of bounds.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::moe_dispatch::atomic_add;
use super::vector_access::global_load_v4;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// Threads of the one block, and experts counted per pass over the indices (one counter each).
pub const THREADS: u32 = 1024;

/// The balancing step of `experts` selection biases from `routed` routing decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExpertBiasUpdate {
    /// Experts (`E`, the bias's length).
    pub experts: u64,
    /// Entries of the indices (`T·k`).
    pub routed: u64,
    /// Dtype of the bias and of the result (f32 or bf16).
    pub bias: DType,
    /// γ, as the f32 the reference adds.
    pub speed: f32,
}

impl ExpertBiasUpdate {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "expert_bias_update"
    }

    /// `(bias, indices, bias_out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("bias", self.bias, self.experts),
            Param::new("indices", DType::I32, self.routed),
            Param::new("bias_out", self.bias, self.experts),
        ]
    }

    /// One block of [`THREADS`].
    pub fn launch(&self) -> Launch {
        Launch::blocks(1, THREADS)
    }

    /// Why the kernel cannot take these shapes, if it cannot: its counts and expert numbers
    /// are `i32`, as the indices are.
    pub fn supported(&self) -> Result<(), String> {
        let limit = i32::MAX as u64;
        if self.experts > limit || self.routed > limit {
            return Err(format!(
                "{} experts and {} routing entries: at most {limit} of each",
                self.experts, self.routed
            ));
        }
        if !self.bias.is_kernel_float() {
            return Err(format!("a {} bias (f32 and bf16 only)", self.bias));
        }
        Ok(())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        self.supported()
            .map_err(CodegenError::invalid_kernel(entry))?;
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let i32_type: Type = IntegerType::new(context, 32).into();
        let shared: Vec<Type> =
            vec![MemRefType::new(i32_type, &[i64::from(THREADS)], None, workgroup).into()];
        let threads = i64::from(THREADS);
        let passes = self.experts.div_ceil(u64::from(THREADS)) as i64;
        let whole = self.routed / 4;
        let tail = self.routed % 4;
        // Both at most `routed` ≤ i32::MAX (`supported`); `experts` is not 0 when they are used.
        let (below, above) = match self.experts {
            0 => (0, 0),
            e => (self.routed.div_ceil(e) as i64, (self.routed / e) as i64),
        };
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let (bias, indices, out, counts) = (args[0], args[1], args[2], args[3]);
            let tid = e.thread_x()?;
            let threads_v = e.index(threads)?;
            let zero = e.int(32, 0)?;

            e.for_const(0, passes, 1, |e, pass| {
                let first = e.muli(pass, threads_v)?;
                let first32 = e.index_cast(first, e.int_type(32))?;
                let experts = e.index(self.experts as i64)?;
                let left = e.subi(experts, first)?;
                let span = e.minui(left, threads_v)?;
                let span32 = e.index_cast(span, e.int_type(32))?;
                let range = PassRange {
                    counts,
                    first: first32,
                    span: span32,
                };
                // Each thread zeroes the counter it alone reads at the end of the pass, so
                // passes need no barrier between them.
                e.store(zero, counts, tid);
                e.barrier();
                if whole > 0 {
                    let end = e.index(whole as i64)?;
                    e.for_range(tid, end, threads_v, |e, c| {
                        let base = e.address_of(indices)?;
                        let c64 = e.index_cast(c, e.int_type(64))?;
                        let sixteen = e.int(64, 16)?;
                        let offset = e.muli(c64, sixteen)?;
                        let at = e.addi(base, offset)?;
                        // The load is predicated; here the loop bound already keeps it in the buffer.
                        let ok = e.lt(c, end)?;
                        for x in global_load_v4(&e, at, ok)? {
                            range.count(&e, x)?;
                        }
                        Ok(())
                    })?;
                }
                if tail > 0 {
                    let tail_v = e.index(tail as i64)?;
                    let in_tail = e.lt(tid, tail_v)?;
                    e.if_then(in_tail, |e| {
                        let start = e.index((whole * 4) as i64)?;
                        let at = e.addi(start, tid)?;
                        let x = e.load(indices, at)?;
                        range.count(&e, x)
                    })?;
                }
                e.barrier();

                let mine = e.lt(tid, span)?;
                e.if_then(mine, |e| {
                    let expert = e.addi(first, tid)?;
                    let load = e.load(counts, tid)?;
                    let below = e.int(32, below)?;
                    let above = e.int(32, above)?;
                    let less = e.cmpi(CmpiPredicate::Slt, load, below)?;
                    let greater = e.cmpi(CmpiPredicate::Sgt, load, above)?;
                    let b = e.load(bias, expert)?;
                    let b = e.to_f32(b)?;
                    let speed = e.f32(self.speed)?;
                    let raised = e.addf(b, speed)?;
                    let lowered = e.subf(b, speed)?;
                    let moved = e.select(greater, lowered, b)?;
                    let moved = e.select(less, raised, moved)?;
                    let moved = e.round_to(moved, self.bias)?;
                    e.store(moved, out, expert);
                    Ok(())
                })
            })
        })
    }
}

/// The experts `first..first + span` of one pass and their counters.
struct PassRange<'c, 'a> {
    counts: Value<'c, 'a>,
    /// `i32`.
    first: Value<'c, 'a>,
    /// `i32`.
    span: Value<'c, 'a>,
}

impl<'c> PassRange<'c, '_> {
    /// Counts the expert index `x` (an `i32`) when the pass holds it: one unsigned comparison
    /// of `x − first` with `span`, which also drops negative indices (`first + span` ≤ 2^31).
    fn count(&self, e: &Emit<'c, '_>, x: Value<'c, '_>) -> Result<(), CodegenError> {
        let local = e.subi(x, self.first)?;
        let held = e.cmpi(CmpiPredicate::Ult, local, self.span)?;
        e.if_then(held, |e| {
            let at = e.index_cast(local, e.index_type())?;
            let one = e.int(32, 1)?;
            atomic_add(&e, self.counts, at, one)
        })
    }
}
