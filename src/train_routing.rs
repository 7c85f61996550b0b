//! The routed layers' balance during `dsc train`: per step, each MoE layer's expert load and the
//! worst layer's maximal violation `max_vio = (max_i load_i − mean) / mean` (the measure of the
//! auxiliary-loss-free balancing paper, Wang et al. 2024), where `load_i` counts the (token,
//! slot) pairs routed to expert `i` and `mean = tokens · top_k / experts`. 0 is a perfect
//! balance; `experts − 1` is every token on one expert.

use dsc_ir::Graph;
use dsc_runtime::{HostData, HostTensor};

/// The step outputs that carry each routed layer's choice of experts.
pub struct RoutingProbe {
    /// (name of a `moe_topk`'s indices `[tokens, top_k]`, the layer's expert count).
    layers: Vec<(String, usize)>,
}

impl RoutingProbe {
    /// Makes the indices of every `moe_topk` in `g` an output of the step (a value that is one
    /// already stays once); a model without routed layers gets an empty probe.
    pub fn attach(g: &mut Graph) -> Self {
        let mut layers = Vec::new();
        let routed: Vec<_> = g
            .ops
            .iter()
            .filter_map(|op| Some((op, op.moe_topk_operands().ok()?)))
            .map(|(op, o)| (op.results[1], g.ty(o.logits).shape.dims().to_vec()))
            .collect();
        for (indices, scores) in routed {
            if !g.outputs.contains(&indices) {
                g.outputs.push(indices);
            }
            let experts = scores.last().copied().unwrap_or(0) as usize;
            layers.push((g.name(indices).to_string(), experts));
        }
        RoutingProbe { layers }
    }

    /// Whether the model has routed layers (and the log a `max_vio` figure).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The largest `max_vio` over the routed layers of a step, from its outputs; `None` without
    /// routed layers or when an output is missing or not integer indices.
    pub fn max_violation(&self, outputs: &[(String, HostTensor)]) -> Option<f64> {
        self.layers
            .iter()
            .map(|(name, experts)| {
                let (_, t) = outputs.iter().find(|(n, _)| n == name)?;
                let HostData::I32(indices) = &t.data else {
                    return None;
                };
                max_violation(indices, *experts)
            })
            .try_fold(None, |worst: Option<f64>, v| {
                v.map(|v| Some(worst.map_or(v, |w| w.max(v))))
            })
            .flatten()
    }
}

/// `(max_i load_i − mean) / mean` of one layer's `indices` over `experts`; `None` when there are
/// no experts or no slots, or an index is outside `0..experts`.
fn max_violation(indices: &[i32], experts: usize) -> Option<f64> {
    if experts == 0 || indices.is_empty() {
        return None;
    }
    let mut load = vec![0usize; experts];
    for &i in indices {
        *load.get_mut(usize::try_from(i).ok()?)? += 1;
    }
    let mean = indices.len() as f64 / experts as f64;
    let max = *load.iter().max()? as f64;
    Some((max - mean) / mean)
}

#[cfg(test)]
mod tests {
    use super::max_violation;

    #[test]
    fn the_violation_is_the_worst_excess_over_the_mean_load() {
        // 4 experts, 6 slots: loads 3, 1, 1, 1 against a mean of 1.5.
        assert_eq!(max_violation(&[0, 1, 0, 2, 0, 3], 4), Some(1.0));
        // Balanced: 0.
        assert_eq!(max_violation(&[0, 1, 2, 3], 4), Some(0.0));
        // Everything on one expert: experts − 1.
        assert_eq!(max_violation(&[2; 8], 4), Some(3.0));
        assert_eq!(max_violation(&[0, 4], 4), None);
        assert_eq!(max_violation(&[-1], 4), None);
        assert_eq!(max_violation(&[], 4), None);
    }
}
