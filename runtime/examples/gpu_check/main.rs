//! The device half of `scripts/gpu-check.sh`: each compiled artifact run on a GPU (or the
//! emulator, to try the script without one) against the CPU reference on the same random
//! weights and inputs, then timed; a table on stdout and every figure in a JSON file.
//!
//! ```text
//! gpu_check [--device cuda|cuda:N|emu] [--iters N] [--json FILE]
//!           [--time-only DIR]... [--train DIR]... DIR...
//! ```
//!
//! A `--train` artifact is a training step (`dsc train --write-step DIR`): two steps on the
//! device against two on the CPU backend ([`train`]).
//!
//! A `--time-only` artifact is timed but not compared (its CPU reference would take minutes).
//! The comparison is the GPU tests' ([`dsc_runtime::step_check`]): every op against the CPU
//! reference of its op fed the operands the step read, under the tolerance of its kind; the
//! exit code is 1 when an op differs or a run fails. The outputs' relative L2 error against a
//! whole CPU run is printed too, for information only: over a deep FP8 model, rounding order
//! flips FP8 codes and routing choices, and the difference grows layer by layer (2–14% on the
//! example models, on the emulator). Times are the median over `--iters` runs after two warm-up
//! runs, per step and in all (CUDA events per step on a GPU; modeled times on the emulator, and
//! labelled so).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

mod train;

use dsc_runtime::inputs::random_inputs;
use dsc_runtime::step_check::{self, StepBackend};
use dsc_runtime::{Artifact, Device, HostTensor, RuntimeError, Session, probe, random_weights};
use serde_json::json;

struct Options {
    device: Device,
    iters: usize,
    json: Option<String>,
    checked: Vec<String>,
    time_only: Vec<String>,
    train: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        device: Device::Cuda(0),
        iters: 20,
        json: None,
        checked: Vec::new(),
        time_only: Vec::new(),
        train: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--device" => {
                let d = value("--device")?;
                options.device = match d.as_str() {
                    "emu" => Device::Emulator,
                    "cuda" => Device::Cuda(0),
                    other => other
                        .strip_prefix("cuda:")
                        .and_then(|n| n.parse().ok())
                        .map(Device::Cuda)
                        .ok_or_else(|| format!("--device: `{other}` is not cuda, cuda:N or emu"))?,
                }
            }
            "--iters" => {
                let n = value("--iters")?;
                options.iters = n
                    .parse()
                    .ok()
                    .filter(|&n| (1..=10_000).contains(&n))
                    .ok_or_else(|| format!("--iters: `{n}` is not a count from 1 to 10000"))?;
            }
            "--json" => options.json = Some(value("--json")?),
            "--time-only" => options.time_only.push(value("--time-only")?),
            "--train" => options.train.push(value("--train")?),
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            dir => options.checked.push(dir.to_string()),
        }
    }
    if options.checked.is_empty() && options.time_only.is_empty() && options.train.is_empty() {
        return Err("no artifact directory given".into());
    }
    Ok(options)
}

/// `‖a − b‖ / ‖b‖` over the elements that are not NaN in both, and whether the NaNs agree.
fn compare(got: &HostTensor, want: &HostTensor) -> (f64, f64, bool) {
    let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
    let (mut diff, mut norm, mut max_abs, mut nans_agree) = (0.0f64, 0.0f64, 0.0f64, true);
    for (&x, &y) in a.iter().zip(&b) {
        if x.is_nan() || y.is_nan() {
            nans_agree &= x.is_nan() && y.is_nan();
            continue;
        }
        let d = f64::from(x) - f64::from(y);
        diff += d * d;
        norm += f64::from(y) * f64::from(y);
        max_abs = max_abs.max(d.abs());
    }
    let rel = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    (rel, max_abs, nans_agree && a.len() == b.len())
}

