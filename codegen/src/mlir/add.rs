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
