//! One `[[op]]` of the explicit form expanded into builder calls: its parameters created from
//! keys (`out_features`, `vocab_size`, …) and its IR attributes read from keys of the same name.

use super::ModelError;
use super::precision::dtype_from_str;
use super::toml::{At, Spanned, Table};
use crate::rope_scaling::{RopeStyle, attr};
use crate::{Attr, AttrType, Attrs, DType, GraphBuilder, OpKind, Role, TensorType, ValueId};

/// The keys every op takes.
pub const BASE_KEYS: [&str; 4] = ["name", "kind", "inputs", "role"];

/// Keys that create an op's parameters rather than set an IR attribute.
pub fn param_keys(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Linear => &["out_features", "bias"],
        OpKind::Embedding => &["vocab_size", "dim"],
        OpKind::GroupedLinear => &["n_experts", "out_features"],
        OpKind::MoeTopk => &["bias"],
        _ => &[],
    }
}

/// Labels of results after the first, referable in `inputs` as `<op name>.<label>`.
pub fn extra_results(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::MoeTopk => &["indices"],
        OpKind::Quantize => &["scales"],
        _ => &[],
    }
}

/// For kinds whose weights come from keys: how many `inputs` they take, and what those are.
pub fn fixed_inputs(kind: OpKind) -> Option<(usize, &'static str)> {
    match kind {
        OpKind::Linear | OpKind::RmsNorm => {
            Some((1, "its input (the weight comes from the op's keys)"))
        }
        OpKind::Embedding => Some((
            1,
            "the token ids (the table comes from `vocab_size` and `dim`)",
        )),
        OpKind::GroupedLinear => Some((2, "the input and the expert indices")),
        OpKind::MoeTopk => Some((1, "the gate logits (the bias comes from `bias = true`)")),
        _ => None,
    }
}

/// The allowed words of string attributes, checked here so the error points at the value.
fn vocabulary(kind: OpKind, attr: &str) -> Option<&'static [&'static str]> {
    match (kind, attr) {
        (OpKind::Rope, attr::STYLE) => Some(&RopeStyle::NAMES),
        (OpKind::Rope, attr::SCALING) => Some(&attr::SCALINGS),
        (OpKind::MoeTopk, "score_func") => Some(&["sigmoid", "softmax"]),
        (OpKind::Quantize, "scale_format") => Some(&["f32", "ue8m0"]),
        (
            OpKind::Linear | OpKind::GroupedLinear,
            crate::infer::X_SCALE_FORMAT
            | crate::infer::W_SCALE_FORMAT
            | crate::infer::DY_SCALE_FORMAT,
        ) => Some(&["f32", "ue8m0"]),
        _ => None,
    }
}

/// The `eps` an rms_norm gets when the op names none.
const DEFAULT_EPS: f64 = 1e-6;

/// Reads the IR attributes of `kind` from the op's keys of the same names.
pub fn read_attrs(t: &Table, kind: OpKind) -> Result<Attrs, ModelError> {
    let mut attrs = Attrs::new();
    for spec in kind.attr_specs() {
        let key = spec.name;
        let value = match spec.ty {
            AttrType::Int => t.int(key)?.map(|v| Attr::Int(v.value)),
            AttrType::Float => t.float(key)?.map(|v| Attr::Float(v.value)),
            AttrType::Bool => t.bool(key)?.map(|v| Attr::Bool(v.value)),
            AttrType::Str => match t.str(key)? {
                Some(s) => Some(Attr::Str(word(t, kind, key, s)?)),
                None => None,
            },
            AttrType::DType => match t.str(key)? {
                Some(s) => {
                    let dtype = dtype_from_str(s.value).ok_or_else(|| {
                        t.error(s.at, format!("`{key}`: unknown dtype \"{}\"", s.value))
                    })?;
                    // A cast's result is a value the next kernel reads: f32 or bf16 (FP8
                    // codes are `quantize`'s, with their scales).
                    if kind == OpKind::Cast && !dtype.is_kernel_float() {
                        return Err(t.error(
                            s.at,
                            format!(
                                "`{key}` of a cast must be bf16 or f32, not \"{}\": no GPU \
                                 kernel casts to {dtype}",
                                s.value
                            ),
                        ));
                    }
                    Some(Attr::DType(dtype))
                }
                None => None,
            },
            AttrType::Ints => t
                .ints(key)?
                .map(|v| Attr::Ints(v.value.iter().map(|i| i.value).collect())),
        };
        match value {
            Some(v) => attrs.set(key, v),
            None if kind == OpKind::RmsNorm && key == "eps" => {
                attrs.set(key, Attr::Float(DEFAULT_EPS))
            }
            None if spec.required => return Err(t.missing(key)),
            None => {}
        }
    }
    Ok(attrs)
}

