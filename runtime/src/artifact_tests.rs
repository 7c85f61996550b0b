use super::*;
use crate::testutil::{compiled_graph, tensors_only_manifest, write_artifact};
use dsc_kernels::manifest::{KernelInfo, LaunchStep};

fn mismatch(artifact: Result<Artifact, RuntimeError>) -> Vec<String> {
    match artifact {
        Err(RuntimeError::ManifestMismatch { problems, .. }) => problems,
        other => panic!("expected a manifest mismatch, got {other:?}"),
    }
}

#[test]
fn loads_an_artifact_whose_parts_agree() {
    let graph = compiled_graph("mlp");
    let dir = write_artifact("artifact-ok", &graph);
    let artifact = Artifact::load(&dir).unwrap();
    assert_eq!(artifact.graph.to_string(), graph.to_string());
    assert_eq!(artifact.manifest.model, "mlp");
    assert!(!artifact.has_launch_plan());
}

#[test]
fn names_each_missing_file() {
    let graph = compiled_graph("mlp");
    for file in [files::GRAPH, files::MANIFEST, files::KERNELS] {
        let dir = write_artifact(&format!("artifact-missing-{file}"), &graph);
        std::fs::remove_file(dir.join(file)).unwrap();
        let error = Artifact::load(&dir).unwrap_err().to_string();
        assert!(
            error.contains(&format!("it has no {file}")) && error.contains("dsc compile"),
            "{error}"
        );
    }
}

#[test]
fn refuses_another_schema_version_and_malformed_files() {
    let graph = compiled_graph("mlp");
    let dir = write_artifact("artifact-schema", &graph);
    let path = dir.join(files::MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"schema_version\": 1", "\"schema_version\": 7"),
    )
    .unwrap();
    let error = Artifact::load(&dir).unwrap_err().to_string();
    assert!(
        error.contains("manifest schema version 7") && error.contains("manifest.json"),
        "{error}"
    );
    std::fs::write(dir.join(files::GRAPH), "graph @broken {\n").unwrap();
    std::fs::write(&path, text).unwrap();
    let error = Artifact::load(&dir).unwrap_err().to_string();
    assert!(error.contains("graph.dsc: 1:"), "{error}");
}

#[test]
fn finds_tensors_that_contradict_the_graph() {
    let graph = compiled_graph("mlp");
    let mut manifest = tensors_only_manifest(&graph);
    let input = manifest.tensors.iter_mut().find(|t| t.name == "x").unwrap();
    input.shape = vec![32, 512];
    input.bytes = 32 * 512 * 2;
    let weight = manifest
        .tensors
        .iter()
        .position(|t| matches!(t.storage, Storage::Weight { .. }))
        .unwrap();
    let removed = manifest.tensors.remove(weight).name;
    manifest.tensors[0].bytes += 1;
    let last = manifest.tensors.last_mut().unwrap();
    last.storage = Storage::Arena {
        offset: manifest.arena.bytes,
    };
    let last_name = last.name.clone();
    let problems = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph,
        String::new(),
    ));
    let all = problems.join("\n");
    assert!(
        all.contains("tensor `x` is bf16[32, 512] in the manifest but bf16[64, 512]"),
        "{all}"
    );
    assert!(
        all.contains(&format!("weight `{removed}` is not in the manifest")),
        "{all}"
    );
    assert!(all.contains("is said to be"), "{all}");
    assert!(
        all.contains(&format!("tensor `{last_name}` ends at byte")),
        "{all}"
    );
}

#[test]
fn finds_steps_that_name_unknown_things() {
    let graph = compiled_graph("mlp");
    let mut manifest = tensors_only_manifest(&graph);
    let op = graph.op_name(&graph.ops[0]).to_string();
    manifest.kernels.push(KernelInfo {
        entry: "k0".into(),
        spec: "test".into(),
        attrs: Default::default(),
        params: vec!["a".into(), "b".into()],
        block: [128, 1, 1],
        shared_bytes: 0,
    });
    let step = |kernel: &str, op: &str, args: &[&str]| LaunchStep {
        op: op.into(),
        kernel: kernel.into(),
        grid: [1, 1, 1],
        block: [128, 1, 1],
        shared_bytes: 0,
        args: args.iter().map(|s| s.to_string()).collect(),
        flops: 0,
        bytes: 0,
    };
    manifest.steps = vec![
        step("k0", &op, &["x", "nowhere"]),
        step("k1", &op, &[]),
        step("k0", "no_such_op", &["x"]),
    ];
    let ptx = ".visible .entry k0(\n.param .u64 a\n)".to_string();
    let problems = mismatch(Artifact::from_parts(
        "d".into(),
        manifest.clone(),
        graph.clone(),
        ptx,
    ));
    let all = problems.join("\n");
    assert!(
        all.contains("argument `nowhere` is not a listed tensor"),
        "{all}"
    );
    assert!(all.contains("kernel `k1` is not listed"), "{all}");
    assert!(all.contains("no op of that name"), "{all}");
    assert!(all.contains("1 arguments for kernel `k0` of 2"), "{all}");
    assert!(!all.contains("not an entry"), "{all}");
    let problems = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph,
        ".visible .entry k00(".into(),
    ));
    assert!(
        problems
            .iter()
            .any(|p| p == "kernel `k0` is not an entry of kernels.ptx"),
        "{problems:?}"
    );
}
