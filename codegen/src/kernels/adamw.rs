//! `adamw`: one AdamW step of a parameter with its gradient, clipped by the global norm, and
//! its two moments — exactly the CPU reference (`dsc_kernels::ops::grad::adamw`, dispatched by
//! the CPU backend), bit for bit.
//!
//! The reference forms its hyperparameter scalars as torch does, in f64 from the f32
//! hyperparameters, and rounds each to f32 where it meets a tensor: `1 − lr·wd`,
//! `lr / (1 − β1^step)` and `sqrt(1 − β2^step)` depend on the step's learning rate and step
//! (the `schedule` operand), so thread 0 of every block computes them the same way in f64
//! (`β^step` by binary powering, the order of Rust's `f64::powi`: the product of the squarings
//! `β^(2^i)` for the set bits of the step, lowest first) and shares them through shared
//! memory; `1 − β1`, `1 − β2` and the other attribute-only values are constants of the kernel,
//! computed here as the reference computes them. The clip multiplier is the reference's
//! `clip_scale` in f32. The elementwise update is f32 in the reference's order, the moments
//! rounded to the moments' format (the dtype of `m`) once.
//!
//! Each thread updates [`super::wide_access::elements_per_thread`] elements with 16-byte
//! accesses (8 when the moments are bf16: two accesses of the f32 parameter and gradient, one of
//! each moment); the ragged tail of the last thread goes element by element.
//!
//! A step of 0 (which the reference refuses: its bias correction is 0) gives non-finite values
//! here; the step is the schedule's second value converted as Rust's `as u32` converts (toward
//! zero, saturating, NaN to 0), at most `i32::MAX`.

use dsc_ir::DType;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Type, Value};
use serde::Serialize;

use super::grid_reduce::{f64_const, sqrt_f64};
use super::wide_access::{element_address, elements_per_thread, load_f32s, round_bf16, store_f32s};
use super::{ELEMENTWISE_BLOCK, Launch, Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// The per-step scalars in shared memory, in this order.
const DECAY: i64 = 0;
const STEP_SIZE: i64 = 1;
const BC2_SQRT: i64 = 2;
const GRAD_SCALE: i64 = 3;

/// AdamW over `len` elements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdamW {
    /// Elements.
    pub len: u64,
    /// Dtype of the parameter (and of its update).
    pub param: DType,
    /// Dtype of the gradient.
    pub grad: DType,
    /// Dtype of the first moment (its format rounds both moments, as in the reference).
    pub m: DType,
    /// Dtype of the second moment.
    pub v: DType,
    /// β1, as the f32 the reference takes.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// The clipping threshold of the global norm (≤ 0: no clipping).
    pub max_grad_norm: f32,
}

/// The attribute-only constants of the update, as the reference computes them.
struct Constants {
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    /// `(1 − β1) as f32`, the lerp weight.
    w1: f32,
    /// `1 − w1` in f32 (the lerp's other form).
    one_minus_w1: f32,
    /// `(1 − β2) as f32`.
    w2: f32,
}

