//! `cross_entropy` (the mean next-token loss) and `cross_entropy_grad` (its gradient with
//! respect to the logits): one block per row of `[rows, vocab]` logits (f32 or bf16), the row's
//! statistics in f32 as the CPU reference (`dsc_kernels::ops::grad::cross_entropy`): the
//! maximum (NaN skipped, as `f32::max`), `Σ exp(x − max)` (summed per thread then in a fixed
//! tree, where the reference sums pairwise), then
//! - the loss of the row `−((x_label − max) − ln Σ)`, and their mean over the rows: every block
//!   publishes its row's loss and the last block sums them in f64 in row order
//!   ([`super::grid_reduce`]) and divides the f32 sum by the rows;
//! - the gradient `(exp(x − max) / Σ − [j = label]) · (dloss / rows)` (a row whose maximum is
//!   −∞ has zero probabilities, as the reference's softmax).
//!
//! `exp` and `ln` are f32 polynomial approximations within 2 ulp of the CPU's, and the sums run
//! in another order, so results agree within a tolerance, not bit for bit.
//!
//! A label outside `0..vocab` (an error in the reference) is never used as an index: that row's
//! loss, and so the mean, is NaN, and its whole gradient row is NaN.

use dsc_ir::DType;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::grid_reduce::{self, GridScratch, THREADS};
use super::norm::block_reduce;
use super::{Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted, Reduction};
use crate::mlir::kernel::Dimension;

/// The loss or its gradient over `rows` rows of `vocab` logits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossEntropy {
    /// Rows (positions).
    pub rows: u64,
    /// Vocabulary (row length).
    pub vocab: u64,
    /// Dtype of the logits (f32 or bf16); labels are i32, the results f32.
    pub logits: DType,
    /// `cross_entropy_grad` (else the loss).
    pub grad: bool,
}

/// The statistics of one row, the same in every thread of its block.
struct RowStats<'c, 'a> {
    /// First element of the row.
    base: Value<'c, 'a>,
    /// The row's maximum (NaN skipped).
    max: Value<'c, 'a>,
    /// `Σ exp(x − max)`.
    sum: Value<'c, 'a>,
    /// The label as an index (0 when out of range).
    label: Value<'c, 'a>,
    /// Whether the label is in `0..vocab`.
    valid: Value<'c, 'a>,
}

