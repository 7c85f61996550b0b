//! The training kernels alone on the emulator, for both targets, against the CPU references
//! the CPU backend dispatches (`dsc_kernels::ops::grad`, with the backend's conversions: the
//! attributes as f32, the clip multiplier from the global norm, results rounded to their
//! dtypes), under the rules of [`dsc_runtime::step_check::tolerance`]: `adamw` (bit for bit), `global_norm`
//! (one block and the grid-wide reduction), `cross_entropy` and its gradient (labels out of the
//! vocabulary included), `scale`, `silu_grad`, `swiglu_grad`, `reduce_sum` and
//! `expert_bias_update` (bit for bit; out-of-range indices left out of the loads),
//! `rms_norm_grad` (one block and grids summing the weight gradient's partials),
//! `softmax_grad` (along the last, a middle and the first axis), `pad` (bit for bit, floats,
//! integers and FP8 codes), `rope_grad` (both pairings, plain and YaRN-scaled angles) and
//! `embedding_grad` (bit for bit; ids out of the vocabulary skipped), and the MoE backward:
//! `grouped_linear_wgrad` (an f32 GEMM's tolerance; x per token and per slot, experts no row
//! chose, an expert whose rows overflow the block's list, indices out of range left out; its
//! FP8 form bit for bit against the exact accumulator, groups of rows counted across flushes),
//! `moe_combine_grad` (bit for bit, the reference's pairwise tree at widths of one to 1024
//! segments) and `moe_topk_grad` (both score functions, with and without `norm_topk_prob`,
//! top_k from 1 to all experts, a repeated index, indices out of range making the token's row
//! NaN), at ragged sizes.
//!
//! `balance_loss` and its gradient (both score functions, repeated and out-of-range indices
//! counted as the reference counts them, several sequences), and the emulated E5M6 cache's
//! `quantize` and `dequantize` (bit for bit, subnormals, −0 and NaN).
//!
//! Every kernel is also assembled by ptxas for its target: no spills, no local memory (the
//! registers and the result of each are printed, for `--nocapture`).

use super::kernel_run::{lower, run_ptx, run_ptx_with};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::adamw::AdamW;
use dsc_codegen::kernels::cross_entropy::CrossEntropy;
use dsc_codegen::kernels::elementwise_grad::{ElementwiseGrad, GradOp};
use dsc_codegen::kernels::embedding_grad::{self, EmbeddingGrad};
use dsc_codegen::kernels::expert_bias_update::{self, ExpertBiasUpdate};
use dsc_codegen::kernels::global_norm::{GlobalNorm, NormInput};
use dsc_codegen::kernels::grouped_linear_wgrad::{self, GroupedLinearWgrad};
use dsc_codegen::kernels::moe_combine_grad::{self, MoeCombineGrad};
use dsc_codegen::kernels::moe_topk_grad::MoeTopkGrad;
use dsc_codegen::kernels::pad::Pad;
use dsc_codegen::kernels::reduce_sum::ReduceSum;
use dsc_codegen::kernels::rms_norm_grad::RmsNormGrad;
use dsc_codegen::kernels::rope::Rope;
use dsc_codegen::kernels::rope_grad::RopeGrad;
use dsc_codegen::kernels::softmax_grad::SoftmaxGrad;
use dsc_codegen::ptxas;
use dsc_emulator::LaunchOptions;
use dsc_ir::rope_scaling::RopeScaling;
use dsc_ir::{DType, OpKind, ScaleFormat};
use dsc_kernels::numerics::accumulate::Accumulator;
use dsc_kernels::numerics::bf16::{from_bf16_bits, to_bf16};
use dsc_kernels::ops::grad::{self, GroupedWgradFp8};
use dsc_kernels::ops::rope::{RopeParams, RopeStyle};
use dsc_kernels::ops::{FloatFormat, GroupedDims, GroupedInput, ScoreFunc};
use dsc_kernels::rng::SplitMix64;
use dsc_runtime::HostTensor;
use dsc_runtime::step_check::{compare, rule_for};

/// Values in [-amplitude, amplitude), rounded to `dtype`.
pub(super) fn values(n: usize, seed: u64, amplitude: f32, dtype: DType) -> Vec<f32> {
    let mut v = SplitMix64(seed).symmetric_f32s(n, amplitude);
    if dtype == DType::Bf16 {
        FloatFormat::Bf16.round_slice(&mut v);
    }
    v
}

