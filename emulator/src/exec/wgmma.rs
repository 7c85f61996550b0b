//! Warpgroup MMAs: `wgmma.mma_async.sync.aligned.m64nNkK.dtype.atype.btype` (PTX ISA 9.7.15),
//! with `wgmma.fence` / `commit_group` / `wait_group`.
//!
//! - A warpgroup is 4 consecutive warps (warp index / 4); all 128 threads must issue each
//!   wgmma (every warp with all 32 lanes).
//! - **Deferred execution**: at issue, each warp deposits its part (descriptors, register A
//!   fragment, the accumulator's input registers, scale-d); the MMA is computed once, when a
//!   warp's `wgmma.wait_group` retires its group and all four warps have issued it, reading
//!   shared memory at that time; each warp's D registers are written at its own wait. A warp
//!   that waits for an MMA the rest of its warpgroup has not issued yet stays at the wait and
//!   yields (a failed poll). Back-to-back wgmmas on the same accumulator registers before a wait
//!   chain: the later one's input is the earlier one's result (what the hardware does); a
//!   wgmma whose D registers partly overlap a pending one's is an error. Checked at issue: the
//!   full warp, a whole warpgroup in the CTA, the operand shapes, descriptors and scale-d uniform
//!   over the warp and the same instruction from every warp; an error of the deferred
//!   computation (descriptors differing between the warps, an address outside shared memory)
//!   names the wgmma's line.
//! - Layouts (PTX ISA 9.7.15.5.1): D (and C): register i of lane l of warp w holds row
//!   `16w + l/4 + 8·((i/2) mod 2)`, column `8·(i/4) + 2·(l mod 4) + (i mod 2)` (mma.sync's
//!   m16n8 C fragment repeated over N/8; f16 D packs elements 2j, 2j+1 in register j). Register
//!   A: per warp, mma.sync's m16nKk A fragment for rows 16w..16w+15.
//! - Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address
//!   bits 0–13, leading byte offset (LBO) bits 16–29, stride byte offset (SBO) bits 32–45, all
//!   `(x & 0x3FFFF) >> 4`; base offset bits 49–51; swizzle bits 62–63 (0 none, 1 128B, 2 64B,
//!   3 32B). Canonical layouts (PTX ISA "Shared Memory Matrix Layout", CuTe notation, T = 16 bytes
//!   / element size, W = swizzle bytes / 16, in elements):
//!   K-major none `((8,m),(T,2k)):((T,SBO),(1,LBO))`; K-major swizzled
//!   `((8,m),(T,2k)):((W·T,SBO),(1,T))`; MN-major none `((T,1,m),(8,k)):((1,T,SBO),(T,LBO))`;
//!   MN-major swizzled `((T,W,m),(8,k)):((1,T,LBO),(W·T,SBO))`; the swizzle
//!   (`Swizzle<log2 W,4,3>`, [`crate::tensor_map::swizzle_offset`]) applies to the shared-memory
//!   address, so the pattern is anchored at 256/512/1024-byte boundaries. A non-zero base
//!   offset is not implemented (an error).
//! - Numerics: products are exact; FP8 sums go through the launch's accumulator model per
//!   32-deep k-step (as mma.sync in [`super::mma`]); f16/bf16/tf32 add in f32 in k order; an f16
//!   D is rounded to f16. `imm-scale-a/b = -1` negates A/B; `scale-d` false ignores the input
//!   D; `imm-trans-a/b = 1` (16-bit types, descriptor operands) reads MN-major.

use super::access::Place;
use super::context::CtaContext;
use super::float::{f16_value, to_f16_bits};
use super::hopper::{AsyncGroups, Done, group_count, operand};
use super::mma::{elem_bytes, elem_value, element};
use super::operand::write;
use super::warp::full_warp;
use super::warp::{WARP, Warp};
use crate::error::EmuError;
use crate::ptx::decode_hopper::HopperOp;
use crate::ptx::{Inst, Operand, Ty};
use crate::tensor_map::{Swizzle, swizzle_offset};

/// The accumulator input of one warp's part of an MMA.
#[derive(Debug, Clone)]
enum DIn {
    /// Register values at issue (lane-major: `lane * regs + i`).
    Values(Vec<u64>),
    /// The result of an earlier MMA on the same registers.
    Chain(usize),
}

/// One warp's part of an MMA.
#[derive(Debug, Clone)]
struct Deposit {
    a_desc: u64,
    b_desc: u64,
    /// Register A fragments, lane-major (4 per lane).
    a_regs: Option<Vec<u64>>,
    d_in: DIn,
    d_regs: Vec<u32>,
    scale_d: bool,
}

