//! The sm_89 FP8 GEMM (`cp.async` ring, `ldmatrix`, `mma.sync m16n8k32`) on the emulator:
//! bit for bit what the CPU reference and the one-warp-per-tile form compute (every promotion
//! interval, both FP8 formats, ragged M, N and K, every tile shape), and its work as the profile
//! counts it (issue 11's static checks): every MMA it issues is one of the padded tile grid's
//! (FP8 tensor-op count = FLOPs / (16 · 8 · 32 · 2)), `cp.async` brings each tile's A and B
//! K-slices and scales once, all global traffic stays within 1.2× of that plus the output, and
//! the `ldmatrix` reads of the swizzled tiles have no bank conflicts.

use super::compiled;
use super::fp8_gemm_profile::{gemm_steps, profiles};
use crate::support::TempDir;
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::fp8_gemm::{Fp8Gemm, GemmForm};
use dsc_codegen::kernels::fp8_gemm_cp_async::{stages_for, tiles_for};
use dsc_emulator::{GlobalMemory, LaunchProfile, Module, ParamValue};
use dsc_ir::DType;
use dsc_kernels::rng::SplitMix64;
use dsc_kernels::{Accumulator, BlockGemmConfig, Fp8Format, Fp8Operand, GemmDims, fp8_block_gemm};

/// Random FP8 codes without NaNs (E4M3's S.1111.111; E5M2's exponent 11111 is Inf/NaN).
pub(super) fn codes(rng: &mut SplitMix64, n: usize, format: DType) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let c = rng.next_u64() as u8;
            match format {
                DType::F8E5M2 if c & 0x7c == 0x7c => c & !0x04,
                _ if c & 0x7f == 0x7f => c & !0x01,
                _ => c,
            }
        })
        .collect()
}

/// Positive scales across a few binades.
pub(super) fn scales(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (1 + rng.next_u64() % 1000) as f32 / 4096.0)
        .collect()
}

