//! The elementwise kernels `add`, `mul`, `silu`, `swiglu`, `cast` — one 16-byte chunk per thread
//! where every operand is f32 or bf16 and as long as the output, else one element per thread —
//! and the strided copy of `slice` (one 16-byte chunk per thread where the rows allow, else one
//! element per thread).
//!
//! Arithmetic is in f32 on values widened exactly from their storage dtype, and the result is
//! rounded to nearest even into the output dtype, as the CPU reference does at every op boundary.

use dsc_ir::DType;
use serde::Serialize;

use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;

use super::wide_access::{
    element_address, elements_per_thread, load_f32s, load_words, per_access, store_f32s,
    store_words,
};
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// What an [`Elementwise`] kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementwiseOp {
    /// `out = a + b`; `b` may be the trailing dims of `a`, repeated (see [`Elementwise::rhs_len`]).
    Add,
    /// `out = a · b`.
    Mul,
    /// `out = x / (1 + e^-x)`.
    Silu,
    /// `out = round(silu(gate)) · up` (the activation rounded to the output dtype first).
    Swiglu,
    /// `out = x` converted.
    Cast,
}

/// `add` or `cast` over `len` elements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Elementwise {
    /// The operation.
    pub op: ElementwiseOp,
    /// Elements.
    pub len: u64,
    /// Dtype of each input.
    pub inputs: Vec<DType>,
    /// Output dtype.
    pub output: DType,
    /// Elements of the rhs `b` when it is the output's trailing dims, repeated over the rows
    /// (`add` of a bias `[N]` to `[.., N]`: `b[i % N]`); `None` when it has `len` elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rhs_len: Option<u64>,
}

