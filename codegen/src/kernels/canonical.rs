//! The canonical text of a kernel spec, which its entry name hashes ([`super::GpuKernel::entry`]).
//!
//! It is the spec the kernel implements ([`super::GpuKernel::spec`], an op kind such as
//! `fp8_gemm`: each names one kind of kernel) followed by the values of every field, in
//! declaration order, without the fields' Rust names:
//! `fp8_gemm(128,512,256,128,128,128,f8e4m3,bf16,-,wgmma(64))`.
//! Renaming a field or a struct keeps the entry name; adding, removing or reordering fields, or
//! changing a value, changes it. Unlike `Debug` output, it does not follow how Rust spells the
//! spec, only what the spec is. The snapshot test of an example's entry names (tests.rs) pins
//! them across builds.
//!
//! Values are written through the spec's `Serialize` (the same one the manifest's kernel
//! attributes use, so dtypes read as the IR spells them): numbers in Rust's shortest exact
//! form, strings quoted, `None` as `-`, sequences in `[..]`, structs and variants' fields in
//! `(..)`, unit enum variants by their serialized name. A spec may hold the spec type of
//! `dsc_kernels` that it implements (`AttnValues` holds `ValueDims`) as a
//! `#[serde(flatten)]` field: its fields are written in its place, as if declared there, so
//! where a fact is declared does not change the name either (serde writes a struct with a
//! flattened field as a map of unknown length; such maps are written as `(..)` of their
//! values, maps of known length as `{key:value,..}`).

use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::ser::{self, Serializer};

/// `kind` followed by the values of `spec` (see the module docs).
pub fn canonical<T: Serialize + ?Sized>(kind: &str, spec: &T) -> String {
    let mut out = Canonical(kind.to_string());
    // Writing to a String cannot fail, and every serde data type has a form here.
    let _ = spec.serialize(&mut out);
    out.0
}

/// The text written so far.
struct Canonical(String);

/// Never produced (every value has a canonical form); serde requires an error type.
#[derive(Debug)]
pub struct Never(String);

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Never(msg.to_string())
    }
}

type Result = std::result::Result<(), Never>;

impl Canonical {
    fn put(&mut self, value: impl fmt::Display) -> Result {
        let _ = write!(self.0, "{value}");
        Ok(())
    }
}

/// A sequence, struct or variant being written: the separator before its next element.
struct Compound<'a> {
    out: &'a mut Canonical,
    first: bool,
    close: char,
    /// Whether a map's keys are written (not for a struct with flattened fields).
    keys: bool,
}

