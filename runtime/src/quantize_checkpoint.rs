//! A BF16 (or F16/F32) Hugging Face checkpoint → an FP8 one in DeepSeek-V3's layout
//! (`dsc quantize-weights`, DESIGN.md §6).
//!
//! Which tensors become FP8 is not guessed from names: the [`QuantizePlan`] is read off the
//! compiled graph, whose FP8 parameters are exactly the weights of the GEMMs the precision
//! policy runs in FP8 (roles `attn_proj ffn expert shared_expert`, overrides applied). Each
//! becomes `….weight` F8 codes plus `….weight_scale_inv` F32 block scales, quantized as
//! [`crate::load_weights`] quantizes on load (rounded to the policy's `high` dtype first), so
//! running the FP8 checkpoint gives the very logits of running the BF16 one. Everything else
//! (embedding, head, gate, norms, tensors the model does not use) is copied byte for byte.
//!
//! Shards are processed one at a time, each mapped, converted and written before the next is
//! opened, so memory stays about one shard. The output directory is written under a temporary
//! name and renamed into place at the end: a failure leaves no partial checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use dsc_ir::atomic_write::{resolved_path, write_dir_atomically};
use dsc_ir::{DType, Graph, ScaleFormat};
use dsc_kernels::{Fp8Format, weight_quant_128x128};
use safetensors::Dtype as StDtype;

use crate::checkpoint::{Checkpoint, INDEX_FILE, SINGLE_FILE, TensorView};
use crate::error::RuntimeError;
use crate::tensor::{read_f32, round_slice, safetensors_dtype};
use crate::weights::{checkpoint_names, dims, fp8_weights, scale_name};

/// The checkpoint tensors to quantize and the recipe to quantize them with.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizePlan {
    /// Checkpoint tensor name → the FP8 format its parameter takes.
    pub fp8: BTreeMap<String, Fp8Format>,
    /// Every checkpoint tensor the model reads (FP8 weights and the rest) → the shape it must
    /// have; a tensor of another shape is refused before anything is written.
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub block: usize,
    pub scale_format: ScaleFormat,
    /// The dtype weights are rounded to before quantizing (as on load).
    pub high: DType,
}

impl QuantizePlan {
    /// The FP8 weights of a compiled graph (after `fold-weights`), by checkpoint name.
    pub fn from_graph(compiled: &Graph) -> Result<QuantizePlan, RuntimeError> {
        let mut fp8 = BTreeMap::new();
        let weights = fp8_weights(compiled)?;
        for (&param, w) in &weights {
            let (names, _) = checkpoint_names(compiled.name(param), &dims(compiled, param));
            fp8.extend(names.into_iter().map(|n| (n, w.fmt)));
        }
        // The scales are written here, not read: they are not in the input checkpoint.
        let scales: BTreeSet<_> = weights.values().map(|w| w.scale).collect();
        let mut shapes = BTreeMap::new();
        for &param in compiled.params.iter().filter(|p| !scales.contains(p)) {
            let (names, shape) = checkpoint_names(compiled.name(param), &dims(compiled, param));
            shapes.extend(names.into_iter().map(|n| (n, shape.clone())));
        }
        let policy = &compiled.policy;
        Ok(QuantizePlan {
            fp8,
            shapes,
            block: policy.weight_block as usize,
            scale_format: policy.scale_format,
            high: policy.high,
        })
    }
}

