//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the workspace root.
pub fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

/// Runs the `dsc` binary from the workspace root.
pub fn dsc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the dsc binary runs")
}

/// stdout and stderr of a run, as text.
pub fn streams(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh, empty temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `target/test-tmp/<name>-<pid>` (inside the build dir, so CI cleans it).
    pub fn new(name: &str) -> TempDir {
        let dir = root()
            .join("target")
            .join("test-tmp")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The examples every snapshot and policy test covers: (file stem, path).
pub fn small_examples() -> Vec<(&'static str, PathBuf)> {
    ["tiny-moe", "llama-small", "mlp"]
        .into_iter()
        .map(|n| (n, path(&format!("examples/{n}.toml"))))
        .collect()
}

/// Reads a file as text.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Until `dsc compile` writes `manifest.json` and `kernels.ptx` (codegen, landing on main),
/// gives a compiled directory a tensors-only manifest (no kernels, no steps) and an empty PTX
/// module, so the CPU session can load it. Delete when the real writer lands.
pub fn add_interim_manifest(dir: &Path) {
    use dsc_kernels::manifest::{ArenaInfo, Manifest, SCHEMA_VERSION, Storage, TensorInfo};
    if dir.join("manifest.json").exists() {
        return;
    }
    let graph = dsc_ir::text::parse(&read(&dir.join("graph.dsc"))).expect("graph.dsc parses");
    let mut offset = 0u64;
    let mut tensors = Vec::new();
    let mut add = |id: dsc_ir::ValueId, storage: Option<Storage>| {
        let ty = graph.ty(id);
        let bytes = ty.size_bytes();
        let storage = storage.unwrap_or_else(|| {
            let at = offset;
            offset += bytes.div_ceil(256) * 256;
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
    graph
        .inputs
        .iter()
        .for_each(|&v| add(v, Some(Storage::Input)));
    for &p in &graph.params {
        add(p, Some(Storage::Weight { experts: None }));
    }
    for op in &graph.ops {
        op.results.iter().for_each(|&r| add(r, None));
    }
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        model: graph.name.clone(),
        target: "sm_90a".to_string(),
        tensors,
        arena: ArenaInfo {
            bytes: offset,
            no_reuse_bytes: offset,
            alignment: 256,
        },
        kernels: Vec::new(),
        steps: Vec::new(),
    };
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(
        dir.join("kernels.ptx"),
        "//\n.version 8.0\n.target sm_90a\n",
    )
    .unwrap();
}
