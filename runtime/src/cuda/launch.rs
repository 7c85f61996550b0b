//! The launch plan on the device: each manifest step resolved once into its kernel, launch
//! shape and pointer arguments (a tensor's address, or for a parameter of the step's
//! `tensor_maps` the device address of its driver-encoded TMA tensor map), then launched on the
//! session's stream.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg, sys};
use dsc_emulator::tensor_map::{Interleave, L2Promotion, OobFill};
use dsc_kernels::manifest::{Manifest, TensorMapArg, TensorMapDtype, TensorMapSwizzle};

use super::memory::DeviceMemory;
use super::module::KernelModule;
use crate::error::RuntimeError;
use crate::tensor_maps::{ELEMENT_STRIDES, INTERLEAVE, L2_PROMOTION, OOB_FILL, TENSOR_MAP_BYTES};

/// One step, ready to launch.
#[derive(Debug, Clone)]
pub(crate) struct PreparedStep {
    /// The kernel entry.
    pub entry: String,
    /// The op it computes.
    pub op: String,
    /// Grid, block and dynamic shared memory.
    pub config: LaunchConfig,
    /// Device addresses of the step's tensors (or of their tensor maps), in the entry's
    /// parameter order.
    pub args: Vec<u64>,
}

/// Resolves every step of `manifest` against the allocated buffers, encoding the steps' TMA
/// tensor maps with the driver and copying them into one device allocation, once: a map
/// parameter receives its map's device address.
pub(crate) fn prepare(
    manifest: &Manifest,
    memory: &mut DeviceMemory,
    stream: &Arc<CudaStream>,
) -> Result<Vec<PreparedStep>, RuntimeError> {
    let mut maps: Vec<[u8; TENSOR_MAP_BYTES]> = Vec::new();
    // Per step: (parameter, index into `maps`) of each of its tensor maps.
    let mut map_params: Vec<Vec<(usize, usize)>> = Vec::with_capacity(manifest.steps.len());
    let mut steps: Vec<PreparedStep> = manifest
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let args: Vec<u64> = step
                .args
                .iter()
                .map(|name| memory.pointer(stream, name))
                .collect::<Result<_, _>>()?;
            let mut slots = Vec::with_capacity(step.tensor_maps.len());
            for (k, map) in step.tensor_maps.iter().enumerate() {
                let failed = |message: String| RuntimeError::Driver {
                    call: "cuTensorMapEncodeTiled",
                    message: format!(
                        "step {index} (op `{}`, kernel `{}`): tensor_maps[{k}]: {message}",
                        step.op, step.kernel
                    ),
                };
                let base = *args.get(map.param).ok_or_else(|| {
                    failed(format!(
                        "param {} is not a parameter of the step's {} arguments",
                        map.param,
                        args.len()
                    ))
                })?;
                let name = &step.args[map.param];
                let encoded = encode_tiled(stream, map, base)
                    .map_err(|e| failed(format!("the map over `{name}`: {e}")))?;
                slots.push((map.param, maps.len()));
                maps.push(encoded);
            }
            map_params.push(slots);
            Ok(PreparedStep {
                entry: step.kernel.clone(),
                op: step.op.clone(),
                config: LaunchConfig {
                    grid_dim: (step.grid[0], step.grid[1], step.grid[2]),
                    block_dim: (step.block[0], step.block[1], step.block[2]),
                    shared_mem_bytes: step.shared_bytes,
                },
                args,
            })
        })
        .collect::<Result<_, RuntimeError>>()?;
    if let Some(table) = memory.store_tensor_maps(stream, &maps)? {
        for (step, slots) in steps.iter_mut().zip(&map_params) {
            for &(param, slot) in slots {
                step.args[param] = table + (slot * TENSOR_MAP_BYTES) as u64;
            }
        }
    }
    Ok(steps)
}

// The driver's map is the 128 bytes the kernels expect, copied as is.
const _: () = assert!(std::mem::size_of::<sys::CUtensorMap>() == TENSOR_MAP_BYTES);

