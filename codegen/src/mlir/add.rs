//! `add`: the elementwise `c[i] = a[i] + b[i]` over three `f32` buffers of a static length.
//!
//! The smallest complete kernel, proving the chain melior → MLIR → PTX → ptxas; later
//! elementwise kernels follow its shape. One thread per element, a 1-D grid of
//! [`BLOCK_SIZE`]-thread blocks ([`grid_size`] of them), a bounds check for the last block:
//!
//! ```text
//! gpu.func @add_f32(%a: memref<Nxf32>, %b: memref<Nxf32>, %c: memref<Nxf32>) kernel {
//!   %i = block_id.x * block_dim.x + thread_id.x
//!   scf.if %i < N { %c[%i] = %a[%i] + %b[%i] }
//!   gpu.return
//! }
//! ```

use melior::dialect::arith::{self, CmpiPredicate};
use melior::dialect::{memref, scf};
use melior::ir::r#type::MemRefType;
use melior::ir::{Block, BlockLike, Region, RegionLike, Type, Value};

use super::kernel::{KernelModule, append_value, global_thread_index, index_constant};
use crate::error::CodegenError;

/// Threads per block the kernel is launched with (it reads `block_dim`, so any size works).
pub const BLOCK_SIZE: u32 = 256;

/// Blocks needed to cover `len` elements with [`BLOCK_SIZE`]-thread blocks.
pub fn grid_size(len: u64) -> u64 {
    len.div_ceil(u64::from(BLOCK_SIZE))
}

/// Adds the kernel `name`: `c = a + b` over `memref<len x f32>` arguments `(a, b, c)`.
pub fn add_f32(module: &KernelModule<'_>, name: &str, len: i64) -> Result<(), CodegenError> {
    if len <= 0 {
        return Err(CodegenError::InvalidKernel {
            kernel: name.to_string(),
            message: format!("length must be positive, got {len}"),
        });
    }
    let context = module.context();
    let buffer: Type = MemRefType::new(Type::float32(context), &[len], None, None).into();

    module.add_kernel(name, &[buffer, buffer, buffer], |entry, location| {
        let a: Value = entry.argument(0)?.into();
        let b: Value = entry.argument(1)?.into();
        let c: Value = entry.argument(2)?.into();

        let i = global_thread_index(context, entry, location)?;
        let n = index_constant(context, entry, len, location)?;
        let in_bounds = append_value(
            entry,
            arith::cmpi(context, CmpiPredicate::Ult, i, n, location),
        )?;

        let then = Block::new(&[]);
        let x = append_value(&then, memref::load(a, &[i], location))?;
        let y = append_value(&then, memref::load(b, &[i], location))?;
        let sum = append_value(&then, arith::addf(x, y, location))?;
        then.append_operation(memref::store(sum, c, &[i], location));
        then.append_operation(scf::r#yield(&[], location));
        let then_region = Region::new();
        then_region.append_block(then);

        entry.append_operation(scf::r#if(
            in_bounds,
            &[],
            then_region,
            Region::new(),
            location,
        ));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlir::create_context;
    use crate::{Target, compile_to_ptx, ptxas};
    use melior::ir::operation::OperationLike;

    /// The add kernel over `len` elements, lowered to PTX for `target`.
    fn add_ptx(target: Target, name: &str, len: i64) -> String {
        let context = create_context();
        let mut module = KernelModule::new(&context, "dsc_kernels");
        add_f32(&module, name, len).unwrap();
        compile_to_ptx(module.module_mut(), target).unwrap()
    }

    #[test]
    fn builds_a_gpu_kernel_function() {
        let context = create_context();
        let module = KernelModule::new(&context, "dsc_kernels");
        add_f32(&module, "add_f32", 1000).unwrap();
        assert!(module.module().as_operation().verify());
        assert_eq!(module.kernel_names(), ["add_f32"]);
        let text = module.module().as_operation().to_string();
        for expected in [
            "gpu.container_module",
            "gpu.module @dsc_kernels",
            "gpu.func @add_f32(%arg0: memref<1000xf32>, %arg1: memref<1000xf32>, %arg2: memref<1000xf32>) kernel",
            "gpu.block_id  x",
            "gpu.thread_id  x",
            "arith.cmpi ult",
            "scf.if",
            "memref.load",
            "arith.addf",
            "memref.store",
            "gpu.return",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn emits_ptx_with_the_entry_for_each_target() {
        for target in Target::ALL {
            let ptx = add_ptx(target, "add_f32", 1000);
            assert!(ptx.contains(".version 8.4"), "{target}:\n{ptx}");
            assert!(
                ptx.contains(&format!(".target {}", target.chip())),
                "{target}:\n{ptx}"
            );
            assert!(ptx.contains(".visible .entry add_f32("), "{target}:\n{ptx}");
            // Bare-pointer memrefs: one pointer parameter per buffer.
            assert_eq!(
                ptx.matches(".param .u64 .ptr").count(),
                3,
                "{target}:\n{ptx}"
            );
            // The static length is the bounds check's constant.
            assert!(ptx.contains("999"), "{target}:\n{ptx}");
        }
    }

    #[test]
    fn ptx_assembles_with_ptxas_without_spills() {
        let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
        for target in Target::ALL {
            let ptx = add_ptx(target, "add_f32", 4096);
            let report = ptxas::assemble(&ptxas, &ptx, target)
                .unwrap_or_else(|error| panic!("{target}: {error}\n{ptx}"));
            assert_eq!(
                report
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>(),
                ["add_f32"],
                "{target}:\n{}",
                report.output
            );
            assert!(
                report.output.contains("0 bytes spill stores"),
                "{target}: ptxas -v reported no spill line:\n{}",
                report.output
            );
            assert_eq!(
                report.spill_store_bytes(),
                0,
                "{target}:\n{}",
                report.output
            );
            assert_eq!(report.spill_load_bytes(), 0, "{target}:\n{}", report.output);
            assert!(report.notes.is_empty(), "{target}:\n{}", report.output);
        }
    }

    #[test]
    fn one_ptx_module_holds_every_kernel() {
        let context = create_context();
        let mut module = KernelModule::new(&context, "dsc_kernels");
        add_f32(&module, "add_small", 100).unwrap();
        add_f32(&module, "add_large", 1 << 20).unwrap();
        let ptx = compile_to_ptx(module.module_mut(), Target::Sm90a).unwrap();
        assert!(ptx.contains(".visible .entry add_small("), "{ptx}");
        assert!(ptx.contains(".visible .entry add_large("), "{ptx}");
    }

    #[test]
    fn rejects_bad_kernels() {
        let context = create_context();
        let module = KernelModule::new(&context, "dsc_kernels");
        assert!(matches!(
            add_f32(&module, "empty", 0),
            Err(CodegenError::InvalidKernel { .. })
        ));
        add_f32(&module, "twice", 8).unwrap();
        let error = add_f32(&module, "twice", 8).unwrap_err();
        assert!(
            error.to_string().contains("already in the module"),
            "{error}"
        );
    }

    #[test]
    fn grid_covers_every_element() {
        assert_eq!(grid_size(1), 1);
        assert_eq!(grid_size(256), 1);
        assert_eq!(grid_size(257), 2);
    }
}
