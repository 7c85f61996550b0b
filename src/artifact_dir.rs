//! Writes an output directory atomically: files go into a temporary sibling directory that
//! is renamed into place, so a failed compile leaves any previous artifact intact.

use crate::diagnostic::Diagnostic;
use std::fs;
use std::path::{Path, PathBuf};

/// Writes `files` (name, contents) as the directory `dir`, replacing it whole.
pub fn write_atomically(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), Diagnostic> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Diagnostic::new(format!("cannot {what} {}: {e}", path.display()))
    };
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
        if !dir.is_dir() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Diagnostic::new(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        fs::rename(dir, &old).map_err(|e| fail("replace", dir, e))?;
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
