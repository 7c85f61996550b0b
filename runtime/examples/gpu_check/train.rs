//! `--train DIR`: a training step compiled by `dsc train --write-step DIR`, two steps on the
//! device against two on the CPU backend from the same random masters and batch
//! ([`dsc_runtime::train_check`]: losses, gradient norms, the first step's gradients and the
//! masters after the second, each within the training-step tests' bounds), and the device's
//! wall time per step (weights uploaded, step run, every output read back; on the emulator,
//! the emulation's, labelled so).

use dsc_runtime::train_check::check_training;
use dsc_runtime::{Artifact, Device};
use serde_json::json;

/// Steps compared.
const STEPS: usize = 2;

/// Checks the training step in `dir` on `device`; its JSON record and whether it passed.
pub fn check(dir: &str, device: Device) -> (serde_json::Value, bool) {
    let result = Artifact::load(dir)
        .map_err(|e| e.to_string())
        .and_then(|artifact| {
            check_training(&artifact, device, STEPS, 5).map_err(|e| e.to_string())
        });
    let c = match result {
        Ok(c) => c,
        Err(message) => {
            println!("  FAILED: {message}");
            return (
                json!({"artifact": dir, "training": true, "passed": false, "error": message}),
                false,
            );
        }
    };
    let failures = c.failures();
    let worst = c
        .differences
        .iter()
        .max_by(|a, b| (a.relative / a.bound).total_cmp(&(b.relative / b.bound)));
    println!(
        "  {} recipe: {} comparisons, {} outside their bounds{}",
        if c.fp8 { "FP8" } else { "all-BF16" },
        c.differences.len(),
        failures.len(),
        worst.map_or(String::new(), |w| format!(
            "; closest to its bound: {} {:.2e} (bound {:.0e})",
            w.what, w.relative, w.bound
        ))
    );
    for f in &failures {
        println!("  DIFFERS: {} {:.3e} > {:.0e}", f.what, f.relative, f.bound);
    }
    // On the emulator the wall clock is the emulation's, which says nothing of a GPU's speed.
    let emulated = device == Device::Emulator;
    for (i, s) in c.device_step_seconds.iter().enumerate() {
        if emulated {
            println!(
                "  emulated step {}: {:.1} ms of emulation (wall clock; not a GPU's time)",
                i + 1,
                s * 1e3
            );
        } else {
            println!(
                "  device step {}: {:.1} ms wall, {:.0} tokens/s",
                i + 1,
                s * 1e3,
                c.tokens as f64 / s
            );
        }
    }
    let differences: Vec<serde_json::Value> = c
        .differences
        .iter()
        .map(|d| json!({"what": d.what, "relative": d.relative, "bound": d.bound}))
        .collect();
    let passed = failures.is_empty();
    (
        json!({"artifact": dir, "training": true, "passed": passed, "fp8": c.fp8,
               "emulated": emulated,
               "tokens_per_step": c.tokens, "device_step_seconds": c.device_step_seconds,
               "differences": differences}),
        passed,
    )
}
