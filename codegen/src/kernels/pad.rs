//! `pad`: zeros around the operand along one axis (the VJP of `slice`), one thread per output
//! element of `[outer, before + len + after, inner]`. A copy of the operand's bytes and zero
//! bytes elsewhere (+0 in every float format, code 0 in both FP8 ones): bit exact, any dtype.

use dsc_ir::DType;
use melior::ir::ValueLike;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel, element_type};
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};

/// `x` of `[outer, len, inner]` padded along its middle axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pad {
    /// Element dtype (unchanged).
    pub dtype: DType,
    /// Product of the dims before the axis.
    pub outer: u64,
    /// The axis length of the operand.
    pub len: u64,
    /// Zeros ahead of the operand along the axis.
    pub before: u64,
    /// Zeros behind it.
    pub after: u64,
    /// Product of the dims after the axis.
    pub inner: u64,
}

impl Pad {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "pad"
    }

    /// The axis length of the result.
    fn len_out(&self) -> u64 {
        self.before + self.len + self.after
    }

    /// Output elements.
    fn numel(&self) -> u64 {
        self.outer * self.len_out() * self.inner
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.dtype, self.outer * self.len * self.inner),
            Param::new("out", self.dtype, self.numel()),
        ]
    }

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.numel())
    }

    /// Builds the kernel.
    pub fn build(
        &self,
        module: &crate::mlir::KernelModule<'_>,
        entry: &str,
    ) -> Result<(), CodegenError> {
        add_per_element_kernel(module, entry, &self.params(), self.numel(), |e, args, i| {
            let (x, out) = (args[0], args[1]);
            let inner = e.index(self.inner as i64)?;
            let len_out = e.index(self.len_out() as i64)?;
            let r = e.remui(i, inner)?;
            let rest = e.divui(i, inner)?;
            let a = e.remui(rest, len_out)?;
            let o = e.divui(rest, len_out)?;
            // Unsigned: a < before wraps a − before past len, so one comparison covers both pads.
            let before = e.index(self.before as i64)?;
            let a_in = e.subi(a, before)?;
            let len = e.index(self.len as i64)?;
            let inside = e.lt(a_in, len)?;
            e.if_then(inside, |e| {
                let row = e.muli(o, len)?;
                let row = e.addi(row, a_in)?;
                let source = e.muli(row, inner)?;
                let source = e.addi(source, r)?;
                let value = e.load(x, source)?;
                e.store(value, out, i);
                Ok(())
            })?;
            let outside = e.cmpi(melior::dialect::arith::CmpiPredicate::Uge, a_in, len)?;
            e.if_then(outside, |e| {
                let zero = zero(&e, self.dtype)?;
                e.store(zero, out, i);
                Ok(())
            })
        })
    }
}

/// The all-zero-bits element of `dtype` (an integer constant, as a float type's bit pattern).
fn zero<'c, 'a>(e: &Emit<'c, 'a>, dtype: DType) -> Emitted<'c, 'a> {
    let bits = e.int(8 * dtype.size_bytes() as u32, 0)?;
    let ty = element_type(e.context, dtype);
    if ty == bits.r#type() {
        Ok(bits)
    } else {
        e.bitcast(bits, ty)
    }
}
