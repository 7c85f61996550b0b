//! Runs a compiled artifact with random weights and random inputs, and prints its outputs and
//! per-step timings.
//!
//! ```text
//! dsc compile examples/tiny-moe.toml -o build/tiny-moe
//! cargo run -p dsc-runtime --example run_artifact -- build/tiny-moe [auto|cpu|emu|cuda|cuda:N]
//! ```

use std::process::ExitCode;

use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Artifact, Device, RuntimeError, Session};

fn device(arg: Option<&str>) -> Result<Device, String> {
    match arg.unwrap_or("auto") {
        "auto" => Ok(Device::Auto),
        "cpu" => Ok(Device::Cpu),
        "emu" => Ok(Device::Emulator),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("`{other}` is not auto, cpu, emu, cuda or cuda:N")),
    }
}

fn run(dir: &str, device: Device) -> Result<(), RuntimeError> {
    let artifact = Artifact::load(dir)?;
    let mut session = Session::new(&artifact, device)?;
    println!("device: {}", session.device());
    session.load_random_weights(0)?;
    let outputs = session.run(&random_inputs(&artifact.graph, 0))?;
    for (name, tensor) in &outputs {
        let values = tensor.to_f32_vec();
        let first: Vec<String> = values.iter().take(4).map(|v| format!("{v:.4}")).collect();
        println!(
            "{name}: {}{:?} first [{}]",
            tensor.dtype,
            tensor.shape,
            first.join(", ")
        );
    }
    let mut total = 0.0;
    for step in session.timings() {
        total += step.seconds;
        // Emulator times come from the roofline model, not a clock: say so.
        let modeled = step.modeled.as_ref().map_or(String::new(), |m| {
            format!(
                " (modeled, {:.0}% of peak, {})",
                m.peak_fraction * 100.0,
                m.bound
            )
        });
        println!(
            "  {:<48} {:<32} {:>9.3} ms {:>14} FLOP {:>12} B{modeled}",
            step.op,
            step.kernel,
            step.seconds * 1e3,
            step.flops,
            step.bytes
        );
    }
    let modeled = session.timings().iter().any(|t| t.modeled.is_some());
    println!(
        "{} steps, {:.3} ms{}",
        session.timings().len(),
        total * 1e3,
        if modeled { " (modeled)" } else { "" }
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: run_artifact DIR [auto|cpu|emu|cuda|cuda:N]");
        return ExitCode::from(2);
    };
    let outcome = device(args.get(1).map(String::as_str))
        .map_err(|e| e.to_string())
        .and_then(|device| run(dir, device).map_err(|e| e.to_string()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
