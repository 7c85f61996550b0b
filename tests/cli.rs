//! The `dsc` command line: outputs written, reports, exit codes, pipeline flags, atomicity.

use crate::support::{TempDir, dsc, read, streams};

#[test]
fn compile_writes_graph_and_reports_and_prints_a_summary() {
    let tmp = TempDir::new("cli-compile");
    let out_dir = tmp.join("tiny");
    let out = dsc(&[
        "compile",
        "examples/tiny-moe.toml",
        "-o",
        &out_dir.to_string_lossy(),
    ]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ops by role and compute dtype"), "{stdout}");
    assert!(stdout.contains("attn_proj      f8e4m3"), "{stdout}");
    assert!(stdout.contains("in FP8 ("), "{stdout}");
    assert!(stdout.contains("all-BF16"), "{stdout}");
    // 4 layers × 4 attention projections, 1 dense MLP × 3, 3 MoE layers × (3 grouped + 3 shared).
    assert!(
        stdout.contains("fused kernels: 37 fp8_gemm (9 grouped), "),
        "{stdout}"
    );

    let graph = read(&out_dir.join("graph.dsc"));
    assert!(graph.starts_with("graph \"tiny-moe\"\n"));
    let reparsed = dsc_ir::text::parse(&graph).unwrap();
    assert_eq!(reparsed.to_string(), graph);

    let report: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("report.json"))).unwrap();
    let ops = report["ops"].as_array().unwrap();
    assert_eq!(ops.len(), reparsed.ops.len());
    let q = ops
        .iter()
        .find(|o| o["name"] == "model.layers.0.self_attn.q_proj")
        .expect("the q projection is reported");
    assert_eq!(q["kind"], "fp8_gemm");
    assert_eq!(q["role"], "attn_proj");
    assert_eq!(q["compute"], "f8e4m3");
    assert_eq!(q["accumulate"], "f32");
    // Codes and scales of the activation, then of the weight.
    assert_eq!(
        q["inputs"],
        serde_json::json!(["f8e4m3", "f32", "f8e4m3", "f32"])
    );
    assert_eq!(q["outputs"], serde_json::json!(["bf16"]));
    // The layer's input norm quantizes its own output for the q projection.
    let norm_quant = ops
        .iter()
        .find(|o| o["name"] == "model.layers.0.self_attn.q_proj.x_q")
        .expect("the fused norm is reported under the quantized activation's name");
    assert_eq!(norm_quant["kind"], "rms_norm_quant");
    assert_eq!(norm_quant["role"], "norm");
    assert_eq!(norm_quant["compute"], "f32");
    assert_eq!(norm_quant["outputs"], serde_json::json!(["f8e4m3", "f32"]));
    let norm = ops
        .iter()
        .find(|o| o["name"] == "model.norm")
        .expect("the final norm is reported");
    assert_eq!(norm["compute"], "f32");
    let s = &report["summary"];
    let share = s["fp8_gemm_flop_share"].as_f64().unwrap();
    assert!(share > 0.3 && share < 1.0, "FP8 share {share}");
    let deployed = s["weight_bytes_deployed"].as_u64().unwrap();
    let bf16 = s["weight_bytes_bf16"].as_u64().unwrap();
    assert!(
        deployed < bf16,
        "FP8 weights must be smaller: {deployed} vs {bf16}"
    );
    assert_eq!(
        deployed,
        s["weight_bytes_fp8"].as_u64().unwrap()
            + s["weight_bytes_scales"].as_u64().unwrap()
            + s["weight_bytes_high"].as_u64().unwrap()
    );
    let text = read(&out_dir.join("report.txt"));
    assert!(text.contains("time per pass:"));
    assert!(
        text.contains(
            "model.layers.0.self_attn.q_proj fp8_gemm attn_proj f8e4m3 f32: f8e4m3,f32,f8e4m3,f32 -> bf16"
        ),
        "{text}"
    );
}

