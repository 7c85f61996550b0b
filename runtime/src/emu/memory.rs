//! The emulator's global memory of a session: the buffers of a [`MemoryPlan`] (one per input
//! and per weight, one arena) and the steps' TMA tensor maps, allocated once when the backend is
//! created, at device addresses the kernels receive as pointer arguments.

use dsc_emulator::GlobalMemory;

use crate::error::RuntimeError;
use crate::memory_plan::{BufferId, MemoryPlan, PlanBuffers};
use crate::tensor_maps::TENSOR_MAP_BYTES;

/// What the emulator's device is called in memory errors.
const DEVICE: &str = "emu (host memory)";

/// The allocated buffers of a [`MemoryPlan`] in emulated global memory.
pub(crate) struct EmuMemory {
    plan: MemoryPlan,
    global: GlobalMemory,
    arena: u64,
    inputs: Vec<u64>,
    weights: Vec<u64>,
}

impl EmuMemory {
    /// Allocates every buffer of `plan`, after checking that the host has that much memory
    /// available (emulated memory is host memory, and running out of it aborts the process).
    pub(crate) fn allocate(plan: MemoryPlan) -> Result<EmuMemory, RuntimeError> {
        let asked = plan.total_bytes();
        if let Some((free, total)) = host_memory()
            && asked > free
        {
            return Err(RuntimeError::OutOfDeviceMemory {
                device: DEVICE.to_string(),
                what: "the weights, inputs and arena".to_string(),
                asked,
                free,
                total,
            });
        }
        let mut global = GlobalMemory::new();
        let arena = global.allocate(plan.arena_bytes);
        let inputs = plan
            .inputs
            .iter()
            .map(|t| global.allocate(t.bytes))
            .collect();
        let weights = plan
            .weights
            .iter()
            .map(|t| global.allocate(t.bytes))
            .collect();
        Ok(EmuMemory {
            plan,
            global,
            arena,
            inputs,
            weights,
        })
    }

    /// The emulated global memory, for launches.
    pub(crate) fn global(&self) -> &GlobalMemory {
        &self.global
    }

    fn base(&self, id: BufferId) -> u64 {
        match id {
            BufferId::Arena => self.arena,
            BufferId::Input(i) => self.inputs[i],
            BufferId::Weight(i) => self.weights[i],
        }
    }

    /// The device address of tensor `name`, for a kernel argument.
    pub(crate) fn pointer(&self, name: &str) -> Result<u64, RuntimeError> {
        let place = self.plan.placement(name)?;
        Ok(self.base(place.buffer) + place.offset)
    }

    /// Allocates one block of emulated global memory holding `maps` back to back (128 bytes
    /// each, so each is 128-byte aligned: allocations are 256-byte aligned) and returns its
    /// address, `None` when there are no maps. Called once per session: the maps' tensors never
    /// move.
    pub(crate) fn store_tensor_maps(
        &mut self,
        maps: &[[u8; TENSOR_MAP_BYTES]],
    ) -> Result<Option<u64>, RuntimeError> {
        if maps.is_empty() {
            return Ok(None);
        }
        let bytes = maps.concat();
        let table = self.global.allocate(bytes.len() as u64);
        debug_assert!(table.is_multiple_of(64), "tensor maps at {table:#x}");
        self.global
            .write(table, &bytes)
            .map_err(|e| RuntimeError::Tensor {
                message: format!("writing the TMA tensor maps to the emulator: {e}"),
            })?;
        Ok(Some(table))
    }
}

impl PlanBuffers for EmuMemory {
    fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    fn upload(&mut self, name: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
        let place = self.plan.upload_placement(name, bytes.len())?;
        self.global
            .write(self.base(place.buffer) + place.offset, bytes)
            .map_err(|e| RuntimeError::Tensor {
                message: format!("uploading `{name}` to the emulator: {e}"),
            })
    }

    fn download(&self, name: &str, host: &mut Vec<u8>) -> Result<(), RuntimeError> {
        let place = self.plan.placement(name)?;
        host.resize(place.bytes as usize, 0);
        self.global
            .read(self.base(place.buffer) + place.offset, host)
            .map_err(|e| RuntimeError::Tensor {
                message: format!("reading `{name}` from the emulator: {e}"),
            })
    }

    fn copy(&mut self, from: &str, to: &str) -> Result<(), RuntimeError> {
        // Emulated device memory is host memory: the copy passes through a host buffer.
        let mut bytes = Vec::new();
        self.download(from, &mut bytes)?;
        self.upload(to, &bytes)
    }
}

/// Available and total host memory in bytes (Linux `/proc/meminfo`); `None` where unknown.
fn host_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsc_kernels::manifest::{ArenaInfo, Manifest, SCHEMA_VERSION, Storage, TensorInfo};

    fn plan(arena_bytes: u64, input_bytes: u64) -> MemoryPlan {
        let tensor = |name: &str, bytes: u64, storage| TensorInfo {
            name: name.into(),
            dtype: "f32".into(),
            shape: vec![(bytes / 4) as usize],
            bytes,
            storage,
        };
        MemoryPlan::new(&Manifest {
            schema_version: SCHEMA_VERSION,
            model: "m".into(),
            target: "sm_90a".into(),
            tensors: vec![
                tensor("x", input_bytes, Storage::Input),
                tensor("w", 16, Storage::Weight { experts: None }),
                tensor("y", 32, Storage::Arena { offset: 256 }),
            ],
            arena: ArenaInfo {
                bytes: arena_bytes,
                no_reuse_bytes: arena_bytes,
                alignment: 256,
            },
            kernels: vec![],
            steps: vec![],
        })
        .unwrap()
    }

    #[test]
    fn tensors_round_trip_at_their_places() {
        let mut memory = EmuMemory::allocate(plan(512, 8)).unwrap();
        memory.upload("y", &[7; 32]).unwrap();
        memory.upload("x", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut host = Vec::new();
        memory.download("y", &mut host).unwrap();
        assert_eq!(host, [7; 32]);
        memory.download("x", &mut host).unwrap();
        assert_eq!(host, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            memory.pointer("y").unwrap(),
            memory.pointer("x").unwrap() - memory.inputs[0] + memory.arena + 256
        );
        // The weight is zeroed until uploaded; a wrong size is refused.
        memory.download("w", &mut host).unwrap();
        assert_eq!(host, [0; 16]);
        let e = memory.upload("w", &[0; 15]).unwrap_err().to_string();
        assert!(e.contains("`w` is 16 bytes on the device, 15 given"), "{e}");
    }

    #[test]
    fn more_than_the_host_has_is_refused_before_allocating() {
        let Some((free, _)) = host_memory() else {
            return;
        };
        let e = EmuMemory::allocate(plan(free + (1 << 30), 8))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("out of device memory on emu (host memory)"),
            "{e}"
        );
    }
}
