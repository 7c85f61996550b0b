//! Memory accesses of one lane: the address of an operand, generic addresses resolved through
//! their windows, bounds and alignment checked in every state space, and the sector and
//! bank-conflict counts of a warp's access.

use super::cluster::decode_cluster_address;
use super::context::CtaContext;
use super::warp::Warp;
use crate::memory::{LOCAL_WINDOW, SHARED_WINDOW};
use crate::ptx::{Addr, AddrBase, Space};

/// Where a resolved access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Global memory at this device address.
    Global(u64),
    /// The CTA's shared memory at this offset.
    Shared(u64),
    /// The lane's local memory at this offset.
    Local(u64),
    /// The parameter buffer at this offset.
    Param(u64),
}

impl CtaContext<'_> {
    /// The address `[base + offset]` of `lane`, in the state space the base implies.
    pub fn address(&self, warp: &Warp, a: &Addr, lane: usize) -> u64 {
        self.base_address(a.base, warp, lane)
            .wrapping_add(a.offset as u64)
    }

    /// Resolves an address used with state space `space` into a place.
    pub fn place(&self, space: Space, address: u64, base: AddrBase) -> Result<Place, String> {
        Ok(match space {
            Space::Global => Place::Global(address),
            Space::Shared => Place::Shared(address),
            Space::SharedCluster => Place::Shared(self.own_shared(address)?),
            Space::Local => Place::Local(address),
            Space::Param => Place::Param(address),
            // The module's `.const` variables live with its `.global` ones.
            Space::Const => Place::Global(address),
            Space::Generic => {
                // A variable named directly keeps its own space.
                if let AddrBase::Var(s, _) = base {
                    return self.place(s, address, AddrBase::Abs);
                }
                if matches!(base, AddrBase::DynamicShared) {
                    return Ok(Place::Shared(address));
                }
                if (SHARED_WINDOW..LOCAL_WINDOW).contains(&address) {
                    Place::Shared(self.own_shared(address - SHARED_WINDOW)?)
                } else if (LOCAL_WINDOW..LOCAL_WINDOW + (1 << 32)).contains(&address) {
                    Place::Local(address - LOCAL_WINDOW)
                } else if (super::hopper::PARAM_WINDOW
                    ..super::hopper::PARAM_WINDOW + super::hopper::PARAM_WINDOW_BYTES)
                    .contains(&address)
                {
                    Place::Param(address - super::hopper::PARAM_WINDOW)
                } else {
                    Place::Global(address)
                }
            }
        })
    }

    /// The CTA rank and shared offset a `.shared::cluster` address names (see
    /// [`super::cluster`]); an error if the rank is outside the cluster.
    pub fn cluster_shared(&self, address: u64) -> Result<(u32, u64), String> {
        match decode_cluster_address(address) {
            (None, offset) => Ok((self.rank, offset)),
            (Some(r), offset) if r < self.cluster.size => Ok((r, offset)),
            (Some(r), _) => Err(format!(
                "shared::cluster address names CTA rank {r} of a cluster of {}",
                self.cluster.size
            )),
        }
    }

    /// The offset in this CTA's shared memory a `.shared::cluster` address names: plain loads,
    /// stores and atomics on another CTA's shared memory are not implemented.
    fn own_shared(&self, address: u64) -> Result<u64, String> {
        match self.cluster_shared(address)? {
            (r, offset) if r == self.rank => Ok(offset),
            (r, _) => Err(format!(
                "access to the shared memory of CTA rank {r} of the cluster (the emulator \
                 implements only remote mbarrier arrivals and TMA/bulk loads into another CTA)"
            )),
        }
    }

    /// Loads `width` bytes at `place` for `lane` (zero-extended).
    pub fn load(&self, warp: &Warp, lane: usize, place: Place, width: u32) -> Result<u64, String> {
        let aligned = |a: u64| {
            if !a.is_multiple_of(u64::from(width)) {
                Err(format!("misaligned {width}-byte access"))
            } else {
                Ok(())
            }
        };
        let from = |bytes: &[u8], offset: u64, what: &str| -> Result<u64, String> {
            aligned(offset)?;
            let end = offset
                .checked_add(u64::from(width))
                .filter(|&e| e <= bytes.len() as u64)
                .ok_or_else(|| {
                    format!(
                        "{width}-byte {what} access outside its {} bytes",
                        bytes.len()
                    )
                })?;
            let mut v = [0u8; 8];
            v[..width as usize].copy_from_slice(&bytes[offset as usize..end as usize]);
            Ok(u64::from_le_bytes(v))
        };
        match place {
            Place::Global(a) => self.launch.memory_for(a).load(a, width),
            Place::Shared(o) => from(&self.shared, o, "shared"),
            Place::Param(o) => from(self.launch.params, o, "param"),
            Place::Local(o) => {
                let base = lane * warp.local_bytes;
                from(&warp.local[base..base + warp.local_bytes], o, "local")
            }
        }
    }

    /// Stores the low `width` bytes of `v` at `place` for `lane`.
    pub fn store(
        &mut self,
        warp: &mut Warp,
        lane: usize,
        place: Place,
        width: u32,
        v: u64,
    ) -> Result<(), String> {
        let into = |bytes: &mut [u8], offset: u64, what: &str| -> Result<(), String> {
            if !offset.is_multiple_of(u64::from(width)) {
                return Err(format!("misaligned {width}-byte access"));
            }
            let len = bytes.len();
            let end = offset
                .checked_add(u64::from(width))
                .filter(|&e| e <= len as u64)
                .ok_or_else(|| format!("{width}-byte {what} access outside its {len} bytes"))?;
            bytes[offset as usize..end as usize]
                .copy_from_slice(&v.to_le_bytes()[..width as usize]);
            Ok(())
        };
        match place {
            Place::Global(a) => self.launch.memory_for(a).store(a, width, v),
            Place::Shared(o) => into(&mut self.shared, o, "shared"),
            Place::Param(_) => Err("stores to kernel parameters are not allowed".into()),
            Place::Local(o) => {
                let base = lane * warp.local_bytes;
                let n = warp.local_bytes;
                into(&mut warp.local[base..base + n], o, "local")
            }
        }
    }
}

