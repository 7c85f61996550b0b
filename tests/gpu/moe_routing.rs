//! MoE routing kernels alone on the emulator, for both targets, against their CPU references:
//! `moe_topk` (one warp per token) at DeepSeek-V3's routing shape (256 experts, 8 groups, top-4
//! groups, top-8 experts, sigmoid with a selection bias) and others (tiny-moe's, the 32-expert
//! V3 layer's, V2's softmax without bias, experts that do not fill the lanes), and
//! `moe_dispatch` (the blocks' expert counts, then per block a histogram, scan and scatter),
//! whose layout must be the reference's bit for bit: one block and many, V3's shape, ragged
//! chunks, skewed routing, invalid experts.

use super::kernel_run::{launch_kernel, lower, run_ptx};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::moe::MoeTopk;
use dsc_codegen::kernels::moe_dispatch::{MoeDispatch, PARALLEL_EXPERTS};
use dsc_emulator::{GlobalMemory, Module, ParamValue};
use dsc_ir::DType;
use dsc_kernels::numerics::bf16::{from_bf16, to_bf16};
use dsc_kernels::ops::moe_dispatch::moe_dispatch;
use dsc_kernels::ops::{ScoreFunc, TopkDims, TopkParams, moe_topk};
use dsc_kernels::rng::SplitMix64;

/// Values in [-amplitude, amplitude).
fn values(n: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    SplitMix64(seed).symmetric_f32s(n, amplitude)
}

fn bytes_of<T: Copy, const N: usize>(items: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    items.iter().flat_map(|&v| to(v)).collect()
}

/// The PTX of `kernel` for `target`, with no per-thread arrays (the dispatch of more experts
/// than a block takes is serial and has some).
fn lower_checked(kernel: &GpuKernel, target: Target) -> String {
    let ptx = lower(kernel, target);
    let serial = matches!(kernel, GpuKernel::MoeDispatch(d) if d.experts > PARALLEL_EXPERTS);
    assert!(
        serial || !ptx.contains(".local"),
        "{target}: {} uses local memory",
        kernel.spec()
    );
    ptx
}

