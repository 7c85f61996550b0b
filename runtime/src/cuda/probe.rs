//! Finding the CUDA driver and the devices.
//!
//! cudarc loads `libcuda` lazily and panics when it is absent, so every path into the driver
//! goes through [`probe`] (or at least [`driver_present`]) first: a machine without a GPU gets
//! [`RuntimeError::NoDriver`] and can fall back to the CPU backend.

use std::fmt;

use cudarc::driver::{result, sys};

use crate::error::RuntimeError;

/// One CUDA device, as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device ordinal (`cuda:N`).
    pub ordinal: usize,
    /// The marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub compute_capability: (u32, u32),
    /// Total device memory in bytes.
    pub total_memory_bytes: usize,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.compute_capability;
        write!(
            f,
            "cuda:{} {} (compute capability {major}.{minor}, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.total_memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// Whether the CUDA driver library can be loaded. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library (and closes it again); it touches no CUDA state.
    unsafe { sys::is_culib_present() }
}

/// Lists the CUDA devices. Returns [`RuntimeError::NoDriver`] without libcuda,
/// [`RuntimeError::NoDevice`] when the driver sees no device. Never panics.
pub fn probe() -> Result<Vec<DeviceInfo>, RuntimeError> {
    if !driver_present() {
        return Err(RuntimeError::NoDriver);
    }
    without_driver_panics("loading the driver", list_devices)
}

/// Runs `f`, turning a panic into [`RuntimeError::Driver`] for `call`: cudarc panics when a
/// driver entry point is missing from the loaded library (an old or broken driver), and that
/// must be an error, not the end of the process.
pub(crate) fn without_driver_panics<T>(
    call: &'static str,
    f: impl FnOnce() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA driver library is unusable".to_string());
        Err(RuntimeError::Driver { call, message })
    })
}

fn list_devices() -> Result<Vec<DeviceInfo>, RuntimeError> {
    match result::init() {
        Ok(()) => {}
        Err(result::DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE)) => {
            return Err(RuntimeError::NoDevice);
        }
        Err(e) => return Err(driver_error("cuInit", e)),
    }
    let count = result::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(RuntimeError::NoDevice);
    }
    (0..count).map(device_info).collect()
}

fn device_info(ordinal: i32) -> Result<DeviceInfo, RuntimeError> {
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
    };

    let device = result::device::get(ordinal).map_err(|e| driver_error("cuDeviceGet", e))?;
    let name = result::device::get_name(device).map_err(|e| driver_error("cuDeviceGetName", e))?;
    // SAFETY: `device` is a valid handle returned by cuDeviceGet after a successful cuInit.
    let (total_memory_bytes, major, minor) = unsafe {
        (
            result::device::total_mem(device).map_err(|e| driver_error("cuDeviceTotalMem", e))?,
            result::device::get_attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                .map_err(|e| driver_error("cuDeviceGetAttribute", e))?,
            result::device::get_attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                .map_err(|e| driver_error("cuDeviceGetAttribute", e))?,
        )
    };
    Ok(DeviceInfo {
        ordinal: ordinal as usize,
        name,
        compute_capability: (major as u32, minor as u32),
        total_memory_bytes,
    })
}

/// A driver call's failure as a [`RuntimeError::Driver`].
pub(crate) fn driver_error(call: &'static str, error: result::DriverError) -> RuntimeError {
    RuntimeError::Driver {
        call,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_the_driver_state_without_panicking() {
        let outcome = probe();
        if driver_present() {
            match outcome {
                Ok(devices) => {
                    assert!(!devices.is_empty());
                    for device in &devices {
                        println!("{device}");
                        assert!(device.compute_capability.0 > 0);
                    }
                }
                Err(RuntimeError::NoDevice) => println!("libcuda present, no device"),
                Err(other) => panic!("probe with libcuda present failed: {other}"),
            }
        } else {
            assert!(
                matches!(outcome, Err(RuntimeError::NoDriver)),
                "without libcuda, probe must return NoDriver, got {outcome:?}"
            );
        }
    }

    #[test]
    fn device_info_displays_compactly() {
        let device = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            total_memory_bytes: 80 << 30,
        };
        assert_eq!(
            device.to_string(),
            "cuda:0 NVIDIA H100 80GB HBM3 (compute capability 9.0, 80.0 GiB)"
        );
    }
}
