//! The explicit form: `[[input]]`s and `[[op]]`s naming each other, in any order. Names are
//! resolved, the ops sorted topologically by their `inputs`, and each op built with the
//! parameters and attributes its keys describe (see `explicit_op.rs`).

use super::ModelError;
use super::explicit_op::{self, BASE_KEYS};
use super::precision::dtype_from_str;
use super::preset::{self, DEEPSEEK_KEYS, EXPLICIT_KEYS, LLAMA_KEYS};
use super::toml::{At, Spanned, Table};
use crate::shape::MAX_ELEMENTS;
use crate::{DType, Graph, GraphBuilder, OpKind, Role, Shape, TensorType};
use std::collections::{BTreeSet, HashMap};

const ROOT_KEYS: [&str; 5] = ["model", "input", "op", "precision", "train"];
const INPUT_KEYS: [&str; 3] = ["name", "dtype", "shape"];

/// One `[[op]]`, read but not yet built.
struct OpSpec<'a> {
    table: Table<'a>,
    name: Spanned<&'a str>,
    kind: OpKind,
    role: Role,
    inputs: Vec<Spanned<&'a str>>,
}

/// What a name refers to: a graph input, or an op (by index into the `[[op]]` list).
#[derive(Clone, Copy)]
enum Def {
    Input,
    Op(usize),
}

/// Builds the explicit graph described by the file's `[model]`, `[[input]]` and `[[op]]`s.
pub fn build(root: &Table, model: &Table, high: DType) -> Result<Graph, ModelError> {
    check_keys(root, model)?;
    let name = preset::name(model)?;
    let outputs = model.required("outputs", model.strs("outputs")?)?;
    if outputs.value.is_empty() {
        return Err(model.error(outputs.at, "`outputs` must name at least one value"));
    }
    let mut b = GraphBuilder::new(&name);
    let mut names: HashMap<String, (Def, At)> = HashMap::new();
    for t in root.tables("input", "[[input]]")? {
        let (name, ty) = read_input(&t)?;
        claim(&t, &mut names, name.value, name.at, Def::Input)?;
        b.input(name.value, ty)
            .map_err(|e| t.error(t.at(), e.to_string()))?;
    }
    let specs = root
        .tables("op", "[[op]]")?
        .into_iter()
        .map(read_op)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, op) in specs.iter().enumerate() {
        claim(&op.table, &mut names, op.name.value, op.name.at, Def::Op(i))?;
        // `r.indices` names moe_topk `r`'s second result; the builder names it the same way.
        for label in explicit_op::extra_results(op.kind) {
            let extra = format!("{}.{label}", op.name.value);
            claim(&op.table, &mut names, extra, op.name.at, Def::Op(i))?;
        }
    }
    let resolve = |t: &Table, n: &Spanned<&str>, what: &str| -> Result<Def, ModelError> {
        if let Some(&(def, _)) = names.get(n.value) {
            return Ok(def);
        }
        Err(t.error(
            n.at,
            format!(
                "unknown value `{}` in {what} (inputs and op results only; weights are created by their ops)",
                n.value
            ),
        ))
    };
    let mut deps = Vec::with_capacity(specs.len());
    for op in &specs {
        let mut d = Vec::new();
        for n in &op.inputs {
            if let Def::Op(j) = resolve(&op.table, n, "`inputs`")? {
                d.push(j);
            }
        }
        deps.push(d);
    }
    for (i, n) in outputs.value.iter().enumerate() {
        resolve(model, n, "`outputs`")?;
        // Outputs are written under their names, so one listed twice would collide.
        if outputs.value[..i].iter().any(|m| m.value == n.value) {
            return Err(model.error(n.at, format!("`{}` is listed twice in `outputs`", n.value)));
        }
    }
    for i in order(&specs, &deps)? {
        let op = &specs[i];
        let mut ins = Vec::with_capacity(op.inputs.len());
        for n in &op.inputs {
            // Every name resolved above and is built before its readers.
            let v = b.lookup(n.value).ok_or_else(|| {
                op.table
                    .error(n.at, format!("`{}` is not built yet", n.value))
            })?;
            // A cast converts between the kernels' floats only: an id is read by the ops that
            // index with it (embedding, moe routing), never converted.
            let from = b.graph().ty(v).dtype;
            if op.kind == OpKind::Cast && !from.is_kernel_float() {
                return Err(op.table.error(
                    n.at,
                    format!(
                        "cast `{}` reads `{}`, which is {from}: no GPU kernel casts from {from} \
                         (a cast converts between f32 and bf16)",
                        op.name.value, n.value
                    ),
                ));
            }
            ins.push(v);
        }
        explicit_op::build_op(
            &mut b,
            &op.table,
            op.kind,
            op.name.value,
            op.role,
            high,
            &ins,
        )?;
    }
    for n in &outputs.value {
        let v = b.lookup(n.value).ok_or_else(|| {
            model.error(n.at, format!("unknown value `{}` in `outputs`", n.value))
        })?;
        b.output(v);
    }
    Ok(b.finish())
}

