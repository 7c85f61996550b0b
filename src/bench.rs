//! `dsc bench DIR`: runs a compiled model repeatedly and prints, per launch step, the median
//! time (CUDA events on the GPU, wall clock on the CPU) with TFLOP/s for matrix products or
//! GB/s for the rest, and the whole forward's median time. On the emulator (`--device emu`)
//! the step times are the roofline model's, printed as modeled with the fraction of peak and
//! the binding resource. `--json FILE` writes the same per step. Measures only; asserts nothing.

use crate::cli::{BenchArgs, DeviceArg};
use crate::diagnostic::Diagnostic;
use crate::output_file::{Input, check_output_file};
use crate::run::{WeightsSource, open_session, runtime_error, session_options};
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Artifact, ModeledTiming, StepTiming};
use std::fmt::Write as _;
use std::time::Instant;

/// The most `--iters` (and `--warmup`) `dsc bench` takes.
const MAX_ITERATIONS: usize = 10_000;

/// Benchmarks the model in `args.dir`.
pub fn run(args: &BenchArgs) -> Result<(), Diagnostic> {
    let emulated = args.device == DeviceArg::Emu;
    if args.sample_ctas.is_some() && !emulated {
        return Err(Diagnostic::new(
            "--sample-ctas applies to --device emu only (a GPU runs every CTA)",
        ));
    }
    // Emulation is slow and its modeled times do not vary: one run, no warm-up.
    let iters = args.iters.unwrap_or(if emulated { 1 } else { 10 });
    let warmup = args.warmup.unwrap_or(if emulated { 0 } else { 1 });
    if iters == 0 {
        return Err(Diagnostic::new("--iters must be at least 1"));
    }
    for (flag, n) in [("--iters", iters), ("--warmup", warmup)] {
        if n > MAX_ITERATIONS {
            return Err(Diagnostic::new(format!(
                "{flag} {n} is more than {MAX_ITERATIONS}, the most forward passes dsc bench runs \
                 (a median over {MAX_ITERATIONS} is as steady as it gets)"
            )));
        }
    }
    if let Some(path) = &args.json {
        let mut inputs = vec![Input::new("the artifact", &args.dir)];
        if let Some(p) = &args.weights {
            inputs.push(Input::new("the --weights checkpoint", p));
        }
        check_output_file("--json", path, &inputs)?;
    }
    let artifact = Artifact::load(&args.dir).map_err(runtime_error)?;
    // Every artifact dsc compile writes has one, whatever device runs it.
    artifact.require_launch_plan().map_err(runtime_error)?;
    let weights = match &args.weights {
        Some(path) => WeightsSource::Checkpoint(path),
        None => WeightsSource::Random(args.random_weights.unwrap_or(0)),
    };
    let mut options = session_options(args.accumulator);
    options.emulator.sample_ctas = args.sample_ctas;
    let mut session = open_session(&artifact, args.device, options, weights)?;
    let inputs = random_inputs(&artifact.graph, 0);
    for _ in 0..warmup {
        session.run(&inputs).map_err(runtime_error)?;
    }
    let mut forward = Vec::new();
    // The first run's steps, and each step's seconds over the runs (not every run's
    // `StepTiming`s: op and kernel names repeated `iters` times).
    let mut first: Vec<StepTiming> = Vec::new();
    let mut seconds: Vec<Vec<f64>> = Vec::new();
    for _ in 0..iters {
        let start = Instant::now();
        session.run(&inputs).map_err(runtime_error)?;
        forward.push(start.elapsed().as_secs_f64());
        let timings = session.timings();
        if first.is_empty() {
            first = timings.to_vec();
            seconds = vec![Vec::new(); first.len()];
        }
        for (times, t) in seconds.iter_mut().zip(timings) {
            times.push(t.seconds);
        }
    }
    let bench = Bench {
        model: artifact.graph.name.clone(),
        device: session.device().short_name(),
        steps: summarize(&first, &mut seconds),
        forward: median(&mut forward),
        iters,
        warmup,
        sample_ctas: args.sample_ctas.map(u64::from),
    };
    print!("{}", bench.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&bench.json())
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One step over all iterations: its median time and, on the emulator, the modeled view.
#[derive(Debug, Clone, PartialEq)]
struct StepSummary {
    op: String,
    kernel: String,
    /// Median seconds (modeled on the emulator).
    seconds: f64,
    flops: u64,
    bytes: u64,
    /// The roofline's view of the first iteration (modeled times do not vary between runs).
    modeled: Option<ModeledTiming>,
}

/// A finished benchmark.
#[derive(Debug, Clone, PartialEq)]
struct Bench {
    model: String,
    device: String,
    steps: Vec<StepSummary>,
    /// Median seconds of a whole forward (wall clock, with input and output copies).
    forward: f64,
    iters: usize,
    warmup: usize,
    sample_ctas: Option<u64>,
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
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

/// Each step of the first run (`steps`) with its median over the runs (`seconds[i]`: step
/// `i`'s seconds in each run).
fn summarize(steps: &[StepTiming], seconds: &mut [Vec<f64>]) -> Vec<StepSummary> {
    steps
        .iter()
        .zip(seconds)
        .map(|(step, times)| StepSummary {
            op: step.op.clone(),
            kernel: step.kernel.clone(),
            seconds: median(times),
            flops: step.flops,
            bytes: step.bytes,
            modeled: step.modeled.clone(),
        })
        .collect()
}

/// The width of a table column: its widest cell, at least its header's.
fn column_width<'s>(header: &str, cells: impl Iterator<Item = &'s str>) -> usize {
    cells.map(str::len).max().unwrap_or(0).max(header.len())
}

/// The rate of a step: TFLOP/s when it multiplies matrices, else GB/s.
fn rate(flops: u64, bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_string();
    }
    if flops > 0 {
        format!("{:.3} TFLOP/s", flops as f64 / seconds / 1e12)
    } else {
        format!("{:.3} GB/s", bytes as f64 / seconds / 1e9)
    }
}

