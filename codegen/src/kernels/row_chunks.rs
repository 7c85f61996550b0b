//! 16-byte chunks for the memory-bound row kernels (`quantize`, `swiglu_quant`, `rms_norm`,
//! `rms_norm_quant`): a thread holds `per_chunk` consecutive elements of a row in registers,
//! read with one predicated 16-byte load per input, and a 1 × tile quantization group is
//! `lanes` consecutive threads of a warp (a power of two, so the group is aligned in the warp)
//! that reduce its amax with shuffles. Element by element, the arithmetic is the scalar
//! kernels' (the same roundings, amax, scale and true division), so codes and scales are the
//! same bits; only the loads, the stores and the order of the amax's maxima (exact) change.
//!
//! Every access is predicated, never branched around: a chunk past the row's end (or a thread
//! past the last group) loads zeros and stores nothing, and the whole warp reaches every
//! shuffle. Chunks are whole: the layout exists only when the row width (and the group width)
//! is a multiple of a chunk, which also makes every address 16-byte aligned (buffers start at
//! multiples of 256 bytes). Otherwise the kernels keep their scalar forms.

use dsc_ir::DType;
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;

use super::quantize::QuantSpec;
use super::vector_access::{global_load_if, global_store_if, pack_bf16x2};
use super::wide_access::{element_address, widen_words};
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted, Reduction};

/// How a row splits into 16-byte chunks, and a quantization group into threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowChunks {
    /// Elements per chunk: 16 bytes of the input dtype.
    pub per_chunk: u64,
    /// Threads per quantization group (1 when the kernel does not quantize).
    pub lanes: u64,
}

impl RowChunks {
    /// The layout for rows of `dim` elements of `dtype` (f32 or bf16), if they split into
    /// whole chunks.
    pub fn for_rows(dim: u64, dtype: DType) -> Option<Self> {
        let per_chunk = match dtype {
            DType::F32 | DType::Bf16 => 16 / dtype.size_bytes(),
            _ => return None,
        };
        (dim > 0 && dim.is_multiple_of(per_chunk)).then_some(Self {
            per_chunk,
            lanes: 1,
        })
    }

    /// The layout for rows of `dim` elements of `dtype` quantized as `quant` says, if rows and
    /// groups split into whole chunks and a group is a power of two of at most 32 threads.
    pub fn for_groups(dim: u64, dtype: DType, quant: &QuantSpec) -> Option<Self> {
        let rows = Self::for_rows(dim, dtype)?;
        let lanes = quant.tile / rows.per_chunk;
        (quant.tile.is_multiple_of(rows.per_chunk) && lanes.is_power_of_two() && lanes <= 32)
            .then_some(Self { lanes, ..rows })
    }

    /// Chunks in a row of `dim`.
    pub fn per_row(&self, dim: u64) -> u64 {
        dim / self.per_chunk
    }
}

/// `count` elements of `buffer` (of `dtype`, f32 or bf16) from element `first` (an `index`),
/// widened to f32, or zeros where `ok` (an `i1`) is false: 16-byte loads (8 bytes for four
/// bf16). `first · size` must be a multiple of the access.
pub fn load_elements<'c, 'a>(
    e: &Emit<'c, 'a>,
    buffer: Value<'c, '_>,
    dtype: DType,
    first: Value<'c, '_>,
    count: u64,
    ok: Value<'c, '_>,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let address = element_address(e, buffer, dtype, first)?;
    let words = (count * dtype.size_bytes()) / 4;
    let mut values = Vec::with_capacity(count as usize);
    for access in 0..words.div_ceil(4) {
        let at = e.addi(address, e.int(64, 16 * access as i64)?)?;
        let loaded = global_load_if(e, at, ok, (words - 4 * access).min(4))?;
        widen_words(e, &loaded, dtype, &mut values)?;
    }
    Ok(values)
}

