//! The rewrite rules of `fuse`, apart from the engine (`mod.rs`) and the cost model
//! (`cost.rs`). Each rule goes one way, from kernels to a fused kernel or from a redundant
//! term to a simpler one, and none states commutativity or associativity: the e-graph only
//! ever grows by fused alternatives, and extraction picks by cost.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `fp8-gemm` | `promote(fp8_partials(get0 q, w), get1 q, w_s)` | `fp8_gemm(get0 q, get1 q, w, w_s)` |
//! | `fp8-gemm-grouped` | the same with expert indices `i` on both | `fp8_gemm(…, i)` |
//! | `rms-norm-quant` | `quantize(rms_norm(x, w))`, 1×T tiles, the norm stores in `x`'s dtype | `rms_norm_quant(x, w)` |
//! | `rms-norm-quant-reshape` | `quantize(reshape(rms_norm(x, w)))`, last dim kept | `reshape`s of `rms_norm_quant(x, w)`'s codes and scales |
//! | `swiglu-quant` | `quantize(swiglu(g, u))`, 1×T tiles, the swiglu stores in `g`'s dtype | `swiglu_quant(g, u)` |
//! | `cast-chain` | `cast(cast(x){a}){b}`, `a` holds `x` and `b` exactly | `cast(x){b}` |
//! | `cast-noop` | `cast(x){d}`, `x` already `d` | `x` |
//!
//! Sharing one quantize among every GEMM that reads the same activation needs no rule: a
//! quantize's signature leaves out the role, so identical quantizes hash-cons to one node.
//! Routed experts stay grouped because no rule splits a grouped op.
//!
//! Every new op is built through `add_op`, which infers its result types with the IR's own
//! rules; an op that would not verify is never added. A fused op takes the role of the op it
//! is built around (the GEMM's, the norm's, the activation's) and the precision DESIGN.md §5
//! gives it.

use super::lang::{
    FuseAnalysis, FuseGraph, NameHint, Node, OpSpec, Sig, add_get, add_op, sig, tensor,
};
use dsc_ir::policy::keys;
use dsc_ir::{Attr, Attrs, DType, OpKind, Precision};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, SearchMatches, Subst, Symbol, Var};
use rustc_hash::FxHashSet;
use std::sync::Mutex;

/// Every rule of the pass.
pub fn rules() -> Vec<Rewrite<Node, FuseAnalysis>> {
    vec![
        rule(
            "fp8-gemm",
            "(promote ?ps (fp8_partials ?fs (get 0 ?q) ?w) (get 1 ?q) ?ws)",
            FuseGemm::new(false),
        ),
        rule(
            "fp8-gemm-grouped",
            "(promote ?ps (fp8_partials ?fs (get 0 ?q) ?w ?i) (get 1 ?q) ?ws ?i)",
            FuseGemm::new(true),
        ),
        rule(
            "rms-norm-quant",
            "(quantize ?qs (rms_norm ?ns ?x ?w))",
            FuseNormQuant::new(false),
        ),
        rule(
            "rms-norm-quant-reshape",
            "(quantize ?qs (reshape ?rs (rms_norm ?ns ?x ?w)))",
            FuseNormQuant::new(true),
        ),
        rule(
            "swiglu-quant",
            "(quantize ?qs (swiglu ?ss ?g ?u))",
            FuseSwigluQuant {
                qs: v("?qs"),
                ss: v("?ss"),
                g: v("?g"),
                u: v("?u"),
            },
        ),
        rule(
            "cast-chain",
            "(cast ?os (cast ?is ?x))",
            CastChain {
                outer: v("?os"),
                inner: v("?is"),
                x: v("?x"),
            },
        ),
        rule(
            "cast-noop",
            "(cast ?s ?x)",
            CastNoop {
                cast: v("?s"),
                x: v("?x"),
            },
        ),
    ]
}

fn rule<A>(name: &str, pattern: &str, applier: A) -> Rewrite<Node, FuseAnalysis>
where
    A: Apply + Send + Sync + 'static,
{
    let searcher: Pattern<Node> = pattern.parse().expect("rule patterns parse");
    let applier = Once {
        applier,
        done: Mutex::default(),
    };
    Rewrite::new(name, searcher, applier).expect("rule variables are bound")
}

