//! Executes one instruction for a group of lanes of a warp (those ready at the same pc).

use super::access::{Place, sectors, wavefronts};
use super::alu::{bfe, bfi, int_binary, int_mad, int_unary, lop3, prmt};
use super::context::CtaContext;
use super::convert::{CvtMods, cvt};
use super::float_ops::{
    FMods, float_binary, float_compare, float_fma, float_unary, float_value, int_compare,
};
use super::mma::MmaSpec;
use super::operand::{mask_bits, write};
use super::warp::{LaneState, WARP, Warp, full_warp, lanes};
use crate::error::EmuError;
use crate::memory::{LOCAL_WINDOW, SHARED_WINDOW};
use crate::ptx::decode::{BarKind, BoolOp, Op, ReduceOp, Rnd, ShflMode, VoteMode};
use crate::ptx::{Inst, Operand, Space, Ty};

/// What the scheduler must do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep running this warp.
    Continue,
    /// Lanes `mask` arrive at CTA barrier `id`, expecting `count` threads (all when `None`);
    /// `wait`: they block until it completes.
    Barrier {
        /// Barrier 0..15.
        id: u8,
        /// Expected threads.
        count: Option<u32>,
        /// Arriving lanes.
        mask: u32,
        /// `bar.sync` (true) or `bar.arrive`.
        wait: bool,
    },
    /// Let other warps run (a failed poll).
    Yield,
}

/// Executes the instruction at `pc` for lanes `mask` of `warp`.
pub fn step(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    pc: u32,
    mask: u32,
) -> Result<Outcome, EmuError> {
    let kernel = ctx.launch.kernel;
    let inst = &kernel.insts[pc as usize];
    ctx.counters.per_inst[pc as usize] += 1;
    let exec = match inst.guard {
        None => mask,
        Some(g) => {
            let mut m = 0;
            for l in lanes(mask) {
                if (warp.reg(g.reg, l) & 1 == 1) != g.negate {
                    m |= 1 << l;
                }
            }
            m
        }
    };
    ctx.counters.threads += u64::from(exec.count_ones());
    let advance = |warp: &mut Warp| {
        for l in lanes(mask) {
            warp.pc[l] = pc + 1;
        }
    };
    match &inst.op {
        Op::Bra => {
            let Some(Operand::Label(target)) = inst.operands.first() else {
                return Err(ctx.unsupported(inst));
            };
            for l in lanes(mask) {
                warp.pc[l] = if exec & (1 << l) != 0 {
                    *target
                } else {
                    pc + 1
                };
            }
            return Ok(Outcome::Continue);
        }
        Op::Exit => {
            for l in lanes(mask) {
                if exec & (1 << l) != 0 {
                    warp.state[l] = LaneState::Exited;
                } else {
                    warp.pc[l] = pc + 1;
                }
            }
            return Ok(Outcome::Continue);
        }
        Op::Bar(kind) => {
            advance(warp);
            if exec == 0 {
                return Ok(Outcome::Continue);
            }
            let first = exec.trailing_zeros() as usize;
            let id = match inst.operands.first() {
                None => 0,
                Some(o) => ctx.read(warp, o, first, Ty::U32),
            };
            let count = inst
                .operands
                .get(1)
                .map(|o| ctx.read(warp, o, first, Ty::U32) as u32);
            if id > 15 {
                return Err(ctx.fault(
                    inst,
                    warp.first_thread,
                    first,
                    format!("barrier {id} > 15"),
                ));
            }
            return Ok(Outcome::Barrier {
                id: id as u8,
                count,
                mask: exec,
                wait: *kind == BarKind::Sync,
            });
        }
        Op::Hopper(h) => return super::hopper::step(ctx, warp, pc, mask, exec, h),
        _ => {}
    }
    advance(warp);
    if exec == 0 {
        return Ok(Outcome::Continue);
    }
    execute(ctx, warp, inst, exec)?;
    Ok(Outcome::Continue)
}