/// Runs `kernel` on the emulator for `target` with `inputs` (bytes) and `outputs` (byte sizes);
/// returns the outputs' bytes.
fn run(kernel: &GpuKernel, target: Target, inputs: &[Vec<u8>], outputs: &[usize]) -> Vec<Vec<u8>> {
    let ptx = lower_checked(kernel, target);
    run_ptx(kernel, target, &ptx, inputs, outputs)
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `(‖got − want‖, ‖want‖)`, Frobenius norms in f64.
fn frobenius(got: &[f32], want: &[f32]) -> (f64, f64) {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &r) in got.iter().zip(want) {
        diff += f64::from(g - r).powi(2);
        norm += f64::from(r).powi(2);
    }
    (diff.sqrt(), norm.sqrt())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `spec` on `logits` (rows after the first three random; row 0 all zero: every score ties;
/// row 1 with a NaN; row 2 with −∞ and repeated values) against the reference: the same
/// experts in the same order, weights within 1e-5 (the kernels' `exp` is within 2 ulp of the
/// CPU's).
fn check_topk(spec: &MoeTopk, seed: u64) {
    let (t, e) = (spec.dims.tokens, spec.dims.experts);
    let mut logits = values(t * e, seed, 4.0);
    logits[..e].fill(0.0);
    logits[e + 7] = f32::NAN;
    for (j, v) in logits[2 * e..3 * e].iter_mut().enumerate() {
        *v = if j % 5 == 0 {
            f32::NEG_INFINITY
        } else {
            (j % 3) as f32
        };
    }
    // Quantized biases: ties between experts of different groups.
    let bias: Vec<f32> = values(e, seed + 1, 0.5)
        .iter()
        .map(|b| (b * 8.0).round() / 8.0)
        .collect();
    let want = moe_topk(&logits, spec.bias.then_some(&bias[..]), t, e, &spec.params)
        .expect("reference routes");
    let mut inputs = vec![bytes_of(&logits, f32::to_le_bytes)];
    if spec.bias {
        inputs.push(bytes_of(&bias, f32::to_le_bytes));
    }
    let k = spec.params.top_k;
    for target in [Target::Sm90a, Target::Sm89] {
        let kernel = GpuKernel::MoeTopk(spec.clone());
        let out = run(&kernel, target, &inputs, &[t * k * 4, t * k * 4]);
        let (weights, indices) = (f32s(&out[0]), i32s(&out[1]));
        assert_eq!(indices, want.indices, "{target}: {spec:?}: indices");
        for (i, (&got, &w)) in weights.iter().zip(&want.weights).enumerate() {
            assert!(
                (got - w).abs() <= 1e-5 * w.abs().max(1e-30) || (got.is_nan() && w.is_nan()),
                "{target}: {spec:?}: weight {i}: {got} vs {w}"
            );
        }
    }
}

fn topk(
    experts: usize,
    n_groups: usize,
    topk_groups: usize,
    top_k: usize,
    score_func: ScoreFunc,
) -> MoeTopk {
    MoeTopk {
        dims: TopkDims {
            tokens: 21,
            experts,
        },
        params: TopkParams {
            top_k,
            n_groups,
            topk_groups,
            score_func,
            norm_topk_prob: score_func == ScoreFunc::Sigmoid,
            route_scale: 2.5,
        },
        bias: score_func == ScoreFunc::Sigmoid,
        logits: DType::F32,
        weights: DType::F32,
    }
}

#[test]
fn moe_topk_at_deepseek_v3_routing_shape() {
    check_topk(&topk(256, 8, 4, 8, ScoreFunc::Sigmoid), 1);
}

#[test]
fn moe_topk_at_other_shapes() {
    // The V3 layer of bench/side-by-side (32 experts), tiny-moe's, no groups.
    check_topk(&topk(32, 8, 4, 8, ScoreFunc::Sigmoid), 2);
    check_topk(&topk(8, 2, 1, 2, ScoreFunc::Sigmoid), 3);
    check_topk(&topk(64, 1, 1, 6, ScoreFunc::Sigmoid), 4);
    // DeepSeek-V2: softmax, no bias, groups of 20 (5 per lane, 4 lanes a group).
    check_topk(&topk(160, 8, 3, 6, ScoreFunc::Softmax), 5);
    // Experts that do not fill the lanes, groups across lanes: the general group stage.
    check_topk(&topk(40, 4, 2, 5, ScoreFunc::Sigmoid), 6);
    check_topk(&topk(40, 4, 2, 5, ScoreFunc::Softmax), 7);
    // Groups of one expert.
    check_topk(&topk(16, 16, 4, 3, ScoreFunc::Sigmoid), 8);
    // More winners than lanes: lanes keep rounds `l` and `l + 32`.
    check_topk(&topk(96, 1, 1, 40, ScoreFunc::Sigmoid), 9);
    check_topk(&topk(96, 4, 3, 40, ScoreFunc::Softmax), 10);
}

/// The dispatch `spec` of `indices` on the emulator for `target`, as the plan runs it: the
/// blocks' counts first when the grid has several blocks, then the layout; returns `(rows,
/// tiles)`. Every buffer the kernels write starts as garbage, so a position left unwritten
/// shows.
fn run_dispatch(spec: MoeDispatch, target: Target, indices: &[i32]) -> (Vec<i32>, Vec<i32>) {
    let mut memory = GlobalMemory::new();
    let mut buffer = |bytes: &[u8]| {
        let at = memory.allocate(bytes.len().max(4) as u64);
        memory.write(at, bytes).expect("write");
        at
    };
    let indices_at = buffer(&bytes_of(indices, i32::to_le_bytes));
    let counts = spec.counts().map(GpuKernel::MoeDispatchCounts);
    let counts_at = counts
        .as_ref()
        .map(|kernel| buffer(&vec![0x5a; kernel.params()[1].len as usize * 4]));
    let rows_len = spec.capacity() as usize;
    let tiles_len = rows_len / spec.tile_rows as usize;
    let rows_at = buffer(&vec![0x5a; rows_len * 4]);
    let tiles_at = buffer(&vec![0x5a; tiles_len * 4]);
    let launch = |kernel: &GpuKernel, params: &[u64]| {
        let ptx = Module::parse(&lower_checked(kernel, target)).expect("emulator parses the PTX");
        let params: Vec<ParamValue> = params.iter().map(|&at| ParamValue::U64(at)).collect();
        launch_kernel(kernel, &ptx, &memory, &params).unwrap_or_else(|e| panic!("{target}: {e}"));
    };
    if let (Some(kernel), Some(at)) = (&counts, counts_at) {
        launch(kernel, &[indices_at, at]);
    }
    let mut params = vec![indices_at];
    params.extend(counts_at);
    params.extend([rows_at, tiles_at]);
    launch(&GpuKernel::MoeDispatch(spec), &params);
    let read = |at: u64, len: usize| {
        let mut bytes = vec![0u8; len * 4];
        memory.read(at, &mut bytes).expect("read");
        i32s(&bytes)
    };
    (read(rows_at, rows_len), read(tiles_at, tiles_len))
}

/// `spec` on `indices` against the reference, bit for bit, for both targets.
fn check_dispatch(spec: MoeDispatch, indices: &[i32]) {
    let want = moe_dispatch(indices, spec.experts as usize, spec.tile_rows as usize);
    for target in [Target::Sm90a, Target::Sm89] {
        let (rows, tiles) = run_dispatch(spec, target, indices);
        for (what, got, want) in [("rows", rows, &want.rows), ("tiles", tiles, &want.tiles)] {
            // The first difference, not two vectors of 50 000 numbers.
            let at = got.iter().zip(want).position(|(g, w)| g != w);
            assert!(
                got.len() == want.len() && at.is_none(),
                "{target}: {spec:?}: {what}[{at:?}]: {:?} vs {:?}",
                at.map(|i| got[i]),
                at.map(|i| want[i])
            );
        }
    }
}

/// Routed experts: skewed (a quarter of the rows to expert 3), with some outside `0..experts`.
fn routed(n: usize, experts: usize, seed: u64) -> Vec<i32> {
    values(n, seed, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &u)| {
            let u = (u + 1.0) / 2.0;
            match i % 97 {
                0 => -1,
                1 => experts as i32,
                _ if u < 0.25 => 3.min(experts as i32 - 1),
                _ => ((u * experts as f32) as i32).min(experts as i32 - 1),
            }
        })
        .collect()
}

/// Routed experts where expert `experts - 1` takes nine rows in ten (the rest uniform, a few
/// far outside `0..experts`).
fn one_expert_takes_most(n: usize, experts: usize, seed: u64) -> Vec<i32> {
    values(n, seed, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &u)| {
            let u = (u + 1.0) / 2.0;
            match i % 251 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ if u < 0.9 => experts as i32 - 1,
                _ => ((u - 0.9) * 10.0 * experts as f32).min(experts as f32 - 1.0) as i32,
            }
        })
        .collect()
}