impl Elementwise {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        match self.op {
            ElementwiseOp::Add => "add",
            ElementwiseOp::Mul => "mul",
            ElementwiseOp::Silu => "silu",
            ElementwiseOp::Swiglu => "swiglu",
            ElementwiseOp::Cast => "cast",
        }
    }

    /// `(a, b, out)` or `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        let names: &[&'static str] = match self.op {
            ElementwiseOp::Add | ElementwiseOp::Mul => &["a", "b"],
            ElementwiseOp::Swiglu => &["gate", "up"],
            ElementwiseOp::Silu | ElementwiseOp::Cast => &["x"],
        };
        let mut params: Vec<Param> = names
            .iter()
            .zip(&self.inputs)
            .enumerate()
            .map(|(i, (&name, &dtype))| {
                let len = if i == 1 { self.rhs_len } else { None };
                Param::new(name, dtype, len.unwrap_or(self.len))
            })
            .collect();
        params.push(Param::new("out", self.output, self.len));
        params
    }

    /// Elements per thread of the 16-byte form ([`super::wide_access`]): every operand f32 or
    /// bf16 and as long as the output (no repeated bias), so each thread reads and writes one
    /// 16-byte access of the narrowest dtype; `None` for the one-element-per-thread form.
    fn chunk(&self) -> Option<u64> {
        let dtypes: Vec<DType> = self.inputs.iter().copied().chain([self.output]).collect();
        let floats = dtypes
            .iter()
            .all(|&d| matches!(d, DType::F32 | DType::Bf16));
        (floats && self.rhs_len.is_none()).then(|| elements_per_thread(&dtypes))
    }

    /// One thread per 16-byte chunk (the ragged tail in the last thread), or per element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len.div_ceil(self.chunk().unwrap_or(1)))
    }

    /// The f32 result of one element from its inputs `x` (widened to f32), before the
    /// rounding to the output dtype.
    fn value<'c, 'a>(&self, e: &Emit<'c, 'a>, x: &[Value<'c, 'a>]) -> Emitted<'c, 'a> {
        match self.op {
            ElementwiseOp::Add => e.addf(x[0], x[1]),
            ElementwiseOp::Mul => e.mulf(x[0], x[1]),
            ElementwiseOp::Swiglu => {
                let act = e.silu(x[0])?;
                let act = e.round_through(act, self.output)?;
                e.mulf(act, x[1])
            }
            ElementwiseOp::Silu => e.silu(x[0]),
            ElementwiseOp::Cast => Ok(x[0]),
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(per) = self.chunk() {
            return self.build_chunked(module, entry, per);
        }
        add_per_element_kernel(module, entry, &self.params(), self.len, |e, args, i| {
            let out = *args.last().expect("an output");
            let zero = e.index(0)?;
            let mut x = vec![e.load_f32(args[0], zero, i)?];
            if self.inputs.len() > 1 {
                let j = match self.rhs_len {
                    Some(p) => e.remui(i, e.index(p as i64)?)?,
                    None => i,
                };
                x.push(e.load_f32(args[1], zero, j)?);
            }
            let value = self.value(&e, &x)?;
            let value = e.round_to(value, self.output)?;
            e.store(value, out, i);
            Ok(())
        })
    }

    /// Thread `t` handles elements `per·t .. per·t + per` with one 16-byte access of the
    /// narrowest dtype (two of f32 beside bf16); the last thread the `len mod per` left.
    fn build_chunked(
        &self,
        module: &KernelModule<'_>,
        entry: &str,
        per: u64,
    ) -> Result<(), CodegenError> {
        let (whole, tail) = (self.len / per, self.len % per);
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            whole + u64::from(tail > 0),
            |e, args, t| {
                let n = self.inputs.len();
                let (inputs, out) = (&args[..n], args[n]);
                let start = e.muli(t, e.index(per as i64)?)?;
                if whole > 0 {
                    e.if_then(e.lt(t, e.index(whole as i64)?)?, |e| {
                        let loaded = inputs
                            .iter()
                            .zip(&self.inputs)
                            .map(|(&buffer, &dtype)| {
                                load_f32s(
                                    &e,
                                    element_address(&e, buffer, dtype, start)?,
                                    dtype,
                                    per,
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let values = (0..per as usize)
                            .map(|k| {
                                let x: Vec<_> = loaded.iter().map(|v| v[k]).collect();
                                self.value(&e, &x)
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let at = element_address(&e, out, self.output, start)?;
                        store_f32s(&e, &values, at, self.output)
                    })?;
                }
                if tail > 0 {
                    e.if_then(e.cmpi(CmpiPredicate::Eq, t, e.index(whole as i64)?)?, |e| {
                        for k in 0..tail {
                            let i = e.addi(start, e.index(k as i64)?)?;
                            let zero = e.index(0)?;
                            let x = inputs
                                .iter()
                                .map(|&buffer| e.load_f32(buffer, zero, i))
                                .collect::<Result<Vec<_>, _>>()?;
                            let value = e.round_to(self.value(&e, &x)?, self.output)?;
                            e.store(value, out, i);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            },
        )
    }
}

/// `out = x[..., start:start+len, ...]` along one axis: `x` is `[outer, axis_in, inner]`,
/// `out` is `[outer, axis_out, inner]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceCopy {
    /// Element dtype (unchanged).
    pub dtype: DType,
    /// Product of the dims before the axis.
    pub outer: u64,
    /// The axis length of the input.
    pub axis_in: u64,
    /// The axis length of the output.
    pub axis_out: u64,
    /// First index taken along the axis.
    pub start: u64,
    /// Product of the dims after the axis.
    pub inner: u64,
}

impl SliceCopy {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "slice"
    }

    fn len(&self) -> u64 {
        self.outer * self.axis_out * self.inner
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.dtype, self.outer * self.axis_in * self.inner),
            Param::new("out", self.dtype, self.len()),
        ]
    }

    /// Elements per 16-byte chunk when every chunk of a row of the output comes from one
    /// 16-byte aligned chunk of the input: the output row (`axis_out · inner`), the input row
    /// (`axis_in · inner`) and the row's offset in it (`start · inner`) are whole chunks, so
    /// each thread copies one chunk of four words (buffers start at multiples of 256 bytes);
    /// `None` for the one-element-per-thread form.
    fn chunk(&self) -> Option<u64> {
        if self.dtype == DType::Bool || self.len() == 0 {
            return None;
        }
        let per = per_access(self.dtype);
        [self.axis_out, self.axis_in, self.start]
            .iter()
            .all(|&n| (n * self.inner).is_multiple_of(per))
            .then_some(per)
    }

    /// One thread per 16-byte chunk of the output, or per element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len() / self.chunk().unwrap_or(1))
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if let Some(per) = self.chunk() {
            return self.build_chunked(module, entry, per);
        }
        add_per_element_kernel(module, entry, &self.params(), self.len(), |e, args, i| {
            let x = args[0];
            let out = args[1];
            let inner = e.index(self.inner as i64)?;
            let axis_out = e.index(self.axis_out as i64)?;
            let r = e.remui(i, inner)?;
            let rest = e.divui(i, inner)?;
            let a = e.remui(rest, axis_out)?;
            let o = e.divui(rest, axis_out)?;
            let axis_in = e.index(self.axis_in as i64)?;
            let start = e.index(self.start as i64)?;
            let a_in = e.addi(a, start)?;
            let row = e.muli(o, axis_in)?;
            let row = e.addi(row, a_in)?;
            let source = e.muli(row, inner)?;
            let source = e.addi(source, r)?;
            let value = e.load(x, source)?;
            e.store(value, out, i);
            Ok(())
        })
    }

    /// Thread `t` copies output elements `per·t .. per·t + per` (inside one output row of
    /// `axis_out · inner`) from the same place of the input's row, as four words.
    fn build_chunked(
        &self,
        module: &KernelModule<'_>,
        entry: &str,
        per: u64,
    ) -> Result<(), CodegenError> {
        let row_out = self.axis_out * self.inner;
        let row_in = self.axis_in * self.inner;
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.len() / per,
            |e, args, t| {
                let (x, out) = (args[0], args[1]);
                let i = e.muli(t, e.index(per as i64)?)?;
                let row_out = e.index(row_out as i64)?;
                let o = e.divui(i, row_out)?;
                let r = e.remui(i, row_out)?;
                let source = e.muli(o, e.index(row_in as i64)?)?;
                let source = e.addi(source, e.index((self.start * self.inner) as i64)?)?;
                let source = e.addi(source, r)?;
                let words = load_words(&e, element_address(&e, x, self.dtype, source)?)?;
                store_words(&e, element_address(&e, out, self.dtype, i)?, &words)
            },
        )
    }
}
