//! The Hopper form of fused attention (sm_90a, FlashAttention-3's products): the block's four
//! warps are one warpgroup, and both products are `wgmma.mma_async` BF16 with f32 sums.
//! - `S = Q·Kᵀ`: `m64n64k16`, A = Q's fragments from registers (the m16k16 A layout of each
//!   warp's 16 rows, as in the `mma.sync` form), B = the K tile, K-major (score dims contiguous
//!   per key) in 128-byte-swizzled panels of 64 dims;
//! - `O += P·V`: `m64nDk16` (D = the value dims), A = the BF16 probabilities from registers,
//!   B = the V tile MN-major (value dims contiguous per key: the `[keys, dims]` layout it has in
//!   memory, no transpose) in 128-byte-swizzled panels of 64 dims, `imm-trans-b = 1`.
//!
//! Both tiles are staged as rows of 128 bytes (row `r` at `128·r` of its panel, 16-byte chunk
//! `c` at `c ^ (r mod 8)`, panels of 64 rows 8 KiB apart, 1024-byte aligned), the layout of
//! PTX ISA's canonical swizzled layouts: K-major `((8,m),(T,2k)):((8T,SBO),(1,T))` with SBO
//! 1024 (the next 8 keys) and each k-step of 16 dims 32 bytes further (a new panel every 4);
//! MN-major `((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))` with LBO 8 KiB (the next 64 value dims) and
//! SBO 1024 (the next 8 keys), each k-step of 16 keys 2048 bytes further. Each chain of wgmmas
//! starts with `wgmma.fence` and ends with `commit_group` + `wait_group 0` taking the
//! accumulators as operands, so nothing reads them before the wait.

use melior::dialect::llvm;
use melior::ir::Value;
use melior::ir::attribute::DenseI64ArrayAttribute;

use super::flash_attention::{FlashAttention, KV_TILE};
use crate::error::CodegenError;
use crate::mlir::emit::{Emit, Emitted};

/// Bytes of a swizzle row (64 BF16 elements).
const ROW_BYTES: u64 = 128;
/// One panel: a tile's 64 rows of one 64-element column group.
pub const PANEL_BYTES: u64 = KV_TILE * ROW_BYTES;
/// The swizzle atom (8 rows of 128 bytes) and the alignment it needs.
pub const ATOM: u64 = 1024;

/// Panels of a tile whose rows have `elements` BF16 elements.
pub fn panels(elements: u64) -> u64 {
    elements.div_ceil(64)
}

/// Bytes of the K tile (the score dims padded to 16).
pub fn k_tile_bytes(spec: &FlashAttention) -> u64 {
    PANEL_BYTES * panels(spec.qk_padded())
}

/// Shared bytes: room to align, the K tile and the V tile.
pub fn shared_bytes(spec: &FlashAttention) -> u64 {
    ATOM + k_tile_bytes(spec) + PANEL_BYTES * panels(spec.v_dim())
}

/// The shared address of 16-byte chunk `c` (an index) of row `r` (an index) of a swizzled
/// tile at `tile` (an `i32`).
pub fn place<'c, 'a>(
    e: &Emit<'c, 'a>,
    tile: Value<'c, '_>,
    r: Value<'c, '_>,
    c: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let i32_type = e.int_type(32);
    let r = e.index_cast(r, i32_type)?;
    let c = e.index_cast(c, i32_type)?;
    let panel = e.shrui(c, e.int(32, 3)?)?;
    let panel = e.muli(panel, e.int(32, PANEL_BYTES as i64)?)?;
    let seven = e.int(32, 7)?;
    let chunk = e.andi(c, seven)?;
    let phase = e.andi(r, seven)?;
    let chunk = e.xori(chunk, phase)?;
    let chunk = e.shli(chunk, e.int(32, 4)?)?;
    let row = e.shli(r, e.int(32, 7)?)?;
    let at = e.addi(tile, panel)?;
    let at = e.addi(at, row)?;
    e.addi(at, chunk)
}

