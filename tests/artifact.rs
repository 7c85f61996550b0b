//! The artifact of `dsc compile` (DESIGN.md §5): every file present, the manifest of this schema
//! consistent with graph.dsc, one PTX module per target, `--emit mlir`, and the
//! DeepSeek-V3-shaped example compiled end to end.

use crate::support::{TempDir, dsc, dsc_with_cache, path, streams};
use dsc_kernels::manifest::{Manifest, Storage};

fn compile(model: &str, dir: &TempDir, extra: &[&str]) -> String {
    let out_dir = dir.join("out");
    let mut args = vec!["compile", model, "-o", out_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = dsc(&args);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{model}: {stderr}");
    stdout
}

fn manifest(dir: &TempDir) -> Manifest {
    let file = dir.join("out/manifest.json");
    let text = std::fs::read_to_string(&file).expect("manifest.json written");
    Manifest::from_json(&text, &file.display().to_string()).expect("manifest parses")
}

#[test]
fn compile_writes_the_whole_artifact_with_a_consistent_manifest() {
    let dir = TempDir::new("artifact-tiny");
    let stdout = compile("examples/tiny-moe.toml", &dir, &[]);
    assert!(stdout.contains("GPU plan (sm_90a):"), "{stdout}");
    for file in [
        "manifest.json",
        "kernels.ptx",
        "graph.dsc",
        "report.txt",
        "report.json",
    ] {
        assert!(dir.join("out").join(file).is_file(), "{file} missing");
    }
    assert!(!dir.join("out/kernels.mlir").exists());
    let m = manifest(&dir);
    assert_eq!(m.model, "tiny-moe");
    assert_eq!(m.target, "sm_90a");

    // Every entry of the manifest is in the PTX, once.
    let ptx = std::fs::read_to_string(dir.join("out/kernels.ptx")).unwrap();
    assert!(ptx.contains(".target sm_90a"));
    for kernel in &m.kernels {
        let entry = format!(".entry {}(", kernel.entry);
        assert_eq!(ptx.matches(&entry).count(), 1, "{}", kernel.entry);
    }

    // The manifest's tensors are graph.dsc's values, with the same dtypes and shapes, plus the
    // expert dispatch layouts the plan adds (in the arena).
    let graph_text = std::fs::read_to_string(dir.join("out/graph.dsc")).unwrap();
    let graph = dsc_ir::text::parse(&graph_text).expect("graph.dsc parses");
    for t in &m.tensors {
        let Some(v) = graph.values.iter().find(|v| v.name == t.name) else {
            assert!(
                t.name.ends_with(".dispatch_rows")
                    || t.name.ends_with(".dispatch_tiles")
                    || t.name.ends_with(".dispatch_counts"),
                "{} is not a graph value",
                t.name
            );
            assert!(matches!(t.storage, Storage::Arena { .. }), "{}", t.name);
            continue;
        };
        assert_eq!(t.dtype, v.ty.dtype.name(), "{}", t.name);
        let dims: Vec<usize> = v.ty.shape.dims().iter().map(|&d| d as usize).collect();
        assert_eq!(t.shape, dims, "{}", t.name);
    }
    // Inputs, every weight, and the logits in the arena.
    assert_eq!(m.tensor("input_ids").unwrap().storage, Storage::Input);
    assert_eq!(
        m.tensors
            .iter()
            .filter(|t| matches!(t.storage, Storage::Weight { .. }))
            .count(),
        graph.params.len()
    );
    assert!(matches!(
        m.tensor("logits").unwrap().storage,
        Storage::Arena { .. }
    ));
    let grouped = m
        .tensor("model.layers.1.mlp.experts.{e}.up_proj.weight")
        .expect("grouped expert weight");
    assert_eq!(grouped.storage, Storage::Weight { experts: Some(8) });
    // One launch per op that is not a reshape, in program order, plus one expert dispatch per
    // MoE layer (before its first grouped GEMM, as part of that op).
    let count = |kind| graph.ops.iter().filter(|op| op.kind == kind).count();
    let reshapes = count(dsc_ir::OpKind::Reshape);
    let moe_layers = count(dsc_ir::OpKind::MoeTopk);
    let dispatches: Vec<_> = m
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| m.kernel(&s.kernel).unwrap().spec == "moe_dispatch")
        .collect();
    assert_eq!(dispatches.len(), moe_layers);
    for (i, step) in &dispatches {
        assert_eq!(m.steps[i + 1].op, step.op, "the dispatch precedes its GEMM");
        assert!(step.op.ends_with("experts.gate_proj"), "{}", step.op);
    }
    // A dispatch over several blocks takes the blocks' counts first, as part of the same op.
    let counts: Vec<_> = m
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| m.kernel(&s.kernel).unwrap().spec == "moe_dispatch_counts")
        .collect();
    for (i, step) in &counts {
        assert_eq!(
            m.steps[i + 1].op,
            step.op,
            "the counts precede their dispatch"
        );
        assert_eq!(
            m.kernel(&m.steps[i + 1].kernel).unwrap().spec,
            "moe_dispatch"
        );
    }
    assert_eq!(
        m.steps.len(),
        graph.ops.len() - reshapes + moe_layers + counts.len()
    );
    assert_eq!(m.steps.last().unwrap().op, "logits");
    assert!(m.arena.bytes < m.arena.no_reuse_bytes);
}

