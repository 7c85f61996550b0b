//! Writes an output directory atomically: files go into a temporary sibling directory that
//! is renamed into place, so a failed compile leaves any previous artifact intact.
//!
//! Only a directory that holds a dsc artifact (its `manifest.json`) or nothing at all is
//! replaced, never one that holds an input of the command (DESIGN.md §6): `-o .`, `-o ~/data`
//! or `dsc compile CKPT -o CKPT` are refused before anything is written.

use crate::diagnostic::Diagnostic;
use dsc_kernels::manifest::files;
use std::fs;
use std::path::{Path, PathBuf};

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
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Diagnostic::new(format!("cannot {what} {}: {e}", path.display()))
    };
    // `.`, `..` and `a/..` have no file name of their own: name the directory they mean.
    let dir = match dir.file_name() {
        Some(_) => dir.to_path_buf(),
        None => dir.canonicalize().map_err(|e| fail("read", dir, e))?,
    };
    let dir = dir.as_path();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| fail("create", &parent, e))?;
    let base = dir
        .file_name()
        .ok_or_else(|| Diagnostic::new(format!("{} is not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{base}.old-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| fail("create", &tmp, e))?;
    let written = files.iter().try_for_each(|(name, bytes)| {
        let path = tmp.join(name);
        fs::write(&path, bytes).map_err(|e| fail("write", &path, e))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Move the previous directory aside first: rename cannot replace a non-empty directory.
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(|e| {
            let _ = fs::remove_dir_all(&tmp);
            fail("replace", dir, e)
        })?;
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        if had_old {
            let _ = fs::rename(&old, dir);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(fail("create", dir, e));
    }
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}