/// Stores `values` (f32) rounded to `dtype` (f32 or bf16) into `buffer` from element `first`,
/// where `ok` holds: bf16 as packed pairs, in stores of up to 16 bytes.
pub fn store_elements<'c>(
    e: &Emit<'c, '_>,
    values: &[Value<'c, '_>],
    buffer: Value<'c, '_>,
    dtype: DType,
    first: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let words: Vec<Value> = match dtype {
        DType::Bf16 => values
            .chunks(2)
            .map(|pair| pack_bf16x2(e, pair[0], pair[1]))
            .collect::<Result<_, _>>()?,
        _ => values
            .iter()
            .map(|&v| e.bitcast(v, e.int_type(32)))
            .collect::<Result<_, _>>()?,
    };
    let address = element_address(e, buffer, dtype, first)?;
    for (access, chunk) in words.chunks(4).enumerate() {
        let at = e.addi(address, e.int(64, 16 * access as i64)?)?;
        global_store_if(e, ok, at, chunk)?;
    }
    Ok(())
}

/// Quantizes one chunk of a group (`values`, zeros where the chunk is off the row): the group's
/// amax over its `chunks.lanes` threads, its scale (stored by the group's first thread at
/// `scale_at` in `scales`, where `ok`), then the codes (stored at element `first` of `codes`,
/// where `ok`). `lane` is the thread's place in its group.
#[allow(clippy::too_many_arguments)]
pub fn quantize_chunk<'c, 'a>(
    e: &Emit<'c, 'a>,
    quant: &QuantSpec,
    chunks: RowChunks,
    values: &[Value<'c, 'a>],
    lane: Value<'c, '_>,
    ok: Value<'c, '_>,
    first: Value<'c, '_>,
    scale_at: Value<'c, '_>,
    codes: Value<'c, '_>,
    scales: Value<'c, '_>,
) -> Result<(), CodegenError> {
    let mut amax = e.f32(0.0)?;
    for &v in values {
        let magnitude = e.absf(v)?;
        amax = e.max_skip_nan(amax, magnitude)?;
    }
    // Lanes of other groups are never combined: xor with offsets below `lanes` stays inside
    // an aligned group of `lanes` threads.
    let mut offset = chunks.lanes / 2;
    while offset > 0 {
        let other = e.shuffle_xor(amax, offset as u32)?;
        amax = e.combine(Reduction::Max, amax, other)?;
        offset /= 2;
    }
    let s = e.scale_for(amax, quant.format, quant.scale_format)?;

    let zero = e.index(0)?;
    let leads = e.cmpi(CmpiPredicate::Eq, lane, zero)?;
    let stores_scale = e.andi(leads, ok)?;
    let scale_address = element_address(e, scales, DType::F32, scale_at)?;
    let s_word = e.bitcast(s, e.int_type(32))?;
    global_store_if(e, stores_scale, scale_address, &[s_word])?;

    // Two codes per conversion; element 2i in the low byte, as memory holds it.
    let mut pairs = Vec::new();
    for pair in values.chunks(2) {
        let low = e.divf(pair[0], s)?;
        let high = e.divf(pair[1], s)?;
        pairs.push(encode_fp8_pair(e, low, high, quant.format)?);
    }
    let i32_type = e.int_type(32);
    let sixteen = e.int(32, 16)?;
    let mut words = Vec::new();
    for two in pairs.chunks(2) {
        let low = e.extui(two[0], i32_type)?;
        let high = e.extui(two[1], i32_type)?;
        let high = e.shli(high, sixteen)?;
        words.push(e.ori(low, high)?);
    }
    let address = element_address(e, codes, quant.format, first)?;
    global_store_if(e, ok, address, &words)
}

/// The FP8 codes of `low` and `high` (f32) in one `i16`, `low`'s in the low byte: one
/// `cvt.rn.satfinite.{e4m3,e5m2}x2.f32` (the first source goes to the high byte).
fn encode_fp8_pair<'c, 'a>(
    e: &Emit<'c, 'a>,
    low: Value<'c, '_>,
    high: Value<'c, '_>,
    format: DType,
) -> Emitted<'c, 'a> {
    let instruction = match format {
        DType::F8E5M2 => "cvt.rn.satfinite.e5m2x2.f32 $0, $1, $2;",
        _ => "cvt.rn.satfinite.e4m3x2.f32 $0, $1, $2;",
    };
    e.inline_asm(instruction, "=h,f,f", &[high, low], e.int_type(16))
}
