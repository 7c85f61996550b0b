//! The [`Accumulator::Exact`] path of [`fp8_block_gemm`]: packed panels and a register-blocked
//! microkernel.
//!
//! # The order of operations (what defines every output bit)
//!
//! For every output element `y[i, j]`, independently of the others:
//!
//! ```text
//! acc = 0.0
//! for each promotion interval [k0, k1) (k0 = 0, P, 2P, ...; k1 = min(k0 + P, K)):
//!     partial = 0.0
//!     for kk in k0 .. k1 (ascending):
//!         partial = partial + x[i, kk] * w[j, kk]          // decoded FP8 values
//!     acc = acc + partial * (s_x[i / x_block_rows, k0 / tile] * s_w[j / block_rows, k0 / block])
//! y[i, j] = acc
//! ```
//!
//! every operation an f32 operation rounded to nearest even. The product of two decoded FP8
//! values is exact in f32 (at most 4 × 4 significant bits, exponents well inside f32's normal
//! range), so `partial + x · w` rounds once whether it is computed as a multiply and an add or
//! as one fused multiply-add: the microkernels use FMA for the partial, and the result is the
//! same bits as the scalar loop above. The promotion is never fused: the scale product, the
//! multiply and the add are three separately rounded operations, as DESIGN.md §3 says.
//! This is exactly the in-order reading of the recipe (`gemm_per_mma` with the exact
//! accumulator), so the two agree bit for bit; the tests check both against a plain scalar loop.
//!
//! The tiling (panels, cache blocks, threads) only decides which element is computed where and
//! when, never the order of the additions into one element, so the result does not depend on
//! the instruction set chosen at run time or the number of rayon threads. NaN results (from NaN
//! codes, or E5M2's `inf · 0`) are NaN in every variant; which NaN payload they carry is not
//! specified.
//!
//! # The implementation
//!
//! 1. Both operands are decoded once from their codes. `x` is decoded row-major (`[M][K]`,
//!    rows padded with zeros to a multiple of `MR`): the microkernel broadcasts its values
//!    straight from `MR` rows. `w` is decoded into panels of `NR` rows (columns of the
//!    product) stored K-major (`[K][NR]`, the last panel zero-padded), so that one K step of a
//!    panel is one or two aligned vector loads. The scales are laid out per panel and interval.
//!    With AVX-512 the decoding is vectorized (see [`x86`]); otherwise it goes through the
//!    format's 256-entry table.
//! 2. The output is cut into blocks of whole panels, one rayon task each. A task walks K in
//!    chunks of whole promotion intervals (about [`KC`] deep, so the `w` block stays in L2)
//!    and, per chunk, runs the microkernel on every `MR × NR` tile of its block.
//! 3. The microkernel keeps the tile's partials in registers, runs one interval of FMAs, then
//!    promotes them into the tile's accumulators; at the end of a chunk the accumulators go
//!    back to `y` (and are reloaded for the next chunk, which changes no bits).
//!
//! Microkernels: AVX-512F `6 × 32` (partials and accumulators all in registers), AVX2 + FMA
//! `6 × 16` (partials in registers), and a portable `6 × 16` loop with a separate multiply and
//! add; chosen at run time by CPU feature detection.
//!
//! [`Accumulator::Exact`]: crate::numerics::accumulate::Accumulator::Exact
//! [`fp8_block_gemm`]: super::fp8_block_gemm

use super::{BlockGemmConfig, GemmDims};
use crate::quantized::Fp8Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Rows of a microkernel tile (rows of `x` broadcast per K step), for every variant.
const MR: usize = 6;
/// Target depth of one K chunk, in elements of K (rounded to whole promotion intervals).
const KC: usize = 256;
/// Output rows per task, in row panels (at most; fewer when that gives too few tasks).
const MC_PANELS: usize = 16;
/// Output columns per task (at most; fewer when that gives too few tasks).
const NC: usize = 256;
/// K elements packed per pass over a panel's rows (keeps the destination lines in L1).
const PACK_KB: usize = 64;
/// Rows of `x` decoded per parallel job.
const DECODE_ROWS: usize = 16;

/// The microkernel variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// Plain Rust: a multiply and an add per product (bit-identical to FMA here, see above).
    Portable,
    /// x86-64 AVX2 and FMA, `6 × 16` tiles.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-512F, `6 × 32` tiles, vectorized decoding.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The fastest variant this CPU runs.
    pub(super) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every variant this CPU runs (the tests compare them).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
        }
        all
    }

    /// Columns of a tile (and rows of a `w` panel).
    fn nr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::NR_AVX512,
            _ => 16,
        }
    }
}

