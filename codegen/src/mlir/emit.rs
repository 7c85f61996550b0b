//! [`Emit`]: appends operations to one block, so that kernel builders read like the kernel.
//!
//! Every kernel builder works on flat 1-D memrefs (one per buffer, bare pointers in PTX) with
//! explicit index arithmetic, `scf.for` / `scf.if` for control flow, and one-element
//! `memref.alloca` cells for values carried across loop iterations (melior's `scf.for` builder
//! has no `iter_args`; LLVM promotes the cells to registers). Instructions the dialects do not
//! lower without libdevice (square root, FP8 conversion, tensor-core MMA) go through
//! `llvm.inline_asm`.

use melior::Context;
use melior::dialect::arith::{self, CmpfPredicate, CmpiPredicate};
use melior::dialect::{memref, scf};
use melior::ir::ValueLike;
use melior::ir::attribute::{FloatAttribute, IntegerAttribute, StringAttribute};
use melior::ir::operation::OperationBuilder;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{
    Attribute, Block, BlockLike, Identifier, Location, Operation, Region, RegionLike, Type, Value,
};

use super::kernel::{Dimension, append_value, block_id, index_constant, thread_id};
use crate::error::CodegenError;

/// A reduction across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// f32 sum.
    Sum,
    /// Maximum, NaN-propagating (`arith.maximumf`).
    Max,
}

/// Result of every emitting call.
pub type Emitted<'c, 'a> = Result<Value<'c, 'a>, CodegenError>;

/// Appends operations to `block` at `location`.
#[derive(Clone, Copy)]
pub struct Emit<'c, 'a> {
    /// The context.
    pub context: &'c Context,
    /// Where operations go.
    pub block: &'a Block<'c>,
    /// The location every operation gets.
    pub location: Location<'c>,
}

impl<'c, 'a> Emit<'c, 'a> {
    /// An emitter appending to `block`.
    pub fn new(context: &'c Context, block: &'a Block<'c>, location: Location<'c>) -> Self {
        Emit {
            context,
            block,
            location,
        }
    }

    /// Appends `operation` and returns its first result.
    pub fn push(&self, operation: impl Into<Operation<'c>>) -> Emitted<'c, 'a> {
        append_value(self.block, operation)
    }

    /// Appends `operation`, which has no result.
    pub fn push_void(&self, operation: impl Into<Operation<'c>>) {
        self.block.append_operation(operation.into());
    }

    // ---- types -------------------------------------------------------------------------------

