//! Where each tensor of a manifest lives on a device, whatever the device: one buffer per input
//! and per weight, one arena for everything else. Tensors are places in those buffers
//! ([`Placement`]): an arena tensor at its offset, an alias at its target's place plus its
//! offset. The CUDA and emulator backends allocate the same plan, and copy tensors in and out
//! of it the same way ([`PlanBuffers`]).

use std::collections::HashMap;

use dsc_ir::{DType, Graph, ValueId};
use dsc_kernels::manifest::{Manifest, Storage, TensorInfo};

use crate::artifact::{Artifact, alias_root, check_manifest};
use crate::error::RuntimeError;
use crate::tensor::{HostTensor, safetensors_dtype};
use crate::weights::Weights;

/// Which device buffer holds a tensor's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferId {
    /// The arena.
    Arena,
    /// The n-th input buffer.
    Input(usize),
    /// The n-th weight buffer.
    Weight(usize),
}

/// Where a tensor lives: a buffer, a byte offset in it, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub buffer: BufferId,
    pub offset: u64,
    pub bytes: u64,
}

/// What a tensor's bytes hold, to read them back as a [`HostTensor`]: the dtype (parsed once,
/// when the plan is made) and the shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostLayout {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// The buffers a manifest needs and where each tensor lives in them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemoryPlan {
    /// Input tensors, one buffer each, in manifest order.
    pub inputs: Vec<TensorInfo>,
    /// Weight tensors, one buffer each, in manifest order.
    pub weights: Vec<TensorInfo>,
    /// Arena bytes.
    pub arena_bytes: u64,
    /// Every tensor's place.
    pub placements: HashMap<String, Placement>,
    /// Every tensor's dtype and shape.
    pub layouts: HashMap<String, HostLayout>,
}

impl MemoryPlan {
    /// The plan of `artifact`'s manifest, checked again against its graph: backends trust the
    /// manifest's offsets and sizes, and an `Artifact`'s fields are public and may have changed
    /// since it was loaded.
    pub(crate) fn of_artifact(artifact: &Artifact) -> Result<MemoryPlan, RuntimeError> {
        let mismatch = |problems| RuntimeError::ManifestMismatch {
            path: artifact.dir.join(dsc_kernels::manifest::files::MANIFEST),
            problems,
        };
        let problems = check_manifest(&artifact.manifest, &artifact.graph);
        if !problems.is_empty() {
            return Err(mismatch(problems));
        }
        MemoryPlan::new(&artifact.manifest).map_err(|problem| mismatch(vec![problem]))
    }

    /// The plan of a manifest already checked by [`crate::artifact::check_manifest`].
    pub(crate) fn new(manifest: &Manifest) -> Result<MemoryPlan, String> {
        let by_name: HashMap<&str, &TensorInfo> = manifest
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let mut plan = MemoryPlan {
            inputs: Vec::new(),
            weights: Vec::new(),
            arena_bytes: manifest.arena.bytes,
            placements: HashMap::new(),
            layouts: HashMap::new(),
        };
        for t in &manifest.tensors {
            let dtype = t
                .dtype
                .parse()
                .map_err(|_| format!("tensor `{}` has unknown dtype `{}`", t.name, t.dtype))?;
            plan.layouts.insert(
                t.name.clone(),
                HostLayout {
                    dtype,
                    shape: t.shape.clone(),
                },
            );
            let buffer = match t.storage {
                Storage::Input => {
                    plan.inputs.push(t.clone());
                    BufferId::Input(plan.inputs.len() - 1)
                }
                Storage::Weight { .. } => {
                    plan.weights.push(t.clone());
                    BufferId::Weight(plan.weights.len() - 1)
                }
                Storage::Arena { offset } => {
                    plan.placements.insert(
                        t.name.clone(),
                        Placement {
                            buffer: BufferId::Arena,
                            offset,
                            bytes: t.bytes,
                        },
                    );
                    continue;
                }
                Storage::Alias { .. } => continue,
            };
            plan.placements.insert(
                t.name.clone(),
                Placement {
                    buffer,
                    offset: 0,
                    bytes: t.bytes,
                },
            );
        }
        // Aliases: the root's place plus the offsets along the chain.
        for t in &manifest.tensors {
            if !matches!(t.storage, Storage::Alias { .. }) {
                continue;
            }
            let root = alias_root(&by_name, t)?;
            let mut offset = 0u64;
            let mut current = t;
            while let Storage::Alias { of, offset: step } = &current.storage {
                offset += step;
                current = by_name[of.as_str()];
            }
            let base = plan.placements[root.name.as_str()];
            if offset + t.bytes > base.bytes {
                return Err(format!(
                    "alias `{}` ends at byte {} of `{}`, which has {}",
                    t.name,
                    offset + t.bytes,
                    root.name,
                    base.bytes
                ));
            }
            plan.placements.insert(
                t.name.clone(),
                Placement {
                    buffer: base.buffer,
                    offset: base.offset + offset,
                    bytes: t.bytes,
                },
            );
        }
        Ok(plan)
    }