fn execute(ctx: &mut CtaContext, warp: &mut Warp, inst: &Inst, exec: u32) -> Result<(), EmuError> {
    let ops = &inst.operands;
    let unsupported = |ctx: &CtaContext| Err(ctx.unsupported(inst));
    let operand = |i: usize| -> &Operand { ops.get(i).unwrap_or(&Operand::Sink) };
    match &inst.op {
        Op::Unsupported => return unsupported(ctx),
        Op::Nop => {}
        Op::Mov(ty) => {
            let src = operand(1);
            match (operand(0), src) {
                // Pack a vector into a wider register: element 0 in the low bits.
                (Operand::Reg(_), Operand::Vector(items)) => {
                    let w = ty.bits() / items.len() as u32;
                    for l in lanes(exec) {
                        let mut v = 0u64;
                        for (i, it) in items.iter().enumerate() {
                            v |= mask_bits(ctx.read(warp, it, l, *ty), w) << (w * i as u32);
                        }
                        write(warp, operand(0), l, v);
                    }
                }
                (Operand::Vector(items), _) => {
                    let w = ty.bits() / items.len() as u32;
                    for l in lanes(exec) {
                        let v = ctx.read(warp, src, l, *ty);
                        for (i, it) in items.iter().enumerate() {
                            write(warp, it, l, mask_bits(v >> (w * i as u32), w));
                        }
                    }
                }
                (d, s) => {
                    for l in lanes(exec) {
                        let v = mask_bits(ctx.read(warp, s, l, *ty), ty.bits().max(1));
                        write(warp, d, l, v);
                    }
                }
            }
        }
        Op::Int { op, ty } => {
            let (d, a, b) = (operand(0), operand(1), operand(2));
            for l in lanes(exec) {
                let r = int_binary(
                    *op,
                    *ty,
                    ctx.read(warp, a, l, *ty),
                    ctx.read(warp, b, l, *ty),
                );
                write(warp, d, l, r);
            }
        }
        Op::Mad { mode, ty } => {
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, *ty);
                let r = int_mad(*mode, *ty, v(1), v(2), v(3));
                write(warp, operand(0), l, r);
            }
        }
        Op::IntUn { op, ty } => {
            for l in lanes(exec) {
                let r = int_unary(*op, *ty, ctx.read(warp, operand(1), l, *ty));
                let r = if *ty == Ty::Pred { r & 1 } else { r };
                write(warp, operand(0), l, r);
            }
        }
        Op::Bfe(ty) => {
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, *ty);
                write(warp, operand(0), l, bfe(*ty, v(1), v(2), v(3)));
            }
        }
        Op::Bfi(ty) => {
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, *ty);
                write(warp, operand(0), l, bfi(*ty, v(1), v(2), v(3), v(4)));
            }
        }
        Op::Prmt => {
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, Ty::B32);
                write(warp, operand(0), l, prmt(v(1), v(2), v(3)));
            }
        }
        Op::Lop3 => {
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, Ty::B32);
                write(warp, operand(0), l, lop3(v(1), v(2), v(3), v(4)));
            }
        }
        Op::Float {
            op,
            ty,
            rnd,
            ftz,
            sat,
            approx,
            nan,
        } => {
            let m = FMods {
                rnd: rnd.unwrap_or(Rnd::Rn),
                ftz: *ftz,
                sat: *sat,
                nan: *nan,
            };
            for l in lanes(exec) {
                let a = ctx.read(warp, operand(1), l, *ty);
                let b = ctx.read(warp, operand(2), l, *ty);
                let Some(r) = float_binary(*op, *ty, &m, *approx, a, b) else {
                    return unsupported(ctx);
                };
                write(warp, operand(0), l, r);
            }
        }
        Op::Fma { ty, rnd, ftz, sat } => {
            let m = FMods {
                rnd: *rnd,
                ftz: *ftz,
                sat: *sat,
                nan: false,
            };
            for l in lanes(exec) {
                let v = |i| ctx.read(warp, operand(i), l, *ty);
                let Some(r) = float_fma(*ty, &m, v(1), v(2), v(3)) else {
                    return unsupported(ctx);
                };
                write(warp, operand(0), l, r);
            }
        }
        Op::FloatUn { op, ty, rnd, ftz } => {
            for l in lanes(exec) {
                let a = ctx.read(warp, operand(1), l, *ty);
                let Some(r) = float_unary(*op, *ty, *rnd, *ftz, a) else {
                    return unsupported(ctx);
                };
                write(warp, operand(0), l, r);
            }
        }
        Op::Setp {
            cmp,
            ty,
            combine,
            ftz,
        } => {
            let ftz = *ftz;
            for l in lanes(exec) {
                let a = ctx.read(warp, operand(1), l, *ty);
                let b = ctx.read(warp, operand(2), l, *ty);
                let p = if ty.is_float() {
                    float_compare(*cmp, float_value(*ty, a, ftz), float_value(*ty, b, ftz))
                } else {
                    match int_compare(*cmp, *ty, a, b) {
                        Some(p) => p,
                        None => return unsupported(ctx),
                    }
                };
                let c = combine.map(|_| ctx.read(warp, operand(3), l, Ty::Pred) & 1 == 1);
                let join = |p: bool| match (combine, c) {
                    (Some(BoolOp::And), Some(c)) => p && c,
                    (Some(BoolOp::Or), Some(c)) => p || c,
                    (Some(BoolOp::Xor), Some(c)) => p ^ c,
                    _ => p,
                };
                match operand(0) {
                    Operand::PredPair(d, e) => {
                        warp.set_reg(*d, l, u64::from(join(p)));
                        warp.set_reg(*e, l, u64::from(join(!p)));
                    }
                    d => write(warp, d, l, u64::from(join(p))),
                }
            }
        }
        Op::Selp(ty) => {
            for l in lanes(exec) {
                let c = ctx.read(warp, operand(3), l, Ty::Pred) & 1 == 1;
                let v = ctx.read(warp, operand(if c { 1 } else { 2 }), l, *ty);
                write(warp, operand(0), l, mask_bits(v, ty.bits()));
            }
        }
        Op::Cvt {
            dst,
            src,
            rnd,
            irnd,
            sat,
            satfinite,
            ftz,
            relu,
        } => {
            let m = CvtMods {
                rnd: *rnd,
                irnd: *irnd,
                sat: *sat,
                satfinite: *satfinite,
                ftz: *ftz,
                relu: *relu,
            };
            let two = ops.len() == 3;
            for l in lanes(exec) {
                let a = ctx.read(warp, operand(1), l, *src);
                let b = two.then(|| ctx.read(warp, operand(2), l, *src));
                let Some(r) = cvt(*dst, *src, &m, a, b) else {
                    return unsupported(ctx);
                };
                write(warp, operand(0), l, r);
            }
        }
        Op::Cvta {
            to_space,
            space,
            bits,
        } => {
            let window = match space {
                Space::Global => 0,
                Space::Shared => SHARED_WINDOW,
                Space::Local => LOCAL_WINDOW,
                Space::SharedCluster => SHARED_WINDOW,
                Space::Param => super::hopper::PARAM_WINDOW,
                _ => return unsupported(ctx),
            };
            for l in lanes(exec) {
                let a = ctx.read(warp, operand(1), l, Ty::U64);
                let r = if *to_space {
                    a.wrapping_sub(window)
                } else {
                    a.wrapping_add(window)
                };
                let r = mask_bits(r, *bits);
                write(warp, operand(0), l, r);
            }
        }
        Op::Ld { space, ty, vec } => load_store(ctx, warp, inst, exec, *space, *ty, *vec, true)?,
        Op::St { space, ty, vec } => load_store(ctx, warp, inst, exec, *space, *ty, *vec, false)?,
        Op::Atom { space, op, ty } | Op::Red { space, op, ty } => {
            let is_atom = matches!(inst.op, Op::Atom { .. });
            let (addr_i, val_i) = if is_atom { (1, 2) } else { (0, 1) };
            let Operand::Addr(a) = operand(addr_i) else {
                return unsupported(ctx);
            };
            for l in lanes(exec) {
                let address = ctx.address(warp, a, l);
                let v = ctx.read(warp, operand(val_i), l, *ty);
                let cas_new = ctx.read(warp, operand(val_i + 1), l, *ty);
                let Some(f) = atomic_fn(*op, *ty, v, cas_new) else {
                    return unsupported(ctx);
                };
                let width = ty.bytes();
                let first_thread = warp.first_thread;
                let fault = |ctx: &CtaContext, m: String| {
                    ctx.memory_fault(inst, first_thread, l, address, m)
                };
                let place = ctx
                    .place(*space, address, a.base)
                    .map_err(|m| fault(ctx, m))?;
                let old = match place {
                    Place::Global(g) => ctx
                        .launch
                        .memory_for(g)
                        .atomic_update(g, width, f)
                        .map_err(|m| fault(ctx, m))?,
                    p => {
                        let old = ctx.load(warp, l, p, width).map_err(|m| fault(ctx, m))?;
                        ctx.store(warp, l, p, width, f(old))
                            .map_err(|m| fault(ctx, m))?;
                        old
                    }
                };
                if is_atom {
                    write(warp, operand(0), l, old);
                }
            }
        }
        Op::Shfl(mode) => shuffle(ctx, warp, inst, exec, *mode)?,
        Op::Vote(mode) => {
            let mut ballot = 0u32;
            for l in lanes(exec) {
                if ctx.read(warp, operand(1), l, Ty::Pred) & 1 == 1 {
                    ballot |= 1 << l;
                }
            }
            for l in lanes(exec) {
                let r = match mode {
                    VoteMode::Ballot => u64::from(ballot),
                    VoteMode::All => u64::from(ballot == exec),
                    VoteMode::Any => u64::from(ballot != 0),
                    VoteMode::Uni => u64::from(ballot == exec || ballot == 0),
                };
                write(warp, operand(0), l, r);
            }
        }
        Op::Redux { op, ty } => {
            let vals: Vec<u64> = lanes(exec)
                .map(|l| ctx.read(warp, operand(1), l, *ty))
                .collect();
            let signed = ty.is_signed();
            let r = vals.iter().copied().reduce(|x, y| match op {
                ReduceOp::Add => (x + y) & 0xffff_ffff,
                ReduceOp::And => x & y,
                ReduceOp::Or => x | y,
                ReduceOp::Xor => x ^ y,
                ReduceOp::Min if signed => (x as i32).min(y as i32) as u32 as u64,
                ReduceOp::Max if signed => (x as i32).max(y as i32) as u32 as u64,
                ReduceOp::Min => x.min(y),
                ReduceOp::Max => x.max(y),
                _ => x,
            });
            if !matches!(
                op,
                ReduceOp::Add
                    | ReduceOp::And
                    | ReduceOp::Or
                    | ReduceOp::Xor
                    | ReduceOp::Min
                    | ReduceOp::Max
            ) {
                return unsupported(ctx);
            }
            for l in lanes(exec) {
                write(warp, operand(0), l, r.unwrap_or(0));
            }
        }
        Op::Mma { shape, a, b, c, d } => {
            let Some(spec) = MmaSpec::new(*shape, *a, *b, *c, *d) else {
                return unsupported(ctx);
            };
            full_warp(ctx, warp, inst, exec)?;
            let regs = |i: usize| -> Vec<Vec<u64>> {
                let items: &[Operand] = match operand(i) {
                    Operand::Vector(items) => items,
                    o => std::slice::from_ref(o),
                };
                (0..WARP)
                    .map(|l| {
                        items
                            .iter()
                            .map(|o| ctx.read(warp, o, l, Ty::B32))
                            .collect()
                    })
                    .collect()
            };
            let (na, nb, nc, nd) = spec.reg_counts();
            let (ra, rb, rc) = (regs(1), regs(2), regs(3));
            if ra[0].len() != na || rb[0].len() != nb || rc[0].len() != nc {
                return unsupported(ctx);
            }
            let out = spec.run(&ra, &rb, &rc, ctx.launch.options.accumulator);
            let Operand::Vector(dst) = operand(0) else {
                return unsupported(ctx);
            };
            if dst.len() != nd {
                return unsupported(ctx);
            }
            for (l, vals) in out.iter().enumerate() {
                for (o, v) in dst.iter().zip(vals) {
                    write(warp, o, l, *v);
                }
            }
        }
        Op::Ldmatrix { num, trans, space } | Op::Stmatrix { num, trans, space } => {
            let shape = Matrices {
                num: *num as usize,
                trans: *trans,
                space: *space,
                load: matches!(inst.op, Op::Ldmatrix { .. }),
            };
            matrix_8x8(ctx, warp, inst, exec, shape)?;
        }
        Op::Wmma(w) => super::wmma::wmma(ctx, warp, inst, exec, w)?,
        Op::Bra | Op::Exit | Op::Bar(_) | Op::Hopper(_) => unreachable!("handled by step"),
    }
    Ok(())
}

