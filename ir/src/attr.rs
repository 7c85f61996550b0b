//! Op attributes: named constants attached to an op (eps, axis, block sizes, …).

use crate::DType;
use std::collections::BTreeMap;
use std::fmt;

/// One attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A word from a fixed vocabulary (`interleaved`, `sigmoid`, …), printed quoted.
    Str(String),
    DType(DType),
    Ints(Vec<i64>),
}

/// The type of an attribute, as an op kind's signature declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    Int,
    Float,
    Bool,
    Str,
    DType,
    Ints,
}

impl AttrType {
    /// The word used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            AttrType::Int => "an integer",
            AttrType::Float => "a float",
            AttrType::Bool => "a boolean",
            AttrType::Str => "a string",
            AttrType::DType => "a dtype",
            AttrType::Ints => "a list of integers",
        }
    }
}

impl Attr {
    /// The type of this value.
    pub fn ty(&self) -> AttrType {
        match self {
            Attr::Int(_) => AttrType::Int,
            Attr::Float(_) => AttrType::Float,
            Attr::Bool(_) => AttrType::Bool,
            Attr::Str(_) => AttrType::Str,
            Attr::DType(_) => AttrType::DType,
            Attr::Ints(_) => AttrType::Ints,
        }
    }
}

// Floats compare by bit pattern so that attribute maps can key CSE; NaN never appears in
// attributes the verifier accepts.
impl PartialEq for Attr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Attr::Int(a), Attr::Int(b)) => a == b,
            (Attr::Float(a), Attr::Float(b)) => a.to_bits() == b.to_bits(),
            (Attr::Bool(a), Attr::Bool(b)) => a == b,
            (Attr::Str(a), Attr::Str(b)) => a == b,
            (Attr::DType(a), Attr::DType(b)) => a == b,
            (Attr::Ints(a), Attr::Ints(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Attr {}

impl std::hash::Hash for Attr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Attr::Int(v) => v.hash(state),
            Attr::Float(v) => v.to_bits().hash(state),
            Attr::Bool(v) => v.hash(state),
            Attr::Str(v) => v.hash(state),
            Attr::DType(v) => v.hash(state),
            Attr::Ints(v) => v.hash(state),
        }
    }
}

impl fmt::Display for Attr {
    /// The text-format spelling: floats always carry a `.` or an exponent so they never read
    /// back as integers, and they print the shortest digits that round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{v:?}"),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Str(v) => write!(f, "{v:?}"),
            Attr::DType(v) => write!(f, "{v}"),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// An op's attributes, ordered by name so printing is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    /// No attributes.
    pub fn new() -> Self {
        Attrs::default()
    }

    /// Adds or replaces an attribute (builder style).
    pub fn with(mut self, name: &str, value: Attr) -> Self {
        self.0.insert(name.to_string(), value);
        self
    }

    /// Adds or replaces an attribute.
    pub fn set(&mut self, name: &str, value: Attr) {
        self.0.insert(name.to_string(), value);
    }

    /// Looks an attribute up.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    /// The integer attribute `name`, if present and an integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// The float attribute `name`, if present and a float.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.0.get(name) {
            Some(Attr::Float(v)) => Some(*v),
            _ => None,
        }
    }

    /// The boolean attribute `name`, if present and a boolean.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(Attr::Bool(v)) => Some(*v),
            _ => None,
        }
    }

    /// The string attribute `name`, if present and a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Attr::Str(v)) => Some(v),
            _ => None,
        }
    }

    /// The dtype attribute `name`, if present and a dtype.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        match self.0.get(name) {
            Some(Attr::DType(v)) => Some(*v),
            _ => None,
        }
    }

    /// The integer-list attribute `name`, if present and a list.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.0.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// Iterates over (name, value) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
