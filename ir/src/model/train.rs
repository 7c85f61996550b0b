//! `[train]` → [`TrainConfig`]: the configuration of `dsc train` (DESIGN.md §8) — the recipe,
//! the AdamW optimizer and its learning-rate schedule, the expert-bias speed γ, the balance-loss
//! weight α, multi-token prediction and the recompute policy. Every key is optional; an absent
//! `[train]` table is `None` from [`super::load_train_config`].
//!
//! Reading is as strict as the rest of model.toml: an unknown key, a wrong type or an impossible
//! value is a [`ModelError`] at the value's line:col, naming the key.

use super::ModelError;
use super::toml::{Spanned, Table};
use std::fmt;
use std::str::FromStr;

/// `[train]`'s keys.
const KEYS: [&str; 19] = [
    "recipe",
    "optimizer",
    "lr",
    "min_lr",
    "warmup_steps",
    "decay_steps",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "grad_clip",
    "bias_update_speed",
    "balance_loss_alpha",
    "mtp_depth",
    "mtp_lambda",
    "recompute",
    "wgrad_source",
    "act_grad_scaling",
    "tensor_formats",
];

/// The one optimizer `dsc train` implements.
const OPTIMIZER: &str = "adamw";

/// Which precision recipe a training step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recipe {
    /// DeepSeek-V3's FP8 recipe (DESIGN.md §8): FP8 GEMMs in fprop, dgrad and wgrad.
    #[default]
    Fp8,
    /// The all-BF16 baseline the FP8 run is compared against.
    Bf16,
}

impl Recipe {
    /// Every recipe, in the order the docs list them.
    pub const ALL: [Recipe; 2] = [Recipe::Fp8, Recipe::Bf16];

    /// The name model.toml uses.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Fp8 => "fp8",
            Recipe::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a string that names no recipe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown recipe `{0}` (expected fp8 or bf16)")]
pub struct UnknownRecipe(pub String);

impl FromStr for Recipe {
    type Err = UnknownRecipe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRecipe(s.to_string()))
    }
}

/// What the backward pass recomputes instead of keeping from the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recompute {
    /// DeepSeek-V3's choice: SwiGLU and RMSNorm outputs are recomputed, everything else kept.
    #[default]
    Recipe,
    /// Nothing is recomputed: every activation the backward pass reads is kept.
    None,
    /// Each layer's forward pass is recomputed from its input (full activation checkpointing).
    Full,
}

impl Recompute {
    /// Every policy, in the order the docs list them.
    pub const ALL: [Recompute; 3] = [Recompute::Recipe, Recompute::None, Recompute::Full];

    /// The name model.toml uses.
    pub fn name(self) -> &'static str {
        match self {
            Recompute::Recipe => "recipe",
            Recompute::None => "none",
            Recompute::Full => "full",
        }
    }
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a string that names no recompute policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown recompute policy `{0}` (expected recipe, none or full)")]
pub struct UnknownRecompute(pub String);

impl FromStr for Recompute {
    type Err = UnknownRecompute;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recompute::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRecompute(s.to_string()))
    }
}