/// The update function of an atomic operation.
fn atomic_fn(op: ReduceOp, ty: Ty, v: u64, new: u64) -> Option<impl Fn(u64) -> u64> {
    let bits = ty.bits();
    if !matches!(bits, 32 | 64) {
        return None;
    }
    let f32op = ty == Ty::F32;
    let f64op = ty == Ty::F64;
    if (f32op || f64op) && !matches!(op, ReduceOp::Add | ReduceOp::Exch) {
        return None;
    }
    Some(move |old: u64| -> u64 {
        let signed = ty.is_signed();
        let r = match op {
            ReduceOp::Add if f32op => {
                u64::from((f32::from_bits(old as u32) + f32::from_bits(v as u32)).to_bits())
            }
            ReduceOp::Add if f64op => (f64::from_bits(old) + f64::from_bits(v)).to_bits(),
            ReduceOp::Add => old.wrapping_add(v),
            ReduceOp::Min if signed => {
                super::operand::sext(old, bits).min(super::operand::sext(v, bits)) as u64
            }
            ReduceOp::Max if signed => {
                super::operand::sext(old, bits).max(super::operand::sext(v, bits)) as u64
            }
            ReduceOp::Min => mask_bits(old, bits).min(mask_bits(v, bits)),
            ReduceOp::Max => mask_bits(old, bits).max(mask_bits(v, bits)),
            ReduceOp::And => old & v,
            ReduceOp::Or => old | v,
            ReduceOp::Xor => old ^ v,
            ReduceOp::Exch => v,
            ReduceOp::Cas => {
                if mask_bits(old, bits) == mask_bits(v, bits) {
                    new
                } else {
                    old
                }
            }
            ReduceOp::Inc => {
                if mask_bits(old, bits) >= mask_bits(v, bits) {
                    0
                } else {
                    old + 1
                }
            }
            ReduceOp::Dec => {
                let o = mask_bits(old, bits);
                if o == 0 || o > mask_bits(v, bits) {
                    v
                } else {
                    o - 1
                }
            }
        };
        mask_bits(r, bits)
    })
}