impl CrossEntropy {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        if self.grad {
            "cross_entropy_grad"
        } else {
            "cross_entropy"
        }
    }

    /// `(logits, labels, loss)` or `(logits, labels, dloss, dlogits)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params = vec![
            Param::new("logits", self.logits, self.rows * self.vocab),
            Param::new("labels", DType::I32, self.rows),
        ];
        if self.grad {
            params.push(Param::new("dloss", DType::F32, 1));
            params.push(Param::new("dlogits", DType::F32, self.rows * self.vocab));
        } else {
            params.push(Param::new("loss", DType::F32, 1));
        }
        params
    }

    /// One block of [`THREADS`] per row.
    pub fn launch(&self) -> Launch {
        Launch::blocks(self.rows, THREADS)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let scratch = if !self.grad && self.rows > 1 {
            Some(GridScratch::declare(module, entry, self.rows)?)
        } else {
            None
        };
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let mut shared: Vec<Type> = vec![
            MemRefType::new(
                Type::float32(context),
                &[i64::from(THREADS / 32)],
                None,
                workgroup,
            )
            .into(),
        ];
        if !self.grad {
            shared.extend(grid_reduce::shared_types(context));
        }
        let n = types.len();
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let partials = args[n];
            let tid = e.thread_x()?;
            let row = e.block_index(Dimension::X)?;
            let stats = self.row_stats(&e, args[0], args[1], row, tid, partials)?;
            if self.grad {
                return self.write_grad(&e, &stats, args[0], args[2], args[3], tid);
            }
            let loss = self.row_loss(&e, &stats, args[0])?;
            let (out, sums, flag) = (args[2], args[n + 1], args[n + 2]);
            let rows = self.rows;
            let loss64 = e.extf(loss, Type::float64(context))?;
            match &scratch {
                None => write_mean(&e, tid, out, rows, loss64),
                Some(scratch) => {
                    let at = scratch.address(&e)?;
                    let last = grid_reduce::arrive(&e, at, row, loss64, rows, tid, flag)?;
                    e.if_then(last, |e| {
                        let sum = grid_reduce::sum_slots(&e, at, rows, tid, sums)?;
                        write_mean(&e, tid, out, rows, sum)
                    })
                }
            }
        })
    }

    /// The maximum and the exponential sum of row `row`, and its label.
    fn row_stats<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        logits: Value<'c, '_>,
        labels: Value<'c, '_>,
        row: Value<'c, 'a>,
        tid: Value<'c, 'a>,
        partials: Value<'c, '_>,
    ) -> Result<RowStats<'c, 'a>, CodegenError> {
        let vocab = e.index(self.vocab as i64)?;
        let base = e.muli(row, vocab)?;
        let step = e.index(i64::from(THREADS))?;
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        let max_cell = e.cell(neg_inf)?;
        e.for_range(tid, vocab, step, |e, j| {
            let v = e.load_f32(logits, base, j)?;
            let m = e.get(max_cell)?;
            let m = e.max_skip_nan(m, v)?;
            e.set(max_cell, m)
        })?;
        let own = e.get(max_cell)?;
        let max = block_reduce(e, own, Reduction::Max, tid, partials)?;

        let zero = e.f32(0.0)?;
        let sum_cell = e.cell(zero)?;
        e.for_range(tid, vocab, step, |e, j| {
            let v = e.load_f32(logits, base, j)?;
            let shifted = e.subf(v, max)?;
            let p = e.exp(shifted)?;
            e.accumulate(sum_cell, p)
        })?;
        let own = e.get(sum_cell)?;
        let sum = block_reduce(e, own, Reduction::Sum, tid, partials)?;

        let label = e.load(labels, row)?;
        let (label, valid) = e.checked_index(label, self.vocab as i64)?;
        Ok(RowStats {
            base,
            max,
            sum,
            label,
            valid,
        })
    }

    /// `−((x_label − max) − ln Σ)`, NaN for a label out of range.
    fn row_loss<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        s: &RowStats<'c, 'a>,
        logits: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let x = e.load_f32(logits, s.base, s.label)?;
        let shifted = e.subf(x, s.max)?;
        let log_sum = ln(e, s.sum)?;
        let log_prob = e.subf(shifted, log_sum)?;
        let loss = e.negf(log_prob)?;
        let nan = e.f32(f32::NAN)?;
        e.select(s.valid, loss, nan)
    }

    /// The row's gradient `(softmax − onehot(label)) · dloss / rows`.
    fn write_grad<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        s: &RowStats<'c, 'a>,
        logits: Value<'c, '_>,
        dloss: Value<'c, '_>,
        out: Value<'c, '_>,
        tid: Value<'c, 'a>,
    ) -> Result<(), CodegenError> {
        let zero = e.index(0)?;
        let dloss = e.load(dloss, zero)?;
        let rows = e.f32(self.rows as f32)?;
        let factor = e.divf(dloss, rows)?;
        let neg_inf = e.f32(f32::NEG_INFINITY)?;
        let masked = e.cmpf(CmpfPredicate::Oeq, s.max, neg_inf)?;
        let vocab = e.index(self.vocab as i64)?;
        let step = e.index(i64::from(THREADS))?;
        e.for_range(tid, vocab, step, |e, j| {
            let v = e.load_f32(logits, s.base, j)?;
            let shifted = e.subf(v, s.max)?;
            let p = e.exp(shifted)?;
            let p = e.divf(p, s.sum)?;
            let zero = e.f32(0.0)?;
            let p = e.select(masked, zero, p)?;
            let one = e.f32(1.0)?;
            let minus_one = e.subf(p, one)?;
            let is_label = e.cmpi(CmpiPredicate::Eq, j, s.label)?;
            let p = e.select(is_label, minus_one, p)?;
            let g = e.mulf(p, factor)?;
            let nan = e.f32(f32::NAN)?;
            let g = e.select(s.valid, g, nan)?;
            let at = e.addi(s.base, j)?;
            e.store(g, out, at);
            Ok(())
        })
    }
}

