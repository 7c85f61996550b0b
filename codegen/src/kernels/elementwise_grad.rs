//! The elementwise kinds of the backward pass, one element per thread: `scale` (`x · factor`),
//! `silu_grad` and `swiglu_grad`, in f32 in the order of the CPU references
//! (`dsc_kernels::ops::grad::elementwise_grad`: torch's `silu_backward`,
//! `dy · σ · (1 + x · (1 − σ))` with `σ = 1 / (1 + e^−x)`), each result rounded to its output
//! dtype once.

use dsc_ir::DType;
use melior::ir::Value;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// What an [`ElementwiseGrad`] kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GradOp {
    /// `out = x · factor`.
    Scale {
        /// The factor, as the f32 the reference multiplies by.
        factor: f32,
    },
    /// `dx = silu'(x) · dy`.
    SiluGrad,
    /// `dgate = silu'(gate) · dy · up`, `dup = dy · silu(gate)`.
    SwigluGrad,
}

/// A backward elementwise op over `len` elements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementwiseGrad {
    /// The operation.
    pub op: GradOp,
    /// Elements.
    pub len: u64,
    /// Dtype of each input, in order.
    pub inputs: Vec<DType>,
    /// Dtype of each output, in order.
    pub outputs: Vec<DType>,
}

impl ElementwiseGrad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        match self.op {
            GradOp::Scale { .. } => "scale",
            GradOp::SiluGrad => "silu_grad",
            GradOp::SwigluGrad => "swiglu_grad",
        }
    }

    /// `(x, out)`, `(x, dy, dx)` or `(gate, up, dy, dgate, dup)`.
    pub fn params(&self) -> Vec<Param> {
        let (inputs, outputs): (&[&'static str], &[&'static str]) = match self.op {
            GradOp::Scale { .. } => (&["x"], &["out"]),
            GradOp::SiluGrad => (&["x", "dy"], &["dx"]),
            GradOp::SwigluGrad => (&["gate", "up", "dy"], &["dgate", "dup"]),
        };
        inputs
            .iter()
            .zip(&self.inputs)
            .chain(outputs.iter().zip(&self.outputs))
            .map(|(&name, &dtype)| Param::new(name, dtype, self.len))
            .collect()
    }

    /// One thread per element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let n_in = self.inputs.len();
        add_per_element_kernel(module, entry, &self.params(), self.len, |e, args, i| {
            let zero = e.index(0)?;
            let mut x = Vec::with_capacity(n_in);
            for &buffer in &args[..n_in] {
                x.push(e.load_f32(buffer, zero, i)?);
            }
            let results: Vec<Value> = match self.op {
                GradOp::Scale { factor } => {
                    let factor = e.f32(factor)?;
                    vec![e.mulf(x[0], factor)?]
                }
                GradOp::SiluGrad => vec![silu_backward(&e, x[1], x[0])?],
                GradOp::SwigluGrad => {
                    let (gate, up, dy) = (x[0], x[1], x[2]);
                    let dy_up = e.mulf(dy, up)?;
                    let dgate = silu_backward(&e, dy_up, gate)?;
                    let act = e.silu(gate)?;
                    let dup = e.mulf(dy, act)?;
                    vec![dgate, dup]
                }
            };
            for ((value, &buffer), &dtype) in
                results.into_iter().zip(&args[n_in..]).zip(&self.outputs)
            {
                let value = e.round_to(value, dtype)?;
                e.store(value, buffer, i);
            }
            Ok(())
        })
    }
}

/// torch's `silu_backward(dy, x)`: `dy · σ · (1 + x · (1 − σ))`, left to right.
fn silu_backward<'c, 'a>(e: &Emit<'c, 'a>, dy: Value<'c, 'a>, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
    let s = e.sigmoid(x)?;
    let one = e.f32(1.0)?;
    let complement = e.subf(one, s)?;
    let t = e.mulf(x, complement)?;
    let t = e.addf(one, t)?;
    let ds = e.mulf(dy, s)?;
    e.mulf(ds, t)
}
