//! Writes an output directory atomically ([`write_dir_atomically`]): files go into a temporary
//! sibling directory that is renamed into place, so a failed compile leaves any previous
//! artifact intact.
//!
//! Only a directory that holds a dsc artifact (its `manifest.json`) or nothing at all is
//! replaced, never one that holds an input of the command (DESIGN.md §6): `-o .`, `-o ~/data`
//! or `dsc compile CKPT -o CKPT` are refused before anything is written.

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
    let empty = fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", dir.display())))?
        .next()
        .is_none();
    if !empty && !dir.join(files::MANIFEST).is_file() {
        return Err(Diagnostic::new(format!(
            "{} exists and is not a dsc artifact (it has no {}): dsc replaces only a \
             directory it wrote; choose another output directory or remove this one",
            dir.display(),
            files::MANIFEST
        )));
    }
    Ok(())
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