impl Bench {
    /// The GPU the times are modeled on, when they are modeled.
    fn modeled_on(&self) -> Option<&str> {
        self.steps
            .first()
            .and_then(|s| s.modeled.as_ref())
            .map(|m| m.device.as_str())
    }

    /// The report: one row per step (median over iterations), then the forward's median.
    fn table(&self) -> String {
        let mut out = String::new();
        let modeled_on = self.modeled_on();
        let width = column_width("op", self.steps.iter().map(|s| s.op.as_str()));
        let kernel_width = column_width("kernel", self.steps.iter().map(|s| s.kernel.as_str()));
        let _ = writeln!(
            out,
            "{} on {}: {} iterations after {} warm-up",
            self.model, self.device, self.iters, self.warmup
        );
        if let Some(gpu) = modeled_on {
            let _ = writeln!(
                out,
                "times are MODELED (the emulator's roofline model of {gpu}), not measured"
            );
            if let Some(n) = self.sample_ctas {
                let _ = writeln!(
                    out,
                    "sampled: at most {n} CTAs emulated per launch, profiles scaled to the grid"
                );
            }
            let _ = writeln!(
                out,
                "{:>4}  {:<width$}  {:<kernel_width$}  {:>10}  {:>16}  {:>12}  bound",
                "step", "op", "kernel", "modeled ms", "modeled rate", "modeled peak"
            );
        } else {
            let _ = writeln!(
                out,
                "{:>4}  {:<width$}  {:<kernel_width$}  {:>10}  {:>16}",
                "step", "op", "kernel", "median ms", "rate"
            );
        }
        for (i, step) in self.steps.iter().enumerate() {
            let _ = write!(
                out,
                "{i:>4}  {:<width$}  {:<kernel_width$}  {:>10.4}  {:>16}",
                step.op,
                step.kernel,
                step.seconds * 1e3,
                rate(step.flops, step.bytes, step.seconds)
            );
            if let Some(m) = &step.modeled {
                let _ = write!(out, "  {:>11.1}%  {}", m.peak_fraction * 100.0, m.bound);
            }
            out.push('\n');
        }
        let flops: u64 = self.steps.iter().map(|s| s.flops).sum();
        let sum: f64 = self.steps.iter().map(|s| s.seconds).sum();
        let tflops = if sum > 0.0 {
            flops as f64 / sum / 1e12
        } else {
            0.0
        };
        if modeled_on.is_some() {
            let _ = writeln!(
                out,
                "modeled steps total {:.3} ms ({tflops:.3} TFLOP/s over {flops} GEMM FLOPs); \
                 emulation took {:.3} s (wall clock, median)",
                sum * 1e3,
                self.forward
            );
        } else {
            let _ = writeln!(
                out,
                "steps total {:.3} ms ({tflops:.3} TFLOP/s over {flops} GEMM FLOPs); forward median {:.3} ms (with input and output copies)",
                sum * 1e3,
                self.forward * 1e3
            );
        }
        out
    }