#[test]
fn a_failed_compile_leaves_the_previous_artifact_intact() {
    let tmp = TempDir::new("cli-atomic");
    let dir = tmp.join("out");
    let d = dir.to_string_lossy().into_owned();
    assert!(
        dsc(&["compile", "examples/mlp.toml", "-o", &d])
            .status
            .success()
    );
    let before = read(&dir.join("graph.dsc"));
    let bad = tmp.join("bad.toml");
    std::fs::write(&bad, "[model]\nname = \"x\"\narchitecture = \"llama\"\n").unwrap();
    let out = dsc(&["compile", &bad.to_string_lossy(), "-o", &d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(read(&dir.join("graph.dsc")), before);
    // A successful compile replaces it whole.
    assert!(
        dsc(&["compile", "examples/llama-small.toml", "-o", &d])
            .status
            .success()
    );
    assert_ne!(read(&dir.join("graph.dsc")), before);
    let leftovers: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
}

#[test]
fn usage_errors_exit_2_and_bad_pipelines_exit_1() {
    assert_eq!(dsc(&[]).status.code(), Some(2));
    assert_eq!(dsc(&["compile"]).status.code(), Some(2));
    assert_eq!(
        dsc(&["compile", "examples/mlp.toml", "--no-such-flag"])
            .status
            .code(),
        Some(2)
    );

    let tmp = TempDir::new("cli-pipeline");
    let o = tmp.join("o").to_string_lossy().into_owned();
    let out = dsc(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &o,
        "--passes",
        "verify,frobnicate",
    ]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("error: unknown pass `frobnicate`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("assign-precision"),
        "known passes are listed: {stderr}"
    );

    let out = dsc(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &o,
        "--print-after",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = dsc(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &o,
        "--passes",
        "verify",
        "--print-after",
        "dce",
    ]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("not in the pipeline"), "{stderr}");
}

#[test]
fn print_after_and_timings() {
    let tmp = TempDir::new("cli-print");
    let o = tmp.join("o").to_string_lossy().into_owned();
    let out = dsc(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &o,
        "--print-after",
        "all",
        "--timings",
    ]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    let order: Vec<_> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("# ----- IR after "))
        .collect();
    assert_eq!(
        order,
        [
            "verify -----",
            "infer-shapes -----",
            "assign-precision -----",
            "quantize-linears -----",
            "fold-weights -----",
            "fuse -----",
            "fuse-attention -----",
            "cse -----",
            "dce -----",
            "fuse-residual-norm -----",
            "fuse-attention-quant -----",
            "fold-slices -----",
            "fold-widening-casts -----"
        ]
    );
    assert!(stdout.contains("time per pass:"), "{stdout}");
    assert!(stdout.contains("assign-precision"), "{stdout}");

    let out = dsc(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &o,
        "--print-after",
        "assign-precision",
    ]);
    let (_, stderr) = streams(&out);
    assert_eq!(stderr.matches("# ----- IR after").count(), 1);
    assert!(stderr.contains("compute=f8e4m3"), "{stderr}");
}

#[test]
fn opt_round_trips_and_runs_passes() {
    let tmp = TempDir::new("cli-opt");
    let dir = tmp.join("o");
    assert!(
        dsc(&[
            "compile",
            "examples/tiny-moe.toml",
            "-o",
            &dir.to_string_lossy()
        ])
        .status
        .success()
    );
    let graph_file = dir.join("graph.dsc").to_string_lossy().into_owned();
    let out = dsc(&["opt", &graph_file]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        read(&dir.join("graph.dsc")),
        "opt without passes reprints the input"
    );
    // The compiled graph is a fixed point of the default pipeline.
    let out = dsc(&["opt", &graph_file, "--passes", dsc_passes::DEFAULT_PIPELINE]);
    assert_eq!(streams(&out).0, stdout);
}

#[test]
fn compile_of_a_model_with_train_prints_the_training_memory() {
    let tmp = TempDir::new("cli-train-memory");
    let out = dsc(&[
        "compile",
        "tests/train/tiny-llama.toml",
        "-o",
        &tmp.join("art").to_string_lossy(),
    ]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("training memory (361088 parameters, 64 tokens per step):"),
        "{stdout}"
    );
    let row = |label: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap();
        line[line.find(label).unwrap() + label.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    // FP32 master and gradient, BF16 m and v: 12 bytes a parameter in both recipes.
    assert_eq!(row("FP32 master + grad, moments"), [12.0, 12.0]);
    // The FP8 recipe keeps FP8 copies of the FP8 GEMMs' inputs for the backward.
    let saved = row("saved activation bytes / token");
    assert!(saved[0] < saved[1], "{stdout}");
}

#[test]
fn compile_of_textual_ir_points_at_dsc_opt() {
    let out = dsc(&["compile", "tests/opt/cse.dsc"]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: tests/opt/cse.dsc is textual IR, not a model: `dsc compile` takes a \
             model.toml, a config.json or a checkpoint directory; run passes over IR with \
             `dsc opt tests/opt/cse.dsc`"
        ),
        "{stderr}"
    );
}