fn word(t: &Table, kind: OpKind, key: &str, s: Spanned<&str>) -> Result<String, ModelError> {
    match vocabulary(kind, key) {
        Some(words) if !words.contains(&s.value) => Err(t.error(
            s.at,
            format!(
                "`{key}` of {kind} must be one of {}, not \"{}\"",
                words.join(", "),
                s.value
            ),
        )),
        _ => Ok(s.value.to_string()),
    }
}

/// Adds parameter `name` of op `op`, blaming the key at `at` when its shape is too large.
fn param(
    b: &mut GraphBuilder,
    t: &Table,
    op: &str,
    (key, at): (&str, At),
    name: &str,
    ty: TensorType,
) -> Result<ValueId, ModelError> {
    if ty.shape.checked_numel().is_none() {
        return Err(t.error(
            at,
            format!("`{key}` makes parameter `{name}` {ty} of op `{op}` larger than 2^48 elements"),
        ));
    }
    b.param(name, ty).map_err(|e| {
        t.error(
            t.at(),
            format!("op `{op}`: cannot create parameter `{name}`: {}", e.message),
        )
    })
}

fn req_size(t: &Table, key: &str) -> Result<Spanned<u64>, ModelError> {
    t.required(key, t.size(key)?)
}

/// The key of the two that is larger, to blame for an oversized weight.
fn larger(a: (&'static str, Spanned<u64>), b: (&'static str, Spanned<u64>)) -> (&'static str, At) {
    let big = if b.1.value > a.1.value { b } else { a };
    (big.0, big.1.at)
}

/// Completes the operands of op `name` with the parameters its keys describe.
pub fn with_params(
    b: &mut GraphBuilder,
    t: &Table,
    kind: OpKind,
    name: &str,
    high: DType,
    inputs: &[ValueId],
) -> Result<Vec<ValueId>, ModelError> {
    let mut ops = inputs.to_vec();
    // Kinds with weights take a fixed count of inputs (checked when the op was read); the
    // first is the activation whose last axis sizes the weight.
    let Some(&x) = inputs.first() else {
        return Ok(ops);
    };
    let k = b.graph().ty(x).shape.last();
    let mut param = |blame, pname: String, ty| param(b, t, name, blame, &pname, ty);
    match kind {
        OpKind::Linear => {
            let out = req_size(t, "out_features")?;
            let blame = ("out_features", out.at);
            let ty = TensorType::new(high, [out.value, k]);
            ops.push(param(blame, format!("{name}.weight"), ty)?);
            if t.bool("bias")?.is_some_and(|v| v.value) {
                let ty = TensorType::new(high, [out.value]);
                ops.push(param(blame, format!("{name}.bias"), ty)?);
            }
        }
        OpKind::RmsNorm => {
            let ty = TensorType::new(high, [k]);
            ops.push(param(("inputs", t.at()), format!("{name}.weight"), ty)?);
        }
        OpKind::Embedding => {
            let (v, d) = (req_size(t, "vocab_size")?, req_size(t, "dim")?);
            let blame = larger(("vocab_size", v), ("dim", d));
            let ty = TensorType::new(high, [v.value, d.value]);
            ops.push(param(blame, format!("{name}.weight"), ty)?);
        }
        OpKind::GroupedLinear => {
            let (e, out) = (req_size(t, "n_experts")?, req_size(t, "out_features")?);
            let blame = larger(("n_experts", e), ("out_features", out));
            let ty = TensorType::new(high, [e.value, out.value, k]);
            // The IR's operand order is x, weight, indices.
            ops.insert(1, param(blame, format!("{name}.{{e}}.weight"), ty)?);
        }
        OpKind::MoeTopk => {
            if let Some(bias) = t.bool("bias")?
                && bias.value
            {
                let ty = TensorType::new(DType::F32, [k]);
                let pname = format!("{name}.e_score_correction_bias");
                ops.push(param(("bias", bias.at), pname, ty)?);
            }
        }
        _ => {}
    }
    Ok(ops)
}

/// Builds op `name` from its `[[op]]` table `t`; builder errors point at the table.
pub fn build_op(
    b: &mut GraphBuilder,
    t: &Table,
    kind: OpKind,
    name: &str,
    role: Role,
    high: DType,
    inputs: &[ValueId],
) -> Result<(), ModelError> {
    let attrs = read_attrs(t, kind)?;
    let operands = with_params(b, t, kind, name, high, inputs)?;
    b.op_multi(kind, name, role, &operands, attrs, extra_results(kind))
        .map_err(|e| t.error(t.at(), e.to_string()))?;
    Ok(())
}
