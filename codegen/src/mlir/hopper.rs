//! Hopper's asynchronous machinery as `nvvm` operations (HOPPER_MLIR.md): mbarriers, TMA tile
//! loads, `setmaxnreg` and the fences between them. Shared-memory addresses are
//! 32-bit offsets in the shared window (what [`Emit::address_of`] gives for workgroup memory,
//! truncated), turned into `!llvm.ptr<3>` here.

use melior::ir::attribute::{Attribute, IntegerAttribute};
use melior::ir::operation::OperationBuilder;
use melior::ir::{Identifier, Type, Value};

use super::emit::{Emit, Emitted};
use crate::error::CodegenError;

/// Whether [`Emit::set_max_registers`] raises or lowers the warpgroup's register budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterBudget {
    /// `setmaxnreg.inc`: the math warpgroups take what the producer gave back.
    Increase(u32),
    /// `setmaxnreg.dec`: the producer warpgroup, which needs few.
    Decrease(u32),
}

impl<'c, 'a> Emit<'c, 'a> {
    fn pointer_type(&self, space: u32) -> Type<'c> {
        let text = match space {
            0 => "!llvm.ptr".to_string(),
            n => format!("!llvm.ptr<{n}>"),
        };
        Type::parse(self.context, &text).expect("an LLVM pointer type parses")
    }

    /// `llvm.inttoptr`: the integer `address` as a pointer into address space `space` (0:
    /// generic, 3: shared::cta, 7: shared::cluster).
    fn pointer(&self, address: Value<'c, '_>, space: u32) -> Emitted<'c, 'a> {
        self.push(
            OperationBuilder::new("llvm.inttoptr", self.location)
                .add_operands(&[address])
                .add_results(&[self.pointer_type(space)])
                .build()?,
        )
    }

    /// `nvvm.mbarrier.init`: the mbarrier at shared address `bar` expects `count` arrivals per
    /// phase.
    pub fn mbarrier_init(&self, bar: Value<'c, '_>, count: u32) -> Result<(), CodegenError> {
        let bar = self.pointer(bar, 3)?;
        let count = self.int(32, i64::from(count))?;
        self.push_void(
            OperationBuilder::new("nvvm.mbarrier.init", self.location)
                .add_operands(&[bar, count])
                .build()?,
        );
        Ok(())
    }

    /// `nvvm.fence.mbarrier.init`: makes initialized mbarriers visible to the async proxy
    /// (TMA completes transactions on them).
    pub fn fence_mbarrier_init(&self) -> Result<(), CodegenError> {
        self.push_void(OperationBuilder::new("nvvm.fence.mbarrier.init", self.location).build()?);
        Ok(())
    }

    /// `nvvm.mbarrier.arrive.expect_tx`: one arrival on `bar` that also expects `bytes` (an
    /// `i32`) more bytes of asynchronous copies in the current phase.
    pub fn mbarrier_arrive_expect_tx(
        &self,
        bar: Value<'c, '_>,
        bytes: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let bar = self.pointer(bar, 3)?;
        self.push_void(
            OperationBuilder::new("nvvm.mbarrier.arrive.expect_tx", self.location)
                .add_operands(&[bar, bytes])
                .build()?,
        );
        Ok(())
    }

    /// `nvvm.mbarrier.arrive`: one arrival on `bar` (release: this thread's earlier reads of
    /// what the barrier guards are done).
    pub fn mbarrier_arrive(&self, bar: Value<'c, '_>) -> Result<(), CodegenError> {
        let bar = self.pointer(bar, 3)?;
        self.push_void(
            OperationBuilder::new("nvvm.mbarrier.arrive", self.location)
                .add_operands(&[bar])
                .build()?,
        );
        Ok(())
    }

    /// `nvvm.mbarrier.try_wait.parity` in a loop until the phase of parity `parity` (an `i32`,
    /// 0 or 1) of `bar` has completed (acquire).
    pub fn mbarrier_wait(
        &self,
        bar: Value<'c, '_>,
        parity: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let bar = self.pointer(bar, 3)?;
        // The suspend-time hint of each try (ns): what CUTLASS passes.
        let ticks = self.int(32, 0x989680)?;
        self.push_void(
            OperationBuilder::new("nvvm.mbarrier.try_wait.parity", self.location)
                .add_operands(&[bar, parity, ticks])
                .build()?,
        );
        Ok(())
    }

    /// `nvvm.cp.async.bulk.tensor.shared.cluster.global`: a TMA tile load of the box at
    /// `coordinates` (innermost first, `i32`) of the tensor map at generic address `map` into
    /// shared address `destination`, completing its bytes on mbarrier `bar`; only in the
    /// threads where `predicate` (an `i1`) holds, when given (a predicated instruction, not a
    /// branch: the warp does not diverge).
    pub fn tma_load(
        &self,
        destination: Value<'c, '_>,
        map: Value<'c, '_>,
        coordinates: &[Value<'c, '_>],
        bar: Value<'c, '_>,
        predicate: Option<Value<'c, '_>>,
    ) -> Result<(), CodegenError> {
        let destination = self.pointer(destination, 7)?;
        let map = self.pointer(map, 0)?;
        let bar = self.pointer(bar, 3)?;
        let mut operands = vec![destination, map];
        operands.extend_from_slice(coordinates);
        operands.push(bar);
        operands.extend(predicate);
        // dstMem, tmaDescriptor, coordinates, mbar, im2colOffsets, multicastMask, l2CacheHint,
        // predicate.
        let segments = format!(
            "array<i32: 1, 1, {}, 1, 0, 0, 0, {}>",
            coordinates.len(),
            usize::from(predicate.is_some())
        );
        let segments =
            Attribute::parse(self.context, &segments).expect("operand segment sizes parse");
        self.push_void(
            OperationBuilder::new(
                "nvvm.cp.async.bulk.tensor.shared.cluster.global",
                self.location,
            )
            .add_operands(&operands)
            .add_attributes(&[(
                Identifier::new(self.context, "operandSegmentSizes"),
                segments,
            )])
            .build()?,
        );
        Ok(())
    }

    /// `fence.proxy.tensormap::generic.acquire.sys` over the 128-byte tensor map at generic
    /// address `map`: the host wrote the map through the generic proxy, the TMA reads it
    /// through the tensormap proxy (the CUDA guide's rule for maps passed in global memory).
    pub fn fence_tensormap_acquire(&self, map: Value<'c, '_>) -> Result<(), CodegenError> {
        let map = self.pointer(map, 0)?;
        let size = self.int(32, 128)?;
        let scope =
            Attribute::parse(self.context, "#nvvm.mem_scope<sys>").expect("a memory scope parses");
        self.push_void(
            OperationBuilder::new("nvvm.fence.proxy.acquire", self.location)
                .add_operands(&[map, size])
                .add_attributes(&[(Identifier::new(self.context, "scope"), scope)])
                .build()?,
        );
        Ok(())
    }

    /// `nvvm.setmaxregister`: the warpgroup's per-thread register budget (ptxas honours it only
    /// with `maxntid` and `minctasm = 1` on the kernel).
    pub fn set_max_registers(&self, budget: RegisterBudget) -> Result<(), CodegenError> {
        let (action, count) = match budget {
            RegisterBudget::Increase(n) => ("increase", n),
            RegisterBudget::Decrease(n) => ("decrease", n),
        };
        let action = Attribute::parse(self.context, &format!("#nvvm<action {action}>"))
            .expect("a setmaxregister action parses");
        let count = IntegerAttribute::new(self.int_type(32), i64::from(count)).into();
        self.push_void(
            OperationBuilder::new("nvvm.setmaxregister", self.location)
                .add_attributes(&[
                    (Identifier::new(self.context, "action"), action),
                    (Identifier::new(self.context, "regCount"), count),
                ])
                .build()?,
        );
        Ok(())
    }

    /// `fence.proxy.async.shared::cta`: this thread's generic-proxy writes to shared memory are
    /// seen by the async proxy (wgmma operands, TMA).
    pub fn fence_proxy_async_shared(&self) -> Result<(), CodegenError> {
        let attribute = |text: &str| {
            Attribute::parse(self.context, text).expect("a fence.proxy attribute parses")
        };
        let attributes = [
            (
                Identifier::new(self.context, "kind"),
                attribute("#nvvm.proxy_kind<async.shared>"),
            ),
            (
                Identifier::new(self.context, "space"),
                attribute("#nvvm.shared_space<cta>"),
            ),
        ];
        self.push_void(
            OperationBuilder::new("nvvm.fence.proxy", self.location)
                .add_attributes(&attributes)
                .build()?,
        );
        Ok(())
    }
}