/// The operation's shape, types and immediates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spec {
    n: usize,
    k: usize,
    d: Ty,
    a: Ty,
    b: Ty,
    a_in_regs: bool,
    neg_a: bool,
    neg_b: bool,
    trans_a: bool,
    trans_b: bool,
}

/// One MMA of a warpgroup.
#[derive(Debug)]
struct Mma {
    pc: u32,
    spec: Spec,
    parts: [Option<Deposit>; 4],
    /// 64 × N, row-major.
    result: Option<Vec<f32>>,
    /// Warps that have written their D back.
    written: u8,
    /// Later MMAs whose input is this one's result, not yet computed.
    refs: u32,
}

/// A warpgroup's MMAs in issue order.
#[derive(Debug, Default)]
pub(crate) struct WarpgroupWgmma {
    mmas: Vec<Mma>,
    /// MMAs computed so far (all earlier ones are computed).
    computed: usize,
}

/// One warp's view: its issued MMAs, commit groups and pending accumulators.
#[derive(Debug, Default)]
pub(crate) struct WarpWgmma {
    issued: usize,
    /// Its MMAs (indices into the warpgroup's) in commit groups.
    groups: AsyncGroups<usize>,
    /// MMAs not yet written back (their D registers are in their deposits).
    pending: Vec<usize>,
}

/// (row, column) of accumulator element `i` of `lane` in warp `w` of the warpgroup.
fn d_position(w: usize, lane: usize, i: usize) -> (usize, usize) {
    (
        16 * w + lane / 4 + 8 * ((i / 2) % 2),
        8 * (i / 4) + 2 * (lane % 4) + (i % 2),
    )
}

/// (row, column) of register-A element `i` of `lane` in warp `w` for K = `k` and `esize`-byte
/// elements.
fn a_position(w: usize, lane: usize, i: usize, k: usize, esize: usize) -> (usize, usize) {
    let e = 4 / esize;
    let (g, tig) = (lane / 4, lane % 4);
    (
        16 * w + g + 8 * ((i / e) & 1),
        tig * e + i % e + (k / 2) * (i / (2 * e)),
    )
}

/// A shared-memory matrix descriptor, decoded (once per MMA operand).
#[derive(Debug, Clone, Copy)]
struct Descriptor {
    start: u64,
    lbo: usize,
    sbo: usize,
    swizzle: Swizzle,
}

impl Descriptor {
    /// Decodes `desc`, or says why it cannot be used.
    fn decode(desc: u64) -> Result<Descriptor, String> {
        let field = |shift: u32| ((desc >> shift) & 0x3fff) << 4;
        let base_offset = (desc >> 49) & 7;
        if base_offset != 0 {
            return Err(format!(
                "matrix descriptor {desc:#x}: a non-zero base offset ({base_offset}) is not implemented"
            ));
        }
        Ok(Descriptor {
            start: field(0),
            lbo: field(16) as usize,
            sbo: field(32) as usize,
            swizzle: match desc >> 62 {
                0 => Swizzle::None,
                1 => Swizzle::B128,
                2 => Swizzle::B64,
                _ => Swizzle::B32,
            },
        })
    }

    /// The shared-memory byte address of element (`mn`, `kk`) of `esize`-byte elements
    /// (`mn_major`: transposed).
    fn address(&self, mn: usize, kk: usize, esize: usize, mn_major: bool) -> u64 {
        let (lbo, sbo) = (self.lbo, self.sbo);
        let t = 16 / esize;
        let w = self.swizzle.span_bytes() as usize / 16;
        let off = match (mn_major, w) {
            (false, 0) => (mn % 8) * 16 + (mn / 8) * sbo + (kk / t) * lbo + (kk % t) * esize,
            (false, w) => (mn % 8) * 16 * w + (mn / 8) * sbo + kk * esize,
            (true, 0) => (mn % t) * esize + (mn / t) * sbo + (kk % 8) * 16 + (kk / 8) * lbo,
            (true, w) => {
                (mn % (w * t)) * esize + (mn / (w * t)) * lbo + (kk % 8) * 16 * w + (kk / 8) * sbo
            }
        };
        swizzle_offset(self.start + off as u64, self.swizzle)
    }
}

