//! The training memory table `dsc compile` prints for a model with `[train]` (DESIGN.md §8):
//! bytes per parameter and saved activation bytes per token of the configured recipe against
//! the all-BF16 baseline, both measured on the lowered training steps.

use crate::diagnostic::Diagnostic;
use dsc_ir::{Graph, Recipe, TrainConfig};
use dsc_passes::train_memory::{TrainMemory, measure};
use dsc_passes::train_step::build_lowered;
use std::fmt::Write;

/// The table for `forward` trained as `config` says, next to the BF16 baseline.
pub fn memory_table(forward: &Graph, config: &TrainConfig) -> Result<String, Diagnostic> {
    let measured = |recipe: Recipe| -> Result<TrainMemory, Diagnostic> {
        let config = TrainConfig {
            recipe,
            ..config.clone()
        };
        let step = build_lowered(forward, &config).map_err(|e| {
            Diagnostic::new(format!("the training step of `{}`: {e}", forward.name))
        })?;
        Ok(measure(&step))
    };
    let (recipe, baseline) = (measured(config.recipe)?, measured(Recipe::Bf16)?);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "training memory ({} parameters, {} tokens per step):",
        recipe.params, recipe.tokens
    );
    let _ = writeln!(
        out,
        "  {:<40} {:>12} {:>14}",
        "",
        format!("{} recipe", config.recipe),
        "bf16 baseline"
    );
    type Row = (&'static str, fn(&TrainMemory) -> f64);
    let rows: [Row; 4] = [
        ("bytes / parameter", TrainMemory::bytes_per_param),
        ("  FP32 master + grad, moments", |m| m.state_bytes_per_param),
        ("  per-step weight copies", |m| m.working_bytes_per_param),
        ("saved activation bytes / token", |m| {
            m.saved_activation_bytes_per_token
        }),
    ];
    for (label, f) in rows {
        let _ = writeln!(
            out,
            "  {label:<40} {:>12.2} {:>14.2}",
            f(&recipe),
            f(&baseline)
        );
    }
    Ok(out)
}
