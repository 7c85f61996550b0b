//! The skeleton every kernel builder fills in: a `builtin.module` holding one `gpu.module`, to
//! which each kernel is added as a `gpu.func … kernel`; plus the small helpers they share.
//!
//! ```text
//! module attributes {gpu.container_module} {
//!   gpu.module @dsc_kernels {
//!     gpu.func @add_f32(%a: memref<1024xf32>, …) kernel { … gpu.return }
//!   }
//! }
//! ```

use melior::Context;
use melior::dialect::{arith, ods::gpu};
use melior::ir::attribute::{IntegerAttribute, StringAttribute, TypeAttribute};
use melior::ir::operation::{OperationBuilder, OperationLike, OperationMutLike};
use melior::ir::r#type::FunctionType;
use melior::ir::{
    Attribute, Block, BlockLike, BlockRef, Identifier, Location, Module, Operation, Region,
    RegionLike, Type, Value,
};

use crate::error::CodegenError;

/// A module of GPU kernels: the unit [`crate::compile_to_ptx`] turns into one PTX module.
pub struct KernelModule<'c> {
    context: &'c Context,
    module: Module<'c>,
}

impl<'c> KernelModule<'c> {
    /// Creates an empty module whose `gpu.module` is named `name`.
    pub fn new(context: &'c Context, name: &str) -> Self {
        let location = Location::unknown(context);
        let mut module = Module::new(location);
        module
            .as_operation_mut()
            .set_attribute("gpu.container_module", Attribute::unit(context));

        let body = Region::new();
        body.append_block(Block::new(&[]));
        let gpu_module = gpu::module(context, body, StringAttribute::new(context, name), location);
        module.body().append_operation(gpu_module.into());
        KernelModule { context, module }
    }