/// A decoded operand whose first element is 64-byte aligned (whole-cache-line vector loads).
struct Decoded {
    storage: Vec<f32>,
    offset: usize,
}

impl Decoded {
    /// `len` elements, each written by `fill` (given the uninitialized, aligned slice), which
    /// must write all of them. No zero-filling pass first: for the large operands that pass
    /// cost as much as the decoding.
    fn build(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Self {
        const LANES: usize = 64 / size_of::<f32>();
        let mut storage: Vec<f32> = Vec::with_capacity(len + LANES);
        let offset = storage.as_ptr().align_offset(64).min(LANES);
        let (head, body) = storage.spare_capacity_mut()[..offset + len].split_at_mut(offset);
        head.fill(MaybeUninit::new(0.0));
        fill(body);
        // SAFETY: the head was written above and `fill` writes every element of the body.
        unsafe { storage.set_len(offset + len) };
        Decoded { storage, offset }
    }

    fn as_slice(&self) -> &[f32] {
        &self.storage[self.offset..]
    }
}

/// Writes `table[code]` for every code.
fn decode_scalar(table: &[f32; 256], codes: &[u8], out: &mut [MaybeUninit<f32>]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        o.write(table[c as usize]);
    }
}

/// `x[m, k]` decoded row-major, rows padded with zeros to `padded_rows`.
fn decode_rows(
    isa: Isa,
    cfg: &BlockGemmConfig,
    codes: &[u8],
    m: usize,
    padded_rows: usize,
    k: usize,
) -> Decoded {
    let table = cfg.fmt.table();
    Decoded::build(padded_rows * k, |out| {
        out.par_chunks_mut(DECODE_ROWS * k)
            .enumerate()
            .for_each(|(c, out)| {
                let first = c * DECODE_ROWS * k;
                let real = (m * k).saturating_sub(first).min(out.len());
                let (real_out, pad) = out.split_at_mut(real);
                let src = &codes[first.min(m * k)..][..real];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: Avx512 is only chosen on CPUs with AVX-512F.
                    Isa::Avx512 => unsafe { x86::decode_avx512(cfg.fmt, src, real_out) },
                    _ => decode_scalar(table, src, real_out),
                }
                pad.fill(MaybeUninit::new(0.0));
            });
    })
}

/// `w[n, k]` decoded into panels of `rows` rows, K-major: element `(r, kk)` of panel `p` at
/// `(p · K + kk) · rows + r`; rows past the end are zeros.
fn pack_panels(
    isa: Isa,
    cfg: &BlockGemmConfig,
    codes: &[u8],
    total_rows: usize,
    k: usize,
    rows: usize,
) -> Decoded {
    let table = cfg.fmt.table();
    Decoded::build(total_rows.div_ceil(rows) * k * rows, |out| {
        out.par_chunks_mut(k * rows)
            .enumerate()
            .for_each(|(p, panel)| {
                let real = rows.min(total_rows - p * rows);
                let src = &codes[p * rows * k..(p * rows + real) * k];
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && real == rows {
                    // SAFETY: Avx512 is only chosen on CPUs with AVX-512F; `rows` is its NR.
                    unsafe { x86::pack_panel_avx512(cfg.fmt, src, k, panel) };
                    return;
                }
                let _ = isa;
                pack_panel_scalar(table, src, real, k, rows, panel);
            });
    })
}

/// One panel of [`pack_panels`] (`real` rows of codes, `rows` written) through the table.
fn pack_panel_scalar(
    table: &[f32; 256],
    codes: &[u8],
    real: usize,
    k: usize,
    rows: usize,
    panel: &mut [MaybeUninit<f32>],
) {
    for kb in (0..k).step_by(PACK_KB) {
        let kl = PACK_KB.min(k - kb);
        let dst = &mut panel[kb * rows..(kb + kl) * rows];
        for r in 0..real {
            let src = &codes[r * k + kb..][..kl];
            for (t, &c) in src.iter().enumerate() {
                dst[t * rows + r].write(table[c as usize]);
            }
        }
        for r in real..rows {
            for t in 0..kl {
                dst[t * rows + r].write(0.0);
            }
        }
    }
}

