//! The warpgroup pieces of Hopper's FP8 GEMM (sm_90a), which [`super::fp8_gemm_tma`] puts
//! together: FP8 products summed by `wgmma.mma_async.sync.aligned.m64nNk32.f32.<fp8>.<fp8>`
//! (the only instruction that runs FP8 at full rate on Hopper: `mma.sync` e4m3 becomes FP16
//! HMMA there) from shared memory, and every promotion interval the partial sums scaled by
//! `s_x · s_w` and added into f32 accumulators on the CUDA cores (DESIGN.md §3), in the CPU
//! reference's order.
//!
//! - Tiles in shared memory are in the 128-byte-swizzled K-major layout wgmma reads (row `r`
//!   at `128·r`, its 16-byte chunk `c` at chunk `c ^ (r mod 8)`, 1024-byte aligned atoms of 8
//!   rows): what a TMA load with 128-byte swizzle writes, and what [`Stage::load`] writes when
//!   a warpgroup gathers rows itself.
//! - [`k_block_mmas`]: each promotion interval of a 128-deep K block is `interval / 32` wgmmas
//!   into a fresh accumulator (scale-d 0 on the first), then the promotion. The matrix
//!   descriptors (PTX ISA, "Matrix Descriptor Format"): start address >> 4, leading byte offset
//!   0, stride byte offset 1024 >> 4 (between 8-row atoms), swizzle mode 1 (128 B); each k-step
//!   of 32 advances the start address by 32 bytes.
//! - [`Fragment`]: which accumulator rows and columns a thread of the warpgroup holds, their
//!   scales, and the predicated epilogue. Grouped (routed experts), a tile row `p` of the
//!   expert-contiguous layout of [`super::moe_dispatch`] reads x row `rows[p]` (or
//!   `rows[p] / top_k`) and writes output row `rows[p]` (padding, −1, reads zeros and stores
//!   nothing).

use melior::dialect::llvm;
use melior::ir::Value;
use melior::ir::attribute::DenseI64ArrayAttribute;

use super::fp8_gemm::{Fp8Gemm, GemmForm, Operands, TileRow, tile_row};
use super::vector_access::{global_load_v4, global_store_if, output_words, shared_store_v4};
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};

/// Rows of one warpgroup's accumulator tile (wgmma's M).
pub const BLOCK_M: u64 = 64;
/// The widest tile: one weight-scale block, so that every tile lies in one.
pub const MAX_BLOCK_N: u64 = 128;
/// The SMs of the Hopper parts dsc targets (H100 SXM, H200), which the tile shapes fill.
pub(super) const SMS: u64 = 132;
/// K staged per step (one activation tile, one weight-scale block).
pub const BLOCK_K: u64 = 128;
/// One warpgroup.
const THREADS: u32 = 128;
/// K of one wgmma.
pub(super) const MMA_K: u64 = 32;
/// The swizzle atom (8 rows of 128 bytes) and the alignment it needs.
pub(super) const ATOM: u64 = 1024;

/// Columns of `gemm`'s tiles.
pub(super) fn block_n(gemm: &Fp8Gemm) -> u64 {
    match gemm.form {
        GemmForm::WgmmaTma { block_n, .. } => block_n,
        _ => MAX_BLOCK_N,
    }
}

/// Accumulator registers per thread: 64 × `block_n` f32 over 128 threads.
pub(super) fn regs(gemm: &Fp8Gemm) -> usize {
    (BLOCK_M * block_n(gemm) / u64::from(THREADS)) as usize
}

/// Whether `gemm` can take this form: K in whole 16-byte chunks, 128-wide activation tiles and
/// weight blocks, and an interval of whole wgmmas that divides the K block.
pub fn eligible(gemm: &Fp8Gemm) -> bool {
    gemm.k.is_multiple_of(16)
        && gemm.act_tile == BLOCK_K
        && gemm.weight_block == MAX_BLOCK_N
        && matches!(gemm.promote_interval, 32 | 64 | 128)
}

