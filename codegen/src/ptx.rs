//! The MLIR-to-PTX pipeline: lowers a module holding one `gpu.module` to PTX text with MLIR's
//! own passes, then reads the PTX out of the resulting `gpu.binary`.
//!
//! ```text
//! builtin.module(
//!   nvvm-attach-target{chip=sm_90a features=+ptx84},        // #nvvm.target on the gpu.module
//!   gpu.module(
//!     convert-scf-to-cf,                                      // scf.if/for → cf branches
//!     convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv=true},// gpu/arith/memref/cf → llvm+nvvm
//!     convert-nvvm-to-llvm                                    // nvvm ops without an LLVM
//!   ),                                                        //   intrinsic → inline PTX
//!   reconcile-unrealized-casts,
//!   gpu-module-to-binary{format=isa}                          // LLVM NVPTX backend → PTX text
//! )
//! ```
//!
//! With bare-pointer memrefs, a `memref<Nxf32>` kernel argument is one `.param .u64 .ptr`: the
//! launch passes plain device pointers. Static shapes make that lossless.

use std::sync::{Arc, Mutex};

use melior::Context;
use melior::diagnostic::{Diagnostic, DiagnosticSeverity};
use melior::ir::attribute::{ArrayAttribute, AttributeLike};
use melior::ir::operation::OperationLike;
use melior::ir::{Attribute, BlockLike, Module};
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;

use crate::error::CodegenError;
use crate::target::Target;

/// The textual pass pipeline that lowers a `gpu.module` to PTX for `target`.
pub fn pipeline(target: Target) -> String {
    format!(
        "builtin.module(\
         nvvm-attach-target{{chip={chip} features={features}}},\
         gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true}},\
         convert-nvvm-to-llvm),\
         reconcile-unrealized-casts,\
         gpu-module-to-binary{{format=isa}})",
        chip = target.chip(),
        features = target.features(),
    )
}

/// Lowers `module` (holding one `gpu.module`) in place to a `gpu.binary` and returns its PTX.
/// The module must live in a context from [`crate::mlir::create_context`].
pub fn compile_to_ptx(module: &mut Module<'_>, target: Target) -> Result<String, CodegenError> {
    let context_ref = module.context();
    // SAFETY: the reference does not outlive this function, during which `module` (and so its
    // context) is borrowed.
    let context = unsafe { context_ref.to_ref() };
    let diagnostics = DiagnosticCapture::attach(context);

    if !module.as_operation().verify() {
        return Err(CodegenError::Verify {
            diagnostics: diagnostics.take(),
        });
    }

    let text = pipeline(target);
    let manager = PassManager::new(context);
    // The module was verified above; MLIR's passes keep it valid, and verifying after each of
    // them costs a few percent of the lowering.
    manager.enable_verifier(false);
    parse_pass_pipeline(manager.as_operation_pass_manager(), &text).map_err(|error| {
        CodegenError::PipelineParse {
            pipeline: text.clone(),
            message: error.to_string(),
        }
    })?;
    manager.run(module).map_err(|_| CodegenError::Lowering {
        target: target.to_string(),
        diagnostics: diagnostics.take(),
    })?;
    drop(diagnostics);

    extract_ptx(module)
}

/// Reads the PTX text of the single `gpu.binary` in a lowered module.
fn extract_ptx(module: &Module<'_>) -> Result<String, CodegenError> {
    let mut binaries = Vec::new();
    let mut next = module.body().first_operation();
    while let Some(operation) = next {
        if operation.name().as_string_ref().as_str() == Ok("gpu.binary") {
            binaries.push(operation.attribute("objects").map_err(|_| {
                CodegenError::MissingPtx("gpu.binary without an `objects` attribute".into())
            })?);
        }
        next = operation.next_in_block();
    }
    let [objects] = binaries.as_slice() else {
        return Err(CodegenError::MissingPtx(format!(
            "expected one gpu.binary, found {}",
            binaries.len()
        )));
    };
    let objects = ArrayAttribute::try_from(*objects)
        .map_err(|_| CodegenError::MissingPtx("`objects` is not an array".into()))?;
    if objects.len() != 1 {
        return Err(CodegenError::MissingPtx(format!(
            "expected one #gpu.object, found {}",
            objects.len()
        )));
    }
    let object = objects.element(0)?;
    let ptx = gpu_object_text(object)
        .ok_or_else(|| CodegenError::MissingPtx(format!("not a #gpu.object: {object}")))?;
    let ptx = ptx.trim_end_matches('\0').to_string();
    if !ptx.contains(".entry") && !ptx.contains(".version") {
        return Err(CodegenError::MissingPtx(
            "the #gpu.object does not hold PTX text (was format=isa used?)".into(),
        ));
    }
    Ok(ptx)
}

