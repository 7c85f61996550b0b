//! The Ampere-generation asynchronous copies and warp-wide matrix loads (sm_80 and later, and
//! so sm_89) as `nvvm` operations: `cp.async` 16-byte copies from global into shared memory with
//! zero fill (`nvvm.cp.async.shared.global` with its src-size operand), their commit and wait
//! (`nvvm.cp.async.commit.group`, `nvvm.cp.async.wait.group`), and `ldmatrix`, plain and
//! `.trans` (`nvvm.ldmatrix`). Shared-memory addresses are 32-bit offsets in the shared window (as in
//! [`super::hopper`]), global ones generic 64-bit addresses.

use melior::dialect::llvm;
use melior::ir::attribute::{Attribute, DenseI64ArrayAttribute, IntegerAttribute};
use melior::ir::operation::OperationBuilder;
use melior::ir::{Identifier, Type, Value};

use super::emit::{Emit, Emitted};
use crate::error::CodegenError;

impl<'c, 'a> Emit<'c, 'a> {
    /// The 32-bit shared address `address` as an `!llvm.ptr<3>`.
    fn shared_pointer(&self, address: Value<'c, '_>) -> Emitted<'c, 'a> {
        let ty = Type::parse(self.context, "!llvm.ptr<3>").expect("a shared pointer type parses");
        self.push(
            OperationBuilder::new("llvm.inttoptr", self.location)
                .add_operands(&[address])
                .add_results(&[ty])
                .build()?,
        )
    }

    /// The generic 64-bit address `address` of global memory as an `!llvm.ptr<1>`
    /// (`cvta.to.global`).
    fn global_pointer(&self, address: Value<'c, '_>) -> Emitted<'c, 'a> {
        let generic = Type::parse(self.context, "!llvm.ptr").expect("a pointer type parses");
        let global = Type::parse(self.context, "!llvm.ptr<1>").expect("a pointer type parses");
        let pointer = self.push(
            OperationBuilder::new("llvm.inttoptr", self.location)
                .add_operands(&[address])
                .add_results(&[generic])
                .build()?,
        )?;
        self.push(
            OperationBuilder::new("llvm.addrspacecast", self.location)
                .add_operands(&[pointer])
                .add_results(&[global])
                .build()?,
        )
    }

    /// `cp.async.{cg,ca}.shared.global [destination], [source], size, src_size`: an
    /// asynchronous copy of `size` (4, 8 or 16) bytes from the generic global address `source`
    /// (an `i64`) to the shared address `destination` (an `i32`), both `size`-byte aligned, of
    /// which the first `src_size` (an `i32`) are read and the rest are zeros. 16-byte copies
    /// bypass L1 (`.cg`), smaller ones cannot (`.ca`).
    pub fn cp_async(
        &self,
        destination: Value<'c, '_>,
        source: Value<'c, '_>,
        size: u32,
        src_size: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let destination = self.shared_pointer(destination)?;
        let source = self.global_pointer(source)?;
        let modifier = if size == 16 { "cg" } else { "ca" };
        let size = IntegerAttribute::new(self.int_type(32), i64::from(size)).into();
        let modifier = Attribute::parse(
            self.context,
            &format!("#nvvm<load_cache_modifier {modifier}>"),
        )
        .expect("a cache modifier parses");
        self.push_void(
            OperationBuilder::new("nvvm.cp.async.shared.global", self.location)
                .add_operands(&[destination, source, src_size])
                .add_attributes(&[
                    (Identifier::new(self.context, "size"), size),
                    (Identifier::new(self.context, "modifier"), modifier),
                ])
                .build()?,
        );
        Ok(())
    }

    /// [`Self::cp_async`] of 16 bytes in the threads where `predicate` (an `i1`) holds: a
    /// predicated instruction (inline PTX: the `nvvm` op takes no predicate), not a branch, so
    /// that a warp whose lanes copy and skip does not diverge around it.
    pub fn cp_async_16_if(
        &self,
        destination: Value<'c, '_>,
        source: Value<'c, '_>,
        src_size: Value<'c, '_>,
        predicate: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let predicate = self.extui(predicate, self.int_type(32))?;
        self.push_void(self.inline_asm_op(
            "{\n\t.reg .pred p;\n\t.reg .u64 g;\n\tsetp.ne.b32 p, $3, 0;\n\t\
             cvta.to.global.u64 g, $1;\n\t@p cp.async.cg.shared.global [$0], [g], 16, $2;\n\t}",
            "r,l,r,r",
            &[destination, source, src_size, predicate],
            &[],
        )?);
        Ok(())
    }

