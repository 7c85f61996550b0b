//! The error type of the runtime.

use std::fmt;
use std::path::PathBuf;

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

    /// A training step's loss or gradient norm is not finite; the state is that of `step - 1`.
    #[error(
        "training diverged at step {step}: the loss is {loss} and the gradient norm {grad_norm}"
    )]
    Diverged {
        step: u64,
        loss: f32,
        grad_norm: f32,
    },

    /// A weights or inputs file (or checkpoint directory) could not be opened or read: missing,
    /// unreadable, truncated, or not valid safetensors.
    #[error("cannot read `{}`: {message}", path.display())]
    Checkpoint {
        /// The file or directory at fault.
        path: PathBuf,
        message: String,
    },

    /// A checkpoint's tensors do not fit the graph's parameters: every problem, by category.
    #[error("weights `{}` do not fit model `{model}`: {problems}", checkpoint.display())]
    Weights {
        /// The checkpoint file or directory.
        checkpoint: PathBuf,
        /// The graph's name.
        model: String,
        problems: Box<WeightProblems>,
    },

    /// An op failed on the CPU backend (bad index, a kernel rejecting its operands).
    #[error("op `{op}` ({kind}): {message}")]
    Op {
        op: String,
        kind: &'static str,
        message: String,
    },

    /// The inputs of a run do not match the graph's: every problem, by name.
    #[error("inputs do not match the model: {message}")]
    Inputs { message: String },

    /// A safetensors file could not be written.
    #[error("cannot write `{}`: {message}", path.display())]
    Write { path: PathBuf, message: String },

    /// A host tensor used as something it is not (wrong element kind, wrong length).
    #[error("tensor: {message}")]
    Tensor { message: String },

    /// An artifact directory lacks one of its files.
    #[error("{} is not a compiled model: it has no {file} (run `dsc compile` first)", dir.display())]
    ArtifactFile {
        /// The directory.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
    },

    /// A file of an artifact could not be read or parsed.
    #[error("{}: {message}", path.display())]
    ArtifactRead {
        /// The file (with `:line:col` in `message` where known).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// `manifest.json` is malformed or of another schema version.
    #[error(transparent)]
    Manifest(#[from] dsc_kernels::manifest::ManifestError),

    /// The manifest contradicts `graph.dsc` or itself: every problem found.
    #[error("{}: does not match the compiled graph: {}", path.display(), problems.join("; "))]
    ManifestMismatch {
        /// The manifest file.
        path: PathBuf,
        /// One sentence per problem.
        problems: Vec<String>,
    },

    /// `run` was called before any weights were loaded.
    #[error("no weights loaded: call load_weights or load_random_weights before run")]
    NoWeights,

    /// The artifact cannot run on the CUDA backend (it has no launch plan).
    #[error("{message}")]
    NoLaunchPlan {
        /// Why.
        message: String,
    },

    /// `cuda:N` names a device the driver does not have.
    /// The unpromoted accumulator model asked of a GPU backend, whose kernels always promote.
    #[error(
        "{device} cannot model the unpromoted accumulator: its FP8 kernels always promote into \
         FP32 (the ablation runs on the CPU reference, --device cpu)"
    )]
    UnpromotedOnGpu { device: String },

    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoSuchDevice {
        /// The requested ordinal.
        ordinal: usize,
        /// How many devices there are.
        count: usize,
    },

    /// The GPU cannot run PTX built for the artifact's target.
    #[error("{device} cannot run kernels built for {target}: {need}")]
    TargetMismatch {
        /// The device, as [`crate::cuda::DeviceInfo`] displays it.
        device: String,
        /// The manifest's target.
        target: String,
        /// What the target needs.
        need: String,
    },

    /// The driver refused the PTX module or one of its kernels.
    #[error("the CUDA driver refused {} ({what}): {message}", module.display())]
    PtxRejected {
        /// The PTX file.
        module: PathBuf,
        /// The module as a whole, or `kernel `entry``.
        what: String,
        /// The driver's words (and the JIT log where it gave one).
        message: String,
    },

    /// The device has too little free memory for the artifact.
    #[error(
        "out of device memory on {device}: {what} needs {asked} bytes ({:.1} MiB), {free} bytes ({:.1} MiB) are free of {total}",
        *asked as f64 / 1048576.0,
        *free as f64 / 1048576.0
    )]
    OutOfDeviceMemory {
        /// The device.
        device: String,
        /// What the memory is for.
        what: String,
        /// Bytes asked for.
        asked: u64,
        /// Free bytes (cuMemGetInfo).
        free: u64,
        /// Total bytes.
        total: u64,
    },

    /// The machine has too little memory for a CPU or emulator session (checked before
    /// anything is allocated, see [`crate::host_memory`]).
    #[error(
        "the model needs {} of memory on {device} ({need}) but {} are available",
        crate::host_memory::human(*needed),
        crate::host_memory::human(*available)
    )]
    OutOfHostMemory {
        /// `cpu` or `emu`.
        device: String,
        /// The need by purpose, in words.
        need: String,
        /// Bytes needed in all.
        needed: u64,
        /// Bytes the system can still give.
        available: u64,
    },

    /// The PTX emulator cannot load the artifact's module (a parse error, a missing entry).
    #[error("the emulator cannot load {}: {message}", module.display())]
    EmulatorLoad {
        /// The PTX file.
        module: PathBuf,
        /// The emulator's words (with the PTX line where it gave one).
        message: String,
    },

    /// A launch step failed on the PTX emulator (a fault, an unimplemented instruction, a hang).
    #[error("emulator: step {step} (op `{op}`, kernel `{kernel}`): {message}")]
    Emulator {
        /// The step's index in the manifest's launch plan.
        step: usize,
        /// The op the step computes.
        op: String,
        /// The kernel entry.
        kernel: String,
        /// The emulator's words (kernel, PTX line, thread, address where it knows them).
        message: String,
    },

    /// The graph breaks an invariant the runtime relies on (e.g. an FP8 weight without its
    /// `weight_scale_inv` parameter).
    #[error("graph `{graph}`: {message}")]
    Graph { graph: String, message: String },
}

