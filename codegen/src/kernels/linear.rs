//! `linear` kept in high precision (the output head, the MoE gate): `y[m, n] = Σ_k x[m, k] ·
//! w[n, k] (+ bias[n])`, one output per thread, f32 accumulation of exact products.
//!
//! BF16 operands (the head) run on the tensor cores ([`super::linear_mma`]); f32 operands (the
//! MoE gate, whose logits the recipe computes in f32; no TF32) are tiled through shared memory
//! ([`tiled`]): 64 × 64 outputs per block of 256 threads, each thread 4 × 4 of them, x and w
//! staged in 32-wide slabs of K. Every output still sums its products in increasing k from 0,
//! one rounding per step exactly as the one-thread-per-output form (the same `fma` chain), so
//! the results are that form's bit for bit. Other operands take the one-thread-per-output form.
//! The same kernel computes `grouped_linear` (routed experts kept in high precision by the
//! policy): row `r = t·top_k + slot` uses expert `indices[r]`'s weights and x row `r` or `t`.

use dsc_ir::DType;
use serde::Serialize;

use super::fp8_gemm::Grouped;
use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;

/// `[m, k] · [n, k]ᵀ`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linear {
    /// Rows of x.
    pub m: u64,
    /// Rows of w (outputs per row).
    pub n: u64,
    /// Reduction length.
    pub k: u64,
    /// x dtype.
    pub x: DType,
    /// w dtype.
    pub w: DType,
    /// Bias dtype, when there is one.
    pub bias: Option<DType>,
    /// Output dtype.
    pub output: DType,
    /// Present for `grouped_linear`: `m` is then tokens × top_k, w is `[E, n, k]`.
    pub grouped: Option<Grouped>,
}