#[test]
fn targets_and_emitted_mlir() {
    let dir = TempDir::new("artifact-sm89");
    compile(
        "examples/llama-small.toml",
        &dir,
        &["--target", "sm_89", "--emit", "mlir"],
    );
    assert_eq!(manifest(&dir).target, "sm_89");
    let ptx = std::fs::read_to_string(dir.join("out/kernels.ptx")).unwrap();
    assert!(ptx.contains(".target sm_89"), "PTX is not for sm_89");
    let mlir = std::fs::read_to_string(dir.join("out/kernels.mlir")).expect("kernels.mlir");
    assert!(mlir.contains("gpu.module @dsc_kernels"), "{mlir}");
    assert!(
        mlir.contains("gpu.func @fp8_gemm_"),
        "no fp8_gemm kernel in the MLIR"
    );

    let out = dsc(&["compile", "examples/llama-small.toml", "--target", "sm_80"]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sm_80"), "{stderr}");
}

#[test]
fn the_ptx_cache_is_reused_across_compiles_and_changes_no_byte() {
    let dir = TempDir::new("artifact-cache");
    let cache = dir.join("cache");
    let out = dir.join("out");
    let mut ptx = Vec::new();
    for (extra, from_cache) in [
        (None, "0 from the PTX cache"),
        (None, "from the PTX cache, 0 lowered"),
        (Some("--no-cache"), "0 from the PTX cache"),
    ] {
        let mut args = vec![
            "compile",
            "examples/mlp.toml",
            "-o",
            out.to_str().unwrap(),
            "--target",
            "sm_89",
            "--timings",
        ];
        args.extend(extra);
        let run = dsc_with_cache(&args, &cache);
        let (stdout, stderr) = streams(&run);
        assert!(run.status.success(), "{stderr}");
        assert!(stdout.contains(from_cache), "{stdout}");
        ptx.push(std::fs::read(out.join("kernels.ptx")).unwrap());
    }
    assert!(ptx[0] == ptx[1] && ptx[1] == ptx[2], "the PTX differs");

    // A cache directory that cannot be created costs time, not the compile.
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let args = [
        "compile",
        "examples/mlp.toml",
        "-o",
        out.to_str().unwrap(),
        "--target",
        "sm_89",
    ];
    let run = dsc_with_cache(&args, &file.join("cache"));
    assert!(run.status.success(), "{}", streams(&run).1);
    assert_eq!(std::fs::read(out.join("kernels.ptx")).unwrap(), ptx[0]);
}

#[test]
fn the_deepseek_v3_shaped_example_compiles_end_to_end() {
    let dir = TempDir::new("artifact-v3");
    let stdout = compile(
        &path("examples/deepseek-v3.toml").display().to_string(),
        &dir,
        &[],
    );
    assert!(stdout.contains("GPU plan (sm_90a):"), "{stdout}");
    let m = manifest(&dir);
    // 61 layers, far fewer distinct kernels: identical layers share them.
    assert!(m.steps.len() > 61 * 20, "{} steps", m.steps.len());
    assert!(m.kernels.len() < 60, "{} kernels", m.kernels.len());
    assert!(
        m.kernels
            .iter()
            .any(|k| k.spec == "fp8_gemm" && k.attrs.get("grouped").is_some_and(|g| !g.is_null()))
    );
}
