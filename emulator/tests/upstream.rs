//! Runs every fixture of `tests/upstream/` (PTX that MLIR's own CUDA integration tests lower to,
//! see `tests/upstream/README.md`) on the emulator and checks the results the upstream tests
//! document. Each fixture is its own test; a fixture whose instructions the emulator does not
//! implement fails with the emulator's error (it is never skipped).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dsc_emulator::tensor_map::{DataType, Interleave, L2Promotion, OobFill, Swizzle, TensorMap};
use dsc_emulator::{GlobalMemory, LaunchConfig, LaunchOptions, Module, ParamValue, launch};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream"))
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dims3(v: &Value) -> [u32; 3] {
    let a: Vec<u32> = v
        .as_array()
        .expect("a 3-element array")
        .iter()
        .map(|x| x.as_u64().expect("an integer") as u32)
        .collect();
    [a[0], a[1], a[2]]
}

fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "f16" | "bf16" => 2,
        "f32" | "i32" => 4,
        "f64" | "i64" => 8,
        other => panic!("unknown buffer dtype {other}"),
    }
}

fn tensor_map_type(name: &str) -> DataType {
    match name {
        "float16" => DataType::Float16,
        "float32" => DataType::Float32,
        "bfloat16" => DataType::Bfloat16,
        other => panic!("unknown tensor map dtype {other}"),
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an integer"))
        .collect()
}

/// Encodes the 128-byte tensor map a `{"tensor_map_ptr": {...}}` parameter describes over
/// `buffers[spec.buffer]`, places it in global memory and returns its address.
fn tensor_map_param(
    spec: &Value,
    buffers: &BTreeMap<String, u64>,
    memory: &mut GlobalMemory,
) -> u64 {
    let buffer = spec["buffer"].as_str().expect("tensor map buffer");
    let dims = u64s(&spec["dims"]);
    let strides = u64s(&spec["strides_bytes"]);
    let boxes: Vec<u32> = u64s(&spec["box"]).iter().map(|&b| b as u32).collect();
    let estrides: Vec<u32> = u64s(&spec["element_strides"])
        .iter()
        .map(|&b| b as u32)
        .collect();
    let swizzle = match spec["swizzle"].as_str().expect("swizzle") {
        "none" => Swizzle::None,
        "32B" => Swizzle::B32,
        "64B" => Swizzle::B64,
        "128B" => Swizzle::B128,
        other => panic!("unknown swizzle {other}"),
    };
    assert_eq!(spec["interleave"], "none");
    assert_eq!(spec["l2_promotion"], "none");
    assert_eq!(spec["oob_fill"], "none");
    let map = TensorMap::encode_tiled(
        tensor_map_type(spec["dtype"].as_str().expect("dtype")),
        dims.len() as u32,
        buffers[buffer],
        &dims,
        &strides,
        &boxes,
        &estrides,
        Interleave::None,
        swizzle,
        L2Promotion::None,
        OobFill::None,
    )
    .unwrap_or_else(|e| panic!("encoding the tensor map over `{buffer}`: {e}"));
    // Allocations are 256-byte aligned (≥ the 64 bytes a CUtensorMap needs).
    let address = memory.allocate(128);
    assert_eq!(address % 64, 0);
    memory.write(address, &map.to_bytes()).unwrap();
    address
}

/// Runs fixture `name` and checks every documented result.
fn run_fixture(name: &str) {
    let json: Value = serde_json::from_slice(&read(&format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    let ptx = String::from_utf8(read(&format!("{name}.ptx"))).unwrap();
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{name}.ptx does not parse: {e}"));

    let mut memory = GlobalMemory::new();
    let mut buffers = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for (buf, spec) in json["buffers"].as_object().expect("buffers") {
        let elems: u64 = u64s(&spec["shape"]).iter().product();
        let bytes = elems * dtype_bytes(spec["dtype"].as_str().expect("dtype"));
        let address = memory.allocate(bytes);
        match spec["init"]["kind"].as_str().expect("init kind") {
            "zeros" => {}
            "file" => {
                let data = read(spec["init"]["path"].as_str().expect("init path"));
                assert_eq!(data.len() as u64, bytes, "{buf}: init file size");
                memory.write(address, &data).unwrap();
            }
            other => panic!("{buf}: unknown init kind {other}"),
        }
        buffers.insert(buf.clone(), address);
        sizes.insert(buf.clone(), bytes);
    }

    let mut params = Vec::new();
    for p in json["params"].as_array().expect("params") {
        let v = if let Some(buf) = p.get("ptr") {
            ParamValue::U64(buffers[buf.as_str().expect("buffer name")])
        } else if let Some(n) = p.get("u64") {
            ParamValue::U64(n.as_u64().expect("u64"))
        } else if let Some(n) = p.get("u32") {
            ParamValue::U32(n.as_u64().expect("u32") as u32)
        } else if let Some(spec) = p.get("tensor_map_ptr") {
            ParamValue::U64(tensor_map_param(spec, &buffers, &mut memory))
        } else {
            panic!("{name}: unknown parameter {p}");
        };
        params.push(v);
    }

    let config = LaunchConfig {
        grid: dims3(&json["grid"]),
        block: dims3(&json["block"]),
        cluster: dims3(&json["cluster"]),
        dynamic_shared_bytes: json["dynamic_shared_bytes"].as_u64().unwrap_or(0) as u32,
    };
    let entry = json["entry"].as_str().expect("entry");
    let result = launch(
        &module,
        entry,
        &memory,
        &config,
        &params,
        &LaunchOptions::default(),
    );
    // A fixture whose kernel is wrong by PTX's rules states the error the emulator must give.
    if let Some(error) = json["expect_error"].as_object() {
        let e = result.expect_err(&format!("{name}: the emulator must refuse this kernel"));
        let text = e.to_string();
        for needle in error["contains"].as_array().expect("contains") {
            let needle = needle.as_str().expect("a string");
            assert!(text.contains(needle), "{name}: `{text}` lacks `{needle}`");
        }
        return;
    }
    if let Err(e) = result {
        panic!("{name}: the emulator fails: {e}");
    }

    let expects: Vec<&Value> = match &json["expect"] {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    for expect in expects {
        let buf = expect["buffer"].as_str().expect("expect buffer");
        let kind = expect["kind"].as_str().expect("expect kind");
        assert!(
            matches!(kind, "exact" | "check_values"),
            "{name}: unknown expect kind {kind}"
        );
        let want = read(expect["file"].as_str().expect("expect file"));
        let mut got = vec![0u8; sizes[buf] as usize];
        memory.read(buffers[buf], &mut got).unwrap();
        assert_eq!(want.len(), got.len(), "{name}: {buf}: expected file size");
        let dtype = json["buffers"][buf]["dtype"].as_str().unwrap();
        let width = dtype_bytes(dtype) as usize;
        let mismatches: Vec<String> = got
            .chunks(width)
            .zip(want.chunks(width))
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| format!("[{i}] got {} want {}", show(dtype, g), show(dtype, w)))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{name}: {buf}: {} of {} elements differ, first: {}",
            mismatches.len(),
            got.len() / width,
            mismatches[..mismatches.len().min(8)].join(", ")
        );
    }
}

fn show(dtype: &str, b: &[u8]) -> String {
    match dtype {
        "f16" => format!(
            "{}",
            half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
        ),
        "f32" => format!("{}", f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => format!("{b:02x?}"),
    }
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_fixture(stringify!($name));
            }
        )*

        /// Every fixture in the folder has a test above.
        #[test]
        fn every_fixture_has_a_test() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(fixture_dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                    assert!(listed.contains(&stem.as_str()), "fixture {stem} has no test");
                }
            }
        }
    };
}

fixtures!(
    shuffle,
    all_reduce_op,
    wmma_matmul_f16,
    mma_sync_f16_f16_accum,
    mma_sync_tf32,
    tma_load_64x8_8x128_noswizzle,
    tma_load_128x64_swizzle128b,
    gemm_f32_f16_f16_128x128x128,
);