fn dispatch(tokens: u64, top_k: u64, experts: u64, tile_rows: u64) -> MoeDispatch {
    MoeDispatch {
        tokens,
        top_k,
        experts,
        tile_rows,
    }
}

#[test]
fn moe_dispatch_matches_the_reference_bit_for_bit() {
    for (tokens, top_k, experts, tile_rows, seed) in [
        (300, 8, 256, 64, 1),
        (37, 2, 8, 16, 2),
        // 8000 rows: eight blocks, the last one's chunk ragged.
        (1000, 8, 32, 64, 3),
        (5, 1, 4, 16, 4),
        // More experts than the parallel kernel takes: one thread.
        (20, 4, 300, 16, 5),
        // More blocks (21) than experts; a chunk that ends mid-warp.
        (3001, 7, 8, 16, 6),
        // One expert.
        (2500, 1, 1, 64, 7),
    ] {
        let spec = dispatch(tokens, top_k, experts, tile_rows);
        check_dispatch(
            spec,
            &routed((tokens * top_k) as usize, experts as usize, seed),
        );
    }
}

/// DeepSeek-V3's prefill routing: 4096 tokens × top-8 over 256 experts (32 blocks), with the
/// tiles of wgmma (64 rows) and of `mma.sync` (16).
#[test]
fn moe_dispatch_at_deepseek_v3_shape_on_32_blocks() {
    for (tile_rows, seed) in [(64, 11), (16, 12)] {
        let spec = dispatch(4096, 8, 256, tile_rows);
        assert_eq!(spec.grid().blocks, 32);
        check_dispatch(spec, &routed(4096 * 8, 256, seed));
    }
}

/// One expert takes nine rows in ten, across every block's chunk (and ragged chunks).
#[test]
fn moe_dispatch_with_one_expert_taking_most_rows() {
    for (tokens, top_k, experts, tile_rows, seed) in [
        (4096, 8, 256, 64, 21),
        (1500, 6, 64, 16, 22),
        (100, 3, 16, 64, 23),
    ] {
        let spec = dispatch(tokens, top_k, experts, tile_rows);
        check_dispatch(
            spec,
            &one_expert_takes_most((tokens * top_k) as usize, experts as usize, seed),
        );
    }
}

