//! `mbarrier` objects in shared memory (PTX ISA 9.7.13.15).
//!
//! The whole state lives in the 8 bytes of the object, so a kernel that copies or inspects
//! it sees it change. The emulator's encoding of the little-endian 64-bit word:
//!
//! | bits  | field |
//! |-------|-------|
//! | 0–19  | pending arrival count of the current phase |
//! | 20–39 | expected arrival count (0: not initialized, or invalidated) |
//! | 40–60 | tx-count, 21-bit two's complement (−(2^20−1) ..= 2^20−1) |
//! | 61–62 | zero |
//! | 63    | parity of the current phase |
//!
//! The state token `mbarrier.arrive` returns is the word before the arrival; `test_wait` /
//! `try_wait` with a token report whether the phase recorded in it (bit 63) has completed,
//! i.e. the current parity differs. With `.parity`, they report whether the phase of that
//! parity has completed: the current phase is incomplete, so the answer is
//! `phaseParity != current parity` (valid only for the current and the preceding phase).
//!
//! A phase completes when the pending count and the tx-count are both zero; the pending count is
//! then reloaded with the expected count and the parity flips (PTX ISA 9.7.13.15.6).
//!
//! Asynchronous loads signal their `complete_tx` late: a `test_wait`/`try_wait` first lands every
//! pending load that signals the polled mbarrier (`async_copy::land_for`), so the bytes
//! of a load count from the first poll after its issue on. A poll false for every lane is a
//! failed poll (the warp yields). `mbarrier.init` ends the warp's turn.
//!
//! Errors, not guesses: an uninitialized object, more arrivals than pending, counts out of
//! range, `.noComplete` arrivals that complete the phase, and `mbarrier.init` of a
//! 0 or ≥ 2^20 count.

use super::async_copy::Origin;
use super::cluster::Delivery;
use super::context::CtaContext;
use super::hopper::{Done, cluster_operand, operand, shared_operand};
use super::operand::write;
use super::warp::{Warp, lanes};
use crate::error::EmuError;
use crate::ptx::{Inst, Space, Ty};

const MAX_COUNT: u32 = (1 << 20) - 1;

/// The decoded state of an mbarrier object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mbar {
    /// Pending arrivals of the current phase.
    pub pending: u32,
    /// Expected arrivals per phase.
    pub expected: u32,
    /// Outstanding transaction bytes.
    pub tx: i32,
    /// Parity of the current phase.
    pub phase: bool,
}

impl Mbar {
    /// Decodes the 64-bit word.
    pub fn decode(w: u64) -> Mbar {
        let tx = ((w >> 40) & 0x1f_ffff) as i32;
        Mbar {
            pending: (w & 0xf_ffff) as u32,
            expected: ((w >> 20) & 0xf_ffff) as u32,
            tx: (tx << 11) >> 11,
            phase: w >> 63 == 1,
        }
    }

    /// Encodes into the 64-bit word.
    pub fn encode(&self) -> u64 {
        u64::from(self.pending & 0xf_ffff)
            | u64::from(self.expected & 0xf_ffff) << 20
            | ((self.tx as u32 as u64) & 0x1f_ffff) << 40
            | u64::from(self.phase) << 63
    }

    /// Completes the phase if nothing is pending; returns whether it did.
    fn maybe_complete(&mut self) -> bool {
        if self.pending == 0 && self.tx == 0 {
            self.pending = self.expected;
            self.phase = !self.phase;
            true
        } else {
            false
        }
    }
}

/// The raw word at shared offset `off` (8-byte aligned, in bounds).
fn load_word(ctx: &CtaContext, off: u64) -> Result<u64, String> {
    let o = off as usize;
    if !off.is_multiple_of(8) || o + 8 > ctx.shared.len() {
        return Err(format!(
            "mbarrier object at shared offset {off:#x} is misaligned or outside the {} bytes of shared memory",
            ctx.shared.len()
        ));
    }
    Ok(u64::from_le_bytes(
        ctx.shared[o..o + 8].try_into().expect("8 bytes"),
    ))
}

fn store_word(ctx: &mut CtaContext, off: u64, w: u64) {
    let o = off as usize;
    ctx.shared[o..o + 8].copy_from_slice(&w.to_le_bytes());
    ctx.hopper.version += 1;
}

/// The initialized mbarrier at `off`.
fn load(ctx: &CtaContext, off: u64) -> Result<Mbar, String> {
    let m = Mbar::decode(load_word(ctx, off)?);
    if m.expected == 0 {
        return Err(format!(
            "no initialized mbarrier object at shared offset {off:#x} (mbarrier.init it first)"
        ));
    }
    Ok(m)
}