impl AdamW {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "adamw"
    }

    /// `(param, grad, m, v, norm, schedule, param', m', v')`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("param", self.param, self.len),
            Param::new("grad", self.grad, self.len),
            Param::new("m", self.m, self.len),
            Param::new("v", self.v, self.len),
            Param::new("norm", DType::F32, 1),
            Param::new("schedule", DType::F32, 2),
            Param::new("param_out", self.param, self.len),
            Param::new("m_out", self.m, self.len),
            Param::new("v_out", self.v, self.len),
        ]
    }

    /// Elements per thread.
    fn per_thread(&self) -> u64 {
        elements_per_thread(&[self.param, self.grad, self.m, self.v])
    }

    /// One thread per [`AdamW::per_thread`] elements.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len.div_ceil(self.per_thread()))
    }

    fn constants(&self) -> Constants {
        let beta1 = f64::from(self.beta1);
        let beta2 = f64::from(self.beta2);
        let w1 = (1.0 - beta1) as f32;
        Constants {
            beta1,
            beta2,
            weight_decay: f64::from(self.weight_decay),
            w1,
            one_minus_w1: 1.0 - w1,
            w2: (1.0 - beta2) as f32,
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &self.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let shared: Vec<Type> =
            vec![MemRefType::new(Type::float32(context), &[4], None, workgroup).into()];
        let per = self.per_thread();
        let whole = self.len / per;
        let tail = self.len % per;
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, block.argument_count())?;
            let scalars = args[9];
            let tid = e.thread_x()?;
            let zero = e.index(0)?;
            let first = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
            e.if_then(first, |e| self.step_scalars(&e, args[4], args[5], scalars))?;
            e.barrier();
            let scalar = |i: i64| -> Emitted<'_, '_> {
                let at = e.index(i)?;
                e.load(scalars, at)
            };
            let s = Scalars {
                decay: scalar(DECAY)?,
                step_size: scalar(STEP_SIZE)?,
                bc2_sqrt: scalar(BC2_SQRT)?,
                grad_scale: scalar(GRAD_SCALE)?,
            };

            let bid = e.block_index(Dimension::X)?;
            let threads = e.index(i64::from(ELEMENTWISE_BLOCK))?;
            let t = e.muli(bid, threads)?;
            let t = e.addi(t, tid)?;
            let per_v = e.index(per as i64)?;
            let start = e.muli(t, per_v)?;
            let buffers = [
                (args[0], self.param),
                (args[1], self.grad),
                (args[2], self.m),
                (args[3], self.v),
            ];
            let outputs = [(args[6], self.param), (args[7], self.m), (args[8], self.v)];
            if whole > 0 {
                let whole_v = e.index(whole as i64)?;
                let in_whole = e.lt(t, whole_v)?;
                e.if_then(in_whole, |e| {
                    let mut loaded = Vec::new();
                    for &(buffer, dtype) in &buffers {
                        let at = element_address(&e, buffer, dtype, start)?;
                        loaded.push(load_f32s(&e, at, dtype, per)?);
                    }
                    let mut results: [Vec<Value>; 3] = [Vec::new(), Vec::new(), Vec::new()];
                    let [p, g, m, v] = &loaded[..] else {
                        unreachable!("four buffers are loaded")
                    };
                    for i in 0..per as usize {
                        let updated = self.update(&e, &s, [p[i], g[i], m[i], v[i]])?;
                        for (r, u) in results.iter_mut().zip(updated) {
                            r.push(u);
                        }
                    }
                    for ((buffer, dtype), values) in outputs.iter().zip(&results) {
                        let at = element_address(&e, *buffer, *dtype, start)?;
                        store_f32s(&e, values, at, *dtype)?;
                    }
                    Ok(())
                })?;
            }
            if tail > 0 {
                let last = e.index(whole as i64)?;
                let is_tail = e.cmpi(CmpiPredicate::Eq, t, last)?;
                e.if_then(is_tail, |e| {
                    for k in 0..tail {
                        let offset = e.index(k as i64)?;
                        let i = e.addi(start, offset)?;
                        let mut loaded = Vec::new();
                        for &(buffer, _) in &buffers {
                            let v = e.load(buffer, i)?;
                            loaded.push(e.to_f32(v)?);
                        }
                        let updated =
                            self.update(&e, &s, [loaded[0], loaded[1], loaded[2], loaded[3]])?;
                        for ((buffer, dtype), value) in outputs.iter().zip(updated) {
                            let value = e.round_to(value, *dtype)?;
                            e.store(value, *buffer, i);
                        }
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })
    }

    /// Thread 0: the step's scalars from `norm` and `schedule` into `scalars` (see the module
    /// docs for the order of operations).
    fn step_scalars<'c>(
        &self,
        e: &Emit<'c, '_>,
        norm: Value<'c, '_>,
        schedule: Value<'c, '_>,
        scalars: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let c = self.constants();
        let f32_type = e.f32_type();
        let f64_type = Type::float64(e.context);
        let zero = e.index(0)?;
        let one_index = e.index(1)?;
        let lr = e.load(schedule, zero)?;
        let step = e.load(schedule, one_index)?;
        // Rust's `as u32`, then `i32::try_from(..).unwrap_or(i32::MAX)`.
        let step = e.inline_asm("cvt.rzi.u32.f32 $0, $1;", "=r,f", &[step], e.int_type(32))?;
        let i32_max = e.int(32, i64::from(i32::MAX))?;
        let step = e.push(melior::dialect::arith::minui(step, i32_max, e.location))?;

        let lr64 = e.extf(lr, f64_type)?;
        let one = f64_const(e, 1.0)?;
        let wd = f64_const(e, c.weight_decay)?;
        let lr_wd = e.mulf(lr64, wd)?;
        let decay = e.subf(one, lr_wd)?;
        let decay = e.truncf(decay, f32_type)?;

        let pow1 = powi(e, c.beta1, step)?;
        let pow2 = powi(e, c.beta2, step)?;
        let bc1 = e.subf(one, pow1)?;
        let step_size = e.divf(lr64, bc1)?;
        let step_size = e.truncf(step_size, f32_type)?;
        let bc2 = e.subf(one, pow2)?;
        let bc2_sqrt = sqrt_f64(e, bc2)?;
        let bc2_sqrt = e.truncf(bc2_sqrt, f32_type)?;

        // clip_scale: max / (norm + 1e-6) when clipping is on and the norm exceeds it.
        let grad_scale = if self.max_grad_norm > 0.0 {
            let norm = e.load(norm, zero)?;
            let max = e.f32(self.max_grad_norm)?;
            let over = e.cmpf(CmpfPredicate::Ogt, norm, max)?;
            let tiny = e.f32(1e-6)?;
            let shifted = e.addf(norm, tiny)?;
            let clipped = e.divf(max, shifted)?;
            let one = e.f32(1.0)?;
            e.select(over, clipped, one)?
        } else {
            e.f32(1.0)?
        };
        for (slot, value) in [
            (DECAY, decay),
            (STEP_SIZE, step_size),
            (BC2_SQRT, bc2_sqrt),
            (GRAD_SCALE, grad_scale),
        ] {
            let at = e.index(slot)?;
            e.store(value, scalars, at);
        }
        Ok(())
    }

    /// The update of one element `[p, g, m, v]` (f32): `[p', m', v']`, rounded to their dtypes.
    fn update<'c, 'a>(
        &self,
        e: &Emit<'c, 'a>,
        s: &Scalars<'c, '_>,
        [p, g, m0, v0]: [Value<'c, 'a>; 4],
    ) -> Result<[Value<'c, 'a>; 3], CodegenError> {
        let c = self.constants();
        let g = e.mulf(g, s.grad_scale)?;
        // torch's lerp, whose formula switches at weight 1/2.
        let diff = e.subf(g, m0)?;
        let m1 = if c.w1 < 0.5 {
            let w1 = e.f32(c.w1)?;
            let step = e.mulf(w1, diff)?;
            e.addf(m0, step)?
        } else {
            let w = e.f32(c.one_minus_w1)?;
            let step = e.mulf(diff, w)?;
            e.subf(g, step)?
        };
        let m1 = round_exact(e, m1, self.m)?;
        // torch's addcmul: v·β2 + w2·g·g, left to right.
        let b2 = e.f32(self.beta2)?;
        let decayed = e.mulf(v0, b2)?;
        let w2 = e.f32(c.w2)?;
        let wg = e.mulf(w2, g)?;
        let wgg = e.mulf(wg, g)?;
        let v1 = e.addf(decayed, wgg)?;
        let v1 = round_exact(e, v1, self.m)?;
        let root = e.sqrt_rn(v1)?;
        let corrected = e.divf(root, s.bc2_sqrt)?;
        let eps = e.f32(self.eps)?;
        let denom = e.addf(corrected, eps)?;
        // torch's addcdiv with value −step_size: p·decay + (−step_size · m) / denom.
        let decayed_p = e.mulf(p, s.decay)?;
        let minus = e.negf(s.step_size)?;
        let numerator = e.mulf(minus, m1)?;
        let delta = e.divf(numerator, denom)?;
        let p1 = e.addf(decayed_p, delta)?;
        // Rounded to the outputs' dtypes here, so that the stores convert exact values.
        Ok([
            round_exact(e, p1, self.param)?,
            round_exact(e, m1, self.m)?,
            round_exact(e, v1, self.v)?,
        ])
    }
}

