//! One-output-element-per-thread kernels: `add`, `mul`, `silu`, `swiglu`, `cast` and the strided
//! copy of `slice`.
//!
//! Arithmetic is in f32 on values widened exactly from their storage dtype, and the result is
//! rounded to nearest even into the output dtype, as the CPU reference does at every op boundary.

use dsc_ir::DType;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

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

    /// One thread per element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(module, entry, &self.params(), self.len, |e, args, i| {
            let out = *args.last().expect("an output");
            let value = match self.op {
                ElementwiseOp::Add | ElementwiseOp::Mul | ElementwiseOp::Swiglu => {
                    let zero = e.index(0)?;
                    let a = e.load_f32(args[0], zero, i)?;
                    let b = match self.rhs_len {
                        Some(p) => {
                            let p = e.index(p as i64)?;
                            let j = e.remui(i, p)?;
                            e.load_f32(args[1], zero, j)?
                        }
                        None => e.load_f32(args[1], zero, i)?,
                    };
                    match self.op {
                        ElementwiseOp::Add => e.addf(a, b)?,
                        ElementwiseOp::Mul => e.mulf(a, b)?,
                        _ => {
                            let act = e.silu(a)?;
                            let act = e.round_through(act, self.output)?;
                            e.mulf(act, b)?
                        }
                    }
                }
                ElementwiseOp::Silu => {
                    let zero = e.index(0)?;
                    let x = e.load_f32(args[0], zero, i)?;
                    e.silu(x)?
                }
                ElementwiseOp::Cast => {
                    let x = e.load(args[0], i)?;
                    e.to_f32(x)?
                }
            };
            let value = e.round_to(value, self.output)?;
            e.store(value, out, i);
            Ok(())
        })
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

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
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
}
