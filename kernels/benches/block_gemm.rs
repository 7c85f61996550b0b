//! Times the FP8 block GEMM (exact accumulator, f32 output) against a plain f32 GEMM of the same
//! shape from the same GEMM library, at M = N = K = 2048. The FP8 time includes decoding the
//! codes and applying the scales at every promotion; quantization is done once, untimed.
//!
//! Run: `cargo bench -p dsc-kernels --bench block_gemm`.

use dsc_ir::ScaleFormat;
use dsc_kernels::{
    BlockGemmConfig, Fp8Format, GemmDims, act_quant_1x128, fp8_block_gemm, weight_quant_128x128,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZE: usize = 2048;
const RUNS: usize = 7;

/// The best of `RUNS` timed calls, after one warm-up call.
fn best_of(mut f: impl FnMut()) -> Duration {
    f();
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn main() {
    let (m, n, k) = (SIZE, SIZE, SIZE);
    let x = values(m * k, 1);
    let w = values(n * k, 2);
    let (fmt, sf) = (Fp8Format::E4M3, ScaleFormat::F32);
    let xq = act_quant_1x128(&x, m, k, 128, fmt, sf).unwrap();
    let wq = weight_quant_128x128(&w, n, k, 128, fmt, sf).unwrap();
    let cfg = BlockGemmConfig::default();
    let dims = GemmDims { m, n, k };

    let fp8 = best_of(|| {
        black_box(fp8_block_gemm(xq.operand(), wq.operand(), dims, &cfg).unwrap());
    });

    let mut y = vec![0.0f32; m * n];
    let fp32 = best_of(|| {
        // SAFETY: y is m × n (row stride n), x is m × k (row stride k), and w[n, k] read as its
        // transpose: element (kk, j) at j·k + kk. All in bounds.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        black_box(&y);
    });

    let flops = 2.0 * (m * n * k) as f64;
    let gflops = |d: Duration| flops / d.as_secs_f64() / 1e9;
    println!(
        "M = N = K = {SIZE}, {} rayon threads, best of {RUNS}",
        rayon::current_num_threads()
    );
    println!(
        "fp8 block GEMM (exact, f32 out): {:>8.1} ms  {:>6.1} GFLOP/s",
        fp8.as_secs_f64() * 1e3,
        gflops(fp8)
    );
    println!(
        "f32 GEMM (gemm crate):           {:>8.1} ms  {:>6.1} GFLOP/s",
        fp32.as_secs_f64() * 1e3,
        gflops(fp32)
    );
    println!(
        "fp32_time / fp8_time = {:.2}",
        fp32.as_secs_f64() / fp8.as_secs_f64()
    );
}
