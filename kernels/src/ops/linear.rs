//! High-precision GEMMs: `linear` (activations times a weight's transpose, the layout of
//! Hugging Face `nn.Linear`) and batched `matmul`, both with f32 accumulation.
//!
//! The products run on the `gemm` crate's blocked f32 kernels: every sum is f32, but the order
//! of summation (and the use of FMA) is the library's, as it is cuBLAS's on the GPU.

use super::error::{OpError, check_len, check_shape, ranked};
use dsc_ir::Shape;
use rayon::prelude::*;

/// Sizes of `linear`: x `[.., K]` (every leading dim a row) times w `[N, K]`ᵀ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearDims {
    /// Rows of x: the product of its leading dims.
    pub m: usize,
    /// Outputs per row (w's rows).
    pub n: usize,
    /// The reduction length (w's columns, x's last dim).
    pub k: usize,
}

impl LinearDims {
    /// The sizes of the op whose x and w have these shapes (w rank 2, x's last dim its K).
    pub fn from_shapes(x: &Shape, w: &Shape) -> Result<Self, OpError> {
        let [n, k] = ranked("the weight of a linear", w)?;
        let last = usize::try_from(x.last())
            .map_err(|_| OpError::Shape(format!("x: shape {x} overflows")))?;
        if last != k {
            return Err(OpError::Shape(format!(
                "x's last dim {last} is not the weight's K {k} (w {w})"
            )));
        }
        let m = usize::try_from(x.numel())
            .map_err(|_| OpError::Shape(format!("x: shape {x} overflows")))?
            .checked_div(k)
            .unwrap_or(0);
        Ok(LinearDims { m, n, k })
    }
}

/// A strided matrix inside a slice: element `(i, j)` is at `offset + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A row-major `[rows, cols]` matrix starting at `offset`.
    pub(crate) fn rows(offset: usize, cols: usize) -> Self {
        View {
            offset,
            rs: cols,
            cs: 1,
        }
    }

    /// True when every element of a `rows × cols` view lies inside a slice of `len`.
    fn fits(self, len: usize, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let last = (rows - 1)
            .checked_mul(self.rs)
            .and_then(|a| {
                (cols - 1)
                    .checked_mul(self.cs)
                    .and_then(|b| a.checked_add(b))
            })
            .and_then(|a| a.checked_add(self.offset));
        last.is_some_and(|l| l < len)
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]` in f32 over strided views; `accumulate` adds to
/// `dst` instead of overwriting it; `parallel` lets the library use rayon's threads (leave it
/// off inside tasks that are already parallel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    (m, n, k): (usize, usize, usize),
    parallel: bool,
) {
    // These guard the raw-pointer call below; callers establish them from checked lengths.
    assert!(d.fits(dst.len(), m, n), "gemm dst view out of bounds");
    assert!(l.fits(lhs.len(), m, k), "gemm lhs view out of bounds");
    assert!(r.fits(rhs.len(), k, n), "gemm rhs view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum is 0; the library is not asked to handle k = 0.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[d.offset + i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // Strides fit isize: every view fits a slice, and slices are at most isize::MAX bytes.
    let s = |x: usize| x as isize;
    // SAFETY: the asserts above keep every element of the three views inside their slices;
    // `dst` is a unique borrow, so it aliases neither operand; the views of `dst` that callers
    // pass never map two (i, j) to one element (row and column strides of disjoint extents).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.offset),
            s(d.cs),
            s(d.rs),
            accumulate,
            lhs.as_ptr().add(l.offset),
            s(l.cs),
            s(l.rs),
            rhs.as_ptr().add(r.offset),
            s(r.cs),
            s(r.rs),
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`, f32 accumulation; the bias is added after the
/// product, once per element (as a fused GEMM epilogue does).
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<f32>, OpError> {
    check_shape("x", x.len(), &[m, k])?;
    check_shape("weight", w.len(), &[n, k])?;
    if let Some(b) = bias {
        check_len("bias", b.len(), n)?;
    }
    let mut y = vec![0.0f32; m * n];
    // w[n, k] read as the k × n matrix wᵀ: element (kk, j) is w[j·k + kk].
    let wt = View {
        offset: 0,
        rs: 1,
        cs: k,
    };
    gemm_into(
        &mut y,
        View::rows(0, n),
        false,
        x,
        View::rows(0, k),
        w,
        wt,
        (m, n, k),
        true,
    );
    if let (Some(b), true) = (bias, n > 0) {
        for row in y.chunks_mut(n) {
            for (v, &bj) in row.iter_mut().zip(b) {
                *v += bj;
            }
        }
    }
    Ok(y)
}

/// Batched `c[b, m, n] = a[b, m, k] · b[b, k, n]`, or `a · bᵀ` with b `[b, n, k]` when
/// `transpose_b`; f32 accumulation. Leading batch axes of the IR op are flattened into `batch`.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    transpose_b: bool,
) -> Result<Vec<f32>, OpError> {
    check_shape("lhs", a.len(), &[batch, m, k])?;
    let b_dims = if transpose_b {
        [batch, n, k]
    } else {
        [batch, k, n]
    };
    check_shape("rhs", b.len(), &b_dims)?;
    let mut c = vec![0.0f32; batch * m * n];
    if m * n == 0 {
        return Ok(c);
    }
    // One batch alone gets the library's threads; several run one per task.
    let parallel = batch == 1;
    c.par_chunks_mut(m * n).enumerate().for_each(|(i, ci)| {
        let rv = if transpose_b {
            View {
                offset: i * n * k,
                rs: 1,
                cs: k,
            }
        } else {
            View::rows(i * k * n, n)
        };
        gemm_into(
            ci,
            View::rows(0, n),
            false,
            a,
            View::rows(i * m * k, k),
            b,
            rv,
            (m, n, k),
            parallel,
        );
    });
    Ok(c)
}