/// The pattern variable `?name`.
fn v(name: &str) -> Var {
    name.parse().expect("a variable name")
}

/// A rule's right-hand side: adds the fused form of a match and unions it in; returns the
/// classes that changed.
trait Apply {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id>;
}

/// Applies each match once. egg searches the whole e-graph every round and finds the matches
/// of earlier rounds again; their fused forms are in already (an applier's result depends on
/// the matched classes alone), so they are skipped rather than rebuilt.
struct Once<A> {
    applier: A,
    done: Mutex<FxHashSet<(Id, Subst)>>,
}

impl<A: Apply> Applier<Node, FuseAnalysis> for Once<A> {
    fn apply_matches(
        &self,
        egraph: &mut FuseGraph,
        matches: &[SearchMatches<Node>],
        _rule: Symbol,
    ) -> Vec<Id> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for m in matches {
            for subst in &m.substs {
                if done.insert((m.eclass, subst.clone())) {
                    changed.extend(self.applier.apply(egraph, m.eclass, subst));
                }
            }
        }
        changed
    }

    fn apply_one(
        &self,
        egraph: &mut FuseGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Node>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        self.applier.apply(egraph, eclass, subst)
    }
}

/// Unions `a` and `b`; the changed class, if any, for the runner's bookkeeping.
fn union(egraph: &mut FuseGraph, a: Id, b: Id) -> Vec<Id> {
    if egraph.union(a, b) { vec![a] } else { vec![] }
}

/// The activation tile `T` of a 1×T quantize, if it is one.
fn row_tile(attrs: &Attrs) -> Option<i64> {
    match attrs.ints("block") {
        Some(&[1, t]) => Some(t),
        _ => None,
    }
}

/// The attributes a norm or activation fused with `quantize` takes from it:
/// `dtype`, `act_tile`, `scale_format`.
fn quant_attrs(quantize: &Attrs) -> Option<Attrs> {
    let tile = row_tile(quantize)?;
    Some(
        Attrs::new()
            .with("dtype", quantize.get("dtype")?.clone())
            .with(keys::ACT_TILE, Attr::Int(tile))
            .with(
                keys::SCALE_FORMAT,
                quantize.get(keys::SCALE_FORMAT)?.clone(),
            ),
    )
}

/// True when the op of signature `op` stores its result in the dtype of its input `x`.
///
/// A fused `rms_norm_quant` or `swiglu_quant` rounds the activation to its input's dtype
/// before quantizing it, which is what the unfused op stored only when it stores in that
/// dtype (assign-precision makes it so: both read and write the high dtype).
fn stores_as_input(egraph: &FuseGraph, op: &Sig, x: Id) -> bool {
    tensor(egraph, x).is_some_and(|t| Some(t.dtype) == op.types.first().map(|r| r.dtype))
}

/// `promote(fp8_partials(x_q, w_q[, idx]), x_s, w_s[, idx])` → `fp8_gemm(x_q, x_s, w_q, w_s[, idx])`.
struct FuseGemm {
    promote: Var,
    partials: Var,
    quantized: Var,
    w: Var,
    w_scale: Var,
    /// The expert indices of a grouped GEMM.
    indices: Option<Var>,
}

impl FuseGemm {
    fn new(grouped: bool) -> Self {
        FuseGemm {
            promote: v("?ps"),
            partials: v("?fs"),
            quantized: v("?q"),
            w: v("?w"),
            w_scale: v("?ws"),
            indices: grouped.then(|| v("?i")),
        }
    }
}

