//! Planning: from the final graph to the launch plan of the manifest — a kernel per op
//! ([`select`]), kernels identical across layers listed once, launch shapes from the static
//! shapes, every intermediate placed in one arena ([`arena`]), and the expert-contiguous
//! dispatch layout inserted before a layer's first grouped GEMM (two launches when its grid has
//! several blocks: the blocks' expert counts, then the layout).

pub mod arena;
pub mod select;

use std::collections::HashMap;

use dsc_ir::{DType, Graph, OpKind, ValueDef, ValueId};
use dsc_kernels::cost::op_cost;
use dsc_kernels::manifest::{
    ArenaInfo, KernelInfo, LaunchStep, Manifest, SCHEMA_VERSION, Storage, TensorInfo,
};

use crate::Target;
use crate::error::CodegenError;
use crate::kernels::GpuKernel;
use crate::kernels::flash_attention::AttentionForm;
use crate::kernels::fp8_gemm::GemmForm;
use crate::kernels::moe_dispatch::TILE_ROWS;
use arena::{Lifetime, plan_arena};
use select::{Selection, select};

/// Alignment of every arena offset (what cudaMalloc guarantees for a whole allocation).
pub const ARENA_ALIGNMENT: u64 = 256;

/// A planned program: the manifest and the distinct kernels to build, by entry name.
#[derive(Debug, Clone)]
pub struct Program {
    /// The manifest (without PTX).
    pub manifest: Manifest,
    /// Each distinct kernel once, in first-use order.
    pub kernels: Vec<(String, GpuKernel)>,
}

/// A tensor of the plan: a graph value, or one the plan adds (a dispatch layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Tensor {
    Value(ValueId),
    Internal(usize),
}

/// A tensor the plan adds, with no graph value behind it.
struct Internal {
    name: String,
    dtype: DType,
    len: u64,
}

/// One launch being planned.
struct PlannedStep {
    op: String,
    entry: String,
    kernel: GpuKernel,
    args: Vec<Tensor>,
    /// Arguments the kernel writes (the rest it reads).
    writes: usize,
    /// Operands of the op the kernel does not read (a grouped GEMM's expert indices, replaced
    /// by the dispatch layout): kept alive to the step all the same, because the op reads
    /// them (a step-by-step check reads them before it, as the CPU reference's operands).
    keeps: Vec<Tensor>,
    flops: u64,
    bytes: u64,
}

/// The form of `kernel` for `target`: on sm_90a a tensor-core FP8 GEMM runs on wgmma,
/// pipelined with TMA; on sm_89 on mma.sync, pipelined with cp.async and ldmatrix.
fn for_target(kernel: GpuKernel, target: Target) -> GpuKernel {
    match kernel {
        GpuKernel::Fp8Gemm(mut gemm)
            if target == Target::Sm90a
                && gemm.form == GemmForm::MmaSync
                && crate::kernels::fp8_gemm_tma::eligible(&gemm) =>
        {
            let tiles = crate::kernels::fp8_gemm_tma::tiles_for(&gemm);
            gemm.form = GemmForm::WgmmaTma {
                block_m: tiles.block_m,
                block_n: tiles.block_n,
                stages: tiles.stages,
            };
            GpuKernel::Fp8Gemm(gemm)
        }
        GpuKernel::Fp8Gemm(mut gemm)
            if target == Target::Sm89
                && gemm.form == GemmForm::MmaSync
                && crate::kernels::fp8_gemm_cp_async::eligible(&gemm) =>
        {
            let tiles = crate::kernels::fp8_gemm_cp_async::tiles_for(&gemm);
            gemm.form = GemmForm::MmaPipelined {
                block_m: tiles.block_m,
                block_n: tiles.block_n,
                stages: tiles.stages,
            };
            GpuKernel::Fp8Gemm(gemm)
        }
        GpuKernel::Linear(linear)
            if target == Target::Sm90a && crate::kernels::linear_wgmma::eligible(&linear) =>
        {
            GpuKernel::LinearWgmma(crate::kernels::linear_wgmma::LinearWgmma::new(linear))
        }
        GpuKernel::FlashAttention(mut attention) if target == Target::Sm90a => {
            attention.form = AttentionForm::WgmmaTma;
            if !crate::kernels::flash_attention_tma::eligible(&attention) {
                attention.form = AttentionForm::Wgmma;
            }
            GpuKernel::FlashAttention(attention)
        }
        kernel => kernel,
    }
}

/// The op that produces `v`, looking through casts.
fn producer_through_casts<'g>(
    g: &'g Graph,
    defs: &HashMap<ValueId, ValueDef>,
    v: ValueId,
) -> Option<&'g dsc_ir::Op> {
    let producer = |v: ValueId| match defs.get(&v) {
        Some(&ValueDef::OpResult { op, .. }) => Some(&g.ops[op]),
        _ => None,
    };
    let mut p = producer(v);
    while let Some(cast) = p.filter(|o| o.kind == OpKind::Cast) {
        p = producer(cast.operands[0]);
    }
    p
}

