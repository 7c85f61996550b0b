//! `kernels.ptx` on the device: the one module, loaded once, and a function handle per kernel
//! entry. When the driver refuses the PTX, the error carries the driver's JIT log (ptxas's
//! words) next to its error code.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::mem::MaybeUninit;
use std::sync::Arc;

use cudarc::driver::sys::{self, CUfunction_attribute, CUjit_option};
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;

use crate::artifact::Artifact;
use crate::error::RuntimeError;

/// Dynamic shared memory a kernel may use without opting in (CUDA's default limit).
const DEFAULT_DYNAMIC_SHARED_BYTES: u32 = 48 * 1024;

/// Bytes of JIT error log asked of the driver.
const JIT_LOG_BYTES: usize = 16 * 1024;

/// The loaded module's kernels, by entry name.
pub(crate) struct KernelModule {
    functions: HashMap<String, CudaFunction>,
}

impl KernelModule {
    /// Loads the artifact's PTX into `ctx` and looks up every kernel of the manifest, opting
    /// each into the dynamic shared memory its launches ask for.
    pub(crate) fn load(ctx: &Arc<CudaContext>, artifact: &Artifact) -> Result<Self, RuntimeError> {
        let rejected = |what: String, message: String| RuntimeError::PtxRejected {
            module: artifact.ptx_path(),
            what,
            message,
        };
        // cudarc turns the text into a C string with `unwrap`: refuse a NUL byte here instead.
        let source = CString::new(artifact.ptx.as_bytes()).map_err(|e| {
            rejected(
                "the module".into(),
                format!("a NUL byte at {}", e.nul_position()),
            )
        })?;
        let module = ctx
            .load_module(Ptx::from_src(artifact.ptx.clone()))
            .map_err(|error| {
                let log = jit_error_log(ctx, &source).unwrap_or_default();
                let message = if log.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}\n{log}")
                };
                rejected("the module".into(), message)
            })?;
        let mut functions = HashMap::new();
        for kernel in &artifact.manifest.kernels {
            let what = || format!("kernel `{}`", kernel.entry);
            let function = module
                .load_function(&kernel.entry)
                .map_err(|e| rejected(what(), e.to_string()))?;
            let shared = artifact
                .manifest
                .steps
                .iter()
                .filter(|step| step.kernel == kernel.entry)
                .map(|step| step.shared_bytes)
                .chain([kernel.shared_bytes])
                .max()
                .unwrap_or(0);
            if shared > DEFAULT_DYNAMIC_SHARED_BYTES {
                function
                    .set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        shared as i32,
                    )
                    .map_err(|e| {
                        rejected(
                            what(),
                            format!("{shared} bytes of dynamic shared memory: {e}"),
                        )
                    })?;
            }
            functions.insert(kernel.entry.clone(), function);
        }
        Ok(KernelModule { functions })
    }

    /// The function of kernel entry `entry` (every manifest kernel was loaded).
    pub(crate) fn function(&self, entry: &str) -> Option<&CudaFunction> {
        self.functions.get(entry)
    }
}

/// Loads `ptx` again with a JIT error log buffer and returns the log; `None` when the log
/// cannot be had (or the load now succeeds, in which case the module is unloaded again).
fn jit_error_log(ctx: &Arc<CudaContext>, ptx: &CString) -> Option<String> {
    ctx.bind_to_thread().ok()?;
    let mut log = vec![0u8; JIT_LOG_BYTES];
    let mut options = [
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    // The driver reads the size option's value as the pointer-sized integer itself.
    let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), JIT_LOG_BYTES as *mut c_void];
    let mut module = MaybeUninit::<sys::CUmodule>::uninit();
    // SAFETY: `ptx` is a NUL-terminated image that outlives the call; `options` and `values`
    // hold two entries each as `numOptions` says; the log buffer is JIT_LOG_BYTES long and
    // outlives the call; the context is current on this thread (bound above).
    let result = unsafe {
        sys::cuModuleLoadDataEx(
            module.as_mut_ptr(),
            ptx.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if result == sys::CUresult::CUDA_SUCCESS {
        // SAFETY: the load succeeded, so `module` is an initialized handle owned by nobody else.
        unsafe {
            let _ = sys::cuModuleUnload(module.assume_init());
        }
        return None;
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Some(String::from_utf8_lossy(&log[..end]).trim().to_string())
}
