//! The training step's scale layouts of `fp8_gemm` on the emulator, for both targets: the
//! Wgrad's weight operand tiled 1 × 128 per row (`w_row_tiles`: both operands are activations
//! tiled along the tokens) and the ablation's activation scaled per 128 × 128 block
//! (`x_square_blocks`). The SIMT and one-warp-per-tile forms read each scale where the CPU
//! reference does, so their outputs are the reference's bit for bit, at ragged sizes and every
//! promotion interval. The sm_89 pipelined form does not take these layouts (the planner keeps
//! them on `MmaSync` there); the sm_90a one does, and is checked by whole training steps
//! (`training_steps`), whose Wgrad GEMMs it runs.

use super::fp8_gemm_sm89_profile::{bytes_f32, codes, reference, scales};
use super::kernel_run::{lower, run_ptx};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::fp8_gemm::{Fp8Gemm, GemmForm};
use dsc_codegen::kernels::fp8_gemm_cp_async;
use dsc_ir::DType;
use dsc_kernels::rng::SplitMix64;
use dsc_kernels::{Accumulator, BlockGemmConfig, Fp8Format};

/// One case: `(w_row_tiles, x_square_blocks)`, rows × n × k, the interval and the output
/// dtype.
type Case = ((bool, bool), (u64, u64, u64), u64, DType);

const CASES: [Case; 5] = [
    // A Wgrad: dW [out, in] = dYᵀ [out, tokens] · xᵀ [in, tokens], tokens ragged.
    ((true, false), (200, 72, 300), 128, DType::F32),
    ((true, false), (40, 136, 64), 64, DType::F32),
    ((true, false), (33, 17, 160), 32, DType::Bf16),
    // The ablation's Dgrad: dX = dY (128 × 128 blocks) · W.
    ((false, true), (300, 72, 256), 128, DType::Bf16),
    ((true, true), (130, 40, 200), 32, DType::F32),
];

#[test]
fn wgrad_and_square_block_scales_match_the_cpu_reference_bit_for_bit() {
    let mut rng = SplitMix64(41);
    for ((w_row_tiles, x_square_blocks), (rows, n, k), interval, output) in CASES {
        let k_tiles = k.div_ceil(128);
        let x = codes(&mut rng, (rows * k) as usize, DType::F8E4M3);
        let w = codes(&mut rng, (n * k) as usize, DType::F8E4M3);
        let x_scale_rows = if x_square_blocks {
            rows.div_ceil(128)
        } else {
            rows
        };
        let w_scale_rows = if w_row_tiles { n } else { n.div_ceil(128) };
        let x_scale = scales(&mut rng, (x_scale_rows * k_tiles) as usize);
        let w_scale = scales(&mut rng, (w_scale_rows * k_tiles) as usize);
        let cfg = BlockGemmConfig {
            fmt: Fp8Format::E4M3,
            w_row_tiles,
            x_square_blocks,
            promote_interval: interval as usize,
            accumulator: Accumulator::Exact,
            ..BlockGemmConfig::default()
        };
        let (y, expected) = reference([(&x, &x_scale), (&w, &w_scale)], (rows, n, k), &cfg, output);
        for form in [GemmForm::Simt, GemmForm::MmaSync] {
            let gemm = Fp8Gemm {
                promote_interval: interval,
                output,
                w_row_tiles,
                x_square_blocks,
                ..Fp8Gemm::recipe(rows, n, k, form)
            };
            assert!(
                !fp8_gemm_cp_async::eligible(&gemm),
                "the sm_89 pipelined form would misread the scales"
            );
            let kernel = GpuKernel::Fp8Gemm(gemm);
            let inputs = [
                x.clone(),
                bytes_f32(&x_scale),
                w.clone(),
                bytes_f32(&w_scale),
            ];
            for target in [Target::Sm90a, Target::Sm89] {
                let what = format!(
                    "{rows}×{n}×{k}, w_row_tiles {w_row_tiles}, x_square_blocks \
                     {x_square_blocks}, interval {interval}, {form:?}, {target}"
                );
                let ptx = lower(&kernel, target);
                let out = run_ptx(&kernel, target, &ptx, &inputs, &[expected.len()]);
                let size = output.size_bytes() as usize;
                if let Some(b) = out[0].iter().zip(&expected).position(|(a, b)| a != b) {
                    let i = b / size;
                    panic!(
                        "{what}: element {i} is {:02x?}, the CPU reference {} ({:02x?})",
                        &out[0][i * size..][..size],
                        y[i],
                        &expected[i * size..][..size]
                    );
                }
            }
        }
    }
}
