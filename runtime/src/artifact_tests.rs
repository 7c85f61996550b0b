use super::*;
use crate::testutil::{compiled_graph, tensors_only_manifest, write_artifact};
use dsc_ir::Graph;
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
        tensor_maps: Vec::new(),
    };
    let mut too_wide = step("k0", &op, &["x", "x"]);
    too_wide.block = [4096, 1, 1];
    too_wide.grid = [1 << 31, 65536, 1];
    manifest.steps = vec![
        step("k0", &op, &["x", "nowhere"]),
        step("k1", &op, &[]),
        step("k0", "no_such_op", &["x"]),
        too_wide,
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
    // A launch no GPU allows is refused whatever the device.
    assert!(
        all.contains("block [4096, 1, 1] has 4096 threads, more than the 1024 a block may have"),
        "{all}"
    );
    assert!(
        all.contains("has 4096 threads along x, more than 1024"),
        "{all}"
    );
    assert!(
        all.contains(
            "grid [2147483648, 65536, 1] has 2147483648 blocks along x, more than 2147483647"
        ),
        "{all}"
    );
    assert!(
        all.contains("has 65536 blocks along y, more than 65535"),
        "{all}"
    );
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

/// A manifest with one kernel `k` of two parameters and steps over `args`, for the graph's
/// first ops, with the PTX declaring `k`.
fn with_steps(
    graph: &Graph,
    mut manifest: Manifest,
    args: &[[&str; 2]],
) -> Result<Artifact, RuntimeError> {
    manifest.kernels = vec![KernelInfo {
        entry: "k".into(),
        spec: "test".into(),
        attrs: Default::default(),
        params: vec!["a".into(), "b".into()],
        block: [128, 1, 1],
        shared_bytes: 0,
    }];
    manifest.steps = args
        .iter()
        .enumerate()
        .map(|(i, pair)| LaunchStep {
            op: graph.op_name(&graph.ops[i]).into(),
            kernel: "k".into(),
            grid: [1, 1, 1],
            block: [128, 1, 1],
            shared_bytes: 0,
            args: pair.iter().map(|s| s.to_string()).collect(),
            flops: 0,
            bytes: 0,
            tensor_maps: Vec::new(),
        })
        .collect();
    Artifact::from_parts(
        "d".into(),
        manifest,
        graph.clone(),
        ".visible .entry k(".into(),
    )
}

/// The first two arena tensors of a manifest.
fn two_arena_tensors(manifest: &Manifest) -> (String, String) {
    let mut arena = manifest
        .tensors
        .iter()
        .filter(|t| matches!(t.storage, Storage::Arena { .. }))
        .map(|t| t.name.clone());
    (arena.next().unwrap(), arena.next().unwrap())
}

#[test]
fn refuses_a_target_alignment_offset_or_arena_size_dsc_never_writes() {
    let graph = compiled_graph("mlp");
    let good = tensors_only_manifest(&graph);
    let (first, _) = two_arena_tensors(&good);

    let mut manifest = good.clone();
    manifest.target = "sm_70".into();
    let all = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph.clone(),
        String::new(),
    ))
    .join("\n");
    assert!(
        all.contains("`target` is \"sm_70\": dsc writes PTX for sm_90a or sm_89 only"),
        "{all}"
    );

    let mut manifest = good.clone();
    manifest.arena.alignment = 0;
    let all = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph.clone(),
        String::new(),
    ))
    .join("\n");
    assert!(
        all.contains("`arena.alignment` is 0: it must be a power of two"),
        "{all}"
    );

    let mut manifest = good.clone();
    let t = manifest
        .tensors
        .iter_mut()
        .find(|t| t.name == first)
        .unwrap();
    t.storage = Storage::Arena { offset: 100 };
    let all = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph.clone(),
        String::new(),
    ))
    .join("\n");
    assert!(
        all.contains(&format!(
            "tensor `{first}`: arena `offset` 100 is not a multiple of `arena.alignment` 256"
        )),
        "{all}"
    );

    let mut manifest = good;
    manifest.arena.bytes = 1 << 62;
    let all = mismatch(Artifact::from_parts(
        "d".into(),
        manifest,
        graph,
        String::new(),
    ))
    .join("\n");
    assert!(
        all.contains("`arena.bytes` is 4611686018427387904, but its tensors end at byte"),
        "{all}"
    );
}

#[test]
fn refuses_live_tensors_that_share_bytes() {
    let graph = compiled_graph("mlp");
    let good = tensors_only_manifest(&graph);
    let (a, b) = two_arena_tensors(&good);
    let x = graph.name(graph.inputs[0]);
    // `a` is written by step 0 and read by step 1, which writes `b`: both live at step 1.
    let steps = [[x, a.as_str()], [a.as_str(), b.as_str()]];
    assert!(with_steps(&graph, good.clone(), &steps).is_ok());
    let mut manifest = good.clone();
    let offset_of_a = match manifest.tensor(&a).unwrap().storage {
        Storage::Arena { offset } => offset,
        _ => unreachable!(),
    };
    manifest
        .tensors
        .iter_mut()
        .find(|t| t.name == b)
        .unwrap()
        .storage = Storage::Arena {
        offset: offset_of_a,
    };
    let all = mismatch(with_steps(&graph, manifest.clone(), &steps)).join("\n");
    assert!(
        all.contains(&format!("tensors `{a}` (arena bytes"))
            && all.contains(&format!("and `{b}`"))
            && all.contains("overlap while both are live (at step 1)"),
        "{all}"
    );
    // Dead by the time `b` is written, `a`'s bytes may be reused.
    let reuse = [[x, a.as_str()], [x, b.as_str()]];
    let graph_outputs_a = graph.outputs.iter().any(|&v| graph.name(v) == a);
    assert!(!graph_outputs_a);
    assert!(with_steps(&graph, manifest, &reuse).is_ok());
}

#[test]
fn kernels_without_steps_are_refused_and_run_needs_a_launch_plan() {
    let graph = compiled_graph("mlp");
    let all = mismatch(with_steps(&graph, tensors_only_manifest(&graph), &[])).join("\n");
    assert!(
        all.contains("`steps` is empty, but the manifest lists 1 kernels for the graph's"),
        "{all}"
    );
    let dir = write_artifact("artifact-no-plan", &graph);
    let error = Artifact::load(&dir)
        .unwrap()
        .require_launch_plan()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("manifest.json: `steps` is empty: the manifest has no launch plan"),
        "{error}"
    );
}

#[test]
fn a_missing_directory_is_not_said_to_lack_a_file() {
    let error = Artifact::load("no/such/dir").unwrap_err().to_string();
    assert_eq!(
        error,
        "no/such/dir: does not exist: give the directory dsc compile wrote"
    );
    let dir = write_artifact("artifact-a-file", &compiled_graph("mlp"));
    let file = dir.join(files::GRAPH);
    let error = Artifact::load(&file).unwrap_err().to_string();
    assert!(
        error.ends_with("graph.dsc: is not a directory: give the directory dsc compile wrote"),
        "{error}"
    );
}
