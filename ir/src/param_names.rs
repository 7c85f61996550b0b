//! How parameters are named: Hugging Face names, an expert axis written `{e}`, and the block
//! scales of an FP8 weight beside it. The passes that create parameters and the runtime that
//! loads them both follow these rules, so they live here once.

/// Marks the expert axis of a stacked `[E, …]` parameter: `…experts.{e}.up_proj.weight` is
/// the checkpoint tensors `…experts.0.up_proj.weight`, `…experts.1.up_proj.weight`, ….
pub const EXPERT: &str = "{e}";

/// The name of an FP8 weight's block scales, as DeepSeek-V3's checkpoints name them
/// (`….weight` → `….weight_scale_inv`).
pub fn scale_name(weight: &str) -> String {
    match weight.strip_suffix(".weight") {
        Some(base) => format!("{base}.weight_scale_inv"),
        None => format!("{weight}_scale_inv"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_names_follow_hugging_face() {
        assert_eq!(
            scale_name("model.layers.0.mlp.up_proj.weight"),
            "model.layers.0.mlp.up_proj.weight_scale_inv"
        );
        assert_eq!(
            scale_name("model.layers.1.mlp.experts.{e}.up_proj.weight"),
            "model.layers.1.mlp.experts.{e}.up_proj.weight_scale_inv"
        );
        assert_eq!(scale_name("w"), "w_scale_inv");
    }
}
