//! `quantization_config` of an FP8 checkpoint (DeepSeek-V3's layout) → `[precision]`.
//!
//! The checkpoint's block size and FP8 format become the policy's, so its `weight_scale_inv`
//! tensors fit the compiled graph as they are. Only the recipe dsc implements is accepted:
//! FP8 weights in square blocks, activations quantized dynamically.

use super::ImportError;
use super::config::Object;
use super::emit::{Toml, TomlValue};
use crate::policy::{DEFAULT_ACT_TILE, keys};

/// Reads `quantization_config`, if present, into a `[precision]` table.
pub fn convert(root: &Object, toml: &mut Toml) -> Result<Vec<String>, ImportError> {
    let Some(q) = root.object("quantization_config")? else {
        return Ok(Vec::new());
    };
    let method = q
        .str("quant_method")?
        .ok_or_else(|| q.missing("quant_method"))?;
    if method != "fp8" {
        return Err(q.unsupported(
            "quant_method",
            "dsc reads FP8 checkpoints in DeepSeek-V3's layout (\"fp8\")",
        ));
    }
    let fmt = match q.str("fmt")? {
        None | Some("e4m3") => "e4m3",
        Some("e5m2") => "e5m2",
        Some(_) => return Err(q.unsupported("fmt", "the FP8 formats are \"e4m3\" and \"e5m2\"")),
    };
    q.require_value(
        "activation_scheme",
        &serde_json::json!("dynamic"),
        "dsc quantizes activations per 1x128 tile at run time (\"dynamic\")",
    )?;
    let mut entries = vec![(keys::FP8_FORMAT, TomlValue::Str(fmt.into()))];
    if let Some(v) = q.get("weight_block_size") {
        let block = v
            .as_array()
            .filter(|a| a.len() == 2 && a[0] == a[1])
            .and_then(|a| a[0].as_u64());
        match block {
            Some(b) if b > 0 && b.is_multiple_of(u64::from(DEFAULT_ACT_TILE)) => {
                entries.push((keys::WEIGHT_BLOCK, TomlValue::Int(b)))
            }
            _ => {
                return Err(q.unsupported(
                    "weight_block_size",
                    "dsc's weight blocks are square, a positive multiple of the 128-wide \
                     activation tile",
                ));
            }
        }
    }
    match q.str("scale_fmt")? {
        None => {}
        Some("ue8m0") => entries.push((keys::SCALE_FORMAT, TomlValue::Str("ue8m0".into()))),
        Some(_) => {
            return Err(q.unsupported("scale_fmt", "the scale formats are f32 and \"ue8m0\""));
        }
    }
    q.finish()?;
    toml.table("precision", &entries);
    Ok(vec![])
}