    /// Bytes of every buffer together.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .chain(&self.weights)
            .map(|t| t.bytes)
            .sum::<u64>()
            + self.arena_bytes
    }

    /// The place of tensor `name`.
    pub(crate) fn placement(&self, name: &str) -> Result<Placement, RuntimeError> {
        self.placements
            .get(name)
            .copied()
            .ok_or_else(|| RuntimeError::Tensor {
                message: format!("no device tensor `{name}`"),
            })
    }

    /// The place of tensor `name` for an upload of `len` bytes, which must be the whole tensor.
    pub(crate) fn upload_placement(
        &self,
        name: &str,
        len: usize,
    ) -> Result<Placement, RuntimeError> {
        let place = self.placement(name)?;
        if len as u64 != place.bytes {
            return Err(RuntimeError::Tensor {
                message: format!(
                    "`{name}` is {} bytes on the device, {len} given",
                    place.bytes
                ),
            });
        }
        Ok(place)
    }

    /// The dtype and shape of manifest tensor `name`.
    pub(crate) fn layout(&self, name: &str) -> Result<&HostLayout, RuntimeError> {
        self.layouts.get(name).ok_or_else(|| RuntimeError::Tensor {
            message: format!("no tensor `{name}` in the manifest"),
        })
    }
}

/// Which inputs a run copies to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputsIn {
    /// Every input of the graph (a missing one is an error).
    Every,
    /// Those given; the others keep what the device holds from an earlier run or copy.
    Given,
}

/// The allocated buffers of a [`MemoryPlan`] on some device (CUDA, the emulator): whole-tensor
/// copies in and out by name, and, built on them, what every run does the same way on every
/// such device — inputs and weights in by the plan, tensors and outputs back.
pub(crate) trait PlanBuffers {
    /// The plan the buffers follow.
    fn plan(&self) -> &MemoryPlan;

    /// Copies `bytes` into tensor `name` (the whole tensor).
    fn upload(&mut self, name: &str, bytes: &[u8]) -> Result<(), RuntimeError>;

    /// Copies tensor `name` into `host` (resized to its bytes); the copy is finished on return.
    fn download(&self, name: &str, host: &mut Vec<u8>) -> Result<(), RuntimeError>;

    /// Copies the bytes of tensor `from` onto tensor `to` on the device (the same size), without
    /// a round trip through the host.
    fn copy(&mut self, from: &str, to: &str) -> Result<(), RuntimeError>;

    /// Copies each input of the plan from `inputs` into its buffer: every one with
    /// [`InputsIn::Every`], only those `inputs` holds with [`InputsIn::Given`] (the others keep
    /// what the device holds).
    fn upload_inputs(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        which: InputsIn,
    ) -> Result<(), RuntimeError> {
        for i in 0..self.plan().inputs.len() {
            let name = self.plan().inputs[i].name.clone();
            let tensor = match (inputs.get(&name), which) {
                (Some(t), _) => t,
                (None, InputsIn::Given) => continue,
                (None, InputsIn::Every) => {
                    return Err(RuntimeError::Inputs {
                        message: format!("missing input `{name}`"),
                    });
                }
            };
            self.upload(&name, &tensor.to_safetensors_bytes())?;
        }
        Ok(())
    }

