//! Hugging Face names: a parameter's checkpoint names (one per expert for a grouped `{e}`
//! parameter) and the decoder layers (`model.layers.{i}.…`) a graph has.

use dsc_ir::{Graph, ValueId};

use super::EXPERT;
use crate::checkpoint::Checkpoint;

/// The checkpoint names of a parameter and the shape of each: its own name and shape, or for a
/// `{e}` name one per expert (`shape[0]` of them) of shape `shape[1..]`.
pub fn checkpoint_names(name: &str, shape: &[usize]) -> (Vec<String>, Vec<usize>) {
    match shape.split_first() {
        Some((&experts, inner)) if name.contains(EXPERT) => (
            (0..experts)
                .map(|e| name.replace(EXPERT, &e.to_string()))
                .collect(),
            inner.to_vec(),
        ),
        _ => (vec![name.to_string()], shape.to_vec()),
    }
}

/// The layer index of a Hugging Face tensor name `model.layers.{i}.…`.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// How many decoder layers the graph has: one more than the largest `model.layers.{i}` among
/// its parameters (0 without any).
pub fn layer_count(graph: &Graph) -> usize {
    graph
        .params
        .iter()
        .filter_map(|&p| layer_of(graph.name(p)))
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// True when `name` is a tensor of a layer at or beyond `layers` (a graph without layers has none).
pub(super) fn is_beyond(name: &str, layers: usize) -> bool {
    layers > 0 && layer_of(name).is_some_and(|i| i >= layers)
}

/// The checkpoint tensors of layers beyond the graph's last (see the module documentation),
/// which [`super::load_weights`] skips.
pub fn beyond_last_layer<'c>(graph: &Graph, ckpt: &'c Checkpoint) -> Vec<&'c str> {
    let layers = layer_count(graph);
    ckpt.names().filter(|n| is_beyond(n, layers)).collect()
}

/// The tensors DeepSeek-V3's checkpoints repeat in each multi-token-prediction layer `L` (a layer
/// with `model.layers.{L}.eh_proj.weight`): `model.layers.{L}.embed_tokens.weight` and
/// `model.layers.{L}.shared_head.head.weight`, copies of the embedding and the output head that
/// the module shares with the model (DeepSeek-V3 §2.2). As (copy's name, shared parameter), for
/// the shared parameters the graph has.
pub fn mtp_shared_copies(graph: &Graph) -> Vec<(String, ValueId)> {
    let param = |name: &str| {
        graph
            .params
            .iter()
            .copied()
            .find(|&p| graph.name(p) == name)
    };
    let shared = [
        ("embed_tokens.weight", param("model.embed_tokens.weight")),
        ("shared_head.head.weight", param("lm_head.weight")),
    ];
    let mut copies = Vec::new();
    for &p in &graph.params {
        let Some(layer) = graph
            .name(p)
            .strip_suffix(".eh_proj.weight")
            .filter(|l| layer_of(&format!("{l}.")).is_some())
        else {
            continue;
        };
        for (suffix, source) in shared {
            if let Some(source) = source {
                copies.push((format!("{layer}.{suffix}"), source));
            }
        }
    }
    copies
}
