//! Device global memory: zeroed allocations at distinct device addresses, read and written by
//! the host between launches and by every CTA of a launch at once.
//!
//! CTAs run in parallel on host threads, so global memory is shared and mutable during a launch.
//! Every access is a relaxed atomic of the access's width: that is what the hardware gives
//! plain loads and stores (no tearing of an aligned access, no ordering), it compiles to plain
//! moves, and a racy kernel cannot make the emulator itself undefined. Accesses must be
//! naturally aligned (PTX requires it); the emulator faults otherwise.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::error::EmuError;

/// Where the first allocation starts; later ones follow with a gap, so that running off the
/// end of one buffer faults instead of landing in the next.
pub const GLOBAL_BASE: u64 = 0x7000_0000_0000;

/// Where a launch places the module's `.global` and `.const` variables: below the allocations
/// of [`GLOBAL_BASE`], so that an address says which memory holds it.
pub const MODULE_VARIABLES_BASE: u64 = 0x6000_0000_0000;

/// Alignment of every allocation (cudaMalloc's).
const ALLOCATION_ALIGN: u64 = 256;

/// Unmapped bytes between allocations.
const GUARD_BYTES: u64 = 4096;

/// Generic-address window of the CTA's shared memory (`cvta.shared`): the window plus a
/// `.shared::cluster` address (see `exec::cluster`, whose CTAs are [`SHARED_WINDOW_STRIDE`] apart).
pub const SHARED_WINDOW: u64 = 0x1000_0000_0000;

/// Distance between the shared windows of two CTAs of a cluster.
pub const SHARED_WINDOW_STRIDE: u64 = 1 << 24;

/// Generic-address window of a thread's local memory (`cvta.local`).
pub const LOCAL_WINDOW: u64 = 0x2000_0000_0000;

thread_local! {
    /// (memory, allocation index) of this host thread's last lookup.
    static LAST_HIT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

struct Allocation {
    base: u64,
    bytes: u64,
    /// 8-byte words, so that every naturally aligned access of up to 8 bytes is an aligned
    /// atomic.
    words: Box<[AtomicU64]>,
}

impl Allocation {
    fn ptr(&self, offset: u64) -> *mut u8 {
        // The words are never moved while the allocation lives; offsets are checked by callers.
        unsafe { (self.words.as_ptr() as *mut u8).add(offset as usize) }
    }
}

/// The device's global memory.
#[derive(Default)]
pub struct GlobalMemory {
    /// Sorted by base address.
    allocations: Vec<Allocation>,
    next: u64,
    /// The lowest address it allocates at.
    floor: u64,
}

impl std::fmt::Debug for GlobalMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalMemory")
            .field("allocations", &self.allocations.len())
            .field("bytes", &self.total_bytes())
            .finish()
    }
}

impl GlobalMemory {
    /// Empty memory.
    pub fn new() -> Self {
        GlobalMemory::from(GLOBAL_BASE)
    }

    /// Empty memory whose allocations start at `floor`.
    pub(crate) fn from(floor: u64) -> Self {
        GlobalMemory {
            allocations: Vec::new(),
            next: floor,
            floor,
        }
    }

    /// Allocates `bytes` zeroed bytes (at least one) and returns their device address,
    /// aligned to [`ALLOCATION_ALIGN`].
    pub fn allocate(&mut self, bytes: u64) -> u64 {
        self.allocate_aligned(bytes, ALLOCATION_ALIGN)
    }

    /// [`GlobalMemory::allocate`] at a multiple of `align` (a power of two; at least
    /// [`ALLOCATION_ALIGN`] is used).
    pub(crate) fn allocate_aligned(&mut self, bytes: u64, align: u64) -> u64 {
        let bytes = bytes.max(1);
        let base = self
            .next
            .max(self.floor)
            .next_multiple_of(align.max(ALLOCATION_ALIGN));
        let words = bytes.div_ceil(8) as usize;
        let words: Box<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        self.allocations.push(Allocation { base, bytes, words });
        self.next = (base + bytes + GUARD_BYTES).next_multiple_of(ALLOCATION_ALIGN);
        base
    }

    /// Bytes allocated.
    pub fn total_bytes(&self) -> u64 {
        self.allocations.iter().map(|a| a.bytes).sum()
    }

    /// The allocation holding `[address, address + len)` and the offset of `address` in it.
    fn find(&self, address: u64, len: u64) -> Option<(&Allocation, u64)> {
        let fits = |a: &Allocation| {
            let offset = address.checked_sub(a.base)?;
            (offset.checked_add(len)? <= a.bytes).then_some(offset)
        };
        // Consecutive accesses of one host thread mostly hit the allocation it hit last.
        let me = self as *const GlobalMemory as usize;
        let (owner, hinted) = LAST_HIT.get();
        if owner == me
            && let Some(a) = self.allocations.get(hinted)
            && let Some(offset) = fits(a)
        {
            return Some((a, offset));
        }
        let i = self.allocations.partition_point(|a| a.base <= address);
        let a = self.allocations.get(i.checked_sub(1)?)?;
        LAST_HIT.set((me, i - 1));
        let offset = address - a.base;
        (offset.checked_add(len)? <= a.bytes).then_some((a, offset))
    }

