//! A compiled model on disk (DESIGN.md §5): `manifest.json`, `graph.dsc` and `kernels.ptx`,
//! loaded and checked against each other before anything runs.
//!
//! The checks here are what make the CUDA backend's raw pointer arithmetic safe: every tensor a
//! step names exists, lies inside its buffer, and has the graph's dtype and shape.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use dsc_ir::{DType, Graph, ValueId};
use dsc_kernels::manifest::{Manifest, Storage, TARGETS, TensorInfo, files};

use crate::error::RuntimeError;
use crate::tensor_maps::{self, MappedTensor};

/// A compiled model: its manifest, its final graph and its PTX.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// `manifest.json`.
    pub manifest: Manifest,
    /// `graph.dsc`, parsed and verified.
    pub graph: Graph,
    /// `kernels.ptx`, as text.
    pub ptx: String,
}

impl Artifact {
    /// Loads the artifact in `dir`: every file present, the manifest of this schema version,
    /// the graph parsed and verified, and the manifest's tensors, kernels and steps consistent
    /// with the graph (see [`check_manifest`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<Artifact, RuntimeError> {
        let dir = dir.as_ref().to_path_buf();
        let not_dir = match std::fs::metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
            Err(_) => None,
            Ok(meta) if !meta.is_dir() => Some("is not a directory"),
            Ok(_) => None,
        };
        if let Some(what) = not_dir {
            return Err(RuntimeError::ArtifactRead {
                path: dir,
                message: format!("{what}: give the directory dsc compile wrote"),
            });
        }
        let read = |file: &'static str| -> Result<(PathBuf, String), RuntimeError> {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(RuntimeError::ArtifactFile {
                    dir: dir.clone(),
                    file,
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::ArtifactRead {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok((path, text))
        };
        let (graph_path, graph_text) = read(files::GRAPH)?;
        let (manifest_path, manifest_text) = read(files::MANIFEST)?;
        let (_, ptx) = read(files::KERNELS)?;
        let manifest = Manifest::from_json(&manifest_text, &manifest_path.display().to_string())?;
        let graph = parse_graph(&graph_path, &graph_text)?;
        Artifact::from_parts(dir, manifest, graph, ptx)
    }

    /// An artifact from its parts, checked as [`Artifact::load`] checks them.
    pub fn from_parts(
        dir: PathBuf,
        manifest: Manifest,
        graph: Graph,
        ptx: String,
    ) -> Result<Artifact, RuntimeError> {
        let mut problems = check_manifest(&manifest, &graph);
        for kernel in &manifest.kernels {
            if !ptx_declares_entry(&ptx, &kernel.entry) {
                problems.push(format!(
                    "kernel `{}` is not an entry of {}",
                    kernel.entry,
                    files::KERNELS
                ));
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::ManifestMismatch {
                path: dir.join(files::MANIFEST),
                problems,
            });
        }
        Ok(Artifact {
            dir,
            manifest,
            graph,
            ptx,
        })
    }

    /// The path of `kernels.ptx`, for messages.
    pub fn ptx_path(&self) -> PathBuf {
        self.dir.join(files::KERNELS)
    }

    /// True when the artifact has a GPU launch plan (an op-free graph needs none).
    pub fn has_launch_plan(&self) -> bool {
        !self.manifest.steps.is_empty() || self.graph.ops.is_empty()
    }

    /// Ok when the artifact has a launch plan, as every artifact `dsc compile` writes has
    /// (the CUDA and emulator backends run it; a manifest without steps was cut or edited).
    pub fn require_launch_plan(&self) -> Result<(), RuntimeError> {
        if self.has_launch_plan() {
            Ok(())
        } else {
            Err(RuntimeError::NoLaunchPlan {
                message: format!(
                    "{}: `steps` is empty: the manifest has no launch plan for the graph's {} \
                     ops (recompile the model with dsc compile)",
                    self.dir.join(files::MANIFEST).display(),
                    self.graph.ops.len()
                ),
            })
        }
    }
}

