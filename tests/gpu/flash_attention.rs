//! The fused attention kernel alone on the emulator, for both targets, against the CPU
//! reference `dsc_kernels::ops::attention` on the same BF16 operands: ragged query and key
//! lengths (not multiples of the 64-query block or the 64-key tile), causal and not, grouped
//! heads, MLA's RoPE part with one shared key head, extreme scores, and many key tiles (the
//! `mma.sync` form's `cp.async` pipeline over one K and one V buffer).

use super::kernel_run::{lower, run_ptx};
use dsc_codegen::Target;
use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::kernels::attention::HeadOperand;
use dsc_codegen::kernels::flash_attention::{AttentionForm, FlashAttention};
use dsc_codegen::kernels::flash_attention_tma;
use dsc_codegen::kernels::quantize::QuantSpec;
use dsc_codegen::kernels::row_window::RowWindow;
use dsc_ir::{DType, ScaleFormat};
use dsc_kernels::numerics::bf16::{from_bf16, from_bf16_bits, to_bf16};
use dsc_kernels::ops::{AttentionDims, FloatFormat, RopeOperands, ScoreDims, attention, slice};
use dsc_kernels::rng::SplitMix64;
use dsc_kernels::{Fp8Format, act_quant_1x128};
use dsc_runtime::step_check::{compare, rule_for};
use dsc_runtime::{HostData, HostTensor};

/// BF16 values in [-amplitude, amplitude).
fn bf16_values(n: u64, seed: u64, amplitude: f32) -> Vec<f32> {
    SplitMix64(seed)
        .symmetric_f32s(n as usize, amplitude)
        .into_iter()
        .map(|x| from_bf16(to_bf16(x)))
        .collect()
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| to_bf16(v).to_bits().to_le_bytes())
        .collect()
}

