//! What the preset architectures share: which keys belong to which architecture, and the
//! check that no tensor a preset would build exceeds [`MAX_ELEMENTS`].

use super::ModelError;
use super::toml::{At, Spanned, Table};
use crate::shape::MAX_ELEMENTS;

/// `[model]` keys of `architecture = "deepseek"`.
pub const DEEPSEEK_KEYS: &[&str] = &[
    "name",
    "architecture",
    "batch",
    "seq_len",
    "vocab_size",
    "dim",
    "n_layers",
    "n_dense_layers",
    "inter_dim",
    "moe_inter_dim",
    "n_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_routed_experts",
    "n_shared_experts",
    "n_activated_experts",
    "n_expert_groups",
    "n_limited_groups",
    "score_func",
    "route_scale",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "norm_topk_prob",
    "route_bias",
];

/// `[model]` keys of `architecture = "llama"`.
pub const LLAMA_KEYS: &[&str] = &[
    "name",
    "architecture",
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "inter_dim",
    "vocab_size",
    "rope_theta",
    "rope_scaling",
    "rms_norm_eps",
    "batch",
    "seq_len",
    "tie_embeddings",
    "attention_bias",
];

/// `[model]` keys of the explicit form.
pub const EXPLICIT_KEYS: &[&str] = &["name", "outputs"];

/// More layers than any real model has; the cap keeps a typo from building a huge graph.
pub const MAX_LAYERS: u64 = 10_000;

fn arch_keys(arch: &str) -> &'static [&'static str] {
    if arch == "llama" {
        LLAMA_KEYS
    } else {
        DEEPSEEK_KEYS
    }
}

/// Rejects `[model]` keys that `arch` does not take, saying when a key belongs to another form.
pub fn check_model_keys(model: &Table, arch: &str) -> Result<(), ModelError> {
    let own = arch_keys(arch);
    for (key, at) in model.keys() {
        if own.contains(&key) {
            continue;
        }
        let other = ["deepseek", "llama"]
            .into_iter()
            .find(|&a| a != arch && arch_keys(a).contains(&key));
        return Err(if other.is_some() {
            model.error(at, format!("`{key}` does not apply to architecture {arch}"))
        } else if EXPLICIT_KEYS.contains(&key) {
            model.error(
                at,
                format!("`{key}` does not apply to a preset model (its output is `logits`)"),
            )
        } else {
            model.unknown_key(key, at, own)
        });
    }
    Ok(())
}

/// Rejects top-level tables of the explicit form in a preset file.
pub fn check_root_keys(root: &Table, arch: &str) -> Result<(), ModelError> {
    for (key, at) in root.keys() {
        match key {
            "model" | "precision" | "train" => {}
            "input" | "op" => {
                return Err(root.error(
                    at,
                    format!(
                        "`[[{key}]]` does not apply to a preset model (architecture = \"{arch}\")"
                    ),
                ));
            }
            _ => return Err(root.unknown_key(key, at, &["model", "precision", "train"])),
        }
    }
    Ok(())
}

/// One dimension of a tensor a preset builds, and the key that set it.
#[derive(Debug, Clone)]
pub struct Dim {
    /// How the message spells the dimension (`seq_len`, `qk_nope_head_dim + qk_rope_head_dim`).
    label: String,
    /// The key to blame when this dimension makes a tensor too large.
    key: &'static str,
    value: u64,
    at: At,
}

impl Dim {
    /// The dimension set by `key`.
    pub fn of(key: &'static str, v: Spanned<u64>) -> Dim {
        Dim {
            label: key.to_string(),
            key,
            value: v.value,
            at: v.at,
        }
    }

