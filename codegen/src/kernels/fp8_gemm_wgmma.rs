//! The Hopper form of `fp8_gemm` (sm_90a): one warpgroup per 64 × N output tile (N = 128, 64,
//! 32 or 16, [`block_n_for`]), FP8 products summed by
//! `wgmma.mma_async.sync.aligned.m64nNk32.f32.<fp8>.<fp8>` (the only
//! instruction that runs FP8 at full rate on Hopper: `mma.sync` e4m3 becomes FP16 HMMA there)
//! from shared memory, and every promotion interval the partial sums scaled by `s_x · s_w` and
//! added into f32 accumulators on the CUDA cores (DESIGN.md §3), in the CPU reference's order.
//!
//! Per 128-deep K block the 128 threads stage A (64 × 128 bytes) and B (N × 128 bytes) in
//! shared memory with 16-byte loads and stores, in the 128-byte-swizzled K-major layout wgmma
//! reads (row `r` at `128·r`, its 16-byte chunk `c` at chunk `c ^ (r mod 8)`, 1024-byte aligned
//! atoms of 8 rows), rows past M or N and K past its end as zeros. Each promotion interval is
//! `interval / 32` wgmmas into a fresh accumulator (scale-d 0 on the first), then the promotion.
//! The matrix descriptors (PTX ISA, "Matrix Descriptor Format"): start address >> 4, leading
//! byte offset 0, stride byte offset 1024 >> 4 (between 8-row atoms), swizzle mode 1 (128 B);
//! each k-step of 32 advances the start address by 32 bytes.
//!
//! Grouped (routed experts), M is the expert-contiguous layout of [`super::moe_dispatch`]
//! padded to 64-row tiles: a tile of expert −1 is skipped, tile row `p` reads x row `rows[p]`
//! (or `rows[p] / top_k`) and writes output row `rows[p]` (padding, −1, reads zeros and stores
//! nothing), B is the expert's `[N, K]` slice, and `s_w` its scales.
//!
//! This first form is not pipelined (one stage, loads then MMAs) and has no TMA: issue 11
//! continues it (multi-stage TMA ring, warp specialization, persistent tiles).

use melior::dialect::llvm;
use melior::ir::attribute::DenseI64ArrayAttribute;
use melior::ir::operation::OperationBuilder;
use melior::ir::{BlockLike, Value};

use super::fp8_gemm::{Fp8Gemm, GemmForm, Operands, tile_row};
use super::vector_access::{global_load_v4, shared_store_v4};
use super::{Launch, kernel_args, param_types, shared_bytes_type};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};
use crate::mlir::kernel::Dimension;

/// Rows of a block's tile.
pub const BLOCK_M: u64 = 64;
/// The widest tile: one weight-scale block, so that every tile lies in one.
pub const MAX_BLOCK_N: u64 = 128;
/// The SMs of the Hopper parts dsc targets (H100 SXM, H200), which [`block_n_for`] fills.
const SMS: u64 = 132;
/// K staged per step (one activation tile, one weight-scale block).
pub const BLOCK_K: u64 = 128;
/// One warpgroup.
pub const THREADS: u32 = 128;
/// K of one wgmma.
const MMA_K: u64 = 32;
/// The swizzle atom (8 rows of 128 bytes) and the alignment it needs.
const ATOM: u64 = 1024;
const A_BYTES: u64 = BLOCK_M * BLOCK_K;

/// Columns of `gemm`'s tiles.
fn block_n(gemm: &Fp8Gemm) -> u64 {
    match gemm.form {
        GemmForm::Wgmma { block_n } => block_n,
        _ => MAX_BLOCK_N,
    }
}

/// Accumulator registers per thread: 64 × `block_n` f32 over 128 threads.
fn regs(gemm: &Fp8Gemm) -> usize {
    (BLOCK_M * block_n(gemm) / u64::from(THREADS)) as usize
}

/// The tile width for `gemm`: [`widest_busy_width`] over its M tiles and N.
pub fn block_n_for(gemm: &Fp8Gemm) -> u64 {
    widest_busy_width(tiles_m(gemm), gemm.n)
}

