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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use dsc_ir::{DType, Graph, PrecisionPolicy, ValueId};
use dsc_kernels::numerics::fp8;
use dsc_kernels::{Fp8Format, weight_quant_experts};
use safetensors::Dtype as StDtype;

use crate::checkpoint::{Checkpoint, TensorView};
use crate::error::{RuntimeError, WeightProblems};
use crate::tensor::{
    self, HostData, HostTensor, converts_to, read_f32, round_slice, safetensors_dtype,
    write_safetensors,
};

pub use dsc_ir::param_names::{EXPERT, scale_name};

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

/// The block-scale shape of a weight `[…, N, K]`: `[…, ceil(N/block), ceil(K/block)]`.
pub(crate) fn scale_shape(shape: &[usize], block: usize) -> Option<Vec<usize>> {
    let r = shape.len();
    if r < 2 || block == 0 {
        return None;
    }
    let mut s = shape[..r - 2].to_vec();
    s.push(shape[r - 2].div_ceil(block));
    s.push(shape[r - 1].div_ceil(block));
    Some(s)
}

/// Quantizes high-precision values of a weight `[…, N, K]` with the policy's block and scale
/// format, each leading index on its own block grid: codes and `weight_scale_inv` scales.
pub(crate) fn quantize_weight(
    values: &[f32],
    shape: &[usize],
    fmt: Fp8Format,
    policy: &PrecisionPolicy,
) -> Result<(Vec<u8>, Vec<f32>), String> {
    let r = shape.len();
    if r < 2 {
        return Err(format!("an FP8 weight needs rank 2 or more, not {shape:?}"));
    }
    let lead = shape[..r - 2].iter().product();
    let q = weight_quant_experts(
        values,
        lead,
        shape[r - 2],
        shape[r - 1],
        policy.weight_block as usize,
        fmt,
        policy.scale_format,
    )
    .map_err(|e| e.to_string())?;
    Ok((q.codes, q.scales))
}

/// An FP8 weight parameter and its scale parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fp8Weight {
    pub scale: ValueId,
    pub fmt: Fp8Format,
}

/// Every FP8 parameter of the graph with its `weight_scale_inv` parameter, checked: the scale
/// parameter exists, is f32, and has the block-scale shape of the weight under the policy.
pub(crate) fn fp8_weights(graph: &Graph) -> Result<HashMap<ValueId, Fp8Weight>, RuntimeError> {
    let by_name: HashMap<&str, ValueId> =
        graph.params.iter().map(|&p| (graph.name(p), p)).collect();
    let block = graph.policy.weight_block as usize;
    let mut out = HashMap::new();
    for &p in &graph.params {
        let Some(fmt) = Fp8Format::from_dtype(graph.ty(p).dtype) else {
            continue;
        };
        let name = graph.name(p);
        let shape = dims(graph, p);
        let want = scale_shape(&shape, block).ok_or_else(|| {
            graph_err(
                graph,
                format!(
                    "FP8 parameter `{name}` {shape:?} is not a weight [.., N, K] with block {block}"
                ),
            )
        })?;
        let sname = scale_name(name);
        let &scale = by_name.get(sname.as_str()).ok_or_else(|| {
            graph_err(
                graph,
                format!("FP8 parameter `{name}` has no scale parameter `{sname}`"),
            )
        })?;
        let sty = graph.ty(scale);
        if sty.dtype != DType::F32 || dims(graph, scale) != want {
            return Err(graph_err(
                graph,
                format!("scale parameter `{sname}` is {sty}, expected f32{want:?} for `{name}`"),
            ));
        }
        out.insert(p, Fp8Weight { scale, fmt });
    }
    Ok(out)
}

/// Where one checkpoint slice of a parameter comes from.
enum Source<'a> {
    /// Converted to the parameter's dtype.
    Convert(TensorView<'a>),
    /// FP8 codes and their scales, dequantized into a high-precision parameter.
    Dequant {
        codes: TensorView<'a>,
        scales: TensorView<'a>,
        fmt: Fp8Format,
    },
    /// An FP8 parameter's codes and scales, as they are.
    Fp8 {
        codes: TensorView<'a>,
        scales: TensorView<'a>,
    },
    /// An FP8 parameter's high-precision values, quantized on load.
    Quantize(TensorView<'a>),
}

/// One parameter's slices (and its scale parameter, for an FP8 weight).
struct Plan<'a> {
    param: ValueId,
    fp8: Option<Fp8Weight>,
    names: Vec<String>,
    slice_shape: Vec<usize>,
    sources: Vec<Source<'a>>,
}

