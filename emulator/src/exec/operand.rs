//! Reading and writing operands: registers, immediates (floats converted to the
//! instruction's type), special registers and variable addresses.

use super::context::CtaContext;
use super::warp::Warp;
use crate::ptx::lex::FloatLit;
use crate::ptx::{AddrBase, Operand, Special, Ty};

/// Masks `v` to `bits` (64 and above unchanged).
#[inline(always)]
pub fn mask_bits(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// Sign-extends the low `bits` of `v`.
#[inline(always)]
pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// The bits of a float literal as type `ty`.
fn float_bits(f: FloatLit, ty: Ty) -> u64 {
    let value = match f {
        FloatLit::F32Bits(b) if ty != Ty::F64 => return u64::from(b),
        FloatLit::F64Bits(b) if ty == Ty::F64 => return b,
        FloatLit::F32Bits(b) => f64::from(f32::from_bits(b)),
        FloatLit::F64Bits(b) => f64::from_bits(b),
        FloatLit::Decimal(v) => v,
    };
    match ty {
        Ty::F64 => value.to_bits(),
        Ty::Bf16 => u64::from(super::float::to_bf16_bits(value)),
        Ty::F16 => u64::from(super::float::to_f16_bits(value)),
        _ => u64::from((value as f32).to_bits()),
    }
}

impl CtaContext<'_> {
    /// The value of a special register for `lane` of `warp`.
    pub fn special(&self, warp: &Warp, s: Special, lane: usize) -> u64 {
        let config = self.launch.config;
        let thread = self.thread(warp.first_thread, lane);
        let d = |v: [u32; 3], i: u8| u64::from(v[i as usize]);
        let cluster = config.cluster;
        match s {
            Special::Tid(i) => d(thread.tid, i),
            Special::Ntid(i) => d(config.block, i),
            Special::Ctaid(i) => d(self.cta, i),
            Special::Nctaid(i) => d(config.grid, i),
            Special::Laneid => lane as u64,
            Special::Warpid => u64::from(warp.index),
            Special::Nwarpid => u64::from((config.block.iter().product::<u32>()).div_ceil(32)),
            Special::Smid => 0,
            Special::Nsmid => 132,
            Special::Lanemask(k) => {
                let l = lane as u32;
                u64::from(match k {
                    0 => 1u32 << l,
                    1 => (1u32 << l) - 1,
                    2 => ((1u64 << (l + 1)) - 1) as u32,
                    3 => !(((1u64 << (l + 1)) - 1) as u32),
                    _ => !((1u32 << l) - 1),
                })
            }
            Special::Clock => self.counters.threads,
            Special::DynamicSmemSize => u64::from(config.dynamic_shared_bytes),
            Special::TotalSmemSize => self.shared.len() as u64,
            Special::ClusterCtarank => {
                let r = |i: usize| self.cta[i] % cluster[i];
                u64::from(r(0) + cluster[0] * (r(1) + cluster[1] * r(2)))
            }
            Special::ClusterNctarank => u64::from(cluster.iter().product::<u32>()),
            Special::ClusterCtaid(i) => u64::from(self.cta[i as usize] % cluster[i as usize]),
            Special::ClusterNctaid(i) => d(cluster, i),
            Special::Clusterid(i) => u64::from(self.cta[i as usize] / cluster[i as usize]),
            Special::Nclusterid(i) => {
                u64::from(config.grid[i as usize].div_ceil(cluster[i as usize]))
            }
            Special::IsExplicitCluster => u64::from(cluster != [1, 1, 1]),
            Special::Gridid => 0,
        }
    }

    /// The address of a variable base (in its own state space).
    pub fn base_address(&self, base: AddrBase, warp: &Warp, lane: usize) -> u64 {
        match base {
            AddrBase::Reg(r) => warp.reg(r, lane),
            AddrBase::Var(_, offset) => offset,
            AddrBase::Global(i) => self.launch.globals.get(i as usize).copied().unwrap_or(0),
            AddrBase::DynamicShared => self.launch.kernel.dynamic_shared_offset,
            AddrBase::Abs => 0,
        }
    }

    /// The value of source operand `o` for `lane`, as type `ty` (which only matters for float
    /// immediates).
    #[inline(always)]
    pub fn read(&self, warp: &Warp, o: &Operand, lane: usize, ty: Ty) -> u64 {
        match o {
            Operand::Reg(r) => warp.reg(*r, lane),
            Operand::Imm(i) => *i as u64,
            Operand::NotReg(r) => u64::from(warp.reg(*r, lane) & 1 == 0),
            Operand::Float(f) => float_bits(*f, ty),
            Operand::Special(s) => self.special(warp, *s, lane),
            Operand::VarAddr(base) => self.base_address(*base, warp, lane),
            _ => 0,
        }
    }
}

/// Writes `v` to destination operand `o` of `lane` (a sink or a non-register is ignored).
#[inline(always)]
pub fn write(warp: &mut Warp, o: &Operand, lane: usize, v: u64) {
    if let Operand::Reg(r) = o {
        warp.set_reg(*r, lane, v);
    }
}
