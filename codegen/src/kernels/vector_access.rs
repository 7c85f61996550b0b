//! The 16-byte and 32-bit memory accesses the tiled kernels stage shared memory with, as inline
//! PTX (MLIR 22 emits vector loads only for aligned vector memrefs, and the kernels take flat
//! scalar buffers): a predicated `ld.global.v4.u32` that reads zeros when off, `st.shared.v4`,
//! 32/16-bit shared loads and stores at 32-bit shared addresses, and 4/8-byte global stores.

use melior::dialect::llvm;
use melior::ir::attribute::DenseI64ArrayAttribute;
use melior::ir::{Value, ValueLike};

use dsc_ir::DType;

use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};

/// The four words at global address `address` (an `i64`) when `ok` (an `i1`), else zeros.
pub fn global_load_v4<'c, 'a>(
    e: &Emit<'c, 'a>,
    address: Value<'c, '_>,
    ok: Value<'c, '_>,
) -> Result<[Value<'c, 'a>; 4], CodegenError> {
    let words = global_load_if(e, address, ok, 4)?;
    Ok([words[0], words[1], words[2], words[3]])
}

/// `n` (1, 2 or 4) words at the naturally aligned global address `address` (an `i64`) when `ok`
/// (an `i1`), else zeros: `ld.global.u32`, `.v2.u32` or `.v4.u32` under a predicate.
pub fn global_load_if<'c, 'a>(
    e: &Emit<'c, 'a>,
    address: Value<'c, '_>,
    ok: Value<'c, '_>,
    n: u64,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let (vector, registers) = match n {
        1 => ("u32", "$0"),
        2 => ("v2.u32", "{$0, $1}"),
        4 => ("v4.u32", "{$0, $1, $2, $3}"),
        n => {
            return Err(CodegenError::InvalidKernel {
                kernel: "global_load_if".into(),
                message: format!("{n} words: one, two or four only"),
            });
        }
    };
    let zeros: String = (0..n).map(|r| format!("mov.b32 ${r}, 0;\n\t")).collect();
    let asm = format!(
        "{{\n\t.reg .pred p;\n\tsetp.ne.b32 p, ${ok}, 0;\n\t{zeros}\
         @p ld.global.{vector} {registers}, [${address}];\n\t}}",
        ok = n + 1,
        address = n,
    );
    let constraints = format!("{}l,r", "=r,".repeat(n as usize));
    let i32_type = e.int_type(32);
    let ok = e.extui(ok, i32_type)?;
    if n == 1 {
        return Ok(vec![e.inline_asm(
            &asm,
            &constraints,
            &[address, ok],
            i32_type,
        )?]);
    }
    let words = e.push(e.inline_asm_op(
        &asm,
        &constraints,
        &[address, ok],
        &[llvm::r#type::r#struct(
            e.context,
            &vec![i32_type; n as usize],
            false,
        )],
    )?)?;
    (0..n as i64)
        .map(|i| {
            let position = DenseI64ArrayAttribute::new(e.context, &[i]);
            e.push(llvm::extract_value(
                e.context, words, position, i32_type, e.location,
            ))
        })
        .collect()
}

/// Stores `values` (one `i16`, or one, two or four `i32`s) at the naturally aligned global
/// address `address` (an `i64`) where `ok` (an `i1`) holds: `st.global.b16`, `.b32`, `.v2.b32` or
/// `.v4.b32`,
/// predicated rather than branched around (a divergent branch inside a loop would leave the
/// warp to reconverge around the loop).
pub fn global_store_if<'c>(
    e: &Emit<'c, '_>,
    ok: Value<'c, '_>,
    address: Value<'c, '_>,
    values: &[Value<'c, '_>],
) -> Result<(), CodegenError> {
    let sixteen_bits = values.len() == 1 && values[0].r#type() == e.int_type(16);
    let (store, constraints) = match values.len() {
        1 if sixteen_bits => ("st.global.b16 [$0], $1;", "l,h,r"),
        1 => ("st.global.b32 [$0], $1;", "l,r,r"),
        2 => ("st.global.v2.b32 [$0], {$1, $2};", "l,r,r,r"),
        4 => ("st.global.v4.b32 [$0], {$1, $2, $3, $4};", "l,r,r,r,r,r"),
        n => {
            return Err(CodegenError::InvalidKernel {
                kernel: "global_store_if".into(),
                message: format!("{n} values: one, two or four only"),
            });
        }
    };
    let ok = e.extui(ok, e.int_type(32))?;
    let asm = format!(
        "{{\n\t.reg .pred p;\n\tsetp.ne.b32 p, ${}, 0;\n\t@p {store}\n\t}}",
        values.len() + 1
    );
    let mut operands = vec![address];
    operands.extend_from_slice(values);
    operands.push(ok);
    e.push_void(e.inline_asm_op(&asm, constraints, &operands, &[])?);
    Ok(())
}