/// The scales of one operand per panel and promotion interval: the value for row `r` of panel
/// `p` and interval `t` at `(p · intervals + t) · rows + r`; `scale(row, k0)` gives it. Rows
/// past the end get 0.
fn pack_scales(
    total_rows: usize,
    rows: usize,
    intervals: usize,
    interval: usize,
    scale: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let panels = total_rows.div_ceil(rows);
    let mut out = vec![0.0f32; panels * intervals * rows];
    for p in 0..panels {
        for t in 0..intervals {
            for r in 0..rows.min(total_rows - p * rows) {
                out[(p * intervals + t) * rows + r] = scale(p * rows + r, t * interval);
            }
        }
    }
    out
}

/// Everything a microkernel call needs besides its tile's position.
#[derive(Clone, Copy)]
struct Tile {
    /// Row 0 of the tile's `MR` rows of decoded `x`, at the chunk's first K element.
    a: *const f32,
    /// Row stride of `a` (K).
    lda: usize,
    /// The `w` panel at the chunk's first K element: `[len][NR]`, 64-byte aligned.
    b: *const f32,
    /// K elements in the chunk (whole intervals, except possibly the last one of K).
    len: usize,
    /// The promotion interval.
    interval: usize,
    /// `s_x` of the tile's rows for the chunk's intervals: `[intervals][MR]`.
    sx: *const f32,
    /// `s_w` of the tile's columns for the chunk's intervals: `[intervals][NR]`.
    sw: *const f32,
    /// The tile's accumulators (`MR` rows of `NR`, row stride `ldc`).
    c: *mut f32,
    ldc: usize,
    /// Whether `c` holds the accumulators of the previous chunks (else they start at 0).
    load_c: bool,
}

/// The output, shared by the tasks; each writes only its own block of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the tasks of `gemm_exact` write disjoint blocks of the output through it.
unsafe impl Send for OutPtr {}
// SAFETY: as above; no task reads what another writes.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y[m, n]` by the order of the module doc, with the microkernel of `isa`.
pub(super) fn gemm_exact(
    x: Fp8Operand<'_>,
    w: Fp8Operand<'_>,
    dims: GemmDims,
    cfg: &BlockGemmConfig,
    isa: Isa,
) -> Vec<f32> {
    let GemmDims { m, n, k } = dims;
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let nr = isa.nr();
    let interval = cfg.promote_interval;
    let intervals = k.div_ceil(interval);
    let (m_panels, n_panels) = (m.div_ceil(MR), n.div_ceil(nr));

    let (a, b) = rayon::join(
        || decode_rows(isa, cfg, x.codes, m, m_panels * MR, k),
        || pack_panels(isa, cfg, w.codes, n, k, nr),
    );
    let (x_groups, w_groups) = (k.div_ceil(cfg.tile), k.div_ceil(cfg.block));
    let (x_block_rows, block_rows) = (cfg.x_block_rows(), cfg.block_rows());
    let sx = pack_scales(m, MR, intervals, interval, |i, k0| {
        x.scales[(i / x_block_rows) * x_groups + k0 / cfg.tile]
    });
    let sw = pack_scales(n, nr, intervals, interval, |j, k0| {
        w.scales[(j / block_rows) * w_groups + k0 / cfg.block]
    });

    // Task blocks, in panels: as large as the cache blocking wants, smaller when that leaves
    // fewer than four tasks per thread.
    let mut mc = MC_PANELS.min(m_panels);
    let mut nc = (NC / nr).max(1).min(n_panels);
    let want = 4 * rayon::current_num_threads();
    while m_panels.div_ceil(mc) * n_panels.div_ceil(nc) < want && (mc > 1 || nc > 1) {
        if mc * MR >= nc * nr && mc > 1 {
            mc = mc.div_ceil(2);
        } else if nc > 1 {
            nc = nc.div_ceil(2);
        } else {
            mc = mc.div_ceil(2);
        }
    }
    let tiles_n = n_panels.div_ceil(nc);
    let chunk = interval * (KC / interval).max(1);
    // y is written, not zero-filled first: the first K chunk of every tile stores all of it.
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = OutPtr(y.as_mut_ptr());
    let (a, b) = (a.as_slice(), b.as_slice());
    (0..m_panels.div_ceil(mc) * tiles_n)
        .into_par_iter()
        .for_each(|task| {
            let (p0, q0) = ((task / tiles_n) * mc, (task % tiles_n) * nc);
            let (p1, q1) = ((p0 + mc).min(m_panels), (q0 + nc).min(n_panels));
            let mut edge = [0.0f32; MR * 32];
            for k0 in (0..k).step_by(chunk) {
                let len = chunk.min(k - k0);
                let t0 = k0 / interval;
                for p in p0..p1 {
                    for q in q0..q1 {
                        let (i0, j0) = (p * MR, q * nr);
                        let (rows, cols) = (MR.min(m - i0), nr.min(n - j0));
                        let full = rows == MR && cols == nr;
                        // SAFETY: i0 + rows <= m and j0 + cols <= n, so the block is inside
                        // y; tasks cover disjoint panel ranges, so no other task touches it.
                        let c_out = unsafe { out.get().add(i0 * n + j0) };
                        let (c, ldc) = if full {
                            (c_out, n)
                        } else {
                            if k0 > 0 {
                                for r in 0..rows {
                                    // SAFETY: row r of the tile, `cols` elements, inside y.
                                    let src = unsafe {
                                        std::slice::from_raw_parts(c_out.add(r * n), cols)
                                    };
                                    edge[r * nr..][..cols].copy_from_slice(src);
                                }
                            }
                            (edge.as_mut_ptr(), nr)
                        };
                        let tile = Tile {
                            a: a[i0 * k + k0..].as_ptr(),
                            lda: k,
                            b: b[(q * k + k0) * nr..].as_ptr(),
                            len,
                            interval,
                            sx: sx[(p * intervals + t0) * MR..].as_ptr(),
                            sw: sw[(q * intervals + t0) * nr..].as_ptr(),
                            c,
                            ldc,
                            load_c: k0 > 0,
                        };
                        // SAFETY: `a` has MR (padded) rows of `len` more elements at stride k,
                        // the panel `len` more K steps of NR values from `b`, the scale tables
                        // `ceil(len / interval)` more intervals, and `c` is MR × NR with row
                        // stride ldc (a full tile of y, or `edge`).
                        unsafe { run_tile(isa, tile) };
                        if !full {
                            for r in 0..rows {
                                // SAFETY: as for the copy in.
                                let dst = unsafe {
                                    std::slice::from_raw_parts_mut(c_out.add(r * n), cols)
                                };
                                dst.copy_from_slice(&edge[r * nr..][..cols]);
                            }
                        }
                    }
                }
            }
        });
    // SAFETY: the tasks cover every tile, and the first K chunk of a tile (k > 0 here) writes
    // all its elements inside y: full tiles by the microkernel, edge tiles by the copy out.
    unsafe { y.set_len(m * n) };
    y
}