    /// Whether `[address, address + len)` lies inside one allocation.
    pub fn contains(&self, address: u64, len: u64) -> bool {
        self.find(address, len).is_some()
    }

    /// Copies `bytes` to device address `address` (host side, between launches).
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), EmuError> {
        let (a, offset) = self.find(address, bytes.len() as u64).ok_or_else(|| {
            EmuError::Host(format!(
                "writing {} bytes at {address:#x}: outside every allocation",
                bytes.len()
            ))
        })?;
        for (i, &b) in bytes.iter().enumerate() {
            unsafe { AtomicU8::from_ptr(a.ptr(offset + i as u64)) }.store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies device bytes at `address` into `out` (host side, between launches).
    pub fn read(&self, address: u64, out: &mut [u8]) -> Result<(), EmuError> {
        let (a, offset) = self.find(address, out.len() as u64).ok_or_else(|| {
            EmuError::Host(format!(
                "reading {} bytes at {address:#x}: outside every allocation",
                out.len()
            ))
        })?;
        for (i, b) in out.iter_mut().enumerate() {
            *b = unsafe { AtomicU8::from_ptr(a.ptr(offset + i as u64)) }.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Checks a device access of `width` bytes (1, 2, 4, 8) and returns its host pointer.
    fn checked(&self, address: u64, width: u32) -> Result<*mut u8, String> {
        if !address.is_multiple_of(u64::from(width)) {
            return Err(format!("misaligned {width}-byte global access"));
        }
        let (a, offset) = self
            .find(address, u64::from(width))
            .ok_or_else(|| format!("{width}-byte global access outside every allocation"))?;
        Ok(a.ptr(offset))
    }

    /// Loads `width` bytes (1, 2, 4 or 8), little-endian, zero-extended.
    pub(crate) fn load(&self, address: u64, width: u32) -> Result<u64, String> {
        let p = self.checked(address, width)?;
        // SAFETY: `checked` returned an in-bounds pointer aligned to `width`.
        Ok(unsafe {
            match width {
                1 => u64::from(AtomicU8::from_ptr(p).load(Ordering::Relaxed)),
                2 => u64::from(AtomicU16::from_ptr(p.cast()).load(Ordering::Relaxed)),
                4 => u64::from(AtomicU32::from_ptr(p.cast()).load(Ordering::Relaxed)),
                _ => AtomicU64::from_ptr(p.cast()).load(Ordering::Relaxed),
            }
        })
    }

    /// Stores the low `width` bytes of `value`.
    pub(crate) fn store(&self, address: u64, width: u32, value: u64) -> Result<(), String> {
        let p = self.checked(address, width)?;
        // SAFETY: as in `load`.
        unsafe {
            match width {
                1 => AtomicU8::from_ptr(p).store(value as u8, Ordering::Relaxed),
                2 => AtomicU16::from_ptr(p.cast()).store(value as u16, Ordering::Relaxed),
                4 => AtomicU32::from_ptr(p.cast()).store(value as u32, Ordering::Relaxed),
                _ => AtomicU64::from_ptr(p.cast()).store(value, Ordering::Relaxed),
            }
        }
        Ok(())
    }

    /// Atomically replaces the `width`-byte (4 or 8) value at `address` by `f(old)`; returns
    /// the old value.
    pub(crate) fn atomic_update(
        &self,
        address: u64,
        width: u32,
        f: impl Fn(u64) -> u64,
    ) -> Result<u64, String> {
        let p = self.checked(address, width)?;
        // SAFETY: as in `load`.
        unsafe {
            match width {
                4 => {
                    let a = AtomicU32::from_ptr(p.cast());
                    let old = a
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                            Some(f(u64::from(v)) as u32)
                        })
                        .unwrap_or_else(|v| v);
                    Ok(u64::from(old))
                }
                8 => {
                    let a = AtomicU64::from_ptr(p.cast());
                    Ok(
                        a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(f(v)))
                            .unwrap_or_else(|v| v),
                    )
                }
                _ => Err(format!("{width}-byte atomics are not implemented")),
            }
        }
    }
}

// SAFETY: all access to the words goes through atomics.
unsafe impl Sync for GlobalMemory {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_zeroed_and_guarded() {
        let mut m = GlobalMemory::new();
        let a = m.allocate(10);
        let b = m.allocate(300);
        assert_eq!(a % ALLOCATION_ALIGN, 0);
        assert_eq!(b % ALLOCATION_ALIGN, 0);
        assert!(b >= a + 10 + GUARD_BYTES);
        assert_eq!(m.load(b + 296, 4), Ok(0));
        assert!(m.load(a + 10, 1).unwrap_err().contains("outside"));
        assert!(m.load(a + 2, 4).unwrap_err().contains("misaligned"));
        m.write(a, &[1, 2, 3, 4]).unwrap();
        assert_eq!(m.load(a, 4), Ok(0x0403_0201));
        m.store(a + 8, 2, 0xbeef).unwrap();
        let mut out = [0u8; 10];
        m.read(a, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 0, 0, 0, 0, 0xef, 0xbe]);
        let e = m.write(a + 8, &[0; 3]).unwrap_err().to_string();
        assert!(e.contains("outside every allocation"), "{e}");
    }
}
