//! `transpose` and `concat`: one output element per thread, copying bits (dtypes unchanged).
//!
//! The index arithmetic is static: output coordinates from the flat index by the output dims,
//! then the input's flat index by its strides (transpose), or the operand holding the
//! coordinate along the axis (concat, a chain of `scf.if` over the operands).

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// `out = x.permute(perm)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transpose {
    /// Element dtype.
    pub dtype: DType,
    /// Input dims.
    pub dims: Vec<u64>,
    /// Output axis `i` is input axis `perm[i]`.
    pub perm: Vec<usize>,
}

impl Transpose {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "transpose"
    }

    fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    /// `(x, out)`.
    pub fn params(&self) -> Vec<Param> {
        vec![
            Param::new("x", self.dtype, self.len()),
            Param::new("out", self.dtype, self.len()),
        ]
    }

    /// One thread per element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.len())
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        let strides: Vec<u64> = (0..self.dims.len())
            .map(|a| self.dims[a + 1..].iter().product())
            .collect();
        let out_dims: Vec<u64> = self.perm.iter().map(|&p| self.dims[p]).collect();
        add_per_element_kernel(module, entry, &self.params(), self.len(), |e, args, i| {
            let (x, out) = (args[0], args[1]);
            let mut rest = i;
            let mut source = e.index(0)?;
            for axis in (0..out_dims.len()).rev() {
                let size = e.index(out_dims[axis] as i64)?;
                let coordinate = e.remui(rest, size)?;
                rest = e.divui(rest, size)?;
                let stride = e.index(strides[self.perm[axis]] as i64)?;
                let term = e.muli(coordinate, stride)?;
                source = e.addi(source, term)?;
            }
            let value = e.load(x, source)?;
            e.store(value, out, i);
            Ok(())
        })
    }
}

/// `out = concat(inputs, axis)`: each input `[outer, len_j, inner]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concat {
    /// Element dtype.
    pub dtype: DType,
    /// Product of the dims before the axis.
    pub outer: u64,
    /// Each input's length along the axis.
    pub lens: Vec<u64>,
    /// Product of the dims after the axis.
    pub inner: u64,
}

impl Concat {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "concat"
    }

    fn total(&self) -> u64 {
        self.lens.iter().sum()
    }

    /// `(x0, x1, …, out)`.
    pub fn params(&self) -> Vec<Param> {
        let mut params: Vec<Param> = self
            .lens
            .iter()
            .map(|&len| Param::new("x", self.dtype, self.outer * len * self.inner))
            .collect();
        params.push(Param::new(
            "out",
            self.dtype,
            self.outer * self.total() * self.inner,
        ));
        params
    }

    /// One thread per output element.
    pub fn launch(&self) -> Launch {
        Launch::per_element(self.outer * self.total() * self.inner)
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.outer * self.total() * self.inner,
            |e, args, i| {
                let out = *args.last().expect("out");
                let inner = e.index(self.inner as i64)?;
                let total = e.index(self.total() as i64)?;
                let r = e.remui(i, inner)?;
                let rest = e.divui(i, inner)?;
                let a = e.remui(rest, total)?;
                let o = e.divui(rest, total)?;
                let mut start = 0u64;
                for (j, &len) in self.lens.iter().enumerate() {
                    let begin = e.index(start as i64)?;
                    let end = e.index((start + len) as i64)?;
                    let from = e.cmpi(CmpiPredicate::Uge, a, begin)?;
                    let to = e.lt(a, end)?;
                    let here = e.andi(from, to)?;
                    let x = args[j];
                    e.if_then(here, |e| {
                        let local = e.subi(a, begin)?;
                        let source = flat(&e, o, local, r, len, self.inner)?;
                        let value = e.load(x, source)?;
                        e.store(value, out, i);
                        Ok(())
                    })?;
                    start += len;
                }
                Ok(())
            },
        )
    }
}

/// `(o · len + a) · inner + r`.
fn flat<'c, 'a>(
    e: &Emit<'c, 'a>,
    o: Value<'c, '_>,
    a: Value<'c, '_>,
    r: Value<'c, '_>,
    len: u64,
    inner: u64,
) -> Emitted<'c, 'a> {
    let len = e.index(len as i64)?;
    let inner = e.index(inner as i64)?;
    let row = e.muli(o, len)?;
    let row = e.addi(row, a)?;
    let at = e.muli(row, inner)?;
    e.addi(at, r)
}
