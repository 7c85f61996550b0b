//! The e-graph language of `fuse` and its analysis.
//!
//! A graph value is an e-class. An op is the node `(kind sig operand…)`: its kind, then a
//! *signature* child, then its operands. The signature is everything besides the operands that
//! makes two ops compute the same thing — attributes, role, precision, result types — interned
//! in a side table ([`FuseAnalysis`]) and held by a leaf node `#n`, so two ops hash-cons exactly
//! when kind, signature and operands agree, and rules bind a signature like any child
//! (`(quantize ?qs ?x)` matches every quantize, whatever its attributes).
//!
//! A multi-result op's e-class is the tuple of its results; `(get i op)` projects result `i`
//! (`i` is a leaf node). Graph inputs and parameters are leaves `$n`, whose types the analysis
//! keeps.
//!
//! ```text
//! (fp8_gemm #7 (get 0 (quantize #3 $12)) (get 1 (quantize #3 $12)) $40 $41)
//! ```
//!
//! [`Node`] implements egg's `Language` by hand so that its discriminant is the op kind: egg
//! indexes e-classes by discriminant, so a rule rooted at `promote` visits only promotes.

use dsc_ir::infer::{ResultDType, infer};
use dsc_ir::{Attrs, DType, OpKind, Precision, Role, TensorType, ValueId};
use egg::{Analysis, DidMerge, EGraph, FromOp, Id, Language};
use rustc_hash::{FxHashMap, FxHasher};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// The e-graph `fuse` rewrites.
pub type FuseGraph = EGraph<Node, FuseAnalysis>;

/// A signature in the side table, written `#n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SigId(pub u32);

/// A value from outside the e-graph, written `$n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafId(pub u32);

/// A node of the fuse e-graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// `(get i tuple)`: result `i` of a multi-result op.
    Get([Id; 2]),
    /// `(kind sig operand…)`: an op of the IR.
    Op(OpKind, Vec<Id>),
    /// A result index, the first child of `get`.
    Index(u32),
    /// An op's signature.
    Sig(SigId),
    /// A value defined outside the e-graph.
    Leaf(LeafId),
}

/// What egg indexes e-classes by: the op kind for ops.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Get,
    Op(OpKind),
    Index,
    Sig,
    Leaf,
}

impl Language for Node {
    type Discriminant = NodeKind;

    fn discriminant(&self) -> NodeKind {
        match self {
            Node::Get(_) => NodeKind::Get,
            Node::Op(kind, _) => NodeKind::Op(*kind),
            Node::Index(_) => NodeKind::Index,
            Node::Sig(_) => NodeKind::Sig,
            Node::Leaf(_) => NodeKind::Leaf,
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Get(_), Node::Get(_)) => true,
            (Node::Op(k, a), Node::Op(l, b)) => k == l && a.len() == b.len(),
            (Node::Index(a), Node::Index(b)) => a == b,
            (Node::Sig(a), Node::Sig(b)) => a == b,
            (Node::Leaf(a), Node::Leaf(b)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Get(ids) => ids,
            Node::Op(_, ids) => ids,
            Node::Index(_) | Node::Sig(_) | Node::Leaf(_) => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Get(ids) => ids,
            Node::Op(_, ids) => ids,
            Node::Index(_) | Node::Sig(_) | Node::Leaf(_) => &mut [],
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Get(_) => f.write_str("get"),
            Node::Op(kind, _) => write!(f, "{kind}"),
            Node::Index(i) => write!(f, "{i}"),
            Node::Sig(s) => write!(f, "#{}", s.0),
            Node::Leaf(l) => write!(f, "${}", l.0),
        }
    }
}

/// Why a pattern's operator names no node.
#[derive(Debug)]
pub struct UnknownOperator(pub String);