#[allow(clippy::too_many_arguments)]
fn load_store(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
    ty: Ty,
    vec: u8,
    is_load: bool,
) -> Result<(), EmuError> {
    let (addr_op, data_op) = if is_load {
        (&inst.operands[1], &inst.operands[0])
    } else {
        (&inst.operands[0], &inst.operands[1])
    };
    let Operand::Addr(a) = addr_op else {
        return Err(ctx.unsupported(inst));
    };
    let width = ty.bytes();
    if width > 8 {
        return Err(ctx.unsupported(inst));
    }
    let vec = u32::from(vec);
    let items: Vec<&Operand> = match data_op {
        Operand::Vector(items) if items.len() as u32 == vec => items.iter().collect(),
        o if vec == 1 => vec![o],
        _ => return Err(ctx.unsupported(inst)),
    };
    let mut global_addrs: Vec<u64> = Vec::new();
    let mut shared_addrs: Vec<u64> = Vec::new();
    for l in lanes(exec) {
        let address = ctx.address(warp, a, l);
        let first_thread = warp.first_thread;
        let fault =
            |ctx: &CtaContext, m: String| ctx.memory_fault(inst, first_thread, l, address, m);
        if !address.is_multiple_of(u64::from(width * vec)) {
            return Err(fault(
                ctx,
                format!("misaligned {}-byte access", width * vec),
            ));
        }
        let place = ctx
            .place(space, address, a.base)
            .map_err(|m| fault(ctx, m))?;
        match place {
            Place::Global(g) => global_addrs.push(g),
            Place::Shared(s) => shared_addrs.push(s),
            _ => {}
        }
        for (i, item) in items.iter().enumerate() {
            let offset = u64::from(width) * i as u64;
            let p = match place {
                Place::Global(g) => Place::Global(g + offset),
                Place::Shared(s) => Place::Shared(s + offset),
                Place::Local(s) => Place::Local(s + offset),
                Place::Param(s) => Place::Param(s + offset),
            };
            if is_load {
                let v = ctx.load(warp, l, p, width).map_err(|m| fault(ctx, m))?;
                let v = if ty.is_signed() && width < 8 {
                    super::operand::sext(v, ty.bits()) as u64
                } else {
                    v
                };
                write(warp, item, l, v);
            } else {
                let v = ctx.read(warp, item, l, ty);
                ctx.store(warp, l, p, width, v).map_err(|m| fault(ctx, m))?;
            }
        }
    }
    let bytes = u64::from(width * vec);
    let c = &mut ctx.counters;
    if !global_addrs.is_empty() {
        let n = global_addrs.len() as u64 * bytes;
        let s = sectors(&mut global_addrs, width * vec);
        if is_load {
            c.load_sectors += s;
            c.load_bytes += n;
        } else {
            c.store_sectors += s;
            c.store_bytes += n;
        }
    }
    if !shared_addrs.is_empty() {
        c.shared_requests += 1;
        c.shared_wavefronts += wavefronts(&mut shared_addrs, width * vec);
    }
    Ok(())
}