/// `S = Q·Kᵀ` for the tile: the 8 key octets × 4 registers of each thread, f32.
pub fn scores<'c, 'a>(
    e: &Emit<'c, 'a>,
    q_frags: &[[Value<'c, 'a>; 4]],
    k_tile: Value<'c, '_>,
) -> Result<Vec<[Value<'c, 'a>; 4]>, CodegenError> {
    let mut d: Option<Vec<Value>> = None;
    for (step, a) in q_frags.iter().enumerate() {
        let step = step as u64;
        let offset = (step / 4) * PANEL_BYTES + (step % 4) * 32;
        let start = e.addi(k_tile, e.int(32, offset as i64)?)?;
        let b = descriptor(e, start, 0, ATOM)?;
        d = Some(wgmma(
            e,
            KV_TILE,
            AOperand::Registers(*a),
            b,
            d.as_deref(),
            false,
        )?);
    }
    let d = wait(e, &d.expect("at least one score k-step"))?;
    Ok(d.chunks(4).map(|r| [r[0], r[1], r[2], r[3]]).collect())
}

/// `O += P·V` for the tile: `p` the 4 key chunks' A registers, `o` the accumulators (value-dim
/// octets × 4 registers), already rescaled.
pub fn values<'c, 'a>(
    e: &Emit<'c, 'a>,
    spec: &FlashAttention,
    p: &[[Value<'c, 'a>; 4]],
    v_tile: Value<'c, '_>,
    o: &[[Value<'c, 'a>; 4]],
) -> Result<Vec<[Value<'c, 'a>; 4]>, CodegenError> {
    let mut d: Vec<Value> = o.iter().flatten().copied().collect();
    for (step, a) in p.iter().enumerate() {
        let offset = step as u64 * 2 * ATOM;
        let start = e.addi(v_tile, e.int(32, offset as i64)?)?;
        let b = descriptor(e, start, PANEL_BYTES, ATOM)?;
        d = wgmma(e, spec.v_dim(), AOperand::Registers(*a), b, Some(&d), true)?;
    }
    let d = wait(e, &d)?;
    Ok(d.chunks(4).map(|r| [r[0], r[1], r[2], r[3]]).collect())
}

/// The descriptor of a K-major 128-byte-swizzled tile at shared address `start` (8-row atoms
/// [`ATOM`] bytes apart).
pub fn k_major_descriptor<'c, 'a>(e: &Emit<'c, 'a>, start: Value<'c, '_>) -> Emitted<'c, 'a> {
    descriptor(e, start, 0, ATOM)
}

/// One `wgmma.mma_async m64nNk16.f32.bf16.bf16` with both operands from shared memory
/// (K-major descriptors), adding to `d` (its registers in and out), `wgmma.fence` first.
pub fn wgmma_ss<'c, 'a>(
    e: &Emit<'c, 'a>,
    n: u64,
    a: Value<'c, 'a>,
    b: Value<'c, 'a>,
    d: &[Value<'c, 'a>],
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    wgmma(e, n, AOperand::Descriptor(a), b, Some(d), false)
}

/// The descriptor of a 128-byte-swizzled tile at shared address `start`:
/// `(start >> 4) | (lbo >> 4) << 16 | (sbo >> 4) << 32 | 1 << 62`.
fn descriptor<'c, 'a>(
    e: &Emit<'c, 'a>,
    start: Value<'c, '_>,
    lbo: u64,
    sbo: u64,
) -> Emitted<'c, 'a> {
    let i64_type = e.int_type(64);
    let start = e.extui(start, i64_type)?;
    let start = e.shrui(start, e.int(64, 4)?)?;
    let start = e.andi(start, e.int(64, 0x3FFF)?)?;
    let fixed = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 | 1 << 62;
    e.ori(start, e.int(64, fixed as i64)?)
}

