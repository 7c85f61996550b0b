//! Fresh value names for ops a pass creates: derived from a base, never clashing.

use dsc_ir::Graph;
use std::collections::HashSet;

/// Every name in use in a graph, handing out unused ones.
pub struct NameSet(HashSet<String>);

impl NameSet {
    /// The names of every value of `graph` (removed ops' values included: they may come back).
    pub fn of(graph: &Graph) -> Self {
        NameSet(graph.values.iter().map(|v| v.name.clone()).collect())
    }

    /// `base` if unused, else `base.1`, `base.2`, …; the name returned is then taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.0.contains(&name) {
            name = format!("{base}.{n}");
            n += 1;
        }
        self.0.insert(name.clone());
        name
    }
}