    /// Checks that each pair `(from, to)` copies a tensor onto a weight or an input of its size,
    /// then copies them in order (see [`PlanBuffers::copy`]).
    fn copy_tensors(&mut self, pairs: &[(String, String)]) -> Result<(), RuntimeError> {
        for (from, to) in pairs {
            let (source, target) = (self.plan().placement(from)?, self.plan().placement(to)?);
            if target.buffer == BufferId::Arena || source.bytes != target.bytes {
                return Err(RuntimeError::Tensor {
                    message: format!(
                        "cannot copy `{from}` ({} bytes) onto `{to}` ({} bytes{}): a copy goes \
                         onto a weight or an input of the same size",
                        source.bytes,
                        target.bytes,
                        if target.buffer == BufferId::Arena {
                            ", in the arena"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        for (from, to) in pairs {
            self.copy(from, to)?;
        }
        Ok(())
    }

    /// Copies each weight of the plan, the tensor of `graph`'s parameter of that name, into its
    /// buffer.
    fn upload_weights(&mut self, graph: &Graph, weights: &Weights) -> Result<(), RuntimeError> {
        let ids: HashMap<&str, ValueId> =
            graph.params.iter().map(|&p| (graph.name(p), p)).collect();
        for i in 0..self.plan().weights.len() {
            let name = self.plan().weights[i].name.clone();
            let tensor = ids
                .get(name.as_str())
                .and_then(|&id| weights.get(id))
                .ok_or_else(|| RuntimeError::Graph {
                    graph: graph.name.clone(),
                    message: format!("weight `{name}` was not loaded"),
                })?;
            self.upload(&name, &tensor.to_safetensors_bytes())?;
        }
        Ok(())
    }

    /// Reads tensor `name` (any manifest tensor) back, through `staging` (host bytes reused
    /// across reads).
    fn read_tensor(&self, name: &str, staging: &mut Vec<u8>) -> Result<HostTensor, RuntimeError> {
        let layout = self.plan().layout(name)?;
        self.download(name, staging)?;
        HostTensor::from_safetensors(
            safetensors_dtype(layout.dtype),
            &layout.shape,
            staging,
            layout.dtype,
        )
    }

    /// Reads the tensors `names` back, in that order.
    fn read_tensors(
        &self,
        names: &[String],
        staging: &mut Vec<u8>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        names
            .iter()
            .map(|name| Ok((name.clone(), self.read_tensor(name, staging)?)))
            .collect()
    }

    /// Reads `graph`'s outputs back, by name, in output order.
    fn read_outputs(
        &self,
        graph: &Graph,
        staging: &mut Vec<u8>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        graph
            .outputs
            .iter()
            .map(|&v| {
                let name = graph.name(v);
                Ok((name.to_string(), self.read_tensor(name, staging)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_kernels::manifest::{ArenaInfo, SCHEMA_VERSION};

    fn tensor(name: &str, bytes: u64, storage: Storage) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: "f32".into(),
            shape: vec![(bytes / 4) as usize],
            bytes,
            storage,
        }
    }

    fn manifest(tensors: Vec<TensorInfo>) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            model: "m".into(),
            target: "sm_90a".into(),
            tensors,
            arena: ArenaInfo {
                bytes: 1024,
                no_reuse_bytes: 1024,
                alignment: 256,
            },
            kernels: vec![],
            steps: vec![],
        }
    }

    #[test]
    fn places_inputs_weights_arena_tensors_and_alias_chains() {
        let alias = |of: &str, offset| Storage::Alias {
            of: of.into(),
            offset,
        };
        let plan = MemoryPlan::new(&manifest(vec![
            tensor("x", 64, Storage::Input),
            tensor("w", 128, Storage::Weight { experts: None }),
            tensor("y", 512, Storage::Arena { offset: 256 }),
            tensor("y_half", 256, alias("y", 256)),
            tensor("y_quarter", 128, alias("y_half", 128)),
            tensor("w_view", 128, alias("w", 0)),
        ]))
        .unwrap();
        assert_eq!(plan.inputs.len(), 1);
        assert_eq!(plan.weights.len(), 1);
        assert_eq!(plan.total_bytes(), 64 + 128 + 1024);
        let at = |name: &str| plan.placements[name];
        assert_eq!(at("x").buffer, BufferId::Input(0));
        assert_eq!(at("y").offset, 256);
        assert_eq!(
            at("y_quarter"),
            Placement {
                buffer: BufferId::Arena,
                offset: 256 + 256 + 128,
                bytes: 128
            }
        );
        assert_eq!(at("w_view").buffer, BufferId::Weight(0));
        let e = plan.placement("z").unwrap_err().to_string();
        assert!(e.contains("no device tensor `z`"), "{e}");
        let e = plan.upload_placement("x", 63).unwrap_err().to_string();
        assert!(e.contains("`x` is 64 bytes on the device, 63 given"), "{e}");
        assert_eq!(plan.upload_placement("x", 64).unwrap(), at("x"));
    }

    #[test]
    fn refuses_an_alias_past_its_root() {
        let error = MemoryPlan::new(&manifest(vec![
            tensor("y", 256, Storage::Arena { offset: 0 }),
            tensor(
                "a",
                128,
                Storage::Alias {
                    of: "y".into(),
                    offset: 192,
                },
            ),
        ]))
        .unwrap_err();
        assert!(
            error.contains("alias `a` ends at byte 320 of `y`"),
            "{error}"
        );
    }
}