/// Parses and verifies `graph.dsc`; errors carry `path:line:col`.
fn parse_graph(path: &Path, text: &str) -> Result<Graph, RuntimeError> {
    let graph = dsc_ir::text::parse(text).map_err(|e| RuntimeError::ArtifactRead {
        path: path.to_path_buf(),
        message: format!("{}:{}: {}", e.line, e.col, e.message),
    })?;
    dsc_ir::verify(&graph).map_err(|e| RuntimeError::ArtifactRead {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(graph)
}

/// True when `ptx` has `.entry NAME(` (PTX: `.visible .entry NAME(`).
fn ptx_declares_entry(ptx: &str, entry: &str) -> bool {
    ptx.match_indices(".entry").any(|(at, _)| {
        let rest = ptx[at + ".entry".len()..].trim_start();
        rest.strip_prefix(entry)
            .is_some_and(|after| after.trim_start().starts_with('('))
    })
}

/// Every way `manifest` contradicts `graph` or itself, one sentence each (empty when none):
/// graph inputs, parameters and outputs present with the graph's dtype, shape and storage kind;
/// every tensor's byte size right and inside its buffer (the arena, or the tensor it aliases);
/// every step naming a graph op, a listed kernel, and one listed tensor per kernel parameter,
/// and every TMA tensor map of a step valid and inside the tensor it maps.
pub fn check_manifest(manifest: &Manifest, graph: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    let tensors: HashMap<&str, &TensorInfo> = manifest
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    if tensors.len() != manifest.tensors.len() {
        problems.push("a tensor is listed twice".to_string());
    }

    let graph_values: HashMap<&str, ValueId> = graph
        .values
        .iter()
        .enumerate()
        .map(|(i, value)| (value.name.as_str(), ValueId(i as u32)))
        .collect();
    let expect =
        |problems: &mut Vec<String>, id: ValueId, kind: &str, ok: &dyn Fn(&Storage) -> bool| {
            let name = graph.name(id);
            match tensors.get(name) {
                None => problems.push(format!("{kind} `{name}` is not in the manifest")),
                Some(t) if !ok(&t.storage) => problems.push(format!(
                    "{kind} `{name}` has storage {:?} in the manifest",
                    t.storage
                )),
                Some(_) => {}
            }
        };
    for &v in &graph.inputs {
        expect(&mut problems, v, "input", &|s| matches!(s, Storage::Input));
    }
    for &p in &graph.params {
        expect(&mut problems, p, "weight", &|s| {
            matches!(s, Storage::Weight { .. })
        });
    }
    for &v in &graph.outputs {
        expect(&mut problems, v, "output", &|_| true);
    }

    for t in &manifest.tensors {
        let dtype: Option<DType> = t.dtype.parse().ok();
        let Some(dtype) = dtype else {
            problems.push(format!(
                "tensor `{}` has unknown dtype `{}`",
                t.name, t.dtype
            ));
            continue;
        };
        let numel: u64 = t.shape.iter().map(|&d| d as u64).product();
        if numel.saturating_mul(dtype.size_bytes()) != t.bytes {
            problems.push(format!(
                "tensor `{}` ({}{:?}) is said to be {} bytes",
                t.name, t.dtype, t.shape, t.bytes
            ));
        }
        match graph_values.get(t.name.as_str()) {
            Some(&id) => {
                let ty = graph.ty(id);
                let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                if ty.dtype != dtype || shape != ty.shape.dims() {
                    problems.push(format!(
                        "tensor `{}` is {}{:?} in the manifest but {ty} in the graph",
                        t.name, t.dtype, t.shape
                    ));
                }
            }
            None if matches!(t.storage, Storage::Input | Storage::Weight { .. }) => {
                problems.push(format!(
                    "tensor `{}` is an input or weight the graph does not have",
                    t.name
                ))
            }
            None => {}
        }
        match &t.storage {
            Storage::Arena { offset } => {
                if offset.saturating_add(t.bytes) > manifest.arena.bytes {
                    problems.push(format!(
                        "tensor `{}` ends at byte {} of an arena of {}",
                        t.name,
                        offset.saturating_add(t.bytes),
                        manifest.arena.bytes
                    ));
                }
            }
            Storage::Alias { of, offset } => match alias_root(&tensors, t) {
                Err(message) => problems.push(message),
                Ok(_) => {
                    let base = tensors[of.as_str()];
                    if offset.saturating_add(t.bytes) > base.bytes {
                        problems.push(format!(
                            "alias `{}` ends at byte {} of `{of}`, which has {}",
                            t.name,
                            offset.saturating_add(t.bytes),
                            base.bytes
                        ));
                    }
                }
            },
            Storage::Input | Storage::Weight { .. } => {}
        }
    }

    problems.extend(check_target_and_arena(manifest));
    problems.extend(check_live_overlaps(manifest, graph, &tensors));
    if manifest.steps.is_empty() && !manifest.kernels.is_empty() && !graph.ops.is_empty() {
        problems.push(format!(
            "`steps` is empty, but the manifest lists {} kernels for the graph's {} ops",
            manifest.kernels.len(),
            graph.ops.len()
        ));
    }

    let mut entries = HashSet::new();
    for kernel in &manifest.kernels {
        if !entries.insert(kernel.entry.as_str()) {
            problems.push(format!("kernel `{}` is listed twice", kernel.entry));
        }
    }
    let op_names: HashSet<&str> = graph.ops.iter().map(|op| graph.op_name(op)).collect();
    for (i, step) in manifest.steps.iter().enumerate() {
        let at = format!("step {i} (`{}`)", step.op);
        if !op_names.contains(step.op.as_str()) {
            problems.push(format!("{at}: no op of that name in the graph"));
        }
        match manifest.kernel(&step.kernel) {
            None => problems.push(format!("{at}: kernel `{}` is not listed", step.kernel)),
            Some(kernel) if kernel.params.len() != step.args.len() => problems.push(format!(
                "{at}: {} arguments for kernel `{}` of {} parameters",
                step.args.len(),
                step.kernel,
                kernel.params.len()
            )),
            Some(_) => {}
        }
        for arg in &step.args {
            if !tensors.contains_key(arg.as_str()) {
                problems.push(format!("{at}: argument `{arg}` is not a listed tensor"));
            }
        }
        if step.grid.contains(&0) || step.block.contains(&0) {
            problems.push(format!(
                "{at}: empty grid {:?} or block {:?}",
                step.grid, step.block
            ));
        }
        problems.extend(launch_beyond_limits(&at, &step.grid, &step.block));
        let mapped = |name: &str| {
            let tensor = *tensors.get(name)?;
            Some(MappedTensor {
                bytes: tensor.bytes,
                offset: buffer_offset(&tensors, tensor)?,
            })
        };
        problems.extend(tensor_maps::check_step(i, step, &manifest.target, &mapped));
    }
    problems
}

/// The ways a launch of `grid` blocks of `block` threads exceeds what the GPUs allow (no GPU
/// would run it; the CPU must not pretend it could).
fn launch_beyond_limits(at: &str, grid: &[u32; 3], block: &[u32; 3]) -> Vec<String> {
    use dsc_kernels::manifest::launch_limits::{MAX_BLOCK, MAX_GRID, MAX_THREADS_PER_BLOCK};
    let mut problems = Vec::new();
    let threads: u64 = block.iter().map(|&d| u64::from(d)).product();
    if threads > MAX_THREADS_PER_BLOCK {
        problems.push(format!(
            "{at}: block {block:?} has {threads} threads, more than the \
             {MAX_THREADS_PER_BLOCK} a block may have"
        ));
    }
    for (i, axis) in ["x", "y", "z"].iter().enumerate() {
        if u64::from(block[i]) > MAX_BLOCK[i] {
            problems.push(format!(
                "{at}: block {block:?} has {} threads along {axis}, more than {}",
                block[i], MAX_BLOCK[i]
            ));
        }
        if u64::from(grid[i]) > MAX_GRID[i] {
            problems.push(format!(
                "{at}: grid {grid:?} has {} blocks along {axis}, more than {}",
                grid[i], MAX_GRID[i]
            ));
        }
    }
    problems
}

/// The byte offset of `tensor` from the start of its buffer (its arena offset, plus the offsets
/// along an alias chain); `None` for a broken chain (reported elsewhere) or an overflow.
fn buffer_offset(tensors: &HashMap<&str, &TensorInfo>, tensor: &TensorInfo) -> Option<u64> {
    let mut current = tensor;
    let mut offset = 0u64;
    for _ in 0..=tensors.len() {
        match &current.storage {
            Storage::Alias { of, offset: step } => {
                offset = offset.checked_add(*step)?;
                current = tensors.get(of.as_str())?;
            }
            Storage::Arena { offset: base } => return offset.checked_add(*base),
            Storage::Input | Storage::Weight { .. } => return Some(offset),
        }
    }
    None
}

/// The manifest's `target` and `arena` fields: a target dsc writes, an alignment that is a power
/// of two, every arena offset a multiple of it, and an arena exactly as large as the peak of its
/// tensors (each region rounded up to the alignment, as the planner places them).
fn check_target_and_arena(manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if !TARGETS.contains(&manifest.target.as_str()) {
        problems.push(format!(
            "`target` is \"{}\": dsc writes PTX for {} only",
            manifest.target,
            TARGETS.join(" or ")
        ));
    }
    let align = manifest.arena.alignment;
    if !align.is_power_of_two() {
        problems.push(format!(
            "`arena.alignment` is {align}: it must be a power of two (dsc aligns to 256)"
        ));
        return problems;
    }
    let mut end = 0u64;
    for t in &manifest.tensors {
        if let Storage::Arena { offset } = t.storage {
            if offset % align != 0 {
                problems.push(format!(
                    "tensor `{}`: arena `offset` {offset} is not a multiple of `arena.alignment` \
                     {align}",
                    t.name
                ));
            }
            let region = t.bytes.max(1).div_ceil(align).saturating_mul(align);
            end = end.max(offset.saturating_add(region));
        }
    }
    if manifest.arena.bytes > end {
        problems.push(format!(
            "`arena.bytes` is {}, but its tensors end at byte {end} (the arena is the peak of \
             its plan)",
            manifest.arena.bytes
        ));
    }
    problems
}

/// Where an arena tensor lies and the steps it is alive over.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    bytes: u64,
    first: usize,
    /// `usize::MAX` for a graph output (kept to the end).
    last: usize,
}

/// Arena tensors alive at the same step whose bytes overlap. A tensor (or the arena tensor its
/// alias chain ends at) is alive from the first step that names it to the last; graph outputs
/// to the end. Reported up to [`SHOWN_OVERLAPS`], then counted.
fn check_live_overlaps(
    manifest: &Manifest,
    graph: &Graph,
    tensors: &HashMap<&str, &TensorInfo>,
) -> Vec<String> {
    use std::collections::BTreeMap;
    // Root arena tensor of a name (itself, or where its alias chain ends), with its offset.
    let arena_root = |name: &str| -> Option<(&str, u64, u64)> {
        let t = tensors.get(name)?;
        let root = alias_root(tensors, t).ok()?;
        match root.storage {
            Storage::Arena { offset } => Some((root.name.as_str(), offset, root.bytes.max(1))),
            _ => None,
        }
    };
    let mut live: HashMap<&str, Span> = HashMap::new();
    for (i, step) in manifest.steps.iter().enumerate() {
        for arg in &step.args {
            if let Some((name, offset, bytes)) = arena_root(arg) {
                let span = live.entry(name).or_insert(Span {
                    offset,
                    bytes,
                    first: i,
                    last: i,
                });
                span.last = i;
            }
        }
    }
    for &v in &graph.outputs {
        if let Some((name, ..)) = arena_root(graph.name(v))
            && let Some(span) = live.get_mut(name)
        {
            span.last = usize::MAX;
        }
    }
    let mut order: Vec<(&str, Span)> = live.into_iter().collect();
    order.sort_by_key(|&(name, span)| (span.first, span.offset, name));
    // The regions alive at the current step, by offset: (end, last step, name).
    let mut alive: BTreeMap<u64, (u64, usize, &str)> = BTreeMap::new();
    let mut overlaps = Vec::new();
    for (
        name,
        Span {
            offset,
            bytes,
            first,
            last,
        },
    ) in order
    {
        alive.retain(|_, &mut (_, until, _)| until >= first);
        let end = offset.saturating_add(bytes);
        let below = alive.range(..=offset).next_back();
        let above = alive.range(offset..).next();
        let clash = [below, above]
            .into_iter()
            .flatten()
            .find(|&(&start, &(stop, _, _))| start < end && offset < stop);
        match clash {
            Some((&start, &(stop, _, other))) => overlaps.push(format!(
                "tensors `{other}` (arena bytes {start}..{stop}) and `{name}` ({offset}..{end}) \
                 overlap while both are live (at step {first})"
            )),
            None => {
                alive.insert(offset, (end, last, name));
            }
        }
    }
    let more = overlaps.len().saturating_sub(SHOWN_OVERLAPS);
    overlaps.truncate(SHOWN_OVERLAPS);
    if more > 0 {
        overlaps.push(format!("{more} more overlapping tensors"));
    }
    overlaps
}

/// How many overlapping pairs a mismatch error names.
const SHOWN_OVERLAPS: usize = 3;

/// The tensor an alias chain ends at (a tensor that is not an alias), or why there is none.
pub(crate) fn alias_root<'m>(
    tensors: &HashMap<&str, &'m TensorInfo>,
    tensor: &'m TensorInfo,
) -> Result<&'m TensorInfo, String> {
    let mut current = tensor;
    for _ in 0..=tensors.len() {
        match &current.storage {
            Storage::Alias { of, .. } => {
                current = tensors.get(of.as_str()).copied().ok_or_else(|| {
                    format!("alias `{}` names `{of}`, which is not listed", tensor.name)
                })?;
            }
            _ => return Ok(current),
        }
    }
    Err(format!("alias `{}` is part of a cycle", tensor.name))
}

#[cfg(test)]
#[path = "artifact_tests.rs"]
mod tests;
