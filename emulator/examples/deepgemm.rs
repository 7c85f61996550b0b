//! DeepGEMM's FP8 GEMM kernels (PTX in `bench/peers/deepgemm/` or `shared/peers/deepgemm/`) on
//! the emulator:
//!
//! ```text
//! deepgemm write PEER_DIR NAME ROWS OUT_DIR     # OUT_DIR/launch.json + buffers.safetensors,
//!                                               # for `dsc emulate`
//! deepgemm model PEER_DIR NAME ROWS [SAMPLE]    # modeled time of one launch (SAMPLE CTAs
//!                                               # emulated, default 2: one cluster)
//! ```
//!
//! `ROWS` is M for a dense kernel, and the comma-separated rows of each group for an m-grouped
//! one (`8192,8192,8192,8192`). `model` prints one JSON line: the shape, the modeled seconds,
//! TFLOP/s (of the useful 2·M·N·K) and bound on the H100 SXM model, with the DRAM traffic taken
//! as the buffers' unique bytes (the kernels' re-reads hit L2).

use std::collections::BTreeMap;
use std::path::Path;

use dsc_emulator::deepgemm::{DeepGemmKernel, GemmType, problem};
use dsc_emulator::roofline::{self, DeviceModel, ModelOptions};
use dsc_emulator::{LaunchOptions, Module};

fn read(dir: &str, name: &str, ext: &str) -> String {
    let path = format!("{dir}/{name}.{ext}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: deepgemm write PEER_DIR NAME ROWS OUT_DIR | model PEER_DIR NAME ROWS [SAMPLE]";
    if args.len() < 4 {
        fail(usage);
    }
    let (dir, name) = (&args[1], &args[2]);
    let rows: Vec<u32> = args[3]
        .split(',')
        .map(|r| {
            r.parse()
                .unwrap_or_else(|_| fail(&format!("ROWS: `{r}` is not a row count")))
        })
        .collect();
    let kernel = DeepGemmKernel::from_entry(
        &read(dir, name, "entry.txt"),
        &read(dir, name, "config.json"),
    )
    .unwrap_or_else(|e| fail(&e));
    if kernel.gemm_type == GemmType::Normal && rows.len() != 1 {
        fail("a dense kernel takes one row count");
    }
    let p = problem(&kernel, &rows, 1);
    let launch = kernel.launch_file(p.m);
    match args[0].as_str() {
        "write" => {
            let out = Path::new(args.get(4).unwrap_or_else(|| fail(usage)));
            std::fs::create_dir_all(out).unwrap_or_else(|e| fail(&e.to_string()));
            std::fs::write(out.join("launch.json"), launch.to_json())
                .unwrap_or_else(|e| fail(&e.to_string()));
            let views: Vec<(String, safetensors::tensor::TensorView)> = p
                .buffers
                .iter()
                .map(|(n, b)| {
                    let v = safetensors::tensor::TensorView::new(
                        safetensors::Dtype::U8,
                        vec![b.len()],
                        b,
                    )
                    .expect("a U8 view of its own length");
                    (n.clone(), v)
                })
                .collect();
            safetensors::serialize_to_file(views, None, &out.join("buffers.safetensors"))
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        "model" => {
            let sample: u64 = args
                .get(4)
                .map(|s| s.parse().unwrap_or_else(|_| fail("SAMPLE: not a number")))
                .unwrap_or(2);
            let module =
                Module::parse(&read(dir, name, "ptx")).unwrap_or_else(|e| fail(&e.to_string()));
            let options = LaunchOptions {
                sample_ctas: Some(sample),
                ..LaunchOptions::default()
            };
            let started = std::time::Instant::now();
            let out = launch
                .run(
                    &module,
                    &p.buffers.clone().into_iter().collect::<BTreeMap<_, _>>(),
                    &options,
                )
                .unwrap_or_else(|e| fail(&e));
            let unique: u64 = out.buffers.values().map(|b| b.len() as u64).sum();
            let device = DeviceModel::h100_sxm();
            let m = roofline::model_with(
                &out.profile,
                &device,
                ModelOptions {
                    dram_bytes: Some(unique),
                    ..ModelOptions::default()
                },
            );
            let useful_rows: u64 = p.row_group.iter().filter(|&&g| g >= 0).count() as u64;
            let flops = 2 * useful_rows * u64::from(kernel.n) * u64::from(kernel.k);
            let record = serde_json::json!({
                "label": "modeled",
                "kernel": name,
                "m": p.m,
                "n": kernel.n,
                "k": kernel.k,
                "groups": rows.len(),
                "device": device.name,
                "modeled_seconds": m.seconds,
                "modeled_serial_seconds": m.serial_seconds,
                "modeled_tflops": flops as f64 / m.seconds / 1e12,
                "bound": m.bound,
                "resources": m.resources,
                "ctas_run": out.profile.ctas_run,
                "emulated_seconds": started.elapsed().as_secs_f64(),
            });
            println!("{record}");
        }
        _ => fail(usage),
    }
}