/// Few rows take one block and one launch; many take more blocks of more rows each, never more
/// than the cap, with whole 32-row steps per warp.
#[test]
fn moe_dispatch_grid_follows_the_routed_rows() {
    use dsc_codegen::kernels::moe_dispatch::{DispatchGrid, MAX_BLOCKS};
    let small = dispatch(128, 8, 256, 64);
    assert_eq!(small.grid().blocks, 1);
    assert!(small.counts().is_none());
    assert_eq!(small.params().len(), 3);
    assert!(dispatch(4096, 8, 256, 64).counts().is_some());
    assert!(dispatch(4096, 8, 300, 64).counts().is_none(), "serial");
    for routed in [
        0,
        1,
        1024,
        1025,
        32768,
        131_072,
        131_073,
        1 << 22,
        10_000_019,
    ] {
        let grid = DispatchGrid::new(routed);
        assert!(
            grid.blocks >= 1 && grid.blocks <= MAX_BLOCKS,
            "{routed}: {grid:?}"
        );
        assert_eq!(grid.block_rows % 1024, 0, "{routed}: {grid:?}");
        assert!(
            grid.blocks * grid.block_rows >= routed,
            "{routed}: {grid:?}"
        );
        assert!(
            (grid.blocks - 1) * grid.block_rows < routed.max(1),
            "{routed}: {grid:?}"
        );
    }
}

/// The gate GEMM (f32 x, f32 or BF16 w; tiled through shared memory) at ragged shapes and
/// every tile width: within the tolerance of the CPU reference, and bit for bit the
/// one-output-per-thread kernel's sum (each output's products in increasing k from 0, one `fma`
/// or one multiply and add per step).
#[test]
fn gate_linear_sums_in_the_former_order() {
    for (m, n, k, with_bias) in [
        (37, 256, 200, false),
        (70, 33, 7, true),
        (64, 64, 64, false),
        (100, 32, 96, false),
        (20, 8, 40, true),
        // Enough tiles for 64-row ones.
        (2112, 256, 4, false),
    ] {
        for w_dtype in [DType::F32, DType::Bf16] {
            check_gate(m, n, k, with_bias, w_dtype);
        }
    }
}

fn check_gate(m: usize, n: usize, k: usize, with_bias: bool, w_dtype: DType) {
    use dsc_codegen::kernels::linear::Linear;
    let x = values(m * k, 11, 1.0);
    let mut w = values(n * k, 12, 0.1);
    if w_dtype == DType::Bf16 {
        w.iter_mut().for_each(|v| *v = from_bf16(to_bf16(*v)));
    }
    let bias = values(n, 13, 0.5);
    let spec = Linear {
        m: m as u64,
        n: n as u64,
        k: k as u64,
        x: DType::F32,
        w: w_dtype,
        bias: with_bias.then_some(DType::F32),
        output: DType::F32,
        grouped: None,
    };
    let chain = |fused: bool| -> Vec<f32> {
        let mut y = Vec::new();
        for r in 0..m {
            for c in 0..n {
                let mut acc = 0.0f32;
                for kk in 0..k {
                    let (a, b) = (x[r * k + kk], w[c * k + kk]);
                    acc = if fused {
                        a.mul_add(b, acc)
                    } else {
                        acc + a * b
                    };
                }
                y.push(if with_bias { acc + bias[c] } else { acc });
            }
        }
        y
    };
    let (fused, unfused) = (chain(true), chain(false));
    let reference = dsc_kernels::ops::linear(&x, &w, with_bias.then_some(&bias[..]), m, k, n)
        .expect("reference runs");
    let w_bytes = match w_dtype {
        DType::Bf16 => bytes_of(&w, |v| to_bf16(v).to_bits().to_le_bytes()),
        _ => bytes_of(&w, f32::to_le_bytes),
    };
    let mut inputs = vec![bytes_of(&x, f32::to_le_bytes), w_bytes];
    if with_bias {
        inputs.push(bytes_of(&bias, f32::to_le_bytes));
    }
    for target in [Target::Sm90a, Target::Sm89] {
        let kernel = GpuKernel::Linear(spec.clone());
        let got = f32s(&run(&kernel, target, &inputs, &[m * n * 4])[0]);
        assert!(
            got == fused || got == unfused,
            "{target}: {spec:?}: not the sequential sum"
        );
        let (diff, norm) = frobenius(&got, &reference);
        assert!(diff <= 1e-4 * norm, "{target}: {spec:?}");
    }
}

