//! Fresh value names for ops a pass creates: derived from a base, never clashing.

use dsc_ir::Graph;
use rustc_hash::{FxHashSet, FxHasher};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Every name in use in a graph, handing out unused ones.
///
/// Names are kept as 128-bit keys (two independent 64-bit hashes) rather than cloned strings:
/// a graph of 10,000 layers has hundreds of thousands of names, and copying them all for each
/// pass that adds a few ops cost more than the pass. Two different names would have to agree
/// in both hashes to be taken for one another (odds about 2^-100 per pair, and even then a
/// name would only get a `.N` suffix it did not need).
pub struct NameSet(FxHashSet<u128>);

/// The 128-bit key of a name.
fn key(name: &str) -> u128 {
    let mut fx = FxHasher::default();
    name.hash(&mut fx);
    let mut sip = DefaultHasher::new();
    name.hash(&mut sip);
    (u128::from(fx.finish()) << 64) | u128::from(sip.finish())
}

impl NameSet {
    /// The names of every value of `graph` (removed ops' values included: they may come back).
    pub fn of(graph: &Graph) -> Self {
        let mut set = FxHashSet::with_capacity_and_hasher(graph.values.len(), Default::default());
        set.extend(graph.values.iter().map(|v| key(&v.name)));
        NameSet(set)
    }

    /// `base` if unused, else `base.1`, `base.2`, …; the name returned is then taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.0.insert(key(&name)) {
            name = format!("{base}.{n}");
            n += 1;
        }
        name
    }
}