/// `map` over the tensor at device address `base`, encoded by `cuTensorMapEncodeTiled` with the
/// fixed settings of every map (`crate::tensor_maps`: element strides 1, no interleave, L2
/// promotion 128B, zero out-of-bounds fill), as the bytes of its `CUtensorMap`.
fn encode_tiled(
    stream: &CudaStream,
    map: &TensorMapArg,
    base: u64,
) -> Result<[u8; TENSOR_MAP_BYTES], String> {
    let rank = map.rank();
    // The artifact's checks guarantee these; a manifest edited after loading gets an error.
    if !(1..=5).contains(&rank) || map.box_dims.len() != rank || map.strides_bytes.len() != rank - 1
    {
        return Err(format!(
            "{} dims, {} strides_bytes and {} box_dims do not make a map of rank 1..=5",
            map.dims.len(),
            map.strides_bytes.len(),
            map.box_dims.len()
        ));
    }
    // Fixed-size arrays, so that every pointer the driver reads through is valid for rank 5.
    let mut dims = [0u64; 5];
    dims[..rank].copy_from_slice(&map.dims);
    let mut strides = [0u64; 4];
    strides[..rank - 1].copy_from_slice(&map.strides_bytes);
    let mut boxes = [0u32; 5];
    boxes[..rank].copy_from_slice(&map.box_dims);
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| e.to_string())?;
    let mut encoded = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: `encoded` is a writable CUtensorMap (64-byte aligned by its type); `dims`,
    // `strides`, `boxes` and ELEMENT_STRIDES hold at least `rank` (strides `rank - 1`) entries
    // and outlive the call; the global address is only recorded in the map, not accessed.
    let result = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut encoded,
            driver_data_type(map.dtype),
            rank as u32,
            base as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            ELEMENT_STRIDES.as_ptr(),
            driver_interleave(INTERLEAVE),
            driver_swizzle(map.swizzle),
            driver_l2_promotion(L2_PROMOTION),
            driver_oob_fill(OOB_FILL),
        )
    };
    result.result().map_err(|e| e.to_string())?;
    let mut bytes = [0u8; TENSOR_MAP_BYTES];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(encoded.opaque) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Ok(bytes)
}

/// The driver's element type of a manifest dtype.
fn driver_data_type(dtype: TensorMapDtype) -> sys::CUtensorMapDataType {
    use sys::CUtensorMapDataType as T;
    match dtype {
        TensorMapDtype::Uint8 => T::CU_TENSOR_MAP_DATA_TYPE_UINT8,
        TensorMapDtype::Float16 => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        TensorMapDtype::Bfloat16 => T::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        TensorMapDtype::Float32 => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
    }
}

/// The driver's swizzle of a manifest swizzle.
fn driver_swizzle(swizzle: TensorMapSwizzle) -> sys::CUtensorMapSwizzle {
    use sys::CUtensorMapSwizzle as S;
    match swizzle {
        TensorMapSwizzle::None => S::CU_TENSOR_MAP_SWIZZLE_NONE,
        TensorMapSwizzle::B32 => S::CU_TENSOR_MAP_SWIZZLE_32B,
        TensorMapSwizzle::B64 => S::CU_TENSOR_MAP_SWIZZLE_64B,
        TensorMapSwizzle::B128 => S::CU_TENSOR_MAP_SWIZZLE_128B,
    }
}

/// The driver's interleave of the emulator's (the one setting both backends use).
fn driver_interleave(interleave: Interleave) -> sys::CUtensorMapInterleave {
    use sys::CUtensorMapInterleave as I;
    match interleave {
        Interleave::None => I::CU_TENSOR_MAP_INTERLEAVE_NONE,
        Interleave::B16 => I::CU_TENSOR_MAP_INTERLEAVE_16B,
        Interleave::B32 => I::CU_TENSOR_MAP_INTERLEAVE_32B,
    }
}

/// The driver's L2 promotion of the emulator's.
fn driver_l2_promotion(promotion: L2Promotion) -> sys::CUtensorMapL2promotion {
    use sys::CUtensorMapL2promotion as L;
    match promotion {
        L2Promotion::None => L::CU_TENSOR_MAP_L2_PROMOTION_NONE,
        L2Promotion::B64 => L::CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
        L2Promotion::B128 => L::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        L2Promotion::B256 => L::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
    }
}

/// The driver's out-of-bounds fill of the emulator's.
fn driver_oob_fill(fill: OobFill) -> sys::CUtensorMapFloatOOBfill {
    use sys::CUtensorMapFloatOOBfill as F;
    match fill {
        OobFill::None => F::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        OobFill::NanRequestZeroFma => F::CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA,
    }
}

/// Launches step `index` on `stream` (asynchronously).
pub(crate) fn launch(
    stream: &Arc<CudaStream>,
    module: &KernelModule,
    index: usize,
    step: &PreparedStep,
) -> Result<(), RuntimeError> {
    let failed = |message: String| RuntimeError::Driver {
        call: "cuLaunchKernel",
        message: format!(
            "kernel `{}` (step {index}, op `{}`): {message}",
            step.entry, step.op
        ),
    };
    let function = module
        .function(&step.entry)
        .ok_or_else(|| failed("not loaded".to_string()))?;
    let mut builder = stream.launch_builder(function);
    for arg in &step.args {
        builder.arg(arg);
    }
    // SAFETY: the artifact's checks guarantee that the entry takes exactly one pointer
    // parameter per argument (kernels are specialized to static shapes and take only buffer
    // pointers), and that every argument is the address of a tensor of the manifest's size
    // inside a buffer allocated for it, or of a 128-byte tensor map (over such a tensor, every
    // element it covers inside it) in the backend's map allocation; the buffers belong to the
    // backend and outlive the launch (it synchronizes before reading results or dropping them).
    unsafe { builder.launch(step.config) }
        .map(|_| ())
        .map_err(|e| failed(e.to_string()))
}
