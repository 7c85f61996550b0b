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

/// Runs the `dsc` binary from the workspace root, with its PTX cache in `target/test-tmp`
/// rather than the user's cache directory.
pub fn dsc(args: &[&str]) -> Output {
    dsc_with_cache(args, &root().join("target/test-tmp/dsc-cache"))
}

/// Runs the `dsc` binary from the workspace root with its PTX cache in `cache`.
pub fn dsc_with_cache(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsc"))
        .args(args)
        .current_dir(root())
        .env("DSC_CACHE_DIR", cache)
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
    ["tiny-moe", "llama-small", "qwen2-small", "mlp"]
        .into_iter()
        .map(|n| (n, path(&format!("examples/{n}.toml"))))
        .collect()
}

/// Reads a file as text.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A deterministic text of a dozen words (3000 of them, written as `corpus.txt` in `tmp`) for
/// `dsc train --data`: learnable, the loss can fall far below ln 256; returns its path.
pub fn word_corpus(tmp: &TempDir) -> String {
    let words = [
        "the", "cat", "sat", "on", "mat", "dog", "ran", "far", "a", "big", "red", "fox",
    ];
    let mut rng = dsc_kernels::rng::SplitMix64(5);
    let text: Vec<&str> = (0..3000)
        .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
        .collect();
    let path = tmp.join("corpus.txt");
    std::fs::write(&path, text.join(" ")).unwrap();
    path.to_string_lossy().into_owned()
}