/// Runs the microkernel of `isa` on one tile.
///
/// # Safety
///
/// `t` must describe readable rows, panels and scales and a writable `MR × NR` tile, as
/// [`Tile`] documents, for the tile width of `isa`, and the CPU must support `isa`.
unsafe fn run_tile(isa: Isa, t: Tile) {
    // SAFETY: forwarded from the caller; `isa` came from feature detection.
    unsafe {
        match isa {
            Isa::Portable => tile_portable(t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::tile_avx2(t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::tile_avx512(t),
        }
    }
}

/// The `6 × 16` tile in plain Rust: `partial + a · b` as a multiply and an add.
///
/// # Safety
///
/// As [`run_tile`], with `NR = 16`.
unsafe fn tile_portable(t: Tile) {
    const NR: usize = 16;
    let mut acc = [[0.0f32; NR]; MR];
    // SAFETY (whole body): every pointer access stays inside what `Tile` promises.
    unsafe {
        if t.load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(std::slice::from_raw_parts(t.c.add(r * t.ldc), NR));
            }
        }
        let (mut a, mut b) = (t.a, t.b);
        let mut k0 = 0;
        let mut iv = 0;
        while k0 < t.len {
            let len = t.interval.min(t.len - k0);
            let mut partial = [[0.0f32; NR]; MR];
            for _ in 0..len {
                let bv: &[f32; NR] = &*(b as *const [f32; NR]);
                for (r, p_row) in partial.iter_mut().enumerate() {
                    let ar = *a.add(r * t.lda);
                    for (p, &bj) in p_row.iter_mut().zip(bv) {
                        *p += ar * bj;
                    }
                }
                a = a.add(1);
                b = b.add(NR);
            }
            let sw: &[f32; NR] = &*(t.sw.add(iv * NR) as *const [f32; NR]);
            for r in 0..MR {
                let s_x = *t.sx.add(iv * MR + r);
                for ((acc, &p), &s_w) in acc[r].iter_mut().zip(&partial[r]).zip(sw) {
                    *acc += p * (s_x * s_w);
                }
            }
            k0 += len;
            iv += 1;
        }
        for (r, row) in acc.iter().enumerate() {
            std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), NR).copy_from_slice(row);
        }
    }
}