fn shuffle(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    mode: ShflMode,
) -> Result<(), EmuError> {
    let ops = &inst.operands;
    if ops.len() != 5 {
        return Err(ctx.unsupported(inst));
    }
    let values: Vec<u64> = (0..WARP)
        .map(|l| ctx.read(warp, &ops[1], l, Ty::B32))
        .collect();
    let mut results = Vec::with_capacity(WARP);
    for l in lanes(exec) {
        let b = ctx.read(warp, &ops[2], l, Ty::U32) as u32;
        let c = ctx.read(warp, &ops[3], l, Ty::U32) as u32;
        let member = ctx.read(warp, &ops[4], l, Ty::U32) as u32;
        if member & exec != member {
            let missing = (member & !exec).trailing_zeros();
            return Err(ctx.fault(inst, warp.first_thread, l, format!("shfl.sync membermask {member:#x} names lane {missing}, which did not execute it with this lane")));
        }
        let lane = l as u32;
        let bval = b & 0x1f;
        let cval = c & 0x1f;
        let segmask = (c >> 8) & 0x1f;
        let max_lane = (lane & segmask) | (cval & !segmask);
        let min_lane = lane & segmask;
        let (j, pval) = match mode {
            ShflMode::Up => {
                let j = lane as i32 - bval as i32;
                (j, j >= max_lane as i32)
            }
            ShflMode::Down => {
                let j = (lane + bval) as i32;
                (j, j <= max_lane as i32)
            }
            ShflMode::Bfly => {
                let j = (lane ^ bval) as i32;
                (j, j <= max_lane as i32)
            }
            ShflMode::Idx => {
                let j = (min_lane | (bval & !segmask)) as i32;
                (j, j <= max_lane as i32)
            }
        };
        let j = if pval { j as usize } else { l };
        if exec & (1 << j) == 0 {
            return Err(ctx.fault(
                inst,
                warp.first_thread,
                l,
                format!("shfl.sync reads lane {j}, which is not executing it (undefined in PTX)"),
            ));
        }
        results.push((l, values[j], pval));
    }
    for (l, v, p) in results {
        match &ops[0] {
            Operand::PredPair(d, e) => {
                warp.set_reg(*d, l, v);
                warp.set_reg(*e, l, u64::from(p));
            }
            d => write(warp, d, l, v),
        }
    }
    Ok(())
}