/// The gate reading its BF16 tokens (fold-widening-casts) with f32 weights stays on the CUDA
/// cores: the tiled form widening each element as it stages it gives the bits it gives over the
/// tokens' f32 copy.
#[test]
fn a_bf16_gate_with_f32_weights_is_the_gate_of_its_f32_copy_bit_for_bit() {
    use dsc_codegen::kernels::linear::Linear;
    for (m, n, k) in [(130, 256, 200), (37, 33, 70)] {
        let x: Vec<f32> = values(m * k, 31, 2.0)
            .into_iter()
            .map(|v| from_bf16(to_bf16(v)))
            .collect();
        let w = values(n * k, 32, 0.1);
        let spec = |x_dtype| Linear {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            x: x_dtype,
            w: DType::F32,
            bias: None,
            output: DType::F32,
            grouped: None,
        };
        let narrow = bytes_of(&x, |v| to_bf16(v).to_bits().to_le_bytes());
        let wide = bytes_of(&x, f32::to_le_bytes);
        let w = bytes_of(&w, f32::to_le_bytes);
        for target in [Target::Sm90a, Target::Sm89] {
            let run_on = |x_dtype, x: &Vec<u8>| {
                let kernel = GpuKernel::Linear(spec(x_dtype));
                run(&kernel, target, &[x.clone(), w.clone()], &[m * n * 4]).remove(0)
            };
            assert!(
                run_on(DType::Bf16, &narrow) == run_on(DType::F32, &wide),
                "{target}: {m}x{n}x{k}: the bf16 tokens' logits differ from their f32 copy's"
            );
        }
    }
}

/// The gate reading its BF16 tokens (fold-widening-casts) with BF16 weights: on the tensor cores
/// (wgmma on sm_90a, mma.sync on sm_89), exact products summed in f32, within the f32 GEMM
/// tolerance of the CPU reference over the tokens widened to f32: V3's 256 experts at ragged
/// rows, tiny-moe's 8 and an odd 33, with a bias.
#[test]
fn a_bf16_gate_on_the_tensor_cores_is_the_f32_gate_of_its_widened_tokens() {
    use dsc_codegen::kernels::linear::Linear;
    use dsc_codegen::kernels::linear_wgmma::LinearWgmma;
    for (m, n, k, with_bias) in [
        (130, 256, 1024, false),
        (64, 8, 256, false),
        (37, 33, 200, true),
    ] {
        let round =
            |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|v| from_bf16(to_bf16(v))).collect() };
        let x = round(values(m * k, 21, 2.0));
        let w = round(values(n * k, 22, 0.1));
        let bias = values(n, 23, 0.5);
        let reference = dsc_kernels::ops::linear(&x, &w, with_bias.then_some(&bias[..]), m, k, n)
            .expect("reference runs");
        let bf16 = |v: &[f32]| bytes_of(v, |v| to_bf16(v).to_bits().to_le_bytes());
        let mut inputs = vec![bf16(&x), bf16(&w)];
        if with_bias {
            inputs.push(bytes_of(&bias, f32::to_le_bytes));
        }
        let spec = Linear {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            x: DType::Bf16,
            w: DType::Bf16,
            bias: with_bias.then_some(DType::F32),
            output: DType::F32,
            grouped: None,
        };
        for target in [Target::Sm90a, Target::Sm89] {
            let kernel = match target {
                Target::Sm90a => GpuKernel::LinearWgmma(LinearWgmma::new(spec.clone())),
                _ => GpuKernel::Linear(spec.clone()),
            };
            let ptx = lower_checked(&kernel, target);
            assert!(
                ptx.contains(match target {
                    Target::Sm90a => "wgmma.mma_async",
                    _ => "mma.sync",
                }),
                "{target}: {spec:?} is not on the tensor cores"
            );
            let got = f32s(&run_ptx(&kernel, target, &ptx, &inputs, &[m * n * 4])[0]);
            let (diff, norm) = frobenius(&got, &reference);
            assert!(
                diff <= 1e-6 * norm,
                "{target}: {spec:?}: relative error {:.2e}",
                diff / norm
            );
        }
    }
}