fn spec_of(ctx: &CtaContext, inst: &Inst, op: &HopperOp) -> Result<Spec, EmuError> {
    let HopperOp::Wgmma { n, k, d, a, b } = *op else {
        return Err(ctx.unsupported(inst));
    };
    let fp8 = |t: Ty| matches!(t, Ty::E4m3 | Ty::E5m2);
    let k_ok = match a {
        Ty::F16 | Ty::Bf16 => b == a && k == 16,
        Ty::Tf32 => b == a && k == 8,
        Ty::E4m3 | Ty::E5m2 => fp8(b) && k == 32,
        _ => false,
    };
    let d_ok = d == Ty::F32 || (d == Ty::F16 && matches!(a, Ty::F16 | Ty::E4m3 | Ty::E5m2));
    if !k_ok || !d_ok || n == 0 || n > 256 || n % 8 != 0 {
        return Err(ctx.unsupported(inst));
    }
    let a_in_regs = matches!(operand(inst, 1), Operand::Vector(_));
    let sixteen = matches!(a, Ty::F16 | Ty::Bf16);
    let imms = inst
        .operands
        .len()
        .checked_sub(4)
        .ok_or_else(|| ctx.unsupported(inst))?;
    let want = 2 + if sixteen {
        if a_in_regs { 1 } else { 2 }
    } else {
        0
    };
    if imms != want {
        return Err(ctx.unsupported(inst));
    }
    let imm = |i: usize, allowed: &[i64]| -> Result<i64, EmuError> {
        match operand(inst, i) {
            Operand::Imm(v) if allowed.contains(v) => Ok(*v),
            _ => Err(ctx.unsupported(inst)),
        }
    };
    let neg_a = imm(4, &[1, -1])? == -1;
    let neg_b = imm(5, &[1, -1])? == -1;
    let (trans_a, trans_b) = match (sixteen, a_in_regs) {
        (true, false) => (imm(6, &[0, 1])? == 1, imm(7, &[0, 1])? == 1),
        (true, true) => (false, imm(6, &[0, 1])? == 1),
        _ => (false, false),
    };
    Ok(Spec {
        n: n as usize,
        k: k as usize,
        d,
        a,
        b,
        a_in_regs,
        neg_a,
        neg_b,
        trans_a,
        trans_b,
    })
}

fn uniform(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    o: &Operand,
    what: &str,
) -> Result<u64, EmuError> {
    let v0 = ctx.read(warp, o, 0, Ty::B64);
    for l in 1..WARP {
        if ctx.read(warp, o, l, Ty::B64) != v0 {
            return Err(ctx.fault(
                inst,
                warp.first_thread,
                l,
                format!("wgmma: {what} differs between the lanes of the warp"),
            ));
        }
    }
    Ok(v0)
}

fn warpgroup_of(
    ctx: &mut CtaContext,
    warp: &Warp,
    inst: &Inst,
) -> Result<(usize, usize), EmuError> {
    let threads: u32 = ctx.launch.config.block.iter().product();
    let g = (warp.index / 4) as usize;
    if (g as u32 + 1) * 128 > threads {
        return Err(ctx.fault(inst, warp.first_thread, 0, format!("wgmma needs a whole warpgroup of 128 threads; warpgroup {g} of this {threads}-thread CTA is partial")));
    }
    let nwarps = threads.div_ceil(32) as usize;
    let h = &mut ctx.hopper;
    if h.warps.len() < nwarps {
        h.warps.resize_with(nwarps, WarpWgmma::default);
        h.warpgroups
            .resize_with(nwarps.div_ceil(4), WarpgroupWgmma::default);
    }
    Ok((g, (warp.index % 4) as usize))
}