/// The width of a 64-row wgmma tile (DeepGEMM's concern, simplified): the widest of 128, 64,
/// 32, 16 whose grid of `tiles_m` rows of tiles over `n` columns keeps at least 80% of the SMs
/// busy over its waves (`tiles / (waves · SMS)`), else the one that keeps the most busy. Narrow
/// tiles fill the GPU when M is small (64 rows and N = 2112 give 17 tiles of 128 columns but
/// 132 of 16).
pub fn widest_busy_width(tiles_m: u64, n: u64) -> u64 {
    let busy = |bn: u64| {
        let tiles = tiles_m * n.div_ceil(bn);
        tiles as f64 / (tiles.div_ceil(SMS) * SMS) as f64
    };
    let widths = [128, 64, 32, 16];
    widths
        .iter()
        .copied()
        .find(|&bn| busy(bn) >= 0.8)
        .unwrap_or_else(|| {
            widths.iter().copied().fold(
                128,
                |best, bn| if busy(bn) > busy(best) { bn } else { best },
            )
        })
}

/// Whether `gemm` can take this form: K in whole 16-byte chunks, 128-wide activation tiles and
/// weight blocks, and an interval of whole wgmmas that divides the K block.
pub fn eligible(gemm: &Fp8Gemm) -> bool {
    gemm.k.is_multiple_of(16)
        && gemm.act_tile == BLOCK_K
        && gemm.weight_block == MAX_BLOCK_N
        && matches!(gemm.promote_interval, 32 | 64 | 128)
}

fn tiles_n(gemm: &Fp8Gemm) -> u64 {
    gemm.n.div_ceil(block_n(gemm))
}

/// Tiles along M: of the output rows (dense) or of the dispatch's padded layout (grouped).
fn tiles_m(gemm: &Fp8Gemm) -> u64 {
    match gemm.grouped {
        None => gemm.rows.div_ceil(BLOCK_M),
        Some(g) => gemm.dispatch(g).capacity() / BLOCK_M,
    }
}

/// One warpgroup per 64 × N tile.
pub fn launch(gemm: &Fp8Gemm) -> Launch {
    Launch::blocks(tiles_m(gemm) * tiles_n(gemm), THREADS)
}

/// Builds the kernel.
pub fn build(gemm: &Fp8Gemm, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
    let context = module.context();
    let types = param_types(context, &gemm.params());
    // The tiles plus room to align them.
    let shared_bytes = ATOM + A_BYTES + block_n(gemm) * BLOCK_K;
    let shared = shared_bytes_type(context, shared_bytes);
    let n_args = types.len();
    module.add_kernel_with_shared(entry, &types, &[shared], |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, block.argument_count())?;
        let ops = Operands::of(gemm, &args);
        let smem = args[n_args];
        let tile = e.block_index(Dimension::X)?;
        let tiles_n_v = e.index(tiles_n(gemm) as i64)?;
        let tm = e.divui(tile, tiles_n_v)?;
        let tn = e.remui(tile, tiles_n_v)?;
        match ops.dispatch {
            None => {
                let expert = e.index(0)?;
                body(gemm, &e, &ops, smem, [tm, tn], expert)
            }
            Some((_, tile_experts)) => {
                // A tile no expert uses is skipped by the whole warpgroup.
                let expert = e.load(tile_experts, tm)?;
                let zero = e.int(32, 0)?;
                let used = e.cmpi(melior::dialect::arith::CmpiPredicate::Sge, expert, zero)?;
                e.if_then(used, |e| {
                    let expert = e.index_cast(expert, e.index_type())?;
                    body(gemm, &e, &ops, smem, [tm, tn], expert)
                })
            }
        }
    })
}

