//! `dsc emulate`: any PTX kernel on the emulator from a launch file; buffers in and out as
//! safetensors, modeled figures as JSON, and errors that name the launch file's field.

use crate::support::{TempDir, dsc, streams};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// `out[i] = in[i] * factor` for `i < n`.
const SCALE_PTX: &str = r#".version 8.4
.target sm_90a
.address_size 64

.visible .entry scale(.param .u64 out, .param .u64 in, .param .u32 n, .param .f32 factor)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<6>;
    .reg .f32 %f<3>;
    .reg .pred %p;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.u32 %r1, %r2, %r3, %r1;
    ld.param.u32 %r2, [n];
    setp.ge.u32 %p, %r1, %r2;
    @%p bra DONE;
    ld.param.u64 %rd1, [in];
    ld.param.u64 %rd2, [out];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    add.s64 %rd5, %rd2, %rd3;
    ld.global.f32 %f1, [%rd4];
    ld.param.f32 %f2, [factor];
    mul.f32 %f1, %f1, %f2;
    st.global.f32 [%rd5], %f1;
DONE:
    ret;
}
"#;

const LAUNCH: &str = r#"{"entry": "scale", "grid": [2, 1, 1], "block": [64, 1, 1],
  "allocate": {"y": 400},
  "params": [{"ptr": "y"}, {"ptr": "x"}, {"u32": 100}, {"f32": 0.5}]}"#;

/// Writes the kernel, the launch file (`launch` text) and `x = [0, 1, …, 99]` (f32 [100]).
fn setup(tmp: &TempDir, launch: &str) -> [String; 3] {
    let ptx = tmp.join("scale.ptx");
    std::fs::write(&ptx, SCALE_PTX).unwrap();
    let json = tmp.join("launch.json");
    std::fs::write(&json, launch).unwrap();
    let x: Vec<u8> = (0..100).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![100], &x).unwrap();
    let buffers = tmp.join("in.safetensors");
    safetensors::serialize_to_file([("x", view)], None, &buffers).unwrap();
    [ptx, json, buffers].map(|p| p.to_string_lossy().into_owned())
}

#[test]
fn emulate_runs_a_kernel_and_writes_every_buffer() {
    let tmp = TempDir::new("emulate_runs");
    let [ptx, launch, buffers] = setup(&tmp, LAUNCH);
    let out_path = tmp.join("out.safetensors");
    let json_path = tmp.join("m.json");
    let out = dsc(&[
        "emulate",
        &ptx,
        "--launch",
        &launch,
        "--buffers",
        &buffers,
        "--output",
        out_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--profile",
    ]);
    let (stdout, stderr) = streams(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("modeled on H100 SXM"), "{stdout}");
    let bytes = std::fs::read(&out_path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let y = file.tensor("y").unwrap();
    assert_eq!((y.dtype(), y.shape()), (Dtype::U8, &[400][..]));
    let ys: Vec<f32> = y
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(ys, (0..100).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
    // The input comes back with its dtype and shape.
    let x = file.tensor("x").unwrap();
    assert_eq!((x.dtype(), x.shape()), (Dtype::F32, &[100][..]));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(m["label"], "modeled");
    assert_eq!(m["ctas_run"], 2);
    assert!(m["modeled_seconds"].as_f64().unwrap() > 0.0);
    for key in ["modeled_peak_fraction", "bound", "flops"] {
        assert!(m.get(key).is_some(), "{key} missing from {m}");
    }
}

#[test]
fn emulate_errors_name_the_launch_field_or_buffer() {
    let cases = [
        (
            LAUNCH.replace(r#"{"u32": 100}"#, r#"{"u32": "100"}"#),
            "params[2].u32: expected an unsigned integer, found a string",
        ),
        (
            LAUNCH.replace(r#"{"ptr": "x"}"#, r#"{"ptr": "z"}"#),
            "params[1].ptr: no buffer `z` (buffers: x, y)",
        ),
        (
            LAUNCH.replace(r#""block": [64, 1, 1]"#, r#""blocks": [64, 1, 1]"#),
            "blocks: unknown field `blocks`",
        ),
        (
            LAUNCH.replace(r#", {"f32": 0.5}"#, ""),
            "3 parameters given, the kernel takes 4",
        ),
        (
            LAUNCH.replace(r#""entry": "scale""#, r#""entry": "nope""#),
            "nope",
        ),
    ];
    for (i, (launch, want)) in cases.iter().enumerate() {
        let tmp = TempDir::new(&format!("emulate_bad_{i}"));
        let [ptx, launch_path, buffers] = setup(&tmp, launch);
        let out = dsc(&[
            "emulate",
            &ptx,
            "--launch",
            &launch_path,
            "--buffers",
            &buffers,
        ]);
        let (_, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(1), "{launch}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            stderr.contains(want),
            "{launch}: expected `{want}` in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
