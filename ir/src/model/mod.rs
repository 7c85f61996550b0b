//! The `model.toml` front end (DESIGN.md §2a): a preset (`architecture = "deepseek"` or
//! `"llama"`) expanded into its graph, or an explicit graph of `[[input]]`s and `[[op]]`s,
//! plus the optional `[precision]` policy and the optional `[train]` config of `dsc train`.
//!
//! Reading is strict: an unknown key, a wrong type or an impossible value is a [`ModelError`]
//! at the line:col of the offending key or value, naming the key.

mod deepseek;
mod explicit;
mod explicit_op;
pub mod hf;
mod layers;
mod llama;
mod precision;
mod preset;
mod rope;
mod toml;
mod train;

#[cfg(test)]
mod tests;

use crate::Graph;
use toml::{Source, Table};
pub use train::{
    ActGradScaling, Recipe, Recompute, TensorFormats, TrainConfig, UnknownRecipe, UnknownRecompute,
    WgradSource,
};

/// An error in a model.toml, at a 1-based line and column.
pub type ModelError = crate::LocatedError;

/// The architectures a preset can name.
const ARCHITECTURES: [&str; 2] = ["deepseek", "llama"];

/// Reads a model.toml into a verified graph with its precision policy.
pub fn load_model(source: &str) -> Result<Graph, ModelError> {
    load_model_with_mtp(source, 0)
}

/// [`load_model`] with `mtp_depth` multi-token-prediction modules after the main model
/// (DeepSeek-V3 §2.2; the deepseek preset only): their logits `mtp.{k}.logits` are outputs
/// 1..=depth. For a training step (`[train] mtp_depth`).
pub fn load_model_with_mtp(source: &str, mtp_depth: u64) -> Result<Graph, ModelError> {
    let src = Source::new(source);
    let doc = toml::parse(source)?;
    let root = Table::root(src, &doc);
    let Some(model) = root.table("model", "[model]")? else {
        return Err(src.error(
            toml::At(0),
            "missing table [model] (a preset's `architecture` or an explicit graph's `outputs`)",
        ));
    };
    let policy = match root.table("precision", "[precision]")? {
        Some(t) => precision::parse(&t)?,
        None => crate::PrecisionPolicy::default(),
    };
    // `[train]` does not change the graph, but a file with a bad one is a bad file.
    if let Some(t) = root.table("train", "[train]")? {
        train::parse(&t)?;
    }
    let mut graph = match model.str("architecture")? {
        Some(arch) => {
            if !ARCHITECTURES.contains(&arch.value) {
                return Err(model.error(
                    arch.at,
                    format!(
                        "`architecture` must be one of {}, not \"{}\"",
                        ARCHITECTURES.map(|a| format!("\"{a}\"")).join(", "),
                        arch.value
                    ),
                ));
            }
            preset::check_root_keys(&root, arch.value)?;
            if arch.value == "deepseek" {
                deepseek::build(&model, policy.high, mtp_depth)?
            } else if mtp_depth == 0 {
                llama::build(&model, policy.high)?
            } else {
                return Err(model.error(
                    arch.at,
                    format!(
                        "multi-token prediction (mtp_depth = {mtp_depth}) is built for \
                         architecture \"deepseek\", not \"{}\"",
                        arch.value
                    ),
                ));
            }
        }
        None if mtp_depth > 0 => {
            return Err(model.error(
                model.at(),
                format!(
                    "multi-token prediction (mtp_depth = {mtp_depth}) is built for \
                     architecture \"deepseek\", not an explicit graph"
                ),
            ));
        }
        None => explicit::build(&root, &model, policy.high)?,
    };
    graph.policy = policy;
    // The builders check every op as they go; this catches what they cannot see (outputs,
    // the policy), so a graph handed out is always one the rest of dsc accepts.
    crate::verify(&graph).map_err(|e| {
        model.error(
            model.at(),
            format!("the model builds an invalid graph: {e}"),
        )
    })?;
    Ok(graph)
}

/// Reads the optional `[train]` table of a model.toml (`None` when there is none); the rest of
/// the file is not looked at — [`load_model`] checks it.
pub fn load_train_config(source: &str) -> Result<Option<TrainConfig>, ModelError> {
    let doc = toml::parse(source)?;
    let root = Table::root(Source::new(source), &doc);
    root.table("train", "[train]")?
        .map(|t| train::parse(&t))
        .transpose()
}