/// Signals `bytes` completed transactions on the mbarrier at `off` (the `complete_tx` of an
/// asynchronous copy).
pub(crate) fn complete_tx(ctx: &mut CtaContext, off: u64, bytes: u64) -> Result<(), String> {
    add_tx(ctx, off, -(bytes as i64))
}

/// Adds `delta` to the tx-count of the mbarrier at `off` (`expect_tx`: positive,
/// `complete_tx`: negative), completing the phase if nothing is left pending.
fn add_tx(ctx: &mut CtaContext, off: u64, delta: i64) -> Result<(), String> {
    let mut m = load(ctx, off)?;
    let tx = i64::from(m.tx) + delta;
    if tx.abs() > i64::from(MAX_COUNT) {
        return Err(format!("mbarrier tx-count {tx} out of range ±(2^20-1)"));
    }
    m.tx = tx as i32;
    m.maybe_complete();
    store_word(ctx, off, m.encode());
    Ok(())
}

/// One arrive-on of `count` on the mbarrier at `off`; returns the word before it.
pub(crate) fn arrive_on(
    ctx: &mut CtaContext,
    off: u64,
    count: u32,
    no_complete: bool,
) -> Result<u64, String> {
    let before = load_word(ctx, off)?;
    let mut m = load(ctx, off)?;
    if count > m.pending {
        return Err(format!(
            "mbarrier arrive of {count} with only {} arrivals pending in the current phase",
            m.pending
        ));
    }
    m.pending -= count;
    if m.maybe_complete() && no_complete {
        return Err("mbarrier.arrive.noComplete completed the phase (undefined in PTX)".into());
    }
    store_word(ctx, off, m.encode());
    Ok(before)
}

/// The shared offset of the mbarrier named by address operand `i` of `lane` (8-byte aligned).
pub(crate) fn operand_offset(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    i: usize,
    space: Space,
) -> Result<u64, EmuError> {
    shared_operand(ctx, warp, inst, lane, i, space, 8)
}

/// Applies `count` arrivals delivered from another CTA of the cluster (see
/// [`super::cluster`]); an error names the arriving instruction and thread.
pub(crate) fn remote_arrive(
    ctx: &mut CtaContext,
    off: u64,
    count: u32,
    origin: &Origin,
) -> Result<(), EmuError> {
    arrive_on(ctx, off, count, false)
        .map(|_| ())
        .map_err(|m| origin.fault(ctx, off, format!("remote mbarrier.arrive: {m}")))
}

/// Checks that a load delivered from another CTA signals an initialized mbarrier at `off`.
pub(crate) fn remote_initialized(
    ctx: &CtaContext,
    off: u64,
    origin: &Origin,
) -> Result<(), EmuError> {
    load(ctx, off)
        .map(|_| ())
        .map_err(|m| origin.fault(ctx, off, format!("load into another CTA: {m}")))
}

/// The initialized mbarrier at `off`, or a fault of `lane` at `inst`.
pub(crate) fn initialized(
    ctx: &CtaContext,
    warp: &Warp,
    inst: &Inst,
    lane: usize,
    off: u64,
) -> Result<Mbar, EmuError> {
    load(ctx, off).map_err(|m| ctx.fault(inst, warp.first_thread, lane, m))
}

/// `mbarrier.init [addr], count`.
pub(crate) fn init(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        let off = operand_offset(ctx, warp, inst, l, 0, space)?;
        let count = ctx.read(warp, operand(inst, 1), l, Ty::U32) as u32;
        if count == 0 || count > MAX_COUNT {
            return Err(ctx.fault(
                inst,
                warp.first_thread,
                l,
                format!("mbarrier.init count {count} outside 1..=2^20-1"),
            ));
        }
        let m = Mbar {
            pending: count,
            expected: count,
            tx: 0,
            phase: false,
        };
        store_word(ctx, off, m.encode());
    }
    // The warp yields after an init, so that every warp's init runs before any warp's first
    // arrival: kernels (MLIR's among them) let all threads init the same mbarrier, which the
    // hardware tolerates because warps start together, while running warp 0 up to its first
    // poll before warp 1 re-inits would discard warp 0's arrivals.
    Ok(Done::NextAndYield)
}

/// `mbarrier.inval [addr]`.
pub(crate) fn inval(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        let off = operand_offset(ctx, warp, inst, l, 0, space)?;
        store_word(ctx, off, 0);
    }
    Ok(Done::Next)
}

