//! 16-byte global loads and stores of f32 and bf16 elements, for the memory-bound training
//! kernels (the optimizer, the global norm): `ld.global.v4.u32` / `st.global.v4.u32` as inline
//! PTX at the buffer's address (MLIR 22 emits vector accesses only for vector memrefs, and the
//! kernels take flat scalar buffers), unpacked to f32 and packed back (bf16 pairs with
//! `cvt.rn.bf16x2.f32`, nearest even, as every bf16 store rounds).
//!
//! The accesses need 16-byte aligned addresses: every buffer starts at a multiple of 256 bytes
//! (the arena's offsets, cudaMalloc's and the emulator's allocations), and the kernels only
//! access whole 16-byte chunks from its start this way (the ragged tail element by element).

use dsc_ir::DType;
use melior::dialect::llvm;
use melior::ir::Value;
use melior::ir::attribute::DenseI64ArrayAttribute;

use super::vector_access::pack_bf16x2;
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};

/// Elements of `dtype` in one 16-byte access.
pub fn per_access(dtype: DType) -> u64 {
    16 / dtype.size_bytes()
}

/// Elements each thread of a kernel over buffers of `dtypes` handles per step: one 16-byte
/// access of the narrowest (and so one or more of the wider ones).
pub fn elements_per_thread(dtypes: &[DType]) -> u64 {
    dtypes.iter().map(|&d| per_access(d)).max().unwrap_or(4)
}

/// The byte address (an `i64`) of element `index` (an `index`) of the f32/bf16 buffer `buffer`.
pub fn element_address<'c, 'a>(
    e: &Emit<'c, 'a>,
    buffer: Value<'c, '_>,
    dtype: DType,
    index: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let base = e.address_of(buffer)?;
    let i64_type = e.int_type(64);
    let index = e.index_cast(index, i64_type)?;
    let size = e.int(64, dtype.size_bytes() as i64)?;
    let offset = e.muli(index, size)?;
    e.addi(base, offset)
}

/// The four words at the 16-byte aligned global address `address` (an `i64`).
pub fn load_words<'c, 'a>(
    e: &Emit<'c, 'a>,
    address: Value<'c, '_>,
) -> Result<[Value<'c, 'a>; 4], CodegenError> {
    let i32_type = e.int_type(32);
    let words = e.push(e.inline_asm_op(
        "ld.global.v4.u32 {$0, $1, $2, $3}, [$4];",
        "=r,=r,=r,=r,l",
        &[address],
        &[llvm::r#type::r#struct(e.context, &[i32_type; 4], false)],
    )?)?;
    let word = |i: i64| -> Emitted<'c, 'a> {
        let position = DenseI64ArrayAttribute::new(e.context, &[i]);
        e.push(llvm::extract_value(
            e.context, words, position, i32_type, e.location,
        ))
    };
    Ok([word(0)?, word(1)?, word(2)?, word(3)?])
}

/// Stores four words at the 16-byte aligned global address `address` (an `i64`).
pub fn store_words<'c>(
    e: &Emit<'c, '_>,
    address: Value<'c, '_>,
    words: &[Value<'c, '_>],
) -> Result<(), CodegenError> {
    e.push_void(e.inline_asm_op(
        "st.global.v4.u32 [$0], {$1, $2, $3, $4};",
        "l,r,r,r,r",
        &[address, words[0], words[1], words[2], words[3]],
        &[],
    )?);
    Ok(())
}

/// `x` (an f32) rounded to bf16, nearest even, as an f32 (the low half zero), computed on the
/// bits: `(bits + 0x7fff + lsb) & 0xffff_0000`, NaN kept. The same value as `cvt.rn.bf16.f32`,
/// which the update kernels avoid for values that need rounding: the emulator's conversion
/// goes through the `half` crate's f64 → bf16, which drops the lowest three bits of an f32's
/// mantissa before the sticky test and so rounds a near-tie (round bit set, the only other set
/// bits among the lowest three) down; a kernel whose results are compared bit for bit rounds
/// with integer operations, which every executor computes alike.
pub fn round_bf16<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, 'a>) -> Emitted<'c, 'a> {
    let i32_type = e.int_type(32);
    let bits = e.bitcast(x, i32_type)?;
    let sixteen = e.int(32, 16)?;
    let one = e.int(32, 1)?;
    let lsb = e.shrui(bits, sixteen)?;
    let lsb = e.andi(lsb, one)?;
    let bias = e.int(32, 0x7fff)?;
    let rounded = e.addi(bits, bias)?;
    let rounded = e.addi(rounded, lsb)?;
    let mask = e.int(32, 0xffff_0000u32 as i32 as i64)?;
    let rounded = e.andi(rounded, mask)?;
    let rounded = e.bitcast(rounded, e.f32_type())?;
    let is_nan = e.cmpf(melior::dialect::arith::CmpfPredicate::Uno, x, x)?;
    e.select(is_nan, x, rounded)
}

/// `count` elements from the 16-byte aligned address `address` (an `i64`) of a buffer of
/// `dtype` (f32 or bf16), widened to f32 (exactly), with `count · size / 16` accesses.
pub fn load_f32s<'c, 'a>(
    e: &Emit<'c, 'a>,
    address: Value<'c, '_>,
    dtype: DType,
    count: u64,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let mut values = Vec::with_capacity(count as usize);
    for access in 0..count / per_access(dtype) {
        let offset = e.int(64, 16 * access as i64)?;
        let at = e.addi(address, offset)?;
        widen_words(e, &load_words(e, at)?, dtype, &mut values)?;
    }
    Ok(values)
}

/// Appends the f32 (or bf16) elements packed in `words` to `values`, widened to f32 (exactly).
pub fn widen_words<'c, 'a>(
    e: &Emit<'c, 'a>,
    words: &[Value<'c, 'a>],
    dtype: DType,
    values: &mut Vec<Value<'c, 'a>>,
) -> Result<(), CodegenError> {
    let f32_type = e.f32_type();
    for &word in words {
        match dtype {
            DType::Bf16 => {
                // bf16 is the high half of an f32: element 2i in the low half of the word.
                let sixteen = e.int(32, 16)?;
                let low = e.shli(word, sixteen)?;
                values.push(e.bitcast(low, f32_type)?);
                let mask = e.int(32, 0xffff_0000u32 as i32 as i64)?;
                let high = e.andi(word, mask)?;
                values.push(e.bitcast(high, f32_type)?);
            }
            _ => values.push(e.bitcast(word, f32_type)?),
        }
    }
    Ok(())
}

/// Stores `values` (f32) rounded to `dtype` (f32 or bf16) at the 16-byte aligned address
/// `address` (an `i64`), with `len · size / 16` accesses.
pub fn store_f32s<'c>(
    e: &Emit<'c, '_>,
    values: &[Value<'c, '_>],
    address: Value<'c, '_>,
    dtype: DType,
) -> Result<(), CodegenError> {
    let i32_type = e.int_type(32);
    let words: Vec<Value> = match dtype {
        DType::Bf16 => values
            .chunks(2)
            .map(|pair| pack_bf16x2(e, pair[0], pair[1]))
            .collect::<Result<_, _>>()?,
        _ => values
            .iter()
            .map(|&v| e.bitcast(v, i32_type))
            .collect::<Result<_, _>>()?,
    };
    for (access, chunk) in words.chunks(4).enumerate() {
        let offset = e.int(64, 16 * access as i64)?;
        let at = e.addi(address, offset)?;
        store_words(e, at, chunk)?;
    }
    Ok(())
}
