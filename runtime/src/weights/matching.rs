//! Matching: which checkpoint tensor (or tensors, for grouped experts) feeds which graph
//! parameter, with an FP8 weight paired with its scale parameter and its `weight_scale_inv`;
//! every mismatch is collected into one [`RuntimeError::Weights`].

use std::collections::{HashMap, HashSet};

use dsc_ir::{DType, Graph, ValueId};
use dsc_kernels::Fp8Format;
use safetensors::Dtype as StDtype;

use super::conversion::{materialize, scale_shape};
use super::names::{checkpoint_names, is_beyond, layer_count, mtp_shared_copies};
use super::{Weights, dims, graph_err, scale_name};
use crate::checkpoint::{Checkpoint, TensorView};
use crate::error::{RuntimeError, WeightProblems};
use crate::tensor::{converts_to, safetensors_dtype};

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
pub(super) enum Source<'a> {
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
pub(super) struct Plan<'a> {
    pub param: ValueId,
    pub fp8: Option<Fp8Weight>,
    pub names: Vec<String>,
    pub slice_shape: Vec<usize>,
    pub sources: Vec<Source<'a>>,
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
        DType::F12E5M6 => "nothing (f12e5m6 is a training step's cache format)",
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
    // The copies of the shared embedding and head in multi-token-prediction layers: the shared
    // parameter's own tensor is what loads; a copy needs only the parameter's shape.
    for (copy, shared) in mtp_shared_copies(graph) {
        if let Some(v) = m.find(&copy) {
            m.shape_ok(&v, &dims(graph, shared));
        }
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