    /// The context the module lives in.
    pub fn context(&self) -> &'c Context {
        self.context
    }

    /// The body of the `gpu.module`, where kernels go.
    fn gpu_module_body(&self) -> BlockRef<'c, '_> {
        self.module
            .body()
            .first_operation()
            .and_then(|gpu_module| gpu_module.region(0).ok())
            .and_then(|region| region.first_block())
            .expect("a KernelModule always holds a gpu.module with one block")
    }

    /// The entry names of the kernels added so far, in order.
    fn kernel_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut next = self.gpu_module_body().first_operation();
        while let Some(operation) = next {
            if let Ok(name) = operation.attribute("sym_name")
                && let Ok(name) = StringAttribute::try_from(name)
            {
                names.push(name.value().to_string());
            }
            next = operation.next_in_block();
        }
        names
    }

    /// Asks ptxas for at least one resident block of kernel `name` per SM (`.minnctapersm 1`)
    /// and no more: without it, ptxas for sm_90 may cap a `.maxntid` kernel's registers to fit
    /// several blocks and spill a few bytes to get there.
    pub fn one_block_per_sm(&self, name: &str) -> Result<(), CodegenError> {
        let one = IntegerAttribute::new(Type::parse(self.context, "i32").expect("i32 parses"), 1);
        self.set_function_attribute(name, "nvvm.minctasm", one.into(), false)
    }

    /// Declares that kernel `name` runs at most `block` threads per block (`.maxntid`), unless
    /// its builder already did: ptxas then keeps its registers within what a block of that size
    /// may hold (64 Ki registers per block), so no kernel can fail at launch for too many
    /// registers; it spills instead, which the PTX tests refuse.
    pub fn bound_threads(&self, name: &str, block: [u32; 3]) -> Result<(), CodegenError> {
        let [x, y, z] = block;
        let threads = Attribute::parse(self.context, &format!("array<i32: {x}, {y}, {z}>"))
            .expect("a dense i32 array parses");
        self.set_function_attribute(name, "nvvm.maxntid", threads, true)
    }

    /// Sets `attribute` of kernel `name` to `value` (unless it has one and `keep` is set).
    fn set_function_attribute(
        &self,
        name: &str,
        attribute: &str,
        value: Attribute<'c>,
        keep: bool,
    ) -> Result<(), CodegenError> {
        let mut next = self.gpu_module_body().first_operation_mut();
        while let Some(mut operation) = next {
            let named = operation
                .attribute("sym_name")
                .ok()
                .and_then(|n| StringAttribute::try_from(n).ok())
                .is_some_and(|n| n.value() == name);
            if named {
                if !(keep && operation.has_attribute(attribute)) {
                    operation.set_attribute(attribute, value);
                }
                return Ok(());
            }
            next = operation.next_in_block_mut();
        }
        Err(CodegenError::InvalidKernel {
            kernel: name.into(),
            message: "no gpu.func of this name to bound".into(),
        })
    }

    /// Adds the kernel `name` taking `arguments`: a `gpu.func` with the `gpu.kernel` attribute.
    /// `build` fills its entry block (whose arguments are the kernel's) and may create further
    /// regions; the terminating `gpu.return` is appended after it.
    pub fn add_kernel<F>(
        &self,
        name: &str,
        arguments: &[Type<'c>],
        build: F,
    ) -> Result<(), CodegenError>
    where
        F: FnOnce(&Block<'c>, Location<'c>) -> Result<(), CodegenError>,
    {
        self.add_kernel_with_shared(name, arguments, &[], build)
    }

    /// [`KernelModule::add_kernel`] with workgroup (shared-memory) buffers of static `shared`
    /// memref types in address space 3: the entry block gets them as extra arguments after the
    /// kernel's own.
    pub fn add_kernel_with_shared<F>(
        &self,
        name: &str,
        arguments: &[Type<'c>],
        shared: &[Type<'c>],
        build: F,
    ) -> Result<(), CodegenError>
    where
        F: FnOnce(&Block<'c>, Location<'c>) -> Result<(), CodegenError>,
    {
        self.add_function(name, arguments, shared, &[], build)
    }

    /// Adds the kernel `name` with `attributes` on its `gpu.func` (the others'
    /// common body).
    fn add_function<F>(
        &self,
        name: &str,
        arguments: &[Type<'c>],
        shared: &[Type<'c>],
        attributes: &[(&str, Attribute<'c>)],
        build: F,
    ) -> Result<(), CodegenError>
    where
        F: FnOnce(&Block<'c>, Location<'c>) -> Result<(), CodegenError>,
    {
        if self.kernel_names().iter().any(|existing| existing == name) {
            return Err(CodegenError::InvalidKernel {
                kernel: name.to_string(),
                message: "a kernel with this entry name is already in the module".to_string(),
            });
        }
        let context = self.context;
        let location = Location::name(context, name, Location::unknown(context));

        let entry = Block::new(
            &arguments
                .iter()
                .chain(shared)
                .map(|&argument| (argument, location))
                .collect::<Vec<_>>(),
        );
        build(&entry, location)?;
        entry.append_operation(gpu::r#return(context, &[], location).into());
        let body = Region::new();
        body.append_block(entry);

        let function_type = FunctionType::new(context, arguments, &[]);
        let mut function: Operation<'c> = gpu::func(
            context,
            body,
            TypeAttribute::new(function_type.into()),
            location,
        )
        .into();
        function.set_attribute("sym_name", StringAttribute::new(context, name).into());
        function.set_attribute("gpu.kernel", Attribute::unit(context));
        for &(attribute, value) in attributes {
            function.set_attribute(attribute, value);
        }
        if !shared.is_empty() {
            function.set_attribute(
                "workgroup_attributions",
                IntegerAttribute::new(
                    Type::parse(context, "i64").expect("i64 parses"),
                    shared.len() as i64,
                )
                .into(),
            );
        }
        self.gpu_module_body().append_operation(function);
        Ok(())
    }

    /// [`KernelModule::add_kernel`] for a kernel whose shared memory is dynamic (sized at launch,
    /// so beyond the 48 KiB of static shared memory): the module gets an `.extern .shared .align
    /// 1024` array named [`dynamic_shared_symbol`]`(name)`, which `build` reads with
    /// `memref.get_global`. The kernel runs exactly `threads` threads per block (`maxntid`,
    /// with `minctasm = 1`: what `setmaxnreg` needs to take effect).
    pub fn add_kernel_with_dynamic_shared<F>(
        &self,
        name: &str,
        arguments: &[Type<'c>],
        threads: u32,
        build: F,
    ) -> Result<(), CodegenError>
    where
        F: FnOnce(&Block<'c>, Location<'c>) -> Result<(), CodegenError>,
    {
        let context = self.context;
        self.append_dynamic_shared(name)?;
        let threads = Attribute::parse(context, &format!("array<i32: {threads}, 1, 1>"))
            .expect("a dense i32 array parses");
        let min_ctas =
            IntegerAttribute::new(Type::parse(context, "i32").expect("i32 parses"), 1).into();
        self.add_function(
            name,
            arguments,
            &[],
            &[("nvvm.maxntid", threads), ("nvvm.minctasm", min_ctas)],
            build,
        )
    }

    /// [`KernelModule::add_kernel_with_shared`] for a kernel that also has dynamic shared memory
    /// (after its static buffers), the `.extern .shared` array [`dynamic_shared_symbol`]`(name)`.
    pub fn add_kernel_with_shared_and_dynamic<F>(
        &self,
        name: &str,
        arguments: &[Type<'c>],
        shared: &[Type<'c>],
        build: F,
    ) -> Result<(), CodegenError>
    where
        F: FnOnce(&Block<'c>, Location<'c>) -> Result<(), CodegenError>,
    {
        self.append_dynamic_shared(name)?;
        self.add_function(name, arguments, shared, &[], build)
    }

    /// Declares kernel `name`'s dynamic shared-memory array (1024-byte aligned, as TMA's
    /// 128-byte swizzle needs).
    fn append_dynamic_shared(&self, name: &str) -> Result<(), CodegenError> {
        let context = self.context;
        let location = Location::unknown(context);
        let global = OperationBuilder::new("memref.global", location)
            .add_attributes(&[
                (
                    Identifier::new(context, "sym_name"),
                    StringAttribute::new(context, &dynamic_shared_symbol(name)).into(),
                ),
                (
                    Identifier::new(context, "type"),
                    TypeAttribute::new(dynamic_shared_type(context)).into(),
                ),
                (
                    Identifier::new(context, "alignment"),
                    IntegerAttribute::new(Type::parse(context, "i64").expect("i64 parses"), 1024)
                        .into(),
                ),
            ])
            .build()?;
        self.gpu_module_body().append_operation(global);
        Ok(())
    }

    /// The whole module.
    pub fn module(&self) -> &Module<'c> {
        &self.module
    }

    /// The whole module, mutably (lowering rewrites it in place).
    pub fn module_mut(&mut self) -> &mut Module<'c> {
        &mut self.module
    }
}

/// The `.extern .shared` array of kernel `entry`'s dynamic shared memory.
pub fn dynamic_shared_symbol(entry: &str) -> String {
    format!("{entry}_dynamic_shared")
}

/// The type of a dynamic shared-memory array: zero static bytes of workgroup memory.
pub fn dynamic_shared_type(context: &Context) -> Type<'_> {
    Type::parse(context, "memref<0xi8, #gpu.address_space<workgroup>>")
        .expect("a workgroup memref type parses")
}

/// Appends `operation` to `block` and returns its single result.
pub fn append_value<'c, 'a>(
    block: &'a Block<'c>,
    operation: impl Into<Operation<'c>>,
) -> Result<Value<'c, 'a>, CodegenError> {
    Ok(block.append_operation(operation.into()).result(0)?.into())
}

/// Appends `arith.constant <value> : index`.
pub fn index_constant<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    value: i64,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    let attribute = IntegerAttribute::new(Type::index(context), value);
    append_value(block, arith::constant(context, attribute.into(), location))
}

/// A grid or block dimension, as `gpu.block_id x` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `x`.
    X,
    /// `y`.
    Y,
    /// `z`.
    Z,
}

impl Dimension {
    fn attribute<'c>(self, context: &'c Context) -> Attribute<'c> {
        let source = match self {
            Dimension::X => "#gpu<dim x>",
            Dimension::Y => "#gpu<dim y>",
            Dimension::Z => "#gpu<dim z>",
        };
        Attribute::parse(context, source).expect("gpu dimension attributes parse")
    }
}

/// Appends `<name> <dimension>` for one of the `gpu` index ops (`gpu.block_id`, …): an `index`.
///
/// Built with the generic [`OperationBuilder`]: these ops take their `index` result type from a
/// custom C++ builder, not from `InferTypeOpInterface`, so melior's generated `gpu::block_id`
/// builder creates them with no result at all.
fn gpu_index_op<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    name: &str,
    dimension: Dimension,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    let operation = OperationBuilder::new(name, location)
        .add_attributes(&[(
            Identifier::new(context, "dimension"),
            dimension.attribute(context),
        )])
        .add_results(&[Type::index(context)])
        .build()?;
    append_value(block, operation)
}

/// Appends `gpu.block_id <dimension>` (an `index`).
pub fn block_id<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    dimension: Dimension,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    gpu_index_op(context, block, "gpu.block_id", dimension, location)
}

/// Appends `gpu.block_dim <dimension>` (an `index`).
fn block_dim<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    dimension: Dimension,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    gpu_index_op(context, block, "gpu.block_dim", dimension, location)
}

/// Appends `gpu.thread_id <dimension>` (an `index`).
pub fn thread_id<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    dimension: Dimension,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    gpu_index_op(context, block, "gpu.thread_id", dimension, location)
}

/// Appends the global thread index along x: `block_id.x * block_dim.x + thread_id.x`.
pub fn global_thread_index<'c, 'a>(
    context: &'c Context,
    block: &'a Block<'c>,
    location: Location<'c>,
) -> Result<Value<'c, 'a>, CodegenError> {
    let block_index = block_id(context, block, Dimension::X, location)?;
    let block_size = block_dim(context, block, Dimension::X, location)?;
    let thread = thread_id(context, block, Dimension::X, location)?;
    let first = append_value(block, arith::muli(block_index, block_size, location))?;
    append_value(block, arith::addi(first, thread, location))
}