/// The `[train]` table of a model.toml. [`Default`] gives the values of an empty table.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// `recipe`: FP8 (DeepSeek-V3) or the all-BF16 baseline.
    pub recipe: Recipe,
    /// `lr`: the peak learning rate, reached at the end of warmup. Positive.
    pub lr: f64,
    /// `min_lr`: the learning rate at the end of the cosine decay and after it. Resolved when
    /// the table is read: `lr / 10` when the key is absent. `0 <= min_lr <= lr`.
    pub min_lr: f64,
    /// `warmup_steps`: steps of linear warmup from `lr / warmup_steps` to `lr`.
    pub warmup_steps: u64,
    /// `decay_steps`: length of the cosine decay after warmup; `None` = the rest of the run
    /// (`total_steps - warmup_steps`). Positive when given.
    pub decay_steps: Option<u64>,
    /// `beta1`: AdamW's first-moment decay, in `[0, 1)`.
    pub beta1: f64,
    /// `beta2`: AdamW's second-moment decay, in `[0, 1)`.
    pub beta2: f64,
    /// `eps`: AdamW's denominator epsilon. Positive.
    pub eps: f64,
    /// `weight_decay`: AdamW's decoupled weight decay. Zero or positive.
    pub weight_decay: f64,
    /// `grad_clip`: the global gradient-norm clip; 0 turns clipping off.
    pub grad_clip: f64,
    /// `bias_update_speed`: γ of the aux-loss-free balancing,
    /// `b_i += γ · sign(mean_load − load_i)` after each step. Zero or positive.
    pub bias_update_speed: f64,
    /// `balance_loss_alpha`: α, the weight of the sequence-wise balance loss; 0 = off.
    pub balance_loss_alpha: f64,
    /// `mtp_depth`: the number of multi-token-prediction modules; 0 = off.
    pub mtp_depth: u64,
    /// `mtp_lambda`: λ, the weight of the MTP loss. Zero or positive.
    pub mtp_lambda: f64,
    /// `recompute`: what the backward pass recomputes.
    pub recompute: Recompute,
    /// `wgrad_source`: where the Wgrad GEMM's 1×128-along-tokens FP8 operands come from.
    pub wgrad_source: WgradSource,
    /// `act_grad_scaling`: how the Dgrad GEMM's activation gradient dY is scaled in FP8.
    pub act_grad_scaling: ActGradScaling,
    /// `tensor_formats`: whether the FP8 recipe gives the tensors it names their own formats.
    pub tensor_formats: TensorFormats,
}

/// The FP8 recipe's per-tensor formats (DESIGN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TensorFormats {
    /// `"recipe"`: power-of-2 (UE8M0) scales for the MoE up-projections' inputs and the
    /// activation gradient entering the down-projections' backward, and the attention output
    /// projection's input cached in the emulated E5M6 with power-of-2 scales, whatever
    /// `[precision] scale_format` says; every other tensor in the policy's format.
    #[default]
    Recipe,
    /// `"policy"`: every FP8 tensor in the policy's format (`scale_format`), no E5M6 cache.
    Policy,
}

impl TensorFormats {
    /// The spelling in model.toml.
    pub fn name(self) -> &'static str {
        match self {
            TensorFormats::Recipe => "recipe",
            TensorFormats::Policy => "policy",
        }
    }
}

/// How the activation gradient dY of a Dgrad GEMM is scaled when quantized to FP8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActGradScaling {
    /// `"1x128"`: one scale per token and 128 features, as every activation (the recipe).
    #[default]
    Tile,
    /// `"128x128"`: one scale per 128 tokens × 128 features, as the weights — the report's
    /// ablation (§3.3.1: it diverged on a 16B model), for experiments only. Applies to the
    /// Dgrad of every `linear` (not the routed experts' grouped Dgrad).
    Block,
}

impl ActGradScaling {
    /// The spelling in model.toml.
    pub fn name(self) -> &'static str {
        match self {
            ActGradScaling::Tile => "1x128",
            ActGradScaling::Block => "128x128",
        }
    }
}

/// Where a Wgrad's FP8 operands (tiled along the tokens) are quantized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WgradSource {
    /// `"fp8"`: the FP8 copies already made along the features (the Fprop input, the Dgrad's
    /// dY), dequantized, transposed and requantized — DeepSeek-V3 §3.5.2; the backward keeps
    /// only FP8 linear inputs.
    #[default]
    Fp8,
    /// `"high"`: the BF16 tensors, transposed and quantized (Transformer Engine's way).
    High,
}

impl WgradSource {
    /// The spelling in model.toml.
    pub fn name(self) -> &'static str {
        match self {
            WgradSource::Fp8 => "fp8",
            WgradSource::High => "high",
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        let lr = 3e-4;
        TrainConfig {
            recipe: Recipe::Fp8,
            lr,
            min_lr: lr / 10.0,
            warmup_steps: 0,
            decay_steps: None,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            bias_update_speed: 0.001,
            balance_loss_alpha: 0.0,
            mtp_depth: 0,
            mtp_lambda: 0.3,
            recompute: Recompute::Recipe,
            wgrad_source: WgradSource::Fp8,
            act_grad_scaling: ActGradScaling::Tile,
            tensor_formats: TensorFormats::Recipe,
        }
    }
}