/// Rejects keys of the preset form and unknown tables.
fn check_keys(root: &Table, model: &Table) -> Result<(), ModelError> {
    root.check_keys(&ROOT_KEYS)?;
    for (key, at) in model.keys() {
        if EXPLICIT_KEYS.contains(&key) {
            continue;
        }
        if DEEPSEEK_KEYS.contains(&key) || LLAMA_KEYS.contains(&key) {
            return Err(model.error(
                at,
                format!(
                    "`{key}` is a key of the preset models, which need `architecture` (\"deepseek\" or \"llama\")"
                ),
            ));
        }
        return Err(model.unknown_key(key, at, &["name", "outputs", "architecture"]));
    }
    Ok(())
}

fn duplicate(t: &Table, name: &str, at: At, first: At) -> ModelError {
    t.error(
        at,
        format!(
            "duplicate name `{name}` (first defined at {})",
            t.line_col(first)
        ),
    )
}

/// Records `name`, rejecting a second definition at its position.
fn claim(
    t: &Table,
    names: &mut HashMap<String, (Def, At)>,
    name: impl Into<String>,
    at: At,
    def: Def,
) -> Result<(), ModelError> {
    let name = name.into();
    if let Some(&(_, first)) = names.get(&name) {
        return Err(duplicate(t, &name, at, first));
    }
    names.insert(name, (def, at));
    Ok(())
}

fn nonempty_name<'a>(t: &Table<'a>) -> Result<Spanned<&'a str>, ModelError> {
    let name = t.required("name", t.str("name")?)?;
    if name.value.is_empty() {
        return Err(t.error(name.at, "`name` must not be empty"));
    }
    Ok(name)
}

fn read_input<'a>(t: &Table<'a>) -> Result<(Spanned<&'a str>, TensorType), ModelError> {
    t.check_keys(&INPUT_KEYS)?;
    let name = nonempty_name(t)?;
    let dtype_at = t.required("dtype", t.str("dtype")?)?;
    let dtype = dtype_from_str(dtype_at.value).ok_or_else(|| {
        t.error(
            dtype_at.at,
            format!("`dtype`: unknown dtype \"{}\"", dtype_at.value),
        )
    })?;
    // The compiled model reads each input as it is given: FP8 codes come only from the FP8
    // passes (with their scales), and no GPU kernel takes f16.
    if dtype.is_float() && !dtype.is_kernel_float() {
        return Err(t.error(
            dtype_at.at,
            format!(
                "`dtype` of input `{}` must be bf16 or f32 (or an integer dtype for ids), not \
                 \"{}\": the GPU kernels take no {dtype} input",
                name.value, dtype_at.value
            ),
        ));
    }
    let shape = t.required("shape", t.ints("shape")?)?;
    let mut dims = Vec::with_capacity(shape.value.len());
    for d in &shape.value {
        if d.value <= 0 {
            return Err(t.error(
                d.at,
                format!("`shape` sizes must be positive, not {}", d.value),
            ));
        }
        dims.push(d.value as u64);
    }
    let count = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)));
    if count.is_none_or(|c| c > u128::from(MAX_ELEMENTS)) {
        let count = count.map_or("more than 2^128".to_string(), |c| c.to_string());
        return Err(t.error(
            shape.at,
            format!(
                "`shape` {} has {count} elements, more than 2^48",
                Shape::new(dims)
            ),
        ));
    }
    Ok((name, TensorType::new(dtype, dims)))
}