impl Apply for FuseGemm {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id> {
        let partials = sig(egraph, subst[self.partials]);
        let (interval, format) = (
            partials.attrs.int("interval"),
            partials.precision.map(|p| p.compute),
        );
        let Some(format) = format.filter(|d| d.is_fp8()) else {
            return vec![];
        };
        // Promotion must be at the partial sums' interval, or the fused kernel would group K
        // differently (the verifier's shape rules already imply it).
        let promote = sig(egraph, subst[self.promote]);
        if interval != promote.attrs.int(keys::PROMOTE_INTERVAL) {
            return vec![];
        }
        let spec = OpSpec {
            kind: OpKind::Fp8Gemm,
            attrs: promote.attrs.clone(),
            role: promote.role,
            precision: Some(Precision {
                compute: format,
                accumulate: Some(DType::F32),
            }),
            pin: promote.pin,
            storage: Some(promote.types[0].dtype),
        };
        let q = subst[self.quantized];
        let mut operands = vec![
            add_get(egraph, q, 0),
            add_get(egraph, q, 1),
            subst[self.w],
            subst[self.w_scale],
        ];
        operands.extend(self.indices.map(|i| subst[i]));
        match add_op(egraph, spec, &operands) {
            Ok(gemm) => union(egraph, eclass, gemm),
            Err(_) => vec![],
        }
    }
}

/// `quantize(rms_norm(x, w))` → `rms_norm_quant(x, w)`; with a `reshape` in between that
/// keeps the last dim, `rms_norm_quant` on `x` and reshapes of its codes and scales.
struct FuseNormQuant {
    quantize: Var,
    norm: Var,
    x: Var,
    w: Var,
    /// The reshape between norm and quantize, if the pattern has one.
    reshape: Option<Var>,
}

impl FuseNormQuant {
    fn new(reshape: bool) -> Self {
        FuseNormQuant {
            quantize: v("?qs"),
            norm: v("?ns"),
            x: v("?x"),
            w: v("?w"),
            reshape: reshape.then(|| v("?rs")),
        }
    }
}

impl Apply for FuseNormQuant {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id> {
        let quantize = sig(egraph, subst[self.quantize]);
        let pin = quantize.pin;
        let Some(mut attrs) = quant_attrs(&quantize.attrs) else {
            return vec![];
        };
        let norm = sig(egraph, subst[self.norm]);
        let (x, w) = (subst[self.x], subst[self.w]);
        if !stores_as_input(egraph, norm, x) {
            return vec![];
        }
        let Some(eps) = norm.attrs.get("eps") else {
            return vec![];
        };
        attrs.set("eps", eps.clone());
        // A norm reading a column window of its x (fold-slices) reads the same one quantized.
        if let Some(cols) = norm.attrs.get(dsc_ir::infer::X_COLS) {
            attrs.set(dsc_ir::infer::X_COLS, cols.clone());
        }
        let spec = OpSpec {
            kind: OpKind::RmsNormQuant,
            attrs,
            role: norm.role,
            precision: Some(Precision {
                compute: DType::F32,
                accumulate: Some(DType::F32),
            }),
            pin,
            storage: None,
        };
        let Some(reshape) = self.reshape else {
            return match add_op(egraph, spec, &[x, w]) {
                Ok(fused) => union(egraph, eclass, fused),
                Err(_) => vec![],
            };
        };

        // quantize(reshape(rms_norm(x))): the reshape must keep the normalized axis, so that
        // the 1×T tiles and the per-row scales are the same before and after it.
        let reshape = sig(egraph, subst[reshape]);
        let (Some(target), Some(x_ty)) = (reshape.attrs.ints("shape"), tensor(egraph, x)) else {
            return vec![];
        };
        if target.last().copied() != i64::try_from(x_ty.shape.last()).ok() {
            return vec![];
        }
        let (target, view_role) = (target.to_vec(), reshape.role);
        let Ok(fused) = add_op(egraph, spec, &[x, w]) else {
            return vec![];
        };
        let codes = add_get(egraph, fused, 0);
        let scales = add_get(egraph, fused, 1);
        let groups = tensor(egraph, scales).map_or(0, |t| t.shape.last());
        let mut scale_shape = target[..target.len() - 1].to_vec();
        scale_shape.push(groups as i64);
        // A view of codes or scales does no arithmetic; FP8 compute is reserved for GEMMs, so
        // it is annotated f32 like the quantization it stands in for.
        let view = |shape: Vec<i64>| OpSpec {
            kind: OpKind::Reshape,
            attrs: Attrs::new().with("shape", Attr::Ints(shape)),
            role: view_role,
            precision: Some(Precision {
                compute: DType::F32,
                accumulate: None,
            }),
            pin,
            storage: None,
        };
        let (Ok(codes_view), Ok(scales_view)) = (
            add_op(egraph, view(target), &[codes]),
            add_op(egraph, view(scale_shape), &[scales]),
        ) else {
            return vec![];
        };
        let norm = Node::Op(OpKind::RmsNorm, vec![subst[self.norm], x, w]);
        if let Some(base) = egraph.lookup(norm) {
            egraph.analysis.hints.push((
                fused,
                NameHint {
                    base,
                    suffixes: &["x_q", "x_q.scale"],
                },
            ));
        }
        let (q_codes, q_scales) = (add_get(egraph, eclass, 0), add_get(egraph, eclass, 1));
        let mut changed = union(egraph, q_codes, codes_view);
        changed.extend(union(egraph, q_scales, scales_view));
        changed
    }
}