/// The payload of a `#gpu.object` attribute (PTX text for `format=isa`); `None` for any other
/// attribute. melior does not wrap the GPU dialect's attributes, hence the C API.
fn gpu_object_text(attribute: Attribute<'_>) -> Option<String> {
    // SAFETY: `attribute` is a live attribute; the C API only reads it, and the returned string
    // points into the attribute's storage, owned by the context, which outlives this call.
    unsafe {
        let raw = attribute.to_raw();
        if !mlir_sys::mlirAttributeIsAGPUObjectAttr(raw) {
            return None;
        }
        let object = mlir_sys::mlirGPUObjectAttrGetObject(raw);
        if object.data.is_null() {
            return Some(String::new());
        }
        let bytes = std::slice::from_raw_parts(object.data.cast::<u8>(), object.length);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Collects a context's diagnostics (instead of MLIR printing them to stderr) until dropped.
struct DiagnosticCapture<'c> {
    context: &'c Context,
    id: Option<melior::diagnostic::DiagnosticHandlerId>,
    messages: Arc<Mutex<Vec<String>>>,
}

impl<'c> DiagnosticCapture<'c> {
    fn attach(context: &'c Context) -> Self {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        let id = context.attach_diagnostic_handler(move |diagnostic| {
            let mut lines = Vec::new();
            format_diagnostic(&diagnostic, 0, &mut lines);
            sink.lock().unwrap_or_else(|e| e.into_inner()).extend(lines);
            true
        });
        DiagnosticCapture {
            context,
            id: Some(id),
            messages,
        }
    }

    /// Everything captured so far, one diagnostic (or note) per line.
    fn take(&self) -> String {
        let messages =
            std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()));
        if messages.is_empty() {
            "(MLIR reported no diagnostic)".to_string()
        } else {
            messages.join("\n")
        }
    }
}

impl Drop for DiagnosticCapture<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.context.detach_diagnostic_handler(id);
        }
    }
}

fn format_diagnostic(diagnostic: &Diagnostic<'_>, depth: usize, lines: &mut Vec<String>) {
    let severity = match diagnostic.severity() {
        DiagnosticSeverity::Error => "error",
        DiagnosticSeverity::Warning => "warning",
        DiagnosticSeverity::Note => "note",
        DiagnosticSeverity::Remark => "remark",
    };
    lines.push(format!(
        "{}{}: {severity}: {diagnostic}",
        "  ".repeat(depth),
        diagnostic.location()
    ));
    for index in 0..diagnostic.note_count() {
        if let Ok(note) = diagnostic.note(index) {
            format_diagnostic(&note, depth + 1, lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use melior::dialect::{arith, memref};
    use melior::ir::attribute::FloatAttribute;
    use melior::ir::r#type::MemRefType;
    use melior::ir::{BlockLike, Type};

    use super::*;
    use crate::mlir::kernel::{append_value, index_constant};
    use crate::mlir::{KernelModule, create_context};

    #[test]
    fn pipeline_names_the_target() {
        assert_eq!(
            pipeline(Target::Sm89),
            "builtin.module(nvvm-attach-target{chip=sm_89 features=+ptx84},\
             gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv=true},\
             convert-nvvm-to-llvm),\
             reconcile-unrealized-casts,gpu-module-to-binary{format=isa})"
        );
    }

    #[test]
    fn an_invalid_module_is_an_error_with_diagnostics() {
        let context = create_context();
        let mut module = KernelModule::new(&context, "dsc_kernels");
        let buffer = MemRefType::new(Type::index(&context), &[4], None, None).into();
        module
            .add_kernel("bad_store", &[buffer], |entry, location| {
                // Stores an f32 into a memref of index: rejected by memref.store's verifier.
                let zero = index_constant(&context, entry, 0, location)?;
                let value = FloatAttribute::new(&context, Type::float32(&context), 1.0);
                let value = append_value(entry, arith::constant(&context, value.into(), location))?;
                entry.append_operation(memref::store(
                    value,
                    entry.argument(0)?.into(),
                    &[zero],
                    location,
                ));
                Ok(())
            })
            .unwrap();
        let error = compile_to_ptx(module.module_mut(), Target::Sm90a).unwrap_err();
        let CodegenError::Verify { diagnostics } = &error else {
            panic!("expected a verification error, got {error}");
        };
        assert!(diagnostics.contains("bad_store"), "{diagnostics}");
        assert!(diagnostics.contains("error:"), "{diagnostics}");
    }
}