/// The causal `attn_scores` op that `v` is (through casts), when its shape is `v`'s.
fn causal_scores<'g>(
    g: &'g Graph,
    defs: &HashMap<ValueId, ValueDef>,
    v: ValueId,
) -> Option<&'g dsc_ir::Op> {
    producer_through_casts(g, defs, v).filter(|o| {
        o.kind == OpKind::AttnScores
            && o.attrs.bool("causal") == Some(true)
            && g.ty(o.results[0]).shape.dims() == g.ty(v).shape.dims()
    })
}

/// Kernels over causal attention scores skip the masked keys: a softmax of them reads only the
/// visible ones, and `attn_values` of that softmax (through casts) sums only those, the masked
/// probabilities being exact zeros.
fn with_causal_attention(
    kernel: GpuKernel,
    g: &Graph,
    op: &dsc_ir::Op,
    defs: &HashMap<ValueId, ValueDef>,
) -> GpuKernel {
    match kernel {
        GpuKernel::Softmax(mut softmax) => {
            if let Some(scores) = causal_scores(g, defs, op.operands[0]) {
                let dims = g.ty(scores.results[0]).shape.dims().to_vec();
                softmax.causal_q_len = dims.get(2).copied();
            }
            GpuKernel::Softmax(softmax)
        }
        GpuKernel::AttnValues(mut values) => {
            let p = producer_through_casts(g, defs, op.operands[0]);
            // A softmax keeps its input's shape, so the scores are `p`'s shape.
            values.causal = p
                .filter(|o| o.kind == OpKind::Softmax)
                .and_then(|softmax| causal_scores(g, defs, softmax.operands[0]))
                .is_some();
            GpuKernel::AttnValues(values)
        }
        kernel => kernel,
    }
}

/// The manifest's `shared_bytes` of `kernel`: its dynamic shared memory (a kernel over `u32`
/// bytes fails the launch limits check).
fn dynamic_shared(kernel: &GpuKernel) -> u32 {
    u32::try_from(kernel.dynamic_shared_bytes()).unwrap_or(u32::MAX)
}

/// For each op, the arena value whose bytes its result takes in place, if any: the sum of an
/// `add_rms_norm(_quant)` takes those of an operand that op reads last (no later op or output
/// reads it, through reshapes either), since the kernel reads each element of its operands
/// before it writes the sum's there, in the same thread. The residual stream then needs no
/// second buffer at each fused norm.
fn results_in_place(g: &Graph, defs: &HashMap<ValueId, ValueDef>) -> Vec<Option<ValueId>> {
    let mut root: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
    let mut last_read = vec![0usize; g.values.len()];
    for (k, op) in g.ops.iter().enumerate() {
        if op.kind == OpKind::Reshape {
            root[op.results[0].index()] = root[op.operands[0].index()];
        }
        for &v in &op.operands {
            last_read[root[v.index()].index()] = k;
        }
    }
    for &v in &g.outputs {
        last_read[root[v.index()].index()] = usize::MAX;
    }
    g.ops
        .iter()
        .enumerate()
        .map(|(k, op)| {
            if !matches!(op.kind, OpKind::AddRmsNorm | OpKind::AddRmsNormQuant) {
                return None;
            }
            let sum = *op.results.last()?;
            op.operands.iter().take(2).rev().find_map(|&v| {
                let r = root[v.index()];
                let owned = matches!(defs.get(&r), Some(ValueDef::OpResult { .. }));
                let fits = g.ty(r).size_bytes() == g.ty(sum).size_bytes();
                (owned && fits && last_read[r.index()] == k).then_some(r)
            })
        })
        .collect()
}