/// Every op of `artifact` on `device` against the CPU reference, step by step (random weights,
/// seed 11, as the GPU tests): the ops compared, or the mismatches.
fn check_steps(
    artifact: &Artifact,
    device: Device,
    inputs: &HashMap<String, HostTensor>,
) -> Result<usize, Vec<String>> {
    let weights = random_weights(&artifact.graph, 11).map_err(|e| vec![e.to_string()])?;
    let backend = match device {
        Device::Emulator => StepBackend::Emulator,
        Device::Cuda(ordinal) => {
            let devices = probe().map_err(|e| vec![e.to_string()])?;
            let count = devices.len();
            let info = devices
                .into_iter()
                .nth(ordinal)
                .ok_or_else(|| vec![RuntimeError::NoSuchDevice { ordinal, count }.to_string()])?;
            StepBackend::Cuda(info)
        }
        other => {
            return Err(vec![format!(
                "step checks run on cuda or emu, not {other:?}"
            )]);
        }
    };
    step_check::check_steps(artifact, &backend, weights, inputs)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs one artifact; returns its JSON record and whether it passed.
fn check(
    dir: &str,
    compare_to_cpu: bool,
    o: &Options,
) -> Result<(serde_json::Value, bool), String> {
    let artifact = Artifact::load(dir).map_err(|e| e.to_string())?;
    let inputs = random_inputs(&artifact.graph, 0);
    let mut device = Session::new(&artifact, o.device).map_err(|e| e.to_string())?;
    device.load_random_weights(0).map_err(|e| e.to_string())?;
    let got = device.run(&inputs).map_err(|e| e.to_string())?;
    let mut passed = true;
    let mut outputs = Vec::new();
    let mut step_failures = Vec::new();
    if compare_to_cpu {
        let compared = match check_steps(&artifact, o.device, &inputs) {
            Ok(ops) => {
                println!("  {ops} ops match the CPU reference step by step");
                ops
            }
            Err(failures) => {
                passed = false;
                for f in &failures {
                    println!("  DIFFERS: {f}");
                }
                step_failures = failures;
                0
            }
        };
        let mut cpu = Session::new(&artifact, Device::Cpu).map_err(|e| e.to_string())?;
        cpu.load_random_weights(0).map_err(|e| e.to_string())?;
        let want: BTreeMap<String, HostTensor> = cpu
            .run(&inputs)
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        for (name, tensor) in &got {
            let (rel, max_abs, nans) = compare(tensor, &want[name]);
            println!(
                "  {name} against a whole CPU run (information): rel L2 {rel:.2e}, \
                 max |diff| {max_abs:.3e}, NaNs {}",
                if nans { "agree" } else { "differ" }
            );
            outputs.push(json!({"name": name, "rel_l2": rel, "max_abs": max_abs,
                                "nans_agree": nans}));
        }
        outputs.push(json!({"ops_compared": compared}));
    }
    for _ in 0..2 {
        device.run(&inputs).map_err(|e| e.to_string())?;
    }
    let mut per_step: Vec<Vec<f64>> = vec![Vec::new(); device.timings().len()];
    let mut totals = Vec::new();
    for _ in 0..o.iters {
        device.run(&inputs).map_err(|e| e.to_string())?;
        let timings = device.timings();
        totals.push(timings.iter().map(|t| t.seconds).sum());
        for (samples, t) in per_step.iter_mut().zip(timings) {
            samples.push(t.seconds);
        }
    }
    let modeled = device.timings().iter().any(|t| t.modeled.is_some());
    let steps: Vec<serde_json::Value> = device
        .timings()
        .iter()
        .zip(per_step)
        .map(|(t, samples)| {
            let seconds = median(samples);
            json!({"op": t.op, "kernel": t.kernel, "flops": t.flops, "bytes": t.bytes,
                   "median_seconds": seconds,
                   "tflops": t.flops as f64 / seconds / 1e12,
                   "tb_per_s": t.bytes as f64 / seconds / 1e12})
        })
        .collect();
    let total = median(totals);
    for s in &steps {
        if s["kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with("fp8_gemm") || k.starts_with("linear"))
        {
            println!(
                "  {:<44} {:>10.1} µs {:>8.1} TFLOP/s",
                s["op"].as_str().unwrap_or(""),
                s["median_seconds"].as_f64().unwrap_or(0.0) * 1e6,
                s["tflops"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!(
        "  all {} steps: {:.3} ms{}",
        steps.len(),
        total * 1e3,
        if modeled { " (modeled)" } else { "" }
    );
    Ok((
        json!({"artifact": dir, "device": device.device().to_string(), "modeled": modeled,
               "compared": compare_to_cpu, "passed": passed, "outputs": outputs,
               "step_failures": step_failures,
               "steps": steps, "total_median_seconds": total, "iters": o.iters}),
        passed,
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!(
                "usage: gpu_check [--device cuda|cuda:N|emu] [--iters N] \
                 [--json FILE] [--time-only DIR]... [--train DIR]... DIR..."
            );
            return ExitCode::from(2);
        }
    };
    let mut records = Vec::new();
    let mut all_passed = true;
    let runs = o
        .checked
        .iter()
        .map(|d| (d, true))
        .chain(o.time_only.iter().map(|d| (d, false)));
    for (dir, compare_to_cpu) in runs {
        println!("{dir}");
        match check(dir, compare_to_cpu, &o) {
            Ok((record, passed)) => {
                all_passed &= passed;
                records.push(record);
            }
            Err(message) => {
                println!("  FAILED: {message}");
                all_passed = false;
                records.push(json!({"artifact": dir, "passed": false, "error": message}));
            }
        }
    }
    for dir in &o.train {
        println!("{dir} (training step)");
        let (record, passed) = train::check(dir, o.device);
        all_passed &= passed;
        records.push(record);
    }
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&records).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{}",
        if all_passed {
            "every artifact passed"
        } else {
            "SOME ARTIFACTS FAILED"
        }
    );
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