/// Distinct 32-byte sectors among `addresses` (each with `width` bytes).
pub fn sectors(addresses: &mut Vec<u64>, width: u32) -> u64 {
    let mut s: Vec<u64> = Vec::with_capacity(addresses.len() * 2);
    for &a in addresses.iter() {
        s.push(a >> 5);
        s.push((a + u64::from(width) - 1) >> 5);
    }
    s.sort_unstable();
    s.dedup();
    addresses.clear();
    s.len() as u64
}

/// Shared-memory wavefronts of one warp access: the most distinct 4-byte words any of the 32
/// banks must serve (the same word is broadcast), and at least one per 128 bytes moved.
pub fn wavefronts(addresses: &mut Vec<u64>, width: u32) -> u64 {
    let mut words: Vec<u64> = Vec::with_capacity(addresses.len());
    for &a in addresses.iter() {
        let mut w = a >> 2;
        while w << 2 < a + u64::from(width) {
            words.push(w);
            w += 1;
        }
    }
    let bytes = (addresses.len() as u64) * u64::from(width);
    addresses.clear();
    words.sort_unstable();
    words.dedup();
    let mut per_bank = [0u64; 32];
    for w in &words {
        per_bank[(*w % 32) as usize] += 1;
    }
    per_bank
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(bytes.div_ceil(128))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_and_bank_counts() {
        let mut a: Vec<u64> = (0..32).map(|l| 0x1000 + 4 * l).collect();
        assert_eq!(sectors(&mut a, 4), 4);
        let mut a: Vec<u64> = (0..32).map(|l| 0x1000 + 128 * l).collect();
        assert_eq!(sectors(&mut a, 4), 32);
        let mut a: Vec<u64> = (0..32).map(|l| 4 * l).collect();
        assert_eq!(wavefronts(&mut a, 4), 1);
        let mut a: Vec<u64> = (0..32).map(|l| 128 * l).collect();
        assert_eq!(wavefronts(&mut a, 4), 32, "every lane in bank 0");
        let mut a: Vec<u64> = (0..32).map(|_| 64).collect();
        assert_eq!(wavefronts(&mut a, 4), 1, "broadcast");
        let mut a: Vec<u64> = (0..32).map(|l| 16 * l).collect();
        assert_eq!(
            wavefronts(&mut a, 16),
            4,
            "128-bit accesses: 512 bytes in 4 wavefronts"
        );
    }
}
