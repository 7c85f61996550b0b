//! The error type of the runtime.

/// Everything that can go wrong running an artifact.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The CUDA driver library (`libcuda.so`) is not installed on this machine.
    #[error("no CUDA driver: libcuda could not be loaded")]
    NoDriver,

    /// The driver loaded but reports no CUDA device.
    #[error("no CUDA device: the driver reports none")]
    NoDevice,

    /// A CUDA driver call failed.
    #[error("CUDA driver error in {call}: {message}")]
    Driver {
        /// The driver call or step that failed, e.g. `cuInit`.
        call: &'static str,
        /// The driver's description of the error.
        message: String,
    },
}
