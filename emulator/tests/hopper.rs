//! Handwritten checks of the Hopper (sm_90a) machinery dsc's FP8 GEMMs need: `wgmma.mma_async`
//! with shared-memory matrix descriptors over every K-major swizzle mode (FP8 E4M3 and bf16),
//! TMA (`cp.async.bulk.tensor`) with 128B swizzle and out-of-bounds fill, mbarrier phases and
//! transaction counts, and `cp.async` groups.
//!
//! The expected values come from the PTX ISA's definitions, transcribed here independently of the
//! emulator's sources:
//! - wgmma D fragment (PTX ISA "Register Fragments and Shared Memory Matrix Layouts", wgmma
//!   `.m64nNk*` D/C layout): register `i` of lane `l` of warp `w` of the warpgroup holds
//!   row `16w + l/4 + 8·((i/2) mod 2)`, column `8·(i/4) + 2·(l mod 4) + (i mod 2)`.
//! - Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits 0–13 start
//!   address, 16–29 leading byte offset (LBO), 32–45 stride byte offset (SBO), each encoded as
//!   `(x & 0x3FFFF) >> 4`; bits 62–63 swizzle (0 none, 1 128B, 2 64B, 3 32B).
//! - K-major canonical layouts (PTX ISA "Shared Memory Matrix Layout", CuTe notation, T
//!   elements per 16 bytes): none `((8,m),(T,2k)):((1T,SBO),(1,LBO))`; 32B/64B/128B swizzle
//!   `((8,m),(T,2k)):((WT,SBO),(1,T))` with W = 2/4/8; the swizzle `Swizzle<B,4,3>` (byte
//!   address bits [4, 4+B) ^= bits [7, 7+B), B = 1/2/3) applies to the shared-memory address.
//!   Tiles wider than one wgmma's K (32 bytes) advance the descriptor's start address by 32
//!   bytes inside a swizzle atom, and by a whole atom column beyond it (what CUTLASS and
//!   DeepGEMM do).
//! - TMA tile mode: box elements outside the tensor are zero-filled; with 128B swizzle the box
//!   lands in shared memory with the same `Swizzle<3,4,3>` on the address.
//!
//! Every kernel assembles with `ptxas -arch=sm_90a` (run the tests with `DSC_DUMP_PTX=<dir>` to
//! get them).

mod common;

use common::{Rng, bytes_u16, kernel, run_block, run_block_with, u32s};
use dsc_emulator::tensor_map::{DataType, Interleave, L2Promotion, OobFill, Swizzle, TensorMap};
use dsc_emulator::{EmuError, LaunchOptions, ParamValue};
use dsc_kernels::Fp8Format;
use dsc_kernels::numerics::fp8::decode;

fn f32s(b: &[u8]) -> Vec<f32> {
    u32s(b).into_iter().map(f32::from_bits).collect()
}

