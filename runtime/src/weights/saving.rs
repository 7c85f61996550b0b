//! Saving: the weights as Hugging Face checkpoint tensors, and as one safetensors file.

use std::path::Path;

use dsc_ir::Graph;

use super::Weights;
use super::names::{checkpoint_names, mtp_shared_copies};
use crate::error::RuntimeError;
use crate::tensor::{HostTensor, write_safetensors};

/// The weights as Hugging Face checkpoint tensors: one per parameter, `{e}` parameters unstacked
/// into one tensor per expert, in parameter order, then the copies of the embedding and the head
/// DeepSeek-V3's layout keeps in each multi-token-prediction layer ([`mtp_shared_copies`]).
/// Every parameter must have its tensor.
pub fn hf_tensors(
    weights: &Weights,
    graph: &Graph,
) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
    weights.check(graph)?;
    let mut out = Vec::new();
    for &p in &graph.params {
        let t = weights.get(p).expect("checked above");
        let (names, _) = checkpoint_names(graph.name(p), &t.shape);
        if names.len() == 1 && names[0] == graph.name(p) {
            out.push((names[0].clone(), t.clone()));
        } else {
            for (i, name) in names.into_iter().enumerate() {
                out.push((name, t.outer_slice(i)?));
            }
        }
    }
    for (copy, shared) in mtp_shared_copies(graph) {
        out.push((copy, weights.get(shared).expect("checked above").clone()));
    }
    Ok(out)
}

/// Writes the weights as one safetensors file with Hugging Face names (see [`hf_tensors`]):
/// FP8 weights as F8_E4M3/F8_E5M2 with their F32 `weight_scale_inv`, bf16 as BF16, and so on.
/// Loading the file back with [`super::load_weights`] gives the same weights.
pub fn save_safetensors(weights: &Weights, graph: &Graph, path: &Path) -> Result<(), RuntimeError> {
    let tensors = hf_tensors(weights, graph)?;
    write_safetensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)))
}