    /// `f32`.
    pub fn f32_type(&self) -> Type<'c> {
        Type::float32(self.context)
    }

    /// `bf16`.
    pub fn bf16_type(&self) -> Type<'c> {
        Type::bfloat16(self.context)
    }

    /// `iN`.
    pub fn int_type(&self, bits: u32) -> Type<'c> {
        IntegerType::new(self.context, bits).into()
    }

    /// `index`.
    pub fn index_type(&self) -> Type<'c> {
        Type::index(self.context)
    }

    // ---- constants ---------------------------------------------------------------------------

    /// `arith.constant value : index`.
    pub fn index(&self, value: i64) -> Emitted<'c, 'a> {
        index_constant(self.context, self.block, value, self.location)
    }

    /// `arith.constant value : iN`.
    pub fn int(&self, bits: u32, value: i64) -> Emitted<'c, 'a> {
        let attribute = IntegerAttribute::new(self.int_type(bits), value);
        self.push(arith::constant(
            self.context,
            attribute.into(),
            self.location,
        ))
    }

    /// `arith.constant value : f32`, exactly (the bits of `value`).
    pub fn f32(&self, value: f32) -> Emitted<'c, 'a> {
        let attribute = FloatAttribute::new(self.context, self.f32_type(), f64::from(value));
        self.push(arith::constant(
            self.context,
            attribute.into(),
            self.location,
        ))
    }

    // ---- integer and index arithmetic ----------------------------------------------------------

    /// `a + b`.
    pub fn addi(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::addi(a, b, self.location))
    }

    /// `a - b`.
    pub fn subi(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::subi(a, b, self.location))
    }

    /// `a * b`.
    pub fn muli(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::muli(a, b, self.location))
    }

    /// `a / b`, unsigned.
    pub fn divui(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::divui(a, b, self.location))
    }

    /// `a % b`, unsigned.
    pub fn remui(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::remui(a, b, self.location))
    }

    /// `min(a, b)`, unsigned.
    pub fn minui(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::minui(a, b, self.location))
    }

    /// `a & b`.
    pub fn andi(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::andi(a, b, self.location))
    }

    /// `a | b`.
    pub fn ori(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::ori(a, b, self.location))
    }

    /// `a ^ b`.
    pub fn xori(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::xori(a, b, self.location))
    }

    /// `a << b`.
    pub fn shli(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::shli(a, b, self.location))
    }

    /// `a >> b`, logical.
    pub fn shrui(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::shrui(a, b, self.location))
    }

    /// Integer comparison.
    pub fn cmpi(
        &self,
        predicate: CmpiPredicate,
        a: Value<'c, '_>,
        b: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        self.push(arith::cmpi(self.context, predicate, a, b, self.location))
    }

    /// `a < b` on indices.
    pub fn lt(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.cmpi(CmpiPredicate::Ult, a, b)
    }

    /// `cond ? a : b`.
    pub fn select(
        &self,
        cond: Value<'c, '_>,
        a: Value<'c, '_>,
        b: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        self.push(arith::select(cond, a, b, self.location))
    }

    /// `index` → `iN` (or back), as `arith.index_cast`.
    pub fn index_cast(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::index_cast(value, to, self.location))
    }

    /// An `i32` index checked against `0..limit`: the index as an `index` (0 when out of range,
    /// so that no load leaves its buffer) and whether it was in range.
    pub fn checked_index(
        &self,
        value: Value<'c, '_>,
        limit: i64,
    ) -> Result<(Value<'c, 'a>, Value<'c, 'a>), CodegenError> {
        let zero = self.int(32, 0)?;
        let limit = self.int(32, limit)?;
        let low = self.cmpi(CmpiPredicate::Sge, value, zero)?;
        let high = self.cmpi(CmpiPredicate::Slt, value, limit)?;
        let valid = self.andi(low, high)?;
        let safe = self.select(valid, value, zero)?;
        Ok((self.index_cast(safe, self.index_type())?, valid))
    }

    /// `iN` → `iM`, zero-extended.
    pub fn extui(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::extui(value, to, self.location))
    }

    /// `iN` → `iM`, truncated.
    pub fn trunci(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::trunci(value, to, self.location))
    }

    /// Reinterprets the bits of `value` as `to`.
    pub fn bitcast(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::bitcast(value, to, self.location))
    }

    // ---- floating point ------------------------------------------------------------------------

    /// `a + b`, rounded to nearest even.
    pub fn addf(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::addf(a, b, self.location))
    }

    /// `a - b`.
    pub fn subf(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::subf(a, b, self.location))
    }

    /// `a * b`.
    pub fn mulf(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::mulf(a, b, self.location))
    }

    /// `a / b`, a true (correctly rounded) division.
    pub fn divf(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::divf(a, b, self.location))
    }

    /// `-a`.
    pub fn negf(&self, a: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(arith::negf(a, self.location))
    }

    /// `max(a, b)`, NaN-propagating (`arith.maximumf`, PTX `max.NaN`).
    pub fn maxf(&self, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(
            OperationBuilder::new("arith.maximumf", self.location)
                .add_operands(&[a, b])
                .add_results(&[a.r#type()])
                .build()?,
        )
    }

    /// `|a|` (clears the sign bit, so NaN stays NaN).
    pub fn absf(&self, a: Value<'c, '_>) -> Emitted<'c, 'a> {
        let bits = self.bitcast(a, self.int_type(32))?;
        let mask = self.int(32, 0x7fff_ffff)?;
        let cleared = self.andi(bits, mask)?;
        self.bitcast(cleared, self.f32_type())
    }

    /// Float comparison.
    pub fn cmpf(
        &self,
        predicate: CmpfPredicate,
        a: Value<'c, '_>,
        b: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        self.push(arith::cmpf(self.context, predicate, a, b, self.location))
    }

    /// Widens `value` to `to` (exact).
    pub fn extf(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::extf(value, to, self.location))
    }

    /// Narrows `value` to `to`, rounding to nearest even.
    pub fn truncf(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::truncf(value, to, self.location))
    }

    /// Signed integer to float.
    pub fn sitofp(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::sitofp(value, to, self.location))
    }

    /// Float to signed integer, toward zero.
    pub fn fptosi(&self, value: Value<'c, '_>, to: Type<'c>) -> Emitted<'c, 'a> {
        self.push(arith::fptosi(value, to, self.location))
    }

    /// A bf16 or f32 value as `f32` (exact).
    pub fn to_f32(&self, value: Value<'c, 'a>) -> Emitted<'c, 'a> {
        if value.r#type() == self.f32_type() {
            Ok(value)
        } else {
            self.extf(value, self.f32_type())
        }
    }

    // ---- memory --------------------------------------------------------------------------------

    /// `memref[index]`.
    pub fn load(&self, memref: Value<'c, '_>, index: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.push(memref::load(memref, &[index], self.location))
    }

    /// `memref[base + offset]` widened to f32 (bf16 and f32 buffers).
    pub fn load_f32(
        &self,
        memref: Value<'c, '_>,
        base: Value<'c, '_>,
        offset: Value<'c, '_>,
    ) -> Emitted<'c, 'a> {
        let at = self.addi(base, offset)?;
        let value = self.load(memref, at)?;
        self.to_f32(value)
    }

    /// `memref[index] = value`.
    pub fn store(&self, value: Value<'c, '_>, memref: Value<'c, '_>, index: Value<'c, '_>) {
        self.push_void(memref::store(value, memref, &[index], self.location));
    }

    /// A one-element private cell of `element` type, initialized to `init`: a variable.
    pub fn cell(&self, init: Value<'c, '_>) -> Emitted<'c, 'a> {
        let ty = MemRefType::new(init.r#type(), &[1], None, None);
        let cell = self.push(memref::alloca(
            self.context,
            ty,
            &[],
            &[],
            None,
            self.location,
        ))?;
        let zero = self.index(0)?;
        self.store(init, cell, zero);
        Ok(cell)
    }

    /// Reads a cell made by [`Emit::cell`].
    pub fn get(&self, cell: Value<'c, '_>) -> Emitted<'c, 'a> {
        let zero = self.index(0)?;
        self.load(cell, zero)
    }

    /// Writes a cell made by [`Emit::cell`].
    pub fn set(&self, cell: Value<'c, '_>, value: Value<'c, '_>) -> Result<(), CodegenError> {
        let zero = self.index(0)?;
        self.store(value, cell, zero);
        Ok(())
    }

    /// `cell += value` (f32).
    pub fn accumulate(
        &self,
        cell: Value<'c, '_>,
        value: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let current = self.get(cell)?;
        let sum = self.addf(current, value)?;
        self.set(cell, sum)
    }

    // ---- control flow --------------------------------------------------------------------------

    /// `scf.for %i = start to end step step { body(%i) }`.
    pub fn for_range<F>(
        &self,
        start: Value<'c, '_>,
        end: Value<'c, '_>,
        step: Value<'c, '_>,
        body: F,
    ) -> Result<(), CodegenError>
    where
        F: for<'b> FnOnce(Emit<'c, 'b>, Value<'c, 'b>) -> Result<(), CodegenError>,
    {
        let inner = Block::new(&[(self.index_type(), self.location)]);
        {
            let emit = Emit::new(self.context, &inner, self.location);
            let i: Value = inner.argument(0)?.into();
            body(emit, i)?;
        }
        inner.append_operation(scf::r#yield(&[], self.location));
        let region = Region::new();
        region.append_block(inner);
        self.push_void(scf::r#for(start, end, step, region, self.location));
        Ok(())
    }

    /// `for i in start..end step step` with constant bounds.
    pub fn for_const<F>(&self, start: i64, end: i64, step: i64, body: F) -> Result<(), CodegenError>
    where
        F: for<'b> FnOnce(Emit<'c, 'b>, Value<'c, 'b>) -> Result<(), CodegenError>,
    {
        let start = self.index(start)?;
        let end = self.index(end)?;
        let step = self.index(step)?;
        self.for_range(start, end, step, body)
    }

    /// `scf.if cond { then() }`.
    pub fn if_then<F>(&self, cond: Value<'c, '_>, then: F) -> Result<(), CodegenError>
    where
        F: for<'b> FnOnce(Emit<'c, 'b>) -> Result<(), CodegenError>,
    {
        let inner = Block::new(&[]);
        then(Emit::new(self.context, &inner, self.location))?;
        inner.append_operation(scf::r#yield(&[], self.location));
        let region = Region::new();
        region.append_block(inner);
        self.push_void(scf::r#if(cond, &[], region, Region::new(), self.location));
        Ok(())
    }

    // ---- GPU -----------------------------------------------------------------------------------

    /// `gpu.thread_id x`.
    pub fn thread_x(&self) -> Emitted<'c, 'a> {
        thread_id(self.context, self.block, Dimension::X, self.location)
    }

    /// `gpu.block_id <dimension>`.
    pub fn block_index(&self, dimension: Dimension) -> Emitted<'c, 'a> {
        block_id(self.context, self.block, dimension, self.location)
    }

    /// `gpu.barrier`: every thread of the block waits, shared memory writes become visible.
    pub fn barrier(&self) {
        self.push_void(
            OperationBuilder::new("gpu.barrier", self.location)
                .build()
                .expect("gpu.barrier has no operands"),
        );
    }

    /// `gpu.shuffle xor value, offset, 32`: the value of lane `lane ^ offset` (full warp).
    pub fn shuffle_xor(&self, value: Value<'c, '_>, offset: u32) -> Emitted<'c, 'a> {
        let offset = self.int(32, i64::from(offset))?;
        let width = self.int(32, 32)?;
        let mode = Attribute::parse(self.context, "#gpu<shuffle_mode xor>")
            .expect("shuffle mode attribute parses");
        self.push(
            OperationBuilder::new("gpu.shuffle", self.location)
                .add_operands(&[value, offset, width])
                .add_attributes(&[(Identifier::new(self.context, "mode"), mode)])
                .add_results(&[value.r#type(), self.int_type(1)])
                .build()?,
        )
    }

    /// `a ∘ b` for the reduction `op`.
    pub fn combine(&self, op: Reduction, a: Value<'c, '_>, b: Value<'c, '_>) -> Emitted<'c, 'a> {
        match op {
            Reduction::Sum => self.addf(a, b),
            Reduction::Max => self.maxf(a, b),
        }
    }

    /// `value` reduced by `op` over the 32 lanes of a warp, the same in every lane (a butterfly:
    /// every lane combines in the same order, so all lanes hold bit-identical results).
    pub fn warp_reduce(&self, value: Value<'c, 'a>, op: Reduction) -> Emitted<'c, 'a> {
        let mut acc = value;
        for offset in [16, 8, 4, 2, 1] {
            let other = self.shuffle_xor(acc, offset)?;
            acc = self.combine(op, acc, other)?;
        }
        Ok(acc)
    }

    /// `llvm.inline_asm` with one result of type `result`: `asm` in PTX, `constraints` in LLVM's
    /// syntax (`"=f,f"`).
    pub fn inline_asm(
        &self,
        asm: &str,
        constraints: &str,
        operands: &[Value<'c, '_>],
        result: Type<'c>,
    ) -> Emitted<'c, 'a> {
        self.push(self.inline_asm_op(asm, constraints, operands, &[result])?)
    }

    /// `llvm.inline_asm` with any number of results (a struct when more than one).
    pub fn inline_asm_op(
        &self,
        asm: &str,
        constraints: &str,
        operands: &[Value<'c, '_>],
        results: &[Type<'c>],
    ) -> Result<Operation<'c>, CodegenError> {
        let context = self.context;
        let attributes = [
            (
                Identifier::new(context, "asm_string"),
                StringAttribute::new(context, asm).into(),
            ),
            (
                Identifier::new(context, "constraints"),
                StringAttribute::new(context, constraints).into(),
            ),
            (
                Identifier::new(context, "has_side_effects"),
                Attribute::unit(context),
            ),
        ];
        Ok(OperationBuilder::new("llvm.inline_asm", self.location)
            .add_operands(operands)
            .add_attributes(&attributes)
            .add_results(results)
            .build()?)
    }

    /// The address of a memref's first element as an `i64` (a generic address for a global
    /// buffer, a shared-window offset for a workgroup one): for inline PTX that addresses it.
    pub fn address_of(&self, memref: Value<'c, '_>) -> Emitted<'c, 'a> {
        let index = self.push(
            OperationBuilder::new("memref.extract_aligned_pointer_as_index", self.location)
                .add_operands(&[memref])
                .add_results(&[self.index_type()])
                .build()?,
        )?;
        self.index_cast(index, self.int_type(64))
    }

    /// The address (`i64`) of element `index` (an `index`) of a buffer of `element_bytes`-byte
    /// elements, from [`Self::address_of`].
    pub fn element_address(
        &self,
        memref: Value<'c, '_>,
        index: Value<'c, '_>,
        element_bytes: u64,
    ) -> Emitted<'c, 'a> {
        let base = self.address_of(memref)?;
        let offset = self.index_cast(index, self.int_type(64))?;
        let offset = self.muli(offset, self.int(64, element_bytes as i64)?)?;
        self.addi(base, offset)
    }

    /// `sqrt(x)` correctly rounded (PTX `sqrt.rn.f32`), as the CPU reference's `f32::sqrt`.
    pub fn sqrt_rn(&self, x: Value<'c, '_>) -> Emitted<'c, 'a> {
        self.inline_asm("sqrt.rn.f32 $0, $1;", "=f,f", &[x], self.f32_type())
    }
}
