//! The command line (DESIGN.md §6), declared with clap.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// dsc lowers model graphs into FP8 mixed-precision GPU code (the DeepSeek-V3 recipe).
#[derive(Debug, Parser)]
#[command(name = "dsc", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile a model.toml: run the pass pipeline and write the artifact directory.
    Compile(CompileArgs),
    /// Run passes over textual IR and print the result.
    Opt(OptArgs),
    /// Run a compiled model on inputs and weights.
    Run(RunArgs),
    /// Print the FP8 GEMM accumulation-error table (Hopper model unpromoted / promoted, exact).
    Numerics,
    /// Convert a Hugging Face config.json into a model.toml.
    Import(ImportArgs),
    /// Turn a BF16 Hugging Face checkpoint into an FP8 one (DeepSeek-V3 layout).
    QuantizeWeights(QuantizeWeightsArgs),
    /// Time a compiled model: per-step time and TFLOP/s or GB/s, whole-forward median.
    Bench(BenchArgs),
    /// Run any PTX kernel on the emulator as a launch file describes (README: "Running any PTX
    /// kernel"); modeled time on request.
    Emulate(EmulateArgs),
    /// Train a model (DESIGN.md §8): whole training steps — forward, cross-entropy,
    /// backward, AdamW — with the FP8 recipe or the all-BF16 baseline.
    Train(TrainArgs),
}

/// The precision recipe of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecipeArg {
    Fp8,
    Bf16,
}

/// `dsc train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model: a model.toml (with an optional [train] table) or a Hugging Face config.json
    /// or checkpoint directory.
    pub model: PathBuf,
    /// Training text: UTF-8 (byte-level tokens), or token ids (`.bin` uint16, `.u32` uint32).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["inputs", "write_step"])]
    pub data: Option<PathBuf>,
    /// Train on exactly this batch instead of --data: `input_ids` and `labels`, both
    /// [batch, seq] int32.
    #[arg(long, value_name = "FILE.safetensors", conflicts_with = "data")]
    pub inputs: Option<PathBuf>,
    /// The precision recipe (overrides [train] recipe).
    #[arg(long, value_enum)]
    pub recipe: Option<RecipeArg>,
    /// Optimizer steps to take.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub steps: u64,
    /// Sequences per batch (overrides the model's batch).
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: Option<u64>,
    /// Tokens per sequence (overrides the model's seq_len).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub seq_len: Option<u64>,
    /// Seed of the initial weights and of the batch sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Initial weights: a safetensors file or a Hugging Face checkpoint directory (FP8 weights
    /// with `weight_scale_inv` are dequantized); random from --seed otherwise.
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub weights: Option<PathBuf>,
    /// Where the step runs: cpu (the reference, op by op), emu (the step compiled for
    /// --target and run on the PTX emulator) or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// The GPU the step's PTX is built for (with --device emu or cuda).
    #[arg(long, default_value = "sm_90a", value_name = "sm_90a|sm_89")]
    pub target: TargetArg,
    /// Write one CSV row per step: step, loss, lr, grad_norm, tokens_per_s.
    #[arg(long, value_name = "FILE.csv")]
    pub log: Option<PathBuf>,
    /// Write every parameter's FP32 gradient of the first step, by checkpoint name.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save_grads: Option<PathBuf>,
    /// Save a checkpoint to DIR at the end of the run (and every --save-every steps): the
    /// weights in the Hugging Face layout, FP32 masters, moments and the run's state. DIR is
    /// replaced whole; it must be missing, empty or a checkpoint dsc train wrote.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Also save every K steps (to the same --save DIR).
    #[arg(long, value_name = "K", requires = "save", value_parser = clap::value_parser!(u64).range(1..))]
    pub save_every: Option<u64>,
    /// The format of the checkpoint's model.safetensors: bf16 (default) or fp8 (E4M3 with
    /// weight_scale_inv for the weights the precision policy runs in FP8, DeepSeek-V3's layout).
    #[arg(long, value_enum, requires = "save")]
    pub export: Option<crate::train_checkpoint::Export>,
    /// Continue the checkpoint in DIR (written by --save) up to --steps, the total: master
    /// weights, moments, step and the data sampler's state are restored.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Print the training step's IR after its passes to stderr.
    #[arg(long)]
    pub print_ir: bool,
    /// Write the training step compiled for --target to DIR (an artifact, as `dsc compile`
    /// writes: what `gpu_check --train DIR` runs on a GPU against the CPU) and stop, without
    /// training. DIR is replaced only when it is empty or holds a dsc artifact.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "inputs", "resume", "save", "log", "save_grads"])]
    pub write_step: Option<PathBuf>,
    /// Time every op of the steps and print, at the end, the time per op kind and the GEMMs'
    /// share of the step (wall time on the CPU, modeled on the emulator).
    #[arg(long)]
    pub profile: bool,
    /// How FP8 products are summed on the CPU reference and the emulator's tensor cores:
    /// hopper-unpromoted is the no-promotion ablation (--device cpu only).
    #[arg(long, value_enum, default_value = "exact")]
    pub accumulator: AccumulatorArg,
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA when a driver and a GPU are present, else the CPU (never the emulator).
    Auto,
    Cpu,
    /// The PTX emulator: the artifact's PTX and launch plan on the CPU, times modeled.
    Emu,
    /// The n-th CUDA device.
    Cuda(usize),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "emu" => Ok(DeviceArg::Emu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceArg::Cuda)
                .ok_or_else(|| format!("`{s}` is not auto, cpu, emu, cuda or cuda:N")),
        }
    }
}

