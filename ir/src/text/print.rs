//! Prints a graph in the text format: a header, then one line per input, parameter, op and
//! output, in graph order. The grammar is documented in `text/mod.rs`.

use crate::policy::keys;
use crate::{Graph, Op, ValueId};
use std::fmt::Write;

/// True when `name` can be printed without quotes.
pub fn is_bare_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '{' | '}' | '/'))
}

fn push_name(out: &mut String, sigil: char, name: &str) {
    out.push(sigil);
    if is_bare_name(name) {
        out.push_str(name);
    } else {
        let _ = write!(out, "{name:?}");
    }
}

/// Which values are parameters, indexed by value: references print `@` for them.
struct ParamSet(Vec<bool>);

impl ParamSet {
    fn of(g: &Graph) -> Self {
        let mut is_param = vec![false; g.values.len()];
        for &p in &g.params {
            is_param[p.index()] = true;
        }
        ParamSet(is_param)
    }
}

fn push_ref(out: &mut String, g: &Graph, params: &ParamSet, v: ValueId) {
    let sigil = if params.0[v.index()] { '@' } else { '%' };
    push_name(out, sigil, g.name(v));
}

/// Prints `g` as text; `parse(&print(g))` gives back an equal graph.
pub fn print(g: &Graph) -> String {
    let mut out = String::with_capacity(64 * (g.ops.len() + g.params.len() + 8));
    let _ = writeln!(out, "graph {:?}", g.name);
    let p = &g.policy;
    let keep: Vec<_> = p.keep_high.iter().map(|r| r.name()).collect();
    let fields = [
        (keys::KEEP_HIGH, format!("[{}]", keep.join(", "))),
        (keys::HIGH, p.high.to_string()),
        (keys::FP8_FORMAT, p.fp8_format.to_string()),
        (keys::ACT_TILE, p.act_tile.to_string()),
        (keys::WEIGHT_BLOCK, p.weight_block.to_string()),
        (keys::PROMOTE_INTERVAL, p.promote_interval.to_string()),
        (keys::SCALE_FORMAT, p.scale_format.to_string()),
    ];
    out.push_str("policy");
    for (key, value) in fields {
        let _ = write!(out, " {key}={value}");
    }
    out.push('\n');
    for o in &p.overrides {
        let _ = writeln!(out, "override {:?} {}", o.pattern, o.dtype);
    }
    for &v in &g.inputs {
        out.push_str("input ");
        push_name(&mut out, '%', g.name(v));
        let _ = writeln!(out, ": {}", g.ty(v));
    }
    for &v in &g.params {
        out.push_str("param ");
        push_name(&mut out, '@', g.name(v));
        let _ = writeln!(out, ": {}", g.ty(v));
    }
    let params = ParamSet::of(g);
    for op in &g.ops {
        write_op(&mut out, g, &params, op);
        out.push('\n');
    }
    for &v in &g.outputs {
        out.push_str("output ");
        push_ref(&mut out, g, &params, v);
        out.push('\n');
    }
    out
}

/// Prints one op line (without the newline).
pub fn print_op(out: &mut String, g: &Graph, op: &Op) {
    write_op(out, g, &ParamSet::of(g), op);
}

fn write_op(out: &mut String, g: &Graph, params: &ParamSet, op: &Op) {
    for (i, &r) in op.results.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_name(out, '%', g.name(r));
        let _ = write!(out, ": {}", g.ty(r));
    }
    let _ = write!(out, " = {}(", op.kind);
    for (i, &v) in op.operands.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_ref(out, g, params, v);
    }
    out.push(')');
    if !op.attrs.is_empty() {
        out.push_str(" {");
        for (i, (name, value)) in op.attrs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{name} = {value}");
        }
        out.push('}');
    }
    let _ = write!(out, " role={}", op.role);
    if let Some(p) = op.precision {
        let _ = write!(out, " compute={}", p.compute);
        if let Some(acc) = p.accumulate {
            let _ = write!(out, " accumulate={acc}");
        }
    }
}
