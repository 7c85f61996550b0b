//! The emulator backend on a handwritten PTX module: `z = x + y` over 64 f32s, in two CTAs of
//! 32 threads, and a twin kernel without its bounds check that faults; and a TMA load through a
//! tensor map the backend encoded from the manifest (`LaunchStep::tensor_maps`), also run on the
//! CUDA backend when a Hopper GPU is present.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use dsc_ir::DType;
use dsc_kernels::manifest::{
    ArenaInfo, KernelInfo, LaunchStep, Manifest, SCHEMA_VERSION, Storage, TensorInfo, TensorMapArg,
    TensorMapDtype, TensorMapSwizzle,
};

use super::*;
use crate::artifact::Artifact;
use crate::backend::{Backend, StepPhase};
use crate::device::{Device, ResolvedDevice};
use crate::error::RuntimeError;
use crate::session::{Session, SessionOptions};
use crate::tensor::HostTensor;
use crate::testutil::scratch_dir;

const GRAPH: &str = r#"graph "add"
input %x: f32[64]
input %y: f32[64]
%z: f32[64] = add(%x, %y) role=residual
output %z
"#;

/// `add_f32` guards `i < 64`; `add_unguarded` does not (launched over 128 threads it writes
/// past `z`, which ends its allocation).
const PTX: &str = r#"//
.version 8.4
.target sm_90a
.address_size 64

.visible .entry add_f32(
	.param .u64 .ptr .align 1 add_f32_param_0,
	.param .u64 .ptr .align 1 add_f32_param_1,
	.param .u64 .ptr .align 1 add_f32_param_2
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<4>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<11>;

	ld.param.b64 	%rd1, [add_f32_param_0];
	ld.param.b64 	%rd2, [add_f32_param_1];
	ld.param.b64 	%rd3, [add_f32_param_2];
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r1, %r1, %r2, %r3;
	setp.gt.u32 	%p1, %r1, 63;
	@%p1 bra 	$L__done;
	mul.wide.u32 	%rd4, %r1, 4;
	add.s64 	%rd5, %rd1, %rd4;
	add.s64 	%rd6, %rd2, %rd4;
	add.s64 	%rd7, %rd3, %rd4;
	ld.global.f32 	%f1, [%rd5];
	ld.global.f32 	%f2, [%rd6];
	add.rn.f32 	%f3, %f1, %f2;
	st.global.f32 	[%rd7], %f3;
$L__done:
	ret;

}
.visible .entry add_unguarded(
	.param .u64 .ptr .align 1 add_unguarded_param_0,
	.param .u64 .ptr .align 1 add_unguarded_param_1,
	.param .u64 .ptr .align 1 add_unguarded_param_2
)
{
	.reg .b32 	%r<4>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<11>;

	ld.param.b64 	%rd1, [add_unguarded_param_0];
	ld.param.b64 	%rd2, [add_unguarded_param_1];
	ld.param.b64 	%rd3, [add_unguarded_param_2];
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r1, %r1, %r2, %r3;
	mul.wide.u32 	%rd4, %r1, 4;
	add.s64 	%rd7, %rd3, %rd4;
	mov.f32 	%f3, 0f3F800000;
	st.global.f32 	[%rd7], %f3;
	ret;

}
"#;

/// The `add` artifact whose one step launches `kernel` over `ctas` CTAs of 32 threads.
fn artifact(test: &str, kernel: &str, ctas: u32, ptx: &str) -> Artifact {
    let manifest = manifest(&["add_f32", "add_unguarded"], kernel, ctas, Vec::new());
    load(test, &manifest, ptx).unwrap()
}

/// The manifest of the `add` graph (f32[64] `x`, `y` in, `z` out) listing kernels `entries` of
/// parameters (x, y, z), whose one step launches `kernel` over `ctas` CTAs of 32 threads with
/// `tensor_maps`.
fn manifest(entries: &[&str], kernel: &str, ctas: u32, tensor_maps: Vec<TensorMapArg>) -> Manifest {
    let tensor = |name: &str, storage| TensorInfo {
        name: name.into(),
        dtype: "f32".into(),
        shape: vec![64],
        bytes: 256,
        storage,
    };
    let kernel_info = |entry: &&str| KernelInfo {
        entry: entry.to_string(),
        spec: "add".into(),
        attrs: BTreeMap::new(),
        params: vec!["x".into(), "y".into(), "z".into()],
        block: [32, 1, 1],
        shared_bytes: 0,
    };
    Manifest {
        schema_version: SCHEMA_VERSION,
        model: "add".into(),
        target: "sm_90a".into(),
        tensors: vec![
            tensor("x", Storage::Input),
            tensor("y", Storage::Input),
            tensor("z", Storage::Arena { offset: 0 }),
        ],
        arena: ArenaInfo {
            bytes: 256,
            no_reuse_bytes: 256,
            alignment: 256,
        },
        kernels: entries.iter().map(kernel_info).collect(),
        steps: vec![LaunchStep {
            op: "z".into(),
            kernel: kernel.into(),
            grid: [ctas, 1, 1],
            block: [32, 1, 1],
            shared_bytes: 0,
            args: vec!["x".into(), "y".into(), "z".into()],
            flops: 0,
            bytes: 768,
            tensor_maps,
        }],
    }
}