impl TrainConfig {
    /// The learning rate of 0-based `step` in a run of `total_steps` steps: linear warmup
    /// `lr · (step + 1) / warmup_steps` while `step < warmup_steps`, then a cosine from `lr`
    /// down to `min_lr` over `decay_steps` (default: `total_steps − warmup_steps`) steps, and
    /// `min_lr` after that. The first step after warmup runs at `lr`.
    pub fn lr_at(&self, step: u64, total_steps: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay = self
            .decay_steps
            .unwrap_or(total_steps.saturating_sub(self.warmup_steps));
        let t = step - self.warmup_steps;
        if t >= decay {
            return self.min_lr;
        }
        let progress = t as f64 / decay as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cosine
    }
}

/// Reads `[train]` (every key optional; absent keys keep their defaults).
pub fn parse(t: &Table) -> Result<TrainConfig, ModelError> {
    t.check_keys(&KEYS)?;
    let mut c = TrainConfig::default();
    if let Some(s) = t.str("recipe")? {
        c.recipe = s.value.parse().map_err(|_| {
            t.error(
                s.at,
                format!("`recipe` must be \"fp8\" or \"bf16\", not \"{}\"", s.value),
            )
        })?;
    }
    if let Some(s) = t.str("optimizer")?
        && s.value != OPTIMIZER
    {
        return Err(t.error(
            s.at,
            format!(
                "`optimizer` must be \"{OPTIMIZER}\" (the only optimizer dsc trains with), not \"{}\"",
                s.value
            ),
        ));
    }
    if let Some(v) = t.positive_float("lr")? {
        c.lr = v.value;
    }
    c.min_lr = match t.float("min_lr")? {
        Some(v) if v.value < 0.0 || v.value > c.lr => {
            return Err(t.error(
                v.at,
                format!(
                    "`min_lr` must be between 0 and `lr` ({}), not {}",
                    c.lr, v.value
                ),
            ));
        }
        Some(v) => v.value,
        None => c.lr / 10.0,
    };
    if let Some(v) = t.count("warmup_steps")? {
        c.warmup_steps = v.value;
    }
    if let Some(v) = t.size("decay_steps")? {
        c.decay_steps = Some(v.value);
    }
    if let Some(v) = beta(t, "beta1")? {
        c.beta1 = v;
    }
    if let Some(v) = beta(t, "beta2")? {
        c.beta2 = v;
    }
    if let Some(v) = t.positive_float("eps")? {
        c.eps = v.value;
    }
    for (key, field) in [
        ("weight_decay", &mut c.weight_decay),
        ("grad_clip", &mut c.grad_clip),
        ("bias_update_speed", &mut c.bias_update_speed),
        ("balance_loss_alpha", &mut c.balance_loss_alpha),
        ("mtp_lambda", &mut c.mtp_lambda),
    ] {
        if let Some(v) = non_negative(t, key)? {
            *field = v;
        }
    }
    if let Some(v) = t.count("mtp_depth")? {
        c.mtp_depth = v.value;
    }
    if let Some(s) = t.str("recompute")? {
        c.recompute = s.value.parse().map_err(|_| {
            t.error(
                s.at,
                format!(
                    "`recompute` must be \"recipe\", \"none\" or \"full\", not \"{}\"",
                    s.value
                ),
            )
        })?;
    }
    if let Some(s) = t.str("wgrad_source")? {
        c.wgrad_source = match s.value {
            "fp8" => WgradSource::Fp8,
            "high" => WgradSource::High,
            other => {
                return Err(t.error(
                    s.at,
                    format!("`wgrad_source` must be \"fp8\" or \"high\", not \"{other}\""),
                ));
            }
        };
    }
    if let Some(s) = t.str("act_grad_scaling")? {
        c.act_grad_scaling = match s.value {
            "1x128" => ActGradScaling::Tile,
            "128x128" => ActGradScaling::Block,
            other => {
                return Err(t.error(
                    s.at,
                    format!("`act_grad_scaling` must be \"1x128\" or \"128x128\", not \"{other}\""),
                ));
            }
        };
    }
    if let Some(s) = t.str("tensor_formats")? {
        c.tensor_formats = match s.value {
            "recipe" => TensorFormats::Recipe,
            "policy" => TensorFormats::Policy,
            other => {
                return Err(t.error(
                    s.at,
                    format!("`tensor_formats` must be \"recipe\" or \"policy\", not \"{other}\""),
                ));
            }
        };
    }
    Ok(c)
}