fn read_op(t: Table) -> Result<OpSpec, ModelError> {
    let name = nonempty_name(&t)?;
    let t = t.named(format!("[[op]] `{}`", name.value));
    let kind = t.required("kind", t.str("kind")?)?;
    let kind = kind.value.parse::<OpKind>().map_err(|e| {
        let all: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
        t.error(
            kind.at,
            format!("`kind`: {e} (expected one of {})", all.join(", ")),
        )
    })?;
    let mut allowed: Vec<&str> = BASE_KEYS.to_vec();
    allowed.extend(kind.attr_specs().iter().map(|s| s.name));
    allowed.extend(explicit_op::param_keys(kind));
    t.check_keys(&allowed)?;
    let role = match t.str("role")? {
        Some(r) => r
            .value
            .parse::<Role>()
            .map_err(|e| t.error(r.at, format!("`role`: {e}")))?,
        None => kind.default_role(),
    };
    let inputs = t.required("inputs", t.strs("inputs")?)?;
    if let Some((n, what)) = explicit_op::fixed_inputs(kind)
        && inputs.value.len() != n
    {
        return Err(t.error(
            inputs.at,
            format!(
                "`inputs` of a {kind} op must name {n} value{}: {what}; got {}",
                if n == 1 { "" } else { "s" },
                inputs.value.len()
            ),
        ));
    }
    Ok(OpSpec {
        table: t,
        name,
        kind,
        role,
        inputs: inputs.value,
    })
}

/// The ops in an order where each comes after the ops it reads: file order where possible
/// (Kahn's algorithm, always taking the earliest ready op), else a cycle error.
fn order(specs: &[OpSpec], deps: &[Vec<usize>]) -> Result<Vec<usize>, ModelError> {
    let mut users = vec![Vec::new(); specs.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            users[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..specs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut out = Vec::with_capacity(specs.len());
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for &u in &users[i] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if out.len() == specs.len() {
        return Ok(out);
    }
    Err(cycle_error(specs, deps, &waiting))
}

/// Finds a cycle among the ops still waiting and names its ops, at the earliest one.
fn cycle_error(specs: &[OpSpec], deps: &[Vec<usize>], waiting: &[usize]) -> ModelError {
    // Every waiting op reads some waiting op, so walking reads from one must revisit an op.
    let start = (0..specs.len()).find(|&i| waiting[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut seen = HashMap::from([(start, 0usize)]);
    let mut cur = start;
    let cycle = loop {
        let Some(&next) = deps[cur].iter().find(|&&j| waiting[j] > 0) else {
            break path.clone();
        };
        if let Some(&pos) = seen.get(&next) {
            break path[pos..].to_vec();
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    };
    // The walk follows reads backwards; list the cycle in data-flow order from its earliest op.
    let mut cycle: Vec<usize> = cycle.into_iter().rev().collect();
    let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
    cycle.rotate_left(first);
    let op = &specs[cycle[0]];
    if cycle.len() == 1 {
        return op.table.error(
            op.table.at(),
            format!("op `{}` reads its own result: a cycle", op.name.value),
        );
    }
    // A long cycle (thousands of ops) is named by its first and last few ops and its length.
    let names: Vec<&str> = cycle.iter().map(|&i| specs[i].name.value).collect();
    let chain = if names.len() <= 2 * CYCLE_SHOWN {
        names.join(" -> ")
    } else {
        format!(
            "{} -> … ({} more ops) … -> {}",
            names[..CYCLE_SHOWN].join(" -> "),
            names.len() - 2 * CYCLE_SHOWN,
            names[names.len() - CYCLE_SHOWN..].join(" -> ")
        )
    };
    op.table.error(
        op.table.at(),
        format!(
            "{} ops form a cycle through their `inputs`: {chain} -> {}",
            names.len(),
            op.name.value
        ),
    )
}

/// How many ops a cycle error names at each end of a long cycle.
const CYCLE_SHOWN: usize = 4;