/// `quantize(swiglu(g, u))` → `swiglu_quant(g, u)`.
struct FuseSwigluQuant {
    qs: Var,
    ss: Var,
    g: Var,
    u: Var,
}

impl Apply for FuseSwigluQuant {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id> {
        let quantize = sig(egraph, subst[self.qs]);
        let pin = quantize.pin;
        let Some(attrs) = quant_attrs(&quantize.attrs) else {
            return vec![];
        };
        let swiglu = sig(egraph, subst[self.ss]);
        if !stores_as_input(egraph, swiglu, subst[self.g]) {
            return vec![];
        }
        let spec = OpSpec {
            kind: OpKind::SwigluQuant,
            attrs,
            role: swiglu.role,
            precision: Some(Precision {
                compute: DType::F32,
                accumulate: None,
            }),
            pin,
            storage: None,
        };
        match add_op(egraph, spec, &[subst[self.g], subst[self.u]]) {
            Ok(fused) => union(egraph, eclass, fused),
            Err(_) => vec![],
        }
    }
}

/// True when every value of `narrow` is exactly a value of `wide`: casting to `wide` and on
/// rounds exactly as casting directly.
pub fn holds_exactly(wide: DType, narrow: DType) -> bool {
    use DType::*;
    wide == narrow
        || matches!(
            (wide, narrow),
            (F32, Bf16 | F16 | F8E4M3 | F8E5M2 | Bool)
                | (Bf16 | F16, F8E4M3 | F8E5M2 | Bool)
                | (F8E4M3 | F8E5M2 | I32 | I64, Bool)
                | (I64, I32)
        )
}

/// `cast(cast(x){a}){b}` → `cast(x){b}` when `a` holds both `x`'s dtype and `b` exactly.
struct CastChain {
    outer: Var,
    inner: Var,
    x: Var,
}

impl Apply for CastChain {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id> {
        let outer = sig(egraph, subst[self.outer]).clone();
        let a = sig(egraph, subst[self.inner]).attrs.dtype("dtype");
        let x = subst[self.x];
        let (Some(a), Some(b), Some(x_ty)) = (
            a,
            outer.attrs.dtype("dtype"),
            tensor(egraph, x).map(|t| t.dtype),
        ) else {
            return vec![];
        };
        if !holds_exactly(a, x_ty) || !holds_exactly(a, b) {
            return vec![];
        }
        let spec = OpSpec {
            kind: OpKind::Cast,
            attrs: outer.attrs.clone(),
            role: outer.role,
            precision: outer.precision,
            pin: outer.pin,
            storage: None,
        };
        match add_op(egraph, spec, &[x]) {
            Ok(cast) => union(egraph, eclass, cast),
            Err(_) => vec![],
        }
    }
}

/// `cast(x){d}` → `x` when `x` is already `d` (not for a cast that defines a graph output,
/// which keeps its name).
struct CastNoop {
    cast: Var,
    x: Var,
}

impl Apply for CastNoop {
    fn apply(&self, egraph: &mut FuseGraph, eclass: Id, subst: &Subst) -> Vec<Id> {
        let cast = sig(egraph, subst[self.cast]);
        let x = subst[self.x];
        let same = cast.pin.is_none()
            && tensor(egraph, x).is_some_and(|t| Some(t.dtype) == cast.attrs.dtype("dtype"));
        if same {
            union(egraph, eclass, x)
        } else {
            vec![]
        }
    }
}