/// Options whose step budget turns a hang into a quick failure.
fn quick() -> LaunchOptions {
    LaunchOptions {
        step_budget: 20_000_000,
        ..LaunchOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Host-side layouts (the PTX ISA's formulas, not the emulator's code)
// ---------------------------------------------------------------------------------------------

/// Swizzle mode of a shared-memory tile.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sw {
    None,
    B32,
    B64,
    B128,
}

impl Sw {
    /// Bytes of one row of the swizzle atom (16 without swizzle: a core matrix's row).
    fn width(self) -> usize {
        match self {
            Sw::None => 16,
            Sw::B32 => 32,
            Sw::B64 => 64,
            Sw::B128 => 128,
        }
    }

    /// CuTe's `B` of `Swizzle<B,4,3>`.
    fn bits(self) -> u32 {
        match self {
            Sw::None => 0,
            Sw::B32 => 1,
            Sw::B64 => 2,
            Sw::B128 => 3,
        }
    }

    /// The descriptor's bits 62–63.
    fn desc_code(self) -> u64 {
        match self {
            Sw::None => 0,
            Sw::B128 => 1,
            Sw::B64 => 2,
            Sw::B32 => 3,
        }
    }
}

/// `Swizzle<B,4,3>` on a byte address: bits [4, 4+B) ^= bits [7, 7+B).
fn swizzle(addr: usize, sw: Sw) -> usize {
    let mask = (1usize << sw.bits()) - 1;
    addr ^ (((addr >> 7) & mask) << 4)
}

/// Bytes of K per row of every wgmma tile here: 4 wgmma k-steps of 32 bytes.
const KT: usize = 128;

/// A K-major operand tile of `rows` rows (M of A, N of B) and [`KT`] bytes of K in one of the
/// canonical layouts.
struct KMajor {
    sw: Sw,
    rows: usize,
    lbo: usize,
    sbo: usize,
}

impl KMajor {
    /// Swizzled: atoms of 8 rows × W bytes, 8-row groups `SBO = 8W` apart, atom columns (W
    /// bytes of K each) `rows·W` apart; LBO is unused (1, as CUTLASS sets it).
    fn swizzled(sw: Sw, rows: usize) -> KMajor {
        assert_ne!(sw, Sw::None);
        KMajor {
            sw,
            rows,
            lbo: 16,
            sbo: 8 * sw.width(),
        }
    }

    /// No swizzle: 8×16-byte core matrices (128 contiguous bytes), `lbo` apart along K and
    /// `sbo` apart along M/N.
    fn interleaved(rows: usize, lbo: usize, sbo: usize) -> KMajor {
        KMajor {
            sw: Sw::None,
            rows,
            lbo,
            sbo,
        }
    }

    fn bytes(&self) -> usize {
        self.rows * KT
    }

    /// Byte offset of byte `kb` of K of row `r` before the swizzle.
    fn logical(&self, r: usize, kb: usize) -> usize {
        let w = self.sw.width();
        match self.sw {
            Sw::None => (kb / 16) * self.lbo + (r / 8) * self.sbo + (r % 8) * 16 + kb % 16,
            _ => (kb / w) * (self.rows * w) + (r / 8) * self.sbo + (r % 8) * w + kb % w,
        }
    }

    /// The shared-memory image (for a tile at a 1024-byte aligned address) of `data`, `rows`
    /// rows of [`KT`] bytes, row-major.
    fn image(&self, data: &[u8]) -> Vec<u8> {
        assert_eq!(data.len(), self.bytes());
        let mut img = vec![0u8; self.bytes()];
        let mut seen = vec![false; self.bytes()];
        for r in 0..self.rows {
            for kb in 0..KT {
                let at = swizzle(self.logical(r, kb), self.sw);
                assert!(!seen[at], "layout is not a bijection at row {r} byte {kb}");
                seen[at] = true;
                img[at] = data[r * KT + kb];
            }
        }
        img
    }

    /// The descriptor of k-step `j` (K bytes `32j..32j+32`) without the tile's own address
    /// (the kernel adds `(address & 0x3FFFF) >> 4`).
    fn desc(&self, j: usize) -> u64 {
        let kb = 32 * j;
        let w = self.sw.width();
        let start = match self.sw {
            Sw::None => (kb / 16) * self.lbo,
            _ => (kb / w) * (self.rows * w) + kb % w,
        };
        let enc = |x: usize| ((x & 0x3ffff) >> 4) as u64;
        enc(start) | enc(self.lbo) << 16 | enc(self.sbo) << 32 | self.sw.desc_code() << 62
    }
}

/// (row, column) of D register `i` of thread `t` of the warpgroup (PTX ISA wgmma D layout).
fn d_position(t: usize, i: usize) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    (
        16 * w + l / 4 + 8 * ((i / 2) % 2),
        8 * (i / 4) + 2 * (l % 4) + (i % 2),
    )
}

// ---------------------------------------------------------------------------------------------
// wgmma kernels
// ---------------------------------------------------------------------------------------------

/// Copies `bytes` (a multiple of 16) from the global address in `src` to shared symbol `sym`,
/// 16 bytes per thread per round over 128 threads (`%r1` = tid).
fn copy_to_shared(label: &str, src: &str, sym: &str, bytes: usize) -> String {
    format!(
        "\tmov.u32 %r2, %r1;\n{label}:\n\tsetp.ge.u32 %p1, %r2, {chunks};\n\t@%p1 bra {label}_END;\n\
         \tmul.wide.u32 %rd4, %r2, 16;\n\tadd.s64 %rd5, {src}, %rd4;\n\
         \tld.global.v4.u32 {{%r4, %r5, %r6, %r7}}, [%rd5];\n\
         \tmov.u32 %r3, {sym};\n\tshl.b32 %r8, %r2, 4;\n\tadd.s32 %r3, %r3, %r8;\n\
         \tst.shared.v4.u32 [%r3], {{%r4, %r5, %r6, %r7}};\n\
         \tadd.s32 %r2, %r2, 128;\n\tbra {label};\n{label}_END:\n",
        chunks = bytes / 16
    )
}

/// How the operand tiles reach shared memory.
enum Fill {
    /// Plain `ld.global` / `st.shared` copies of host-made images (params `a`, `b`).
    Copies,
    /// One TMA load each, 128B swizzle, from tensor maps `ma`, `mb` (grid constants).
    Tma,
}

