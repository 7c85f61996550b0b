//! CUDA device memory of a session: the buffers of a [`MemoryPlan`] (one per input and per
//! weight, one arena for everything else) and the steps' TMA tensor maps, all allocated once
//! when the backend is created.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError, sys};

use super::probe::driver_error;
use crate::error::RuntimeError;
use crate::memory_plan::{BufferId, MemoryPlan, PlanBuffers};
use crate::tensor_maps::TENSOR_MAP_BYTES;

/// The alignment a TMA tensor map in global memory needs.
const TENSOR_MAP_ALIGN: u64 = 64;

/// The allocated buffers of a [`MemoryPlan`].
pub(crate) struct DeviceMemory {
    plan: MemoryPlan,
    arena: CudaSlice<u8>,
    inputs: Vec<CudaSlice<u8>>,
    weights: Vec<CudaSlice<u8>>,
    /// The steps' TMA tensor maps, 128 bytes each from a 64-byte aligned address (see
    /// [`DeviceMemory::store_tensor_maps`]); `None` when no step has one.
    tensor_maps: Option<CudaSlice<u8>>,
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
            tensor_maps: None,
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

    /// The device address of tensor `name`, for a kernel argument.
    pub(crate) fn pointer(&self, stream: &CudaStream, name: &str) -> Result<u64, RuntimeError> {
        let place = self.plan.placement(name)?;
        // Event tracking is off for this context (one stream), so the guard records nothing.
        let (base, _guard) = self.buffer(place.buffer).device_ptr(stream);
        Ok(base + place.offset)
    }

    /// Copies `maps` (driver-encoded `CUtensorMap`s) into one device allocation, back to back
    /// from a 64-byte aligned address, waits for the copy, and returns the address of the first
    /// (`None` when there are none). Called once per session: the maps' tensors never move. The
    /// allocation lives as long as the buffers.
    pub(crate) fn store_tensor_maps(
        &mut self,
        stream: &Arc<CudaStream>,
        maps: &[[u8; TENSOR_MAP_BYTES]],
    ) -> Result<Option<u64>, RuntimeError> {
        if maps.is_empty() {
            return Ok(None);
        }
        let bytes = maps.concat();
        // cuMemAlloc aligns to at least 256 bytes; the slack makes 64 hold whatever it gives.
        let mut block = stream
            .alloc_zeros::<u8>(bytes.len() + TENSOR_MAP_ALIGN as usize)
            .map_err(|e| driver_error("cuMemAlloc (TMA tensor maps)", e))?;
        // Event tracking is off for this context (one stream), so the guard records nothing.
        let base = block.device_ptr(stream).0;
        let skip = base.next_multiple_of(TENSOR_MAP_ALIGN) - base;
        let mut view = block.slice_mut(skip as usize..skip as usize + bytes.len());
        stream
            .memcpy_htod(&bytes, &mut view)
            .map_err(|e| driver_error("cuMemcpyHtoD (TMA tensor maps)", e))?;
        stream
            .synchronize()
            .map_err(|e| driver_error("cuStreamSynchronize", e))?;
        self.tensor_maps = Some(block);
        Ok(Some(base + skip))
    }

    /// Copies `bytes` into tensor `name` (the whole tensor).
    pub(crate) fn upload(
        &mut self,
        stream: &Arc<CudaStream>,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), RuntimeError> {
        let place = self.plan.upload_placement(name, bytes.len())?;
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
        let place = self.plan.placement(name)?;
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

/// The buffers with the stream their copies go on, as the backend-neutral [`PlanBuffers`].
pub(crate) struct OnStream<'m> {
    pub memory: &'m mut DeviceMemory,
    pub stream: &'m Arc<CudaStream>,
}

impl PlanBuffers for OnStream<'_> {
    fn plan(&self) -> &MemoryPlan {
        self.memory.plan()
    }

    fn copy(&mut self, from: &str, to: &str) -> Result<(), RuntimeError> {
        let plan = self.memory.plan();
        let bytes = plan.placement(from)?.bytes;
        if plan.placement(to)?.bytes != bytes {
            return Err(RuntimeError::Tensor {
                message: format!("cannot copy `{from}` onto `{to}`: their sizes differ"),
            });
        }
        let (src, dst) = (
            self.memory.pointer(self.stream, from)?,
            self.memory.pointer(self.stream, to)?,
        );
        // SAFETY: both ranges lie inside buffers this memory owns (their placements), are
        // `bytes` long, and do not overlap (a copy goes from one tensor onto another); the copy
        // is ordered on the session's one stream with every launch.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst,
                src,
                bytes as usize,
                self.stream.cu_stream(),
            )
        }
        .map_err(|e| driver_error("cuMemcpyDtoDAsync", e))
    }

    fn upload(&mut self, name: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.memory.upload(self.stream, name, bytes)
    }

    fn download(&self, name: &str, host: &mut Vec<u8>) -> Result<(), RuntimeError> {
        self.memory.download(self.stream, name, host)
    }
}