impl fmt::Display for UnknownOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` names no node of the fuse language", self.0)
    }
}

impl FromOp for Node {
    type Error = UnknownOperator;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, UnknownOperator> {
        if op == "get" && children.len() == 2 {
            return Ok(Node::Get([children[0], children[1]]));
        }
        if let Ok(kind) = OpKind::from_str(op) {
            return Ok(Node::Op(kind, children));
        }
        if children.is_empty() {
            let number = |prefix: char| op.strip_prefix(prefix).and_then(|n| n.parse().ok());
            if let Ok(i) = op.parse() {
                return Ok(Node::Index(i));
            }
            if let Some(s) = number('#') {
                return Ok(Node::Sig(SigId(s)));
            }
            if let Some(l) = number('$') {
                return Ok(Node::Leaf(LeafId(l)));
            }
        }
        Err(UnknownOperator(op.to_string()))
    }
}

/// What makes an op what it is, besides its kind and operands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sig {
    pub attrs: Attrs,
    /// `None` for quantize: one quantization of a value serves every GEMM that reads it,
    /// whatever their roles (the op then takes the role of its first occurrence).
    pub role: Option<Role>,
    pub precision: Option<Precision>,
    /// The result types (storage dtypes included).
    pub types: Vec<TensorType>,
    /// Set on ops that define a graph output, so they never hash-cons with another op: each
    /// output keeps its own value and name.
    pub pin: Option<ValueId>,
}

/// A signature by reference, to look one up without building it.
pub struct SigRef<'a, T> {
    pub attrs: &'a Attrs,
    pub role: Option<Role>,
    pub precision: Option<Precision>,
    /// The result types, as an iterator that can be restarted.
    pub types: T,
    pub pin: Option<ValueId>,
}

impl<'a, T: Iterator<Item = &'a TensorType> + Clone> SigRef<'a, T> {
    fn hash(&self) -> u64 {
        let mut h = FxHasher::default();
        self.attrs.hash(&mut h);
        self.role.hash(&mut h);
        self.precision.hash(&mut h);
        for t in self.types.clone() {
            t.hash(&mut h);
        }
        self.pin.hash(&mut h);
        h.finish()
    }

    fn is(&self, sig: &Sig) -> bool {
        *self.attrs == sig.attrs
            && self.role == sig.role
            && self.precision == sig.precision
            && self.pin == sig.pin
            && self.types.clone().eq(sig.types.iter())
    }

    fn to_owned(&self) -> Sig {
        Sig {
            attrs: self.attrs.clone(),
            role: self.role,
            precision: self.precision,
            types: self.types.clone().cloned().collect(),
            pin: self.pin,
        }
    }
}

/// A new op for [`add_op`]: the signature is completed by type inference.
pub struct OpSpec {
    pub kind: OpKind,
    pub attrs: Attrs,
    pub role: Option<Role>,
    pub precision: Option<Precision>,
    pub pin: Option<ValueId>,
    /// The first result's storage dtype where the kind leaves it free (as assign-precision
    /// would have chosen it); `None` keeps the natural one.
    pub storage: Option<DType>,
}

/// How to name the results of an e-class that rules created and no original value names:
/// `{name of base's value}.{suffix}` for each result.
#[derive(Debug, Clone)]
pub struct NameHint {
    pub base: Id,
    pub suffixes: &'static [&'static str],
}

/// The analysis: the signature and leaf tables, the type of every e-class, and the naming
/// hints rules leave for the translation back.
#[derive(Debug, Default)]
pub struct FuseAnalysis {
    sigs: Vec<Sig>,
    by_hash: FxHashMap<u64, Vec<SigId>>,
    leaves: Vec<TensorType>,
    /// New e-class → how to name its results.
    pub hints: Vec<(Id, NameHint)>,
}

impl FuseAnalysis {
    /// The id of the signature `sig` describes, adding it to the table the first time.
    pub fn intern<'a, T>(&mut self, sig: SigRef<'a, T>) -> SigId
    where
        T: Iterator<Item = &'a TensorType> + Clone,
    {
        let ids = self.by_hash.entry(sig.hash()).or_default();
        if let Some(&id) = ids.iter().find(|id| sig.is(&self.sigs[id.0 as usize])) {
            return id;
        }
        let id = SigId(self.sigs.len() as u32);
        self.sigs.push(sig.to_owned());
        ids.push(id);
        id
    }

    /// The signature `id` names.
    pub fn sig(&self, id: SigId) -> &Sig {
        &self.sigs[id.0 as usize]
    }

    /// Registers a leaf of type `ty`.
    pub fn add_leaf(&mut self, ty: TensorType) -> LeafId {
        self.leaves.push(ty);
        LeafId(self.leaves.len() as u32 - 1)
    }

    /// The type of a value class's data; `None` for other classes.
    pub fn tensor<'s>(&'s self, data: &Data) -> Option<&'s TensorType> {
        match *data {
            Data::Leaf(l) => Some(&self.leaves[l.0 as usize]),
            Data::Result(s, i) => Some(&self.sig(s).types[i as usize]),
            Data::Sig(_) | Data::Index(_) | Data::Tuple(_) => None,
        }
    }
}