/// The accumulator model of the CPU reference and of the emulator's tensor cores (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccumulatorArg {
    /// FP32 additions.
    Exact,
    /// The Hopper FP8 tensor-core accumulation model.
    Hopper,
    /// The Hopper model with no promotion into FP32 (the recipe's ablation; CPU reference only).
    HopperUnpromoted,
}

impl AccumulatorArg {
    /// The model it names.
    pub fn model(self) -> dsc_kernels::Accumulator {
        match self {
            AccumulatorArg::Exact => dsc_kernels::Accumulator::Exact,
            AccumulatorArg::Hopper => dsc_kernels::Accumulator::Hopper,
            AccumulatorArg::HopperUnpromoted => dsc_kernels::Accumulator::HopperUnpromoted,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AccumulatorArg::Exact => "exact",
            AccumulatorArg::Hopper => "hopper",
            AccumulatorArg::HopperUnpromoted => "hopper-unpromoted",
        }
    }
}

/// `dsc run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A directory written by `dsc compile`.
    pub dir: PathBuf,
    /// auto, cpu, emu (the PTX emulator) or cuda[:N].
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Inputs by name (safetensors) [default: random inputs, seed 0].
    #[arg(long, value_name = "IN.safetensors")]
    pub inputs: Option<PathBuf>,
    /// Weights: a .safetensors file or a Hugging Face checkpoint directory.
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    pub weights: Option<PathBuf>,
    /// Random weights from this seed instead of a checkpoint.
    #[arg(long, value_name = "SEED")]
    pub random_weights: Option<u64>,
    /// Write the outputs here (safetensors).
    #[arg(long, value_name = "OUT.safetensors")]
    pub output: Option<PathBuf>,
    /// How the CPU reference and the emulator's tensor cores sum FP8 products.
    #[arg(long, value_enum, default_value = "exact")]
    pub accumulator: AccumulatorArg,
}

/// Options shared by commands that run a pipeline.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Comma-separated passes to run instead of the default pipeline.
    #[arg(long, value_name = "LIST")]
    pub passes: Option<String>,
    /// Print the IR after the named pass (or after every pass with `all`) to stderr.
    #[arg(long, value_name = "PASS|all")]
    pub print_after: Option<String>,
    /// Print the time each pass took.
    #[arg(long)]
    pub timings: bool,
}

/// `dsc compile`.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The model: a model.toml, a Hugging Face config.json, or a checkpoint directory.
    pub model: PathBuf,
    /// With a Hugging Face config: the compiled graph's batch and sequence length.
    #[command(flatten)]
    pub hf_shape: HfShapeArgs,
    /// Output directory [default: build/<model name>].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The GPU the PTX is built for.
    #[arg(long, default_value = "sm_90a", value_name = "sm_90a|sm_89")]
    pub target: TargetArg,
    /// Also write each kernel's MLIR (before lowering) as kernels.mlir.
    #[arg(long, value_name = "mlir")]
    pub emit: Option<EmitArg>,
    /// Lower every kernel afresh: neither read nor write the PTX cache ($DSC_CACHE_DIR, else
    /// $XDG_CACHE_HOME/dsc or ~/.cache/dsc).
    #[arg(long)]
    pub no_cache: bool,
}