/// Thread 0 stores the mean `f32(sum) / rows` (`sum` an f64) in `out`.
fn write_mean<'c>(
    e: &Emit<'c, '_>,
    tid: Value<'c, '_>,
    out: Value<'c, '_>,
    rows: u64,
    sum: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let zero = e.index(0)?;
    let first = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
    e.if_then(first, |e| {
        let sum = e.truncf(sum, e.f32_type())?;
        let rows = e.f32(rows as f32)?;
        let mean = e.divf(sum, rows)?;
        let zero = e.index(0)?;
        e.store(mean, out, zero);
        Ok(())
    })
}

/// `ln x` in f32 for positive normal `x` (the sums here are at least 1), NaN for NaN: Cephes'
/// `logf` (`x = m · 2^k` with `m` in `[√½, √2)`, a degree-8 polynomial in `m − 1`, `k · ln 2` in
/// two parts), within 1 ulp of the correctly rounded logarithm.
pub(crate) fn ln<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
    let i32_type = e.int_type(32);
    let f32_type = e.f32_type();
    let bits = e.bitcast(x, i32_type)?;
    // frexp: x = m · 2^k with m in [0.5, 1).
    let shift = e.int(32, 23)?;
    let biased = e.shrui(bits, shift)?;
    let exponent_mask = e.int(32, 0xff)?;
    let biased = e.andi(biased, exponent_mask)?;
    let bias = e.int(32, 126)?;
    let k = e.subi(biased, bias)?;
    let mantissa_mask = e.int(32, 0x007f_ffff)?;
    let mantissa = e.andi(bits, mantissa_mask)?;
    let half_exponent = e.int(32, 0x3f00_0000)?;
    let m = e.ori(mantissa, half_exponent)?;
    let m = e.bitcast(m, f32_type)?;
    // m < √½: k − 1 and 2m − 1, else m − 1.
    let sqrt_half = e.f32(std::f32::consts::FRAC_1_SQRT_2)?;
    let small = e.cmpf(CmpfPredicate::Olt, m, sqrt_half)?;
    let one_i = e.int(32, 1)?;
    let k_less = e.subi(k, one_i)?;
    let k = e.select(small, k_less, k)?;
    let one = e.f32(1.0)?;
    let doubled = e.addf(m, m)?;
    let doubled = e.subf(doubled, one)?;
    let plain = e.subf(m, one)?;
    let r = e.select(small, doubled, plain)?;

    let z = e.mulf(r, r)?;
    let coefficients = [
        0.070_376_836f32,
        -0.115_146_1,
        0.116_769_984,
        -0.124_201_41,
        0.142_493_23,
        -0.166_680_57,
        0.200_007_14,
        -0.249_999_94,
        0.333_333_3,
    ];
    let mut p = e.f32(coefficients[0])?;
    for &c in &coefficients[1..] {
        let pr = e.mulf(p, r)?;
        let c = e.f32(c)?;
        p = e.addf(pr, c)?;
    }
    let y = e.mulf(p, r)?;
    let y = e.mulf(y, z)?;
    let fk = e.sitofp(k, f32_type)?;
    let c2 = e.f32(-2.121_944_4e-4)?;
    let t = e.mulf(fk, c2)?;
    let y = e.addf(y, t)?;
    let half = e.f32(-0.5)?;
    let t = e.mulf(z, half)?;
    let y = e.addf(y, t)?;
    let result = e.addf(r, y)?;
    let c1 = e.f32(0.693_359_4)?;
    let t = e.mulf(fk, c1)?;
    let result = e.addf(result, t)?;
    let is_nan = e.cmpf(CmpfPredicate::Uno, x, x)?;
    e.select(is_nan, x, result)
}