/// Every way a checkpoint failed to match a graph, each entry naming its tensor. The message
/// lists the first [`WeightProblems::SHOWN`] of each category and counts the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightProblems {
    /// Tensors the graph needs that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint tensors no parameter uses.
    pub unexpected: Vec<String>,
    /// Tensors whose shape is not the parameter's.
    pub wrong_shape: Vec<String>,
    /// Tensors whose dtype cannot become the parameter's.
    pub wrong_dtype: Vec<String>,
    /// Tensors that contradict each other, e.g. a `weight_scale_inv` next to a BF16 weight.
    pub inconsistent: Vec<String>,
}

impl WeightProblems {
    /// How many entries of each category the message shows.
    pub const SHOWN: usize = 5;

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.categories().iter().all(|(_, v)| v.is_empty())
    }

    fn categories(&self) -> [(&'static str, &Vec<String>); 5] {
        [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("wrong shape", &self.wrong_shape),
            ("wrong dtype", &self.wrong_dtype),
            ("inconsistent", &self.inconsistent),
        ]
    }
}

impl fmt::Display for WeightProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<_> = self
            .categories()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let counts: Vec<String> = present
            .iter()
            .map(|(what, v)| format!("{} {what}", v.len()))
            .collect();
        f.write_str(&counts.join(", "))?;
        for (what, v) in present {
            write!(f, "\n  {what} ({}):", v.len())?;
            for entry in v.iter().take(Self::SHOWN) {
                write!(f, "\n    {entry}")?;
            }
            if v.len() > Self::SHOWN {
                write!(f, "\n    … and {} more", v.len() - Self::SHOWN)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_failures_say_what_and_how_much() {
        let oom = RuntimeError::OutOfDeviceMemory {
            device: "cuda:0 H100".into(),
            what: "the weights, inputs and arena".into(),
            asked: 3 << 30,
            free: 1 << 30,
            total: 80 << 30,
        };
        assert_eq!(
            oom.to_string(),
            "out of device memory on cuda:0 H100: the weights, inputs and arena needs 3221225472 \
             bytes (3072.0 MiB), 1073741824 bytes (1024.0 MiB) are free of 85899345920"
        );
        let ptx = RuntimeError::PtxRejected {
            module: "build/m/kernels.ptx".into(),
            what: "kernel `fp8_gemm_64x128`".into(),
            message: "CUDA_ERROR_NOT_FOUND".into(),
        };
        assert_eq!(
            ptx.to_string(),
            "the CUDA driver refused build/m/kernels.ptx (kernel `fp8_gemm_64x128`): CUDA_ERROR_NOT_FOUND"
        );
        let step = RuntimeError::Emulator {
            step: 3,
            op: "model.layers.0.mlp".into(),
            kernel: "fp8_gemm_64x128".into(),
            message: "kernel `fp8_gemm_64x128`, PTX line 12: `foo` is not implemented".into(),
        };
        assert_eq!(
            step.to_string(),
            "emulator: step 3 (op `model.layers.0.mlp`, kernel `fp8_gemm_64x128`): kernel \
             `fp8_gemm_64x128`, PTX line 12: `foo` is not implemented"
        );
    }
}
