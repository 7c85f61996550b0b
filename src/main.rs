//! The `dsc` binary: exit 0 on success, 1 on bad input or a failed run (`error: …` on
//! stderr), 2 on usage errors (clap's own).

mod artifact_dir;
mod bench;
mod cli;
mod compile;
mod diagnostic;
mod emulate;
mod import;
mod opt;
mod output_file;
mod pipeline;
mod quantize_weights;
mod report;
mod run;
mod train;
mod train_checkpoint;
mod train_data;
mod train_report;
mod train_routing;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Compile(args) => compile::run(args),
        cli::Command::Opt(args) => opt::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::Import(args) => import::run(args),
        cli::Command::QuantizeWeights(args) => quantize_weights::run(args),
        cli::Command::Numerics => {
            print!("{}", dsc_kernels::numerics_report());
            Ok(())
        }
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Emulate(args) => emulate::run(args),
        cli::Command::Train(args) => train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(diagnostic) => {
            eprintln!("{diagnostic}");
            ExitCode::from(1)
        }
    }
}