/// Where a wgmma's A comes from.
enum AOperand<'c, 'a> {
    /// The four registers of the m16k16 A fragment of each warp's rows.
    Registers([Value<'c, 'a>; 4]),
    /// A K-major shared-memory tile's descriptor.
    Descriptor(Value<'c, 'a>),
}

/// One `wgmma.mma_async m64nNk16.f32.bf16.bf16`: into a fresh accumulator (`d` is `None`:
/// scale-d 0, no register inputs) or adding to `d`, `wgmma.fence` first (the accumulator or
/// the A registers were just written by other instructions). `trans_b` reads B MN-major.
fn wgmma<'c, 'a>(
    e: &Emit<'c, 'a>,
    n: u64,
    a: AOperand<'c, 'a>,
    b: Value<'c, 'a>,
    d: Option<&[Value<'c, 'a>]>,
    trans_b: bool,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let n_regs = (n / 2) as usize;
    let regs: Vec<String> = (0..n_regs).map(|i| format!("${i}")).collect();
    let inputs = if d.is_some() { n_regs } else { 0 };
    let scale_d = if d.is_some() { "1" } else { "0" };
    let a_at = n_regs + inputs;
    let trans_b = u8::from(trans_b);
    let mut operands: Vec<Value> = d.map(<[_]>::to_vec).unwrap_or_default();
    let mut constraints: Vec<String> = (0..n_regs).map(|_| "=f".to_string()).collect();
    constraints.extend((0..inputs).map(|i| i.to_string()));
    // The A operand, B, and the immediates after scale-d (a descriptor A takes imm-trans-a).
    let (a_text, b_at, immediates) = match a {
        AOperand::Registers(regs) => {
            operands.extend(regs);
            constraints.extend(["r", "r", "r", "r"].map(String::from));
            let text = (0..4).map(|i| format!("${}", a_at + i)).collect::<Vec<_>>();
            (
                format!("{{{}}}", text.join(", ")),
                a_at + 4,
                format!("1, 1, {trans_b}"),
            )
        }
        AOperand::Descriptor(desc) => {
            operands.push(desc);
            constraints.push("l".into());
            (format!("${a_at}"), a_at + 1, format!("1, 1, 0, {trans_b}"))
        }
    };
    operands.push(b);
    constraints.push("l".into());
    let asm = format!(
        "{{\n\t.reg .pred p;\n\tsetp.ne.b32 p, {scale_d}, 0;\n\twgmma.fence.sync.aligned;\n\t\
         wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {{{regs}}}, {a_text}, ${b_at}, p, {immediates};\n\t}}",
        regs = regs.join(", "),
    );
    results(e, &asm, &constraints.join(","), &operands, n_regs)
}

/// `commit_group` and `wait_group 0`, the accumulators passing through (so that every read of
/// them comes after the wait).
pub fn wait<'c, 'a>(
    e: &Emit<'c, 'a>,
    d: &[Value<'c, 'a>],
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let n = d.len();
    let mut constraints: Vec<String> = (0..n).map(|_| "=f".to_string()).collect();
    constraints.extend((0..n).map(|i| i.to_string()));
    results(
        e,
        "wgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;",
        &constraints.join(","),
        d,
        n,
    )
}

/// The `count` f32 results of an inline-asm block.
fn results<'c, 'a>(
    e: &Emit<'c, 'a>,
    asm: &str,
    constraints: &str,
    operands: &[Value<'c, 'a>],
    count: usize,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    let f32_type = e.f32_type();
    let result = llvm::r#type::r#struct(e.context, &vec![f32_type; count], false);
    let out = e.push(e.inline_asm_op(asm, constraints, operands, &[result])?)?;
    (0..count)
        .map(|i| {
            let position = DenseI64ArrayAttribute::new(e.context, &[i as i64]);
            e.push(llvm::extract_value(
                e.context, out, position, f32_type, e.location,
            ))
        })
        .collect()
}
