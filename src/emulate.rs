//! `dsc emulate KERNELS.ptx --launch LAUNCH.json --buffers IN.safetensors`: any PTX kernel on
//! the emulator, launched as a launch file says (`dsc_emulator::launch_file`), with its modeled
//! time on request.

use std::collections::BTreeMap;
use std::path::Path;

use dsc_emulator::launch_file::LaunchFile;
use dsc_emulator::roofline::{self, DeviceModel, ModelOptions};
use dsc_emulator::{LaunchOptions, Module};
use dsc_ir::atomic_write::write_file_atomically;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::cli::EmulateArgs;
use crate::diagnostic::{Diagnostic, read_text};
use crate::output_file::{Input, check_distinct, check_output_file};

/// A buffer read from `--buffers`: its bytes, and its dtype and shape to write it back with.
struct Buffer {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The tensors of a safetensors file as raw buffers by name.
fn read_buffers(path: &Path) -> Result<BTreeMap<String, Buffer>, Diagnostic> {
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", path.display())))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Diagnostic::new(format!("{}: not a safetensors file: {e}", path.display())))?;
    Ok(file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let buffer = Buffer {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            };
            (name, buffer)
        })
        .collect())
}

/// The `--json` record.
#[derive(Serialize)]
struct EmulateJson<'a> {
    label: &'static str,
    entry: &'a str,
    device: &'static str,
    modeled_seconds: f64,
    modeled_serial_seconds: f64,
    modeled_peak_fraction: f64,
    bound: roofline::Bound,
    flops: u64,
    tflops: f64,
    ctas_run: u64,
    ctas_total: u64,
    warp_instructions: u64,
    resources: &'a [roofline::ResourceTime],
}

/// Runs the launch and writes what was asked.
pub fn run(args: &EmulateArgs) -> Result<(), Diagnostic> {
    let mut inputs = vec![
        Input::new("the PTX", &args.ptx),
        Input::new("the --launch file", &args.launch),
    ];
    if let Some(p) = &args.buffers {
        inputs.push(Input::new("the --buffers file", p));
    }
    let outputs: Vec<(&str, &Path)> = [("--output", &args.output), ("--json", &args.json)]
        .into_iter()
        .filter_map(|(flag, p)| Some((flag, p.as_deref()?)))
        .collect();
    for (flag, path) in &outputs {
        check_output_file(flag, path, &inputs)?;
    }
    check_distinct(&outputs, &[])?;
    let launch_text = read_text(&args.launch)?;
    let launch = LaunchFile::parse(&launch_text)
        .map_err(|e| Diagnostic::new(format!("{}: {e}", args.launch.display())))?;
    let ptx = read_text(&args.ptx)?;
    let module =
        Module::parse(&ptx).map_err(|e| Diagnostic::new(format!("{}: {e}", args.ptx.display())))?;
    let device = DeviceModel::by_name(&args.device_model).ok_or_else(|| {
        Diagnostic::new(format!(
            "--device-model {}: unknown (known: {})",
            args.device_model,
            DeviceModel::NAMES.join(", ")
        ))
    })?;
    let given = match &args.buffers {
        Some(path) => read_buffers(path)?,
        None => BTreeMap::new(),
    };
    let inputs: BTreeMap<String, Vec<u8>> = given
        .iter()
        .map(|(n, b)| (n.clone(), b.bytes.clone()))
        .collect();
    let options = LaunchOptions {
        sample_ctas: args.sample_ctas.map(|n| n.get()),
        ..LaunchOptions::default()
    };
    let out = launch
        .run(&module, &inputs, &options)
        .map_err(|e| Diagnostic::new(format!("{}: {e}", args.launch.display())))?;
    if let Some(path) = &args.output {
        write_buffers(path, &out.buffers, &given)?;
    }
    let profile = &out.profile;
    // Unique bytes of the buffers: DRAM traffic with perfect L2 reuse (the kernel's own
    // re-reads are L2 hits), the same assumption `dsc bench --device emu` makes for its GEMMs.
    let unique: u64 = out.buffers.values().map(|b| b.len() as u64).sum();
    let modeled = roofline::model_with(
        profile,
        &device,
        ModelOptions {
            dram_bytes: Some(unique),
            ..ModelOptions::default()
        },
    );
    let flops = profile.total_tensor_flops();
    if args.profile {
        println!(
            "{}: {} CTAs of {} emulated{}",
            launch.entry,
            profile.ctas_run,
            profile.ctas_total,
            if profile.ctas_run < profile.ctas_total {
                " (profile scaled to the grid)"
            } else {
                ""
            }
        );
        println!(
            "modeled on {}: {:.3} µs, {:.1}% of peak, {:?}-bound; {:.1} TFLOP/s of tensor work",
            device.name,
            modeled.seconds * 1e6,
            100.0 * modeled.peak_fraction,
            modeled.bound,
            flops as f64 / modeled.seconds / 1e12
        );
        for r in &modeled.resources {
            let name = format!("{:?}", r.resource);
            println!("  {name:<14} {:>12.3} µs", r.seconds * 1e6);
        }
    }
    if let Some(path) = &args.json {
        let record = EmulateJson {
            label: "modeled",
            entry: &launch.entry,
            device: device.name,
            modeled_seconds: modeled.seconds,
            modeled_serial_seconds: modeled.serial_seconds,
            modeled_peak_fraction: modeled.peak_fraction,
            bound: modeled.bound,
            flops,
            tflops: flops as f64 / modeled.seconds / 1e12,
            ctas_run: profile.ctas_run,
            ctas_total: profile.ctas_total,
            warp_instructions: profile.warp_instructions,
            resources: &modeled.resources,
        };
        let text = serde_json::to_string_pretty(&record).expect("serializable");
        std::fs::write(path, text + "\n")
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Writes every buffer: those given with their dtype and shape, the allocated ones as `U8`.
fn write_buffers(
    path: &Path,
    buffers: &BTreeMap<String, Vec<u8>>,
    given: &BTreeMap<String, Buffer>,
) -> Result<(), Diagnostic> {
    struct Raw<'a>(Dtype, Vec<usize>, &'a [u8]);
    impl safetensors::View for &Raw<'_> {
        fn dtype(&self) -> Dtype {
            self.0
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(self.2)
        }
        fn data_len(&self) -> usize {
            self.2.len()
        }
    }
    let raws: Vec<(&str, Raw)> = buffers
        .iter()
        .map(|(name, bytes)| {
            let raw = match given.get(name) {
                Some(b) => Raw(b.dtype, b.shape.clone(), bytes),
                None => Raw(Dtype::U8, vec![bytes.len()], bytes),
            };
            (name.as_str(), raw)
        })
        .collect();
    write_file_atomically(path, |tmp| {
        safetensors::serialize_to_file(raws.iter().map(|(n, r)| (*n, r)), None, tmp)
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", path.display())))
    })
}