/// Writes an artifact of the `add` graph with `manifest` and `ptx` and loads it.
fn load(test: &str, manifest: &Manifest, ptx: &str) -> Result<Artifact, RuntimeError> {
    let dir = scratch_dir(test);
    std::fs::write(dir.join("graph.dsc"), GRAPH).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.join("kernels.ptx"), ptx).unwrap();
    Artifact::load(&dir)
}

fn inputs() -> HashMap<String, HostTensor> {
    let ramp = |scale: f32| (0..64).map(|i| i as f32 * scale).collect::<Vec<_>>();
    HashMap::from([
        (
            "x".to_string(),
            HostTensor::from_f32(DType::F32, vec![64], ramp(1.0)).unwrap(),
        ),
        (
            "y".to_string(),
            HostTensor::from_f32(DType::F32, vec![64], ramp(0.25)).unwrap(),
        ),
    ])
}

/// An emulator backend for `artifact` with random weights set.
fn backend_with_weights(artifact: &Artifact, options: EmuOptions) -> EmuBackend<'_> {
    let mut backend = EmuBackend::new(artifact, options).unwrap();
    backend
        .set_weights(crate::random_weights(&artifact.graph, 0).unwrap())
        .unwrap();
    backend
}

fn expected() -> Vec<f32> {
    (0..64).map(|i| i as f32 * 1.25).collect()
}

#[test]
fn a_session_on_the_emulator_runs_the_plan_with_modeled_timings() {
    let artifact = artifact("emu-session", "add_f32", 2, PTX);
    let mut session = Session::new(&artifact, Device::Emulator).unwrap();
    assert!(matches!(
        session.device().device,
        ResolvedDevice::Emulator(_)
    ));
    assert_eq!(session.device().short_name(), "emu");
    assert!(matches!(
        session.run(&inputs()),
        Err(RuntimeError::NoWeights)
    ));
    session.load_random_weights(0).unwrap();
    let first = session.run(&inputs()).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "z");
    assert_eq!(first[0].1.to_f32_vec(), expected());
    // Repeated runs reuse the buffers and agree.
    assert_eq!(session.run(&inputs()).unwrap(), first);
    let timings = session.timings();
    assert_eq!(timings.len(), 1);
    let modeled = timings[0]
        .modeled
        .as_ref()
        .expect("emulator timings are modeled");
    assert_eq!(timings[0].seconds, modeled.seconds);
    assert_eq!(modeled.device, "H100 SXM");
    assert_eq!(
        (timings[0].kernel.as_str(), timings[0].bytes),
        ("add_f32", 768)
    );
}

#[test]
fn step_by_step_runs_show_operands_before_and_results_after() {
    let artifact = artifact("emu-steps", "add_f32", 2, PTX);
    let mut backend = backend_with_weights(&artifact, EmuOptions::default());
    let mut seen = Vec::new();
    backend
        .run_step_by_step(&inputs(), &mut |i, phase, backend| {
            let z = backend.read_tensor("z")?.to_f32_vec();
            let x = backend.read_tensor("x")?.to_f32_vec();
            assert_eq!(x[3], 3.0);
            seen.push((i, phase, z[5]));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        seen,
        [(0, StepPhase::Before, 0.0), (0, StepPhase::After, 6.25)]
    );
    let e = backend.read_tensor("nope").unwrap_err().to_string();
    assert!(e.contains("no tensor `nope` in the manifest"), "{e}");
}

#[test]
fn a_fault_names_the_step_op_and_kernel() {
    let artifact = artifact("emu-fault", "add_unguarded", 4, PTX);
    let mut session = Session::new(&artifact, Device::Emulator).unwrap();
    session.load_random_weights(0).unwrap();
    let error = session.run(&inputs()).unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Emulator { step: 0, op, kernel, .. }
            if op == "z" && kernel == "add_unguarded"),
        "{error}"
    );
    let shown = error.to_string();
    // The emulator's own words follow: the faulting thread and the address.
    assert!(
        shown.starts_with("emulator: step 0 (op `z`, kernel `add_unguarded`): ")
            && shown.contains("block (")
            && shown.contains("address"),
        "{shown}"
    );
}