/// `mbarrier.arrive[_drop][.expect_tx][.noComplete] state, [addr]{, count}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn arrive(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
    expect_tx: bool,
    drop: bool,
    no_complete: bool,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        let (rank, off) = cluster_operand(ctx, warp, inst, l, 1, space, 8)?;
        let fault = |ctx: &CtaContext, m: String| ctx.fault(inst, warp.first_thread, l, m);
        let third = inst
            .operands
            .get(2)
            .map(|o| ctx.read(warp, o, l, Ty::U32) as u32);
        let count = if expect_tx { 1 } else { third.unwrap_or(1) };
        if count == 0 || count > MAX_COUNT {
            return Err(fault(
                ctx,
                format!("mbarrier arrive count {count} outside 1..=2^20-1"),
            ));
        }
        if rank != ctx.rank {
            if expect_tx || drop || no_complete {
                return Err(fault(
                    ctx,
                    "mbarrier.arrive on another CTA's mbarrier with .expect_tx, _drop or \
                     .noComplete is not implemented"
                        .into(),
                ));
            }
            let origin = Origin::new(ctx, warp, inst, l);
            ctx.cluster.deliver(
                rank,
                Delivery::Arrive {
                    mbar: off,
                    count,
                    origin,
                },
            );
            continue;
        }
        if expect_tx {
            add_tx(ctx, off, i64::from(third.unwrap_or(0))).map_err(|m| fault(ctx, m))?;
        }
        if drop {
            let mut m = initialized(ctx, warp, inst, l, off)?;
            if count > m.expected {
                return Err(fault(
                    ctx,
                    format!(
                        "mbarrier.arrive_drop of {count} with an expected count of {}",
                        m.expected
                    ),
                ));
            }
            m.expected -= count;
            store_word(ctx, off, m.encode());
        }
        let before = arrive_on(ctx, off, count, no_complete).map_err(|m| fault(ctx, m))?;
        write(warp, operand(inst, 0), l, before);
    }
    Ok(Done::Next)
}

/// `mbarrier.expect_tx [addr], txCount` (`expect`) / `mbarrier.complete_tx [addr], txCount`.
pub(crate) fn tx(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
    expect: bool,
) -> Result<Done, EmuError> {
    for l in lanes(exec) {
        let off = operand_offset(ctx, warp, inst, l, 0, space)?;
        let n = ctx.read(warp, operand(inst, 1), l, Ty::U32) as u32;
        let delta = if expect { i64::from(n) } else { -i64::from(n) };
        add_tx(ctx, off, delta).map_err(|m| ctx.fault(inst, warp.first_thread, l, m))?;
    }
    Ok(Done::Next)
}

/// `mbarrier.test_wait` / `mbarrier.try_wait` (`.parity` or token): asynchronous loads that
/// signal this mbarrier land first. All lanes false is a failed poll: the warp yields.
pub(crate) fn wait(
    ctx: &mut CtaContext,
    warp: &mut Warp,
    inst: &Inst,
    exec: u32,
    space: Space,
    parity: bool,
) -> Result<Done, EmuError> {
    let mut any = false;
    for l in lanes(exec) {
        let off = operand_offset(ctx, warp, inst, l, 1, space)?;
        super::async_copy::land_for(ctx, off)?;
        let m = initialized(ctx, warp, inst, l, off)?;
        let v = ctx.read(warp, operand(inst, 2), l, Ty::U64);
        let waited = if parity {
            if v > 1 {
                return Err(ctx.fault(
                    inst,
                    warp.first_thread,
                    l,
                    format!("mbarrier wait phaseParity {v} is not 0 or 1"),
                ));
            }
            v == 1
        } else {
            v >> 63 == 1
        };
        let complete = waited != m.phase;
        any |= complete;
        write(warp, operand(inst, 0), l, u64::from(complete));
    }
    if any {
        Ok(Done::Next)
    } else {
        ctx.counters.mbarrier_polls += 1;
        Ok(Done::NextAndYield)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_round_trips() {
        for m in [
            Mbar {
                pending: 5,
                expected: 128,
                tx: -3,
                phase: true,
            },
            Mbar {
                pending: MAX_COUNT,
                expected: MAX_COUNT,
                tx: MAX_COUNT as i32,
                phase: false,
            },
            Mbar {
                pending: 0,
                expected: 1,
                tx: -(MAX_COUNT as i32),
                phase: true,
            },
        ] {
            assert_eq!(Mbar::decode(m.encode()), m);
        }
        assert_eq!(
            Mbar {
                pending: 1,
                expected: 1,
                tx: 0,
                phase: false
            }
            .encode(),
            1 | 1 << 20
        );
    }
}
