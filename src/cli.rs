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
    /// The model description (model.toml).
    pub model: PathBuf,
    /// Output directory [default: build/<model name>].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
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
