//! One kernel alone on the emulator: its PTX for a target, and a launch over input buffers
//! (bytes) and freshly allocated outputs, for the focused kernel tests.

use dsc_codegen::kernels::GpuKernel;
use dsc_codegen::mlir::{KernelModule, create_context};
use dsc_codegen::{Target, compile_to_ptx};
use dsc_emulator::{
    GlobalMemory, LaunchConfig, LaunchOptions, LaunchProfile, Module, ParamValue, launch,
};

/// The PTX of `kernel` alone for `target`.
pub fn lower(kernel: &GpuKernel, target: Target) -> String {
    let context = create_context();
    let mut module = KernelModule::new(&context, "dsc_kernels");
    kernel
        .build(&module, &kernel.entry())
        .expect("kernel builds");
    compile_to_ptx(module.module_mut(), target).expect("kernel lowers")
}

/// Runs `kernel` (its PTX `ptx`) on the emulator with `inputs` (bytes, in parameter order)
/// and `outputs` (byte sizes, after the inputs; filled with garbage first, so that a position
/// the kernel forgets shows); returns the outputs' bytes.
pub fn run_ptx(
    kernel: &GpuKernel,
    target: Target,
    ptx: &str,
    inputs: &[Vec<u8>],
    outputs: &[usize],
) -> Vec<Vec<u8>> {
    run_ptx_with(
        kernel,
        target,
        ptx,
        inputs,
        outputs,
        &LaunchOptions::default(),
    )
}

/// [`run_ptx`] with the emulator's `options` (its MMAs' accumulator, say).
pub fn run_ptx_with(
    kernel: &GpuKernel,
    target: Target,
    ptx: &str,
    inputs: &[Vec<u8>],
    outputs: &[usize],
    options: &LaunchOptions,
) -> Vec<Vec<u8>> {
    let ptx = Module::parse(ptx).expect("emulator parses the PTX");
    let mut memory = GlobalMemory::new();
    let mut params = Vec::new();
    for bytes in inputs {
        let at = memory.allocate(bytes.len().max(4) as u64);
        memory.write(at, bytes).expect("write");
        params.push(ParamValue::U64(at));
    }
    // A TMA form's map parameters come between its operands and its outputs: each gets its
    // map over its operand's buffer, encoded as the runtime encodes it.
    let maps = kernel.tensor_maps();
    params.extend(maps.iter().map(|_| ParamValue::U64(0)));
    let mut out = Vec::new();
    for &len in outputs {
        let at = memory.allocate(len.max(4) as u64);
        memory.write(at, &vec![0x5a; len]).expect("write");
        params.push(ParamValue::U64(at));
        out.push((at, len));
    }
    for (over, map) in &maps {
        assert!(
            (inputs.len()..inputs.len() + maps.len()).contains(&map.param),
            "{target}: map parameter {} is not after the operands",
            map.param
        );
        let ParamValue::U64(base) = params[*over] else {
            unreachable!("operands are pointers")
        };
        let encoded = dsc_runtime::tensor_maps::emulator_map(map, base)
            .unwrap_or_else(|e| panic!("{target}: the map over parameter {over}: {e}"));
        let at = memory.allocate(128);
        memory.write(at, &encoded.to_bytes()).expect("write");
        params[map.param] = ParamValue::U64(at);
    }
    launch_kernel_with(kernel, &ptx, &memory, &params, options)
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    out.iter()
        .map(|&(at, len)| {
            let mut bytes = vec![0u8; len];
            memory.read(at, &mut bytes).expect("read");
            bytes
        })
        .collect()
}

/// Launches `kernel` (its entry in `module`) over `memory` with `params`: its grid, its block
/// and its dynamic shared memory, the default options.
pub fn launch_kernel(
    kernel: &GpuKernel,
    module: &Module,
    memory: &GlobalMemory,
    params: &[ParamValue],
) -> Result<LaunchProfile, String> {
    launch_kernel_with(kernel, module, memory, params, &LaunchOptions::default())
}

/// [`launch_kernel`] with the emulator's `options`.
pub fn launch_kernel_with(
    kernel: &GpuKernel,
    module: &Module,
    memory: &GlobalMemory,
    params: &[ParamValue],
    options: &LaunchOptions,
) -> Result<LaunchProfile, String> {
    let l = kernel.launch();
    let mut config = LaunchConfig::new(l.grid, l.block);
    config.dynamic_shared_bytes = kernel.dynamic_shared_bytes() as u32;
    launch(module, &kernel.entry(), memory, &config, params, options).map_err(|e| e.to_string())
}

/// Asserts that `kernel`'s outputs `got` on `target` are `want`, byte for byte, naming the
/// output and how many of its bytes differ.
pub fn assert_same_bytes(kernel: &GpuKernel, target: Target, got: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(got.len(), want.len(), "{target}: {}", kernel.canonical());
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{target}: {}: output {i} differs in {differ} of {} bytes",
            kernel.canonical(),
            want.len()
        );
    }
}
