//! Times the FP8 block GEMM (exact accumulator, f32 output) at M = N = K = 2048 and at shapes of
//! the training step, next to a plain f32 GEMM of the same shape from the `gemm` crate. The FP8
//! time includes decoding the codes and applying the scales at every promotion; quantization is
//! done once, untimed. Each figure is the median of `RUNS` timed calls after one warm-up call.
//!
//! Run: `cargo bench -p dsc-kernels --bench block_gemm [-- SHAPE ...]`, a SHAPE being `MxNxK`
//! (an Fprop/Dgrad: `w` in 128 × 128 blocks) or `wgrad:MxNxK` (both operands in 1 × 128 tiles
//! along K, `w_row_tiles`); `RUNS=n` in the environment sets the runs (default 7), and
//! `ACCUMULATOR=hopper` or `hopper-unpromoted` times that accumulator model instead of the exact
//! one (the training ablation's GEMM). Each shape
//! prints one line `shape <shape> fp8_ms <median> fp8_gflops <median> fp8_best_gflops <best>
//! f32_gflops <median>`, for bench/cpu-fp8-gemm/run.sh to collect.

use dsc_ir::ScaleFormat;
use dsc_kernels::{
    Accumulator, BlockGemmConfig, Fp8Format, GemmDims, act_quant_1x128, fp8_block_gemm,
    weight_quant_128x128,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The shapes timed when none is given: the headline square, then training shapes (tokens ×
/// features), then two weight gradients (K = tokens).
const DEFAULT_SHAPES: [&str; 7] = [
    "2048x2048x2048",
    "4096x2048x512",
    "1024x2048x2048",
    "256x2048x2048",
    "2048x256x256",
    "wgrad:2048x512x4096",
    "wgrad:512x128x2048",
];

/// The median and the minimum of `runs` timed calls, after one warm-up call.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    t.sort();
    (t[runs / 2], t[0])
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

/// `(m, n, k, wgrad)` of a SHAPE argument.
fn parse(shape: &str) -> (usize, usize, usize, bool) {
    let (wgrad, dims) = match shape.strip_prefix("wgrad:") {
        Some(d) => (true, d),
        None => (false, shape),
    };
    let d: Vec<usize> = dims
        .split('x')
        .map(|v| v.parse().expect("a shape is MxNxK or wgrad:MxNxK"))
        .collect();
    assert_eq!(d.len(), 3, "a shape is MxNxK or wgrad:MxNxK");
    (d[0], d[1], d[2], wgrad)
}

/// The accumulator model named by `ACCUMULATOR` (exact when unset).
fn accumulator() -> Accumulator {
    match std::env::var("ACCUMULATOR").as_deref() {
        Err(_) | Ok("exact") => Accumulator::Exact,
        Ok("hopper") => Accumulator::Hopper,
        Ok("hopper-unpromoted") => Accumulator::HopperUnpromoted,
        Ok(other) => panic!("ACCUMULATOR is exact, hopper or hopper-unpromoted, not {other}"),
    }
}

fn bench(shape: &str, runs: usize) {
    let (m, n, k, wgrad) = parse(shape);
    let x = values(m * k, 1);
    let w = values(n * k, 2);
    let (fmt, sf) = (Fp8Format::E4M3, ScaleFormat::F32);
    let xq = act_quant_1x128(&x, m, k, 128, fmt, sf).unwrap();
    let wq = if wgrad {
        act_quant_1x128(&w, n, k, 128, fmt, sf).unwrap()
    } else {
        weight_quant_128x128(&w, n, k, 128, fmt, sf).unwrap()
    };
    let cfg = BlockGemmConfig {
        w_row_tiles: wgrad,
        accumulator: accumulator(),
        ..Default::default()
    };
    let dims = GemmDims { m, n, k };

    let (fp8, fp8_best) = time(runs, || {
        black_box(fp8_block_gemm(xq.operand(), wq.operand(), dims, &cfg).unwrap());
    });

    let mut y = vec![0.0f32; m * n];
    let (fp32, _) = time(runs, || {
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
        "shape {shape} fp8_ms {:.3} fp8_gflops {:.1} fp8_best_gflops {:.1} f32_gflops {:.1}",
        fp8.as_secs_f64() * 1e3,
        gflops(fp8),
        gflops(fp8_best),
        gflops(fp32)
    );
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .map(|r| r.parse().expect("RUNS is a number"))
        .unwrap_or(7)
        .max(1);
    // `cargo bench` passes `--bench`; every other argument is a shape.
    let mut shapes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if shapes.is_empty() {
        shapes = DEFAULT_SHAPES.iter().map(|s| s.to_string()).collect();
    }
    println!(
        "# fp8_block_gemm (E4M3, {:?} accumulator, f32 out), {} rayon threads, median of {runs}",
        accumulator(),
        rayon::current_num_threads()
    );
    for shape in &shapes {
        bench(shape, runs);
    }
}