    /// `cp.async.commit_group`: this thread's copies issued since the last commit form a group.
    pub fn cp_async_commit(&self) -> Result<(), CodegenError> {
        self.push_void(OperationBuilder::new("nvvm.cp.async.commit.group", self.location).build()?);
        Ok(())
    }

    /// `cp.async.wait_group pending`: waits until at most `pending` of this thread's committed
    /// groups are still in flight.
    pub fn cp_async_wait(&self, pending: u32) -> Result<(), CodegenError> {
        let n = IntegerAttribute::new(self.int_type(32), i64::from(pending)).into();
        self.push_void(
            OperationBuilder::new("nvvm.cp.async.wait.group", self.location)
                .add_attributes(&[(Identifier::new(self.context, "n"), n)])
                .build()?,
        );
        Ok(())
    }

    /// `ldmatrix.sync.aligned.m8n8.x{num}.shared.b16`: `num` (1, 2 or 4) 8 × 8 matrices of 16-bit
    /// elements, whose rows start at the shared addresses (`i32`, 16-byte aligned) lanes
    /// `8i .. 8i + 7` give in `address`; register `i` of lane `t` holds row `t / 4`, elements
    /// `2 (t mod 4)` and `+ 1` of matrix `i` (PTX ISA).
    pub fn ldmatrix(
        &self,
        address: Value<'c, '_>,
        num: u32,
    ) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
        self.ldmatrix_layout(address, num, "row")
    }

    /// `ldmatrix.sync.aligned.m8n8.x{num}.trans.shared.b16`: as [`Self::ldmatrix`], each matrix
    /// transposed: register `i` of lane `t` holds column `t / 4`, rows `2 (t mod 4)` and `+ 1`
    /// of matrix `i` (the B fragment of an `mma` from a row-major `[k, n]` tile).
    pub fn ldmatrix_trans(
        &self,
        address: Value<'c, '_>,
        num: u32,
    ) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
        self.ldmatrix_layout(address, num, "col")
    }

    /// `nvvm.ldmatrix` with layout `row` (plain) or `col` (`.trans`).
    fn ldmatrix_layout(
        &self,
        address: Value<'c, '_>,
        num: u32,
        layout: &str,
    ) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
        let pointer = self.shared_pointer(address)?;
        let i32_type = self.int_type(32);
        let result = match num {
            1 => i32_type,
            n => llvm::r#type::r#struct(self.context, &vec![i32_type; n as usize], false),
        };
        let attribute = |text: &str| {
            Attribute::parse(self.context, text).expect("an ldmatrix attribute parses")
        };
        let loaded = self.push(
            OperationBuilder::new("nvvm.ldmatrix", self.location)
                .add_operands(&[pointer])
                .add_attributes(&[
                    (
                        Identifier::new(self.context, "num"),
                        IntegerAttribute::new(i32_type, i64::from(num)).into(),
                    ),
                    (
                        Identifier::new(self.context, "layout"),
                        attribute(&format!("#nvvm.mma_layout<{layout}>")),
                    ),
                    (
                        Identifier::new(self.context, "shape"),
                        attribute("#nvvm.ld_st_matrix_shape<m = 8, n = 8>"),
                    ),
                    (
                        Identifier::new(self.context, "eltType"),
                        attribute("#nvvm.ld_st_matrix_elt_type<b16>"),
                    ),
                ])
                .add_results(&[result])
                .build()?,
        )?;
        if num == 1 {
            return Ok(vec![loaded]);
        }
        (0..i64::from(num))
            .map(|i| {
                let position = DenseI64ArrayAttribute::new(self.context, &[i]);
                self.push(llvm::extract_value(
                    self.context,
                    loaded,
                    position,
                    i32_type,
                    self.location,
                ))
            })
            .collect()
    }
}