/// What an epilogue stores for `value` (an f32) in `dtype` (bf16 or f32), with `next`, the
/// adjacent column's value, when two columns go out together: bf16 as one packed word (pair) or
/// a rounded `i16`, f32 as two words (pair) or one.
pub fn output_words<'c, 'a>(
    e: &Emit<'c, 'a>,
    dtype: DType,
    value: Value<'c, 'a>,
    next: Option<Value<'c, 'a>>,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let word = |v: Value<'c, 'a>| e.bitcast(v, e.int_type(32));
    Ok(match (dtype, next) {
        (DType::Bf16, Some(next)) => vec![pack_bf16x2(e, value, next)?],
        (DType::Bf16, None) => {
            let rounded = e.round_to(value, DType::Bf16)?;
            vec![e.bitcast(rounded, e.int_type(16))?]
        }
        (_, Some(next)) => vec![word(value)?, word(next)?],
        (_, None) => vec![word(value)?],
    })
}

/// Stores four words at the 16-byte aligned shared address `place` (an `i32`).
pub fn shared_store_v4<'c>(
    e: &Emit<'c, '_>,
    place: Value<'c, '_>,
    words: [Value<'c, '_>; 4],
) -> Result<(), CodegenError> {
    e.push_void(e.inline_asm_op(
        "st.shared.v4.u32 [$0], {$1, $2, $3, $4};",
        "r,r,r,r,r",
        &[place, words[0], words[1], words[2], words[3]],
        &[],
    )?);
    Ok(())
}

/// Stores `word` at the 4-byte aligned shared address `place` (an `i32`).
pub fn shared_store_u32<'c>(
    e: &Emit<'c, '_>,
    place: Value<'c, '_>,
    word: Value<'c, '_>,
) -> Result<(), CodegenError> {
    e.push_void(e.inline_asm_op("st.shared.u32 [$0], $1;", "r,r", &[place, word], &[])?);
    Ok(())
}

/// The word at the 4-byte aligned shared address `place + offset` (`place` an `i32`; the
/// constant offset goes into the instruction, so a loop of loads needs one base register).
pub fn shared_load_u32<'c, 'a>(
    e: &Emit<'c, 'a>,
    place: Value<'c, '_>,
    offset: u64,
) -> Emitted<'c, 'a> {
    e.inline_asm(
        &format!("ld.shared.u32 $0, [$1+{offset}];"),
        "=r,r",
        &[place],
        e.int_type(32),
    )
}

/// The 16-bit values at shared addresses `place + low` and `place + high` packed into one
/// word (`low`'s in the low half): a B fragment register gathered across rows of a row-major
/// tile.
pub fn shared_load_u16_pair<'c, 'a>(
    e: &Emit<'c, 'a>,
    place: Value<'c, '_>,
    low: u64,
    high: u64,
) -> Emitted<'c, 'a> {
    e.inline_asm(
        &format!(
            "{{\n\t.reg .b32 lo, hi;\n\tld.shared.u16 lo, [$1+{low}];\n\t\
             ld.shared.u16 hi, [$1+{high}];\n\tshl.b32 hi, hi, 16;\n\tor.b32 $0, lo, hi;\n\t}}"
        ),
        "=r,r",
        &[place],
        e.int_type(32),
    )
}

/// Two f32 rounded to bf16 (nearest even) and packed into one word, `low` in the low half: the
/// register form of a bf16 A fragment.
pub fn pack_bf16x2<'c, 'a>(
    e: &Emit<'c, 'a>,
    low: Value<'c, '_>,
    high: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    e.inline_asm(
        "cvt.rn.bf16x2.f32 $0, $1, $2;",
        "=r,f,f",
        &[high, low],
        e.int_type(32),
    )
}
