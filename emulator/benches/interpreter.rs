//! Emulator throughput: the launch plan of dsc's `examples/mlp.toml` (sm_90a: RMSNorm +
//! quantize, two FP8 tensor-core GEMMs, SwiGLU + quantize) run on the interpreter over
//! pseudo-random buffers; prints wall time and warp-/thread-instructions per second.
//! `cargo bench -p dsc-emulator --bench interpreter`. Regenerate the data with
//! `dsc compile examples/mlp.toml -o DIR` (kernels.ptx; steps and tensor sizes of manifest.json).

use std::collections::HashMap;
use std::time::Instant;

use dsc_emulator::{GlobalMemory, LaunchConfig, LaunchOptions, Module, ParamValue, launch};

const PTX: &str = include_str!("data/mlp.sm_90a.ptx");
const LAUNCHES: &str = include_str!("data/mlp.launches.json");

fn main() {
    let module = Module::parse(PTX).expect("the PTX parses");
    let plan: serde_json::Value = serde_json::from_str(LAUNCHES).expect("launches.json");
    let mut memory = GlobalMemory::new();
    let mut address: HashMap<String, u64> = HashMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (name, bytes) in plan["tensors"].as_object().expect("tensors") {
        let bytes = bytes.as_u64().expect("bytes");
        let a = memory.allocate(bytes);
        // Small finite bf16/f32/fp8 bit patterns: keep exponents low so nothing overflows.
        let data: Vec<u8> = (0..bytes)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 2 == 1 { 0x3c } else { (seed >> 56) as u8 }
            })
            .collect();
        memory.write(a, &data).expect("in bounds");
        address.insert(name.clone(), a);
    }
    let options = LaunchOptions::default();
    let (mut warp_instructions, mut thread_instructions) = (0u64, 0u64);
    let start = Instant::now();
    for step in plan["steps"].as_array().expect("steps") {
        let dims = |k: &str| -> [u32; 3] {
            let v: Vec<u32> = step[k]
                .as_array()
                .expect("dims")
                .iter()
                .map(|d| d.as_u64().unwrap() as u32)
                .collect();
            [v[0], v[1], v[2]]
        };
        let mut config = LaunchConfig::new(dims("grid"), dims("block"));
        config.dynamic_shared_bytes = step["shared_bytes"].as_u64().unwrap_or(0) as u32;
        let params: Vec<ParamValue> = step["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| ParamValue::U64(address[a.as_str().expect("name")]))
            .collect();
        let kernel = step["kernel"].as_str().expect("kernel");
        let profile =
            launch(&module, kernel, &memory, &config, &params, &options).expect("the launch runs");
        warp_instructions += profile.warp_instructions;
        thread_instructions += profile.thread_instructions;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "mlp (sm_90a), {} launches: {:.3} s, {:.1} M warp-instructions/s, {:.1} M thread-instructions/s on {} host threads",
        plan["steps"].as_array().map_or(0, Vec::len),
        seconds,
        warp_instructions as f64 / seconds / 1e6,
        thread_instructions as f64 / seconds / 1e6,
        rayon::current_num_threads()
    );
}
