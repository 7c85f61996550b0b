//! A deterministic sum over every block of a grid in one launch (the global gradient norm, the
//! mean loss): each block reduces its threads' f64 values in a fixed tree in shared memory and
//! publishes the total in its slot of a module-scope scratch buffer, then counts itself in with
//! an atomic; the block that arrives last sums the slots in slot order (the same tree whichever
//! block that is) and resets the counter for the next launch. The result depends only on the
//! grid's shape, never on the order blocks run in.
//!
//! The scratch is a `.global` variable of the kernel's module, named after its entry: the
//! arrival counter (a `u32`) in bytes 0..4, then one 8-byte slot per block from byte
//! [`SLOTS_AT`]. It is zero when the module loads and zero again after every complete launch;
//! launches of one entry must not overlap (dsc runs its launches in order on one stream).
//! Kernels of one block need no scratch and declare none.

use melior::dialect::arith::CmpiPredicate;
use melior::ir::operation::{OperationBuilder, OperationLike};
use melior::ir::r#type::MemRefType;
use melior::ir::{Attribute, BlockLike, Identifier, Module, RegionLike, Type, Value};

use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// Threads per block of the kernels that use it (a power of two).
pub const THREADS: u32 = 256;
/// Byte offset of the first slot (the counter's word, padded for 16-byte aligned slots).
pub const SLOTS_AT: u64 = 16;

/// The f64 `value`, moved into a register from its bit pattern as an integer (`mov.b64 d,
/// <bits>`): written as a float, LLVM prints a constant that is not an instruction's immediate
/// as `mov.b64 %rd, 0d…`, which the emulator reads as an f32 literal (widening 0.9 to
/// 0.8999999761…); as an integer it reads the same bits a GPU does. (A register costs nothing
/// here: the f64 work is a few scalars per block or one accumulator per thread.)
pub(crate) fn f64_const<'c, 'a>(e: &Emit<'c, 'a>, value: f64) -> Emitted<'c, 'a> {
    if value.is_sign_negative() {
        // Bit patterns below 2^63 only: a decimal literal of any width reads the same.
        let magnitude = f64_const(e, -value)?;
        return e.negf(magnitude);
    }
    e.inline_asm(
        &format!("mov.b64 $0, {};", value.to_bits()),
        "=d",
        &[],
        Type::float64(e.context),
    )
}

/// The shared-memory buffers [`block_sum_f64`] and [`arrive`] use: `THREADS` f64 values and
/// one `i32` flag, in this order.
pub(crate) fn shared_types(context: &melior::Context) -> Vec<Type<'_>> {
    let workgroup = Attribute::parse(context, "#gpu.address_space<workgroup>");
    vec![
        MemRefType::new(
            Type::float64(context),
            &[i64::from(THREADS)],
            None,
            workgroup,
        )
        .into(),
        MemRefType::new(
            melior::ir::r#type::IntegerType::new(context, 32).into(),
            &[1],
            None,
            workgroup,
        )
        .into(),
    ]
}

/// `own` (an f64) summed over the block's [`THREADS`] threads, the same in every thread:
/// halving trees in `shared` (`THREADS` f64), thread `t` adding `t + s` into `t`, so the order
/// of the additions is fixed.
pub(crate) fn block_sum_f64<'c, 'a>(
    e: &Emit<'c, 'a>,
    own: Value<'c, '_>,
    tid: Value<'c, '_>,
    shared: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    e.store(own, shared, tid);
    e.barrier();
    let mut s = THREADS / 2;
    while s > 0 {
        let half = e.index(i64::from(s))?;
        let active = e.lt(tid, half)?;
        e.if_then(active, |e| {
            let a = e.load(shared, tid)?;
            let other = e.addi(tid, half)?;
            let b = e.load(shared, other)?;
            let sum = e.addf(a, b)?;
            e.store(sum, shared, tid);
            Ok(())
        })?;
        e.barrier();
        s /= 2;
    }
    let zero = e.index(0)?;
    let total = e.load(shared, zero)?;
    // Every thread has read the total before the buffer is used again.
    e.barrier();
    Ok(total)
}

