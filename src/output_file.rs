//! Checks a single-file output (`dsc run --output`, `dsc bench --json`, `dsc train --log`, …)
//! before the command does any work, so that a mistyped path fails at once instead of after
//! the run, and nothing the command reads is lost (DESIGN.md §6, as `crate::artifact_dir` does
//! for output directories):
//!
//! - the file's directory must exist and the path must not be a directory;
//! - it must not be an input of the command, nor an existing file inside an input directory
//!   (an artifact, a checkpoint directory, a `--resume` checkpoint), compared by canonical path
//!   so that symlinks and `./a/../b` spellings are caught;
//! - it must not be inside a dsc artifact at all: an artifact holds only what `dsc compile`
//!   writes, and a later `dsc compile -o` replaces its directory whole;
//! - two outputs of one command must be different files ([`check_distinct`]).

use crate::diagnostic::Diagnostic;
use dsc_kernels::manifest::files;
use std::path::{Path, PathBuf};

/// What the command reads: `what` describes `path` in messages (`the model`, `the --data
/// file`, `the artifact`); a directory counts with every file inside it.
#[derive(Clone, Copy)]
pub struct Input<'p> {
    pub what: &'p str,
    pub path: &'p Path,
}

impl<'p> Input<'p> {
    pub fn new(what: &'p str, path: &'p Path) -> Self {
        Input { what, path }
    }
}

/// Ok when writing the file `path` (given as `flag`) loses nothing the command reads and can
/// succeed as far as its place goes; otherwise an error naming `flag`, `path` and the input.
pub fn check_output_file(flag: &str, path: &Path, inputs: &[Input]) -> Result<(), Diagnostic> {
    let out = path.display();
    if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Diagnostic::new(format!(
            "{flag} {out} names a directory: give a file name"
        )));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.exists() {
        return Err(Diagnostic::new(format!(
            "{flag} {out}: the directory {} does not exist",
            parent.display()
        )));
    }
    if !parent.is_dir() {
        return Err(Diagnostic::new(format!(
            "{flag} {out}: {} is not a directory",
            parent.display()
        )));
    }
    let Some(target) = resolve(path) else {
        return Ok(());
    };
    let exists = path.exists();
    for input in inputs {
        let Some(source) = resolve(input.path) else {
            continue;
        };
        let (what, shown) = (input.what, input.path.display());
        if target == source {
            return Err(Diagnostic::new(format!(
                "{flag} {out} is {what} {shown} this command reads: writing it would replace \
                 it; choose another file"
            )));
        }
        if !source.is_dir() || !target.starts_with(&source) {
            continue;
        }
        if exists {
            return Err(Diagnostic::new(format!(
                "{flag} {out} is a file of {what} {shown} this command reads: writing it \
                 would replace it; choose another file"
            )));
        }
        if let Some(artifact) = enclosing_artifact(&target, &source) {
            return Err(Diagnostic::new(format!(
                "{flag} {out} is inside the dsc artifact {} ({what} {shown}), which holds only \
                 what dsc compile writes: choose a file outside it",
                artifact.display()
            )));
        }
    }
    Ok(())
}

