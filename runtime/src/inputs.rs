//! A run's inputs: read from a safetensors file by name, or drawn at random for a quick run.

use crate::{Checkpoint, HostData, HostTensor, RuntimeError};
use dsc_ir::{DType, Graph};
use dsc_kernels::rng::SplitMix64;
use std::collections::HashMap;
use std::path::Path;

/// Reads every tensor of a safetensors file as an input of `graph`, converted to the input's
/// declared dtype; names, dtypes and shapes are checked when the run starts.
pub fn read_inputs(
    graph: &Graph,
    path: &Path,
) -> Result<HashMap<String, HostTensor>, RuntimeError> {
    let file = Checkpoint::open(path)?;
    let mut inputs = HashMap::new();
    for name in file.names() {
        let view = file.tensor(name).expect("listed names exist");
        // Convert to the declared dtype when the graph has such an input; unknown names are
        // kept as they are so the run reports them as unexpected.
        let dtype = graph
            .inputs
            .iter()
            .find(|&&v| graph.name(v) == name)
            .map_or(DType::F32, |&v| graph.ty(v).dtype);
        let t = HostTensor::from_safetensors(view.dtype, view.shape, view.data, dtype).map_err(
            |e| RuntimeError::Inputs {
                message: format!("`{name}` in {}: {e}", path.display()),
            },
        )?;
        inputs.insert(name.to_string(), t);
    }
    Ok(inputs)
}

/// Deterministic random inputs: token ids uniform over the vocabulary of the embedding that
/// reads them (zeros where no embedding does), floats standard normal.
pub fn random_inputs(graph: &Graph, seed: u64) -> HashMap<String, HostTensor> {
    let mut rng = SplitMix64(seed ^ 0x5eed_1257);
    let mut inputs = HashMap::new();
    for &v in &graph.inputs {
        let ty = graph.ty(v);
        let shape: Vec<usize> = ty.shape.dims().iter().map(|&d| d as usize).collect();
        let n = ty.shape.numel() as usize;
        let data = if ty.dtype.is_int() || ty.dtype == DType::Bool {
            let bound = graph
                .ops
                .iter()
                .filter_map(|op| op.embedding_operands().ok())
                .find(|o| o.ids == v)
                .map_or(1, |o| graph.ty(o.table).shape.dims()[0]);
            HostData::I32((0..n).map(|_| (rng.next_u64() % bound) as i32).collect())
        } else {
            let mut values: Vec<f32> = rng.normals(n).into_iter().map(|x| x as f32).collect();
            crate::tensor::round_slice(ty.dtype, &mut values);
            HostData::F32(values)
        };
        let t = HostTensor {
            dtype: ty.dtype,
            shape,
            data,
        };
        inputs.insert(graph.name(v).to_string(), t);
    }
    inputs
}

/// Checks `inputs` against the graph's: every input present with its declared dtype and shape,
/// nothing unexpected. The error lists the first problems, sorted, and how many more.
pub fn check_inputs(
    graph: &Graph,
    inputs: &HashMap<String, HostTensor>,
) -> Result<(), RuntimeError> {
    check(graph, inputs, true)
}

/// [`check_inputs`] for a run that leaves the inputs not given as the device holds them: each
/// given tensor must be a graph input of its dtype and shape, none is required.
pub fn check_given_inputs(
    graph: &Graph,
    inputs: &HashMap<String, HostTensor>,
) -> Result<(), RuntimeError> {
    check(graph, inputs, false)
}

fn check(
    graph: &Graph,
    inputs: &HashMap<String, HostTensor>,
    every_input: bool,
) -> Result<(), RuntimeError> {
    let mut problems = Vec::new();
    for &v in &graph.inputs {
        let (name, ty) = (graph.name(v), graph.ty(v));
        match inputs.get(name) {
            None if !every_input => {}
            None => problems.push(format!("missing input `{name}` ({ty})")),
            Some(t) => {
                let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                if t.dtype != ty.dtype || shape != ty.shape.dims() {
                    problems.push(format!(
                        "input `{name}` is {}{:?}, expected {ty}",
                        t.dtype, t.shape
                    ));
                }
            }
        }
    }
    for name in inputs.keys() {
        if !graph.inputs.iter().any(|&v| graph.name(v) == name) {
            problems.push(format!("unexpected input `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort();
        // As many as the weights' errors show (a weights file given as inputs names every tensor).
        let shown = crate::error::WeightProblems::SHOWN;
        let mut message = problems[..problems.len().min(shown)].join("; ");
        if problems.len() > shown {
            message += &format!("; and {} more", problems.len() - shown);
        }
        Err(RuntimeError::Inputs { message })
    }
}