pub(super) fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The CPU reference's `rows × n × k` product of `[(x, x_scale), (w, w_scale)]` under `cfg`,
/// and its bytes as `output` (f32, or rounded to bf16).
pub(super) fn reference(
    [(x, x_scale), (w, w_scale)]: [(&[u8], &[f32]); 2],
    (rows, n, k): (u64, u64, u64),
    cfg: &BlockGemmConfig,
    output: DType,
) -> (Vec<f32>, Vec<u8>) {
    let y = fp8_block_gemm(
        Fp8Operand {
            codes: x,
            scales: x_scale,
        },
        Fp8Operand {
            codes: w,
            scales: w_scale,
        },
        GemmDims {
            m: rows as usize,
            n: n as usize,
            k: k as usize,
        },
        cfg,
    )
    .expect("the CPU reference runs");
    let bytes = match output {
        DType::F32 => bytes_f32(&y),
        _ => y
            .iter()
            .flat_map(|&v| {
                dsc_kernels::numerics::bf16::to_bf16(v)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect(),
    };
    (y, bytes)
}

/// Runs the dense `gemm` alone on the emulator over `(x, x_scale, w, w_scale)`; its output's
/// bytes and the launch's profile.
fn run(
    gemm: &Fp8Gemm,
    x: &[u8],
    x_scale: &[f32],
    w: &[u8],
    w_scale: &[f32],
) -> (Vec<u8>, LaunchProfile) {
    let kernel = GpuKernel::Fp8Gemm(gemm.clone());
    let ptx = super::kernel_run::lower(&kernel, Target::Sm89);
    let module = Module::parse(&ptx).expect("emulator parses the PTX");
    let mut memory = GlobalMemory::new();
    let mut params = Vec::new();
    for bytes in [
        x.to_vec(),
        bytes_f32(x_scale),
        w.to_vec(),
        bytes_f32(w_scale),
    ] {
        let at = memory.allocate(bytes.len() as u64);
        memory.write(at, &bytes).expect("write");
        params.push(ParamValue::U64(at));
    }
    let len = (gemm.rows * gemm.n * gemm.output.size_bytes()) as usize;
    let out = memory.allocate(len as u64);
    memory.write(out, &vec![0x5a; len]).expect("write");
    params.push(ParamValue::U64(out));
    let profile = super::kernel_run::launch_kernel(&kernel, &module, &memory, &params)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut bytes = vec![0u8; len];
    memory.read(out, &mut bytes).expect("read");
    (bytes, profile)
}

/// Dense GEMMs off every tile edge (M, N not multiples of the tile; K a multiple of 16 but not
/// of 32 or 128), each promotion interval, E4M3 and E5M2, f32 and bf16 outputs, the large and
/// small tile shapes: the pipelined form's outputs are the CPU reference's bit for bit (f32
/// sums in the same order, the same promotion), and the one-warp-per-tile form's.
#[test]
fn the_pipelined_sm89_gemm_is_bit_exact_against_the_cpu_reference() {
    let cases = [
        // (rows, n, k, interval, format, output, tile)
        (
            200u64,
            300u64,
            400u64,
            128u64,
            DType::F8E4M3,
            DType::F32,
            (128u64, 128u64),
        ),
        (200, 300, 400, 128, DType::F8E4M3, DType::Bf16, (128, 64)),
        (77, 130, 272, 64, DType::F8E5M2, DType::F32, (64, 128)),
        (77, 131, 272, 32, DType::F8E4M3, DType::F32, (64, 64)),
        (33, 45, 144, 32, DType::F8E4M3, DType::Bf16, (64, 32)),
        (130, 40, 528, 64, DType::F8E4M3, DType::F32, (128, 32)),
    ];
    let mut rng = SplitMix64(17);
    for (rows, n, k, interval, format, output, (block_m, block_n)) in cases {
        let stages = stages_for(block_m, block_n);
        let what = format!(
            "{rows}×{n}×{k}, interval {interval}, {format:?} → {output:?}, {block_m}×{block_n}"
        );
        let k_tiles = k.div_ceil(128);
        let x = codes(&mut rng, (rows * k) as usize, format);
        let w = codes(&mut rng, (n * k) as usize, format);
        let x_scale = scales(&mut rng, (rows * k_tiles) as usize);
        let w_scale = scales(&mut rng, (n.div_ceil(128) * k_tiles) as usize);
        let mut gemm = Fp8Gemm {
            rows,
            n,
            k,
            act_tile: 128,
            weight_block: 128,
            promote_interval: interval,
            format,
            output,
            grouped: None,
            form: GemmForm::MmaPipelined {
                block_m,
                block_n,
                stages,
            },
            w_row_tiles: false,
            x_square_blocks: false,
        };
        let (pipelined, profile) = run(&gemm, &x, &x_scale, &w, &w_scale);
        gemm.form = GemmForm::MmaSync;
        let (one_warp, _) = run(&gemm, &x, &x_scale, &w, &w_scale);
        assert!(
            pipelined == one_warp,
            "{what}: differs from the MmaSync form"
        );
        let cfg = BlockGemmConfig {
            fmt: match format {
                DType::F8E5M2 => Fp8Format::E5M2,
                _ => Fp8Format::E4M3,
            },
            promote_interval: interval as usize,
            accumulator: Accumulator::Exact,
            ..BlockGemmConfig::default()
        };
        let (y, expected) = reference([(&x, &x_scale), (&w, &w_scale)], (rows, n, k), &cfg, output);
        let first = pipelined.iter().zip(&expected).position(|(a, b)| a != b);
        if let Some(b) = first {
            let i = b / output.size_bytes() as usize;
            let got =
                &pipelined[i * output.size_bytes() as usize..][..output.size_bytes() as usize];
            panic!(
                "{what}: element {i} differs from the CPU reference: {} ({:08x}) vs got {got:02x?}",
                y[i],
                y[i].to_bits()
            );
        }
        // The swizzled tiles' ldmatrix reads and the scales' reads are conflict-free: one
        // wavefront per 8 × 16-byte matrix and per scale load.
        let ldmatrix = profile.instruction_mix["ldmatrix.sync.aligned.m8n8.x4.shared.b16"];
        let scale_loads = profile
            .instruction_mix
            .get("ld.shared.u32")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            profile.shared_wavefronts,
            4 * ldmatrix + scale_loads,
            "{what}: bank conflicts"
        );
    }
}

/// One FP8 MMA's FLOPs.
const MMA_FLOPS: u64 = 16 * 8 * 32 * 2;

/// The dense GEMMs of wide-mlp on sm_89 (128 × 64 tiles for `up`, 64 × 64 for `down`; M, N
/// and K off the tiles).
#[test]
fn sm89_dense_fp8_gemms_issue_the_tile_grids_mmas_and_load_each_tile_once() {
    let tmp = TempDir::new("fp8-gemm-sm89-profile-dense");
    let artifact = compiled(&tmp, "tests/gpu/models/wide-mlp.toml", "sm_89");
    let profiles = profiles(&artifact);
    let steps = gemm_steps(&artifact, "mma_pipelined");
    assert_eq!(steps.len(), 2, "wide-mlp has two FP8 GEMMs");
    for (i, g) in steps {
        let p = &profiles[i];
        let what = format!(
            "{} ({}×{}×{}, {}×{} tiles)",
            g.op, g.rows, g.n, g.k, g.block_m, g.block_n
        );
        assert!(!g.grouped);
        let tiles = g.rows.div_ceil(g.block_m) * g.n.div_ceil(g.block_n);
        let k_blocks = g.k.div_ceil(128);
        // FP8 tensor-core operations: the padded tile grid's FLOPs over one MMA's.
        let padded_flops = 2 * tiles * g.block_m * g.block_n * k_blocks * 128;
        let kind = "mma.m16n8k32.e4m3".to_string();
        assert_eq!(p.tensor_ops.keys().collect::<Vec<_>>(), [&kind], "{what}");
        assert_eq!(p.tensor_ops[&kind], padded_flops / MMA_FLOPS, "{what}");
        assert_eq!(p.total_tensor_flops(), padded_flops, "{what}");
        // Each tile's A and B K-slices through cp.async once, and their scales once.
        let tile_bytes = tiles * (g.block_m + g.block_n) * k_blocks * 128;
        let scale_bytes = tiles * k_blocks * 4 * (g.block_m + 1);
        assert_eq!(p.async_copy_bytes, tile_bytes + scale_bytes, "{what}");
        let output = g.rows * g.n * 2;
        let global = p.async_copy_bytes + p.global_load_bytes + p.global_store_bytes;
        assert!(
            global as f64 <= 1.2 * (tile_bytes + output) as f64,
            "{what}: {global} bytes against {tile_bytes} + {output}"
        );
        assert_eq!(p.global_store_bytes, output, "{what}: every output once");
        // Shared memory: ldmatrix of the swizzled tiles (4 matrices, 4 wavefronts) and the
        // scales' 32-bit loads, each conflict-free.
        let ldmatrix = p.instruction_mix["ldmatrix.sync.aligned.m8n8.x4.shared.b16"];
        let scale_loads = p.instruction_mix["ld.shared.u32"];
        assert_eq!(
            p.shared_wavefronts,
            4 * ldmatrix + scale_loads,
            "{what}: bank conflicts"
        );
    }
}

/// The grouped GEMMs of wide-moe on sm_89: rows gathered through the dispatch by the copies'
/// computed source addresses; tiles of no expert issue nothing.
#[test]
fn sm89_grouped_fp8_gemms_gather_rows_without_bank_conflicts() {
    let tmp = TempDir::new("fp8-gemm-sm89-profile-grouped");
    let artifact = compiled(&tmp, "tests/gpu/models/wide-moe.toml", "sm_89");
    let profiles = profiles(&artifact);
    let grouped: Vec<_> = gemm_steps(&artifact, "mma_pipelined")
        .into_iter()
        .filter(|(_, g)| g.grouped)
        .collect();
    assert_eq!(grouped.len(), 3, "gate, up and down of the routed experts");
    for (i, g) in grouped {
        let p = &profiles[i];
        let what = format!(
            "{} ({} rows, {}×{} tiles)",
            g.op, g.rows, g.block_m, g.block_n
        );
        let k_blocks = g.k.div_ceil(128);
        let ops = p.tensor_ops["mma.m16n8k32.e4m3"];
        // Whole tiles only, and no more than the dispatch's padded layout holds.
        let per_tile = (g.block_m / 16) * (g.block_n / 8) * k_blocks * 4;
        assert!(ops > 0 && ops.is_multiple_of(per_tile), "{what}: {ops}");
        let tiles = ops / per_tile;
        let tile_bytes = tiles * (g.block_m + g.block_n) * k_blocks * 128;
        let scale_bytes = tiles * k_blocks * 4 * (g.block_m + 1);
        assert_eq!(p.async_copy_bytes, tile_bytes + scale_bytes, "{what}");
        let ldmatrix = p.instruction_mix["ldmatrix.sync.aligned.m8n8.x4.shared.b16"];
        let scale_loads = p.instruction_mix["ld.shared.u32"];
        assert_eq!(
            p.shared_wavefronts,
            4 * ldmatrix + scale_loads,
            "{what}: bank conflicts"
        );
    }
}

/// The tile heuristic on the dense shapes it is documented with reaches the kernel's form.
#[test]
fn the_sm89_tiles_come_from_the_wave_heuristic() {
    let gemm = |rows, n, k| Fp8Gemm::recipe(rows, n, k, GemmForm::MmaSync);
    let t = tiles_for(&gemm(4096, 7168, 16384));
    assert_eq!((t.block_m, t.block_n, t.stages), (128, 128, 3));
    let t = tiles_for(&gemm(64, 2112, 7168));
    assert_eq!((t.block_m, t.block_n), (64, 32));
}
