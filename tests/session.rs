//! `dsc run` / `dsc bench` through the runtime's Session: device choice, artifact files, the
//! manifest's schema version, and the bench table.

use crate::support::{TempDir, dsc, streams};
use std::path::Path;

fn compile(tmp: &TempDir, example: &str) -> String {
    let dir = tmp.join(example).to_string_lossy().into_owned();
    succeeds(&["compile", &format!("examples/{example}.toml"), "-o", &dir]);
    dir
}

/// Runs dsc, expects success, and returns its stdout.
fn succeeds(args: &[&str]) -> String {
    let out = dsc(args);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{args:?}: {stderr}");
    stdout
}

/// Runs dsc, expects exit 1 with `error: …` containing `expect`, and no panic.
fn fails_with(args: &[&str], expect: &str) {
    let out = dsc(args);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expect),
        "{args:?}: expected `{expect}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn auto_says_which_device_it_chose() {
    let tmp = TempDir::new("session-auto");
    let dir = compile(&tmp, "mlp");
    let stdout = succeeds(&["run", &dir, "--random-weights", "1"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("device: "))
        .expect("a device line");
    if dsc_runtime::cuda::driver_present() {
        eprintln!("a CUDA driver is present: {line}");
    } else {
        assert!(
            line.starts_with("device: cpu (auto: no CUDA driver"),
            "{line}"
        );
    }
}

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if dsc_runtime::cuda::driver_present() {
        eprintln!(
            "SKIPPED: a CUDA driver is present, so `--device cuda` does not fail for lack of one"
        );
        return;
    }
    let tmp = TempDir::new("session-no-driver");
    let dir = compile(&tmp, "mlp");
    for device in ["cuda", "cuda:1"] {
        fails_with(
            &["run", &dir, "--device", device, "--random-weights", "1"],
            "no CUDA driver: libcuda could not be loaded",
        );
        fails_with(
            &["bench", &dir, "--device", device, "--iters", "1"],
            "no CUDA driver",
        );
    }
}

#[test]
fn artifact_files_and_schema_version_are_checked() {
    let tmp = TempDir::new("session-files");
    for file in ["manifest.json", "kernels.ptx", "graph.dsc"] {
        let dir = compile(&tmp, "mlp");
        std::fs::remove_file(Path::new(&dir).join(file)).unwrap();
        fails_with(
            &["run", &dir, "--device", "cpu", "--random-weights", "1"],
            &format!("is not a compiled model: it has no {file}"),
        );
        // Without its manifest the directory is no longer an artifact `-o` may replace.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = compile(&tmp, "mlp");
    let path = Path::new(&dir).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"schema_version\": 1", "\"schema_version\": 2", 1),
    )
    .unwrap();
    fails_with(
        &["run", &dir, "--device", "cpu", "--random-weights", "1"],
        "manifest schema version 2, this dsc reads version 1: recompile the model",
    );
    // A manifest whose tensor disagrees with the graph names it.
    std::fs::write(&path, text.replacen("\"bf16\"", "\"f32\"", 1)).unwrap();
    fails_with(
        &["run", &dir, "--device", "cpu", "--random-weights", "1"],
        "does not match the compiled graph",
    );
}

#[test]
fn bench_prints_a_row_per_step_and_the_forward_median() {
    let tmp = TempDir::new("session-bench");
    let dir = compile(&tmp, "mlp");
    let stdout = succeeds(&["bench", &dir, "--device", "cpu", "--iters", "3"]);
    assert!(
        stdout.contains("mlp on cpu: 3 iterations after 1 warm-up"),
        "{stdout}"
    );
    // mlp compiles to 5 ops: rms_norm_quant, two FP8 GEMMs, silu, quantize.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("TFLOP/s")).count(),
        2,
        "{stdout}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains("TFLOP/s") || r.contains("GB/s")),
        "{stdout}"
    );
    assert!(stdout.contains("forward median"), "{stdout}");
    fails_with(
        &["bench", &dir, "--device", "cpu", "--iters", "0"],
        "--iters",
    );
}

/// `--json` writes one object per step; `--sample-ctas` is for the emulator only.
#[test]
fn bench_writes_json_and_refuses_sampling_off_the_emulator() {
    let tmp = TempDir::new("session-bench-json");
    let dir = compile(&tmp, "mlp");
    let json = tmp.join("bench.json");
    let json_arg = json.to_string_lossy().into_owned();
    succeeds(&[
        "bench", &dir, "--device", "cpu", "--iters", "1", "--json", &json_arg,
    ]);
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("bench --json writes JSON");
    assert_eq!(doc["device"], "cpu");
    assert_eq!(doc["modeled"], false);
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 5, "{doc}");
    for step in steps {
        for key in ["op", "kernel", "seconds", "flops", "bytes"] {
            assert!(step.get(key).is_some(), "`{key}` missing in {step}");
        }
        assert!(step.get("modeled_seconds").is_none(), "{step}");
    }
    fails_with(
        &["bench", &dir, "--device", "cpu", "--sample-ctas", "4"],
        "--sample-ctas applies to --device emu only",
    );
    assert_eq!(
        dsc(&["bench", &dir, "--device", "emu", "--sample-ctas", "0"])
            .status
            .code(),
        Some(2)
    );
}

/// `--device emu`: the artifact's PTX on the emulator, times labelled modeled; one iteration
/// and no warm-up by default; `--sample-ctas` and `--json` with the modeled fields.
#[test]
fn emu_runs_and_benches_with_modeled_times() {
    let tmp = TempDir::new("session-emu");
    let dir = compile(&tmp, "mlp");
    let stdout = succeeds(&["run", &dir, "--device", "emu", "--random-weights", "1"]);
    assert!(
        stdout.contains(
            "device: emu: PTX emulator for sm_90a, times modeled on H100 SXM (requested)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("modeled: "), "{stdout}");
    for sample in [None, Some("2")] {
        let json = tmp.join("emu.json");
        let json_arg = json.to_string_lossy().into_owned();
        let mut args = vec!["bench", &dir, "--device", "emu", "--json", &json_arg];
        if let Some(n) = sample {
            args.extend(["--sample-ctas", n]);
        }
        let stdout = succeeds(&args);
        assert!(
            stdout.contains("mlp on emu: 1 iterations after 0 warm-up")
                && stdout.contains("times are MODELED")
                && stdout.contains("modeled ms"),
            "{stdout}"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(doc["modeled"], true);
        let steps = doc["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 5, "{doc}");
        for step in steps {
            for key in ["modeled_seconds", "modeled_peak_fraction", "bound"] {
                assert!(step.get(key).is_some(), "`{key}` missing in {step}");
            }
        }
    }
}