/// `ldmatrix` / `stmatrix` `.m8n8.x{1,2,4}[.trans].shared.b16`: lanes 8i..8i+7 give the row
/// addresses of matrix i; lane t holds row t/4, columns 2(t%4) and 2(t%4)+1 of each matrix
/// (transposed: column t/4, rows 2(t%4) and 2(t%4)+1).
/// What an `ldmatrix`/`stmatrix` moves.
struct Matrices {
    num: usize,
    trans: bool,
    space: Space,
    load: bool,
}

fn matrix_8x8(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    shape: Matrices,
) -> Result<(), EmuError> {
    let Matrices {
        num,
        trans,
        space,
        load,
    } = shape;
    full_warp(ctx, warp, inst, exec)?;
    let (data, addr) = if load {
        (&inst.operands[0], &inst.operands[1])
    } else {
        (&inst.operands[1], &inst.operands[0])
    };
    let (Operand::Vector(regs), Operand::Addr(a)) = (data, addr) else {
        return Err(ctx.unsupported(inst));
    };
    if regs.len() != num {
        return Err(ctx.unsupported(inst));
    }
    // Row addresses: matrix i, row r from lane 8i + r.
    let mut rows = vec![[0u64; 8]; num];
    for (i, m) in rows.iter_mut().enumerate() {
        for (r, row) in m.iter_mut().enumerate() {
            let lane = 8 * i + r;
            let address = ctx.address(warp, a, lane);
            if !address.is_multiple_of(16) {
                return Err(ctx.memory_fault(
                    inst,
                    warp.first_thread,
                    lane,
                    address,
                    "ldmatrix/stmatrix row address not 16-byte aligned".into(),
                ));
            }
            *row = match ctx.place(space, address, a.base) {
                Ok(Place::Shared(s)) => s,
                _ => {
                    return Err(ctx.memory_fault(
                        inst,
                        warp.first_thread,
                        lane,
                        address,
                        "ldmatrix/stmatrix needs a shared-memory address".into(),
                    ));
                }
            };
        }
    }
    // Each matrix is one phase of eight 16-byte rows: one wavefront when they fall in distinct
    // banks, more when rows share banks (as for other shared accesses, [`wavefronts`]).
    ctx.counters.shared_requests += 1;
    for m in &rows {
        let mut addresses = m.to_vec();
        ctx.counters.shared_wavefronts += wavefronts(&mut addresses, 16);
    }
    for (i, reg) in regs.iter().enumerate() {
        for lane in 0..WARP {
            let (r0, c0) = (lane / 4, 2 * (lane % 4));
            let at = |k: usize| -> (u64, u64) {
                // (row address, byte offset) of element k (0 or 1) held by this lane.
                if trans {
                    (rows[i][c0 + k], 2 * r0 as u64)
                } else {
                    (rows[i][r0], 2 * (c0 + k) as u64)
                }
            };
            let first_thread = warp.first_thread;
            let fault =
                |ctx: &CtaContext, m: String| ctx.memory_fault(inst, first_thread, lane, 0, m);
            if load {
                let mut v = 0u64;
                for k in 0..2 {
                    let (row, off) = at(k);
                    let e = ctx
                        .load(warp, lane, Place::Shared(row + off), 2)
                        .map_err(|m| fault(ctx, m))?;
                    v |= e << (16 * k);
                }
                write(warp, reg, lane, v);
            } else {
                let v = ctx.read(warp, reg, lane, Ty::B32);
                for k in 0..2 {
                    let (row, off) = at(k);
                    ctx.store(
                        warp,
                        lane,
                        Place::Shared(row + off),
                        2,
                        (v >> (16 * k)) & 0xffff,
                    )
                    .map_err(|m| fault(ctx, m))?;
                }
            }
        }
    }
    Ok(())
}