/// `--target`: a GPU architecture dsc generates PTX for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetArg(pub dsc_codegen::Target);

impl std::str::FromStr for TargetArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(TargetArg)
            .map_err(|e: dsc_codegen::CodegenError| e.to_string())
    }
}

/// `--emit`: extra outputs of `dsc compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmitArg {
    /// The MLIR of every kernel, before lowering (`kernels.mlir`).
    Mlir,
}

/// `dsc opt`.
#[derive(Debug, clap::Args)]
pub struct OptArgs {
    /// Textual IR (.dsc).
    pub input: PathBuf,
    /// Write the result here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// `dsc import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A Hugging Face config.json (or the checkpoint directory holding it).
    pub config: PathBuf,
    #[command(flatten)]
    pub shape: HfShapeArgs,
    /// Write the model.toml here instead of stdout.
    #[arg(short, long, value_name = "MODEL.toml")]
    pub output: Option<PathBuf>,
}

/// The input shape of a model imported from a Hugging Face config (which does not say it).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct HfShapeArgs {
    /// Batch size of the compiled graph [default: 1]. (The bounds are `dsc train`'s.)
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: Option<u64>,
    /// Sequence length of the compiled graph [default: 128].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub seq_len: Option<u64>,
}

/// `dsc quantize-weights`.
#[derive(Debug, clap::Args)]
pub struct QuantizeWeightsArgs {
    /// A Hugging Face checkpoint directory (config.json, index and shards) in BF16/F16/F32.
    pub input: PathBuf,
    /// The FP8 checkpoint directory to write (replaced whole, atomically).
    #[arg(short, long, value_name = "OUT_DIR")]
    pub output: PathBuf,
}

/// `dsc bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A directory written by `dsc compile`.
    pub dir: PathBuf,
    /// auto, cpu, emu (the PTX emulator: times modeled) or cuda[:N].
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Timed forward passes (the table shows medians) [default: 10; 1 on emu].
    #[arg(long, value_name = "N")]
    pub iters: Option<usize>,
    /// Untimed forward passes first [default: 1; 0 on emu].
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Also write the per-step results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// On emu: emulate at most N CTAs of each launch and scale its profile to the grid
    /// (modeled times only; the outputs are then partial).
    #[arg(long, value_name = "N")]
    pub sample_ctas: Option<std::num::NonZeroU64>,
    /// How the CPU reference and the emulator's tensor cores sum FP8 products.
    #[arg(long, value_enum, default_value = "exact")]
    pub accumulator: AccumulatorArg,
    /// Weights: a .safetensors file or a Hugging Face checkpoint directory.
    #[arg(long, value_name = "PATH", conflicts_with = "random_weights")]
    pub weights: Option<PathBuf>,
    /// Random weights from this seed [default: 0].
    #[arg(long, value_name = "SEED")]
    pub random_weights: Option<u64>,
}

/// `dsc emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// The PTX module.
    pub ptx: PathBuf,
    /// The launch file (JSON): entry, grid, block, cluster, shared memory, buffers, parameters.
    #[arg(long, value_name = "LAUNCH.json")]
    pub launch: PathBuf,
    /// The input buffers: each tensor's raw bytes, by name.
    #[arg(long, value_name = "IN.safetensors")]
    pub buffers: Option<PathBuf>,
    /// Write every buffer after the launch here (allocated ones as U8).
    #[arg(long, value_name = "OUT.safetensors")]
    pub output: Option<PathBuf>,
    /// Print the modeled time, fraction of peak and bound.
    #[arg(long)]
    pub profile: bool,
    /// Write the modeled figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Emulate only this many CTAs (whole clusters, spread over the grid) and scale the profile
    /// to the grid (modeled times only; the outputs are then partial).
    #[arg(long, value_name = "N")]
    pub sample_ctas: Option<std::num::NonZeroU64>,
    /// The GPU the time model uses: h100-sxm, h200 or l40s.
    #[arg(long, value_name = "NAME", default_value = "h100-sxm")]
    pub device_model: String,
}