#[test]
fn ptx_the_emulator_cannot_parse_is_refused_naming_the_module() {
    let good = artifact("emu-parse-ok", "add_f32", 2, PTX);
    assert!(EmuBackend::new(&good, EmuOptions::default()).is_ok());
    let broken = PTX.replace("add.rn.f32 \t%f3, %f1, %f2;", "add.rn.f32 \t%f3, %f1, ;");
    let artifact = artifact("emu-parse", "add_f32", 2, &broken);
    let error = EmuBackend::new(&artifact, EmuOptions::default())
        .err()
        .expect("refused");
    assert!(
        matches!(error, RuntimeError::EmulatorLoad { .. }),
        "{error}"
    );
    let shown = error.to_string();
    assert!(
        shown.starts_with("the emulator cannot load ")
            && shown.contains("kernels.ptx: PTX line 32"),
        "{shown}"
    );
}

#[test]
fn sampling_runs_fewer_ctas_and_scales_the_profile() {
    let artifact = artifact("emu-sample", "add_f32", 2, PTX);
    let options = EmuOptions {
        sample_ctas: NonZeroU64::new(1),
        ..EmuOptions::default()
    };
    let mut backend = backend_with_weights(&artifact, options);
    let mut timings = Vec::new();
    backend.run(&inputs(), &mut timings).unwrap();
    let profile = &backend.profiles()[0];
    assert_eq!((profile.ctas_total, profile.ctas_run), (2, 1));
    assert!(timings[0].modeled.is_some());
}

#[test]
fn the_dispatch_layout_runs_every_cta_when_sampling() {
    let mut manifest = manifest(&["add_f32", "add_unguarded"], "add_f32", 2, Vec::new());
    manifest.kernels[0].spec = crate::emu::launch::UNSAMPLED_SPECS[1].into();
    let artifact = load("emu-sample-dispatch", &manifest, PTX).unwrap();
    let options = EmuOptions {
        sample_ctas: NonZeroU64::new(1),
        ..EmuOptions::default()
    };
    let mut backend = backend_with_weights(&artifact, options);
    backend.run(&inputs(), &mut Vec::new()).unwrap();
    let profile = &backend.profiles()[0];
    assert_eq!((profile.ctas_total, profile.ctas_run), (2, 2));
}

#[test]
fn the_accumulator_option_reaches_the_emulator() {
    let options = SessionOptions::default().with_accumulator(dsc_kernels::Accumulator::Hopper);
    assert_eq!(
        options.emulator.accumulator,
        dsc_kernels::Accumulator::Hopper
    );
    assert_eq!(options.cpu.accumulator, dsc_kernels::Accumulator::Hopper);
    let artifact = artifact("emu-accumulator", "add_f32", 2, PTX);
    let backend = EmuBackend::new(&artifact, options.emulator).unwrap();
    assert!(
        backend
            .steps
            .iter()
            .all(|s| s.options.accumulator == dsc_kernels::Accumulator::Hopper)
    );
}

#[test]
fn the_emulator_refuses_the_unpromoted_accumulator() {
    // Its kernels promote in their own code: the model would silently be the promoted one.
    let unpromoted = dsc_kernels::Accumulator::HopperUnpromoted;
    let options = SessionOptions::default().with_accumulator(unpromoted);
    let artifact = artifact("emu-unpromoted", "add_f32", 2, PTX);
    let err = Session::with_options(&artifact, Device::Emulator, options)
        .err()
        .expect("the emulator took the unpromoted model");
    assert!(
        err.to_string()
            .starts_with("emu cannot model the unpromoted accumulator"),
        "{err}"
    );
}

#[test]
fn the_emulator_needs_a_launch_plan_and_auto_never_picks_it() {
    let graph = crate::testutil::compiled_graph("mlp");
    let dir = crate::testutil::write_artifact("emu-no-plan", &graph);
    let artifact = Artifact::load(dir).unwrap();
    let error = Session::new(&artifact, Device::Emulator)
        .err()
        .expect("refused");
    assert!(
        matches!(error, RuntimeError::NoLaunchPlan { .. }),
        "{error}"
    );
    let auto = Session::new(&artifact, Device::Auto).unwrap();
    assert!(!matches!(auto.device().device, ResolvedDevice::Emulator(_)));
}

// ---------------------------------------------------------------------------------------------
// TMA tensor maps
// ---------------------------------------------------------------------------------------------

