//! Planning: from the final graph to the launch plan of the manifest — a kernel per op
//! ([`select`]), kernels identical across layers listed once, launch shapes from the static
//! shapes, and every intermediate placed in one arena ([`arena`]).

pub mod arena;
pub mod select;

use std::collections::{BTreeMap, HashMap};

use dsc_ir::{Graph, ValueDef, ValueId};
use dsc_kernels::cost::op_cost;
use dsc_kernels::manifest::{
    ArenaInfo, KernelInfo, LaunchStep, Manifest, SCHEMA_VERSION, Storage, TensorInfo,
};

use crate::Target;
use crate::error::CodegenError;
use crate::kernels::GpuKernel;
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

/// Plans `g` for `target`.
pub fn plan(g: &Graph, target: Target) -> Result<Program, CodegenError> {
    let defs = g.defs();
    // The value whose bytes each value uses (itself, or what a reshape chain aliases).
    let mut root: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
    let mut steps = Vec::new();
    let mut kernels: Vec<(String, GpuKernel)> = Vec::new();
    let mut kernel_index: HashMap<String, usize> = HashMap::new();
    // Per step, the values it reads and writes (for liveness).
    let mut step_values: Vec<(Vec<ValueId>, Vec<ValueId>)> = Vec::new();

    for op in &g.ops {
        match select(g, op)? {
            Selection::Alias => {
                root[op.results[0].index()] = root[op.operands[0].index()];
            }
            Selection::Launch { kernel, args } => {
                let entry = kernel.entry();
                let launch = kernel.launch();
                if !kernel_index.contains_key(&entry) {
                    kernel_index.insert(entry.clone(), kernels.len());
                    kernels.push((entry.clone(), kernel));
                }
                let cost = op_cost(g, op);
                steps.push(LaunchStep {
                    op: g.op_name(op).to_string(),
                    kernel: entry,
                    grid: launch.grid,
                    block: launch.block,
                    shared_bytes: 0,
                    args: args.iter().map(|&v| g.name(v).to_string()).collect(),
                    flops: cost.flops,
                    bytes: cost.bytes,
                });
                step_values.push((
                    op.operands.iter().map(|&v| root[v.index()]).collect(),
                    op.results.clone(),
                ));
            }
        }
    }

    // Lifetimes of the values that own arena bytes: results of launched steps.
    let outputs: Vec<ValueId> = g.outputs.iter().map(|&v| root[v.index()]).collect();
    let mut first: BTreeMap<ValueId, usize> = BTreeMap::new();
    let mut last: HashMap<ValueId, usize> = HashMap::new();
    let mut order: Vec<ValueId> = Vec::new();
    for (step, (reads, writes)) in step_values.iter().enumerate() {
        for &v in reads {
            last.insert(v, step);
        }
        for &v in writes {
            if first.insert(v, step).is_none() {
                order.push(v);
            }
            last.entry(v).or_insert(step);
        }
    }
    let lifetimes: Vec<Lifetime> = order
        .iter()
        .map(|&v| Lifetime {
            bytes: g.ty(v).size_bytes(),
            first: first[&v],
            last: if outputs.contains(&v) {
                usize::MAX
            } else {
                last[&v]
            },
        })
        .collect();
    let arena = plan_arena(&lifetimes, ARENA_ALIGNMENT);
    let offsets: HashMap<ValueId, u64> = order.iter().copied().zip(arena.offsets.clone()).collect();

    let mut tensors = Vec::with_capacity(g.values.len());
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
            Some(ValueDef::OpResult { .. }) => match offsets.get(&id) {
                Some(&offset) => Storage::Arena { offset },
                // A result no step writes (its op selected nothing): cannot happen for ops
                // with kernels, and aliases are handled above.
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

    let kernel_infos = kernels
        .iter()
        .map(|(entry, kernel)| KernelInfo {
            entry: entry.clone(),
            spec: kernel.spec().to_string(),
            attrs: kernel.attrs(),
            params: kernel.params().iter().map(|p| p.name.to_string()).collect(),
            block: kernel.launch().block,
            shared_bytes: 0,
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