/// Plans `g` for `target`.
pub fn plan(g: &Graph, target: Target) -> Result<Program, CodegenError> {
    let defs = g.defs();
    let in_place = results_in_place(g, &defs);
    // The value whose bytes each value uses (itself, or what a reshape chain aliases).
    let mut root: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
    let mut planned: Vec<PlannedStep> = Vec::new();
    let mut internals: Vec<Internal> = Vec::new();
    // The dispatch layout (rows, tiles) built for each expert-index tensor.
    let mut dispatched: HashMap<(ValueId, u64), (usize, usize)> = HashMap::new();

    for (k, op) in g.ops.iter().enumerate() {
        if let (Some(operand), Some(&sum)) = (in_place[k], op.results.last()) {
            // The operand may itself hold an earlier sum in place: its bytes are its root's.
            root[sum.index()] = root[operand.index()];
        }
        let (kernel, args) = match select(g, op)? {
            Selection::Alias => {
                root[op.results[0].index()] = root[op.operands[0].index()];
                continue;
            }
            Selection::Launch { kernel, args } => (*kernel, args),
        };
        let kernel = for_target(kernel, target);
        let kernel = with_causal_attention(kernel, g, op, &defs);
        let name = g.op_name(op).to_string();
        let cost = op_cost(g, op);
        let mut tensors: Vec<Tensor> = args
            .iter()
            .map(|&v| Tensor::Value(root[v.index()]))
            .collect();
        let mut keeps = Vec::new();
        if let GpuKernel::Fp8Gemm(gemm) = &kernel
            && matches!(
                gemm.form,
                GemmForm::MmaSync | GemmForm::WgmmaTma { .. } | GemmForm::MmaPipelined { .. }
            )
            && let Some(grouped) = gemm.grouped
        {
            // The indices operand is replaced by the expert-contiguous layout, built once per
            // indices tensor, right before its first GEMM (as part of that op).
            let indices = op
                .fp8_gemm_operands()
                .ok()
                .and_then(|o| o.indices)
                .ok_or_else(|| CodegenError::Selection {
                    op: name.clone(),
                    kind: op.kind.name(),
                    message: "a grouped GEMM kernel needs an fp8_gemm with indices".into(),
                })?;
            let indices = root[indices.index()];
            let dispatch = gemm.dispatch(grouped);
            let (rows, tiles) = match dispatched.get(&(indices, dispatch.tile_rows)) {
                Some(&layout) => layout,
                None => {
                    let base = match dispatch.tile_rows {
                        TILE_ROWS => g.name(indices).to_string(),
                        tile => format!("{}.tile{tile}", g.name(indices)),
                    };
                    let mut args = vec![Tensor::Value(indices)];
                    let mut counts_bytes = 0;
                    // A grid of several blocks: their per-expert counts first (a launch of
                    // its own, the dispatch's segment starts need every block's).
                    if let Some(counts) = dispatch.counts() {
                        let at = internals.len();
                        internals.push(Internal {
                            name: format!("{base}.dispatch_counts"),
                            dtype: DType::I32,
                            len: counts.counts_len(),
                        });
                        counts_bytes = 4 * counts.counts_len();
                        let kernel = GpuKernel::MoeDispatchCounts(counts);
                        planned.push(PlannedStep {
                            op: name.clone(),
                            entry: kernel.entry(),
                            kernel,
                            args: vec![Tensor::Value(indices), Tensor::Internal(at)],
                            writes: 1,
                            keeps: Vec::new(),
                            flops: 0,
                            bytes: g.ty(indices).size_bytes() + counts_bytes,
                        });
                        args.push(Tensor::Internal(at));
                    }
                    let rows = internals.len();
                    internals.push(Internal {
                        name: format!("{base}.dispatch_rows"),
                        dtype: DType::I32,
                        len: dispatch.capacity(),
                    });
                    internals.push(Internal {
                        name: format!("{base}.dispatch_tiles"),
                        dtype: DType::I32,
                        len: dispatch.capacity() / dispatch.tile_rows,
                    });
                    args.extend([Tensor::Internal(rows), Tensor::Internal(rows + 1)]);
                    let kernel = GpuKernel::MoeDispatch(dispatch);
                    planned.push(PlannedStep {
                        op: name.clone(),
                        entry: kernel.entry(),
                        kernel,
                        args,
                        writes: 2,
                        keeps: Vec::new(),
                        flops: 0,
                        bytes: g.ty(indices).size_bytes()
                            + counts_bytes
                            + 4 * dispatch.capacity() * (dispatch.tile_rows + 1)
                                / dispatch.tile_rows,
                    });
                    dispatched.insert((indices, dispatch.tile_rows), (rows, rows + 1));
                    (rows, rows + 1)
                }
            };
            keeps.push(Tensor::Value(indices));
            tensors.splice(4..5, [Tensor::Internal(rows), Tensor::Internal(tiles)]);
        }
        // A tensor map's parameter gets the tensor it maps (the backend puts the map there).
        for (over, map) in kernel.tensor_maps() {
            let tensor = tensors[over];
            tensors.insert(map.param, tensor);
        }
        planned.push(PlannedStep {
            op: name,
            entry: kernel.entry(),
            kernel,
            writes: op.results.len(),
            keeps,
            args: tensors,
            flops: cost.flops,
            bytes: cost.bytes,
        });
    }

    let tensor_name = |t: Tensor| -> String {
        match t {
            Tensor::Value(v) => g.name(v).to_string(),
            Tensor::Internal(i) => internals[i].name.clone(),
        }
    };
    let tensor_bytes = |t: Tensor| -> u64 {
        match t {
            Tensor::Value(v) => g.ty(v).size_bytes(),
            Tensor::Internal(i) => internals[i].len * internals[i].dtype.size_bytes(),
        }
    };

    // Lifetimes of the tensors that own arena bytes: what the steps write.
    let outputs: Vec<Tensor> = g
        .outputs
        .iter()
        .map(|&v| Tensor::Value(root[v.index()]))
        .collect();
    let mut first: HashMap<Tensor, usize> = HashMap::new();
    let mut last: HashMap<Tensor, usize> = HashMap::new();
    let mut order: Vec<Tensor> = Vec::new();
    for (step, planned_step) in planned.iter().enumerate() {
        let split = planned_step.args.len() - planned_step.writes;
        let (reads, writes) = planned_step.args.split_at(split);
        for &t in reads.iter().chain(&planned_step.keeps) {
            last.insert(t, step);
        }
        for &t in writes {
            if let std::collections::hash_map::Entry::Vacant(slot) = first.entry(t) {
                slot.insert(step);
                order.push(t);
            }
            last.entry(t).or_insert(step);
        }
    }
    let lifetimes: Vec<Lifetime> = order
        .iter()
        .map(|t| Lifetime {
            bytes: tensor_bytes(*t),
            first: first[t],
            last: if outputs.contains(t) {
                usize::MAX
            } else {
                last[t]
            },
        })
        .collect();
    let arena = plan_arena(&lifetimes, ARENA_ALIGNMENT);
    let offsets: HashMap<Tensor, u64> = order.iter().copied().zip(arena.offsets.clone()).collect();

    let mut tensors = Vec::with_capacity(g.values.len() + internals.len());
    for (i, value) in g.values.iter().enumerate() {
        let id = ValueId(i as u32);
        let storage = match defs.get(&id) {
            Some(ValueDef::Input(_)) => Storage::Input,
            Some(ValueDef::Param(_)) => Storage::Weight {
                experts: value
                    .name
                    .contains(dsc_ir::param_names::EXPERT)
                    .then(|| value.ty.shape.dims()[0] as usize),
            },
            Some(ValueDef::OpResult { .. }) if root[i] != id => Storage::Alias {
                of: g.name(root[i]).to_string(),
                offset: 0,
            },
            Some(ValueDef::OpResult { .. }) => match offsets.get(&Tensor::Value(id)) {
                Some(&offset) => Storage::Arena { offset },
                None => continue,
            },
            None => continue,
        };
        tensors.push(TensorInfo {
            name: value.name.clone(),
            dtype: value.ty.dtype.name().to_string(),
            shape: value.ty.shape.dims().iter().map(|&d| d as usize).collect(),
            bytes: value.ty.size_bytes(),
            storage,
        });
    }
    for (i, internal) in internals.iter().enumerate() {
        tensors.push(TensorInfo {
            name: internal.name.clone(),
            dtype: internal.dtype.name().to_string(),
            shape: vec![internal.len as usize],
            bytes: tensor_bytes(Tensor::Internal(i)),
            storage: Storage::Arena {
                offset: offsets[&Tensor::Internal(i)],
            },
        });
    }

    let mut kernels: Vec<(String, GpuKernel)> = Vec::new();
    let mut steps = Vec::with_capacity(planned.len());
    for planned_step in planned {
        if !kernels
            .iter()
            .any(|(entry, _)| *entry == planned_step.entry)
        {
            kernels.push((planned_step.entry.clone(), planned_step.kernel.clone()));
        }
        let launch = planned_step.kernel.launch();
        steps.push(LaunchStep {
            op: planned_step.op,
            kernel: planned_step.entry,
            grid: launch.grid,
            block: launch.block,
            shared_bytes: dynamic_shared(&planned_step.kernel),
            args: planned_step.args.iter().map(|&t| tensor_name(t)).collect(),
            flops: planned_step.flops,
            bytes: planned_step.bytes,
            tensor_maps: planned_step
                .kernel
                .tensor_maps()
                .into_iter()
                .map(|(_, map)| map)
                .collect(),
        });
    }

    let kernel_infos = kernels
        .iter()
        .map(|(entry, kernel)| KernelInfo {
            entry: entry.clone(),
            spec: kernel.spec().to_string(),
            attrs: kernel.attrs(),
            params: kernel.params().iter().map(|p| p.name.to_string()).collect(),
            block: kernel.launch().block,
            shared_bytes: dynamic_shared(kernel),
        })
        .collect();

    Ok(Program {
        manifest: Manifest {
            schema_version: SCHEMA_VERSION,
            model: g.name.clone(),
            target: target.to_string(),
            tensors,
            arena: ArenaInfo {
                bytes: arena.bytes,
                no_reuse_bytes: arena.no_reuse_bytes,
                alignment: ARENA_ALIGNMENT,
            },
            kernels: kernel_infos,
            steps,
        },
        kernels,
    })
}