impl Linear {
    /// Spec name.
    pub fn spec(&self) -> &'static str {
        if self.grouped.is_some() {
            "grouped_linear"
        } else {
            "linear"
        }
    }

    fn x_rows(&self) -> u64 {
        match self.grouped {
            Some(g) if !g.x_per_slot => g.tokens,
            _ => self.m,
        }
    }

    /// `(x, w, [bias,] [indices,] out)`.
    pub fn params(&self) -> Vec<Param> {
        let experts = self.grouped.map_or(1, |g| g.experts);
        let mut params = vec![
            Param::new("x", self.x, self.x_rows() * self.k),
            Param::new("w", self.w, experts * self.n * self.k),
        ];
        if let Some(bias) = self.bias {
            params.push(Param::new("bias", bias, self.n));
        }
        if let Some(g) = self.grouped {
            params.push(Param::new("indices", DType::I32, g.tokens * g.top_k));
        }
        params.push(Param::new("out", self.output, self.m * self.n));
        params
    }

    /// One warp per 16 × 8 tile (BF16), a block per 64 × 64 tile (f32) or one thread per output.
    pub fn launch(&self) -> Launch {
        if super::linear_mma::applies(self) {
            super::linear_mma::launch(self)
        } else if tiled::applies(self) {
            tiled::launch(self)
        } else {
            Launch::per_element(self.m * self.n)
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        if super::linear_mma::applies(self) {
            return super::linear_mma::build(self, module, entry);
        }
        if tiled::applies(self) {
            return tiled::build(self, module, entry);
        }
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.m * self.n,
            |e, args, i| {
                let (x, w, out) = (args[0], args[1], *args.last().expect("out"));
                let n = e.index(self.n as i64)?;
                let k = e.index(self.k as i64)?;
                let row = e.divui(i, n)?;
                let col = e.remui(i, n)?;
                let (x_row, w_row) = match self.grouped {
                    None => (row, col),
                    Some(g) => {
                        let indices = args[args.len() - 2];
                        let expert = e.load(indices, row)?;
                        // An index outside 0..experts (the CPU reference's error) reads expert 0.
                        let (expert, _) = e.checked_index(expert, g.experts as i64)?;
                        let x_row = if g.x_per_slot {
                            row
                        } else {
                            let top_k = e.index(g.top_k as i64)?;
                            e.divui(row, top_k)?
                        };
                        let w_row = e.muli(expert, n)?;
                        (x_row, e.addi(w_row, col)?)
                    }
                };
                let x_base = e.muli(x_row, k)?;
                let w_base = e.muli(w_row, k)?;
                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.k as i64, 1, |e, kk| {
                    let xv = e.load_f32(x, x_base, kk)?;
                    let wv = e.load_f32(w, w_base, kk)?;
                    let product = e.mulf(xv, wv)?;
                    e.accumulate(acc, product)
                })?;
                let mut value = e.get(acc)?;
                if self.bias.is_some() {
                    let zero_index = e.index(0)?;
                    let b = e.load_f32(args[2], zero_index, col)?;
                    value = e.addf(value, b)?;
                }
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}

/// The f32 `linear` tiled through shared memory (module doc).
mod tiled {
    use dsc_ir::DType;
    use melior::ir::r#type::MemRefType;
    use melior::ir::{Attribute, BlockLike, Type, Value};

    use super::Linear;
    use crate::error::CodegenError;
    use crate::kernels::{Launch, kernel_args, param_types};
    use crate::mlir::KernelModule;
    use crate::mlir::emit::Emit;
    use crate::mlir::kernel::Dimension;

    /// Output rows and columns of a block's tile.
    const TILE: i64 = 64;
    /// K per shared-memory slab.
    const SLAB: i64 = 32;
    /// Threads: 16 × 16, each 4 × 4 outputs (rows `ty + 16i`, columns `tx + 16j`).
    const THREADS: i64 = 256;
    /// Outputs per thread along each axis.
    const PER: i64 = TILE / 16;
    /// A slab row's stride in shared memory (one word of padding against bank conflicts).
    const STRIDE: i64 = SLAB + 1;

    /// f32 x and w, one weight matrix.
    pub fn applies(linear: &Linear) -> bool {
        linear.x == DType::F32 && linear.w == DType::F32 && linear.grouped.is_none()
    }

    fn tiles(linear: &Linear) -> (u64, u64) {
        (
            linear.m.div_ceil(TILE as u64),
            linear.n.div_ceil(TILE as u64),
        )
    }

    /// One block per 64 × 64 output tile.
    pub fn launch(linear: &Linear) -> Launch {
        let (rows, cols) = tiles(linear);
        Launch::blocks(rows * cols, THREADS as u32)
    }

    /// Builds the kernel.
    pub fn build(
        linear: &Linear,
        module: &KernelModule<'_>,
        entry: &str,
    ) -> Result<(), CodegenError> {
        let context = module.context();
        let types = param_types(context, &linear.params());
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        let slab: Type =
            MemRefType::new(Type::float32(context), &[TILE * STRIDE], None, workgroup).into();
        module.add_kernel_with_shared(entry, &types, &[slab, slab], |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, types.len())?;
            let (x, w, out) = (args[0], args[1], args[args.len() - 1]);
            let bias = linear.bias.map(|_| args[2]);
            let x_slab: Value = block.argument(types.len())?.into();
            let w_slab: Value = block.argument(types.len() + 1)?.into();
            let (m, n, k) = (linear.m as i64, linear.n as i64, linear.k as i64);
            let (_, col_tiles) = tiles(linear);

            let tid = e.thread_x()?;
            let sixteen = e.index(16)?;
            let tx = e.remui(tid, sixteen)?;
            let ty = e.divui(tid, sixteen)?;
            let tile = e.block_index(Dimension::X)?;
            let col_tiles = e.index(col_tiles as i64)?;
            let tile_size = e.index(TILE)?;
            let row0 = e.divui(tile, col_tiles)?;
            let row0 = e.muli(row0, tile_size)?;
            let col0 = e.remui(tile, col_tiles)?;
            let col0 = e.muli(col0, tile_size)?;

            let zero = e.f32(0.0)?;
            let mut acc = Vec::new();
            for _ in 0..PER * PER {
                acc.push(e.cell(zero)?);
            }
            let m_v = e.index(m)?;
            let n_v = e.index(n)?;
            let k_v = e.index(k)?;
            let stride = e.index(STRIDE)?;
            let slab_v = e.index(SLAB)?;
            // Each slab: thread `tid` loads elements `tid + 256 i` of the 64 × 32 x and w
            // slabs (row `/ 32`, column `% 32`: a warp reads one 128-byte row segment), 0
            // outside the matrices (a zero product leaves a sum from +0 unchanged).
            e.for_const(0, (k + SLAB - 1) / SLAB * SLAB, SLAB, |e, k0| {
                for i in 0..TILE * SLAB / THREADS {
                    let offset = e.index(i * THREADS)?;
                    let element = e.addi(tid, offset)?;
                    let r = e.divui(element, slab_v)?;
                    let c = e.remui(element, slab_v)?;
                    let kk = e.addi(k0, c)?;
                    let k_in = e.lt(kk, k_v)?;
                    let at = e.muli(r, stride)?;
                    let at = e.addi(at, c)?;
                    for (source, base, limit, slab) in
                        [(x, row0, m_v, x_slab), (w, col0, n_v, w_slab)]
                    {
                        let row = e.addi(base, r)?;
                        let row_in = e.lt(row, limit)?;
                        let inside = e.andi(row_in, k_in)?;
                        let zero_index = e.index(0)?;
                        let flat = e.muli(row, k_v)?;
                        let flat = e.addi(flat, kk)?;
                        let flat = e.select(inside, flat, zero_index)?;
                        let v = e.load_f32(source, zero_index, flat)?;
                        let zero = e.f32(0.0)?;
                        let v = e.select(inside, v, zero)?;
                        e.store(v, slab, at);
                    }
                }
                e.barrier();
                e.for_const(0, SLAB, 1, |e, kk| {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for i in 0..PER {
                        let offset = e.index(16 * i)?;
                        let row = e.addi(ty, offset)?;
                        let at = e.muli(row, stride)?;
                        let at = e.addi(at, kk)?;
                        a.push(e.load(x_slab, at)?);
                        let col = e.addi(tx, offset)?;
                        let at = e.muli(col, stride)?;
                        let at = e.addi(at, kk)?;
                        b.push(e.load(w_slab, at)?);
                    }
                    for i in 0..PER as usize {
                        for j in 0..PER as usize {
                            let product = e.mulf(a[i], b[j])?;
                            e.accumulate(acc[i * PER as usize + j], product)?;
                        }
                    }
                    Ok(())
                })?;
                e.barrier();
                Ok(())
            })?;
            for i in 0..PER {
                for j in 0..PER {
                    let offset = e.index(16 * i)?;
                    let row = e.addi(ty, offset)?;
                    let row = e.addi(row0, row)?;
                    let offset = e.index(16 * j)?;
                    let col = e.addi(tx, offset)?;
                    let col = e.addi(col0, col)?;
                    let row_in = e.lt(row, m_v)?;
                    let col_in = e.lt(col, n_v)?;
                    let inside = e.andi(row_in, col_in)?;
                    let cell = acc[(i * PER + j) as usize];
                    e.if_then(inside, |e| {
                        let mut value = e.get(cell)?;
                        if let Some(bias) = bias {
                            let zero_index = e.index(0)?;
                            let b = e.load_f32(bias, zero_index, col)?;
                            value = e.addf(value, b)?;
                        }
                        let value = e.round_to(value, linear.output)?;
                        let at = e.muli(row, n_v)?;
                        let at = e.addi(at, col)?;
                        e.store(value, out, at);
                        Ok(())
                    })?;
                }
            }
            Ok(())
        })
    }
}
