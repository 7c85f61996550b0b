//! Deterministic random weights with realistic scales (`dsc run --random-weights SEED`).
//!
//! Each parameter draws from its own generator, seeded by the run's seed and the parameter's
//! name, so a parameter's values do not depend on which other parameters the graph has: the
//! FP8 graph and the unfolded BF16 graph of one model draw the same weights. What a parameter
//! is follows from the op that reads it (through casts, quantizes and views):
//! - linear / grouped / FP8 GEMM weights and anything else float: N(0, 0.02²);
//! - embedding tables: N(0, 1) · 0.02;
//! - rms_norm weights: 1 + N(0, 0.02²);
//! - the MoE gate's `e_score_correction_bias` (moe_topk's bias): N(0, 0.01²);
//! - linear biases (read by a high `linear`, or by the `add` after an FP8 GEMM): N(0, 0.02²),
//!   like weights, so that a bias is exercised and both forms draw the same one;
//! - integer parameters: zeros.
//!
//! FP8 parameters draw the high-precision weight (rounded to the policy's `high` dtype) and
//! quantize it exactly as loading that weight from a BF16 checkpoint does; the scale parameter
//! holds that quantization's scales. So a random FP8 model equals the same random BF16 weights
//! loaded into it.

use std::collections::{HashMap, HashSet};

use dsc_ir::{DType, Graph, OpKind, ValueId};
use dsc_kernels::fnv::fnv1a64;
use dsc_kernels::rng::SplitMix64;

use crate::error::RuntimeError;
use crate::tensor::{HostData, HostTensor, round_slice};
use crate::weights::{Weights, dims, fp8_weights, quantize_weight};

/// How a parameter's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// `mean + N(0, std²)`.
    Normal {
        mean: f32,
        std: f32,
    },
    Zeros,
}

const WEIGHT_STD: f32 = 0.02;
const NORM_NOISE_STD: f32 = 0.02;
const BIAS_CORRECTION_STD: f32 = 0.01;

/// Ops that pass a parameter through to its real consumer.
fn passes_through(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Cast
            | OpKind::Quantize
            | OpKind::Dequantize
            | OpKind::Reshape
            | OpKind::Transpose
            | OpKind::Slice
            | OpKind::Concat
    )
}

/// The first op (kind, operand index) that reads `v` for its value, looking through casts,
/// quantizes and views.
fn consumer(
    graph: &Graph,
    uses: &HashMap<ValueId, Vec<(usize, usize)>>,
    v: ValueId,
    depth: u32,
) -> Option<(OpKind, usize)> {
    for &(op, operand) in uses.get(&v)? {
        let o = &graph.ops[op];
        if passes_through(o.kind) && depth < 16 {
            if let Some(found) = o
                .results
                .first()
                .and_then(|&r| consumer(graph, uses, r, depth + 1))
            {
                return Some(found);
            }
        } else if !passes_through(o.kind) {
            return Some((o.kind, operand));
        }
    }
    None
}

/// How a parameter is initialized, from its dtype and the op that reads it.
fn init_for(graph: &Graph, uses: &HashMap<ValueId, Vec<(usize, usize)>>, p: ValueId) -> Init {
    if !graph.ty(p).dtype.is_float() {
        return Init::Zeros;
    }
    let normal = |std| Init::Normal { mean: 0.0, std };
    match consumer(graph, uses, p, 0) {
        Some((OpKind::RmsNorm | OpKind::RmsNormQuant, 1))
        | Some((OpKind::AddRmsNorm | OpKind::AddRmsNormQuant, 2)) => Init::Normal {
            mean: 1.0,
            std: NORM_NOISE_STD,
        },
        Some((OpKind::MoeTopk, 1)) => normal(BIAS_CORRECTION_STD),
        _ => normal(WEIGHT_STD),
    }
}

/// Draws `n` values of `init` from the generator of (`seed`, `name`).
fn draw(seed: u64, name: &str, init: Init, n: usize) -> Vec<f32> {
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Normal { mean, std } => {
            let mut rng = SplitMix64(seed ^ fnv1a64(name.as_bytes()));
            rng.normals(n)
                .into_iter()
                .map(|z| mean + (z * f64::from(std)) as f32)
                .collect()
        }
    }
}

/// Deterministic random weights for every parameter of `graph` (see the module documentation).
/// Fails only for a graph whose FP8 parameters lack a well-formed scale parameter.
pub fn random_weights(graph: &Graph, seed: u64) -> Result<Weights, RuntimeError> {
    let fp8 = fp8_weights(graph)?;
    let mut uses: HashMap<ValueId, Vec<(usize, usize)>> = HashMap::new();
    for (i, op) in graph.ops.iter().enumerate() {
        for (j, &v) in op.operands.iter().enumerate() {
            uses.entry(v).or_default().push((i, j));
        }
    }
    let scales: HashSet<ValueId> = fp8.values().map(|f| f.scale).collect();
    let mut weights = Weights::new();
    for &p in &graph.params {
        if scales.contains(&p) {
            continue;
        }
        let name = graph.name(p);
        let dtype = graph.ty(p).dtype;
        let shape = dims(graph, p);
        let n = shape.iter().product();
        let mut values = draw(seed, name, init_for(graph, &uses, p), n);
        if let Some(f) = fp8.get(&p) {
            round_slice(graph.policy.high, &mut values);
            let (codes, s) =
                quantize_weight(&values, &shape, f.fmt, &graph.policy).map_err(|message| {
                    RuntimeError::Graph {
                        graph: graph.name.clone(),
                        message: format!("`{name}`: {message}"),
                    }
                })?;
            weights.insert(p, HostTensor::from_codes(dtype, shape, codes)?);
            weights.insert(
                f.scale,
                HostTensor::new(DType::F32, dims(graph, f.scale), HostData::F32(s))?,
            );
        } else if dtype.is_float() {
            weights.insert(p, HostTensor::from_f32(dtype, shape, values)?);
        } else {
            weights.insert(p, HostTensor::zeros(dtype, shape));
        }
    }
    Ok(weights)
}