/// A finite float that must not be negative.
fn non_negative(t: &Table, key: &str) -> Result<Option<f64>, ModelError> {
    let Some(Spanned { value, at }) = t.float(key)? else {
        return Ok(None);
    };
    if value < 0.0 {
        return Err(t.error(at, format!("`{key}` must be zero or positive, not {value}")));
    }
    Ok(Some(value))
}

/// An Adam moment decay: in `[0, 1)`.
fn beta(t: &Table, key: &str) -> Result<Option<f64>, ModelError> {
    let Some(Spanned { value, at }) = t.float(key)? else {
        return Ok(None);
    };
    if !(0.0..1.0).contains(&value) {
        return Err(t.error(at, format!("`{key}` must be in [0, 1), not {value}")));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::super::{ModelError, load_model, load_train_config};
    use super::{ActGradScaling, Recipe, Recompute, TensorFormats, TrainConfig, WgradSource};
    use std::path::Path;

    /// A full `[train]` table with no default value in it.
    const FULL: &str = r#"
[train]
recipe = "bf16"
optimizer = "adamw"
lr = 1e-3
min_lr = 2e-5
warmup_steps = 100
decay_steps = 900
beta1 = 0.8
beta2 = 0.99
eps = 1e-6
weight_decay = 0.05
grad_clip = 0
bias_update_speed = 0.0005
balance_loss_alpha = 0.0001
mtp_depth = 1
mtp_lambda = 0.1
recompute = "full"
wgrad_source = "high"
act_grad_scaling = "128x128"
tensor_formats = "policy"
"#;

    fn full() -> TrainConfig {
        TrainConfig {
            recipe: Recipe::Bf16,
            lr: 1e-3,
            min_lr: 2e-5,
            warmup_steps: 100,
            decay_steps: Some(900),
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.05,
            grad_clip: 0.0,
            bias_update_speed: 0.0005,
            balance_loss_alpha: 0.0001,
            mtp_depth: 1,
            mtp_lambda: 0.1,
            recompute: Recompute::Full,
            wgrad_source: WgradSource::High,
            act_grad_scaling: ActGradScaling::Block,
            tensor_formats: TensorFormats::Policy,
        }
    }

    /// Every model.toml under examples/, with its name.
    fn examples() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p.display().to_string(), text)
            })
            .collect();
        out.sort();
        assert!(
            out.len() >= 5,
            "examples/ has {} model.toml files",
            out.len()
        );
        out
    }

    fn cfg(src: &str) -> TrainConfig {
        load_train_config(src)
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
            .unwrap_or_else(|| panic!("no [train] in\n{src}"))
    }

    fn err(src: &str) -> ModelError {
        match load_train_config(src) {
            Ok(c) => panic!("expected an error, got {c:?} for\n{src}"),
            Err(e) => e,
        }
    }

    /// Where an error points on the last line of a `[train]` body.
    #[derive(Clone, Copy)]
    enum At {
        /// The key: column 1.
        Key,
        /// The value: after `key = `.
        Value,
        /// A 1-based column.
        Col(usize),
    }

    /// `[train]` followed by `body`: the error is on `body`'s last line, at its key or its
    /// value, and its message contains each of `parts`.
    fn assert_err(body: &str, at: At, parts: &[&str]) {
        let src = format!("[model]\nname = \"x\"\n\n[train]\n{body}\n");
        let e = err(&src);
        let last = body.lines().last().unwrap();
        let line = src.lines().count();
        let col = match at {
            At::Key => 1,
            At::Value => last.find("= ").unwrap() + 3,
            At::Col(c) => c,
        };
        assert_eq!((e.line, e.col), (line, col), "{e}\n{src}");
        for p in parts {
            assert!(e.message.contains(p), "`{p}` not in: {e}");
        }
    }

    #[test]
    fn examples_still_load_and_have_no_train_table() {
        for (name, text) in examples() {
            load_model(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(load_train_config(&text), Ok(None), "{name}");
        }
    }

    #[test]
    fn examples_with_a_train_table_load_in_both_forms() {
        for (name, text) in examples() {
            let src = format!("{text}\n{FULL}");
            let g = load_model(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(g, load_model(&text).unwrap(), "{name}");
            assert_eq!(cfg(&src), full(), "{name}");
        }
    }

    #[test]
    fn a_full_train_table_round_trips() {
        assert_eq!(cfg(FULL), full());
    }

    #[test]
    fn an_empty_train_table_is_the_default() {
        let c = cfg("[train]\n");
        assert_eq!(c, TrainConfig::default());
        assert_eq!(c.recipe, Recipe::Fp8);
        assert_eq!(c.recompute, Recompute::Recipe);
        assert_eq!(c.lr, 3e-4);
        assert_eq!(c.min_lr, 3e-4 / 10.0);
        assert_eq!((c.beta1, c.beta2, c.eps), (0.9, 0.95, 1e-8));
        assert_eq!((c.weight_decay, c.grad_clip), (0.1, 1.0));
        assert_eq!((c.bias_update_speed, c.balance_loss_alpha), (0.001, 0.0));
        assert_eq!((c.mtp_depth, c.mtp_lambda), (0, 0.3));
        assert_eq!((c.warmup_steps, c.decay_steps), (0, None));
    }

    #[test]
    fn min_lr_defaults_to_a_tenth_of_lr() {
        assert_eq!(cfg("[train]\nlr = 0.01\n").min_lr, 0.001);
        assert_eq!(cfg("[train]\nlr = 0.01\nmin_lr = 0\n").min_lr, 0.0);
        assert_eq!(cfg("[train]\nlr = 0.01\nmin_lr = 0.01\n").min_lr, 0.01);
        // Integers are numbers too.
        assert_eq!(cfg("[train]\nlr = 1\n").lr, 1.0);
    }

    #[test]
    fn recipe_and_recompute_spellings() {
        for r in Recipe::ALL {
            assert_eq!(r.to_string().parse::<Recipe>(), Ok(r));
            assert_eq!(cfg(&format!("[train]\nrecipe = \"{r}\"\n")).recipe, r);
        }
        for r in Recompute::ALL {
            assert_eq!(r.to_string().parse::<Recompute>(), Ok(r));
            assert_eq!(cfg(&format!("[train]\nrecompute = \"{r}\"\n")).recompute, r);
        }
        assert_eq!(Recipe::Fp8.to_string(), "fp8");
        assert_eq!(Recompute::None.to_string(), "none");
        assert!(
            "FP8"
                .parse::<Recipe>()
                .unwrap_err()
                .to_string()
                .contains("`FP8`")
        );
        assert!("partial".parse::<Recompute>().is_err());
    }

    #[test]
    fn no_train_table_is_none() {
        assert_eq!(load_train_config("[model]\nname = \"x\"\n"), Ok(None));
        assert_eq!(load_train_config(""), Ok(None));
    }

    #[test]
    fn unknown_keys_and_tables() {
        assert_err(
            "lr = 1e-3\nlearning_rate = 1",
            At::Key,
            &[
                "unknown key `learning_rate` in [train]",
                "allowed",
                "min_lr",
            ],
        );
        assert_err(
            "[train.extra]",
            At::Col(8),
            &["unknown key `extra` in [train]"],
        );
    }

    #[test]
    fn train_must_be_a_table() {
        let e = err("train = 3\n");
        assert_eq!((e.line, e.col), (1, 9), "{e}");
        assert!(e.message.contains("`train` must be a table"), "{e}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("[train]\nlr = = 3\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("invalid TOML"), "{e}");
    }

    #[test]
    fn wrong_types() {
        assert_err(
            "lr = \"fast\"",
            At::Value,
            &["`lr` must be a number", "a string"],
        );
        assert_err(
            "recipe = 8",
            At::Value,
            &["`recipe` must be a string", "an integer"],
        );
        assert_err(
            "warmup_steps = 1.5",
            At::Value,
            &["`warmup_steps` must be an integer"],
        );
        assert_err(
            "decay_steps = true",
            At::Value,
            &["`decay_steps` must be an integer"],
        );
        assert_err(
            "mtp_depth = \"1\"",
            At::Value,
            &["`mtp_depth` must be an integer"],
        );
        assert_err(
            "recompute = true",
            At::Value,
            &["`recompute` must be a string", "a boolean"],
        );
        assert_err(
            "optimizer = [\"adamw\"]",
            At::Value,
            &["`optimizer` must be a string", "an array"],
        );
    }

    #[test]
    fn bad_names() {
        assert_err(
            "recipe = \"fp16\"",
            At::Value,
            &["`recipe` must be \"fp8\" or \"bf16\", not \"fp16\""],
        );
        assert_err(
            "recompute = \"some\"",
            At::Value,
            &["`recompute` must be \"recipe\", \"none\" or \"full\", not \"some\""],
        );
        assert_err(
            "optimizer = \"sgd\"",
            At::Value,
            &["`optimizer` must be \"adamw\"", "not \"sgd\""],
        );
        assert_err(
            "wgrad_source = \"bf16\"",
            At::Value,
            &["`wgrad_source` must be \"fp8\" or \"high\", not \"bf16\""],
        );
        assert_err(
            "act_grad_scaling = \"128x1\"",
            At::Value,
            &["`act_grad_scaling` must be \"1x128\" or \"128x128\", not \"128x1\""],
        );
        assert_err(
            "tensor_formats = \"e5m6\"",
            At::Value,
            &["`tensor_formats` must be \"recipe\" or \"policy\", not \"e5m6\""],
        );
    }

    #[test]
    fn impossible_values() {
        assert_err("lr = 0", At::Value, &["`lr` must be positive, not 0"]);
        assert_err("lr = -1e-3", At::Value, &["`lr` must be positive"]);
        assert_err("lr = inf", At::Value, &["`lr` must be finite"]);
        assert_err("lr = nan", At::Value, &["`lr` must be finite"]);
        assert_err(
            "lr = 1e-3\nmin_lr = 2e-3",
            At::Value,
            &["`min_lr` must be between 0 and `lr` (0.001), not 0.002"],
        );
        // min_lr is checked against the default lr when lr is absent.
        assert_err("min_lr = 1e-3", At::Value, &["`min_lr`", "(0.0003)"]);
        assert_err("min_lr = -1e-5", At::Value, &["`min_lr` must be between 0"]);
        assert_err(
            "warmup_steps = -1",
            At::Value,
            &["`warmup_steps` must be zero or positive"],
        );
        assert_err(
            "decay_steps = 0",
            At::Value,
            &["`decay_steps` must be positive, not 0"],
        );
        assert_err(
            "beta1 = 1",
            At::Value,
            &["`beta1` must be in [0, 1), not 1"],
        );
        assert_err("beta1 = -0.1", At::Value, &["`beta1` must be in [0, 1)"]);
        assert_err(
            "beta2 = 1.5",
            At::Value,
            &["`beta2` must be in [0, 1), not 1.5"],
        );
        assert_err("eps = 0", At::Value, &["`eps` must be positive, not 0"]);
        for key in [
            "weight_decay",
            "grad_clip",
            "bias_update_speed",
            "balance_loss_alpha",
            "mtp_lambda",
        ] {
            assert_err(
                &format!("{key} = -0.5"),
                At::Value,
                &[&format!("`{key}` must be zero or positive, not -0.5")],
            );
        }
        assert_err(
            "mtp_depth = -1",
            At::Value,
            &["`mtp_depth` must be zero or positive"],
        );
    }

    #[test]
    fn load_model_rejects_a_bad_train_table_too() {
        let tiny = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tiny-moe.toml"
        ));
        let src = format!("{tiny}\n[train]\nbeta2 = 1\n");
        let e = load_model(&src).unwrap_err();
        let line = src.lines().count();
        assert_eq!((e.line, e.col), (line, 9), "{e}");
        assert!(e.message.contains("`beta2`"), "{e}");
        let mlp = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/mlp.toml"));
        let src = format!("{mlp}\n[train]\nrate = 1\n");
        let e = load_model(&src).unwrap_err();
        assert_eq!((e.line, e.col), (src.lines().count(), 1), "{e}");
        assert!(e.message.contains("unknown key `rate` in [train]"), "{e}");
    }

    #[test]
    fn unknown_root_tables_list_train() {
        let tiny = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tiny-moe.toml"
        ));
        let e = load_model(&format!("{tiny}\n[training]\n")).unwrap_err();
        assert!(
            e.message.contains("`training`") && e.message.contains("train"),
            "{e}"
        );
        let mlp = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/mlp.toml"));
        let e = load_model(&format!("{mlp}\n[training]\n")).unwrap_err();
        assert!(
            e.message.contains("`training`") && e.message.contains("train"),
            "{e}"
        );
    }

    // --- the schedule ---

    fn schedule(warmup: u64, decay: Option<u64>) -> TrainConfig {
        TrainConfig {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: warmup,
            decay_steps: decay,
            ..TrainConfig::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15
    }

    #[test]
    fn warmup_is_linear_and_reaches_lr() {
        let c = schedule(10, None);
        assert!(close(c.lr_at(0, 100), 1e-4));
        assert!(close(c.lr_at(4, 100), 5e-4));
        assert!(close(c.lr_at(9, 100), 1e-3));
        for s in 1..10 {
            assert!(c.lr_at(s, 100) > c.lr_at(s - 1, 100));
        }
        // The first step after warmup is the peak.
        assert_eq!(c.lr_at(10, 100), 1e-3);
    }

    #[test]
    fn cosine_decays_monotonically_from_lr_to_min_lr() {
        let c = schedule(10, None);
        let total = 100;
        // Halfway through the decay: the mean of lr and min_lr.
        assert!(close(c.lr_at(10 + 45, total), 5.5e-4));
        for s in 11..total {
            assert!(c.lr_at(s, total) < c.lr_at(s - 1, total), "step {s}");
            assert!(c.lr_at(s, total) > c.min_lr, "step {s}");
        }
        assert_eq!(c.lr_at(total, total), c.min_lr);
        assert_eq!(c.lr_at(total + 1000, total), c.min_lr);
    }

    #[test]
    fn decay_steps_overrides_the_run_length() {
        let c = schedule(0, Some(10));
        assert_eq!(c.lr_at(0, 1000), 1e-3);
        assert!(close(c.lr_at(5, 1000), 5.5e-4));
        for s in 1..10 {
            assert!(c.lr_at(s, 1000) < c.lr_at(s - 1, 1000));
        }
        assert_eq!(c.lr_at(10, 1000), 1e-4);
        assert_eq!(c.lr_at(999, 1000), 1e-4);
    }

    #[test]
    fn degenerate_schedules() {
        // No warmup, no decay left: min_lr from the start.
        assert_eq!(schedule(0, None).lr_at(0, 0), 1e-4);
        // The run is all warmup.
        let c = schedule(10, None);
        assert!(close(c.lr_at(9, 5), 1e-3));
        assert_eq!(c.lr_at(10, 5), 1e-4);
        // Constant lr: min_lr == lr.
        let c = TrainConfig {
            min_lr: 1e-3,
            ..schedule(0, None)
        };
        for s in 0..20 {
            assert_eq!(c.lr_at(s, 20), 1e-3);
        }
    }
}