/// What an e-class is. Types are kept by reference into the analysis's tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Data {
    /// A signature leaf.
    Sig(SigId),
    /// A result-index leaf.
    Index(u32),
    /// A graph input or parameter.
    Leaf(LeafId),
    /// Result `i` of an op of signature `s`.
    Result(SigId, u32),
    /// The results of a multi-result op of signature `s`.
    Tuple(SigId),
}

impl Analysis<Node> for FuseAnalysis {
    type Data = Data;

    fn make(egraph: &mut FuseGraph, enode: &Node, _id: Id) -> Data {
        match enode {
            Node::Sig(s) => Data::Sig(*s),
            Node::Index(i) => Data::Index(*i),
            Node::Leaf(l) => Data::Leaf(*l),
            Node::Get([i, t]) => match (egraph[*i].data, egraph[*t].data) {
                (Data::Index(i), Data::Tuple(s)) => Data::Result(s, i),
                other => unreachable!("get of {other:?}"),
            },
            Node::Op(kind, children) => {
                let s = sig_id(egraph, children[0]);
                if kind.num_results() == 1 {
                    Data::Result(s, 0)
                } else {
                    Data::Tuple(s)
                }
            }
        }
    }

    /// Classes are only ever merged with equal values, so their types agree.
    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        debug_assert_eq!(
            self.tensor(a),
            self.tensor(&b),
            "fuse merged e-classes of different types"
        );
        DidMerge(false, false)
    }
}

/// The signature id held by the signature class `class`.
pub fn sig_id(egraph: &FuseGraph, class: Id) -> SigId {
    match egraph[class].data {
        Data::Sig(s) => s,
        other => unreachable!("expected a signature, got {other:?}"),
    }
}

/// The signature held by the signature class `class`.
pub fn sig(egraph: &FuseGraph, class: Id) -> &Sig {
    egraph.analysis.sig(sig_id(egraph, class))
}

/// The type of the value class `class`, `None` for other classes.
pub fn tensor(egraph: &FuseGraph, class: Id) -> Option<&TensorType> {
    egraph.analysis.tensor(&egraph[class].data)
}

/// Adds the signature leaf of `sig`.
fn add_sig<'a, T>(egraph: &mut FuseGraph, sig: SigRef<'a, T>) -> Id
where
    T: Iterator<Item = &'a TensorType> + Clone,
{
    let id = egraph.analysis.intern(sig);
    egraph.add(Node::Sig(id))
}

/// Adds `(get i tuple)`.
pub fn add_get(egraph: &mut FuseGraph, tuple: Id, i: usize) -> Id {
    let index = egraph.add(Node::Index(i as u32));
    egraph.add(Node::Get([index, tuple]))
}

/// Adds the op `spec` over `operands` (value classes), its result types inferred by the IR's
/// own rules; `Err` with the inference message when the op would not verify.
pub fn add_op(egraph: &mut FuseGraph, spec: OpSpec, operands: &[Id]) -> Result<Id, String> {
    let ins: Vec<&TensorType> = operands
        .iter()
        .map(|&v| tensor(egraph, v).ok_or("an operand is not a tensor"))
        .collect::<Result<_, _>>()?;
    let inferred = infer(spec.kind, &spec.attrs, &ins)?;
    let types: Vec<TensorType> = inferred
        .into_iter()
        .enumerate()
        .map(|(i, inf)| TensorType {
            dtype: match (i, spec.storage, inf.dtype) {
                (0, Some(d), ResultDType::Free(_)) => d,
                (_, _, rule) => rule.default_dtype(),
            },
            shape: inf.shape,
        })
        .collect();
    let sig = add_sig(
        egraph,
        SigRef {
            attrs: &spec.attrs,
            role: spec.role,
            precision: spec.precision,
            types: types.iter(),
            pin: spec.pin,
        },
    );
    let mut children = Vec::with_capacity(operands.len() + 1);
    children.push(sig);
    children.extend_from_slice(operands);
    Ok(egraph.add(Node::Op(spec.kind, children)))
}