/// Runs `spec` on the emulator with operands of amplitude `amplitude` and compares with the
/// CPU reference.
fn check(spec: &FlashAttention, amplitude: f32) {
    let kernel = GpuKernel::FlashAttention(spec.clone());
    let params = kernel.params();
    let inputs: Vec<Vec<f32>> = params[..params.len() - 1]
        .iter()
        .enumerate()
        .map(|(i, p)| bf16_values(p.len, i as u64 + 1, amplitude))
        .collect();
    let dims = spec.dims;
    // An operand read in place from wider rows: the reference takes its window of each row.
    let window = |x: &Vec<f32>, row: Option<RowWindow>, dim: usize| -> Vec<f32> {
        match row {
            None => x.clone(),
            Some(RowWindow { stride, offset }) => {
                let (stride, offset) = (stride as usize, offset as usize);
                slice(x, &[x.len() / stride, stride], 1, offset, offset + dim).unwrap()
            }
        }
    };
    let q = window(&inputs[0], spec.q_row, dims.scores.head_dim);
    let k = window(&inputs[1], spec.k_row, dims.scores.head_dim);
    let v = window(&inputs[2], spec.v_row, dims.v_dim);
    let pe = spec.rope.map(|r| RopeOperands {
        q_pe: &inputs[3],
        k_pe: &inputs[4],
        kv_heads: r.kv_heads as usize,
        dim: r.dim as usize,
    });
    let mut want = attention(
        &q,
        &k,
        &v,
        dims,
        pe,
        f64::from(spec.scale),
        spec.causal,
        FloatFormat::Bf16,
    )
    .expect("reference runs");
    for x in &mut want {
        *x = from_bf16(to_bf16(*x));
    }
    let shape = vec![
        dims.scores.batch,
        dims.scores.q_len,
        dims.scores.heads,
        dims.v_dim,
    ];
    let want = HostTensor {
        dtype: DType::Bf16,
        shape: shape.clone(),
        data: HostData::F32(want),
    };

    let buffers: Vec<Vec<u8>> = inputs.iter().map(|x| bf16_bytes(x)).collect();
    let out_bytes = want.shape.iter().product::<usize>() * 2;
    for (target, form, mut outputs) in run_forms(spec, &buffers, &[out_bytes]) {
        let bytes = outputs.remove(0);
        let got: Vec<f32> = bytes
            .chunks(2)
            .map(|b| from_bf16_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect();
        let got = HostTensor {
            dtype: DType::Bf16,
            shape: shape.clone(),
            data: HostData::F32(got),
        };
        if let Err(why) = compare(
            rule_for(dsc_ir::OpKind::Attention, 0, DType::Bf16),
            &got,
            &want,
        ) {
            panic!("{target} {form:?}: {spec:?}: {why}");
        }
    }
}

/// Runs `spec` in every form its shapes take, on the operands `inputs`, with outputs of
/// `out_bytes`; returns each form's outputs. The TMA form runs the staged wgmma form's
/// arithmetic: checks they give the same bits.
fn run_forms(
    spec: &FlashAttention,
    inputs: &[Vec<u8>],
    out_bytes: &[usize],
) -> Vec<(Target, AttentionForm, Vec<Vec<u8>>)> {
    let forms = [
        (Target::Sm90a, AttentionForm::WgmmaTma),
        (Target::Sm90a, AttentionForm::Wgmma),
        (Target::Sm90a, AttentionForm::MmaSync),
        (Target::Sm89, AttentionForm::MmaSync),
    ];
    let mut tma_bytes: Option<Vec<Vec<u8>>> = None;
    let mut runs = Vec::new();
    for (target, form) in forms {
        let fused = FlashAttention {
            form,
            ..spec.clone()
        };
        if form == AttentionForm::WgmmaTma && !flash_attention_tma::eligible(&fused) {
            continue;
        }
        let kernel = GpuKernel::FlashAttention(fused);
        let ptx = lower(&kernel, target);
        let outputs = run_ptx(&kernel, target, &ptx, inputs, out_bytes);
        match form {
            AttentionForm::WgmmaTma => tma_bytes = Some(outputs.clone()),
            AttentionForm::Wgmma => {
                if let Some(tma) = &tma_bytes {
                    assert!(tma == &outputs, "{spec:?}: the TMA form's bits differ");
                }
            }
            AttentionForm::MmaSync => {}
        }
        runs.push((target, form, outputs));
    }
    runs
}

fn rope(kv_heads: u64, dim: u64) -> HeadOperand {
    HeadOperand {
        kv_heads,
        dim,
        dtype: DType::Bf16,
    }
}

/// q `[batch, q_len, heads, head_dim]`, k `[batch, kv_len, kv_heads, head_dim]`, v `[batch,
/// kv_len, v_heads, v_dim]`.
fn dims(
    [batch, q_len, kv_len, heads, kv_heads, head_dim]: [usize; 6],
    [v_heads, v_dim]: [usize; 2],
) -> AttentionDims {
    AttentionDims {
        scores: ScoreDims {
            batch,
            q_len,
            kv_len,
            heads,
            kv_heads,
            head_dim,
        },
        v_heads,
        v_dim,
    }
}

fn gqa(q_len: usize, kv_len: usize, causal: bool) -> FlashAttention {
    FlashAttention {
        dims: dims([2, q_len, kv_len, 4, 2, 32], [2, 24]),
        q_row: None,
        k_row: None,
        v_row: None,
        qk: DType::Bf16,
        rope: None,
        values: DType::Bf16,
        output: DType::Bf16,
        quant: None,
        scale: 0.2,
        causal,
        form: AttentionForm::MmaSync,
    }
}

#[test]
fn fused_attention_with_grouped_heads_and_ragged_lengths() {
    check(&gqa(70, 70, true), 1.0);
    check(&gqa(50, 131, false), 1.0);
    // Causal with more keys than queries: the queries are the last 40 of 100 positions.
    check(&gqa(40, 100, true), 1.0);
}

#[test]
fn fused_attention_with_mla_shapes() {
    let mla = FlashAttention {
        dims: dims([1, 96, 150, 2, 2, 32], [2, 32]),
        q_row: None,
        k_row: None,
        v_row: None,
        qk: DType::Bf16,
        rope: Some(rope(1, 16)),
        values: DType::Bf16,
        output: DType::Bf16,
        quant: None,
        scale: 0.144,
        causal: true,
        form: AttentionForm::MmaSync,
    };
    check(&mla, 1.0);
}

/// Causal MLA attention (one shared k_pe head of `rope_dim`) whose q, k and v are read in
/// place from wider rows where `rows` says so.
fn mla_in_place(
    dims: AttentionDims,
    rope_dim: u64,
    [q_row, k_row, v_row]: [Option<RowWindow>; 3],
    scale: f32,
) -> FlashAttention {
    FlashAttention {
        dims,
        q_row,
        k_row,
        v_row,
        qk: DType::Bf16,
        rope: Some(rope(1, rope_dim)),
        values: DType::Bf16,
        output: DType::Bf16,
        quant: None,
        scale,
        causal: true,
        form: AttentionForm::MmaSync,
    }
}

/// Rows of `stride` elements, the operand from `offset`.
fn at(stride: u64, offset: u64) -> Option<RowWindow> {
    Some(RowWindow { stride, offset })
}

#[test]
fn fused_mla_attention_reading_q_in_place() {
    // q_nope read from the q projection's rows of [q_nope | q_pe] (48 wide), at offset 0 and,
    // to show the offset is applied, at 16 of rows 56 wide; then V3's widths through the TMA
    // ring (128 of 192).
    let small = dims([1, 96, 150, 2, 2, 32], [2, 32]);
    check(
        &mla_in_place(small, 16, [at(48, 0), None, None], 0.144),
        1.0,
    );
    check(
        &mla_in_place(small, 16, [at(56, 16), None, None], 0.144),
        1.0,
    );
    let wide = dims([1, 150, 150, 2, 2, 128], [2, 64]);
    let v3 = mla_in_place(wide, 64, [at(192, 0), None, None], 0.072);
    assert!(flash_attention_tma::eligible(&v3));
    check(&v3, 1.0);
}

#[test]
fn fused_mla_attention_reading_k_and_v_in_place() {
    // k_nope and the values read from kv_b_proj's rows of [k_nope | v] per head, as q_nope
    // from the q projection's: the staged forms with 32 + 32 of 64, then through the TMA ring
    // with 128 + 64 of 192 (the values at offset 128: the loads start past k_nope).
    let small = dims([1, 96, 150, 2, 2, 32], [2, 32]);
    let rows = [at(48, 0), at(64, 0), at(64, 32)];
    check(&mla_in_place(small, 16, rows, 0.144), 1.0);
    let wide = dims([1, 150, 150, 2, 2, 128], [2, 64]);
    let v3 = mla_in_place(wide, 64, [at(192, 0), at(192, 0), at(192, 128)], 0.072);
    assert!(flash_attention_tma::eligible(&v3));
    check(&v3, 1.0);
}

#[test]
fn fused_attention_with_extreme_scores() {
    // Scores up to ±(8·8·32·0.2) = ±409: exp underflows to 0 for all but the row maxima.
    check(&gqa(65, 65, true), 8.0);
}

#[test]
fn fused_attention_over_many_key_tiles() {
    // Ten key tiles, the last ragged: every tile's copies overlap the previous tile's math.
    check(&gqa(40, 600, false), 1.0);
    // Causal: the query blocks read 8 to 10 tiles, the latest ones first.
    check(&gqa(130, 600, true), 1.0);
}

/// Shapes in whole 64-dim panels, which the TMA form takes.
fn panels(q_len: usize, kv_len: usize, causal: bool) -> FlashAttention {
    FlashAttention {
        dims: dims([2, q_len, kv_len, 4, 2, 64], [2, 64]),
        scale: 0.125,
        ..gqa(q_len, kv_len, causal)
    }
}

#[test]
fn fused_attention_through_the_tma_ring() {
    assert!(flash_attention_tma::eligible(&panels(1, 1, false)));
    // Ten key tiles through three stages: the ring wraps three times; ragged keys are the
    // TMA's zero fill.
    check(&panels(40, 600, false), 1.0);
    // Causal, the latest query blocks first; a ragged last query block.
    check(&panels(200, 230, true), 1.0);
}

#[test]
fn fused_mla_attention_through_the_tma_ring() {
    // k_nope | k_pe in three panels (k_pe one shared head), values of another width.
    let mla = FlashAttention {
        dims: dims([1, 150, 150, 2, 2, 128], [2, 64]),
        q_row: None,
        k_row: None,
        v_row: None,
        qk: DType::Bf16,
        rope: Some(rope(1, 64)),
        values: DType::Bf16,
        output: DType::Bf16,
        quant: None,
        scale: 0.072,
        causal: true,
        form: AttentionForm::MmaSync,
    };
    assert!(flash_attention_tma::eligible(&mla));
    check(&mla, 1.0);
}

/// Runs `spec` quantizing its output (`attention_quant`) and plain, on the same operands of
/// amplitude `amplitude`, in every form: the codes and scales must be the plain output's BF16
/// values quantized as `quantize` does (`act_quant_1x128`), bit for bit.
fn check_quantized(spec: &FlashAttention, quant: QuantSpec, amplitude: f32) {
    let plain = FlashAttention {
        quant: None,
        ..spec.clone()
    };
    let params = GpuKernel::FlashAttention(plain.clone()).params();
    let (outputs, operands) = params.split_last().expect("attention has params");
    let inputs: Vec<Vec<u8>> = operands
        .iter()
        .enumerate()
        .map(|(i, p)| bf16_bytes(&bf16_values(p.len, i as u64 + 1, amplitude)))
        .collect();
    let elements = outputs.len as usize;
    let v_dim = spec.dims.v_dim;
    let rows = elements / v_dim;
    let tile = quant.tile as usize;
    let quantized = FlashAttention {
        quant: Some(quant),
        ..spec.clone()
    };
    let scale_bytes = rows * (v_dim / tile) * 4;
    let plain_runs = run_forms(&plain, &inputs, &[elements * 2]);
    let quantized_runs = run_forms(&quantized, &inputs, &[elements, scale_bytes]);
    assert_eq!(plain_runs.len(), quantized_runs.len());
    let format = Fp8Format::from_dtype(quant.format).expect("an FP8 format");
    for ((target, form, plain), (_, _, got)) in plain_runs.into_iter().zip(quantized_runs) {
        let y: Vec<f32> = plain[0]
            .chunks(2)
            .map(|b| from_bf16_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect();
        let want = act_quant_1x128(&y, rows, v_dim, tile, format, quant.scale_format).unwrap();
        let scales: Vec<u32> = got[1]
            .chunks(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let want_scales: Vec<u32> = want.scales.iter().map(|s| s.to_bits()).collect();
        let what = format!("{target} {form:?} {quant:?}: {spec:?}");
        assert!(scales == want_scales, "{what}: scales differ");
        assert!(got[0] == want.codes, "{what}: codes differ");
    }
}

#[test]
fn fused_attention_quantizes_its_output_as_quantize_would() {
    // V3's head: the value dim one 1 x 128 group, MLA's k_pe one shared head, through the TMA
    // ring; ragged queries and keys (the last query block's rows past the end write nothing).
    let v3 = FlashAttention {
        dims: dims([1, 150, 150, 2, 2, 128], [2, 128]),
        rope: Some(rope(1, 64)),
        scale: 0.072,
        ..gqa(150, 150, true)
    };
    let e4m3 = QuantSpec {
        tile: 128,
        format: DType::F8E4M3,
        scale_format: ScaleFormat::F32,
    };
    check_quantized(&v3, e4m3, 1.0);
    // Two groups per head's row, power-of-2 scales, E5M2, large values; grouped heads, not
    // causal, keys past a tile's end.
    let wide = FlashAttention {
        dims: dims([2, 70, 90, 4, 2, 32], [2, 64]),
        causal: false,
        ..gqa(70, 90, false)
    };
    let ue8m0 = QuantSpec {
        tile: 32,
        format: DType::F8E5M2,
        scale_format: ScaleFormat::Ue8m0,
    };
    check_quantized(&wide, ue8m0, 300.0);
}