    /// The `--json` document: the run, then one object per step (`op`, `kernel`, `seconds`,
    /// `flops`, `bytes`, and on the emulator `modeled_seconds`, `modeled_serial_seconds`, `modeled_peak_fraction`,
    /// `bound`).
    fn json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({
                    "op": s.op,
                    "kernel": s.kernel,
                    "seconds": s.seconds,
                    "flops": s.flops,
                    "bytes": s.bytes,
                });
                if let (Some(m), Some(map)) = (&s.modeled, step.as_object_mut()) {
                    map.insert("modeled_seconds".into(), json!(m.seconds));
                    map.insert("modeled_serial_seconds".into(), json!(m.serial_seconds));
                    map.insert("modeled_peak_fraction".into(), json!(m.peak_fraction));
                    map.insert("bound".into(), json!(m.bound));
                }
                step
            })
            .collect();
        let mut doc = json!({
            "model": self.model,
            "device": self.device,
            "modeled": self.modeled_on().is_some(),
            "iterations": self.iters,
            "warmup": self.warmup,
            "steps": steps,
        });
        if let Some(map) = doc.as_object_mut() {
            if let Some(gpu) = self.modeled_on() {
                map.insert("modeled_device".into(), json!(gpu));
                map.insert("sample_ctas".into(), json!(self.sample_ctas));
                map.insert("emulation_wall_seconds".into(), json!(self.forward));
            } else {
                map.insert("forward_median_seconds".into(), json!(self.forward));
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(flops: u64, bytes: u64, seconds: f64, modeled: bool) -> StepTiming {
        StepTiming {
            op: "o".into(),
            kernel: "k".into(),
            seconds,
            flops,
            bytes,
            modeled: modeled.then(|| ModeledTiming {
                seconds,
                serial_seconds: 2.0 * seconds,
                peak_fraction: 0.25,
                bound: "dram".into(),
                device: "H100 SXM".into(),
            }),
        }
    }

    /// Each run's steps, as `dsc bench` collects them.
    fn summarize_runs(per_step: &[Vec<StepTiming>]) -> Vec<StepSummary> {
        let mut seconds: Vec<Vec<f64>> = (0..per_step[0].len())
            .map(|i| per_step.iter().map(|run| run[i].seconds).collect())
            .collect();
        summarize(&per_step[0], &mut seconds)
    }

    fn bench(per_step: &[Vec<StepTiming>], sample_ctas: Option<u64>) -> Bench {
        Bench {
            model: "m".into(),
            device: "emu".into(),
            steps: summarize_runs(per_step),
            forward: 2.5,
            iters: per_step.len(),
            warmup: 0,
            sample_ctas,
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn rates_are_tflops_for_gemms_and_gbs_otherwise() {
        assert_eq!(rate(2_000_000_000_000, 1, 0.5), "4.000 TFLOP/s");
        assert_eq!(rate(0, 3_000_000_000, 2.0), "1.500 GB/s");
        assert_eq!(rate(0, 1, 0.0), "-");
    }

    #[test]
    fn steps_are_summarized_by_their_median() {
        let runs = vec![
            vec![step(2, 3, 1.0, false)],
            vec![step(2, 3, 5.0, false)],
            vec![step(2, 3, 2.0, false)],
        ];
        let summary = summarize_runs(&runs);
        assert_eq!(summary.len(), 1);
        assert_eq!((summary[0].seconds, summary[0].flops), (2.0, 2));
    }

    #[test]
    fn measured_tables_and_json_say_nothing_of_models() {
        let b = bench(&[vec![step(0, 1_000_000, 1e-3, false)]], None);
        let table = b.table();
        assert!(
            table.contains("median ms") && !table.contains("modeled"),
            "{table}"
        );
        let json = b.json();
        assert_eq!(json["modeled"], false);
        assert_eq!(json["forward_median_seconds"], 2.5);
        assert!(json["steps"][0].get("modeled_seconds").is_none());
        assert_eq!(json["steps"][0]["bytes"], 1_000_000);
    }

    #[test]
    fn modeled_tables_and_json_are_labelled_modeled() {
        let b = bench(&[vec![step(2_000_000_000, 10, 1e-3, true)]], Some(8));
        let table = b.table();
        for label in [
            "times are MODELED",
            "H100 SXM",
            "modeled ms",
            "modeled peak",
            "25.0%",
            "dram",
            "at most 8 CTAs",
            "modeled steps total 1.000 ms",
        ] {
            assert!(table.contains(label), "`{label}` missing from:\n{table}");
        }
        let json = b.json();
        assert_eq!(json["modeled"], true);
        assert_eq!(json["modeled_device"], "H100 SXM");
        assert_eq!(json["sample_ctas"], 8);
        let s = &json["steps"][0];
        assert_eq!(s["op"], "o");
        assert_eq!(s["kernel"], "k");
        assert_eq!(s["seconds"], 1e-3);
        assert_eq!(s["flops"], 2_000_000_000u64);
        assert_eq!(s["modeled_seconds"], 1e-3);
        assert_eq!(s["modeled_serial_seconds"], 2e-3);
        assert_eq!(s["modeled_peak_fraction"], 0.25);
        assert_eq!(s["bound"], "dram");
    }
}
