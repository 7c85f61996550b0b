//! Weights: one host tensor per graph parameter, loaded from a checkpoint (DESIGN.md §6,
//! `--weights`) or written back as one.
//!
//! Parameters carry Hugging Face names. A name with `{e}` is a grouped expert weight `[E, …]`
//! whose slice `i` is the checkpoint tensor with `{e}` replaced by `i`.
//!
//! An FP8 parameter `X.weight` (after `fold-weights`) comes with its scale parameter
//! `X.weight_scale_inv`, f32 `[…, ceil(N/b), ceil(K/b)]`. From the checkpoint it is either
//! - FP8 codes of the same format plus `X.weight_scale_inv` (DeepSeek-V3's FP8 checkpoints):
//!   used as they are; or
//! - BF16/F16/F32: rounded to the policy's `high` dtype and quantized on load with the graph's
//!   policy (`weight_block`, `scale_format`; the parameter's FP8 format), exactly as
//!   [`crate::random_weights()`] and the unfolded graph's `quantize` op do. A `weight_scale_inv`
//!   next to such a weight contradicts it and is an error.
//!
//! A high-precision parameter takes BF16/F16/F32 (rounded to its dtype, ties to even), or FP8
//! codes with their `weight_scale_inv` (dequantized: an FP8 checkpoint run with that weight kept
//! in high precision). Integer parameters take any integer dtype whose values fit in i32.
//!
//! Every mismatch is collected (missing, unexpected, wrong shape, wrong dtype, contradictory)
//! into one [`RuntimeError::Weights`].
//!
//! Tensors of layers the model does not have (`model.layers.{i}.…` with `i` at or beyond the
//! graph's layer count) are not errors: real checkpoints carry such layers beside the model
//! proper (DeepSeek-V3's multi-token-prediction layer, `model.layers.61.*`, after 61 layers).
//! They are skipped and listed by [`beyond_last_layer`], so the user sees what was left out.
//! A graph with such a layer (a training step with `mtp_depth`) reads it, except the copies of the
//! embedding and the head the layer repeats ([`mtp_shared_copies`]): the module shares those
//! parameters, so a copy is checked for shape only and its values are not read. Saving writes
//! the copies, as DeepSeek-V3's checkpoints have them.
//!
//! One file per job: `names` (Hugging Face names of parameters and layers), `matching` (which
//! checkpoint tensor feeds which parameter, every mismatch collected), `conversion` (dtype
//! conversion, quantization on load, dequantization) and `saving`; the checkpoint container
//! itself (safetensors files and sharded directories) is [`crate::checkpoint`].

use std::collections::BTreeMap;

use dsc_ir::{Graph, ValueId};

use crate::error::RuntimeError;
use crate::tensor::HostTensor;

mod conversion;
mod matching;
mod names;
mod saving;

pub(crate) use conversion::quantize_weight;
pub use dsc_ir::param_names::{EXPERT, scale_name};
pub(crate) use matching::fp8_weights;
pub use matching::load_weights;
pub use names::{beyond_last_layer, checkpoint_names, layer_count, mtp_shared_copies};
pub use saving::{hf_tensors, save_safetensors};

/// One host tensor per graph parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<ValueId, HostTensor>,
}

impl Weights {
    /// No tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tensor of parameter `id`, returning the one it replaces.
    pub fn insert(&mut self, id: ValueId, tensor: HostTensor) -> Option<HostTensor> {
        self.tensors.insert(id, tensor)
    }

    /// The tensor of parameter `id`.
    pub fn get(&self, id: ValueId) -> Option<&HostTensor> {
        self.tensors.get(&id)
    }

    /// The tensor of the parameter called `name` in `graph` (`{e}` names as the graph has them).
    pub fn by_name(&self, graph: &Graph, name: &str) -> Option<&HostTensor> {
        let id = graph.params.iter().find(|&&p| graph.name(p) == name)?;
        self.get(*id)
    }

    /// How many parameters have a tensor.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no parameter has a tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Every (parameter, tensor), in value order.
    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &HostTensor)> {
        self.tensors.iter().map(|(&id, t)| (id, t))
    }

    /// Checks that every parameter of `graph` has a tensor of exactly its dtype and shape.
    pub fn check(&self, graph: &Graph) -> Result<(), RuntimeError> {
        for &p in &graph.params {
            let want = dims(graph, p);
            match self.get(p) {
                None => {
                    return Err(tensor_err(format!(
                        "no tensor for parameter `{}`",
                        graph.name(p)
                    )));
                }
                Some(t) if t.dtype != graph.ty(p).dtype || t.shape != want => {
                    return Err(tensor_err(format!(
                        "parameter `{}` is {} {want:?}, its tensor {} {:?}",
                        graph.name(p),
                        graph.ty(p).dtype,
                        t.dtype,
                        t.shape
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn tensor_err(message: String) -> RuntimeError {
    RuntimeError::Tensor { message }
}

fn graph_err(graph: &Graph, message: String) -> RuntimeError {
    RuntimeError::Graph {
        graph: graph.name.clone(),
        message,
    }
}

/// The dimensions of a value as `usize`.
pub(crate) fn dims(graph: &Graph, id: ValueId) -> Vec<usize> {
    graph
        .ty(id)
        .shape
        .dims()
        .iter()
        .map(|&d| d as usize)
        .collect()
}

#[cfg(test)]
mod tests;