fn is_high_st(d: StDtype) -> bool {
    matches!(d, StDtype::BF16 | StDtype::F16 | StDtype::F32)
}

fn is_fp8_st(d: StDtype) -> bool {
    matches!(d, StDtype::F8_E4M3 | StDtype::F8_E5M2)
}

/// What a parameter of `dtype` accepts, for messages.
fn accepted(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 | DType::Bf16 | DType::F16 => {
            "BF16, F16 or F32 (or FP8 codes with a weight_scale_inv)"
        }
        DType::I32 | DType::I64 => "an integer dtype",
        DType::Bool => "BOOL",
        DType::F8E4M3 | DType::F8E5M2 => "FP8 with a weight_scale_inv, or BF16, F16 or F32",
    }
}

/// Matches checkpoint tensors to parameters, collecting problems and the names it used.
struct Matcher<'a> {
    ckpt: &'a Checkpoint,
    block: usize,
    problems: WeightProblems,
    claimed: HashSet<&'a str>,
}

impl<'a> Matcher<'a> {
    fn find(&mut self, name: &str) -> Option<TensorView<'a>> {
        let v = self.ckpt.tensor(name)?;
        self.claimed.insert(v.name);
        Some(v)
    }

    fn shape_ok(&mut self, v: &TensorView<'a>, want: &[usize]) -> bool {
        if v.shape == want {
            return true;
        }
        self.problems.wrong_shape.push(format!(
            "`{}`: expected {want:?}, found {:?}",
            v.name, v.shape
        ));
        false
    }

    /// Checks a scale tensor's dtype and shape.
    fn scale_ok(&mut self, s: &TensorView<'a>, want: &[usize]) -> bool {
        let shape = self.shape_ok(s, want);
        if !is_high_st(s.dtype) {
            self.problems.wrong_dtype.push(format!(
                "`{}`: expected F32 scales, found {}",
                s.name, s.dtype
            ));
            return false;
        }
        shape
    }

    /// An FP8 parameter's slice `name` (scales `sname`).
    fn plan_fp8(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        sname: &str,
        sshape: &[usize],
    ) -> Option<Source<'a>> {
        let w = self.find(name);
        let s = self.find(sname);
        let Some(w) = w else {
            self.problems.missing.push(format!(
                "`{name}`: {dtype} {shape:?} with `{sname}`, or BF16/F16/F32 to quantize on load"
            ));
            return None;
        };
        if w.dtype == safetensors_dtype(dtype) {
            let shape_ok = self.shape_ok(&w, shape);
            let Some(s) = s else {
                self.problems.missing.push(format!(
                    "`{sname}`: F32 {sshape:?}, the scales of FP8 weight `{name}`"
                ));
                return None;
            };
            let scale_ok = self.scale_ok(&s, sshape);
            (shape_ok && scale_ok).then_some(Source::Fp8 {
                codes: w,
                scales: s,
            })
        } else if is_high_st(w.dtype) {
            let shape_ok = self.shape_ok(&w, shape);
            if s.is_some() {
                self.problems.inconsistent.push(format!(
                    "`{sname}`: scales given for `{name}`, which is {} (FP8 weights come with \
                     scales; high-precision ones are quantized on load)",
                    w.dtype
                ));
                return None;
            }
            shape_ok.then_some(Source::Quantize(w))
        } else {
            self.problems.wrong_dtype.push(format!(
                "`{name}`: expected {} with `{sname}`, or BF16/F16/F32 to quantize on load; found {}",
                safetensors_dtype(dtype),
                w.dtype
            ));
            None
        }
    }

    /// A high-precision or integer parameter's slice `name`.
    fn plan_plain(&mut self, name: &str, shape: &[usize], dtype: DType) -> Option<Source<'a>> {
        let Some(w) = self.find(name) else {
            self.problems
                .missing
                .push(format!("`{name}`: {dtype} {shape:?}"));
            return None;
        };
        if converts_to(w.dtype, dtype) {
            return self.shape_ok(&w, shape).then_some(Source::Convert(w));
        }
        let sshape = scale_shape(shape, self.block);
        if let (true, true, Some(sshape)) = (dtype.is_high_float(), is_fp8_st(w.dtype), sshape) {
            let shape_ok = self.shape_ok(&w, shape);
            let sname = scale_name(name);
            let Some(s) = self.find(&sname) else {
                self.problems.missing.push(format!(
                    "`{sname}`: F32 {sshape:?}, the scales of FP8 weight `{name}` (dequantized \
                     into {dtype})"
                ));
                return None;
            };
            let scale_ok = self.scale_ok(&s, &sshape);
            let fmt = if w.dtype == StDtype::F8_E4M3 {
                Fp8Format::E4M3
            } else {
                Fp8Format::E5M2
            };
            return (shape_ok && scale_ok).then_some(Source::Dequant {
                codes: w,
                scales: s,
                fmt,
            });
        }
        self.problems.wrong_dtype.push(format!(
            "`{name}`: expected {} for {dtype}, found {}",
            accepted(dtype),
            w.dtype
        ));
        None
    }
}

