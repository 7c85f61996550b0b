//! The emulator backend on a handwritten PTX module: `z = x + y` over 64 f32s, in two CTAs of
//! 32 threads, and a twin kernel without its bounds check that faults.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use dsc_ir::DType;
use dsc_kernels::manifest::{
    ArenaInfo, KernelInfo, LaunchStep, Manifest, SCHEMA_VERSION, Storage, TensorInfo,
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
    let tensor = |name: &str, storage| TensorInfo {
        name: name.into(),
        dtype: "f32".into(),
        shape: vec![64],
        bytes: 256,
        storage,
    };
    let kernel_info = |entry: &str| KernelInfo {
        entry: entry.into(),
        spec: "add".into(),
        attrs: BTreeMap::new(),
        params: vec!["x".into(), "y".into(), "z".into()],
        block: [32, 1, 1],
        shared_bytes: 0,
    };
    let manifest = Manifest {
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
        kernels: vec![kernel_info("add_f32"), kernel_info("add_unguarded")],
        steps: vec![LaunchStep {
            op: "z".into(),
            kernel: kernel.into(),
            grid: [ctas, 1, 1],
            block: [32, 1, 1],
            shared_bytes: 0,
            args: vec!["x".into(), "y".into(), "z".into()],
            flops: 0,
            bytes: 768,
        }],
    };
    let dir = scratch_dir(test);
    std::fs::write(dir.join("graph.dsc"), GRAPH).unwrap();
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.join("kernels.ptx"), ptx).unwrap();
    Artifact::load(&dir).unwrap()
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