/// The step's scalars, read from shared memory.
struct Scalars<'c, 'a> {
    decay: Value<'c, 'a>,
    step_size: Value<'c, 'a>,
    bc2_sqrt: Value<'c, 'a>,
    grad_scale: Value<'c, 'a>,
}

/// `base^step` in f64 (`step` an `i32` in `0..2^31`) as Rust's `f64::powi` computes it: `r = 1`,
/// then for each bit of the step from the lowest, `r *= a` when it is set and `a *= a`.
fn powi<'c, 'a>(e: &Emit<'c, 'a>, base: f64, step: Value<'c, '_>) -> Emitted<'c, 'a> {
    let one = f64_const(e, 1.0)?;
    let result = e.cell(one)?;
    let base = f64_const(e, base)?;
    let power = e.cell(base)?;
    let step = e.index_cast(step, e.index_type())?;
    e.for_const(0, 31, 1, |e, bit| {
        let shifted = e.shrui(step, bit)?;
        let one = e.index(1)?;
        let set = e.andi(shifted, one)?;
        let set = e.cmpi(CmpiPredicate::Eq, set, one)?;
        let a = e.get(power)?;
        e.if_then(set, |e| {
            let r = e.get(result)?;
            let r = e.mulf(r, a)?;
            e.set(result, r)
        })?;
        let squared = e.mulf(a, a)?;
        e.set(power, squared)
    })?;
    e.get(result)
}

/// `x` rounded to `dtype` (f32 or bf16) as an f32, on the bits ([`round_bf16`]).
fn round_exact<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, 'a>, dtype: DType) -> Emitted<'c, 'a> {
    match dtype {
        DType::Bf16 => round_bf16(e, x),
        _ => Ok(x),
    }
}