/// `tma_copy(map, y, z)`: thread 0 arms an mbarrier for [`TMA_BOX`]'s 256 bytes, acquires the
/// map its parameter 0 points to (written by the host, so the tensormap proxy fence of scope
/// `.sys` that a map in global memory needs, PTX ISA 8.3) and loads the box at (column [`TMA_AT`]`[0]`, row `TMA_AT[1]`) into shared
/// memory; all 32 threads wait on the phase, then copy the 64 f32s of the tile to `z`.
const TMA_PTX: &str = r#"//
.version 8.4
.target sm_90a
.address_size 64

.visible .entry tma_copy(
	.param .u64 tma_copy_param_0,
	.param .u64 tma_copy_param_1,
	.param .u64 tma_copy_param_2
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<6>;
	.shared .align 128 .b8 tile[256];
	.shared .align 8 .b64 bar;

	mov.u32 	%r1, %tid.x;
	setp.eq.u32 	%p1, %r1, 0;
	@%p1 mbarrier.init.shared::cta.b64 	[bar], 1;
	fence.mbarrier_init.release.cluster;
	bar.sync 	0;
	@!%p1 bra 	$L__wait;
	mov.u32 	%r2, 256;
	mbarrier.arrive.expect_tx.shared::cta.b64 	%rd1, [bar], %r2;
	ld.param.u64 	%rd2, [tma_copy_param_0];
	fence.proxy.tensormap::generic.acquire.sys 	[%rd2], 128;
	mov.s32 	%r3, 2;
	mov.s32 	%r4, 3;
	cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes 	[tile], [%rd2, {%r3, %r4}], [bar];
$L__wait:
	mbarrier.try_wait.parity.shared::cta.b64 	%p2, [bar], 0;
	@!%p2 bra 	$L__wait;
	ld.param.u64 	%rd3, [tma_copy_param_2];
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r5, %r1;
$L__copy:
	setp.ge.u32 	%p3, %r5, 64;
	@%p3 bra 	$L__done;
	mov.u32 	%r6, tile;
	shl.b32 	%r7, %r5, 2;
	add.s32 	%r6, %r6, %r7;
	ld.shared.f32 	%f1, [%r6];
	mul.wide.u32 	%rd4, %r5, 4;
	add.s64 	%rd5, %rd3, %rd4;
	st.global.f32 	[%rd5], %f1;
	add.s32 	%r5, %r5, 32;
	bra 	$L__copy;
$L__done:
	ret;

}
"#;

/// The box `tma_copy` loads: 8 f32 columns × 8 rows (256 bytes, the size of `z`).
const TMA_BOX: [u32; 2] = [8, 8];
/// Where `tma_copy` loads it: column 2, row 3.
const TMA_AT: [usize; 2] = [2, 3];

/// The map over `x` (f32[64] seen as 8 rows of 8, rows 32 bytes apart) covering only its first
/// 6 columns and 7 rows, so that the box at [`TMA_AT`] lies partly outside the map and the
/// zero fill shows even inside the tensor.
fn x_map() -> TensorMapArg {
    TensorMapArg {
        param: 0,
        dtype: TensorMapDtype::Float32,
        dims: vec![6, 7],
        strides_bytes: vec![32],
        box_dims: TMA_BOX.to_vec(),
        swizzle: TensorMapSwizzle::None,
    }
}

/// `x` as `tma_copy` loads it through [`x_map`]: element (row, column) of the box is x's
/// `8·(row + 3) + column + 2` inside the map's 7 rows and 6 columns, else 0.
fn tma_expected(x: &[f32]) -> Vec<f32> {
    let mut want = vec![0.0f32; 64];
    for row in 0..TMA_BOX[1] as usize {
        for column in 0..TMA_BOX[0] as usize {
            let (r, c) = (row + TMA_AT[1], column + TMA_AT[0]);
            if r < 7 && c < 6 {
                want[row * 8 + column] = x[r * 8 + c];
            }
        }
    }
    want
}

#[test]
fn a_tma_load_through_a_manifest_tensor_map_copies_the_box_and_zero_fills_outside_the_map() {
    let manifest = manifest(&["tma_copy"], "tma_copy", 1, vec![x_map()]);
    let artifact = load("emu-tma", &manifest, TMA_PTX).unwrap();
    let mut session = Session::new(&artifact, Device::Emulator).unwrap();
    session.load_random_weights(0).unwrap();
    let inputs = inputs();
    let x = inputs["x"].to_f32_vec();
    let outputs = session.run(&inputs).unwrap();
    let got = outputs[0].1.to_f32_vec();
    let want = tma_expected(&x);
    assert_eq!(got, want);
    // Both parts of the box are there: copied elements (x[0] is 0, the others not) and fill.
    assert_eq!(got.iter().filter(|&&v| v != 0.0).count(), 4 * 4);
    assert_eq!(got[0], x[3 * 8 + 2]);
    // The same on a second run: the maps are encoded once and stay valid.
    assert_eq!(session.run(&inputs).unwrap(), outputs);
}

