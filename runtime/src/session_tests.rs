use super::*;
use crate::cpu;
use crate::device::ResolvedDevice;
use crate::inputs::random_inputs;
use crate::testutil::{compiled_graph, write_artifact};

fn artifact(test: &str, model: &str) -> Artifact {
    Artifact::load(write_artifact(test, &compiled_graph(model))).unwrap()
}

#[test]
fn a_cpu_session_runs_like_the_cpu_executor_and_times_each_op() {
    let artifact = artifact("session-cpu", "mlp");
    let mut session = Session::new(&artifact, Device::Cpu).unwrap();
    assert_eq!(session.device().device, ResolvedDevice::Cpu);
    let inputs = random_inputs(&artifact.graph, 1);
    assert!(matches!(session.run(&inputs), Err(RuntimeError::NoWeights)));
    session.load_random_weights(4).unwrap();
    let outputs = session.run(&inputs).unwrap();
    let weights = crate::random_weights(&artifact.graph, 4).unwrap();
    let expected = cpu::run(&artifact.graph, &weights, &inputs, &CpuOptions::default()).unwrap();
    assert_eq!(outputs, expected);
    let timings = session.timings();
    assert_eq!(timings.len(), artifact.graph.ops.len());
    assert!(timings.iter().any(|t| t.flops > 0));
    assert!(timings.iter().all(|t| t.bytes > 0 && t.seconds >= 0.0));
    // A second run gives the same outputs and replaces the timings.
    assert_eq!(session.run(&inputs).unwrap(), expected);
    assert_eq!(session.timings().len(), artifact.graph.ops.len());
}

#[test]
fn inputs_are_checked_by_name_dtype_and_shape() {
    let artifact = artifact("session-inputs", "mlp");
    let mut session = Session::new(&artifact, Device::Cpu).unwrap();
    session.load_random_weights(0).unwrap();
    let mut inputs = random_inputs(&artifact.graph, 0);
    let x = inputs.remove("x").unwrap();
    inputs.insert("y".into(), x);
    let error = session.run(&inputs).unwrap_err().to_string();
    assert!(
        error.contains("missing input `x` (bf16[64, 512])")
            && error.contains("unexpected input `y`"),
        "{error}"
    );
    // A weights file given as inputs: the first five problems and a count, not hundreds.
    let mut many = random_inputs(&artifact.graph, 0);
    for i in 0..20 {
        many.insert(
            format!("w{i:02}"),
            HostTensor::zeros(dsc_ir::DType::F32, vec![1]),
        );
    }
    let error = session.run(&many).unwrap_err().to_string();
    assert!(
        error.contains("unexpected input `w00`; ")
            && error.contains("unexpected input `w04`; and 15 more")
            && !error.contains("`w05`"),
        "{error}"
    );
    let mut inputs = random_inputs(&artifact.graph, 0);
    inputs.insert(
        "x".into(),
        HostTensor::zeros(dsc_ir::DType::F32, vec![64, 512]),
    );
    let error = session.run(&inputs).unwrap_err().to_string();
    assert!(
        error.contains("input `x` is f32[64, 512], expected bf16[64, 512]"),
        "{error}"
    );
}

#[test]
fn cuda_is_refused_with_the_reason_and_auto_falls_back_to_the_cpu() {
    let artifact = artifact("session-device", "mlp");
    // Without a launch plan no GPU can run this artifact, driver or not.
    let error = Session::new(&artifact, Device::Cuda(0))
        .err()
        .expect("refused");
    if !crate::cuda::driver_present() {
        assert!(matches!(error, RuntimeError::NoDriver), "{error}");
        assert_eq!(
            error.to_string(),
            "no CUDA driver: libcuda could not be loaded"
        );
    }
    let session = Session::new(&artifact, Device::Auto).unwrap();
    assert_eq!(session.device().device, ResolvedDevice::Cpu);
    let shown = session.device().to_string();
    assert!(shown.starts_with("cpu (auto: "), "{shown}");
    assert!(shown.contains(&error.to_string()), "{shown} / {error}");
}