/// The bytes of `values` stored as `dtype` (f32 or bf16, the values already representable).
pub(super) fn bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::Bf16 => values
            .iter()
            .flat_map(|&v| to_bf16(v).to_bits().to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn floats(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::Bf16 => bytes
            .chunks(2)
            .map(|b| from_bf16_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A result of the reference: `values` rounded to `dtype`, of `shape`.
pub(super) fn tensor(dtype: DType, shape: &[usize], values: Vec<f32>) -> HostTensor {
    HostTensor::from_f32(dtype, shape.to_vec(), values).expect("a float tensor")
}

/// `kernel`'s PTX for `target`, assembled by ptxas without spills or local memory.
fn lowered(kernel: &GpuKernel, target: Target) -> String {
    let ptx = lower(kernel, target);
    assert!(
        !ptx.contains(".local"),
        "{target}: {} uses local memory",
        kernel.entry()
    );
    let path = ptxas::locate().unwrap_or_else(|e| panic!("{e}"));
    let report = ptxas::assemble(&path, &ptx, target)
        .unwrap_or_else(|e| panic!("{target}: {}: {e}", kernel.entry()));
    assert_eq!(
        (report.spill_store_bytes(), report.spill_load_bytes()),
        (0, 0),
        "{target}: {}:\n{}",
        kernel.entry(),
        report.output
    );
    assert!(report.notes.is_empty(), "{target}:\n{}", report.output);
    for f in &report.functions {
        eprintln!(
            "ptxas {target} {}: {} registers, {} bytes stack, {}/{} bytes spilled",
            kernel.canonical(),
            f.registers,
            f.stack_frame_bytes,
            f.spill_store_bytes,
            f.spill_load_bytes
        );
    }
    ptx
}

/// Runs `kernel` (an op of `kind`) for both targets on `inputs` and compares its outputs
/// (`want`, whose dtypes and shapes say how to read them) under the op's tolerance rule.
pub(super) fn check(kind: OpKind, kernel: &GpuKernel, inputs: &[Vec<u8>], want: &[HostTensor]) {
    let sizes: Vec<usize> = want
        .iter()
        .map(|t| t.numel() * t.dtype.size_bytes() as usize)
        .collect();
    for target in Target::ALL {
        let ptx = lowered(kernel, target);
        let out = run_ptx(kernel, target, &ptx, inputs, &sizes);
        for (i, (bytes, want)) in out.iter().zip(want).enumerate() {
            let got = tensor(want.dtype, &want.shape, floats(bytes, want.dtype));
            let rule = rule_for(kind, i, want.dtype);
            compare(rule, &got, want).unwrap_or_else(|e| {
                panic!(
                    "{target}: {}: result {i} ({rule:?}): {e}",
                    kernel.canonical()
                )
            });
        }
    }
}

// ---- adamw ------------------------------------------------------------------------------------

/// One AdamW case: the tensors' dtypes, the hyperparameters, the step and the norm.
struct AdamCase {
    len: usize,
    dtypes: [DType; 4],
    beta1: f32,
    max_grad_norm: f32,
    lr: f32,
    step: f32,
    norm: f32,
}

fn check_adamw(c: &AdamCase, seed: u64) {
    let [pd, gd, md, vd] = c.dtypes;
    let p = values(c.len, seed, 1.0, pd);
    let g = values(c.len, seed + 1, 0.5, gd);
    let m = values(c.len, seed + 2, 0.05, md);
    let v: Vec<f32> = values(c.len, seed + 3, 0.01, vd)
        .iter()
        .map(|x| x.abs())
        .collect();
    let spec = AdamW {
        len: c.len as u64,
        param: pd,
        grad: gd,
        m: md,
        v: vd,
        beta1: c.beta1,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        max_grad_norm: c.max_grad_norm,
    };
    // As the CPU backend: step = schedule[1] as u32, the clip multiplier from the norm.
    let hp = grad::AdamW {
        lr: c.lr,
        beta1: spec.beta1,
        beta2: spec.beta2,
        eps: spec.eps,
        weight_decay: spec.weight_decay,
        step: c.step as u32,
        grad_scale: grad::clip_scale(c.norm, spec.max_grad_norm),
    };
    let moments = FloatFormat::of(md).expect("a float format");
    let (p1, m1, v1) = grad::adamw(&p, &g, &m, &v, &hp, moments).expect("reference updates");
    let want = [
        tensor(pd, &[c.len], p1),
        tensor(md, &[c.len], m1),
        tensor(vd, &[c.len], v1),
    ];
    let inputs = [
        bytes(&p, pd),
        bytes(&g, gd),
        bytes(&m, md),
        bytes(&v, vd),
        bytes(&[c.norm], DType::F32),
        bytes(&[c.lr, c.step], DType::F32),
    ];
    check(OpKind::AdamW, &GpuKernel::AdamW(spec), &inputs, &want);
}

#[test]
fn adamw_matches_the_reference_bit_for_bit() {
    let (f, b) = (DType::F32, DType::Bf16);
    let recipe = [f, f, b, b];
    let cases = [
        // The recipe (f32 master and gradient, bf16 moments): 8 elements a thread, ragged tail.
        (4099, recipe, 0.9, 1.0, 3e-4, 1.0, 0.5),
        (1000, recipe, 0.9, 1.0, 3e-4, 2.0, 3.7),
        (7, recipe, 0.9, 1.0, 1e-3, 123_456.0, 1.5),
        (1, recipe, 0.9, 1.0, 1e-3, 37.0, 0.0),
        // All f32 (4 a thread); a β1 whose lerp takes its second form; no clipping.
        (1029, [f; 4], 0.3, 0.0, 2e-2, 5.0, 9.0),
        (16, [f; 4], 0.9, 0.5, 1e-4, 1000.0, 0.7),
        // bf16 parameter and gradient, f32 second moment (rounded through m's format too).
        (517, [b, b, b, f], 0.9, 1.0, 3e-4, 3.0, 2.0),
    ];
    for (i, &(len, dtypes, beta1, max_grad_norm, lr, step, norm)) in cases.iter().enumerate() {
        let case = AdamCase {
            len,
            dtypes,
            beta1,
            max_grad_norm,
            lr,
            step,
            norm,
        };
        check_adamw(&case, 100 + 10 * i as u64);
    }
}

// ---- global_norm ------------------------------------------------------------------------------

fn check_global_norm(parts: &[(DType, usize)], seed: u64) {
    let data: Vec<Vec<f32>> = parts
        .iter()
        .enumerate()
        .map(|(i, &(dtype, len))| values(len, seed + i as u64, 2.0, dtype))
        .collect();
    let refs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    let want = [tensor(DType::F32, &[1], vec![grad::global_norm(&refs)])];
    let spec = GlobalNorm {
        inputs: parts
            .iter()
            .map(|&(dtype, len)| NormInput {
                dtype,
                len: len as u64,
            })
            .collect(),
    };
    let inputs: Vec<Vec<u8>> = parts
        .iter()
        .zip(&data)
        .map(|(&(dtype, _), v)| bytes(v, dtype))
        .collect();
    check(
        OpKind::GlobalNorm,
        &GpuKernel::GlobalNorm(spec),
        &inputs,
        &want,
    );
}

#[test]
fn global_norm_in_one_block_and_over_the_grid() {
    let (f, b) = (DType::F32, DType::Bf16);
    // One block: tiny operands and ragged tails.
    check_global_norm(&[(f, 1)], 1);
    check_global_norm(&[(f, 1000), (b, 77), (f, 3), (b, 4099)], 2);
    // Grids of 2 and 37 blocks, the last summing their totals.
    let two = GlobalNorm {
        inputs: vec![NormInput {
            dtype: f,
            len: 5000,
        }],
    };
    assert_eq!(two.blocks(), 2);
    check_global_norm(&[(f, 5000)], 3);
    check_global_norm(&[(f, 150_001), (b, 100_003), (f, 5)], 4);
}

// ---- cross_entropy ----------------------------------------------------------------------------

/// Which rows of the logits are special.
#[derive(Clone, Copy)]
struct Rows {
    /// The row whose label is out of the vocabulary (the reference refuses it).
    bad: Option<usize>,
    /// Row 2 is all −∞ (its loss, and so the mean, is NaN in the reference too).
    all_masked: bool,
}

/// Logits of `rows × vocab` (row 1 −∞ but at its label, when there are enough rows), labels in
/// range except `special.bad`'s.
fn check_cross_entropy(rows: usize, vocab: usize, dtype: DType, special: Rows, seed: u64) {
    let bad_row = special.bad;
    let mut logits = values(rows * vocab, seed, 8.0, dtype);
    if rows >= 3 {
        for j in 0..vocab {
            logits[vocab + j] = if j == vocab / 2 {
                1.0
            } else {
                f32::NEG_INFINITY
            };
            if special.all_masked {
                logits[2 * vocab + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mut labels: Vec<i32> = SplitMix64(seed + 1)
        .symmetric_f32s(rows, 1.0)
        .iter()
        .map(|u| (((u + 1.0) / 2.0 * vocab as f32) as i32).min(vocab as i32 - 1))
        .collect();
    if rows >= 3 {
        labels[1] = (vocab / 2) as i32;
    }
    // The reference refuses a label out of range; the kernel makes its row NaN.
    let mut valid = labels.clone();
    if let Some(r) = bad_row {
        labels[r] = if r % 2 == 0 { vocab as i32 } else { -1 };
        valid[r] = 0;
    }
    let loss = grad::cross_entropy(&logits, &valid, rows, vocab).expect("reference loss");
    let loss = if bad_row.is_some() { f32::NAN } else { loss };
    let dloss = 0.37f32;
    let mut dlogits =
        grad::cross_entropy_grad(&logits, &valid, rows, vocab, dloss).expect("reference grad");
    if let Some(r) = bad_row {
        dlogits[r * vocab..(r + 1) * vocab].fill(f32::NAN);
    }
    let spec = |grad: bool| {
        GpuKernel::CrossEntropy(CrossEntropy {
            rows: rows as u64,
            vocab: vocab as u64,
            logits: dtype,
            grad,
        })
    };
    let inputs = [bytes(&logits, dtype), i32_bytes(&labels)];
    let want = [tensor(DType::F32, &[1], vec![loss])];
    check(OpKind::CrossEntropy, &spec(false), &inputs, &want);
    let mut inputs = inputs.to_vec();
    inputs.push(bytes(&[dloss], DType::F32));
    let want = [tensor(DType::F32, &[rows, vocab], dlogits)];
    check(OpKind::CrossEntropyGrad, &spec(true), &inputs, &want);
}

#[test]
fn cross_entropy_and_its_gradient() {
    let plain = Rows {
        bad: None,
        all_masked: false,
    };
    check_cross_entropy(1, 10, DType::F32, plain, 1);
    check_cross_entropy(37, 517, DType::F32, plain, 2);
    check_cross_entropy(5, 4099, DType::Bf16, plain, 3);
    check_cross_entropy(300, 64, DType::Bf16, plain, 4);
    // A row of −∞ only: NaN loss, zero probabilities in the gradient (−dloss/rows at the label).
    let masked = Rows {
        bad: None,
        all_masked: true,
    };
    check_cross_entropy(4, 70, DType::F32, masked, 5);
}

#[test]
fn a_label_out_of_the_vocabulary_gives_nan_not_a_stray_read() {
    let bad = |row| Rows {
        bad: Some(row),
        all_masked: false,
    };
    check_cross_entropy(6, 100, DType::F32, bad(4), 6);
    check_cross_entropy(6, 100, DType::F32, bad(3), 7);
    check_cross_entropy(1, 33, DType::Bf16, bad(0), 8);
}

// ---- scale, silu_grad, swiglu_grad -----------------------------------------------------------

#[test]
fn scale_silu_grad_and_swiglu_grad() {
    for (len, dtype, seed) in [
        (1037, DType::F32, 1),
        (4099, DType::Bf16, 2),
        (1, DType::F32, 3),
    ] {
        let x = values(len, seed, 8.0, dtype);
        let dy = values(len, seed + 1, 1.0, dtype);
        let up = values(len, seed + 2, 2.0, dtype);
        let kernel = |op: GradOp, inputs: usize, outputs: usize| {
            GpuKernel::ElementwiseGrad(ElementwiseGrad {
                op,
                len: len as u64,
                inputs: vec![dtype; inputs],
                outputs: vec![dtype; outputs],
            })
        };
        for factor in [0.125f32, 1.0 / 3.0, -7.5] {
            let want = [tensor(dtype, &[len], grad::scale(&x, factor))];
            let k = kernel(GradOp::Scale { factor }, 1, 1);
            check(OpKind::Scale, &k, &[bytes(&x, dtype)], &want);
        }
        let want = [tensor(dtype, &[len], grad::silu_grad(&x, &dy).unwrap())];
        let inputs = [bytes(&x, dtype), bytes(&dy, dtype)];
        check(
            OpKind::SiluGrad,
            &kernel(GradOp::SiluGrad, 2, 1),
            &inputs,
            &want,
        );
        let (dgate, dup) = grad::swiglu_grad(&x, &up, &dy).unwrap();
        let want = [tensor(dtype, &[len], dgate), tensor(dtype, &[len], dup)];
        let inputs = [bytes(&x, dtype), bytes(&up, dtype), bytes(&dy, dtype)];
        check(
            OpKind::SwigluGrad,
            &kernel(GradOp::SwigluGrad, 3, 2),
            &inputs,
            &want,
        );
    }
}

// ---- reduce_sum -------------------------------------------------------------------------------

#[test]
fn reduce_sum_over_each_kind_of_axis() {
    for (dims, axis, dtype, seed) in [
        // A bias gradient: the tokens of [T, N].
        (vec![37, 129], 0, DType::F32, 1),
        (vec![1000, 3], 0, DType::F32, 2),
        // A middle axis, and the last one (one column a row: the axis split among threads).
        (vec![4, 33, 7], 1, DType::Bf16, 3),
        (vec![5, 300], 1, DType::F32, 4),
        (vec![2, 0, 3], 1, DType::F32, 5),
    ] {
        let n: usize = dims.iter().product();
        let x = values(n, seed, 3.0, dtype);
        let mut out_dims = dims.clone();
        out_dims.remove(axis);
        let want = [tensor(
            dtype,
            &out_dims,
            grad::sum_axis(&x, &dims, axis).expect("reference sums"),
        )];
        let spec = ReduceSum {
            outer: dims[..axis].iter().product::<usize>() as u64,
            len: dims[axis] as u64,
            inner: dims[axis + 1..].iter().product::<usize>() as u64,
            input: dtype,
            output: dtype,
        };
        check(
            OpKind::ReduceSum,
            &GpuKernel::ReduceSum(spec),
            &[bytes(&x, dtype)],
            &want,
        );
    }
}

// ---- expert_bias_update -----------------------------------------------------------------------

/// Indices holding expert `i` exactly `loads[i]` times, in an order shuffled by `seed`.
fn routing(loads: &[usize], seed: u64) -> Vec<i32> {
    let mut indices: Vec<i32> = loads
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i as i32, n))
        .collect();
    let mut rng = SplitMix64(seed);
    for i in (1..indices.len()).rev() {
        indices.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    indices
}

/// `routed` indices drawn uniformly from `0..experts`.
fn random_routing(experts: usize, routed: usize, seed: u64) -> Vec<i32> {
    let mut rng = SplitMix64(seed);
    (0..routed)
        .map(|_| (rng.next_u64() % experts as u64) as i32)
        .collect()
}

/// Runs the kernel on `bias` (of `dtype`) and `indices`; `want` is the f32 update before the
/// rounding to `dtype`.
fn check_bias_update(bias: &[f32], indices: &[i32], speed: f32, dtype: DType, want: Vec<f32>) {
    let spec = ExpertBiasUpdate {
        experts: bias.len() as u64,
        routed: indices.len() as u64,
        bias: dtype,
        speed,
    };
    let want = [tensor(dtype, &[bias.len()], want)];
    let inputs = [bytes(bias, dtype), i32_bytes(indices)];
    check(
        OpKind::ExpertBiasUpdate,
        &GpuKernel::ExpertBiasUpdate(spec),
        &inputs,
        &want,
    );
}

/// Against the CPU reference, every index in range.
fn check_bias_update_reference(bias: &[f32], indices: &[i32], speed: f32, dtype: DType) {
    let want = grad::expert_bias_update(bias, indices, speed).expect("reference update");
    check_bias_update(bias, indices, speed, dtype, want);
}

#[test]
fn expert_bias_update_matches_the_reference_bit_for_bit() {
    let (f, b) = (DType::F32, DType::Bf16);
    // Ragged expert counts (8, 37, 256 and two passes of the block at 1500) and routings from
    // one entry to a few thousand, with and without a ragged tail of the 16-byte accesses.
    for (i, &(experts, routed, dtype, speed)) in [
        (8, 1, f, 1e-3),
        (8, 0, b, 1e-3),
        (8, 21, b, 0.25),
        (37, 1000, f, 1e-3),
        (37, 4099, b, 1e-3),
        (256, 4096, f, 1e-3),
        (256, 3333, b, 0.01),
        (1500, 3002, f, 1e-3),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let bias = values(experts, seed, 0.05, dtype);
        let indices = random_routing(experts, routed, seed + 1);
        check_bias_update_reference(&bias, &indices, speed, dtype);
    }
}

#[test]
fn expert_bias_update_leaves_an_expert_at_the_mean_load() {
    for (experts, mean, dtype) in [
        (8, 5, DType::F32),
        (37, 40, DType::Bf16),
        (256, 3, DType::F32),
    ] {
        // Loads of mean + (−2, −1, 0, 1, 2, …): they sum to experts · mean when the deviations
        // cancel, so a fifth of the experts sit exactly at the mean.
        let mut loads: Vec<usize> = (0..experts)
            .map(|i| mean + [0, 1, 2, 0, 0][i % 5] - [0, 0, 0, 1, 2][i % 5])
            .collect();
        let total: usize = loads.iter().sum();
        // Give back or take away the remainder on the last expert, keeping T·k = E · mean.
        let last = loads.len() - 1;
        loads[last] = loads[last] + experts * mean - total;
        assert_eq!(loads.iter().sum::<usize>(), experts * mean);
        assert!(loads.contains(&mean));
        let indices = routing(&loads, experts as u64);
        let bias = values(experts, 7, 0.5, dtype);
        check_bias_update_reference(&bias, &indices, 1e-3, dtype);
        // Every expert at the mean: nothing moves.
        let even = routing(&vec![mean; experts], 3);
        let want = grad::expert_bias_update(&bias, &even, 1e-3).expect("reference update");
        assert_eq!(want, bias);
        check_bias_update(&bias, &even, 1e-3, dtype, want);
    }
    // γ = 0 moves nothing either.
    let bias = values(37, 8, 0.5, DType::Bf16);
    check_bias_update_reference(&bias, &random_routing(37, 500, 9), 0.0, DType::Bf16);
}

#[test]
fn expert_bias_update_ignores_an_index_out_of_range() {
    // The reference refuses these; the kernel counts them in no expert's load (but in T·k,
    // the entries the mean is taken over).
    for (experts, routed, dtype) in [
        (37, 1000, DType::F32),
        (8, 7, DType::Bf16),
        (1500, 2003, DType::F32),
    ] {
        let mut indices = random_routing(experts, routed, experts as u64);
        let bad = [
            -1,
            experts as i32,
            i32::MAX,
            i32::MIN,
            expert_bias_update::THREADS as i32,
        ];
        for (k, &x) in bad.iter().enumerate() {
            let at = (k * 131) % routed;
            indices[at] = x;
        }
        let bias = values(experts, 5, 0.05, dtype);
        let speed = 1e-3f32;
        let mut load = vec![0usize; experts];
        for &x in &indices {
            if let Some(l) = usize::try_from(x).ok().and_then(|x| load.get_mut(x)) {
                *l += 1;
            }
        }
        let want = bias
            .iter()
            .zip(&load)
            .map(|(&b, &l)| match (l * experts).cmp(&routed) {
                std::cmp::Ordering::Less => b + speed,
                std::cmp::Ordering::Greater => b - speed,
                std::cmp::Ordering::Equal => b,
            })
            .collect();
        check_bias_update(&bias, &indices, speed, dtype, want);
    }
}

// ---- rms_norm_grad ----------------------------------------------------------------------------

/// `rms_norm_grad` of `rows × dim` (x, dy and dx of `dtype`, the weight of `weight`) against
/// the reference as the CPU backend dispatches it: eps as the f64 attribute, dx rounded to its
/// dtype, the f32 weight gradient.
fn check_rms_norm_grad(rows: usize, dim: usize, dtype: DType, weight: DType, seed: u64) {
    let eps = 1e-6f64;
    let x = values(rows * dim, seed, 2.0, dtype);
    let w = values(dim, seed + 1, 1.5, weight);
    let dy = values(rows * dim, seed + 2, 1.0, dtype);
    let (dx, dw) = grad::rms_norm_grad(&x, &w, &dy, rows, dim, eps).expect("reference grad");
    let want = [
        tensor(dtype, &[rows, dim], dx),
        tensor(DType::F32, &[dim], dw),
    ];
    let spec = RmsNormGrad {
        rows: rows as u64,
        dim: dim as u64,
        eps: eps as f32,
        input: dtype,
        weight,
        grad: dtype,
        output: dtype,
        weight_grad: DType::F32,
    };
    let inputs = [bytes(&x, dtype), bytes(&w, weight), bytes(&dy, dtype)];
    check(
        OpKind::RmsNormGrad,
        &GpuKernel::RmsNormGrad(spec),
        &inputs,
        &want,
    );
}

#[test]
fn rms_norm_grad_rows_and_the_weight_gradient_over_the_grid() {
    let (f, b) = (DType::F32, DType::Bf16);
    // One row (one block), a few rows a block, and grids of 7, 18 and 23 blocks summing their
    // partials; widths below, at and past one pass of the block, ragged.
    check_rms_norm_grad(1, 16, f, f, 1);
    check_rms_norm_grad(3, 1000, b, b, 2);
    check_rms_norm_grad(37, 257, f, b, 3);
    check_rms_norm_grad(300, 64, b, f, 4);
    check_rms_norm_grad(5, 4099, b, b, 5);
    check_rms_norm_grad(513, 33, f, f, 6);
    // No rows: dx is empty and the weight gradient zero.
    check_rms_norm_grad(0, 33, f, f, 7);
}

// ---- softmax_grad -----------------------------------------------------------------------------

/// `softmax_grad` of `dims` along `axis`: `y` rows of positive values summing to about 1 along
/// the axis (then rounded to `dtype`), as a softmax output would.
fn check_softmax_grad(dims: &[usize], axis: usize, dtype: DType, seed: u64) {
    let n: usize = dims.iter().product();
    let (len, inner) = (dims[axis], dims[axis + 1..].iter().product::<usize>());
    let mut y: Vec<f32> = values(n, seed, 1.0, DType::F32)
        .iter()
        .map(|v| v.abs() + 0.01)
        .collect();
    for block in y.chunks_mut((len * inner).max(1)) {
        for j in 0..inner {
            let sum: f32 = (0..len).map(|a| block[a * inner + j]).sum();
            for a in 0..len {
                block[a * inner + j] /= sum;
            }
        }
    }
    if dtype == DType::Bf16 {
        FloatFormat::Bf16.round_slice(&mut y);
    }
    let dy = values(n, seed + 1, 1.0, dtype);
    let dx = grad::softmax_grad(&y, &dy, dims, axis).expect("reference grad");
    let want = [tensor(dtype, dims, dx)];
    let spec = SoftmaxGrad {
        outer: dims[..axis].iter().product::<usize>() as u64,
        len: len as u64,
        inner: inner as u64,
        probs: dtype,
        grad: dtype,
        output: dtype,
    };
    check(
        OpKind::SoftmaxGrad,
        &GpuKernel::SoftmaxGrad(spec),
        &[bytes(&y, dtype), bytes(&dy, dtype)],
        &want,
    );
}

#[test]
fn softmax_grad_along_each_kind_of_axis() {
    let (f, b) = (DType::F32, DType::Bf16);
    // The last axis (attention probabilities): one element, ragged, more than a block pass.
    check_softmax_grad(&[1, 10], 1, f, 1);
    check_softmax_grad(&[37, 517], 1, f, 2);
    check_softmax_grad(&[5, 4099], 1, b, 3);
    check_softmax_grad(&[2, 3, 300], 2, b, 4);
    check_softmax_grad(&[4, 1], 1, f, 5);
    // A middle and a first axis: rows strided by the dims after them.
    check_softmax_grad(&[4, 33, 7], 1, b, 6);
    check_softmax_grad(&[300, 5], 0, f, 7);
}

// ---- pad --------------------------------------------------------------------------------------

/// The `pad` kernel of `dims` along `axis` for `dtype`.
fn pad_kernel(dims: &[usize], axis: usize, before: usize, after: usize, dtype: DType) -> GpuKernel {
    GpuKernel::Pad(Pad {
        dtype,
        outer: dims[..axis].iter().product::<usize>() as u64,
        len: dims[axis] as u64,
        before: before as u64,
        after: after as u64,
        inner: dims[axis + 1..].iter().product::<usize>() as u64,
    })
}

#[test]
fn pad_matches_the_reference_bit_for_bit() {
    let (f, b) = (DType::F32, DType::Bf16);
    for (i, (dims, axis, before, after, dtype)) in [
        (vec![37, 129], 0, 3, 0, f),
        (vec![4, 33, 7], 1, 0, 5, b),
        (vec![5, 300], 1, 17, 1000, f),
        (vec![2, 3, 1], 2, 2, 3, b),
        (vec![1], 0, 0, 0, f),
        (vec![3, 0, 2], 1, 1, 1, f),
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = dims.iter().product();
        // A −0.0 among the values (Rule::Exact counts ±0 equal; the integer and FP8 test
        // below compares bytes).
        let mut x = values(n, i as u64, 4.0, dtype);
        if let Some(first) = x.first_mut() {
            *first = -0.0;
        }
        let mut out_dims = dims.clone();
        out_dims[axis] += before + after;
        let want = grad::pad(&x, &dims, axis, before, after, 0.0).expect("reference pad");
        let want = [tensor(dtype, &out_dims, want)];
        let kernel = pad_kernel(&dims, axis, before, after, dtype);
        check(OpKind::Pad, &kernel, &[bytes(&x, dtype)], &want);
    }
}

#[test]
fn pad_copies_integers_and_fp8_codes() {
    let (dims, axis, before, after) = ([3usize, 41, 5], 1, 4, 9);
    let n: usize = dims.iter().product();
    let ints: Vec<i32> = (0..n as i32).map(|v| v * 7919 - 100_000).collect();
    let codes: Vec<u8> = (0..n).map(|v| (v * 37 % 256) as u8).collect();
    let want_ints = grad::pad(&ints, &dims, axis, before, after, 0).expect("reference pad");
    let want_codes = grad::pad(&codes, &dims, axis, before, after, 0u8).expect("reference pad");
    for (dtype, input, want) in [
        (DType::I32, i32_bytes(&ints), i32_bytes(&want_ints)),
        (DType::F8E4M3, codes.clone(), want_codes.clone()),
        (DType::F8E5M2, codes, want_codes),
    ] {
        let kernel = pad_kernel(&dims, axis, before, after, dtype);
        for target in Target::ALL {
            let ptx = lowered(&kernel, target);
            let out = run_ptx(
                &kernel,
                target,
                &ptx,
                std::slice::from_ref(&input),
                &[want.len()],
            );
            assert!(out[0] == want, "{target}: {}", kernel.canonical());
        }
    }
}

// ---- rope_grad --------------------------------------------------------------------------------

/// `rope_grad` of `dy[dims]` against the reference as the CPU backend dispatches it (f32 with
/// unrounded tables, `dx` rounded to `dtype` once).
fn check_rope_grad(dims: [usize; 4], params: &RopeParams, dtype: DType, seed: u64) {
    let dy = values(dims.iter().product(), seed, 2.0, dtype);
    let dx = grad::rope_grad(&dy, dims, params).expect("reference grad");
    let want = [tensor(dtype, &dims, dx)];
    let spec = RopeGrad {
        rope: Rope::new(dims.map(|d| d as u64), params, dtype),
    };
    check(
        OpKind::RopeGrad,
        &GpuKernel::RopeGrad(spec),
        &[bytes(&dy, dtype)],
        &want,
    );
}

/// DeepSeek's YaRN, interleaved: interpolated frequencies and an attention factor ≠ 1 on cos
/// and sin.
pub(super) fn deepseek_yarn() -> RopeParams {
    RopeParams {
        style: RopeStyle::Interleaved,
        theta: 10_000.0,
        scaling: Some(RopeScaling::Yarn {
            factor: 40.0,
            original_max_position: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 0.707,
        }),
    }
}

#[test]
fn rope_grad_rotates_back_for_each_pairing_and_scaling() {
    let (f, b) = (DType::F32, DType::Bf16);
    let plain = |style| RopeParams {
        style,
        theta: 10_000.0,
        scaling: None,
    };
    let yarn = deepseek_yarn();
    check_rope_grad([1, 1, 1, 2], &plain(RopeStyle::Half), f, 1);
    check_rope_grad([2, 37, 3, 64], &plain(RopeStyle::Half), b, 2);
    check_rope_grad([3, 19, 5, 10], &plain(RopeStyle::Interleaved), f, 3);
    check_rope_grad([1, 300, 2, 64], &yarn, b, 4);
    check_rope_grad([2, 33, 1, 6], &yarn, f, 5);
    // No positions: nothing to rotate.
    check_rope_grad([2, 0, 3, 8], &plain(RopeStyle::Half), f, 6);
}

// ---- embedding_grad ---------------------------------------------------------------------------

/// Runs `embedding_grad` on `ids` and `dy` (`ids.len()` rows of `dim`, of `dtype`) against
/// `want`, the f32 `[vocab, dim]` gradient.
fn check_embedding_grad(
    ids: &[i32],
    dy: &[f32],
    vocab: usize,
    dim: usize,
    dtype: DType,
    want: Vec<f32>,
) {
    let spec = EmbeddingGrad {
        tokens: ids.len() as u64,
        vocab: vocab as u64,
        dim: dim as u64,
        grad: dtype,
    };
    check(
        OpKind::EmbeddingGrad,
        &GpuKernel::EmbeddingGrad(spec),
        &[i32_bytes(ids), bytes(dy, dtype)],
        &[tensor(DType::F32, &[vocab, dim], want)],
    );
}

#[test]
fn embedding_grad_matches_the_reference_bit_for_bit() {
    let (f, b) = (DType::F32, DType::Bf16);
    // One id; ids repeated many times per row (7 rows) across three column chunks, the last
    // ragged; a sparse vocabulary; a width below a warp; no tokens (a zero table).
    for (i, &(tokens, vocab, dim, dtype)) in [
        (1, 1, 1, f),
        (300, 7, 2 * embedding_grad::THREADS as usize + 1, b),
        (37, 50, 16, f),
        (6, 1000, 3, b),
        (129, 64, 100, f),
        (0, 5, 33, f),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let ids = random_routing(vocab, tokens, seed);
        let dy = values(tokens * dim, seed + 1, 2.0, dtype);
        let want = grad::embedding_grad(&ids, &dy, vocab, dim).expect("reference grad");
        check_embedding_grad(&ids, &dy, vocab, dim, dtype, want);
    }
}

#[test]
fn embedding_grad_skips_an_id_out_of_the_vocabulary() {
    // The reference refuses these; the kernel adds their rows to no row of the table (and
    // reads nothing through them): the reference over the other tokens, in their order.
    let (vocab, dim, tokens) = (37, 130, 400);
    let mut ids = random_routing(vocab, tokens, 3);
    for (k, &x) in [-1, vocab as i32, i32::MAX, i32::MIN, 1 << 20]
        .iter()
        .enumerate()
    {
        ids[(k * 97) % tokens] = x;
    }
    let dy = values(tokens * dim, 4, 1.0, DType::Bf16);
    let (kept_ids, kept_dy): (Vec<i32>, Vec<f32>) = ids
        .iter()
        .zip(dy.chunks(dim))
        .filter(|(id, _)| (0..vocab as i32).contains(id))
        .map(|(&id, row)| (id, row.to_vec()))
        .fold((Vec::new(), Vec::new()), |(mut is, mut rows), (id, row)| {
            is.push(id);
            rows.extend(row);
            (is, rows)
        });
    assert_eq!(kept_ids.len(), tokens - 5);
    let want = grad::embedding_grad(&kept_ids, &kept_dy, vocab, dim).expect("reference grad");
    check_embedding_grad(&ids, &dy, vocab, dim, DType::Bf16, want);
}

// ---- grouped_linear_wgrad ---------------------------------------------------------------------

/// One `grouped_linear_wgrad` case: sizes, x's layout and the operands' dtype.
struct WgradCase {
    tokens: usize,
    top_k: usize,
    experts: usize,
    n: usize,
    k: usize,
    per_slot: bool,
    dtype: DType,
}

impl WgradCase {
    /// The reference's sizes, over `experts` experts.
    fn dims(&self, experts: usize) -> GroupedDims {
        GroupedDims {
            tokens: self.tokens,
            top_k: self.top_k,
            experts,
            out_features: self.n,
            in_features: self.k,
        }
    }

    /// x's layout.
    fn input(&self) -> GroupedInput {
        if self.per_slot {
            GroupedInput::PerSlot
        } else {
            GroupedInput::PerToken
        }
    }

    /// The kernel's spec, in f32 or in `fp8`.
    fn spec(&self, fp8: Option<GroupedWgradFp8>) -> GroupedLinearWgrad {
        GroupedLinearWgrad {
            tokens: self.tokens as u64,
            top_k: self.top_k as u64,
            experts: self.experts as u64,
            out_features: self.n as u64,
            in_features: self.k as u64,
            x_per_slot: self.per_slot,
            grad: self.dtype,
            input: self.dtype,
            fp8,
        }
    }
}

/// Runs the kernel on `indices` against the reference over `experts + 1` experts whose last
/// one takes every index out of `0..experts` (the kernel leaves those rows out).
fn check_grouped_wgrad(c: &WgradCase, indices: &[i32], seed: u64) {
    let routed = c.tokens * c.top_k;
    let x_rows = if c.per_slot { routed } else { c.tokens };
    let dy = values(routed * c.n, seed, 1.0, c.dtype);
    let x = values(x_rows * c.k, seed + 1, 2.0, c.dtype);
    let spare = c.experts as i32;
    let folded: Vec<i32> = indices
        .iter()
        .map(|&i| if (0..spare).contains(&i) { i } else { spare })
        .collect();
    let dims = c.dims(c.experts + 1);
    let mut dw = grad::grouped_linear_wgrad(&dy, &x, c.input(), &folded, dims).expect("reference");
    dw.truncate(c.experts * c.n * c.k);
    let kernel = GpuKernel::GroupedLinearWgrad(c.spec(None));
    let inputs = [bytes(&dy, c.dtype), bytes(&x, c.dtype), i32_bytes(indices)];
    let reference = tensor(DType::F32, &[c.experts, c.n, c.k], dw);
    // Every element is one f32 sum from +0 of its rows' exact products in row order, whether on
    // the CUDA cores or (BF16 operands) as a chain of tensor-core MMAs on the emulator.
    let mut want = vec![0f32; c.experts * c.n * c.k];
    for (r, &e) in indices.iter().enumerate() {
        if !(0..c.experts as i32).contains(&e) {
            continue;
        }
        let x_row = if c.per_slot { r } else { r / c.top_k };
        for n in 0..c.n {
            for k in 0..c.k {
                want[(e as usize * c.n + n) * c.k + k] += dy[r * c.n + n] * x[x_row * c.k + k];
            }
        }
    }
    for target in Target::ALL {
        let ptx = lowered(&kernel, target);
        let out = run_ptx(&kernel, target, &ptx, &inputs, &[want.len() * 4]);
        let got = floats(&out[0], DType::F32);
        let rule = rule_for(OpKind::GroupedLinearWgrad, 0, DType::F32);
        let result = tensor(DType::F32, &reference.shape, got.clone());
        compare(rule, &result, &reference)
            .unwrap_or_else(|e| panic!("{target}: {}: {e}", kernel.canonical()));
        let same = got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(
            same,
            "{target}: {}: not the row-order sums",
            kernel.canonical()
        );
    }
}

#[test]
fn grouped_linear_wgrad_per_token_and_per_slot() {
    let (f, b) = (DType::F32, DType::Bf16);
    let case = |tokens, top_k, experts, n, k, per_slot, dtype| WgradCase {
        tokens,
        top_k,
        experts,
        n,
        k,
        per_slot,
        dtype,
    };
    // tiny-moe's up projection (x per token, bf16), its down projection (x per slot); ragged
    // tiles of both axes; one expert; no tokens (a zero gradient); no output features.
    for (i, c) in [
        case(64, 2, 8, 32, 64, false, b),
        case(64, 2, 8, 64, 32, true, b),
        case(37, 3, 5, 70, 130, false, f),
        case(20, 2, 6, 65, 33, true, f),
        case(9, 1, 1, 3, 5, false, b),
        case(0, 2, 4, 16, 16, false, f),
        case(5, 2, 3, 0, 16, false, f),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let mut indices = random_routing(c.experts, c.tokens * c.top_k, seed + 5);
        // Expert 1 is no row's (when there are others): its gradient is zero.
        if c.experts > 2 {
            for x in indices.iter_mut().filter(|x| **x == 1) {
                *x = 2;
            }
        }
        check_grouped_wgrad(c, &indices, seed);
    }
}

#[test]
fn grouped_linear_wgrad_flushes_a_long_list_and_skips_bad_indices() {
    // Expert 0 takes ~2280 of 2400 rows: its list fills (past LIST − THREADS) and its sums
    // resume from dw several times; expert 2 takes none.
    let (tokens, top_k, experts) = (1200, 2, 3);
    let routed = tokens * top_k;
    assert!(routed > 2 * grouped_linear_wgrad::LIST as usize);
    let mut rng = SplitMix64(3);
    let indices: Vec<i32> = (0..routed)
        .map(|_| i32::from(rng.next_u64().is_multiple_of(20)))
        .collect();
    let c = WgradCase {
        tokens,
        top_k,
        experts,
        n: 20,
        k: 40,
        per_slot: false,
        dtype: DType::Bf16,
    };
    check_grouped_wgrad(&c, &indices, 1);
    // Indices out of range (the reference refuses them) add to no expert.
    let mut indices = random_routing(experts, routed, 4);
    for (j, &x) in [-1, experts as i32, i32::MAX, i32::MIN].iter().enumerate() {
        indices[(j * 397) % routed] = x;
    }
    let c = WgradCase {
        per_slot: true,
        dtype: DType::F32,
        ..c
    };
    check_grouped_wgrad(&c, &indices, 2);
}

/// The FP8 form of `grouped_linear_wgrad` on `indices` (all in range) against the reference,
/// bit for bit under both accumulators the emulator's MMAs model (the kernel chains each
/// interval's tensor-core MMAs in row order, as the reference's partial sums): in-order f32
/// sums and Hopper's; NaN where the reference has NaN.
fn check_grouped_wgrad_fp8(
    c: &WgradCase,
    indices: &[i32],
    f: GroupedWgradFp8,
    dy: &[f32],
    x: &[f32],
) {
    let dims = c.dims(c.experts);
    let kernel = GpuKernel::GroupedLinearWgrad(c.spec(Some(f)));
    let inputs = [bytes(dy, c.dtype), bytes(x, c.dtype), i32_bytes(indices)];
    let accumulators = [Accumulator::Exact, Accumulator::Hopper];
    let wants = accumulators.map(|accumulator| {
        grad::grouped_linear_wgrad_fp8(dy, x, c.input(), indices, dims, f, accumulator)
            .expect("reference")
    });
    // The two models differ on these operands, so each check pins its own.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_ne!(bits(&wants[0]), bits(&wants[1]), "the accumulators agree");
    for target in Target::ALL {
        let ptx = lowered(&kernel, target);
        for (accumulator, want) in accumulators.into_iter().zip(&wants) {
            let options = LaunchOptions {
                accumulator,
                ..LaunchOptions::default()
            };
            let out = run_ptx_with(&kernel, target, &ptx, &inputs, &[want.len() * 4], &options);
            let got = floats(&out[0], DType::F32);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{target}, {accumulator:?}: {}: dw[{i}] = {g}, want {w}",
                    kernel.canonical()
                );
            }
        }
    }
}

#[test]
fn grouped_linear_wgrad_fp8_matches_the_reference_bit_for_bit() {
    let (f32_, b) = (DType::F32, DType::Bf16);
    let fp8 = |tile, interval, dy_scale_format, x_scale_format| GroupedWgradFp8 {
        format: DType::F8E4M3,
        tile,
        interval,
        dy_scale_format,
        x_scale_format,
    };
    let recipe = fp8(128, 128, ScaleFormat::F32, ScaleFormat::Ue8m0);
    let case = |tokens, top_k, experts, n, k, per_slot, dtype| WgradCase {
        tokens,
        top_k,
        experts,
        n,
        k,
        per_slot,
        dtype,
    };
    // tiny-moe's up projection (bf16, x per token, groups of 128 rows), its down projection
    // with 32-row intervals in 64-row tiles and power-of-2 scales on dY (x per slot), ragged
    // tiles of both axes in f32 with an outlier, a NaN and an infinity, and groups of 256 and
    // 512.
    for (i, (c, f)) in [
        (case(64, 2, 2, 32, 64, false, b), recipe),
        (
            case(90, 2, 3, 64, 32, true, b),
            fp8(64, 32, ScaleFormat::Ue8m0, ScaleFormat::F32),
        ),
        (case(150, 1, 2, 70, 65, false, f32_), recipe),
        // Groups wider than a block holds in registers: x quantized a chunk at a time.
        (
            case(300, 2, 2, 40, 72, true, b),
            fp8(256, 64, ScaleFormat::F32, ScaleFormat::F32),
        ),
        // Groups too wide for the 128-row blocks' list: 64-row blocks with the long list.
        (
            case(700, 1, 1, 40, 72, false, b),
            fp8(512, 128, ScaleFormat::F32, ScaleFormat::Ue8m0),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 40 + 10 * i as u64;
        let routed = c.tokens * c.top_k;
        let x_rows = if c.per_slot { routed } else { c.tokens };
        let indices = random_routing(c.experts, routed, seed);
        let mut dy = values(routed * c.n, seed + 1, 1.0, c.dtype);
        let mut x = values(x_rows * c.k, seed + 2, 2.0, c.dtype);
        if c.dtype == f32_ {
            dy[5 * c.n + 3] = 1000.0;
            x[7 * c.k + 1] = f32::NAN;
            x[9 * c.k + 64] = f32::INFINITY;
        }
        check_grouped_wgrad_fp8(&c, &indices, f, &dy, &x);
    }
}

#[test]
fn grouped_linear_wgrad_fp8_counts_groups_across_flushes() {
    // Expert 0 takes ~2280 of 2400 rows: its list fills past LIST − THREADS several times, and
    // each flush keeps the rows past its last whole group of 128 for the next; expert 1 takes
    // the rest, expert 2 none.
    let c = WgradCase {
        tokens: 1200,
        top_k: 2,
        experts: 3,
        n: 20,
        k: 40,
        per_slot: false,
        dtype: DType::Bf16,
    };
    let routed = c.tokens * c.top_k;
    assert!(routed > 2 * grouped_linear_wgrad::LIST as usize);
    let mut rng = SplitMix64(5);
    let indices: Vec<i32> = (0..routed)
        .map(|_| i32::from(rng.next_u64().is_multiple_of(20)))
        .collect();
    let dy = values(routed * c.n, 6, 1.0, c.dtype);
    let x = values(c.tokens * c.k, 7, 2.0, c.dtype);
    let f = GroupedWgradFp8 {
        format: DType::F8E4M3,
        tile: 128,
        interval: 128,
        dy_scale_format: ScaleFormat::F32,
        x_scale_format: ScaleFormat::F32,
    };
    check_grouped_wgrad_fp8(&c, &indices, f, &dy, &x);
    // Groups of 96 rows do not divide the FP8 form's list of 512: every one of 512 rows is
    // expert 0's, so the last flush holds all 512, and its last group (rows 480 ..) runs past
    // the list.
    let c = WgradCase {
        tokens: grouped_linear_wgrad::FP8_LIST as usize,
        top_k: 1,
        experts: 2,
        ..c
    };
    let indices = vec![0; c.tokens];
    let dy = values(c.tokens * c.n, 8, 1.0, c.dtype);
    let x = values(c.tokens * c.k, 9, 2.0, c.dtype);
    let f = GroupedWgradFp8 {
        tile: 96,
        interval: 32,
        ..f
    };
    check_grouped_wgrad_fp8(&c, &indices, f, &dy, &x);
}

// ---- moe_combine_grad -------------------------------------------------------------------------

/// `moe_combine_grad` of `tokens × top_k` rows of `dim`: y, dout and dy of `dtype`, f32
/// weights and dweights (the training graphs' types), bit for bit.
fn check_combine_grad(tokens: usize, top_k: usize, dim: usize, dtype: DType, seed: u64) {
    let rows = tokens * top_k;
    let y = values(rows * dim, seed, 4.0, dtype);
    let w = values(rows, seed + 1, 1.0, DType::F32);
    let dout = values(tokens * dim, seed + 2, 1.0, dtype);
    let (dy, dw) = grad::moe_combine_grad(&y, &w, &dout, tokens, top_k, dim).expect("reference");
    let spec = MoeCombineGrad {
        tokens: tokens as u64,
        top_k: top_k as u64,
        dim: dim as u64,
        routed: dtype,
        weights: DType::F32,
        grad: dtype,
        output: dtype,
        weights_grad: DType::F32,
    };
    check(
        OpKind::MoeCombineGrad,
        &GpuKernel::MoeCombineGrad(spec),
        &[bytes(&y, dtype), bytes(&w, DType::F32), bytes(&dout, dtype)],
        &[
            tensor(dtype, &[tokens, top_k, dim], dy),
            tensor(DType::F32, &[tokens, top_k], dw),
        ],
    );
}

#[test]
fn moe_combine_grad_matches_the_reference_bit_for_bit() {
    let (f, b) = (DType::F32, DType::Bf16);
    // One leaf (≤ 32), a 33 split once, 65 = 32 + (16 + 17), segments under a warp, 128
    // segments of 32 or 33 (4099), two segments a thread (V3's 7168), eight (20000).
    for (i, &(tokens, top_k, dim, dtype)) in [
        (64, 2, 64, b),
        (3, 1, 1, f),
        (5, 3, 32, f),
        (4, 2, 33, b),
        (3, 2, 65, f),
        (7, 4, 100, b),
        (2, 3, 4099, f),
        (2, 2, 7168, b),
        (1, 2, 20_000, f),
        (0, 2, 16, f),
    ]
    .iter()
    .enumerate()
    {
        check_combine_grad(tokens, top_k, dim, dtype, 10 * i as u64);
    }
    assert_eq!(moe_combine_grad::segments_per_thread(7168), 2);
    assert_eq!(moe_combine_grad::segments_per_thread(20_000), 8);
}

// ---- moe_topk_grad ----------------------------------------------------------------------------

/// One `moe_topk_grad` case.
struct TopkGradCase {
    tokens: usize,
    experts: usize,
    top_k: usize,
    score_func: ScoreFunc,
    norm: bool,
    route_scale: f64,
    logits: DType,
}

/// `top_k` distinct experts of `0..experts` per token, in a random order.
fn distinct_routing(tokens: usize, experts: usize, top_k: usize, seed: u64) -> Vec<i32> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(tokens * top_k);
    for _ in 0..tokens {
        let mut all: Vec<i32> = (0..experts as i32).collect();
        for i in 0..top_k {
            let j = i + (rng.next_u64() % (experts - i) as u64) as usize;
            all.swap(i, j);
        }
        out.extend_from_slice(&all[..top_k]);
    }
    out
}

/// Runs the kernel on `indices` against the reference, whose indices out of range (which it
/// refuses) are replaced by expert 0 and their token's row made NaN, as the kernel does.
fn check_topk_grad(c: &TopkGradCase, indices: &[i32], seed: u64) {
    let (t, e, k) = (c.tokens, c.experts, c.top_k);
    let logits = values(t * e, seed, 6.0, c.logits);
    let dweights = values(t * k, seed + 1, 1.0, DType::F32);
    let params = grad::RouteWeights {
        score_func: c.score_func,
        norm_topk_prob: c.norm,
        route_scale: c.route_scale,
    };
    let valid: Vec<i32> = indices
        .iter()
        .map(|&i| if (0..e as i32).contains(&i) { i } else { 0 })
        .collect();
    let mut want =
        grad::moe_topk_grad(&logits, &valid, &dweights, t, e, &params).expect("reference");
    for (tok, row) in want.chunks_mut(e.max(1)).enumerate() {
        if valid[tok * k..][..k] != indices[tok * k..][..k] {
            row.fill(f32::NAN);
        }
    }
    let spec = MoeTopkGrad {
        tokens: t as u64,
        experts: e as u64,
        top_k: k as u64,
        score_func: c.score_func,
        norm_topk_prob: c.norm,
        route_scale: c.route_scale as f32,
        logits: c.logits,
        grad: DType::F32,
        output: DType::F32,
    };
    check(
        OpKind::MoeTopkGrad,
        &GpuKernel::MoeTopkGrad(spec),
        &[
            bytes(&logits, c.logits),
            i32_bytes(indices),
            bytes(&dweights, DType::F32),
        ],
        &[tensor(DType::F32, &[t, e], want)],
    );
}

#[test]
fn moe_topk_grad_for_each_score_function_and_normalization() {
    let (f, b) = (DType::F32, DType::Bf16);
    let (sigmoid, softmax) = (ScoreFunc::Sigmoid, ScoreFunc::Softmax);
    let case = |tokens, experts, top_k, score_func, norm, route_scale, logits| TopkGradCase {
        tokens,
        experts,
        top_k,
        score_func,
        norm,
        route_scale,
        logits,
    };
    // tiny-moe (8 experts, 2 chosen, normalized, scale 2.5); V3 (256, 8); V2's softmax
    // without normalization (64, 6) and with it; ragged expert counts; one expert chosen
    // (not normalized: a normalized single weight is 1 - 1e-20/s, whose gradient is the
    // rounding noise of a cancellation, so no two implementations agree on it); every expert
    // chosen.
    for (i, c) in [
        case(64, 8, 2, sigmoid, true, 2.5, f),
        case(37, 256, 8, sigmoid, true, 2.5, f),
        case(21, 64, 6, softmax, false, 1.0, b),
        case(19, 64, 6, softmax, true, 16.0, f),
        case(9, 37, 3, sigmoid, false, 1.0, b),
        case(11, 37, 1, softmax, false, 1.0, f),
        case(6, 5, 5, softmax, false, 0.5, f),
        case(5, 5, 5, sigmoid, true, 1.0, f),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let indices = distinct_routing(c.tokens, c.experts, c.top_k, seed + 7);
        check_topk_grad(c, &indices, seed);
    }
}

#[test]
fn moe_topk_grad_repeated_and_out_of_range_indices() {
    for score_func in [ScoreFunc::Sigmoid, ScoreFunc::Softmax] {
        let c = TopkGradCase {
            tokens: 13,
            experts: 40,
            top_k: 4,
            score_func,
            norm: true,
            route_scale: 2.5,
            logits: DType::F32,
        };
        let mut indices = distinct_routing(c.tokens, c.experts, c.top_k, 3);
        // A token choosing one expert twice: the reference sums both slots' cotangents.
        indices[5] = indices[4];
        check_topk_grad(&c, &indices, 1);
        // Indices out of range: their tokens' rows are NaN, no other row changes.
        for (j, &x) in [-1, 40, i32::MAX, i32::MIN].iter().enumerate() {
            indices[12 + 11 * j] = x;
        }
        check_topk_grad(&c, &indices, 2);
    }
}

// ---- selection --------------------------------------------------------------------------------

/// A training step's optimizer, loss and backward kinds as the planner sees them: each selects
/// its kernel, with one argument per parameter.
#[test]
fn the_training_kinds_select_their_kernels() {
    let text = r#"graph "step"
input %logits: bf16[2, 3, 50]
input %labels: i32[2, 3]
input %loss.grad: f32[1]
input %x: bf16[6, 16]
input %dy: bf16[6, 16]
input %schedule: f32[2]
input %m: bf16[16, 8]
input %v: bf16[16, 8]
param @w: f32[16, 8]
param @route.bias: bf16[37]
input %route.idx: i32[6, 3]
input %ids: i32[6]
input %q: bf16[1, 6, 2, 8]
input %router: f32[6, 37]
input %route.dw: f32[6, 3]
input %ey: bf16[6, 3, 16]
%loss: f32[1] = cross_entropy(%logits, %labels) role=head
%dlogits: f32[2, 3, 50] = cross_entropy_grad(%logits, %labels, %loss.grad) role=head
%dx: bf16[6, 16] = silu_grad(%x, %dy) role=ffn
%dgate: bf16[6, 16], %dup: bf16[6, 16] = swiglu_grad(%x, %x, %dy) role=ffn
%half: bf16[6, 16] = scale(%dx) {factor = 0.5} role=other
%bias.grad: bf16[16] = reduce_sum(%dy) {axis = 0} role=other
%w.grad: f32[16, 8] = cast(@w) {dtype = f32} role=other
%norm: f32[1] = global_norm(%w.grad, %dlogits, %bias.grad) role=other
%w.next: f32[16, 8], %m.next: bf16[16, 8], %v.next: bf16[16, 8] = adamw(@w, %w.grad, %m, %v, %norm, %schedule) {beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, max_grad_norm = 1.0} role=other
%route.bias.next: bf16[37] = expert_bias_update(@route.bias, %route.idx) {speed = 0.001} role=gating
%dn: bf16[6, 16], %dw: f32[16] = rms_norm_grad(%x, %bias.grad, %dy) {eps = 1e-6} role=norm
%demb: f32[50, 16] = embedding_grad(%ids, %dy) {vocab = 50} role=embedding
%dp: bf16[6, 16] = softmax_grad(%x, %dy) {axis = -1} role=attention
%padded: bf16[6, 21] = pad(%dy) {axis = 1, before = 2, after = 3} role=other
%dq: bf16[1, 6, 2, 8] = rope_grad(%q) {style = "half", theta = 10000.0} role=attention
%drouter: f32[6, 37] = moe_topk_grad(%router, %route.idx, %route.dw) {norm_topk_prob = true, route_scale = 2.5, score_func = "sigmoid"} role=gating
%dexperts: bf16[6, 3, 16], %dweights: f32[6, 3] = moe_combine_grad(%ey, %route.dw, %dy) role=expert
%dw.up: f32[37, 16, 16] = grouped_linear_wgrad(%ey, %x, %route.idx) {experts = 37} role=expert
%dw.down: f32[37, 16, 16] = grouped_linear_wgrad(%ey, %ey, %route.idx) {experts = 37} role=expert
output %loss
"#;
    let g = dsc_ir::text::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut specs = Vec::new();
    for op in &g.ops {
        match dsc_codegen::plan::select::select(&g, op) {
            Ok(dsc_codegen::plan::select::Selection::Launch { kernel, args }) => {
                assert_eq!(kernel.params().len(), args.len(), "{}", kernel.canonical());
                for (param, &arg) in kernel.params().iter().zip(&args) {
                    assert_eq!(param.dtype, g.ty(arg).dtype, "{}", kernel.canonical());
                    assert_eq!(param.len, g.ty(arg).shape.numel(), "{}", kernel.canonical());
                }
                specs.push(kernel.spec());
            }
            Ok(other) => panic!("{}: {other:?}", op.kind),
            Err(e) => panic!("{}: {e}", op.kind),
        }
    }
    assert_eq!(
        specs,
        [
            "cross_entropy",
            "cross_entropy_grad",
            "silu_grad",
            "swiglu_grad",
            "scale",
            "reduce_sum",
            "cast",
            "global_norm",
            "adamw",
            "expert_bias_update",
            "rms_norm_grad",
            "embedding_grad",
            "softmax_grad",
            "pad",
            "rope_grad",
            "moe_topk_grad",
            "moe_combine_grad",
            "grouped_linear_wgrad",
            "grouped_linear_wgrad",
        ]
    );
}

// ---- balance_loss -----------------------------------------------------------------------------

/// One balance-loss case: tokens, experts, chosen per token, sequences, α, the score function.
struct BalanceCase {
    tokens: usize,
    experts: usize,
    top_k: usize,
    sequences: usize,
    alpha: f32,
    score_func: dsc_kernels::ops::ScoreFunc,
}

/// `balance_loss` and `balance_loss_grad` on random logits and routing (with repeated and
/// out-of-range indices when `bad`), against the references.
fn check_balance(c: &BalanceCase, bad: bool, seed: u64) {
    use dsc_codegen::kernels::balance_loss::BalanceLoss;
    let logits = values(c.tokens * c.experts, seed, 4.0, DType::F32);
    let mut indices = random_routing(c.experts, c.tokens * c.top_k, seed + 1);
    let b = grad::Balance {
        tokens: c.tokens,
        experts: c.experts,
        top_k: c.top_k,
        sequences: c.sequences,
        alpha: c.alpha,
        score_func: c.score_func,
    };
    // The last slot of every token repeats the one before it (counted once); for odd tokens
    // the kernel gets an index out of range there instead, which it counts for no expert —
    // the same counts (the reference refuses such an index).
    let mut reference_indices = indices.clone();
    if bad && c.top_k > 1 {
        for t in 0..c.tokens {
            let slot = t * c.top_k + c.top_k - 1;
            reference_indices[slot] = reference_indices[slot - 1];
            indices[slot] = if t % 2 == 1 {
                -1 - t as i32
            } else {
                reference_indices[slot]
            };
        }
    }
    let dloss = 1.7f32;
    let kernel = |grad| {
        GpuKernel::BalanceLoss(BalanceLoss {
            tokens: c.tokens as u64,
            experts: c.experts as u64,
            top_k: c.top_k as u64,
            sequences: c.sequences as u64,
            alpha: c.alpha,
            score_func: c.score_func,
            logits: DType::F32,
            grad,
        })
    };
    let loss = grad::balance_loss(&logits, &reference_indices, &b).expect("reference");
    let inputs = [bytes(&logits, DType::F32), i32_bytes(&indices)];
    check(
        OpKind::BalanceLoss,
        &kernel(false),
        &inputs,
        &[tensor(DType::F32, &[1], vec![loss])],
    );
    let dl = grad::balance_loss_grad(&logits, &reference_indices, dloss, &b).expect("reference");
    let mut inputs = inputs.to_vec();
    inputs.push(bytes(&[dloss], DType::F32));
    check(
        OpKind::BalanceLossGrad,
        &kernel(true),
        &inputs,
        &[tensor(DType::F32, &[c.tokens, c.experts], dl)],
    );
}

#[test]
fn balance_loss_and_its_gradient_for_each_score_function() {
    use dsc_kernels::ops::ScoreFunc;
    let cases = [
        // DeepSeek-V3's router width; sequences of 24 tokens.
        (48, 256, 8, 2, ScoreFunc::Sigmoid),
        // Experts not a multiple of 32, one sequence, one chosen.
        (37, 37, 1, 1, ScoreFunc::Sigmoid),
        (30, 64, 6, 3, ScoreFunc::Softmax),
        (9, 5, 2, 9, ScoreFunc::Softmax),
    ];
    for (i, &(tokens, experts, top_k, sequences, score_func)) in cases.iter().enumerate() {
        let c = BalanceCase {
            tokens,
            experts,
            top_k,
            sequences,
            alpha: 0.3,
            score_func,
        };
        check_balance(&c, false, 40 + i as u64);
        check_balance(&c, true, 50 + i as u64);
    }
}

// ---- E5M6 cache: quantize and dequantize -----------------------------------------------------

/// The emulated E5M6 copy of an activation (a training step's o_proj input): `quantize` in
/// 1 × 128 groups with UE8M0 and f32 scales, the codes in their 16-bit container (FP16 bits,
/// `code << 4`), then `dequantize` back — bit for bit the CPU reference's values and scales, at
/// magnitudes spanning E5M6's subnormals, ties, −0 and a NaN.
#[test]
fn e5m6_cache_quantizes_and_dequantizes_as_the_reference() {
    use dsc_codegen::kernels::dequantize::Dequantize;
    use dsc_codegen::kernels::quantize::{ActQuant, QuantSource, QuantSpec};
    use dsc_ir::ScaleFormat;
    let (rows, dim) = (6usize, 200usize);
    let mut rng = SplitMix64(77);
    let mut x: Vec<f32> = (0..rows * dim)
        .map(|i| {
            // Magnitudes over 2^-30 .. 2^10: each group's small values fall in E5M6's
            // subnormal range once scaled.
            let e = (rng.next_u64() % 40) as i32 - 30;
            let m = 1.0 + (rng.next_u64() % 1024) as f32 / 1024.0;
            let v = m * 2f32.powi(e);
            if i % 3 == 0 { -v } else { v }
        })
        .collect();
    x[5] = -0.0;
    x[dim + 7] = f32::NAN;
    for scale_format in [ScaleFormat::F32, ScaleFormat::Ue8m0] {
        let (want_q, want_s) =
            dsc_kernels::act_quant_e5m6(&x, rows, dim, 128, scale_format).expect("reference");
        let quant = GpuKernel::ActQuant(ActQuant {
            rows: rows as u64,
            dim: dim as u64,
            source: QuantSource::Plain(DType::F32),
            quant: QuantSpec {
                tile: 128,
                format: DType::F12E5M6,
                scale_format,
            },
        });
        let groups = dim.div_ceil(128);
        for target in Target::ALL {
            let ptx = lowered(&quant, target);
            let out = run_ptx(
                &quant,
                target,
                &ptx,
                &[bytes(&x, DType::F32)],
                &[rows * dim * 2, rows * groups * 4],
            );
            let scales = floats(&out[1], DType::F32);
            assert_eq!(
                scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                want_s.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                "{target} {scale_format:?}: scales"
            );
            for (i, (pair, &want)) in out[0].chunks(2).zip(&want_q).enumerate() {
                let bits = u16::from_le_bytes([pair[0], pair[1]]);
                // An E5M6 value is an FP16 one with the 4 low mantissa bits clear.
                let got = dsc_kernels::numerics::e5m6::decode(bits >> 4);
                let nan = got.is_nan() && want.is_nan();
                assert!(
                    (bits & 0xf == 0 && got.to_bits() == want.to_bits()) || nan,
                    "{target} {scale_format:?}: element {i} ({}): {got} ({bits:04x}) vs the \
                     reference's {want}",
                    x[i]
                );
            }
            // Back to f32 as the o_proj Wgrad's operand reads it.
            let deq = GpuKernel::Dequantize(Dequantize {
                matrices: 1,
                rows: rows as u64,
                cols: dim as u64,
                block: [1, 128],
                format: DType::F12E5M6,
                output: DType::F32,
            });
            let back = run_ptx(
                &deq,
                target,
                &lowered(&deq, target),
                &[out[0].clone(), out[1].clone()],
                &[rows * dim * 4],
            );
            for (i, (&got, &q)) in floats(&back[0], DType::F32).iter().zip(&want_q).enumerate() {
                let want = q * want_s[(i / dim) * groups + (i % dim) / 128];
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{target} {scale_format:?}: dequantized element {i}: {got} vs {want}"
                );
            }
        }
    }
}

// ---- square-block quantize and FP8 dequantize -------------------------------------------------

/// A training step's per-step weight copies: `quantize` of FP32 masters (or BF16 values) in
/// 128 × 128 blocks of each matrix (experts stacked), ragged edges, both FP8 formats and both
/// scale formats — the reference's codes and scales bit for bit — then `dequantize` of the
/// codes in those blocks (1 × 128 tiles: the E5M6 test above and the training steps).
#[test]
fn block_quantize_and_dequantize_match_the_reference_bit_for_bit() {
    use dsc_codegen::kernels::block_quant::BlockQuant;
    use dsc_codegen::kernels::dequantize::Dequantize;
    use dsc_codegen::kernels::quantize::QuantSpec;
    use dsc_ir::ScaleFormat;
    use dsc_kernels::numerics::fp8::Fp8Format;
    let cases = [
        (
            1usize,
            200usize,
            300usize,
            DType::F32,
            DType::F8E4M3,
            ScaleFormat::F32,
        ),
        (3, 130, 70, DType::Bf16, DType::F8E4M3, ScaleFormat::Ue8m0),
        (2, 64, 257, DType::F32, DType::F8E5M2, ScaleFormat::F32),
    ];
    for (i, (matrices, rows, cols, input, format, scale_format)) in cases.into_iter().enumerate() {
        let mut x = values(matrices * rows * cols, 90 + i as u64, 3.0, input);
        x[7] = 0.0;
        if input == DType::F32 {
            x[11] = f32::NAN;
        }
        let fmt = match format {
            DType::F8E5M2 => Fp8Format::E5M2,
            _ => Fp8Format::E4M3,
        };
        let want = match matrices {
            1 => dsc_kernels::weight_quant_128x128(&x, rows, cols, 128, fmt, scale_format),
            e => dsc_kernels::weight_quant_experts(&x, e, rows, cols, 128, fmt, scale_format),
        }
        .expect("reference");
        let quant = GpuKernel::BlockQuant(BlockQuant {
            matrices: matrices as u64,
            rows: rows as u64,
            cols: cols as u64,
            input,
            quant: QuantSpec {
                tile: 128,
                format,
                scale_format,
            },
        });
        let what = format!("{matrices}×{rows}×{cols} {input} → {format} {scale_format:?}");
        for target in Target::ALL {
            let out = run_ptx(
                &quant,
                target,
                &lowered(&quant, target),
                &[bytes(&x, input)],
                &[want.codes.len(), want.scales.len() * 4],
            );
            assert_eq!(out[0], want.codes, "{target} {what}: codes");
            assert_eq!(
                out[1],
                bytes(&want.scales, DType::F32),
                "{target} {what}: scales"
            );
            let (block, scales) = ([128u64, 128u64], &want.scales);
            {
                let deq = GpuKernel::Dequantize(Dequantize {
                    matrices: matrices as u64,
                    rows: rows as u64,
                    cols: cols as u64,
                    block,
                    format,
                    output: DType::F32,
                });
                let back = run_ptx(
                    &deq,
                    target,
                    &lowered(&deq, target),
                    &[want.codes.clone(), bytes(scales, DType::F32)],
                    &[x.len() * 4],
                );
                let reference = dsc_kernels::quantized::dequantize_blocks(
                    fmt,
                    dsc_kernels::Fp8Operand {
                        codes: &want.codes,
                        scales,
                    },
                    matrices,
                    rows,
                    cols,
                    [128, 128],
                )
                .expect("reference");
                for (j, (&got, &r)) in floats(&back[0], DType::F32)
                    .iter()
                    .zip(&reference)
                    .enumerate()
                {
                    assert!(
                        got.to_bits() == r.to_bits() || (got.is_nan() && r.is_nan()),
                        "{target} {what}: dequantized element {j}: {got} vs {r}"
                    );
                }
            }
        }
    }
}

/// The modeled time of the FP8 expert Wgrad (and the BF16 recipe's) at DeepSeek-V3's widths (N = 2048,
/// K = 7168, 128 rows an expert as V3's 32768 routed rows over 256 experts), over 8 experts to
/// keep dw in memory; sampled CTAs. Run by hand: `cargo nextest run --test integration
/// grouped_linear_wgrad_fp8_v3_modeled --run-ignored only --no-capture`.
#[test]
#[ignore = "a modeled benchmark, minutes on the emulator"]
fn grouped_linear_wgrad_fp8_v3_modeled() {
    use dsc_emulator::roofline::{DeviceModel, ModelOptions, model, model_with};
    // The up (and gate) projection's Wgrad, x a row per token; the down projection's, x a row
    // per slot.
    let up = WgradCase {
        tokens: 1024,
        top_k: 1,
        experts: 8,
        n: 2048,
        k: 7168,
        per_slot: false,
        dtype: DType::Bf16,
    };
    let down = WgradCase {
        n: 7168,
        k: 2048,
        per_slot: true,
        ..up
    };
    let f = GroupedWgradFp8 {
        format: DType::F8E4M3,
        tile: 128,
        interval: 128,
        dy_scale_format: ScaleFormat::F32,
        x_scale_format: ScaleFormat::Ue8m0,
    };
    for (c, fp8) in [(&up, Some(f)), (&down, Some(f)), (&up, None)] {
        let kernel = GpuKernel::GroupedLinearWgrad(c.spec(fp8));
        let indices: Vec<i32> = (0..c.tokens as i32).map(|t| t % c.experts as i32).collect();
        let dy = values(c.tokens * c.n, 1, 1.0, c.dtype);
        let x = values(c.tokens * c.k, 2, 2.0, c.dtype);
        let target = Target::Sm90a;
        let ptx = dsc_emulator::Module::parse(&lowered(&kernel, target)).expect("parses");
        let mut memory = dsc_emulator::GlobalMemory::new();
        let mut params = Vec::new();
        for data in [bytes(&dy, c.dtype), bytes(&x, c.dtype), i32_bytes(&indices)] {
            let at = memory.allocate(data.len() as u64);
            memory.write(at, &data).expect("write");
            params.push(dsc_emulator::ParamValue::U64(at));
        }
        let dw = memory.allocate((c.experts * c.n * c.k * 4) as u64);
        params.push(dsc_emulator::ParamValue::U64(dw));
        let options = LaunchOptions {
            sample_ctas: Some(4),
            ..LaunchOptions::default()
        };
        let profile =
            super::kernel_run::launch_kernel_with(&kernel, &ptx, &memory, &params, &options)
                .expect("launch");
        let modeled = model(&profile, &DeviceModel::h100_sxm());
        let flops = 2.0 * (c.tokens * c.top_k * c.n * c.k) as f64;
        eprintln!(
            "grouped_linear_wgrad {} {}x{} over {} rows: modeled {:.3} ms ({:.1} TFLOP/s), bound {:?}",
            if fp8.is_some() { "fp8" } else { "bf16" },
            c.n,
            c.k,
            c.tokens * c.top_k,
            modeled.seconds * 1e3,
            flops / modeled.seconds / 1e12,
            modeled.bound
        );
        for r in &modeled.resources {
            eprintln!("  {r:?}");
        }
        // The model sends every block's reads to DRAM; with the buffers read once (the blocks of
        // an expert share its rows in L2):
        let unique = (c.tokens * (c.n + c.k) * 2 + c.tokens * 4 + c.experts * c.n * c.k * 4) as u64;
        let options = ModelOptions {
            dram_bytes: Some(unique),
            ..ModelOptions::default()
        };
        let modeled = model_with(&profile, &DeviceModel::h100_sxm(), options);
        eprintln!(
            "  with each buffer read once from DRAM: modeled {:.3} ms ({:.1} TFLOP/s), bound {:?}",
            modeled.seconds * 1e3,
            flops / modeled.seconds / 1e12,
            modeled.bound
        );
    }
}