#[test]
fn the_map_parameter_is_the_address_of_an_aligned_map_over_the_tensor() {
    let manifest = manifest(
        &["tma_copy"],
        "tma_copy",
        1,
        vec![
            x_map(),
            TensorMapArg {
                param: 2,
                swizzle: TensorMapSwizzle::B32,
                ..x_map()
            },
        ],
    );
    let artifact = load("emu-tma-params", &manifest, TMA_PTX).unwrap();
    let backend = EmuBackend::new(&artifact, EmuOptions::default()).unwrap();
    let params = &backend.steps[0].params;
    let address = |i: usize| match params[i] {
        dsc_emulator::ParamValue::U64(address) => address,
        ref other => panic!("parameter {i} is {other:?}"),
    };
    // y is passed as itself; x and z as maps, 128 bytes apart in one allocation.
    assert_eq!(address(1), backend.memory.pointer("y").unwrap());
    assert_eq!(address(2), address(0) + 128);
    for (param, tensor, swizzle) in [
        (0, "x", dsc_emulator::tensor_map::Swizzle::None),
        (2, "z", dsc_emulator::tensor_map::Swizzle::B32),
    ] {
        assert_eq!(address(param) % 64, 0);
        let mut bytes = [0u8; 128];
        backend
            .memory
            .global()
            .read(address(param), &mut bytes)
            .unwrap();
        let map = dsc_emulator::tensor_map::TensorMap::from_bytes(&bytes).unwrap();
        assert_eq!(map.global_address, backend.memory.pointer(tensor).unwrap());
        assert_eq!(map.global_dims[..2], [6, 7]);
        assert_eq!(map.global_strides_bytes[0], 32);
        assert_eq!(map.box_dims[..2], TMA_BOX);
        assert_eq!(map.swizzle, swizzle);
        assert_eq!(map.oob_fill, dsc_emulator::tensor_map::OobFill::None);
    }
}

#[test]
fn a_bad_tensor_map_is_refused_when_the_artifact_loads() {
    let cases = [
        (
            TensorMapArg {
                dims: vec![8, 9],
                ..x_map()
            },
            "step 0 (`z`): tensor_maps[0].dims: the map covers 288 bytes from the start of \
             `x`, which has 256",
        ),
        (
            TensorMapArg {
                param: 3,
                ..x_map()
            },
            "step 0 (`z`): tensor_maps[0].param: 3 is not a parameter of the step's 3 arguments",
        ),
        (
            TensorMapArg {
                swizzle: TensorMapSwizzle::B32,
                box_dims: vec![16, 8],
                ..x_map()
            },
            "step 0 (`z`): tensor_maps[0].box_dims: boxDim[0] = 16: the inner box dimension \
             (64 bytes) must be ≤ the 32-byte span of swizzle B32",
        ),
    ];
    for (i, (map, want)) in cases.into_iter().enumerate() {
        let manifest = manifest(&["tma_copy"], "tma_copy", 1, vec![map]);
        let error = load(&format!("emu-tma-bad-{i}"), &manifest, TMA_PTX).expect_err("refused");
        assert!(
            matches!(&error, RuntimeError::ManifestMismatch { problems, .. }
                if problems == &[want.to_string()]),
            "{error}"
        );
    }
}

#[test]
fn the_tma_artifact_gives_the_same_tile_on_a_hopper_gpu_when_there_is_one() {
    // The CUDA backend's maps (driver-encoded, in device memory) against the same expectation;
    // without a driver or an sm_90 GPU there is nothing to run.
    if !crate::cuda::driver_present() {
        return;
    }
    let Some(gpu) = crate::cuda::probe()
        .unwrap_or_default()
        .into_iter()
        .find(|gpu| gpu.compute_capability == (9, 0))
    else {
        return;
    };
    let manifest = manifest(&["tma_copy"], "tma_copy", 1, vec![x_map()]);
    let artifact = load("cuda-tma", &manifest, TMA_PTX).unwrap();
    let mut session = Session::new(&artifact, Device::Cuda(gpu.ordinal)).unwrap();
    session.load_random_weights(0).unwrap();
    let inputs = inputs();
    let outputs = session.run(&inputs).unwrap();
    assert_eq!(
        outputs[0].1.to_f32_vec(),
        tma_expected(&inputs["x"].to_f32_vec())
    );
}
