//! `linear` kept in high precision (the output head, the MoE gate): `y[m, n] = Σ_k x[m, k] ·
//! w[n, k] (+ bias[n])`, f32 accumulation of exact products.
//!
//! BF16 operands (the head) run on the tensor cores ([`super::linear_mma`]); f32 activations
//! (the MoE gate, whose logits the recipe computes in f32 from BF16 or f32 weights; no TF32) are
//! tiled through shared memory
//! ([`tiled`]): up to 64 × 64 outputs per block of 256 threads, each thread up to 4 × 4 of
//! them (fewer columns for narrow outputs, fewer rows where 64-row tiles would leave SMs idle),
//! x and w staged in 32-wide slabs of K.
//! Every output still sums its products in increasing k from 0, one rounding per step exactly
//! as the one-thread-per-output form (the same `fma` chain), so the results are that form's bit
//! for bit. Other operands take the one-thread-per-output form.
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
    use melior::dialect::llvm;
    use melior::ir::attribute::DenseI64ArrayAttribute;
    use melior::ir::r#type::MemRefType;
    use melior::ir::{Attribute, BlockLike, Type, Value};

    use super::Linear;
    use crate::error::CodegenError;
    use crate::kernels::{Launch, kernel_args, param_types};
    use crate::mlir::KernelModule;
    use crate::mlir::emit::Emit;
    use crate::mlir::kernel::Dimension;

    /// Streaming multiprocessors the tile choice fills (an H100 SXM's 132).
    const SMS: u64 = 132;
    /// K per shared-memory slab.
    const SLAB: i64 = 32;
    /// Threads: 16 × 16, each `per_m × per_n` outputs (rows `ty + 16i`, columns `tx + 16j`).
    const THREADS: i64 = 256;
    /// A slab row's stride in shared memory: four words of padding keep rows 16-byte aligned
    /// for `ld.shared.v4` and spread a warp's 16 columns of w over all banks.
    const STRIDE: i64 = SLAB + 4;

    /// One weight matrix, float operands not both BF16 (those take the tensor cores): the MoE
    /// gate's f32 x with BF16 or f32 weights (a BF16 or F16 element widens to f32 exactly).
    pub fn applies(linear: &Linear) -> bool {
        let float = |d: DType| matches!(d, DType::F32 | DType::Bf16 | DType::F16);
        float(linear.x)
            && float(linear.w)
            && linear.grouped.is_none()
            && !super::super::linear_mma::applies(linear)
    }

    /// Output columns per thread: 4 (a 64-column tile), fewer for narrow outputs (the gate of
    /// 32 experts: 2) so that no thread computes only padding.
    fn per_n(linear: &Linear) -> i64 {
        (linear.n.div_ceil(16).next_power_of_two() as i64).min(4)
    }

    /// Output rows per thread: 4, 2 or 1, whichever has the fewest shared-memory reads per
    /// SM (`1/per_m + 1/per_n` per product, over the SMs the blocks fill): a narrow gate of
    /// few row tiles takes smaller ones to fill the GPU.
    fn per_m(linear: &Linear) -> i64 {
        let per_n = per_n(linear) as f64;
        let cost = |per_m: i64| {
            let blocks =
                linear.m.div_ceil(16 * per_m as u64) * linear.n.div_ceil(16 * per_n as u64);
            (1.0 / per_m as f64 + 1.0 / per_n) / blocks.min(SMS) as f64
        };
        [4, 2, 1]
            .into_iter()
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap_or(4)
    }

    fn tiles(linear: &Linear) -> (u64, u64) {
        (
            linear.m.div_ceil(16 * per_m(linear) as u64),
            linear.n.div_ceil(16 * per_n(linear) as u64),
        )
    }

    /// One block per 16·`per_m` × 16·`per_n` output tile (64 × 64 at most).
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
        let (per_m, per_n) = (per_m(linear), per_n(linear));
        let (tile_m, tile_n) = (16 * per_m, 16 * per_n);
        let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
        // Both slabs in one buffer, with room to start them at a 16-byte boundary (a workgroup
        // buffer is only 4-byte aligned).
        let shared: [Type; 1] = [MemRefType::new(
            Type::float32(context),
            &[(tile_m + tile_n) * STRIDE + 3],
            None,
            workgroup,
        )
        .into()];
        module.add_kernel_with_shared(entry, &types, &shared, |block, location| {
            let e = Emit::new(context, block, location);
            let args = kernel_args(block, types.len())?;
            let (x, w, out) = (args[0], args[1], args[args.len() - 1]);
            let bias = linear.bias.map(|_| args[2]);
            let slabs: Value = block.argument(types.len())?.into();
            let (m, n, k) = (linear.m as i64, linear.n as i64, linear.k as i64);
            let (_, col_tiles) = tiles(linear);

            let tid = e.thread_x()?;
            let sixteen = e.index(16)?;
            let tx = e.remui(tid, sixteen)?;
            let ty = e.divui(tid, sixteen)?;
            let tile = e.block_index(Dimension::X)?;
            let col_tiles = e.index(col_tiles as i64)?;
            let row0 = e.divui(tile, col_tiles)?;
            let tile_m_v = e.index(tile_m)?;
            let row0 = e.muli(row0, tile_m_v)?;
            let col0 = e.remui(tile, col_tiles)?;
            let tile_n_v = e.index(tile_n)?;
            let col0 = e.muli(col0, tile_n_v)?;

            let zero = e.f32(0.0)?;
            let mut acc = Vec::new();
            for _ in 0..per_m * per_n {
                acc.push(e.cell(zero)?);
            }
            let m_v = e.index(m)?;
            let n_v = e.index(n)?;
            let k_v = e.index(k)?;
            let stride = e.index(STRIDE)?;
            let slab_v = e.index(SLAB)?;
            // The slabs' start: the buffer's first 16-byte boundary, `skip` elements in; w's
            // slab follows x's.
            let i32_type = e.int_type(32);
            let raw = e.address_of(slabs)?;
            let raw = e.trunci(raw, i32_type)?;
            let fifteen = e.int(32, 15)?;
            let aligned = e.addi(raw, fifteen)?;
            let mask = e.int(32, !15)?;
            let aligned = e.andi(aligned, mask)?;
            let skip = e.subi(aligned, raw)?;
            let two = e.int(32, 2)?;
            let skip = e.shrui(skip, two)?;
            let skip = e.index_cast(skip, e.index_type())?;
            let w_skip = e.index(tile_m * STRIDE)?;
            let w_skip = e.addi(skip, w_skip)?;
            // The shared addresses where this thread's rows of x and columns of w start.
            let mut places = [Vec::new(), Vec::new()];
            for (list, (slab_start, first, count)) in places
                .iter_mut()
                .zip([(0, ty, per_m), (tile_m * STRIDE, tx, per_n)])
            {
                let start = e.int(32, 4 * slab_start)?;
                let base = e.addi(aligned, start)?;
                let first = e.index_cast(first, i32_type)?;
                for i in 0..count {
                    let offset = e.int(32, 16 * i)?;
                    let row = e.addi(first, offset)?;
                    let bytes = e.int(32, 4 * STRIDE)?;
                    let at = e.muli(row, bytes)?;
                    list.push(e.addi(base, at)?);
                }
            }
            let [a_places, b_places] = places;
            // Each slab: thread `tid` loads elements `tid + 256 i` of the x and w slabs (row
            // `/ 32`, column `% 32`: a warp reads one 128-byte row segment), 0 outside the
            // matrices (a zero product leaves a sum from +0 unchanged).
            e.for_const(0, (k + SLAB - 1) / SLAB * SLAB, SLAB, |e, k0| {
                for (source, base, limit, slab_start, rows) in
                    [(x, row0, m_v, skip, tile_m), (w, col0, n_v, w_skip, tile_n)]
                {
                    for i in 0..rows * SLAB / THREADS {
                        let offset = e.index(i * THREADS)?;
                        let element = e.addi(tid, offset)?;
                        let r = e.divui(element, slab_v)?;
                        let c = e.remui(element, slab_v)?;
                        let kk = e.addi(k0, c)?;
                        let k_in = e.lt(kk, k_v)?;
                        let at = e.muli(r, stride)?;
                        let at = e.addi(at, c)?;
                        let at = e.addi(slab_start, at)?;
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
                        e.store(v, slabs, at);
                    }
                }
                e.barrier();
                // Unrolled over the slab, four k at a time (16-byte loads at constant offsets
                // from the rows' starts); each output still adds its products in k order.
                for k4 in (0..SLAB).step_by(4) {
                    let a = a_places
                        .iter()
                        .map(|&place| shared_load_v4_f32(&e, place, 4 * k4))
                        .collect::<Result<Vec<_>, _>>()?;
                    let b = b_places
                        .iter()
                        .map(|&place| shared_load_v4_f32(&e, place, 4 * k4))
                        .collect::<Result<Vec<_>, _>>()?;
                    for q in 0..4 {
                        for (i, a) in a.iter().enumerate() {
                            for (j, b) in b.iter().enumerate() {
                                let product = e.mulf(a[q], b[q])?;
                                e.accumulate(acc[i * per_n as usize + j], product)?;
                            }
                        }
                    }
                }
                e.barrier();
                Ok(())
            })?;
            for i in 0..per_m {
                for j in 0..per_n {
                    let offset = e.index(16 * i)?;
                    let row = e.addi(ty, offset)?;
                    let row = e.addi(row0, row)?;
                    let offset = e.index(16 * j)?;
                    let col = e.addi(tx, offset)?;
                    let col = e.addi(col0, col)?;
                    let row_in = e.lt(row, m_v)?;
                    let col_in = e.lt(col, n_v)?;
                    let inside = e.andi(row_in, col_in)?;
                    let cell = acc[(i * per_n + j) as usize];
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

    /// The four f32 at the 16-byte aligned shared address `place + offset` (`place` an `i32`).
    fn shared_load_v4_f32<'c, 'a>(
        e: &Emit<'c, 'a>,
        place: Value<'c, '_>,
        offset: i64,
    ) -> Result<[Value<'c, 'a>; 4], CodegenError> {
        let f32_type = e.f32_type();
        let words = e.push(e.inline_asm_op(
            &format!("ld.shared.v4.f32 {{$0, $1, $2, $3}}, [$4+{offset}];"),
            "=f,=f,=f,=f,r",
            &[place],
            &[llvm::r#type::r#struct(e.context, &[f32_type; 4], false)],
        )?)?;
        let word = |i: i64| -> Result<Value<'c, 'a>, CodegenError> {
            let position = DenseI64ArrayAttribute::new(e.context, &[i]);
            e.push(llvm::extract_value(
                e.context, words, position, f32_type, e.location,
            ))
        };
        Ok([word(0)?, word(1)?, word(2)?, word(3)?])
    }
}