/// The module-scope scratch of one kernel (see the module docs).
pub(crate) struct GridScratch {
    name: String,
}

impl GridScratch {
    /// Declares the scratch of `entry` with `slots` slots in `module`.
    pub(crate) fn declare(
        module: &KernelModule<'_>,
        entry: &str,
        slots: u64,
    ) -> Result<GridScratch, CodegenError> {
        let name = format!("{entry}_grid_scratch");
        let bytes = SLOTS_AT + 8 * slots;
        let source = format!(
            "llvm.mlir.global internal @{name}() {{addr_space = 1 : i32, alignment = 16 : i64}} \
             : !llvm.array<{bytes} x i8> {{\n\
               %0 = llvm.mlir.zero : !llvm.array<{bytes} x i8>\n\
               llvm.return %0 : !llvm.array<{bytes} x i8>\n\
             }}"
        );
        let context = module.context();
        let invalid = |message: &str| CodegenError::InvalidKernel {
            kernel: entry.to_string(),
            message: message.to_string(),
        };
        let parsed =
            Module::parse(context, &source).ok_or_else(|| invalid("the scratch does not parse"))?;
        let global = parsed
            .body()
            .first_operation()
            .ok_or_else(|| invalid("the scratch module is empty"))?;
        let global = (*global).clone();
        let gpu_module_body = module
            .module()
            .body()
            .first_operation()
            .and_then(|gpu_module| gpu_module.region(0).ok())
            .and_then(|region| region.first_block())
            .ok_or_else(|| invalid("no gpu.module to hold the scratch"))?;
        gpu_module_body.append_operation(global);
        Ok(GridScratch { name })
    }

    /// The scratch's global address, an `i64`.
    pub(crate) fn address<'c, 'a>(&self, e: &Emit<'c, 'a>) -> Emitted<'c, 'a> {
        let context = e.context;
        let pointer = Type::parse(context, "!llvm.ptr<1>").expect("the pointer type parses");
        let symbol = Attribute::parse(context, &format!("@{}", self.name))
            .expect("a symbol reference parses");
        let at = e.push(
            OperationBuilder::new("llvm.mlir.addressof", e.location)
                .add_attributes(&[(Identifier::new(context, "global_name"), symbol)])
                .add_results(&[pointer])
                .build()?,
        )?;
        e.push(
            OperationBuilder::new("llvm.ptrtoint", e.location)
                .add_operands(&[at])
                .add_results(&[e.int_type(64)])
                .build()?,
        )
    }
}

/// `fence.acq_rel.gpu`: this thread's global writes before it are visible to the device before
/// its later ones (the CUDA `__threadfence()`).
pub(crate) fn fence(e: &Emit<'_, '_>) -> Result<(), CodegenError> {
    e.push_void(e.inline_asm_op("fence.acq_rel.gpu;", "", &[], &[])?);
    Ok(())
}

/// The address (an `i64`) of slot `slot` (an `index`) of the scratch at `scratch`.
fn slot_address<'c, 'a>(
    e: &Emit<'c, 'a>,
    scratch: Value<'c, '_>,
    slot: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let slot = e.index_cast(slot, e.int_type(64))?;
    let eight = e.int(64, 8)?;
    let offset = e.muli(slot, eight)?;
    let first = e.int(64, SLOTS_AT as i64)?;
    let offset = e.addi(offset, first)?;
    e.addi(scratch, offset)
}

/// Thread 0 stores `value` (an f64) in slot `slot` (an `index`) of the scratch at `scratch`
/// and counts the block in; returns, in every thread, whether this block was the last of
/// `blocks` to arrive (an `i1`, the same in the whole block). `flag` is the shared `i32`.
pub(crate) fn arrive<'c, 'a>(
    e: &Emit<'c, 'a>,
    scratch: Value<'c, '_>,
    slot: Value<'c, '_>,
    value: Value<'c, '_>,
    blocks: u64,
    tid: Value<'c, '_>,
    flag: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let zero = e.index(0)?;
    let first = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
    e.if_then(first, |e| {
        let at = slot_address(&e, scratch, slot)?;
        e.push_void(e.inline_asm_op("st.global.f64 [$0], $1;", "l,d", &[at, value], &[])?);
        fence(&e)
    })?;
    count_in(e, scratch, blocks, tid, flag)
}

