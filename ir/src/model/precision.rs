//! `[precision]` → [`PrecisionPolicy`]: the FP8 recipe's knobs (DESIGN.md §3) and overrides.

use super::ModelError;
use super::toml::{Spanned, Table};
use crate::policy::keys;
use crate::{DType, PrecisionOverride, PrecisionPolicy, Role, ScaleFormat};

/// `[precision]`'s keys: the policy's, then the overrides' table.
const KEYS: [&str; 8] = [
    keys::KEEP_HIGH,
    keys::HIGH,
    keys::FP8_FORMAT,
    keys::ACT_TILE,
    keys::WEIGHT_BLOCK,
    keys::PROMOTE_INTERVAL,
    keys::SCALE_FORMAT,
    "override",
];

const OVERRIDE_KEYS: [&str; 2] = ["match", "dtype"];

/// Parses a dtype as model.toml spells it: the IR names, plus `e4m3`/`e5m2` for the FP8 formats.
pub fn dtype_from_str(s: &str) -> Option<DType> {
    match s {
        "e4m3" => Some(DType::F8E4M3),
        "e5m2" => Some(DType::F8E5M2),
        _ => s.parse().ok(),
    }
}

/// Reads `[precision]` (every key optional; absent keys keep their defaults).
pub fn parse(t: &Table) -> Result<PrecisionPolicy, ModelError> {
    t.check_keys(&KEYS)?;
    let mut p = PrecisionPolicy::default();
    if let Some(list) = t.strs(keys::KEEP_HIGH)? {
        p.keep_high = list
            .value
            .iter()
            .map(|r| {
                r.value
                    .parse::<Role>()
                    .map_err(|e| t.error(r.at, format!("`keep_high`: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(s) = t.str(keys::HIGH)? {
        // f16 is a high dtype of the IR (and of the CPU reference), but no GPU kernel takes it.
        p.high = dtype_in(t, keys::HIGH, s, "bf16 or f32", DType::is_kernel_float)?;
    }
    if let Some(s) = t.str(keys::FP8_FORMAT)? {
        p.fp8_format = dtype_in(t, keys::FP8_FORMAT, s, "e4m3 or e5m2", DType::is_fp8)?;
    }
    if let Some(v) = u32_key(t, keys::ACT_TILE)? {
        p.act_tile = v;
    }
    if let Some(v) = u32_key(t, keys::WEIGHT_BLOCK)? {
        p.weight_block = v;
    }
    if let Some(v) = u32_key(t, keys::PROMOTE_INTERVAL)? {
        p.promote_interval = v;
    }
    if let Some(s) = t.str(keys::SCALE_FORMAT)? {
        p.scale_format = ScaleFormat::parse(s.value).ok_or_else(|| {
            t.error(
                s.at,
                format!("`scale_format` must be f32 or ue8m0, not \"{}\"", s.value),
            )
        })?;
    }
    for o in t.tables("override", "[[precision.override]]")? {
        p.overrides.push(parse_override(&o)?);
    }
    // The policy's own invariants (tile, block and promotion compatibility) live in one place;
    // its error names the field, which is the key to point at.
    p.validate().map_err(|e| {
        let at = t.value_at(e.field).unwrap_or(t.at());
        t.error(at, e.message)
    })?;
    Ok(p)
}

fn parse_override(o: &Table) -> Result<PrecisionOverride, ModelError> {
    o.check_keys(&OVERRIDE_KEYS)?;
    let pattern = o.required("match", o.str("match")?)?;
    let dtype = o.required("dtype", o.str("dtype")?)?;
    let dtype = dtype_in(o, "dtype", dtype, "bf16, f32, e4m3 or e5m2", |d| {
        d.is_kernel_float() || d.is_fp8()
    })?;
    Ok(PrecisionOverride {
        pattern: pattern.value.to_string(),
        dtype,
    })
}

/// The dtype `s` names, which `ok` must accept (`allowed` says which ones it does).
fn dtype_in(
    t: &Table,
    key: &str,
    s: Spanned<&str>,
    allowed: &str,
    ok: fn(DType) -> bool,
) -> Result<DType, ModelError> {
    match dtype_from_str(s.value) {
        Some(d) if ok(d) => Ok(d),
        _ => Err(t.error(
            s.at,
            format!("`{key}` must be {allowed}, not \"{}\"", s.value),
        )),
    }
}

fn u32_key(t: &Table, key: &str) -> Result<Option<u32>, ModelError> {
    let Some(v) = t.size(key)? else {
        return Ok(None);
    };
    u32::try_from(v.value)
        .map(Some)
        .map_err(|_| t.error(v.at, format!("`{key}` = {} is too large", v.value)))
}