impl<'a> Compound<'a> {
    /// Writes `open` and starts a compound that ends with `close`.
    fn open(out: &'a mut Canonical, open: char, close: char) -> Self {
        out.0.push(open);
        Compound {
            out,
            first: true,
            close,
            keys: true,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        if !std::mem::take(&mut self.first) {
            self.out.0.push(',');
        }
        value.serialize(&mut *self.out)
    }

    fn close(self) -> Result {
        self.out.0.push(self.close);
        Ok(())
    }
}

/// `Serializer` methods that write their value's `Display`.
macro_rules! written_by_display {
    ($($method:ident: $t:ty),* $(,)?) => {$(
        fn $method(self, v: $t) -> Result {
            self.put(v)
        }
    )*};
}

impl<'a> Serializer for &'a mut Canonical {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    written_by_display! {
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
    }
    fn serialize_f32(self, v: f32) -> Result {
        // `Debug`: the shortest text that reads back as the same value, always with a `.` or
        // an exponent, and `-0.0` apart from `0.0`.
        self.put(format_args!("{v:?}"))
    }
    fn serialize_f64(self, v: f64) -> Result {
        self.put(format_args!("{v:?}"))
    }
    fn serialize_char(self, v: char) -> Result {
        self.put(format_args!("{v:?}"))
    }
    fn serialize_str(self, v: &str) -> Result {
        self.put(format_args!("{v:?}"))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.put(format_args!("{v:?}"))
    }
    fn serialize_none(self) -> Result {
        self.put('-')
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.put("()")
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        self.put("()")
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &str) -> Result {
        self.put(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.put(format_args!("{variant}("))?;
        value.serialize(&mut *self)?;
        self.put(')')
    }
    fn serialize_seq(self, _len: Option<usize>) -> std::result::Result<Compound<'a>, Never> {
        Ok(Compound::open(self, '[', ']'))
    }
    fn serialize_tuple(self, _len: usize) -> std::result::Result<Compound<'a>, Never> {
        Ok(Compound::open(self, '(', ')'))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> std::result::Result<Compound<'a>, Never> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> std::result::Result<Compound<'a>, Never> {
        self.0.push_str(variant);
        self.serialize_tuple(len)
    }
    fn serialize_map(self, len: Option<usize>) -> std::result::Result<Compound<'a>, Never> {
        Ok(match len {
            Some(_) => Compound::open(self, '{', '}'),
            // A struct with a flattened field: its fields' values, as a struct's.
            None => Compound {
                keys: false,
                ..Compound::open(self, '(', ')')
            },
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> std::result::Result<Compound<'a>, Never> {
        self.serialize_tuple(len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> std::result::Result<Compound<'a>, Never> {
        self.serialize_tuple_variant(name, index, variant, len)
    }
}

/// A sequence's, tuple's or variant's elements: written in order, comma-separated.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }
            fn end(self) -> Result {
                self.close()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// A struct's fields: written by value only (the names are how Rust spells the spec).
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Never;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _key: &'static str,
                value: &T,
            ) -> Result {
                self.element(value)
            }
            fn end(self) -> Result {
                self.close()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        if self.keys { self.element(key) } else { Ok(()) }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        if self.keys {
            self.out.0.push(':');
            value.serialize(&mut *self.out)
        } else {
            self.element(value)
        }
    }
    fn end(self) -> Result {
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use super::canonical;
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Form {
        Plain,
        Wide { n: u64 },
    }

    #[derive(Serialize)]
    struct Spec {
        rows: u64,
        scale: f32,
        name: &'static str,
        bias: Option<u64>,
        dims: Vec<u64>,
        form: Form,
    }

    /// The same spec with its fields renamed.
    #[derive(Serialize)]
    struct Renamed {
        m: u64,
        factor: f32,
        label: &'static str,
        offset: Option<u64>,
        shape: Vec<u64>,
        kind: Form,
    }

    #[test]
    fn values_in_order_without_field_names() {
        let spec = Spec {
            rows: 3,
            scale: -0.5,
            name: "a b",
            bias: None,
            dims: vec![1, 2],
            form: Form::Wide { n: 64 },
        };
        let text = canonical("k", &spec);
        assert_eq!(text, r#"k(3,-0.5,"a b",-,[1,2],wide(64))"#);
        let renamed = Renamed {
            m: 3,
            factor: -0.5,
            label: "a b",
            offset: None,
            shape: vec![1, 2],
            kind: Form::Wide { n: 64 },
        };
        assert_eq!(canonical("k", &renamed), text);
        let plain = Spec {
            bias: Some(0),
            form: Form::Plain,
            ..spec
        };
        assert_eq!(canonical("k", &plain), r#"k(3,-0.5,"a b",0,[1,2],plain)"#);
    }

    /// Part of [`Spec`], declared apart.
    #[derive(Serialize)]
    struct Head {
        rows: u64,
        scale: f32,
    }

    /// [`Spec`] holding its first fields as a flattened [`Head`].
    #[derive(Serialize)]
    struct Nested {
        #[serde(flatten)]
        head: Head,
        name: &'static str,
        bias: Option<u64>,
        dims: Vec<u64>,
        form: Form,
    }

    #[test]
    fn flattened_fields_read_as_if_declared_in_place() {
        let nested = Nested {
            head: Head {
                rows: 3,
                scale: -0.5,
            },
            name: "a b",
            bias: Some(0),
            dims: vec![1, 2],
            form: Form::Plain,
        };
        assert_eq!(canonical("k", &nested), r#"k(3,-0.5,"a b",0,[1,2],plain)"#);
        // A map of known length keeps its keys.
        let map = std::collections::BTreeMap::from([("a", 1u64), ("b", 2)]);
        assert_eq!(canonical("m", &map), r#"m{"a":1,"b":2}"#);
    }
}