/// The tile `(tm, tn)` with the weights of `expert` (0 when dense).
fn body<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    ops: &Operands<'c, '_>,
    smem: Value<'c, '_>,
    [tm, tn]: [Value<'c, 'a>; 2],
    expert: Value<'c, 'a>,
) -> Result<(), CodegenError> {
    let i32_type = e.int_type(32);
    let tid = e.thread_x()?;
    let block_m = e.index(BLOCK_M as i64)?;
    let block_n = e.index(self::block_n(gemm) as i64)?;
    let m0 = e.muli(tm, block_m)?;
    let n0 = e.muli(tn, block_n)?;
    let n = e.index(gemm.n as i64)?;
    let k = e.index(gemm.k as i64)?;
    let dispatch_rows = ops.dispatch.map(|d| d.0);
    // B rows of this expert: `expert · N + n`.
    let b_first = e.muli(expert, n)?;
    let b_first = e.addi(b_first, n0)?;

    // 1024-byte aligned tiles in shared memory (32-bit shared addresses).
    let raw = e.address_of(smem)?;
    let atom_minus_one = e.int(64, ATOM as i64 - 1)?;
    let aligned = e.addi(raw, atom_minus_one)?;
    let mask = e.int(64, !(ATOM as i64 - 1))?;
    let aligned = e.andi(aligned, mask)?;
    let a_base = e.trunci(aligned, i32_type)?;
    let a_bytes = e.int(32, A_BYTES as i64)?;
    let b_base = e.addi(a_base, a_bytes)?;
    let x_global = e.address_of(ops.x)?;
    let w_global = e.address_of(ops.w)?;

    // This thread's accumulator rows (two) and the column of its register 0.
    let thirty_two = e.index(32)?;
    let warp = e.divui(tid, thirty_two)?;
    let lane = e.remui(tid, thirty_two)?;
    let four = e.index(4)?;
    let sixteen = e.index(16)?;
    let row0 = e.muli(warp, sixteen)?;
    let g = e.divui(lane, four)?;
    let row0 = e.addi(row0, g)?;
    let p0 = e.addi(m0, row0)?;
    let eight = e.index(8)?;
    let p1 = e.addi(p0, eight)?;
    let thread_rows = [
        tile_row(gemm, e, dispatch_rows, p0)?,
        tile_row(gemm, e, dispatch_rows, p1)?,
    ];
    let q = e.remui(lane, four)?;
    let two = e.index(2)?;
    let col0 = e.muli(q, two)?;
    let col0 = e.addi(n0, col0)?;

    let zero = e.f32(0.0)?;
    let acc: Vec<Value> = (0..regs(gemm))
        .map(|_| e.cell(zero))
        .collect::<Result<_, _>>()?;
    let k_tiles = e.index(gemm.k.div_ceil(BLOCK_K) as i64)?;
    e.for_const(0, gemm.k as i64, BLOCK_K as i64, |e, k0| {
        let stage = Stage {
            tid,
            k0,
            k,
            a_base,
            b_base,
        };
        stage.load(
            &e,
            x_global,
            Rows::A {
                gemm,
                m0,
                dispatch_rows,
            },
        )?;
        stage.load(
            &e,
            w_global,
            Rows::B {
                first: b_first,
                n0,
                n,
                rows: self::block_n(gemm),
            },
        )?;
        e.push_void(e.inline_asm_op("fence.proxy.async.shared::cta;", "", &[], &[])?);
        e.barrier();
        let kb = e.divui(k0, e.index(BLOCK_K as i64)?)?;
        // One weight-scale block covers the whole tile: s_w[expert, n0 / 128, kb]; s_x per row.
        let n_blocks = gemm.n.div_ceil(MAX_BLOCK_N);
        let blocks = e.index((n_blocks * gemm.k.div_ceil(BLOCK_K)) as i64)?;
        let sw_at = e.muli(expert, blocks)?;
        let max_block_n = e.index(MAX_BLOCK_N as i64)?;
        let n_block = e.divui(n0, max_block_n)?;
        let tn_at = e.muli(n_block, k_tiles)?;
        let sw_at = e.addi(sw_at, tn_at)?;
        let sw_at = e.addi(sw_at, kb)?;
        let sw = e.load(ops.w_scale, sw_at)?;
        let mut sx = Vec::with_capacity(2);
        for row in thread_rows {
            // Rows that are not real read row 0's scale; nothing is stored for them.
            let at = e.muli(row.x, k_tiles)?;
            let at = e.addi(at, kb)?;
            sx.push(e.load(ops.x_scale, at)?);
        }
        let interval = gemm.promote_interval;
        for group in 0..BLOCK_K / interval {
            let mut partial: Vec<Value> = Vec::new();
            for step in 0..interval / MMA_K {
                let offset = (group * interval + step * MMA_K) as i64;
                let offset = e.int(32, offset)?;
                let a = e.addi(a_base, offset)?;
                let b = e.addi(b_base, offset)?;
                let descriptors = [descriptor(&e, a)?, descriptor(&e, b)?];
                let d = (step > 0).then_some(partial.as_slice());
                partial = wgmma(&e, gemm, d, descriptors)?;
            }
            e.push_void(e.inline_asm_op(
                "wgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;",
                "",
                &[],
                &[],
            )?);
            // Intervals past K hold only zeros and are not added (as in the CPU reference).
            let start = e.index((group * interval) as i64)?;
            let start = e.addi(k0, start)?;
            let inside = e.lt(start, k)?;
            let scale = [e.mulf(sx[0], sw)?, e.mulf(sx[1], sw)?];
            e.if_then(inside, |e| {
                for (i, &p) in partial.iter().enumerate() {
                    let s = scale[(i / 2) % 2];
                    let scaled = e.mulf(p, s)?;
                    e.accumulate(acc[i], scaled)?;
                }
                Ok(())
            })?;
        }
        // The next K block overwrites the tiles.
        e.barrier();
        Ok(())
    })?;
    // Store D: register i is row `row0 + 8·((i / 2) mod 2)`, column `col0 + 8·(i / 4) + i mod 2`.
    for (i, &cell) in acc.iter().enumerate() {
        let row = thread_rows[(i / 2) % 2];
        let offset = e.index((8 * (i / 4) + i % 2) as i64)?;
        let col = e.addi(col0, offset)?;
        let col_ok = e.lt(col, n)?;
        let ok = e.andi(row.real, col_ok)?;
        let value = e.get(cell)?;
        let value = e.round_to(value, gemm.output)?;
        e.if_then(ok, |e| {
            let at = e.muli(row.out, n)?;
            let at = e.addi(at, col)?;
            e.store(value, ops.out, at);
            Ok(())
        })?;
    }
    Ok(())
}