/// Ok when no two of `outputs` (flag, path) are the same file, and none is inside one of the
/// output directories `dirs` (flag, path), which the command replaces whole.
pub fn check_distinct(outputs: &[(&str, &Path)], dirs: &[(&str, &Path)]) -> Result<(), Diagnostic> {
    for (i, (flag, path)) in outputs.iter().enumerate() {
        let Some(target) = resolve(path) else {
            continue;
        };
        for (other_flag, other) in &outputs[i + 1..] {
            if resolve(other).is_some_and(|o| o == target) {
                return Err(Diagnostic::new(format!(
                    "{flag} {} and {other_flag} {} are the same file: give each output its own",
                    path.display(),
                    other.display()
                )));
            }
        }
        for (dir_flag, dir) in dirs {
            if resolve(dir).is_some_and(|d| target.starts_with(d)) {
                return Err(Diagnostic::new(format!(
                    "{flag} {} is inside the {dir_flag} directory {}, which this command \
                     replaces whole: choose a file outside it",
                    path.display(),
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// The checkpoint directory beside a model given as `CKPT/config.json`: its directory when
/// that holds `.safetensors` files (the command's model comes from there, so its files are
/// inputs too), else `None` (a config.json among other files, whose neighbours are not).
pub fn checkpoint_of_config(model: &Path) -> Option<PathBuf> {
    if model.is_dir() || model.extension().is_none_or(|e| e != "json") {
        return None;
    }
    let dir = match model.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let holds_weights = std::fs::read_dir(dir).ok()?.flatten().any(|e| {
        Path::new(&e.file_name())
            .extension()
            .is_some_and(|x| x == "safetensors")
    });
    holds_weights.then(|| dir.to_path_buf())
}

/// `path` as an absolute path without symlinks or `.`/`..`: canonical when it exists, else
/// its directory's canonical path joined with its name; `None` when neither is known.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.canonicalize().ok().map(|p| p.join(name))
}

/// The innermost directory between `input` (an input directory) and `target` (a path inside
/// it), both included for `input`, that holds a dsc artifact's manifest.
fn enclosing_artifact(target: &Path, input: &Path) -> Option<PathBuf> {
    target
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(input))
        .find(|d| d.join(files::MANIFEST).is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dsc-output-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn inputs_and_files_in_input_directories_are_refused() {
        let dir = tmp("inputs");
        let model = dir.join("m.toml");
        std::fs::write(&model, "x").unwrap();
        let ckpt = dir.join("ckpt");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(ckpt.join("config.json"), "{}").unwrap();
        let inputs = [
            Input::new("the model", &model),
            Input::new("the checkpoint", &ckpt),
        ];
        let spelled = dir.join("ckpt/../m.toml");
        let e = check_output_file("--log", &spelled, &inputs).unwrap_err();
        assert!(e.message.contains("is the model"), "{}", e.message);
        let e = check_output_file("--log", &ckpt.join("config.json"), &inputs).unwrap_err();
        assert!(
            e.message.contains("is a file of the checkpoint"),
            "{}",
            e.message
        );
        // A new file in a checkpoint is fine; a new file in an artifact is not.
        check_output_file("--log", &ckpt.join("new.csv"), &inputs).unwrap();
        std::fs::write(ckpt.join(files::MANIFEST), "{}").unwrap();
        let e = check_output_file("--log", &ckpt.join("new.csv"), &inputs).unwrap_err();
        assert!(
            e.message.contains("inside the dsc artifact"),
            "{}",
            e.message
        );
        check_output_file("--log", &dir.join("log.csv"), &inputs).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn places_that_cannot_be_written_are_refused() {
        let dir = tmp("places");
        let e = check_output_file("--json", &dir, &[]).unwrap_err();
        assert!(e.message.contains("names a directory"), "{}", e.message);
        let e = check_output_file("--json", &dir.join("no/x"), &[]).unwrap_err();
        assert!(e.message.contains("does not exist"), "{}", e.message);
        std::fs::write(dir.join("f"), "x").unwrap();
        let e = check_output_file("--json", &dir.join("f/x"), &[]).unwrap_err();
        assert!(e.message.contains("is not a directory"), "{}", e.message);
        let a = dir.join("a");
        let e =
            check_distinct(&[("--log", &a), ("--save-grads", &dir.join("./a"))], &[]).unwrap_err();
        assert!(e.message.contains("are the same file"), "{}", e.message);
        std::fs::create_dir(dir.join("s")).unwrap();
        let e = check_distinct(
            &[("--log", &dir.join("s/a"))],
            &[("--save", &dir.join("s"))],
        );
        assert!(e.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
