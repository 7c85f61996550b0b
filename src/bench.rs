//! `dsc bench DIR`: runs a compiled model repeatedly and prints, per launch step, the median
//! time (CUDA events on the GPU, wall clock on the CPU) with TFLOP/s for matrix products or
//! GB/s for the rest, and the whole forward's median time. Measures only; asserts nothing.

use crate::cli::{AccumulatorArg, BenchArgs};
use crate::diagnostic::Diagnostic;
use crate::run::{WeightsSource, open_session, runtime_error};
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Artifact, StepTiming};
use std::fmt::Write as _;
use std::time::Instant;

/// Benchmarks the model in `args.dir`.
pub fn run(args: &BenchArgs) -> Result<(), Diagnostic> {
    if args.iters == 0 {
        return Err(Diagnostic::new("--iters must be at least 1"));
    }
    let artifact = Artifact::load(&args.dir).map_err(runtime_error)?;
    let weights = match &args.weights {
        Some(path) => WeightsSource::Checkpoint(path),
        None => WeightsSource::Random(args.random_weights.unwrap_or(0)),
    };
    let mut session = open_session(&artifact, args.device, AccumulatorArg::Exact, weights)?;
    let inputs = random_inputs(&artifact.graph, 0);
    for _ in 0..args.warmup {
        session.run(&inputs).map_err(runtime_error)?;
    }
    let mut forward = Vec::with_capacity(args.iters);
    let mut per_step: Vec<Vec<StepTiming>> = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        session.run(&inputs).map_err(runtime_error)?;
        forward.push(start.elapsed().as_secs_f64());
        per_step.push(session.timings().to_vec());
    }
    print!(
        "{}",
        table(
            &artifact.graph.name,
            &session.device().short_name(),
            &per_step,
            &forward,
            args.warmup
        )
    );
    Ok(())
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The rate of a step: TFLOP/s when it multiplies matrices, else GB/s.
fn rate(step: &StepTiming, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_string();
    }
    if step.flops > 0 {
        format!("{:.3} TFLOP/s", step.flops as f64 / seconds / 1e12)
    } else {
        format!("{:.3} GB/s", step.bytes as f64 / seconds / 1e9)
    }
}

/// The report: one row per step (median over iterations), then the forward's median.
fn table(
    model: &str,
    device: &str,
    per_step: &[Vec<StepTiming>],
    forward: &[f64],
    warmup: usize,
) -> String {
    let mut out = String::new();
    let steps = per_step.first().map_or(&[][..], Vec::as_slice);
    let width = steps.iter().map(|s| s.op.len()).max().unwrap_or(2).max(2);
    let kernel_width = steps
        .iter()
        .map(|s| s.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{model} on {device}: {} iterations after {warmup} warm-up",
        forward.len()
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<width$}  {:<kernel_width$}  {:>10}  {:>16}",
        "step", "op", "kernel", "median ms", "rate"
    );
    let mut sum = 0.0;
    for (i, step) in steps.iter().enumerate() {
        let mut times: Vec<f64> = per_step
            .iter()
            .filter_map(|run| run.get(i).map(|s| s.seconds))
            .collect();
        let seconds = median(&mut times);
        sum += seconds;
        let _ = writeln!(
            out,
            "{i:>4}  {:<width$}  {:<kernel_width$}  {:>10.4}  {:>16}",
            step.op,
            step.kernel,
            seconds * 1e3,
            rate(step, seconds)
        );
    }
    let flops: u64 = steps.iter().map(|s| s.flops).sum();
    let mut forward = forward.to_vec();
    let whole = median(&mut forward);
    let _ = writeln!(
        out,
        "steps total {:.3} ms ({:.3} TFLOP/s over {} GEMM FLOPs); forward median {:.3} ms (with input and output copies)",
        sum * 1e3,
        if sum > 0.0 {
            flops as f64 / sum / 1e12
        } else {
            0.0
        },
        flops,
        whole * 1e3
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn rates_are_tflops_for_gemms_and_gbs_otherwise() {
        let step = |flops, bytes| StepTiming {
            op: "o".into(),
            kernel: "k".into(),
            seconds: 0.0,
            flops,
            bytes,
        };
        assert_eq!(rate(&step(2_000_000_000_000, 1), 0.5), "4.000 TFLOP/s");
        assert_eq!(rate(&step(0, 3_000_000_000), 2.0), "1.500 GB/s");
        assert_eq!(rate(&step(0, 1), 0.0), "-");
    }
}