/// A one-warpgroup kernel: A (64 × [`KT`] bytes) in `sa`, B (`n` × [`KT`] bytes) in `sb`,
/// four wgmmas `shape` (k-steps of 32 bytes; descriptors `da<j>`, `db<j>` plus the tiles'
/// addresses), the first with scale-d false over D registers preset to 1000; thread `t`
/// stores its `n/2` D registers at `out + 4 (t·n/2 + i)`.
fn wgmma_kernel(shape: &str, n: usize, sixteen_bit: bool, fill: Fill) -> String {
    let (a_bytes, b_bytes) = (64 * KT, n * KT);
    let nd = n / 2;
    let mut params = vec![".param .u64 a", ".param .u64 b", ".param .u64 out"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for j in 0..4 {
        params.push(format!(".param .u64 da{j}"));
    }
    for j in 0..4 {
        params.push(format!(".param .u64 db{j}"));
    }
    if matches!(fill, Fill::Tma) {
        params.push(".param .align 64 .b8 ma[128]".into());
        params.push(".param .align 64 .b8 mb[128]".into());
    }
    let regs = format!(
        "\t.reg .pred %p<4>;\n\t.reg .b32 %r<12>;\n\t.reg .b64 %rd<24>;\n\t.reg .f32 %f<{}>;\n\
         \t.shared .align 1024 .b8 sa[{a_bytes}];\n\t.shared .align 1024 .b8 sb[{b_bytes}];\n\
         \t.shared .align 8 .b64 bar;",
        nd + 1
    );
    let mut body = String::from(
        "\tmov.u32 %r1, %tid.x;\n\
         \tld.param.u64 %rd1, [a];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
         \tld.param.u64 %rd2, [b];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
         \tld.param.u64 %rd3, [out];\n\tcvta.to.global.u64 %rd3, %rd3;\n",
    );
    match fill {
        Fill::Copies => {
            body += &copy_to_shared("COPY_A", "%rd1", "sa", a_bytes);
            body += &copy_to_shared("COPY_B", "%rd2", "sb", b_bytes);
            // Generic-proxy writes become visible to wgmma (the async proxy) after the fence.
            body += "\tfence.proxy.async.shared::cta;\n\tbar.sync 0;\n";
        }
        Fill::Tma => {
            body += &format!(
                "\tsetp.eq.u32 %p1, %r1, 0;\n\
                 \t@%p1 mbarrier.init.shared::cta.b64 [bar], 1;\n\
                 \tfence.mbarrier_init.release.cluster;\n\tbar.sync 0;\n\
                 \t@!%p1 bra WAIT;\n\
                 \tmbarrier.arrive.expect_tx.shared::cta.b64 %rd4, [bar], {tx};\n\
                 \tmov.u64 %rd5, ma;\n\tcvta.param.u64 %rd5, %rd5;\n\
                 \tmov.u64 %rd6, mb;\n\tcvta.param.u64 %rd6, %rd6;\n\
                 \tmov.u32 %r2, 0;\n\
                 \tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [sa], [%rd5, {{%r2, %r2}}], [bar];\n\
                 \tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [sb], [%rd6, {{%r2, %r2}}], [bar];\n\
                 WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [bar], 0;\n\t@!%p1 bra WAIT;\n",
                tx = a_bytes + b_bytes
            );
        }
    }
    body += "\tmov.u32 %r9, sa;\n\tand.b32 %r9, %r9, 262143;\n\tshr.u32 %r9, %r9, 4;\n\
             \tcvt.u64.u32 %rd6, %r9;\n\
             \tmov.u32 %r10, sb;\n\tand.b32 %r10, %r10, 262143;\n\tshr.u32 %r10, %r10, 4;\n\
             \tcvt.u64.u32 %rd7, %r10;\n";
    for j in 0..4 {
        body += &format!(
            "\tld.param.u64 %rd{a}, [da{j}];\n\tadd.s64 %rd{a}, %rd{a}, %rd6;\n\
             \tld.param.u64 %rd{b}, [db{j}];\n\tadd.s64 %rd{b}, %rd{b}, %rd7;\n",
            a = 8 + j,
            b = 12 + j
        );
    }
    for i in 1..=nd {
        body += &format!("\tmov.f32 %f{i}, 0f447A0000;\n");
    }
    let d = (1..=nd)
        .map(|i| format!("%f{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let trans = if sixteen_bit { ", 0, 0" } else { "" };
    body +=
        "\tsetp.ne.u32 %p2, %r1, %r1;\n\tsetp.eq.u32 %p3, %r1, %r1;\n\twgmma.fence.sync.aligned;\n";
    for j in 0..4 {
        body += &format!(
            "\twgmma.mma_async.sync.aligned.{shape} {{{d}}}, %rd{a}, %rd{b}, %p{p}, 1, 1{trans};\n",
            a = 8 + j,
            b = 12 + j,
            p = if j == 0 { 2 } else { 3 }
        );
    }
    body += "\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;\n";
    body += &format!(
        "\tmul.wide.u32 %rd16, %r1, {};\n\tadd.s64 %rd16, %rd3, %rd16;\n",
        nd * 4
    );
    for q in 0..nd / 4 {
        body += &format!(
            "\tst.global.v4.f32 [%rd16+{}], {{%f{}, %f{}, %f{}, %f{}}};\n",
            16 * q,
            4 * q + 1,
            4 * q + 2,
            4 * q + 3,
            4 * q + 4
        );
    }
    body += "\tret;";
    kernel(&params.join(", "), &regs, &body)
}

/// Checks the stored D fragments (`n/2` f32 per thread) against `want` (64 × `n`, row-major).
fn check_d(name: &str, out: &[u8], n: usize, want: &[f32]) {
    let got = f32s(out);
    let nd = n / 2;
    assert_eq!(got.len(), 128 * nd);
    let mut bad = Vec::new();
    let mut covered = vec![false; 64 * n];
    for t in 0..128 {
        for i in 0..nd {
            let (r, c) = d_position(t, i);
            covered[r * n + c] = true;
            let (g, w) = (got[t * nd + i], want[r * n + c]);
            if g.to_bits() != w.to_bits() {
                bad.push(format!(
                    "D[{r}][{c}] (thread {t} reg {i}): got {g}, want {w}"
                ));
            }
        }
    }
    assert!(
        covered.iter().all(|&c| c),
        "{name}: the D layout misses elements"
    );
    assert!(
        bad.is_empty(),
        "{name}: {} of {} elements differ, first: {}",
        bad.len(),
        64 * n,
        bad[..bad.len().min(8)].join("; ")
    );
}

/// `D[m][n] = Σ_k a(m,k) · b(n,k)` in f64, rounded to f32 (`a`: 64 × kk, `b`: n × kk).
fn matmul_nt(a: &[f64], b: &[f64], n: usize, kk: usize) -> Vec<f32> {
    let mut d = vec![0f32; 64 * n];
    for m in 0..64 {
        for j in 0..n {
            let s: f64 = (0..kk).map(|k| a[m * kk + k] * b[j * kk + k]).sum();
            d[m * n + j] = s as f32;
        }
    }
    d
}

/// E4M3 codes of the values k/4, |k/4| ≤ 4 (both zeros included): products are multiples of
/// 1/16 of magnitude ≤ 16, so every partial sum over K = 128 is exact in f32.
fn small_e4m3_codes() -> Vec<u8> {
    (0u8..=255)
        .filter(|&c| {
            let v = decode(Fp8Format::E4M3, c);
            v.is_finite() && v.abs() <= 4.0 && (v * 4.0).fract() == 0.0
        })
        .collect()
}

fn random_codes(rng: &mut Rng, codes: &[u8], len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| codes[rng.below(codes.len() as u64) as usize])
        .collect()
}

/// Runs the FP8 E4M3 wgmma kernel (`m64n{n}k32`, four k-steps over K = 128) with A and B
/// K-major in layouts `la`, `lb` and checks D exactly.
fn wgmma_e4m3(name: &str, n: usize, la: KMajor, lb: KMajor, seed: u64) {
    assert_eq!((la.rows, lb.rows), (64, n));
    let codes = small_e4m3_codes();
    assert!(codes.len() > 20, "{} codes", codes.len());
    let mut rng = Rng(seed);
    let a = random_codes(&mut rng, &codes, 64 * KT);
    // B as a checkpoint stores weights: [N][K].
    let b = random_codes(&mut rng, &codes, n * KT);
    let ptx = wgmma_kernel(&format!("m64n{n}k32.f32.e4m3.e4m3"), n, false, Fill::Copies);
    let mut extra: Vec<ParamValue> = (0..4).map(|j| ParamValue::U64(la.desc(j))).collect();
    extra.extend((0..4).map(|j| ParamValue::U64(lb.desc(j))));
    let buffers = [la.image(&a), lb.image(&b), vec![0u8; 128 * n / 2 * 4]];
    let (out, _) = run_block(name, &ptx, [128, 1, 1], &buffers, &extra, &quick())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let dec = |v: &[u8]| -> Vec<f64> {
        v.iter()
            .map(|&c| f64::from(decode(Fp8Format::E4M3, c)))
            .collect()
    };
    let want = matmul_nt(&dec(&a), &dec(&b), n, KT);
    check_d(name, &out[2], n, &want);
}

#[test]
fn wgmma_e4m3_m64n32k32_k_major_no_swizzle() {
    // A: K-adjacent core matrices contiguous (LBO 128), 8-row groups 1024 bytes apart; B the
    // other way round: 8-row groups contiguous (SBO 128), K-adjacent ones 4·128 bytes apart.
    wgmma_e4m3(
        "wgmma_e4m3_none",
        32,
        KMajor::interleaved(64, 128, 1024),
        KMajor::interleaved(32, 4 * 128, 128),
        1,
    );
}

#[test]
fn wgmma_e4m3_m64n32k32_k_major_32b_swizzle() {
    wgmma_e4m3(
        "wgmma_e4m3_sw32",
        32,
        KMajor::swizzled(Sw::B32, 64),
        KMajor::swizzled(Sw::B32, 32),
        2,
    );
}

#[test]
fn wgmma_e4m3_m64n32k32_k_major_64b_swizzle() {
    wgmma_e4m3(
        "wgmma_e4m3_sw64",
        32,
        KMajor::swizzled(Sw::B64, 64),
        KMajor::swizzled(Sw::B64, 32),
        3,
    );
}

#[test]
fn wgmma_e4m3_m64n32k32_k_major_128b_swizzle() {
    wgmma_e4m3(
        "wgmma_e4m3_sw128",
        32,
        KMajor::swizzled(Sw::B128, 64),
        KMajor::swizzled(Sw::B128, 32),
        4,
    );
}

#[test]
fn wgmma_e4m3_m64n8k32_k_major_128b_swizzle() {
    wgmma_e4m3(
        "wgmma_e4m3_n8_sw128",
        8,
        KMajor::swizzled(Sw::B128, 64),
        KMajor::swizzled(Sw::B128, 8),
        5,
    );
}

#[test]
fn wgmma_e4m3_m64n16k32_k_major_32b_swizzle() {
    wgmma_e4m3(
        "wgmma_e4m3_n16_sw32",
        16,
        KMajor::swizzled(Sw::B32, 64),
        KMajor::swizzled(Sw::B32, 16),
        6,
    );
}

#[test]
fn wgmma_bf16_m64n16k16_k_major_128b_swizzle() {
    let name = "wgmma_bf16_sw128";
    let n = 16;
    let kk = KT / 2; // 64 bf16 along K: 4 k-steps of 16
    let (la, lb) = (
        KMajor::swizzled(Sw::B128, 64),
        KMajor::swizzled(Sw::B128, n),
    );
    let mut rng = Rng(7);
    // Small integers: bf16 holds them exactly (the upper half of the f32's bits).
    let mut ints = |len: usize| -> Vec<f64> {
        (0..len)
            .map(|_| rng.below(17) as f64 - 8.0)
            .collect::<Vec<_>>()
    };
    let a = ints(64 * kk);
    let b = ints(n * kk);
    let bf16_bytes = |v: &[f64]| -> Vec<u8> {
        let bits: Vec<u16> = v
            .iter()
            .map(|&x| ((x as f32).to_bits() >> 16) as u16)
            .collect();
        bytes_u16(&bits)
    };
    let ptx = wgmma_kernel("m64n16k16.f32.bf16.bf16", n, true, Fill::Copies);
    let mut extra: Vec<ParamValue> = (0..4).map(|j| ParamValue::U64(la.desc(j))).collect();
    extra.extend((0..4).map(|j| ParamValue::U64(lb.desc(j))));
    let buffers = [
        la.image(&bf16_bytes(&a)),
        lb.image(&bf16_bytes(&b)),
        vec![0u8; 128 * n / 2 * 4],
    ];
    let (out, _) = run_block(name, &ptx, [128, 1, 1], &buffers, &extra, &quick())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    check_d(name, &out[2], n, &matmul_nt(&a, &b, n, kk));
}

/// A 2-D u8 tensor map, 128B swizzle, zero OOB fill.
fn map_u8(address: u64, dims: [u64; 2], stride: u64, boxes: [u32; 2]) -> TensorMap {
    TensorMap::encode_tiled(
        DataType::Uint8,
        2,
        address,
        &dims,
        &[stride],
        &boxes,
        &[1, 1],
        Interleave::None,
        Swizzle::B128,
        L2Promotion::None,
        OobFill::None,
    )
    .unwrap()
}

#[test]
fn tma_loaded_e4m3_tiles_feed_wgmma_with_128b_swizzle() {
    // dsc's FP8 GEMM path: A [64][128] and B [32][128] (K-major, as stored) loaded by TMA with
    // SWIZZLE_128B, which writes exactly the canonical K-major 128B layout wgmma reads.
    let name = "tma_wgmma_e4m3_sw128";
    let n = 32;
    let codes = small_e4m3_codes();
    let mut rng = Rng(11);
    let a = random_codes(&mut rng, &codes, 64 * KT);
    let b = random_codes(&mut rng, &codes, n * KT);
    let (la, lb) = (
        KMajor::swizzled(Sw::B128, 64),
        KMajor::swizzled(Sw::B128, n),
    );
    let ptx = wgmma_kernel("m64n32k32.f32.e4m3.e4m3", n, false, Fill::Tma);
    let buffers = [a.clone(), b.clone(), vec![0u8; 128 * n / 2 * 4]];
    let (out, _) = run_block_with(
        name,
        &ptx,
        [128, 1, 1],
        &buffers,
        |addr| {
            let mut extra: Vec<ParamValue> = (0..4).map(|j| ParamValue::U64(la.desc(j))).collect();
            extra.extend((0..4).map(|j| ParamValue::U64(lb.desc(j))));
            let ma = map_u8(addr[0], [KT as u64, 64], KT as u64, [KT as u32, 64]);
            let mb = map_u8(
                addr[1],
                [KT as u64, n as u64],
                KT as u64,
                [KT as u32, n as u32],
            );
            extra.push(ParamValue::Bytes(ma.to_bytes().to_vec()));
            extra.push(ParamValue::Bytes(mb.to_bytes().to_vec()));
            extra
        },
        &quick(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let dec = |v: &[u8]| -> Vec<f64> {
        v.iter()
            .map(|&c| f64::from(decode(Fp8Format::E4M3, c)))
            .collect()
    };
    check_d(name, &out[2], n, &matmul_nt(&dec(&a), &dec(&b), n, KT));
}

// ---------------------------------------------------------------------------------------------
// TMA + mbarrier
// ---------------------------------------------------------------------------------------------

/// Global tensor of the TMA tests: [ROWS][COLS] u8 with rows `STRIDE` bytes apart (the
/// padding is never read).
const ROWS: usize = 40;
const COLS: usize = 100;
const STRIDE: usize = 112;
/// Box: 128 columns (128 bytes, the 128B swizzle span) × 16 rows.
const BOX: [usize; 2] = [128, 16];
/// Box starts (column, row): one past the right/bottom edges, one past the left/top.
const STARTS: [[i32; 2]; 2] = [[32, 30], [-48, -5]];

/// Thread 0 arms the mbarrier with `arrive.expect_tx` of param `tx` bytes and issues two TMA
/// loads (boxes at [`STARTS`]) into `tile` and `tile + 2048`; all 128 threads wait on parity
/// 0, then copy the 4096 raw shared bytes to `out`.
fn tma_kernel() -> String {
    let params = ".param .u64 g, .param .u64 out, .param .align 64 .b8 map[128], .param .u32 tx";
    let regs = "\t.reg .pred %p<4>;\n\t.reg .b32 %r<16>;\n\t.reg .b64 %rd<12>;\n\
                \t.shared .align 1024 .b8 tile[4096];\n\t.shared .align 8 .b64 bar;";
    let [[c0, r0], [c1, r1]] = STARTS;
    let body = format!(
        "\tmov.u32 %r1, %tid.x;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [bar], 1;\n\
         \tfence.mbarrier_init.release.cluster;\n\
         \tbar.sync 0;\n\
         \t@!%p1 bra WAIT;\n\
         \tld.param.u32 %r2, [tx];\n\
         \tmbarrier.arrive.expect_tx.shared::cta.b64 %rd1, [bar], %r2;\n\
         \tmov.u64 %rd2, map;\n\
         \tcvta.param.u64 %rd2, %rd2;\n\
         \tmov.s32 %r3, {c0};\n\tmov.s32 %r4, {r0};\n\tmov.s32 %r5, {c1};\n\tmov.s32 %r6, {r1};\n\
         \tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [tile], [%rd2, {{%r3, %r4}}], [bar];\n\
         \tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [tile+2048], [%rd2, {{%r5, %r6}}], [bar];\n\
         WAIT:\n\
         \tmbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], 0;\n\
         \t@!%p2 bra WAIT;\n\
         \tld.param.u64 %rd3, [out];\n\
         \tcvta.to.global.u64 %rd3, %rd3;\n\
         \tmov.u32 %r7, %r1;\n\
         COPY:\n\
         \tsetp.ge.u32 %p3, %r7, 256;\n\
         \t@%p3 bra DONE;\n\
         \tmov.u32 %r8, tile;\n\
         \tshl.b32 %r9, %r7, 4;\n\
         \tadd.s32 %r8, %r8, %r9;\n\
         \tld.shared.v4.u32 {{%r10, %r11, %r12, %r13}}, [%r8];\n\
         \tmul.wide.u32 %rd4, %r7, 16;\n\
         \tadd.s64 %rd4, %rd3, %rd4;\n\
         \tst.global.v4.u32 [%rd4], {{%r10, %r11, %r12, %r13}};\n\
         \tadd.s32 %r7, %r7, 128;\n\
         \tbra COPY;\n\
         DONE:\n\
         \tret;"
    );
    kernel(params, regs, &body)
}

/// The tensor: every in-bounds byte non-zero, the row padding 0xEE.
fn tma_tensor() -> Vec<u8> {
    let mut g = vec![0xEEu8; ROWS * STRIDE];
    for r in 0..ROWS {
        for c in 0..COLS {
            g[r * STRIDE + c] = 1 + ((r * 131 + c * 7) % 200) as u8;
        }
    }
    g
}

fn run_tma(name: &str, tx: u32) -> Result<Vec<u8>, EmuError> {
    let ptx = tma_kernel();
    let buffers = [tma_tensor(), vec![0u8; 4096]];
    run_block_with(
        name,
        &ptx,
        [128, 1, 1],
        &buffers,
        |addr| {
            let map = map_u8(
                addr[0],
                [COLS as u64, ROWS as u64],
                STRIDE as u64,
                [BOX[0] as u32, BOX[1] as u32],
            );
            assert_eq!(map.box_bytes(), 2048);
            vec![
                ParamValue::Bytes(map.to_bytes().to_vec()),
                ParamValue::U32(tx),
            ]
        },
        &quick(),
    )
    .map(|(out, _)| out[1].clone())
}

#[test]
fn tma_2d_128b_swizzle_box_across_the_bounds_zero_fills() {
    let name = "tma_sw128_oob";
    let got = run_tma(name, 2 * 2048).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = tma_tensor();
    let mut want = vec![0u8; 4096];
    for (b, [c0, r0]) in STARTS.iter().enumerate() {
        for y in 0..BOX[1] {
            for x in 0..BOX[0] {
                let (r, c) = (*r0 + y as i32, *c0 + x as i32);
                let v = if (0..ROWS as i32).contains(&r) && (0..COLS as i32).contains(&c) {
                    g[r as usize * STRIDE + c as usize]
                } else {
                    0
                };
                // Each box is 2048 bytes at a 1024-byte aligned address.
                want[b * 2048 + swizzle(y * BOX[0] + x, Sw::B128)] = v;
            }
        }
    }
    let bad: Vec<String> = (0..4096)
        .filter(|&i| got[i] != want[i])
        .map(|i| format!("shared byte {i}: got {:#x}, want {:#x}", got[i], want[i]))
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: {} of 4096 bytes differ, first: {}",
        bad.len(),
        bad[..bad.len().min(8)].join("; ")
    );
}

#[test]
fn expect_tx_beyond_the_bytes_copied_is_a_deadlock() {
    // 16 bytes more than the two boxes bring: the phase never completes, every warp only polls.
    let err = run_tma("tma_tx_deadlock", 2 * 2048 + 16).unwrap_err();
    let EmuError::Deadlock { kernel, cta, .. } = &err else {
        panic!("expected a deadlock, got {err:?}");
    };
    assert_eq!(kernel, "k");
    assert_eq!(*cta, [0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// mbarrier phases
// ---------------------------------------------------------------------------------------------

#[test]
fn mbarrier_phases_flip_parity_and_tokens_complete() {
    // 64 threads (2 warps), one mbarrier of count 64, 4 phases in a loop. In phase j each
    // thread: tests the current phase's parity (must be false: its own arrival is missing) and
    // the preceding phase's (true for j ≥ 1), writes 100 j + tid to buffer j mod 2, arrives
    // (keeping the token), waits on the parity, tests the token (true), reads its neighbour's
    // slot (tid + 37) mod 64, and stores {neighbour, current, preceding, token} for (j, tid).
    let name = "mbarrier_phases";
    let regs = "\t.reg .pred %p<8>;\n\t.reg .b32 %r<20>;\n\t.reg .b64 %rd<8>;\n\
                \t.shared .align 8 .b64 bar;\n\t.shared .align 4 .b32 slots[128];";
    let body = "\tmov.u32 %r1, %tid.x;\n\
         \tld.param.u64 %rd1, [out];\n\
         \tcvta.to.global.u64 %rd1, %rd1;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [bar], 64;\n\
         \tbar.sync 0;\n\
         \tmov.u32 %r2, 0;\n\
         \tmov.u32 %r3, 0;\n\
         \tadd.s32 %r4, %r1, 37;\n\
         \trem.u32 %r4, %r4, 64;\n\
         \tmov.u32 %r5, slots;\n\
         LOOP:\n\
         \tmbarrier.test_wait.parity.shared::cta.b64 %p2, [bar], %r3;\n\
         \txor.b32 %r6, %r3, 1;\n\
         \tmbarrier.test_wait.parity.shared::cta.b64 %p3, [bar], %r6;\n\
         \tand.b32 %r7, %r2, 1;\n\
         \tshl.b32 %r7, %r7, 8;\n\
         \tadd.s32 %r8, %r5, %r7;\n\
         \tshl.b32 %r9, %r1, 2;\n\
         \tadd.s32 %r9, %r8, %r9;\n\
         \tmad.lo.s32 %r10, %r2, 100, %r1;\n\
         \tst.shared.u32 [%r9], %r10;\n\
         \tmbarrier.arrive.shared::cta.b64 %rd2, [bar];\n\
         WAIT:\n\
         \tmbarrier.try_wait.parity.shared::cta.b64 %p4, [bar], %r3;\n\
         \t@!%p4 bra WAIT;\n\
         \tmbarrier.test_wait.shared::cta.b64 %p5, [bar], %rd2;\n\
         \tshl.b32 %r11, %r4, 2;\n\
         \tadd.s32 %r11, %r8, %r11;\n\
         \tld.shared.u32 %r12, [%r11];\n\
         \tselp.u32 %r13, 1, 0, %p2;\n\
         \tselp.u32 %r14, 1, 0, %p3;\n\
         \tselp.u32 %r15, 1, 0, %p5;\n\
         \tmad.lo.s32 %r16, %r2, 64, %r1;\n\
         \tmul.wide.u32 %rd3, %r16, 16;\n\
         \tadd.s64 %rd3, %rd1, %rd3;\n\
         \tst.global.v4.u32 [%rd3], {%r12, %r13, %r14, %r15};\n\
         \txor.b32 %r3, %r3, 1;\n\
         \tadd.s32 %r2, %r2, 1;\n\
         \tsetp.lt.u32 %p6, %r2, 4;\n\
         \t@%p6 bra LOOP;\n\
         \tret;";
    let ptx = kernel(".param .u64 out", regs, body);
    let (out, _) = run_block(
        name,
        &ptx,
        [64, 1, 1],
        &[vec![0u8; 4 * 64 * 16]],
        &[],
        &quick(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = u32s(&out[0]);
    for j in 0..4u32 {
        for t in 0..64u32 {
            let i = 4 * (j * 64 + t) as usize;
            let rec = &got[i..i + 4];
            assert_eq!(
                rec[0],
                100 * j + (t + 37) % 64,
                "phase {j} thread {t}: the neighbour's slot"
            );
            assert_eq!(
                rec[1], 0,
                "phase {j} thread {t}: test_wait.parity of the current phase before arriving"
            );
            if j > 0 {
                assert_eq!(
                    rec[2], 1,
                    "phase {j} thread {t}: test_wait.parity of the preceding phase"
                );
            }
            assert_eq!(
                rec[3], 1,
                "phase {j} thread {t}: test_wait with the arrival's token"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cp.async
// ---------------------------------------------------------------------------------------------

fn source_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 37 + 11) as u8 | 1).collect()
}

#[test]
fn cp_async_after_wait_group_is_visible() {
    // 32 threads each copy 16 bytes with cp.async.cg, commit, wait_group 0, bar.sync, then
    // read the chunk of thread (tid + 5) mod 32.
    let name = "cp_async_wait";
    let regs = "\t.reg .b32 %r<12>;\n\t.reg .b64 %rd<8>;\n\t.shared .align 16 .b8 buf[512];";
    let body = "\tmov.u32 %r1, %tid.x;\n\
         \tld.param.u64 %rd1, [src];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
         \tld.param.u64 %rd2, [out];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
         \tmul.wide.u32 %rd3, %r1, 16;\n\tadd.s64 %rd4, %rd1, %rd3;\n\
         \tmov.u32 %r2, buf;\n\tshl.b32 %r3, %r1, 4;\n\tadd.s32 %r4, %r2, %r3;\n\
         \tcp.async.cg.shared.global [%r4], [%rd4], 16;\n\
         \tcp.async.commit_group;\n\
         \tcp.async.wait_group 0;\n\
         \tbar.sync 0;\n\
         \tadd.s32 %r5, %r1, 5;\n\tand.b32 %r5, %r5, 31;\n\tshl.b32 %r5, %r5, 4;\n\
         \tadd.s32 %r5, %r2, %r5;\n\
         \tld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r5];\n\
         \tadd.s64 %rd5, %rd2, %rd3;\n\
         \tst.global.v4.u32 [%rd5], {%r6, %r7, %r8, %r9};\n\
         \tret;";
    let ptx = kernel(".param .u64 src, .param .u64 out", regs, body);
    let src = source_bytes(512);
    let (out, _) = run_block(
        name,
        &ptx,
        [32, 1, 1],
        &[src.clone(), vec![0u8; 512]],
        &[],
        &quick(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    for t in 0..32 {
        let from = (t + 5) % 32;
        assert_eq!(
            out[1][16 * t..16 * t + 16],
            src[16 * from..16 * from + 16],
            "thread {t}: the chunk of thread {from}"
        );
    }
}

#[test]
fn cp_async_read_before_its_wait_sees_the_old_contents() {
    // The emulator runs a cp.async copy at the latest point PTX allows (when a wait_group
    // retires its group, or the CTA ends), so a kernel that reads the destination before the
    // wait — a race on hardware, where the copy may or may not have landed — deterministically
    // sees the old contents, and a missing wait shows up as wrong data.
    //
    // Each thread fills its chunks A (buf + 16 tid) and B (buf + 512 + 16 tid) with a sentinel,
    // issues cp.async to A (group 0) and B (group 1), then records: A before any wait (old),
    // A and B after wait_group 1 (A new, B still old: its group is the one allowed in flight),
    // B after wait_group 0 (new).
    let name = "cp_async_early_read";
    let regs = "\t.reg .b32 %r<16>;\n\t.reg .b64 %rd<8>;\n\t.shared .align 16 .b8 buf[1024];";
    let body = "\tmov.u32 %r1, %tid.x;\n\
         \tld.param.u64 %rd1, [src];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
         \tld.param.u64 %rd2, [out];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
         \tmul.wide.u32 %rd3, %r1, 16;\n\tadd.s64 %rd4, %rd1, %rd3;\n\tadd.s64 %rd5, %rd2, %rd3;\n\
         \tmov.u32 %r2, buf;\n\tshl.b32 %r3, %r1, 4;\n\tadd.s32 %r4, %r2, %r3;\n\
         \tmov.u32 %r5, 0x5A5A5A5A;\n\
         \tst.shared.v4.u32 [%r4], {%r5, %r5, %r5, %r5};\n\
         \tst.shared.v4.u32 [%r4+512], {%r5, %r5, %r5, %r5};\n\
         \tcp.async.cg.shared.global [%r4], [%rd4], 16;\n\
         \tcp.async.commit_group;\n\
         \tcp.async.cg.shared.global [%r4+512], [%rd4+512], 16;\n\
         \tcp.async.commit_group;\n\
         \tld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r4];\n\
         \tst.global.v4.u32 [%rd5], {%r6, %r7, %r8, %r9};\n\
         \tcp.async.wait_group 1;\n\
         \tld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r4];\n\
         \tst.global.v4.u32 [%rd5+512], {%r6, %r7, %r8, %r9};\n\
         \tld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r4+512];\n\
         \tst.global.v4.u32 [%rd5+1024], {%r6, %r7, %r8, %r9};\n\
         \tcp.async.wait_group 0;\n\
         \tld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r4+512];\n\
         \tst.global.v4.u32 [%rd5+1536], {%r6, %r7, %r8, %r9};\n\
         \tret;";
    let ptx = kernel(".param .u64 src, .param .u64 out", regs, body);
    let src = source_bytes(1024);
    let (out, _) = run_block(
        name,
        &ptx,
        [32, 1, 1],
        &[src.clone(), vec![0u8; 2048]],
        &[],
        &quick(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let old = [0x5Au8; 16];
    for t in 0..32 {
        let rec = |k: usize| &out[1][512 * k + 16 * t..512 * k + 16 * t + 16];
        let a = &src[16 * t..16 * t + 16];
        let b = &src[512 + 16 * t..512 + 16 * t + 16];
        assert_eq!(rec(0), old, "thread {t}: chunk A read before any wait");
        assert_eq!(rec(1), a, "thread {t}: chunk A after wait_group 1");
        assert_eq!(
            rec(2),
            old,
            "thread {t}: chunk B after wait_group 1 (group 1 in flight)"
        );
        assert_eq!(rec(3), b, "thread {t}: chunk B after wait_group 0");
    }
}
