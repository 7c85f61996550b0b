//! The arena plan: one device allocation holding every intermediate and output, each at an
//! offset, with a region reused once the tensor in it is dead.
//!
//! Tensors are placed in definition order, first fit by offset among the gaps left by tensors
//! whose last use is before the defining step (a step's operands stay live while its results are
//! placed, so a kernel never writes over what it reads). Graph outputs live to the end.

/// One tensor to place: its size and the steps that define it and use it last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Bytes.
    pub bytes: u64,
    /// The step that writes it.
    pub first: usize,
    /// The last step that reads it (`usize::MAX`: kept to the end).
    pub last: usize,
}

/// Where each tensor went, and the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Offset of each tensor, in the order given.
    pub offsets: Vec<u64>,
    /// The arena's size: the peak of the plan.
    pub bytes: u64,
    /// What giving every tensor its own region would need.
    pub no_reuse_bytes: u64,
}

/// Places `tensors` (in definition order) with every offset a multiple of `alignment`.
pub fn plan_arena(tensors: &[Lifetime], alignment: u64) -> ArenaPlan {
    let align = |b: u64| b.div_ceil(alignment) * alignment;
    // Live regions: (offset, size, last use), kept sorted by offset.
    let mut live: Vec<(u64, u64, usize)> = Vec::new();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut peak = 0u64;
    for tensor in tensors {
        live.retain(|&(_, _, last)| last >= tensor.first);
        let size = align(tensor.bytes.max(1));
        let mut offset = 0u64;
        for &(start, len, _) in &live {
            if offset + size <= start {
                break;
            }
            offset = offset.max(start + len);
        }
        let at = live.partition_point(|&(start, _, _)| start < offset);
        live.insert(at, (offset, size, tensor.last));
        peak = peak.max(offset + size);
        offsets.push(offset);
    }
    ArenaPlan {
        offsets,
        bytes: peak,
        no_reuse_bytes: tensors.iter().map(|t| align(t.bytes.max(1))).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bytes: u64, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    /// No two tensors alive at the same step overlap.
    fn assert_disjoint(tensors: &[Lifetime], plan: &ArenaPlan) {
        for (i, a) in tensors.iter().enumerate() {
            for (j, b) in tensors.iter().enumerate().skip(i + 1) {
                let overlap_in_time = a.first <= b.last && b.first <= a.last;
                let (oa, ob) = (plan.offsets[i], plan.offsets[j]);
                let overlap_in_space = oa < ob + b.bytes && ob < oa + a.bytes;
                assert!(
                    !(overlap_in_time && overlap_in_space),
                    "tensors {i} and {j} overlap: {plan:?}"
                );
            }
        }
    }

    #[test]
    fn reuses_dead_regions() {
        // A chain: each step reads the previous result only.
        let tensors: Vec<_> = (0..6).map(|i| t(1000, i, i + 1)).collect();
        let plan = plan_arena(&tensors, 256);
        assert_disjoint(&tensors, &plan);
        assert_eq!(plan.no_reuse_bytes, 6 * 1024);
        // Two live at a time (the operand and the result), so two regions suffice.
        assert_eq!(plan.bytes, 2 * 1024);
        assert_eq!(&plan.offsets[..4], &[0, 1024, 0, 1024]);
    }

    #[test]
    fn keeps_operands_while_results_are_placed() {
        // Tensor 0 dies at step 1, where tensor 1 is defined: they must not share.
        let tensors = [t(512, 0, 1), t(512, 1, 2)];
        let plan = plan_arena(&tensors, 256);
        assert_ne!(plan.offsets[0], plan.offsets[1]);
        assert_disjoint(&tensors, &plan);
    }

    #[test]
    fn outputs_live_to_the_end_and_gaps_are_filled() {
        let tensors = [
            t(256, 0, usize::MAX),
            t(4096, 1, 2),
            t(256, 3, 4),
            t(256, 3, 5),
            t(8192, 4, 5),
        ];
        let plan = plan_arena(&tensors, 256);
        assert_disjoint(&tensors, &plan);
        // The two small tensors of step 3 fill the gap the 4096-byte one left.
        assert_eq!(plan.offsets[2], 256);
        assert_eq!(plan.offsets[3], 512);
        assert!(plan.bytes < plan.no_reuse_bytes);
        for offset in &plan.offsets {
            assert_eq!(offset % 256, 0);
        }
    }
}
