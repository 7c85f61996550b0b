//! `dsc import CONFIG.json`: a Hugging Face config → model.toml; also how `dsc compile` reads
//! a config.json or a checkpoint directory.

use crate::cli::{HfShapeArgs, ImportArgs};
use crate::diagnostic::{Diagnostic, read_text};
use crate::output_file::{Input, check_output_file};
use dsc_ir::model::hf::{self, DEFAULT_BATCH, DEFAULT_SEQ_LEN, ImportOptions, Imported};
use std::path::{Path, PathBuf};

/// The config.json that `path` names: the file itself, or `config.json` in a directory.
/// `None` when `path` is neither (a model.toml).
pub fn hf_config(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(path.join("config.json"));
    }
    (path.extension().and_then(|e| e.to_str()) == Some("json")).then(|| path.to_path_buf())
}

/// A model name from the checkpoint directory's name (`DeepSeek-V3` for
/// `…/DeepSeek-V3/config.json`), else the model type; characters other than letters, digits,
/// `-`, `_` and `.` become `_`.
fn model_name(config: &Path, model_type: &str) -> String {
    let dir = config.canonicalize().ok().and_then(|p| {
        p.parent()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    let raw = dir
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| model_type.to_string());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads and converts `config` (the notes about ignored fields go to stderr).
pub fn import_config(config: &Path, shape: &HfShapeArgs) -> Result<Imported, Diagnostic> {
    let text = read_text(config)?;
    // The name needs the model type before the import proper; a config without one fails
    // in `import` with its location.
    let model_type = serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}'))
        .ok()
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "model".into());
    let opts = ImportOptions {
        name: model_name(config, &model_type),
        batch: shape.batch.unwrap_or(DEFAULT_BATCH),
        seq_len: shape.seq_len.unwrap_or(DEFAULT_SEQ_LEN),
    };
    let imported = hf::import(&text, &opts).map_err(|e| Diagnostic::located(config, &text, e))?;
    for note in &imported.ignored {
        eprintln!("note: ignored {note}");
    }
    Ok(imported)
}

/// Writes the model.toml to `-o` or stdout.
pub fn run(args: &ImportArgs) -> Result<(), Diagnostic> {
    if let Some(path) = &args.output {
        let what = if args.config.is_dir() {
            "the checkpoint"
        } else {
            "the config"
        };
        let mut inputs = vec![Input::new(what, &args.config)];
        let checkpoint = crate::output_file::checkpoint_of_config(&args.config);
        if let Some(dir) = &checkpoint {
            inputs.push(Input::new("the config's checkpoint", dir));
        }
        check_output_file("-o", path, &inputs)?;
    }
    let config = hf_config(&args.config).unwrap_or_else(|| args.config.clone());
    let imported = import_config(&config, &args.shape)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &imported.toml)
                .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
            eprintln!(
                "wrote {} (model_type \"{}\")",
                path.display(),
                imported.model_type
            );
        }
        None => print!("{}", imported.toml),
    }
    Ok(())
}
