//! The error type of code generation.

use std::path::PathBuf;

/// Everything that can go wrong between a kernel description and assembled PTX.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// A target name that is not one of the supported targets.
    #[error("unknown target `{0}` (expected one of: sm_90a, sm_89)")]
    UnknownTarget(String),

    /// An op of the graph has no GPU kernel, or attributes its kernel cannot take.
    #[error("op `{op}` ({kind}): {message}")]
    Selection {
        /// The op's name.
        op: String,
        /// Its kind.
        kind: &'static str,
        /// What is missing.
        message: String,
    },

    /// A kernel needs more than the target allows at launch (shared memory, threads, grid).
    #[error("op `{op}` (kernel `{kernel}`): {message}")]
    Resources {
        /// The op's name.
        op: String,
        /// The kernel's entry name.
        kernel: String,
        /// The limit and what the kernel needs.
        message: String,
    },

    /// A kernel builder was asked for something it cannot build.
    #[error("invalid kernel `{kernel}`: {message}")]
    InvalidKernel {
        /// The kernel's entry name.
        kernel: String,
        /// What is wrong.
        message: String,
    },

    /// The constructed MLIR module does not verify (a bug in a kernel builder).
    #[error("MLIR module does not verify:\n{diagnostics}")]
    Verify {
        /// MLIR's diagnostics, one per line.
        diagnostics: String,
    },

    /// A pass pipeline string was rejected by MLIR.
    #[error("invalid MLIR pass pipeline `{pipeline}`: {message}")]
    PipelineParse {
        /// The pipeline text.
        pipeline: String,
        /// MLIR's message.
        message: String,
    },

    /// The MLIR-to-PTX pipeline failed.
    #[error("MLIR-to-PTX lowering for {target} failed:\n{diagnostics}")]
    Lowering {
        /// The target chip, e.g. `sm_90a`.
        target: String,
        /// MLIR's diagnostics, one per line.
        diagnostics: String,
    },

    /// The lowered module does not hold the expected `gpu.binary` with PTX text.
    #[error("no PTX in the lowered module: {0}")]
    MissingPtx(String),

    /// ptxas could not be found.
    #[error(
        "ptxas not found ({0}); run `bash scripts/setup.sh` to install it into .tools/cuda-nvcc, \
         or set DSC_PTXAS to a ptxas binary"
    )]
    PtxasNotFound(String),

    /// ptxas could not be run, or rejected the PTX.
    #[error("ptxas {} -arch={arch} failed{}:\n{output}", path.display(), status.map(|s| format!(" (exit status {s})")).unwrap_or_default())]
    Ptxas {
        /// The ptxas binary.
        path: PathBuf,
        /// The `-arch` it was given.
        arch: String,
        /// Its exit status, when it ran.
        status: Option<i32>,
        /// Its output (stdout and stderr), or why it could not run.
        output: String,
    },

    /// A melior API call failed (a bug in a kernel builder, e.g. a result index out of range).
    #[error("MLIR: {0}")]
    Melior(#[from] melior::Error),

    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `writing /tmp/x.ptx`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl CodegenError {
    /// The error of a kernel builder asked for what its spec's `supported()` refuses: for
    /// `spec.supported().map_err(CodegenError::invalid_kernel(entry))`.
    pub fn invalid_kernel(entry: &str) -> impl FnOnce(String) -> CodegenError + '_ {
        move |message| CodegenError::InvalidKernel {
            kernel: entry.to_string(),
            message,
        }
    }
}