/// Which rows a stage copies: A's (through the tile's rows: the M extent or the dispatch's
/// layout) or B's (this expert's `N` rows from `first`; `n0` is the tile's first column).
enum Rows<'g, 'c, 'x> {
    A {
        gemm: &'g Fp8Gemm,
        m0: Value<'c, 'x>,
        dispatch_rows: Option<Value<'c, 'x>>,
    },
    B {
        first: Value<'c, 'x>,
        n0: Value<'c, 'x>,
        n: Value<'c, 'x>,
        rows: u64,
    },
}

/// One K block's staging into shared memory.
struct Stage<'c, 'x> {
    tid: Value<'c, 'x>,
    k0: Value<'c, 'x>,
    k: Value<'c, 'x>,
    a_base: Value<'c, 'x>,
    b_base: Value<'c, 'x>,
}

impl<'c, 'x> Stage<'c, 'x> {
    /// Copies the tile's rows of the K-major matrix at global address `matrix`, K columns
    /// `k0 .. k0 + 128`, into its swizzled tile (A: 64 rows, B: 128), rows that are not real
    /// and K past its end as zeros; 16 bytes per thread and step.
    fn load<'a>(
        &self,
        e: &Emit<'c, 'a>,
        matrix: Value<'c, '_>,
        rows: Rows<'_, 'c, '_>,
    ) -> Result<(), CodegenError>
    where
        'x: 'a,
    {
        let i32_type = e.int_type(32);
        let i64_type = e.int_type(64);
        let chunks_per_row = BLOCK_K / 16;
        let (base, tile_rows) = match rows {
            Rows::A { .. } => (self.a_base, BLOCK_M),
            Rows::B { rows, .. } => (self.b_base, rows),
        };
        for j in 0..tile_rows * chunks_per_row / u64::from(THREADS) {
            let offset = e.index((j * u64::from(THREADS)) as i64)?;
            let chunk = e.addi(self.tid, offset)?;
            let per_row = e.index(chunks_per_row as i64)?;
            let row = e.divui(chunk, per_row)?;
            let c = e.remui(chunk, per_row)?;
            let (global_row, row_ok) = match &rows {
                Rows::A {
                    gemm,
                    m0,
                    dispatch_rows,
                } => {
                    let p = e.addi(*m0, row)?;
                    let r = tile_row(gemm, e, *dispatch_rows, p)?;
                    (r.x, r.real)
                }
                Rows::B { first, n0, n, .. } => {
                    let col = e.addi(*n0, row)?;
                    let ok = e.lt(col, *n)?;
                    (e.addi(*first, row)?, ok)
                }
            };
            let sixteen = e.index(16)?;
            let kc = e.muli(c, sixteen)?;
            let kc = e.addi(self.k0, kc)?;
            let k_ok = e.lt(kc, self.k)?;
            let ok = e.andi(row_ok, k_ok)?;
            let at = e.muli(global_row, self.k)?;
            let at = e.addi(at, kc)?;
            let at = e.index_cast(at, i64_type)?;
            let at = e.addi(matrix, at)?;
            let words = global_load_v4(e, at, ok)?;
            // Swizzled place: row · 128 + ((c ^ (row mod 8)) · 16).
            let row32 = e.index_cast(row, i32_type)?;
            let c32 = e.index_cast(c, i32_type)?;
            let seven = e.int(32, 7)?;
            let phase = e.andi(row32, seven)?;
            let swizzled = e.push(
                OperationBuilder::new("arith.xori", e.location)
                    .add_operands(&[c32, phase])
                    .add_results(&[i32_type])
                    .build()?,
            )?;
            let four = e.int(32, 4)?;
            let chunk_offset = e.shli(swizzled, four)?;
            let seven_bits = e.int(32, 7)?;
            let row_offset = e.shli(row32, seven_bits)?;
            let place = e.addi(base, row_offset)?;
            let place = e.addi(place, chunk_offset)?;
            shared_store_v4(e, place, words)?;
        }
        Ok(())
    }
}