/// Reads a checkpoint's tensors as the graph's parameters. Every mismatch is reported at once in
/// a [`RuntimeError::Weights`]; see the module documentation for what converts to what.
pub fn load_weights(graph: &Graph, ckpt: &Checkpoint) -> Result<Weights, RuntimeError> {
    let fp8 = fp8_weights(graph)?;
    let scales: HashSet<ValueId> = fp8.values().map(|f| f.scale).collect();
    let block = graph.policy.weight_block as usize;
    let mut m = Matcher {
        ckpt,
        block,
        problems: WeightProblems::default(),
        claimed: HashSet::new(),
    };
    let mut plans = Vec::new();
    for &p in &graph.params {
        if scales.contains(&p) {
            continue;
        }
        let dtype = graph.ty(p).dtype;
        let (names, slice_shape) = checkpoint_names(graph.name(p), &dims(graph, p));
        // An FP8 weight's scale parameter has the same leading (expert) axes, so its
        // checkpoint names pair up with the weight's one to one.
        let scale_names = fp8
            .get(&p)
            .map(|f| checkpoint_names(graph.name(f.scale), &dims(graph, f.scale)));
        let mut sources = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let source = match &scale_names {
                Some((snames, sshape)) => m.plan_fp8(name, &slice_shape, dtype, &snames[i], sshape),
                None => m.plan_plain(name, &slice_shape, dtype),
            };
            sources.extend(source);
        }
        plans.push(Plan {
            param: p,
            fp8: fp8.get(&p).copied(),
            names,
            slice_shape,
            sources,
        });
    }
    let layers = layer_count(graph);
    for name in ckpt.names() {
        if !m.claimed.contains(name) && !is_beyond(name, layers) {
            let v = ckpt.tensor(name).expect("listed names exist");
            m.problems.unexpected.push(format!(
                "`{name}`: {} {:?}, used by no parameter",
                v.dtype, v.shape
            ));
        }
    }
    let fail = |problems: WeightProblems| RuntimeError::Weights {
        checkpoint: ckpt.path().to_path_buf(),
        model: graph.name.clone(),
        problems: Box::new(problems),
    };
    if !m.problems.is_empty() {
        return Err(fail(m.problems));
    }
    let mut weights = Weights::new();
    let mut problems = WeightProblems::default();
    for plan in plans {
        if let Err(message) = materialize(graph, &plan, &mut weights) {
            problems.wrong_dtype.push(message);
        }
    }
    if problems.is_empty() {
        Ok(weights)
    } else {
        Err(fail(problems))
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

fn is_beyond(name: &str, layers: usize) -> bool {
    layers > 0 && layer_of(name).is_some_and(|i| i >= layers)
}

/// The checkpoint tensors of layers beyond the graph's last (see the module documentation),
/// which [`load_weights`] skips.
pub fn beyond_last_layer<'c>(graph: &Graph, ckpt: &'c Checkpoint) -> Vec<&'c str> {
    let layers = layer_count(graph);
    ckpt.names().filter(|n| is_beyond(n, layers)).collect()
}

/// Appends `src` to `dst` (both the same variant).
fn append(dst: &mut HostData, src: HostData) {
    match (dst, src) {
        (HostData::F32(d), HostData::F32(s)) => d.extend(s),
        (HostData::I32(d), HostData::I32(s)) => d.extend(s),
        (HostData::Codes(d), HostData::Codes(s)) => d.extend(s),
        _ => unreachable!("slices of one parameter share their storage kind"),
    }
}

