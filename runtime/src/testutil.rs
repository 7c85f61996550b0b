//! Helpers shared by the runtime's unit tests: example graphs and scratch directories.

use std::path::PathBuf;

use dsc_ir::Graph;
use dsc_passes::{PassOptions, Pipeline};

/// An example model's graph as `load_model` builds it: every parameter in high precision.
pub fn example_graph(name: &str) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.toml"));
    let source = std::fs::read_to_string(&path).expect("example model exists");
    dsc_ir::model::load_model(&source).expect("example model loads")
}

/// An example model after the default pipeline: FP8 weights with `weight_scale_inv` params.
pub fn compiled_graph(name: &str) -> Graph {
    let mut graph = example_graph(name);
    Pipeline::default_pipeline()
        .run(&mut graph, &PassOptions::default(), |_, _| {})
        .expect("default pipeline runs");
    graph
}

/// A fresh, empty scratch directory under the target directory, unique to this test.
pub fn scratch_dir(test: &str) -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let dir = target
        .join("tmp")
        .join("dsc-runtime-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A manifest for `graph` with tensors only (no kernels, no steps): inputs, weights, and every
/// op result in its own arena region. For the checks of [`crate::artifact`] and the CPU
/// session, which need no launch plan.
pub fn tensors_only_manifest(graph: &Graph) -> dsc_kernels::manifest::Manifest {
    use dsc_kernels::manifest::{ArenaInfo, Manifest, SCHEMA_VERSION, Storage, TensorInfo};
    const ALIGN: u64 = 256;
    let mut offset = 0u64;
    let mut tensors = Vec::new();
    let mut add = |id: dsc_ir::ValueId, storage: Option<Storage>| {
        let ty = graph.ty(id);
        let bytes = ty.size_bytes();
        let storage = storage.unwrap_or_else(|| {
            let at = offset;
            offset += bytes.div_ceil(ALIGN) * ALIGN;
            Storage::Arena { offset: at }
        });
        tensors.push(TensorInfo {
            name: graph.name(id).to_string(),
            dtype: ty.dtype.to_string(),
            shape: ty.shape.dims().iter().map(|&d| d as usize).collect(),
            bytes,
            storage,
        });
    };
    for &v in &graph.inputs {
        add(v, Some(Storage::Input));
    }
    for &p in &graph.params {
        add(p, Some(Storage::Weight { experts: None }));
    }
    for op in &graph.ops {
        for &r in &op.results {
            add(r, None);
        }
    }
    Manifest {
        schema_version: SCHEMA_VERSION,
        model: graph.name.clone(),
        target: "sm_90a".to_string(),
        tensors,
        arena: ArenaInfo {
            bytes: offset,
            no_reuse_bytes: offset,
            alignment: ALIGN,
        },
        kernels: Vec::new(),
        steps: Vec::new(),
    }
}

/// Writes an artifact directory for `graph` (its text, [`tensors_only_manifest`], an empty
/// PTX module) under a scratch directory named after `test`.
pub fn write_artifact(test: &str, graph: &Graph) -> PathBuf {
    let dir = scratch_dir(test);
    std::fs::write(dir.join("graph.dsc"), graph.to_string()).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        tensors_only_manifest(graph).to_json(),
    )
    .unwrap();
    std::fs::write(
        dir.join("kernels.ptx"),
        "//\n.version 8.0\n.target sm_90a\n",
    )
    .unwrap();
    dir
}