/// The matrix descriptor of a K-major, 128-byte-swizzled tile starting at shared address
/// `start`: `(start >> 4) & 0x3FFF | (1024 >> 4) << 32 | 1 << 62`.
fn descriptor<'c, 'a>(e: &Emit<'c, 'a>, start: Value<'c, '_>) -> Emitted<'c, 'a> {
    let i64_type = e.int_type(64);
    let start = e.extui(start, i64_type)?;
    let four = e.int(64, 4)?;
    let start = e.shrui(start, four)?;
    let field = e.int(64, 0x3FFF)?;
    let start = e.andi(start, field)?;
    let fixed = e.int(64, ((ATOM >> 4) << 32 | 1 << 62) as i64)?;
    e.ori(start, fixed)
}

/// One `wgmma.mma_async m64nNk32` (N = the tile's columns): into a fresh accumulator (`d` is `None`: scale-d 0, no
/// register inputs, preceded by `wgmma.fence` in the same asm block so that nothing touches the
/// accumulator registers in between, which would make ptxas serialize the group), or adding to
/// `d` (its 64 registers in and out).
fn wgmma<'c, 'a>(
    e: &Emit<'c, 'a>,
    gemm: &Fp8Gemm,
    d: Option<&[Value<'c, 'a>]>,
    descriptors: [Value<'c, 'a>; 2],
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let kind = match gemm.format {
        dsc_ir::DType::F8E5M2 => "e5m2",
        _ => "e4m3",
    };
    let n_regs = regs(gemm);
    let regs: Vec<String> = (0..n_regs).map(|i| format!("${i}")).collect();
    let inputs = if d.is_some() { n_regs } else { 0 };
    let (fence, scale_d) = if d.is_some() {
        ("", "1")
    } else {
        ("wgmma.fence.sync.aligned;\n\t", "0")
    };
    let asm = format!(
        "{{\n\t.reg .pred p;\n\tsetp.ne.b32 p, {scale_d}, 0;\n\t{fence}\
         wgmma.mma_async.sync.aligned.m64n{n}k32.f32.{kind}.{kind} {{{regs}}}, ${a}, ${b}, p, 1, 1;\n\t}}",
        regs = regs.join(", "),
        n = block_n(gemm),
        a = n_regs + inputs,
        b = n_regs + inputs + 1,
    );
    let mut constraints: Vec<String> = (0..n_regs).map(|_| "=f".to_string()).collect();
    constraints.extend((0..inputs).map(|i| i.to_string()));
    constraints.extend(["l".to_string(), "l".to_string()]);
    let mut operands: Vec<Value> = d.map(<[_]>::to_vec).unwrap_or_default();
    operands.extend(descriptors);
    let f32_type = e.f32_type();
    let result = llvm::r#type::r#struct(e.context, &vec![f32_type; n_regs], false);
    let out = e.push(e.inline_asm_op(&asm, &constraints.join(","), &operands, &[result])?)?;
    (0..n_regs)
        .map(|i| {
            let position = DenseI64ArrayAttribute::new(e.context, &[i as i64]);
            e.push(llvm::extract_value(
                e.context, out, position, f32_type, e.location,
            ))
        })
        .collect()
}
