//! Device memory of a session: one buffer per input and per weight, one arena for everything
//! else, all allocated once when the backend is created. Tensors are places in those buffers
//! ([`Placement`]): an arena tensor at its offset, an alias at its target's place plus its offset.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError, sys};
use dsc_kernels::manifest::{Manifest, Storage, TensorInfo};

use super::probe::driver_error;
use crate::artifact::alias_root;
use crate::error::RuntimeError;

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
}

impl MemoryPlan {
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
        };
        for t in &manifest.tensors {
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
}

/// The allocated buffers of a [`MemoryPlan`].
pub(crate) struct DeviceMemory {
    plan: MemoryPlan,
    arena: CudaSlice<u8>,
    inputs: Vec<CudaSlice<u8>>,
    weights: Vec<CudaSlice<u8>>,
}

impl DeviceMemory {
    /// Allocates every buffer of `plan` on `stream`, after checking with cuMemGetInfo that the
    /// device has that much free. `device` names the GPU in errors.
    pub(crate) fn allocate(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        plan: MemoryPlan,
        device: &str,
    ) -> Result<DeviceMemory, RuntimeError> {
        let (free, total) = ctx
            .mem_get_info()
            .map_err(|e| driver_error("cuMemGetInfo", e))?;
        let asked = plan.total_bytes();
        let out_of_memory = |what: String, asked: u64, free: u64| RuntimeError::OutOfDeviceMemory {
            device: device.to_string(),
            what,
            asked,
            free,
            total: total as u64,
        };
        if asked > free as u64 {
            return Err(out_of_memory(
                "the weights, inputs and arena".to_string(),
                asked,
                free as u64,
            ));
        }
        let alloc = |what: &str, bytes: u64| -> Result<CudaSlice<u8>, RuntimeError> {
            // A zero-byte allocation is refused by some drivers; one byte costs nothing.
            stream
                .alloc_zeros::<u8>(bytes.max(1) as usize)
                .map_err(|e| match e {
                    DriverError(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY) => {
                        let free = ctx.mem_get_info().map_or(0, |(free, _)| free as u64);
                        out_of_memory(what.to_string(), bytes, free)
                    }
                    other => driver_error("cuMemAlloc", other),
                })
        };
        let arena = alloc("the arena", plan.arena_bytes)?;
        let inputs = plan
            .inputs
            .iter()
            .map(|t| alloc(&format!("input `{}`", t.name), t.bytes))
            .collect::<Result<_, _>>()?;
        let weights = plan
            .weights
            .iter()
            .map(|t| alloc(&format!("weight `{}`", t.name), t.bytes))
            .collect::<Result<_, _>>()?;
        Ok(DeviceMemory {
            plan,
            arena,
            inputs,
            weights,
        })
    }

    /// The plan the buffers follow.
    pub(crate) fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    fn buffer(&self, id: BufferId) -> &CudaSlice<u8> {
        match id {
            BufferId::Arena => &self.arena,
            BufferId::Input(i) => &self.inputs[i],
            BufferId::Weight(i) => &self.weights[i],
        }
    }

    fn buffer_mut(&mut self, id: BufferId) -> &mut CudaSlice<u8> {
        match id {
            BufferId::Arena => &mut self.arena,
            BufferId::Input(i) => &mut self.inputs[i],
            BufferId::Weight(i) => &mut self.weights[i],
        }
    }

    fn placement(&self, name: &str) -> Result<Placement, RuntimeError> {
        self.plan
            .placements
            .get(name)
            .copied()
            .ok_or_else(|| RuntimeError::Tensor {
                message: format!("no device tensor `{name}`"),
            })
    }

    /// The device address of tensor `name`, for a kernel argument.
    pub(crate) fn pointer(&self, stream: &CudaStream, name: &str) -> Result<u64, RuntimeError> {
        let place = self.placement(name)?;
        // Event tracking is off for this context (one stream), so the guard records nothing.
        let (base, _guard) = self.buffer(place.buffer).device_ptr(stream);
        Ok(base + place.offset)
    }

    /// Copies `bytes` into tensor `name` (the whole tensor).
    pub(crate) fn upload(
        &mut self,
        stream: &Arc<CudaStream>,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), RuntimeError> {
        let place = self.placement(name)?;
        if bytes.len() as u64 != place.bytes {
            return Err(RuntimeError::Tensor {
                message: format!(
                    "`{name}` is {} bytes on the device, {} given",
                    place.bytes,
                    bytes.len()
                ),
            });
        }
        let range = place.offset as usize..(place.offset + place.bytes) as usize;
        let mut view = self.buffer_mut(place.buffer).slice_mut(range);
        stream
            .memcpy_htod(bytes, &mut view)
            .map_err(|e| driver_error("cuMemcpyHtoD", e))
    }

    /// Copies tensor `name` into `host` (resized to its bytes) and waits for the copy.
    pub(crate) fn download(
        &self,
        stream: &Arc<CudaStream>,
        name: &str,
        host: &mut Vec<u8>,
    ) -> Result<(), RuntimeError> {
        let place = self.placement(name)?;
        host.resize(place.bytes as usize, 0);
        let range = place.offset as usize..(place.offset + place.bytes) as usize;
        let view = self.buffer(place.buffer).slice(range);
        stream
            .memcpy_dtoh(&view, host.as_mut_slice())
            .map_err(|e| driver_error("cuMemcpyDtoH", e))?;
        stream
            .synchronize()
            .map_err(|e| driver_error("cuStreamSynchronize", e))
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