/// The first 1024-byte aligned (swizzle-atom aligned) shared address of workgroup buffer
/// `smem`, as the 32-bit shared address PTX takes.
pub(super) fn atom_aligned<'c, 'a>(e: &Emit<'c, 'a>, smem: Value<'c, '_>) -> Emitted<'c, 'a> {
    let raw = e.address_of(smem)?;
    let atom_minus_one = e.int(64, ATOM as i64 - 1)?;
    let aligned = e.addi(raw, atom_minus_one)?;
    let mask = e.int(64, !(ATOM as i64 - 1))?;
    let aligned = e.andi(aligned, mask)?;
    e.trunci(aligned, e.int_type(32))
}

/// What one thread of a warpgroup holds of a 64 × N accumulator tile: rows `row0` and
/// `row0 + 8` of the tile (warp · 16 + lane / 4), from column `n0 + 2 · (lane mod 4)`.
pub(super) struct Fragment<'c, 'a> {
    rows: [TileRow<'c, 'a>; 2],
    col0: Value<'c, 'a>,
}

impl<'c, 'a> Fragment<'c, 'a> {
    /// The fragment of thread `tid` (0..128 in its warpgroup) of the tile at `(m0, n0)`.
    pub(super) fn new(
        gemm: &Fp8Gemm,
        e: &Emit<'c, 'a>,
        tid: Value<'c, '_>,
        m0: Value<'c, 'a>,
        n0: Value<'c, 'a>,
        dispatch_rows: Option<Value<'c, 'a>>,
    ) -> Result<Self, CodegenError> {
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
        let rows = [
            tile_row(gemm, e, dispatch_rows, p0)?,
            tile_row(gemm, e, dispatch_rows, p1)?,
        ];
        let q = e.remui(lane, four)?;
        let two = e.index(2)?;
        let col0 = e.muli(q, two)?;
        let col0 = e.addi(n0, col0)?;
        Ok(Fragment { rows, col0 })
    }