/// What one finished shard held, for the progress line.
#[derive(Debug, Clone)]
pub struct ShardDone {
    /// 1-based position and the number of shards.
    pub index: usize,
    pub count: usize,
    pub file: String,
    pub quantized: usize,
    pub copied: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Totals of a finished conversion.
#[derive(Debug, Clone, Default)]
pub struct QuantizeSummary {
    pub shards: usize,
    pub quantized: usize,
    pub copied: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn read_err(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn write_err(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Write {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One tensor of an output shard: borrowed from the input mapping or freshly quantized.
struct OutTensor<'a> {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

impl safetensors::View for &OutTensor<'_> {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// `fmt` as a dsc dtype, for [`safetensors_dtype`].
fn fp8_dtype(fmt: Fp8Format) -> DType {
    match fmt {
        Fp8Format::E4M3 => DType::F8E4M3,
        Fp8Format::E5M2 => DType::F8E5M2,
    }
}

/// Quantizes one weight `[N, K]` into its codes and block scales.
fn quantize<'a>(
    v: &TensorView,
    fmt: Fp8Format,
    plan: &QuantizePlan,
) -> Result<[(String, OutTensor<'a>); 2], RuntimeError> {
    let bad = |message: String| read_err(v.file, format!("`{}`: {message}", v.name));
    let &[n, k] = v.shape else {
        return Err(bad(format!(
            "an FP8 GEMM weight is [N, K], not {:?}",
            v.shape
        )));
    };
    if !matches!(v.dtype, StDtype::BF16 | StDtype::F16 | StDtype::F32) {
        return Err(bad(format!(
            "expected BF16, F16 or F32 to quantize, found {}",
            v.dtype
        )));
    }
    let mut values = read_f32(v.dtype, v.data).ok_or_else(|| bad("not a float tensor".into()))?;
    round_slice(plan.high, &mut values);
    let q = weight_quant_128x128(&values, n, k, plan.block, fmt, plan.scale_format)
        .map_err(|e| bad(e.to_string()))?;
    let scales = OutTensor {
        dtype: StDtype::F32,
        shape: vec![n.div_ceil(plan.block), k.div_ceil(plan.block)],
        bytes: Cow::Owned(q.scales.iter().flat_map(|s| s.to_le_bytes()).collect()),
    };
    let codes = OutTensor {
        dtype: safetensors_dtype(fp8_dtype(fmt)),
        shape: vec![n, k],
        bytes: Cow::Owned(q.codes),
    };
    Ok([(v.name.to_string(), codes), (scale_name(v.name), scales)])
}

/// The shard files of the checkpoint directory `dir`, in index order, with their names;
/// checks that every weight of the plan is there.
fn shard_files(dir: &Path, plan: &QuantizePlan) -> Result<Vec<(String, PathBuf)>, RuntimeError> {
    // Opening validates every header and the index up front, so a bad shard or a missing
    // weight fails before anything is written.
    let ckpt = Checkpoint::open(dir)?;
    let missing: Vec<&String> = plan
        .fp8
        .keys()
        .filter(|n| ckpt.tensor(n).is_none())
        .collect();
    if let Some(first) = missing.first() {
        return Err(read_err(
            dir,
            format!(
                "{} weights the model runs in FP8 are not in the checkpoint, first `{first}`",
                missing.len()
            ),
        ));
    }
    let wrong: Vec<String> = plan
        .shapes
        .iter()
        .filter_map(|(name, want)| {
            let v = ckpt.tensor(name)?;
            (v.shape != want.as_slice())
                .then(|| format!("`{name}` is {:?}, the model needs {want:?}", v.shape))
        })
        .collect();
    if let Some(first) = wrong.first() {
        return Err(read_err(
            dir,
            format!(
                "{} tensors do not have the shape the model of config.json gives them, \
                 first {first}",
                wrong.len()
            ),
        ));
    }
    let files: BTreeSet<PathBuf> = ckpt.files().map(Path::to_path_buf).collect();
    Ok(files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            (name, p)
        })
        .collect())
}

/// `config.json` with the DeepSeek-V3 `quantization_config` of `plan` added.
fn fp8_config(input: &Path, plan: &QuantizePlan) -> Result<String, RuntimeError> {
    let path = input.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| read_err(&path, e.to_string()))?;
    // A byte order mark is skipped, as `dsc import` skips it.
    let json = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut config: serde_json::Value =
        serde_json::from_str(json).map_err(|e| read_err(&path, format!("invalid JSON: {e}")))?;
    let Some(map) = config.as_object_mut() else {
        return Err(read_err(&path, "config.json must be a JSON object"));
    };
    if map.get("quantization_config").is_some_and(|q| !q.is_null()) {
        return Err(read_err(
            &path,
            "the checkpoint has a `quantization_config` already: it is quantized",
        ));
    }
    let fmt = match plan.fp8.values().next() {
        Some(Fp8Format::E5M2) => "e5m2",
        _ => "e4m3",
    };
    let mut q = serde_json::json!({
        "quant_method": "fp8",
        "fmt": fmt,
        "activation_scheme": "dynamic",
        "weight_block_size": [plan.block, plan.block],
    });
    if plan.scale_format == ScaleFormat::Ue8m0 {
        q["scale_fmt"] = "ue8m0".into();
    }
    map.insert("quantization_config".into(), q);
    let mut out = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    out.push('\n');
    Ok(out)
}

/// Converts the checkpoint directory `input` into the FP8 checkpoint directory `output`
/// (which must not exist), calling `progress` after each shard.
pub fn quantize_checkpoint(
    input: &Path,
    output: &Path,
    plan: &QuantizePlan,
    progress: &mut dyn FnMut(&ShardDone),
) -> Result<QuantizeSummary, RuntimeError> {
    if output.exists() {
        return Err(write_err(
            output,
            "exists already; quantize-weights writes a new directory and replaces nothing",
        ));
    }
    if let (Ok(input_dir), Some(out)) = (input.canonicalize(), resolved_path(output))
        && out.starts_with(&input_dir)
    {
        return Err(write_err(
            output,
            format!(
                "is inside the input checkpoint {}: quantize-weights never writes into its \
                 input; choose a directory outside it",
                input.display()
            ),
        ));
    }
    let config = fp8_config(input, plan)?;
    let shards = shard_files(input, plan)?;
    write_dir_atomically(output, |tmp| {
        write_all(input, tmp, &config, &shards, plan, progress)
    })
}

/// Writes every shard, the index, config.json and the other files of `input` into `tmp`.
fn write_all(
    input: &Path,
    tmp: &Path,
    config: &str,
    shards: &[(String, PathBuf)],
    plan: &QuantizePlan,
    progress: &mut dyn FnMut(&ShardDone),
) -> Result<QuantizeSummary, RuntimeError> {
    let mut weight_map = BTreeMap::new();
    let mut summary = QuantizeSummary {
        shards: shards.len(),
        ..QuantizeSummary::default()
    };
    let mut total_size = 0u64;
    for (i, (file, path)) in shards.iter().enumerate() {
        // One shard mapped at a time: dropped (unmapped) before the next opens.
        let ckpt = Checkpoint::open(path)?;
        let mut out: Vec<(String, OutTensor)> = Vec::new();
        let (mut quantized, mut copied) = (0, 0);
        for name in ckpt.names() {
            let v = ckpt.tensor(name).expect("listed names exist");
            if let Some(&fmt) = plan.fp8.get(name) {
                if ckpt.tensor(&scale_name(name)).is_some() {
                    return Err(read_err(
                        path,
                        format!("`{name}` comes with a `weight_scale_inv` already"),
                    ));
                }
                out.extend(quantize(&v, fmt, plan)?);
                quantized += 1;
            } else {
                out.push((
                    name.to_string(),
                    OutTensor {
                        dtype: v.dtype,
                        shape: v.shape.to_vec(),
                        bytes: Cow::Borrowed(v.data),
                    },
                ));
                copied += 1;
            }
        }
        let dest = tmp.join(file);
        for (name, t) in &out {
            weight_map.insert(name.clone(), file.clone());
            total_size += t.bytes.len() as u64;
        }
        safetensors::serialize_to_file(out.iter().map(|(n, t)| (n.as_str(), t)), None, &dest)
            .map_err(|e| write_err(&dest, e.to_string()))?;
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let done = ShardDone {
            index: i + 1,
            count: shards.len(),
            file: file.clone(),
            quantized,
            copied,
            bytes_in: size(path),
            bytes_out: size(&dest),
        };
        summary.quantized += quantized;
        summary.copied += copied;
        summary.bytes_in += done.bytes_in;
        summary.bytes_out += done.bytes_out;
        progress(&done);
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total_size},
        "weight_map": weight_map,
    });
    let index_path = tmp.join(INDEX_FILE);
    let mut index_text = serde_json::to_string_pretty(&index).expect("a JSON value serializes");
    index_text.push('\n');
    fs::write(&index_path, index_text).map_err(|e| write_err(&index_path, e.to_string()))?;
    let config_path = tmp.join("config.json");
    fs::write(&config_path, config).map_err(|e| write_err(&config_path, e.to_string()))?;
    copy_other_files(input, tmp, shards)?;
    Ok(summary)
}

/// Copies the files that are neither shards, index nor config.json (tokenizer, generation
/// config, …) as they are.
fn copy_other_files(
    input: &Path,
    tmp: &Path,
    shards: &[(String, PathBuf)],
) -> Result<(), RuntimeError> {
    let entries = fs::read_dir(input).map_err(|e| read_err(input, e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_err(input, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = name == "config.json"
            || name == INDEX_FILE
            || name == SINGLE_FILE
            || shards.iter().any(|(f, _)| *f == name)
            || !entry.path().is_file();
        if !skip {
            let dest = tmp.join(&name);
            fs::copy(entry.path(), &dest).map_err(|e| write_err(&dest, e.to_string()))?;
        }
    }
    Ok(())
}