/// `wgmma.mma_async`: deposits this warp's part.
pub(crate) fn issue(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    pc: u32,
    exec: u32,
    op: &HopperOp,
) -> Result<Done, EmuError> {
    full_warp(ctx, warp, inst, exec)?;
    let spec = spec_of(ctx, inst, op)?;
    let (g, wi) = warpgroup_of(ctx, warp, inst)?;
    let nd = if spec.d == Ty::F32 {
        spec.n / 2
    } else {
        spec.n / 4
    };
    let Operand::Vector(ds) = operand(inst, 0) else {
        return Err(ctx.unsupported(inst));
    };
    let d_regs: Vec<u32> = ds
        .iter()
        .map(|o| match o {
            Operand::Reg(r) => Some(*r),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ctx.unsupported(inst))?;
    if d_regs.len() != nd {
        return Err(ctx.unsupported(inst));
    }
    // A: registers (`spec.a_in_regs`) or a descriptor.
    let (a_regs, a_desc) = match operand(inst, 1) {
        Operand::Vector(items) if items.len() == 4 => {
            let regs = (0..WARP)
                .flat_map(|l| items.iter().map(move |o| (l, o)))
                .map(|(l, o)| ctx.read(warp, o, l, Ty::B32))
                .collect();
            (Some(regs), 0)
        }
        Operand::Vector(_) => return Err(ctx.unsupported(inst)),
        o => (None, uniform(ctx, warp, inst, o, "the A descriptor")?),
    };
    let b_desc = uniform(ctx, warp, inst, operand(inst, 2), "the B descriptor")?;
    let scale_d = match operand(inst, 3) {
        Operand::Imm(v) => *v != 0,
        o @ (Operand::Reg(_) | Operand::NotReg(_)) => {
            uniform(ctx, warp, inst, o, "scale-d")? & 1 == 1
        }
        _ => return Err(ctx.unsupported(inst)),
    };
    let ws = &ctx.hopper.warps[warp.index as usize];
    let mut d_in = None;
    for &idx in ws.pending.iter().rev() {
        let regs = &ctx.hopper.warpgroups[g].mmas[idx].parts[wi]
            .as_ref()
            .expect("a pending MMA keeps this warp's deposit")
            .d_regs;
        if *regs == d_regs {
            d_in = Some(DIn::Chain(idx));
            break;
        }
        if regs.iter().any(|r| d_regs.contains(r)) {
            return Err(ctx.fault(inst, warp.first_thread, 0, "wgmma: the accumulator registers partly overlap those of a wgmma not yet waited for".into()));
        }
    }
    let d_in = match d_in {
        Some(c) => c,
        None => DIn::Values(
            (0..WARP)
                .flat_map(|l| d_regs.iter().map(move |r| (l, *r)))
                .map(|(l, r)| warp.reg(r, l))
                .collect(),
        ),
    };
    let h = &mut ctx.hopper;
    let ws = &mut h.warps[warp.index as usize];
    let idx = ws.issued;
    ws.issued += 1;
    ws.groups.push(idx);
    ws.pending.push(idx);
    let wg = &mut h.warpgroups[g];
    if wg.mmas.len() <= idx {
        wg.mmas.push(Mma {
            pc,
            spec,
            parts: [None, None, None, None],
            result: None,
            written: 0,
            refs: 0,
        });
    }
    let m = &mut wg.mmas[idx];
    if m.pc != pc || m.spec != spec {
        let line = ctx.launch.kernel.insts[m.pc as usize].line;
        return Err(ctx.fault(inst, warp.first_thread, 0, format!("wgmma: the warps of warpgroup {g} issued different wgmma instructions as their wgmma #{idx} (this one and PTX line {line})")));
    }
    if let DIn::Chain(j) = d_in {
        wg.mmas[j].refs += 1;
    }
    wg.mmas[idx].parts[wi] = Some(Deposit {
        a_desc,
        b_desc,
        a_regs,
        d_in,
        d_regs,
        scale_d,
    });
    h.version += 1;
    Ok(Done::Next)
}

/// `wgmma.commit_group`.
pub(crate) fn commit(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
) -> Result<Done, EmuError> {
    full_warp(ctx, warp, inst, exec)?;
    warpgroup_of(ctx, warp, inst)?;
    ctx.hopper.warps[warp.index as usize].groups.commit();
    Ok(Done::Next)
}

/// `wgmma.wait_group N`.
pub(crate) fn wait(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
) -> Result<Done, EmuError> {
    full_warp(ctx, warp, inst, exec)?;
    let (g, wi) = warpgroup_of(ctx, warp, inst)?;
    let n = group_count(ctx, inst)?;
    let w = warp.index as usize;
    while let Some(group) = ctx.hopper.warps[w].groups.oldest_beyond(n) {
        if let Some(&last) = group.iter().max() {
            if ctx.hopper.warpgroups[g].mmas[last]
                .parts
                .iter()
                .any(Option::is_none)
            {
                return Ok(Done::Stay);
            }
            let group = group.to_vec();
            compute_through(ctx, warp, g, last)?;
            for idx in group {
                write_back(ctx, warp, g, wi, idx);
            }
            ctx.hopper.version += 1;
        }
        ctx.hopper.warps[w].groups.retire_beyond(n);
    }
    Ok(Done::Next)
}

fn write_back(ctx: &mut CtaContext, warp: &mut Warp, g: usize, wi: usize, idx: usize) {
    let h = &mut ctx.hopper;
    let m = &mut h.warpgroups[g].mmas[idx];
    let spec = m.spec;
    let d_regs = &m.parts[wi].as_ref().expect("issued by this warp").d_regs;
    let res = m.result.as_ref().expect("computed");
    let at = |l: usize, i: usize| {
        let (r, c) = d_position(wi, l, i);
        res[r * spec.n + c]
    };
    for l in 0..WARP {
        for (j, &reg) in d_regs.iter().enumerate() {
            let v = if spec.d == Ty::F32 {
                u64::from(at(l, j).to_bits())
            } else {
                u64::from(to_f16_bits(f64::from(at(l, 2 * j))))
                    | u64::from(to_f16_bits(f64::from(at(l, 2 * j + 1)))) << 16
            };
            write(warp, &Operand::Reg(reg), l, v);
        }
    }
    m.written += 1;
    if m.written == 4 {
        m.parts = [None, None, None, None];
        if m.refs == 0 {
            m.result = None;
        }
    }
    h.warps[warp.index as usize].pending.retain(|&i| i != idx);
}

/// Computes every not yet computed MMA of warpgroup `g` up to `last`, in issue order.
fn compute_through(
    ctx: &mut CtaContext,
    warp: &Warp,
    g: usize,
    last: usize,
) -> Result<(), EmuError> {
    while ctx.hopper.warpgroups[g].computed <= last {
        let idx = ctx.hopper.warpgroups[g].computed;
        let result = compute(ctx, warp, g, idx).map_err(|m| {
            let pc = ctx.hopper.warpgroups[g].mmas[idx].pc;
            ctx.fault(
                &ctx.launch.kernel.insts[pc as usize],
                warp.first_thread,
                0,
                m,
            )
        })?;
        let wg = &mut ctx.hopper.warpgroups[g];
        for wi in 0..4 {
            let chained = match &wg.mmas[idx].parts[wi] {
                Some(Deposit {
                    d_in: DIn::Chain(j),
                    ..
                }) => Some(*j),
                _ => None,
            };
            if let Some(j) = chained {
                let mj = &mut wg.mmas[j];
                mj.refs -= 1;
                if mj.refs == 0 && mj.written == 4 {
                    mj.result = None;
                }
            }
        }
        wg.mmas[idx].result = Some(result);
        wg.computed += 1;
        ctx.counters.shared_requests += 1;
    }
    Ok(())
}

fn compute(ctx: &CtaContext, warp: &Warp, g: usize, idx: usize) -> Result<Vec<f32>, String> {
    let wg = &ctx.hopper.warpgroups[g];
    let m = &wg.mmas[idx];
    let s = m.spec;
    let parts: Vec<&Deposit> = m
        .parts
        .iter()
        .map(|p| p.as_ref().expect("all issued"))
        .collect();
    let p0 = parts[0];
    for p in &parts[1..] {
        if p.a_desc != p0.a_desc || p.b_desc != p0.b_desc || p.scale_d != p0.scale_d {
            return Err(
                "wgmma: descriptors or scale-d differ between the warps of the warpgroup".into(),
            );
        }
    }
    let (n, k) = (s.n, s.k);
    // Accumulator input.
    let mut c = vec![0f32; 64 * n];
    if p0.scale_d {
        for (wi, p) in parts.iter().enumerate() {
            match &p.d_in {
                DIn::Chain(j) => {
                    let r = wg.mmas[*j]
                        .result
                        .as_ref()
                        .ok_or("wgmma: chained result missing")?;
                    c[16 * wi * n..16 * (wi + 1) * n]
                        .copy_from_slice(&r[16 * wi * n..16 * (wi + 1) * n]);
                }
                DIn::Values(v) => {
                    let nd = p.d_regs.len();
                    for l in 0..WARP {
                        for j in 0..nd {
                            let bits = v[l * nd + j];
                            if s.d == Ty::F32 {
                                let (r, col) = d_position(wi, l, j);
                                c[r * n + col] = f32::from_bits(bits as u32);
                            } else {
                                for h in 0..2 {
                                    let (r, col) = d_position(wi, l, 2 * j + h);
                                    c[r * n + col] = f16_value((bits >> (16 * h)) & 0xffff) as f32;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let ea = elem_bytes(s.a).expect("validated by spec_of");
    let eb = elem_bytes(s.b).expect("validated by spec_of");
    let read = |addr: u64, bytes: usize| -> Result<u32, String> {
        ctx.load(warp, 0, Place::Shared(addr), bytes as u32)
            .map(|v| v as u32)
            .map_err(|m| format!("wgmma reads shared offset {addr:#x}: {m}"))
    };
    let sign = |neg: bool| if neg { -1.0 } else { 1.0 };
    let (sign_a, sign_b) = (sign(s.neg_a), sign(s.neg_b));
    let mut a = vec![0f64; 64 * k];
    if s.a_in_regs {
        for (wi, p) in parts.iter().enumerate() {
            let regs = p.a_regs.as_ref().ok_or("wgmma: register A missing")?;
            for l in 0..WARP {
                for i in 0..(16 * k / WARP) {
                    let bits = element(&regs[l * 4..l * 4 + 4], i, ea);
                    let (row, col) = a_position(wi, l, i, k, ea);
                    a[row * k + col] = elem_value(s.a, bits) * sign_a;
                }
            }
        }
    } else {
        let desc = Descriptor::decode(p0.a_desc)?;
        for row in 0..64 {
            for kk in 0..k {
                let addr = desc.address(row, kk, ea, s.trans_a);
                a[row * k + kk] = elem_value(s.a, read(addr, ea)?) * sign_a;
            }
        }
    }
    let desc = Descriptor::decode(p0.b_desc)?;
    let mut b = vec![0f64; n * k];
    for col in 0..n {
        for kk in 0..k {
            let addr = desc.address(col, kk, eb, s.trans_b);
            b[col * k + kk] = elem_value(s.b, read(addr, eb)?) * sign_b;
        }
    }
    let fp8 = matches!(s.a, Ty::E4m3 | Ty::E5m2);
    let accumulator = ctx.launch.options.accumulator;
    let mut out = vec![0f32; 64 * n];
    let mut products = Vec::with_capacity(k);
    for row in 0..64 {
        for col in 0..n {
            products.clear();
            // Products of FP8, f16, bf16 and tf32 values are exact in f32.
            products.extend((0..k).map(|kk| (a[row * k + kk] * b[col * k + kk]) as f32));
            let acc = c[row * n + col];
            let mut v = if fp8 {
                products
                    .chunks(32)
                    .fold(acc, |s, ch| accumulator.mma(s, ch))
            } else {
                products.iter().fold(acc, |s, &p| s + p)
            };
            if s.d == Ty::F16 {
                v = f16_value(u64::from(to_f16_bits(f64::from(v)))) as f32;
            }
            out[row * n + col] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc_address(
        desc: u64,
        mn: usize,
        kk: usize,
        esize: usize,
        mn_major: bool,
    ) -> Result<u64, String> {
        Descriptor::decode(desc).map(|d| d.address(mn, kk, esize, mn_major))
    }

    #[test]
    fn descriptor_addresses_follow_the_canonical_layouts() {
        // K-major, no swizzle, tf32 (PTX ISA example): ((8,2),(4,4)):((4,32),(1,64)) elements,
        // LBO = 64·4 bytes, SBO = 32·4 bytes.
        let desc = (256u64 >> 4) << 16 | (128u64 >> 4) << 32;
        for (mn, kk) in [(0, 0), (3, 2), (9, 5), (15, 15)] {
            let want = 4 * ((mn % 8) * 4 + (mn / 8) * 32 + (kk % 4) + (kk / 4) * 64);
            assert_eq!(desc_address(desc, mn, kk, 4, false).unwrap(), want as u64);
        }
        // MN-major, 32B swizzle, bf16 (PTX ISA example): ((8,2,2),(8,2)):((1,8,128),(16,256)),
        // then Swizzle<1,4,3> on the byte address.
        let desc = 3u64 << 62 | (256u64 >> 4) << 16 | (512u64 >> 4) << 32;
        for (mn, kk) in [(0, 0), (9, 1), (17, 9), (31, 15)] {
            let e =
                (mn % 8) + 8 * ((mn / 8) % 2) + 128 * (mn / 16) + 16 * (kk % 8) + 256 * (kk / 8);
            let want = swizzle_offset(2 * e as u64, Swizzle::B32);
            assert_eq!(desc_address(desc, mn, kk, 2, true).unwrap(), want);
        }
        let e = desc_address(1 << 49, 0, 0, 2, false).unwrap_err();
        assert!(
            e.contains("a non-zero base offset (1) is not implemented"),
            "{e}"
        );
    }
}