    /// The sum of two keys' values (`kv_lora_rank + qk_rope_head_dim`), blaming the larger.
    pub fn sum(a: (&'static str, Spanned<u64>), b: (&'static str, Spanned<u64>)) -> Dim {
        let big = if b.1.value > a.1.value { b } else { a };
        Dim {
            label: format!("{} + {}", a.0, b.0),
            key: big.0,
            // Each value came from a positive i64, so the sum fits in u64.
            value: a.1.value + b.1.value,
            at: big.1.at,
        }
    }
}

/// Checks that a tensor of `dims` has at most [`MAX_ELEMENTS`] elements; otherwise the error
/// points at the key that contributes most to the count (a squared `seq_len` counts twice).
pub fn check_size(model: &Table, what: &str, dims: &[Dim]) -> Result<(), ModelError> {
    let count = dims
        .iter()
        .try_fold(1u128, |acc, d| acc.checked_mul(u128::from(d.value)));
    if count.is_some_and(|c| c <= u128::from(MAX_ELEMENTS)) {
        return Ok(());
    }
    let mut weight: Vec<(&Dim, f64)> = Vec::new();
    for d in dims {
        match weight.iter_mut().find(|(w, _)| w.key == d.key) {
            Some((_, ln)) => *ln += (d.value as f64).ln(),
            None => weight.push((d, (d.value as f64).ln())),
        }
    }
    let Some(&(blame, _)) = weight.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
        return Ok(());
    };
    let labels: Vec<&str> = dims.iter().map(|d| d.label.as_str()).collect();
    let count = match count {
        Some(c) => format!("{c} elements"),
        None => "more than 2^128 elements".to_string(),
    };
    Err(model.error(
        blame.at,
        format!(
            "`{}` = {} is too large: {what} [{}] would have {count}, more than 2^48",
            blame.key,
            blame.value,
            labels.join(", ")
        ),
    ))
}

/// Checks every `(what, dims)` tensor with [`check_size`].
pub fn check_sizes(model: &Table, tensors: &[(&str, Vec<Dim>)]) -> Result<(), ModelError> {
    tensors
        .iter()
        .try_for_each(|(what, dims)| check_size(model, what, dims))
}

/// Reads `n_layers`, capped at [`MAX_LAYERS`].
pub fn n_layers(model: &Table) -> Result<Spanned<u64>, ModelError> {
    let n = model.required("n_layers", model.size("n_layers")?)?;
    if n.value > MAX_LAYERS {
        return Err(model.error(
            n.at,
            format!(
                "`n_layers` = {} is more than the {MAX_LAYERS} layers dsc builds",
                n.value
            ),
        ));
    }
    Ok(n)
}

/// Reads the required `name`: a plain file name, since `dsc compile` writes the artifact to
/// `build/<name>` (a `/`, `..` or absolute path would write somewhere else).
pub fn name(model: &Table) -> Result<String, ModelError> {
    let name = model.required("name", model.str("name")?)?;
    if name.value.is_empty() {
        return Err(model.error(name.at, "`name` must not be empty"));
    }
    if let Some(why) = not_a_file_name(name.value) {
        return Err(model.error(
            name.at,
            format!(
                "`name` = {:?} is not a plain file name ({why}): it names the output \
                 directory build/<name>",
                name.value
            ),
        ));
    }
    Ok(name.value.to_string())
}

/// The longest model name, in bytes (a directory's file name, with room for the temporary
/// name it is written under first).
const MAX_NAME_BYTES: usize = 200;

/// Why `name` cannot be a directory's file name, or `None` when it can.
fn not_a_file_name(name: &str) -> Option<&'static str> {
    if name.contains(['/', '\\']) {
        Some("it has a path separator")
    } else if name == "." || name == ".." {
        Some("it names a directory itself")
    } else if name.chars().any(char::is_control) {
        Some("it has a control character")
    } else if name.len() > MAX_NAME_BYTES {
        // File names stop at 255 bytes, and the artifact is first written beside its place as
        // `.<name>.tmp-<pid>-<n>`.
        Some("it is longer than 200 bytes")
    } else {
        None
    }
}