/// Decodes FP8 codes `[…, N, K]` and multiplies each by its block's scale.
fn dequantize(
    codes: &[u8],
    scales: &[f32],
    shape: &[usize],
    block: usize,
    fmt: Fp8Format,
) -> Vec<f32> {
    let r = shape.len();
    let (n, k) = (shape[r - 2], shape[r - 1]);
    let (nb, kb) = (n.div_ceil(block), k.div_ceil(block));
    let mut out = Vec::with_capacity(codes.len());
    for (i, &c) in codes.iter().enumerate() {
        let (lead, row, col) = (i / (n * k), (i / k) % n, i % k);
        let s = scales[lead * nb * kb + (row / block) * kb + col / block];
        out.push(fp8::decode(fmt, c) * s);
    }
    out
}

/// Builds a planned parameter's tensor (and its scale parameter's) from its sources.
fn materialize(graph: &Graph, plan: &Plan, weights: &mut Weights) -> Result<(), String> {
    let p = plan.param;
    let dtype = graph.ty(p).dtype;
    let shape = dims(graph, p);
    let policy = &graph.policy;
    let bad = |name: &str, message: String| format!("`{name}`: {message}");
    let read_scales = |s: &TensorView| {
        read_f32(s.dtype, s.data).ok_or_else(|| bad(s.name, "not float scales".into()))
    };
    if let Some(f) = plan.fp8 {
        let mut codes = Vec::with_capacity(shape.iter().product());
        let mut scales = Vec::new();
        for (source, name) in plan.sources.iter().zip(&plan.names) {
            match source {
                Source::Fp8 {
                    codes: c,
                    scales: s,
                } => {
                    codes.extend_from_slice(c.data);
                    scales.extend(read_scales(s)?);
                }
                Source::Quantize(v) => {
                    let mut values = read_f32(v.dtype, v.data)
                        .ok_or_else(|| bad(name, "not a float tensor".into()))?;
                    round_slice(policy.high, &mut values);
                    let (c, s) = quantize_weight(&values, &plan.slice_shape, f.fmt, policy)
                        .map_err(|e| bad(name, e))?;
                    codes.extend(c);
                    scales.extend(s);
                }
                _ => unreachable!("FP8 parameters plan FP8 sources"),
            }
        }
        let t = HostTensor::from_codes(dtype, shape, codes)
            .map_err(|e| bad(graph.name(p), e.to_string()))?;
        let s = HostTensor::new(DType::F32, dims(graph, f.scale), HostData::F32(scales))
            .map_err(|e| bad(graph.name(f.scale), e.to_string()))?;
        weights.insert(p, t);
        weights.insert(f.scale, s);
        return Ok(());
    }
    let mut data = HostTensor::zeros(dtype, vec![0]).data;
    for (source, name) in plan.sources.iter().zip(&plan.names) {
        let slice = match source {
            Source::Convert(v) => {
                tensor::convert(v.dtype, v.data, dtype).map_err(|e| bad(name, e))?
            }
            Source::Dequant { codes, scales, fmt } => {
                let s = read_scales(scales)?;
                let mut values = dequantize(
                    codes.data,
                    &s,
                    &plan.slice_shape,
                    policy.weight_block as usize,
                    *fmt,
                );
                round_slice(dtype, &mut values);
                HostData::F32(values)
            }
            _ => unreachable!("plain parameters plan plain sources"),
        };
        append(&mut data, slice);
    }
    let t = HostTensor::new(dtype, shape, data).map_err(|e| bad(graph.name(p), e.to_string()))?;
    weights.insert(p, t);
    Ok(())
}

/// The weights as Hugging Face checkpoint tensors: one per parameter, `{e}` parameters unstacked
/// into one tensor per expert, in parameter order. Every parameter must have its tensor.
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
    Ok(out)
}

/// Writes the weights as one safetensors file with Hugging Face names (see [`hf_tensors`]):
/// FP8 weights as F8_E4M3/F8_E5M2 with their F32 `weight_scale_inv`, bf16 as BF16, and so on.
/// Loading the file back with [`load_weights`] gives the same weights.
pub fn save_safetensors(weights: &Weights, graph: &Graph, path: &Path) -> Result<(), RuntimeError> {
    let tensors = hf_tensors(weights, graph)?;
    write_safetensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)))
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
