//! The expert-contiguous layout of a grouped GEMM's rows (DeepGEMM's "contiguous" grouped
//! layout): routed row `r = t·top_k + slot` goes to expert `indices[r]`; each expert's rows
//! are consecutive, in increasing `r`, and its segment is padded to a multiple of `tile` rows so
//! that no MMA tile spans two experts. This is the spec and CPU reference of the GPU
//! `moe_dispatch` kernel, which builds the layout before a layer's first grouped FP8 GEMM.

/// The spec name of the GPU kernel that writes the layout.
pub const SPEC: &str = "moe_dispatch";

/// The spec name of the GPU kernel that counts each block's rows per expert before it, when
/// the layout takes several blocks.
pub const COUNTS_SPEC: &str = "moe_dispatch_counts";

/// The layout: `rows[p]` is the routed row at padded position `p` (−1 for padding),
/// `tiles[p / tile]` the expert of each tile (−1 for unused tiles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchLayout {
    /// Routed row per padded position.
    pub rows: Vec<i32>,
    /// Expert per tile of `tile` positions.
    pub tiles: Vec<i32>,
}

/// Padded positions a layout of `routed` rows over `experts` experts may need: every expert
/// that receives a row adds at most `tile - 1` rows of padding.
pub fn dispatch_capacity(routed: u64, experts: u64, tile: u64) -> u64 {
    (routed + (tile - 1) * experts.min(routed)).div_ceil(tile) * tile
}

/// The layout of `indices` (one expert per routed row; rows with an expert outside
/// `0..experts` are left out).
pub fn moe_dispatch(indices: &[i32], experts: usize, tile: usize) -> DispatchLayout {
    let capacity = dispatch_capacity(indices.len() as u64, experts as u64, tile as u64) as usize;
    let mut counts = vec![0usize; experts];
    let valid = |x: i32| usize::try_from(x).ok().filter(|&x| x < experts);
    for &x in indices {
        if let Some(x) = valid(x) {
            counts[x] += 1;
        }
    }
    let mut start = vec![0usize; experts];
    let mut running = 0;
    for (x, &count) in counts.iter().enumerate() {
        start[x] = running;
        running += count.div_ceil(tile) * tile;
    }
    let mut layout = DispatchLayout {
        rows: vec![-1; capacity],
        tiles: vec![-1; capacity / tile],
    };
    let mut cursor = start.clone();
    for (r, &x) in indices.iter().enumerate() {
        if let Some(x) = valid(x) {
            layout.rows[cursor[x]] = r as i32;
            cursor[x] += 1;
        }
    }
    for x in 0..experts {
        for t in start[x] / tile..cursor[x].div_ceil(tile) {
            layout.tiles[t] = x as i32;
        }
    }
    layout
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_rows_by_expert_and_pads_segments() {
        // 3 tokens × top-2 over 3 experts, tiles of 4.
        let layout = moe_dispatch(&[2, 0, 0, 2, 2, 1], 3, 4);
        assert_eq!(
            layout.rows,
            [1, 2, -1, -1, 5, -1, -1, -1, 0, 3, 4, -1, -1, -1, -1, -1]
        );
        assert_eq!(layout.tiles, [0, 1, 2, -1]);
        // 6 rows, at most 3 padding rows per expert: 15, rounded up to a tile.
        assert_eq!(dispatch_capacity(6, 3, 4), 16);
    }

    proptest! {
        #[test]
        fn every_row_once_in_its_experts_tiles(
            indices in prop::collection::vec(-1i32..9, 0..200),
            experts in 1usize..9,
            tile in prop::sample::select(vec![1usize, 4, 16]),
        ) {
            let layout = moe_dispatch(&indices, experts, tile);
            let mut seen = vec![false; indices.len()];
            for (p, &r) in layout.rows.iter().enumerate() {
                if r < 0 {
                    continue;
                }
                let r = r as usize;
                prop_assert!(!seen[r]);
                seen[r] = true;
                // The tile holding the row belongs to the row's expert.
                prop_assert_eq!(layout.tiles[p / tile], indices[r]);
            }
            for (r, &x) in indices.iter().enumerate() {
                prop_assert_eq!(seen[r], (0..experts as i32).contains(&x));
            }
            // Rows of an expert keep their order.
            let order: Vec<i32> = layout.rows.iter().copied().filter(|&r| r >= 0).collect();
            for pair in order.windows(2) {
                let (a, b) = (pair[0] as usize, pair[1] as usize);
                if indices[a] == indices[b] {
                    prop_assert!(a < b);
                }
            }
        }
    }
}