    /// The activation scales of K block `kb` for this thread's two rows, and the weight scales:
    /// one weight-scale block covers the whole tile (`s_w[expert, n0 / 128, kb]`), or, with
    /// [`Fp8Gemm::w_row_tiles`] (a Wgrad), one scale per column this thread holds
    /// (`s_w[col, kb]`, `block_n / 4` of them; columns past N read column N − 1's, and nothing
    /// is stored for them). With [`Fp8Gemm::x_square_blocks`] a row's scale is its 128-row
    /// block's. Rows that are not real read row 0's scale; nothing is stored for them.
    pub(super) fn scales<'b>(
        &self,
        gemm: &Fp8Gemm,
        e: &Emit<'c, 'b>,
        ops: &Operands<'c, '_>,
        expert: Value<'c, '_>,
        n0: Value<'c, '_>,
        kb: Value<'c, '_>,
    ) -> Result<Scales<'c, 'b>, CodegenError> {
        let k_tiles = e.index(gemm.k.div_ceil(BLOCK_K) as i64)?;
        let n_blocks = gemm.n.div_ceil(gemm.w_scale_rows());
        let blocks = e.index((n_blocks * gemm.k.div_ceil(BLOCK_K)) as i64)?;
        let expert_at = e.muli(expert, blocks)?;
        let sw = if gemm.w_row_tiles {
            let n_max = e.index(gemm.n as i64 - 1)?;
            (0..block_n(gemm) / 4)
                .map(|c| {
                    let col = e.addi(self.col0, e.index((8 * (c / 2) + c % 2) as i64)?)?;
                    let col = e.minui(col, n_max)?;
                    let at = e.addi(e.muli(col, k_tiles)?, kb)?;
                    e.load(ops.w_scale, e.addi(expert_at, at)?)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let max_block_n = e.index(MAX_BLOCK_N as i64)?;
            let n_block = e.divui(n0, max_block_n)?;
            let tn_at = e.muli(n_block, k_tiles)?;
            let sw_at = e.addi(expert_at, tn_at)?;
            let sw_at = e.addi(sw_at, kb)?;
            vec![e.load(ops.w_scale, sw_at)?]
        };
        let x_scale_rows = e.index(gemm.x_scale_rows() as i64)?;
        let mut sx = [sw[0]; 2];
        for (s, row) in sx.iter_mut().zip(&self.rows) {
            let at = e.muli(e.divui(row.x, x_scale_rows)?, k_tiles)?;
            let at = e.addi(at, kb)?;
            *s = e.load(ops.x_scale, at)?;
        }
        Ok(Scales { sx, sw })
    }

    /// Rounds the accumulators to the output dtype and stores the real rows' columns below N
    /// with predicated stores: register i is row `row0 + 8·((i / 2) mod 2)`, column
    /// `col0 + 8·(i / 4) + i mod 2`. Registers `i` and `i + 1` (i even) are two adjacent
    /// columns from an even one; when N is even both are inside or neither is, and their 4
    /// (bf16) or 8 (f32) bytes are one aligned store.
    pub(super) fn store(
        &self,
        gemm: &Fp8Gemm,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        acc: &[Value<'c, '_>],
    ) -> Result<(), CodegenError> {
        let n = e.index(gemm.n as i64)?;
        let paired = gemm.n.is_multiple_of(2);
        let out = e.address_of(ops.out)?;
        let size = e.index(gemm.output.size_bytes() as i64)?;
        for (i, &cell) in acc.iter().enumerate() {
            if paired && i % 2 == 1 {
                continue;
            }
            let row = self.rows[(i / 2) % 2];
            let offset = e.index((8 * (i / 4) + i % 2) as i64)?;
            let col = e.addi(self.col0, offset)?;
            let col_ok = e.lt(col, n)?;
            let ok = e.andi(row.real, col_ok)?;
            let at = e.muli(row.out, n)?;
            let at = e.addi(at, col)?;
            let at = e.muli(at, size)?;
            let at = e.index_cast(at, e.int_type(64))?;
            let at = e.addi(out, at)?;
            let value = e.get(cell)?;
            let next = if paired {
                Some(e.get(acc[i + 1])?)
            } else {
                None
            };
            global_store_if(e, ok, at, &output_words(e, gemm.output, value, next)?)?;
        }
        Ok(())
    }
}

/// One K block's scales for a [`Fragment`]: its two rows' activation scales and the tile's
/// weight scale, or one per column the fragment holds ([`Fp8Gemm::w_row_tiles`]).
pub(super) struct Scales<'c, 'b> {
    sx: [Value<'c, 'b>; 2],
    sw: Vec<Value<'c, 'b>>,
}

impl<'c, 'b> Scales<'c, 'b> {
    /// `s_x · s_w` of each of `registers` accumulator registers (register `i`: row
    /// `(i / 2) mod 2`, column pair `i / 4`), each distinct product formed once: one per row
    /// with the tile's one weight scale, one per register with a scale per column.
    fn products(
        &self,
        e: &Emit<'c, 'b>,
        registers: usize,
    ) -> Result<Vec<Value<'c, 'b>>, CodegenError> {
        if let [sw] = self.sw[..] {
            let rows = [e.mulf(self.sx[0], sw)?, e.mulf(self.sx[1], sw)?];
            return Ok((0..registers).map(|i| rows[(i / 2) % 2]).collect());
        }
        (0..registers)
            .map(|i| e.mulf(self.sx[(i / 2) % 2], self.sw[2 * (i / 4) + i % 2]))
            .collect()
    }
}

/// The wgmmas and promotions of one 128-deep K block starting at `k0`, whose A and B tiles
/// are at shared addresses `[a, b]`: each promotion interval is `interval / 32` wgmmas into a
/// fresh accumulator, then `acc += partial · (s_x · s_w)` in the CPU reference's order;
/// intervals past K hold only zeros and are not added (as in the CPU reference).
/// `after_last_wait` runs once the block's last wgmma has completed, before its promotion: the
/// tiles are no longer read from there on.
pub(super) fn k_block_mmas<'c, 'b>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'b>,
    [a, b]: [Value<'c, 'b>; 2],
    k0: Value<'c, '_>,
    scales: Scales<'c, 'b>,
    acc: &[Value<'c, '_>],
    after_last_wait: impl FnOnce(&Emit<'c, 'b>) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let k = e.index(gemm.k as i64)?;
    let interval = gemm.promote_interval;
    let scale = scales.products(e, acc.len())?;
    let groups = BLOCK_K / interval;
    let mut after_last_wait = Some(after_last_wait);
    for group in 0..groups {
        let mut partial: Vec<Value> = Vec::new();
        for step in 0..interval / MMA_K {
            let offset = (group * interval + step * MMA_K) as i64;
            let offset = e.int(32, offset)?;
            let a = e.addi(a, offset)?;
            let b = e.addi(b, offset)?;
            let descriptors = [descriptor(e, a)?, descriptor(e, b)?];
            let d = (step > 0).then_some(partial.as_slice());
            partial = wgmma(e, gemm, d, descriptors)?;
        }
        e.push_void(e.inline_asm_op(
            "wgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;",
            "",
            &[],
            &[],
        )?);
        if group + 1 == groups
            && let Some(hook) = after_last_wait.take()
        {
            hook(e)?;
        }
        let start = e.index((group * interval) as i64)?;
        let start = e.addi(k0, start)?;
        let inside = e.lt(start, k)?;
        e.if_then(inside, |e| {
            for (i, &p) in partial.iter().enumerate() {
                let s = scale[i];
                let scaled = e.mulf(p, s)?;
                e.accumulate(acc[i], scaled)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// One K block of A's tile gathered into shared memory by the 128 threads `tid` of a
/// warpgroup: `rows` rows from `m0` (through the dispatch's `dispatch_rows` when grouped).
pub(super) struct Stage<'g, 'c, 'x> {
    pub gemm: &'g Fp8Gemm,
    pub tid: Value<'c, 'x>,
    pub k0: Value<'c, 'x>,
    pub m0: Value<'c, 'x>,
    pub dispatch_rows: Option<Value<'c, 'x>>,
    pub rows: u64,
    /// Shared address of the tile.
    pub base: Value<'c, 'x>,
}

impl<'c, 'x> Stage<'_, 'c, 'x> {
    /// Copies the tile's rows of x (K-major, at global address `x`), K columns
    /// `k0 .. k0 + 128`, into the swizzled tile, rows that are not real and K past its end as
    /// zeros; 16 bytes per thread and step.
    pub(super) fn load<'a>(&self, e: &Emit<'c, 'a>, x: Value<'c, '_>) -> Result<(), CodegenError>
    where
        'x: 'a,
    {
        let i32_type = e.int_type(32);
        let i64_type = e.int_type(64);
        let chunks_per_row = BLOCK_K / 16;
        let k = e.index(self.gemm.k as i64)?;
        for j in 0..self.rows * chunks_per_row / u64::from(THREADS) {
            let offset = e.index((j * u64::from(THREADS)) as i64)?;
            let chunk = e.addi(self.tid, offset)?;
            let per_row = e.index(chunks_per_row as i64)?;
            let row = e.divui(chunk, per_row)?;
            let c = e.remui(chunk, per_row)?;
            let p = e.addi(self.m0, row)?;
            let tile_row = tile_row(self.gemm, e, self.dispatch_rows, p)?;
            let sixteen = e.index(16)?;
            let kc = e.muli(c, sixteen)?;
            let kc = e.addi(self.k0, kc)?;
            let k_ok = e.lt(kc, k)?;
            let ok = e.andi(tile_row.real, k_ok)?;
            let at = e.muli(tile_row.x, k)?;
            let at = e.addi(at, kc)?;
            let at = e.index_cast(at, i64_type)?;
            let at = e.addi(x, at)?;
            let words = global_load_v4(e, at, ok)?;
            // Swizzled place: row · 128 + ((c ^ (row mod 8)) · 16).
            let row32 = e.index_cast(row, i32_type)?;
            let c32 = e.index_cast(c, i32_type)?;
            let seven = e.int(32, 7)?;
            let phase = e.andi(row32, seven)?;
            let swizzled = e.xori(c32, phase)?;
            let four = e.int(32, 4)?;
            let chunk_offset = e.shli(swizzled, four)?;
            let seven_bits = e.int(32, 7)?;
            let row_offset = e.shli(row32, seven_bits)?;
            let place = e.addi(self.base, row_offset)?;
            let place = e.addi(place, chunk_offset)?;
            shared_store_v4(e, place, words)?;
        }
        Ok(())
    }
}

/// The matrix descriptor of a K-major, 128-byte-swizzled tile starting at shared address
/// `start`: `(start >> 4) & 0x3FFF | (1024 >> 4) << 32 | 1 << 62`.
pub(super) fn descriptor<'c, 'a>(e: &Emit<'c, 'a>, start: Value<'c, '_>) -> Emitted<'c, 'a> {
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