/// Thread 0 counts the block in on the counter at `scratch` (after the block's writes are
/// fenced); returns, in every thread, whether this block was the last of `blocks` (an `i1`,
/// the same in the whole block). `flag` is a shared `i32`.
pub(crate) fn count_in<'c, 'a>(
    e: &Emit<'c, 'a>,
    scratch: Value<'c, '_>,
    blocks: u64,
    tid: Value<'c, '_>,
    flag: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    let zero = e.index(0)?;
    let first = e.cmpi(CmpiPredicate::Eq, tid, zero)?;
    e.if_then(first, |e| {
        let old = e.inline_asm(
            "atom.global.add.u32 $0, [$1], 1;",
            "=r,l",
            &[scratch],
            e.int_type(32),
        )?;
        let last = e.int(32, blocks as i64 - 1)?;
        let is_last = e.cmpi(CmpiPredicate::Eq, old, last)?;
        let is_last = e.extui(is_last, e.int_type(32))?;
        let zero = e.index(0)?;
        e.store(is_last, flag, zero);
        Ok(())
    })?;
    e.barrier();
    let is_last = e.load(flag, zero)?;
    let no = e.int(32, 0)?;
    e.cmpi(CmpiPredicate::Ne, is_last, no)
}

/// An f64 of the scratch at `address` (an `i64`), read past the caches (`ld.relaxed.gpu`): a
/// slot another block wrote.
pub(crate) fn load_slot<'c, 'a>(e: &Emit<'c, 'a>, address: Value<'c, '_>) -> Emitted<'c, 'a> {
    e.inline_asm(
        "ld.relaxed.gpu.global.f64 $0, [$1];",
        "=d,l",
        &[address],
        Type::float64(e.context),
    )
}

/// Thread 0 sets the counter at `scratch` back to zero, for the next launch.
pub(crate) fn reset_counter(
    e: &Emit<'_, '_>,
    scratch: Value<'_, '_>,
    tid: Value<'_, '_>,
) -> Result<(), CodegenError> {
    let zero_index = e.index(0)?;
    let first = e.cmpi(CmpiPredicate::Eq, tid, zero_index)?;
    e.if_then(first, |e| {
        let zero = e.int(32, 0)?;
        e.push_void(e.inline_asm_op(
            "st.relaxed.gpu.global.u32 [$0], $1;",
            "l,r",
            &[scratch, zero],
            &[],
        )?);
        Ok(())
    })
}

/// In the block that arrived last: the sum of the scratch's first `count` slots, in every
/// thread (thread `t` adds slots `t, t + THREADS, …` in order, then [`block_sum_f64`]); thread 0
/// resets the counter for the next launch.
pub(crate) fn sum_slots<'c, 'a>(
    e: &Emit<'c, 'a>,
    scratch: Value<'c, '_>,
    count: u64,
    tid: Value<'c, '_>,
    shared: Value<'c, '_>,
) -> Emitted<'c, 'a> {
    fence(e)?;
    let zero = f64_const(e, 0.0)?;
    let acc = e.cell(zero)?;
    let end = e.index(count as i64)?;
    let step = e.index(i64::from(THREADS))?;
    e.for_range(tid, end, step, |e, i| {
        let at = slot_address(&e, scratch, i)?;
        let v = load_slot(&e, at)?;
        e.accumulate(acc, v)
    })?;
    let own = e.get(acc)?;
    let total = block_sum_f64(e, own, tid, shared)?;
    reset_counter(e, scratch, tid)?;
    Ok(total)
}

/// `sqrt(x)` of an f64, correctly rounded (PTX `sqrt.rn.f64`, Rust's `f64::sqrt`).
pub(crate) fn sqrt_f64<'c, 'a>(e: &Emit<'c, 'a>, x: Value<'c, '_>) -> Emitted<'c, 'a> {
    e.inline_asm(
        "sqrt.rn.f64 $0, $1;",
        "=d,d",
        &[x],
        Type::float64(e.context),
    )
}
