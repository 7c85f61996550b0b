//! Writes an output directory atomically ([`write_dir_atomically`]): files go into a temporary
//! sibling directory that is renamed into place, so a failed compile leaves any previous
//! artifact intact.
//!
//! Only a directory that holds a dsc artifact (a `manifest.json` dsc wrote, and nothing but the
//! artifact's files) or nothing at all is replaced, never one that holds an input of the
//! command (DESIGN.md §6): `-o .`, `-o ~/data`, `dsc compile CKPT -o CKPT` or an artifact
//! with the user's notes beside it are refused before anything is written.

use crate::diagnostic::Diagnostic;
use dsc_ir::atomic_write::{WriteFailure, write_dir_atomically};
use dsc_kernels::manifest::files;
use std::fs;
use std::path::Path;

/// Ok when writing the artifact to `dir` loses nothing: `dir` does not exist, is empty, or
/// holds a dsc artifact, and it holds none of `inputs` (the files or directories the command
/// reads).
pub fn check_replaceable(dir: &Path, inputs: &[&Path]) -> Result<(), Diagnostic> {
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(Diagnostic::new(format!(
            "{} exists and is not a directory: choose another output directory",
            dir.display()
        )));
    }
    let canonical = dir
        .canonicalize()
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?;
    for input in inputs {
        if input
            .canonicalize()
            .is_ok_and(|input| input.starts_with(&canonical))
        {
            return Err(Diagnostic::new(format!(
                "the output directory {} holds the input {}: writing the artifact would \
                 replace it; choose another output directory",
                dir.display(),
                input.display()
            )));
        }
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?
    {
        let entry =
            entry.map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Ok(());
    }
    let not_an_artifact = |why: String| {
        Diagnostic::new(format!(
            "{} exists and is not a dsc artifact ({why}): dsc replaces only a directory it \
             wrote; choose another output directory or remove this one",
            dir.display()
        ))
    };
    let manifest = dir.join(files::MANIFEST);
    if manifest.exists() && !manifest.is_file() {
        return Err(not_an_artifact(format!(
            "its {} is not a file",
            files::MANIFEST
        )));
    }
    if !manifest.is_file() {
        return Err(not_an_artifact(format!("it has no {}", files::MANIFEST)));
    }
    if !is_dsc_manifest(&manifest) {
        return Err(not_an_artifact(format!(
            "its {} is not one dsc wrote",
            files::MANIFEST
        )));
    }
    // Anything else beside the artifact's own files would be lost with it.
    for entry in entries {
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| ARTIFACT_FILES.contains(&n));
        if !ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            return Err(Diagnostic::new(format!(
                "{} holds `{}`, which dsc did not write: replacing the artifact would delete \
                 it; move it out or choose another output directory",
                dir.display(),
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// The files an artifact directory holds (`dsc compile`, `dsc train --write-step`).
const ARTIFACT_FILES: [&str; 6] = [
    files::MANIFEST,
    files::KERNELS,
    files::GRAPH,
    "report.txt",
    "report.json",
    "kernels.mlir",
];

/// Whether `path` is a manifest dsc wrote, of this schema version or another: a JSON object
/// with the schema's version, model, target, tensors and steps.
fn is_dsc_manifest(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&text) else {
        return false;
    };
    fields.get("schema_version").is_some_and(|v| v.is_u64())
        && ["model", "target"]
            .iter()
            .all(|k| fields.get(*k).is_some_and(|v| v.is_string()))
        && ["tensors", "steps"]
            .iter()
            .all(|k| fields.get(*k).is_some_and(|v| v.is_array()))
}

/// Writes `files` (name, contents) as the directory `dir`, replacing it whole; `dir` must pass
/// [`check_replaceable`] with `inputs`.
pub fn write_atomically(
    dir: &Path,
    files: &[(&str, &[u8])],
    inputs: &[&Path],
) -> Result<(), Diagnostic> {
    check_replaceable(dir, inputs)?;
    write_dir_atomically(dir, |tmp| {
        files.iter().try_for_each(|(name, bytes)| {
            let path = tmp.join(name);
            fs::write(&path, bytes)
                .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))
        })
    })
}

/// A failed step of the atomic write, as the CLI reports it (`cannot create DIR: …`).
impl From<WriteFailure> for Diagnostic {
    fn from(failure: WriteFailure) -> Self {
        Diagnostic::new(failure.to_string())
    }
}
