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
