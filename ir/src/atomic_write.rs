//! Writing a file or a directory atomically: the new contents go to a temporary sibling that
//! is renamed into place, so a reader (or a failed or interrupted write) sees the old contents
//! or the new ones, never a mix. Every writer of dsc's outputs uses these: the artifact
//! directory, `quantize-weights`' checkpoint, safetensors outputs and the PTX cache.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A step of an atomic write that failed: what was being done, to which path, and why.
#[derive(Debug)]
pub struct WriteFailure {
    /// `create`, `replace`, …: what could not be done.
    pub action: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// Why.
    pub error: io::Error,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.error
        )
    }
}

impl std::error::Error for WriteFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<WriteFailure> for io::Error {
    fn from(failure: WriteFailure) -> Self {
        io::Error::new(failure.error.kind(), failure.to_string())
    }
}

/// A name for a temporary sibling of `path` that no other writer uses: hidden, and unique to
/// this process and call (threads of one process may write siblings at once).
fn temp_sibling(path: &Path, parent: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent.join(format!(
        ".{base}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes the file `path` atomically: `write` creates and fills the temporary path it is
/// given (in the same directory, so the rename cannot cross file systems), which then
/// replaces `path`. On any failure the temporary file is removed and `path` is untouched.
pub fn write_file_atomically<E: From<WriteFailure>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if path.file_name().is_none() {
        return Err(WriteFailure {
            action: "write",
            path: path.to_path_buf(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        }
        .into());
    }
    let tmp = temp_sibling(path, &parent_of(path));
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|error| {
            WriteFailure {
                action: "write",
                path: path.to_path_buf(),
                error,
            }
            .into()
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the directory `dir` atomically: `fill` fills an empty temporary directory it is
/// given (a sibling of `dir`, created with any missing parents), which then replaces `dir`.
/// An existing `dir` is moved aside first (a rename cannot replace a non-empty directory),
/// put back if the new one cannot be moved in, and deleted once it is. On any failure the
/// temporary directory is removed and `dir` is as it was. `.`, `..` and `a/..` name the
/// directory they mean. Callers check that replacing `dir` loses nothing.
pub fn write_dir_atomically<T, E: From<WriteFailure>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let fail = |action, path: &Path, error| WriteFailure {
        action,
        path: path.to_path_buf(),
        error,
    };
    // `.`, `..` and `a/..` have no file name of their own: name the directory they mean.
    let dir = match dir.file_name() {
        Some(_) => dir.to_path_buf(),
        None => dir.canonicalize().map_err(|e| fail("read", dir, e))?,
    };
    let dir = dir.as_path();
    let parent = parent_of(dir);
    std::fs::create_dir_all(&parent).map_err(|e| fail("create", &parent, e))?;
    let tmp = temp_sibling(dir, &parent);
    let old = temp_sibling(dir, &parent);
    std::fs::create_dir(&tmp).map_err(|e| fail("create", &tmp, e))?;
    let value = match fill(&tmp) {
        Ok(value) => value,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let had_old = std::fs::symlink_metadata(dir).is_ok();
    if had_old && let Err(e) = std::fs::rename(dir, &old) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail("replace", dir, e).into());
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if had_old {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail("create", dir, e).into());
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(value)
}

/// `path` made absolute with symbolic links resolved, for a path that may not exist yet: `.`
/// and `..` removed as written, then its nearest existing ancestor canonicalized and the rest
/// appended (to compare a directory about to be written with others).
pub fn resolved_path(given: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut path = PathBuf::new();
    for part in std::path::absolute(given).ok()?.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                path.pop();
            }
            other => path.push(other),
        }
    }
    let mut rest = Vec::new();
    let mut existing = path.as_path();
    while !existing.exists() {
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
    let mut out = existing.canonicalize().ok()?;
    out.extend(rest.into_iter().rev());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dsc-atomic-write-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_is_replaced_whole_or_not_at_all() {
        let dir = scratch("file");
        let path = dir.join("out.txt");
        std::fs::write(&path, "old").unwrap();
        write_file_atomically::<io::Error>(&path, |tmp| std::fs::write(tmp, "new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let err = write_file_atomically::<io::Error>(&path, |tmp| {
            std::fs::write(tmp, "partial")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let err = write_file_atomically::<io::Error>(Path::new("/"), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("not a file path"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_replaced_whole_or_not_at_all() {
        let root = scratch("dir");
        let dir = root.join("a/b");
        write_dir_atomically::<_, io::Error>(&dir, |tmp| std::fs::write(tmp.join("x"), "1"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("x")).unwrap(), "1");
        let n = write_dir_atomically::<_, io::Error>(&dir, |tmp| {
            std::fs::write(tmp.join("y"), "2")?;
            Ok(7)
        })
        .unwrap();
        assert_eq!(n, 7);
        assert!(!dir.join("x").exists());
        assert_eq!(std::fs::read_to_string(dir.join("y")).unwrap(), "2");
        let err = write_dir_atomically::<(), io::Error>(&dir, |tmp| {
            std::fs::write(tmp.join("z"), "3")?;
            Err(io::Error::other("failed midway"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("failed midway"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join("y")).unwrap(), "2");
        assert!(!dir.join("z").exists());
        // Only `b` is in `a`: no temporary or old directory is left behind.
        assert_eq!(std::fs::read_dir(root.join("a")).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
