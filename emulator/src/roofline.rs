//! The roofline time model: a [`LaunchProfile`] and a [`DeviceModel`] give a **modeled** time,
//! never a measured one (docs/emulator-model.md describes the model in full).
//!
//! Each resource a launch uses gets a time at that resource's peak rate; the launch's time is the
//! largest of them plus the launch latency:
//!
//! ```text
//! q        = ceil(C / S) · S / C · imbalance           (C CTAs over S SMs: the busiest SM's share;
//!                                                       imbalance: the busiest CTA's work over
//!                                                       the mean CTA's, ≥ 1)
//! tensor   = q · Σ_kind flops[kind] / (peak[kind] · tensor_efficiency)
//! issue    = q · (warp_instructions + unpack · fp8_mma_sync_ops) / (S · 4 · clock)
//! fp32     = q · fp32_flops / fp32_peak
//! shared   = q · (shared_wavefronts + async_copy_bytes / 128) / (S · clock)
//! dram     = dram_bytes / (dram_bandwidth · dram_efficiency)
//!            (dram_bytes: given, e.g. the buffers' unique bytes, else
//!             (load_sectors + store_sectors) · 32 + async_copy_bytes)
//! l2       = same bytes / l2_bandwidth                   (only where a figure is published)
//! seconds  = max(tensor, issue, fp32, shared, dram, l2) + launch_latency
//! ```
//!
//! The two efficiencies are calibrated constants ([`TENSOR_EFFICIENCY`], [`DRAM_EFFICIENCY`]).
//! The bound is the resource with the largest time ([`Bound::Latency`] when the launch latency
//! exceeds them all); `peak_fraction` is that resource's time at peak without wave quantization
//! (the useful work over its peak rate) divided by `seconds`.

use serde::Serialize;

use crate::profile::LaunchProfile;

/// Peak rates of one GPU: published (datasheet / whitepaper) figures or figures derived from
/// them, each with its source; those without a source are **assumptions** and say so. None was
/// measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceModel {
    /// Name (`H100 SXM`, …).
    pub name: &'static str,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// The SM clock the model counts cycles at (issue, shared memory), Hz.
    pub clock_hz: f64,
    /// Dense FP8 (e4m3/e5m2) `wgmma` peak, FLOP/s; `None` without wgmma (before sm_90).
    pub wgmma_fp8_flops: Option<f64>,
    /// Dense BF16/FP16 `wgmma` peak, FLOP/s.
    pub wgmma_16bit_flops: Option<f64>,
    /// Dense FP8 `mma.sync` rate, FLOP/s.
    pub mma_sync_fp8_flops: f64,
    /// Dense BF16/FP16 `mma.sync` rate, FLOP/s.
    pub mma_sync_16bit_flops: f64,
    /// Extra warp-instructions per FP8 `mma.sync` that the PTX does not show: on sm_90a ptxas
    /// lowers an FP8 `mma.sync.m16n8k32` to two FP16 HMMAs plus conversions of the operands
    /// (A: 16 e4m3 per lane → 8 `f16x2` registers, B: 8 → 4, one conversion each: 12). 0 where
    /// FP8 `mma.sync` is native (sm_89).
    pub fp8_mma_sync_unpack_instructions: u64,
    /// FP32 CUDA-core peak (FMA = 2 FLOPs), FLOP/s.
    pub fp32_flops: f64,
    /// Warp schedulers per SM, each issuing one warp-instruction per clock.
    pub warp_schedulers_per_sm: u32,
    /// DRAM bandwidth, bytes/s.
    pub dram_bytes_per_s: f64,
    /// L2 bandwidth, bytes/s, where a figure is published (none is, for these parts: `None`).
    pub l2_bytes_per_s: Option<f64>,
    /// Shared-memory bandwidth per SM per clock: 32 banks × 4 bytes (one wavefront per clock:
    /// a model assumption).
    pub shared_bytes_per_clock_per_sm: u32,
    /// Kernel launch latency, seconds (an **assumption**: no datasheet gives it, and it was not
    /// measured; [`LAUNCH_LATENCY_S`]).
    pub launch_latency_s: f64,
    /// Fraction of the tensor-core peaks a well-pipelined kernel sustains
    /// ([`TENSOR_EFFICIENCY`], **calibrated** on DeepGEMM's published H800 figures).
    pub tensor_efficiency: f64,
    /// Fraction of the DRAM bandwidth a streaming kernel sustains ([`DRAM_EFFICIENCY`],
    /// **calibrated** on DeepGEMM's published H800 figures).
    pub dram_efficiency: f64,
    /// Most resident threads per SM (occupancy estimate; an **assumption**, see each device).
    pub max_threads_per_sm: u32,
    /// Most resident CTAs per SM (occupancy estimate; an **assumption**, see each device).
    pub max_ctas_per_sm: u32,
}

/// Kernel launch latency the model adds to every launch: 4 µs, an **assumption**: no datasheet
/// gives a launch latency and none was measured for this model.
const LAUNCH_LATENCY_S: f64 = 4e-6;

/// The fraction of the tensor-core peaks the model lets a kernel sustain: 0.695. **Calibrated**
/// (least squares over the log error, jointly with [`DRAM_EFFICIENCY`]) on DeepGEMM's own FP8
/// GEMM PTX run on the emulator at the nine shapes of its published H800 table
/// (`docs/emulator-model.md`, `bench/results/deepgemm-calibration.md`): the datasheet peak
/// assumes the boost clock throughout and no pipeline bubbles, which a GEMM with an
/// unoverlapped epilogue per tile and power-limited clocks does not reach.
const TENSOR_EFFICIENCY: f64 = 0.695;

/// The fraction of the DRAM bandwidth the model lets a kernel sustain: 0.86. **Calibrated** with
/// [`TENSOR_EFFICIENCY`] (its memory-bound shapes: M = 64 and 128).
const DRAM_EFFICIENCY: f64 = 0.86;

impl DeviceModel {
    /// NVIDIA H100 SXM5 (80 GB).
    ///
    /// - 132 SMs, 4 tensor cores and 4 warp schedulers per SM: NVIDIA H100 Tensor Core GPU
    ///   Architecture whitepaper (table "H100 SXM5").
    /// - Clock 1830 MHz: the boost clock at which NVIDIA's tensor-core peaks are computed
    ///   (528 tensor cores × 512 dense FP16 FMA/clk × 2 × 1.83 GHz = 989.4 TFLOP/s).
    /// - FP8 dense 1979 TFLOP/s (3958 with sparsity), BF16/FP16 dense 989.4 TFLOP/s (1979 with
    ///   sparsity), FP32 66.9 TFLOP/s (at the 1980 MHz maximum boost), HBM3 3.35 TB/s: the H100
    ///   datasheet and whitepaper.
    /// - `mma.sync` BF16/FP16: **assumed** half the wgmma peak (494.7 TFLOP/s); NVIDIA publishes
    ///   no separate figure, and wgmma is the instruction that reaches the published peak.
    /// - FP8 `mma.sync`: on sm_90a ptxas lowers it to FP16 HMMA with operand unpacks (DESIGN.md
    ///   §4), so it is modeled at the FP16 `mma.sync` rate per FLOP (the **assumed** 494.7
    ///   TFLOP/s above), plus 12 unpack warp-instructions per `mma.sync` on the issue resource.
    /// - TF32 at half the 16-bit rate, INT8 at the FP8 rate ([`DeviceModel::tensor_rate`]):
    ///   **assumptions** (no source checked).
    /// - 2048 threads and 32 CTAs per SM: **assumption** (the CUDA C++ Programming Guide's
    ///   compute capability 9.0 limits as recalled, not checked against the guide).
    pub fn h100_sxm() -> DeviceModel {
        DeviceModel {
            name: "H100 SXM",
            sms: 132,
            clock_hz: 1.83e9,
            wgmma_fp8_flops: Some(1979e12),
            wgmma_16bit_flops: Some(989.4e12),
            mma_sync_fp8_flops: 494.7e12,
            mma_sync_16bit_flops: 494.7e12,
            fp8_mma_sync_unpack_instructions: 12,
            fp32_flops: 66.9e12,
            warp_schedulers_per_sm: 4,
            dram_bytes_per_s: 3.35e12,
            l2_bytes_per_s: None,
            shared_bytes_per_clock_per_sm: 128,
            launch_latency_s: LAUNCH_LATENCY_S,
            tensor_efficiency: TENSOR_EFFICIENCY,
            dram_efficiency: DRAM_EFFICIENCY,
            max_threads_per_sm: 2048,
            max_ctas_per_sm: 32,
        }
    }

    /// NVIDIA H200 SXM (141 GB): the H100 SXM's GH100 compute (132 SMs; FP8 dense 1979,
    /// BF16 dense 989 TFLOP/s: H200 datasheet, 3958/1979 with sparsity) with HBM3e at
    /// 4.8 TB/s (H200 datasheet). Every other figure as [`DeviceModel::h100_sxm`].
    pub fn h200() -> DeviceModel {
        DeviceModel {
            name: "H200",
            dram_bytes_per_s: 4.8e12,
            ..DeviceModel::h100_sxm()
        }
    }

    /// NVIDIA L40S (Ada, sm_89).
    ///
    /// - 142 SMs (568 fourth-generation tensor cores): L40S datasheet / Ada whitepaper.
    /// - Clock 2520 MHz (boost): **assumption**, no source found; it sets the modeled issue and
    ///   shared-memory rates.
    /// - FP8 dense 733 TFLOP/s (1466 with sparsity), BF16/FP16 dense 362.05 TFLOP/s (733 with
    ///   sparsity), FP32 91.6 TFLOP/s, GDDR6 864 GB/s: L40S datasheet.
    /// - No wgmma; FP8 `mma.sync` is native on sm_89 (PTX ≥ 8.4), so `mma.sync` runs at the
    ///   tensor peaks and needs no unpacks.
    /// - TF32 at half the 16-bit rate, INT8 at the FP8 rate: **assumptions**, as on the H100.
    /// - 1536 threads and 24 CTAs per SM: **assumption** (the CUDA C++ Programming Guide's
    ///   compute capability 8.9 limits as recalled, not checked against the guide).
    pub fn l40s() -> DeviceModel {
        DeviceModel {
            name: "L40S",
            sms: 142,
            clock_hz: 2.52e9,
            wgmma_fp8_flops: None,
            wgmma_16bit_flops: None,
            mma_sync_fp8_flops: 733e12,
            mma_sync_16bit_flops: 362.05e12,
            fp8_mma_sync_unpack_instructions: 0,
            fp32_flops: 91.6e12,
            warp_schedulers_per_sm: 4,
            dram_bytes_per_s: 864e9,
            l2_bytes_per_s: None,
            shared_bytes_per_clock_per_sm: 128,
            launch_latency_s: LAUNCH_LATENCY_S,
            tensor_efficiency: TENSOR_EFFICIENCY,
            dram_efficiency: DRAM_EFFICIENCY,
            max_threads_per_sm: 1536,
            max_ctas_per_sm: 24,
        }
    }

    /// The model of a device name, case-insensitive, ignoring spaces, `-` and `_`: `h100`,
    /// `h100-sxm`, `h200`, `l40s`.
    pub fn by_name(name: &str) -> Option<DeviceModel> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect();
        match key.as_str() {
            "h100" | "h100sxm" | "h100sxm5" => Some(DeviceModel::h100_sxm()),
            "h200" | "h200sxm" => Some(DeviceModel::h200()),
            "l40s" => Some(DeviceModel::l40s()),
            _ => None,
        }
    }

    /// The names [`DeviceModel::by_name`] knows.
    pub const NAMES: [&'static str; 3] = ["h100-sxm", "h200", "l40s"];

    /// The rate at which the model counts tensor-core kind `kind` (`mma.m16n8k32.e4m3`,
    /// `wgmma.m64n128k32.e4m3`, …: instruction, shape, input type), FLOP/s, with a note when
    /// the kind had to be approximated.
    fn tensor_rate(&self, kind: &str) -> (f64, Option<String>) {
        let wgmma = kind.starts_with("wgmma");
        let dtype = kind.rsplit('.').next().unwrap_or("");
        let no_wgmma = || {
            format!(
                "tensor kind {kind}: the {} has no wgmma; counted at its mma.sync rate",
                self.name
            )
        };
        // The wgmma peak, the mma.sync rate and the scale of the input type. TF32 at half the
        // 16-bit rate and INT8 at the FP8 rate are **assumptions** (see `docs/emulator-model.md`).
        let (wgmma_peak, mma_sync, scale) = match dtype {
            "e4m3" | "e5m2" | "s8" | "u8" => (self.wgmma_fp8_flops, self.mma_sync_fp8_flops, 1.0),
            "bf16" | "f16" => (self.wgmma_16bit_flops, self.mma_sync_16bit_flops, 1.0),
            "tf32" => (self.wgmma_16bit_flops, self.mma_sync_16bit_flops, 0.5),
            _ => {
                // No modeled rate: the 16-bit mma.sync rate, noted (the missing wgmma, if
                // that is also the case, is the note).
                let note = if wgmma && self.wgmma_16bit_flops.is_none() {
                    no_wgmma()
                } else {
                    format!(
                        "tensor kind {kind}: input type {dtype:?} has no modeled rate; counted \
                         at the 16-bit mma.sync rate"
                    )
                };
                return (self.mma_sync_16bit_flops, Some(note));
            }
        };
        match (wgmma, wgmma_peak) {
            (true, Some(peak)) => (peak * scale, None),
            (true, None) => (mma_sync * scale, Some(no_wgmma())),
            (false, _) => (mma_sync * scale, None),
        }
    }
}

/// What bounds a launch in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Tensor-core throughput.
    TensorCore,
    /// CUDA-core instruction issue.
    Issue,
    /// FP32 CUDA-core arithmetic.
    CudaCoreFp32,
    /// DRAM bandwidth.
    Dram,
    /// L2 bandwidth (only with a published L2 figure).
    L2,
    /// Shared-memory bandwidth.
    SharedMemory,
    /// Launch overhead / latency (tiny launches).
    Latency,
}

/// One resource's modeled time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceTime {
    /// The resource.
    pub resource: Bound,
    /// Modeled seconds, wave quantization included.
    pub seconds: f64,
    /// Modeled seconds of the work at the resource's peak, without wave quantization.
    pub ideal_seconds: f64,
}

/// A modeled time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Modeled {
    /// Always `"modeled"`: these figures come from the roofline model, never from a GPU.
    pub label: &'static str,
    /// The device modeled.
    pub device: &'static str,
    /// Modeled seconds: every resource overlapping every other (the max), plus the launch
    /// latency. The model's lower bound.
    pub seconds: f64,
    /// Modeled seconds if no resource overlapped another (their sum), plus the launch latency:
    /// the model's upper bound, closer to a kernel that does not pipeline (loads, then MMAs, then
    /// the epilogue, in turn). The model cannot tell how well a kernel overlaps.
    pub serial_seconds: f64,
    /// Modeled fraction of the relevant peak (of the bound's resource) achieved: the bound
    /// resource's ideal time over `seconds` (for [`Bound::Latency`], of the busiest resource).
    pub peak_fraction: f64,
    /// The binding resource.
    pub bound: Bound,
    /// Every resource the launch used, largest time first.
    pub resources: Vec<ResourceTime>,
    /// Estimated resident CTAs per SM (from threads per CTA only, unless given).
    pub ctas_per_sm: u64,
    /// Waves: `ceil(ctas / (SMs × ctas_per_sm))`.
    pub waves: u64,
    /// Approximations made for this profile (unknown tensor kinds, …).
    pub notes: Vec<String>,
}

/// What the caller knows that the profile does not.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelOptions {
    /// Resident CTAs per SM, when known from registers and shared memory (the profile gives
    /// only threads per CTA).
    pub ctas_per_sm: Option<u64>,
    /// DRAM bytes, when known better than "every sector touched goes to DRAM" (e.g. the
    /// unique bytes of the kernel's buffers, as with perfect L2 reuse).
    pub dram_bytes: Option<u64>,
}

/// Models `profile` on `device` with no extra knowledge.
pub fn model(profile: &LaunchProfile, device: &DeviceModel) -> Modeled {
    model_with(profile, device, ModelOptions::default())
}

/// FLOPs per lane of FP32 CUDA-core opcodes (FMA 2, add/sub/mul 1); `None` for other opcodes.
fn fp32_flops_per_lane(opcode: &str) -> Option<u64> {
    if !opcode.ends_with(".f32") && !opcode.contains(".f32.") {
        return None;
    }
    let head = opcode.split('.').next().unwrap_or("");
    match head {
        "fma" | "mad" => Some(2),
        "add" | "sub" | "mul" => Some(1),
        _ => None,
    }
}

/// Whether a tensor kind is an FP8 `mma.sync` (unpacked on devices without native FP8 HMMA).
fn is_fp8_mma_sync(kind: &str) -> bool {
    kind.starts_with("mma.") && (kind.ends_with(".e4m3") || kind.ends_with(".e5m2"))
}

/// Models `profile` on `device`, with what the caller knows in `options`.
pub fn model_with(profile: &LaunchProfile, device: &DeviceModel, options: ModelOptions) -> Modeled {
    let sms = device.sms.max(1) as f64;
    let ctas = profile.ctas_total.max(1);
    // The busiest SM's share of the work relative to an even spread. Equal CTAs: wave
    // quantization, ceil(C/S)·S/C. Unequal ones (`cta_imbalance`: the busiest CTA's work over
    // the mean): in a grid of at most S CTAs (a persistent one) the busiest CTA is the busiest
    // SM's whole load, ceil(C/S)·S/C · imbalance. With more CTAs than SMs the block scheduler
    // hands each CTA to the first SM that frees (greedy list scheduling), which keeps the
    // busiest SM within an even share plus one busiest CTA: 1 + imbalance · S/C (Graham's
    // bound; causal attention's 8192 CTAs of 1 to 64 key tiles are within 3% of even). The
    // smaller of the two readings, never below wave quantization.
    let spread = (ctas.div_ceil(device.sms.max(1) as u64) as f64) * sms / ctas as f64;
    let imbalance = profile.cta_imbalance.max(1.0);
    let greedy = 1.0 + imbalance * sms / ctas as f64;
    let q = (spread * imbalance).min(spread.max(greedy));
    let ctas_per_sm = options.ctas_per_sm.unwrap_or_else(|| {
        let by_threads = device.max_threads_per_sm as u64 / profile.threads_per_cta.max(1);
        by_threads.clamp(1, device.max_ctas_per_sm as u64)
    });
    let waves = ctas.div_ceil(device.sms as u64 * ctas_per_sm.max(1));

    let mut notes = Vec::new();
    let mut resources = Vec::new();
    // A resource's time: its work at the datasheet peak (`ideal`, what `peak_fraction` is
    // measured against), wave-quantized or not, over the fraction of the peak it sustains.
    let mut push = |resource: Bound, ideal: f64, quantized: bool, efficiency: f64| {
        if ideal > 0.0 {
            let q = if quantized { q } else { 1.0 };
            resources.push(ResourceTime {
                resource,
                seconds: ideal * q / efficiency,
                ideal_seconds: ideal,
            });
        }
    };

    let mut tensor = 0.0;
    for (kind, &flops) in &profile.tensor_flops {
        let (rate, note) = device.tensor_rate(kind);
        notes.extend(note);
        tensor += flops as f64 / rate;
    }
    push(Bound::TensorCore, tensor, true, device.tensor_efficiency);

    let fp8_sync_ops: u64 = profile
        .tensor_ops
        .iter()
        .filter(|(kind, _)| is_fp8_mma_sync(kind))
        .map(|(_, &ops)| ops)
        .sum();

    let issue_rate = sms * device.warp_schedulers_per_sm as f64 * device.clock_hz;
    let instructions =
        profile.warp_instructions + fp8_sync_ops * device.fp8_mma_sync_unpack_instructions;
    push(Bound::Issue, instructions as f64 / issue_rate, true, 1.0);

    let fp32: u64 = profile
        .instruction_mix
        .iter()
        .filter_map(|(op, &n)| fp32_flops_per_lane(op).map(|f| f * 32 * n))
        .sum();
    push(
        Bound::CudaCoreFp32,
        fp32 as f64 / device.fp32_flops,
        true,
        1.0,
    );

    let wavefronts = profile.shared_wavefronts as f64
        + profile.async_copy_bytes as f64 / device.shared_bytes_per_clock_per_sm.max(1) as f64;
    push(
        Bound::SharedMemory,
        wavefronts / (sms * device.clock_hz),
        true,
        1.0,
    );

    let traffic = (profile.global_load_sectors + profile.global_store_sectors) * 32
        + profile.async_copy_bytes;
    let dram = options.dram_bytes.unwrap_or(traffic);
    push(
        Bound::Dram,
        dram as f64 / device.dram_bytes_per_s,
        false,
        device.dram_efficiency,
    );
    if let Some(l2) = device.l2_bytes_per_s {
        push(Bound::L2, traffic as f64 / l2, false, 1.0);
    }

    resources.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let busiest = resources.first();
    let busy = busiest.map_or(0.0, |r| r.seconds);
    let seconds = busy + device.launch_latency_s;
    let bound = match busiest {
        Some(r) if r.seconds >= device.launch_latency_s => r.resource,
        _ => Bound::Latency,
    };
    let peak_fraction = busiest.map_or(0.0, |r| r.ideal_seconds / seconds);
    let serial_seconds = resources.iter().map(|r| r.seconds).sum::<f64>() + device.launch_latency_s;
    Modeled {
        label: "modeled",
        device: device.name,
        seconds,
        serial_seconds,
        peak_fraction,
        bound,
        resources,
        ctas_per_sm,
        waves,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-30)
    }

    /// The modeled time of `resource` (which the launch must use).
    fn time(m: &Modeled, resource: Bound) -> &ResourceTime {
        m.resources
            .iter()
            .find(|r| r.resource == resource)
            .unwrap_or_else(|| panic!("no {resource:?} in {m:?}"))
    }

    fn gemm_profile(kind: &str, flops: u64, ops: u64, ctas: u64) -> LaunchProfile {
        let mut p = LaunchProfile {
            kernel: "gemm".into(),
            ctas_total: ctas,
            ctas_run: ctas,
            threads_per_cta: 384,
            warp_instructions: 1000,
            ..Default::default()
        };
        p.tensor_flops.insert(kind.into(), flops);
        p.tensor_ops.insert(kind.into(), ops);
        p
    }

    #[test]
    fn fp8_wgmma_gemm_runs_at_the_fp8_peak() {
        let (m, n, k) = (8448u64, 8192u64, 8192u64); // 66 × 64 tiles of 128 × 128: 4224 = 32 · 132
        let flops = 2 * m * n * k;
        let ops = flops / (2 * 64 * 128 * 32);
        let p = gemm_profile("wgmma.m64n128k32.e4m3", flops, ops, 4224);
        let h100 = DeviceModel::h100_sxm();
        let r = model(&p, &h100);
        let ideal = flops as f64 / 1979e12;
        assert_eq!(r.bound, Bound::TensorCore);
        assert_eq!(r.label, "modeled");
        assert!(
            close(
                r.seconds,
                ideal / TENSOR_EFFICIENCY + LAUNCH_LATENCY_S,
                1e-12
            ),
            "{r:?}"
        );
        assert!(close(r.peak_fraction, ideal / r.seconds, 1e-12));
        // Without overlap every resource's time adds up.
        let sum: f64 = r.resources.iter().map(|x| x.seconds).sum();
        assert!(close(r.serial_seconds, sum + LAUNCH_LATENCY_S, 1e-12));
        assert!(r.serial_seconds > r.seconds);
        assert!(r.peak_fraction > 0.99 * TENSOR_EFFICIENCY);
        // The H200 has the same compute.
        assert!(close(
            model(&p, &DeviceModel::h200()).seconds,
            r.seconds,
            1e-12
        ));
        // BF16 wgmma at half the rate.
        let b = gemm_profile("wgmma.m64n64k16.bf16", flops, 0, 4224);
        assert!(close(
            model(&b, &h100).seconds,
            flops as f64 / 989.4e12 / TENSOR_EFFICIENCY + LAUNCH_LATENCY_S,
            1e-12
        ));
    }

    #[test]
    fn streaming_kernel_is_dram_bound() {
        let bytes = 1u64 << 30;
        let p = LaunchProfile {
            ctas_total: 8192,
            ctas_run: 8192,
            threads_per_cta: 256,
            warp_instructions: bytes / 512 * 4, // 16-byte vector loads and stores, a few ops each
            global_load_sectors: bytes / 2 / 32,
            global_store_sectors: bytes / 2 / 32,
            ..Default::default()
        };
        let r = model(&p, &DeviceModel::h100_sxm());
        assert_eq!(r.bound, Bound::Dram);
        assert!(close(
            r.seconds,
            bytes as f64 / (3.35e12 * DRAM_EFFICIENCY) + LAUNCH_LATENCY_S,
            1e-12
        ));
        let r200 = model(&p, &DeviceModel::h200());
        assert!(close(
            r200.seconds,
            bytes as f64 / (4.8e12 * DRAM_EFFICIENCY) + LAUNCH_LATENCY_S,
            1e-12
        ));
        let l40s = model(&p, &DeviceModel::l40s());
        assert!(close(
            l40s.seconds,
            bytes as f64 / (864e9 * DRAM_EFFICIENCY) + LAUNCH_LATENCY_S,
            1e-12
        ));
        // Known unique bytes replace the sector traffic.
        let half = model_with(
            &p,
            &DeviceModel::h100_sxm(),
            ModelOptions {
                dram_bytes: Some(bytes / 2),
                ..Default::default()
            },
        );
        assert!(close(
            half.seconds,
            bytes as f64 / 2.0 / (3.35e12 * DRAM_EFFICIENCY) + LAUNCH_LATENCY_S,
            1e-12
        ));
    }

    #[test]
    fn a_persistent_grids_uneven_tiles_charge_the_busiest_cta() {
        let h100 = DeviceModel::h100_sxm();
        // 1792 tiles over 132 persistent CTAs: 76 take 14, 56 take 13 (mean 13.58).
        let per_tile = 2 * 128 * 128 * 16384u64;
        let mut p = gemm_profile("wgmma.m64n128k32.e4m3", per_tile * 1792, 0, 132);
        let even = model(&p, &h100).seconds - LAUNCH_LATENCY_S;
        p.cta_imbalance = 14.0 * 132.0 / 1792.0;
        let uneven = model(&p, &h100).seconds - LAUNCH_LATENCY_S;
        assert!(close(uneven, even * 14.0 * 132.0 / 1792.0, 1e-9));
        // What one CTA does is what the busiest SM does.
        let fourteen_tiles = 14.0 * per_tile as f64 / (1979e12 / 132.0) / TENSOR_EFFICIENCY;
        assert!(
            close(uneven, fourteen_tiles, 1e-9),
            "{uneven} vs {fourteen_tiles}"
        );
        // Not measured (0) counts as even.
        p.cta_imbalance = 0.0;
        assert!(close(
            model(&p, &h100).seconds - LAUNCH_LATENCY_S,
            even,
            1e-12
        ));
    }

    #[test]
    fn many_uneven_ctas_are_spread_by_the_block_scheduler() {
        let h100 = DeviceModel::h100_sxm();
        // Causal attention: 128 heads × 64 query blocks taking 1..=64 key tiles (mean 32.5).
        let ctas = 8192u64;
        let per_tile = 2 * 64 * 64 * 320u64;
        let mut p = gemm_profile("wgmma.m64n128k32.e4m3", per_tile * 128 * 2080, 0, ctas);
        let even = model(&p, &h100).seconds - LAUNCH_LATENCY_S;
        p.cta_imbalance = 64.0 / 32.5;
        let uneven = model(&p, &h100).seconds - LAUNCH_LATENCY_S;
        let spread = 63.0 * 132.0 / 8192.0;
        let greedy = 1.0 + 64.0 / 32.5 * 132.0 / 8192.0;
        assert!(
            close(uneven, even * greedy / spread, 1e-9),
            "{uneven} vs {even}"
        );
        // Within one busiest CTA of even, far below charging every wave the busiest CTA.
        assert!(uneven < even * 1.02, "{uneven} vs {even}");
    }

    #[test]
    fn wave_quantization_charges_the_busiest_sm() {
        let h100 = DeviceModel::h100_sxm();
        let per_cta = 2 * 128 * 128 * 4096u64;
        let t = |ctas: u64| {
            let p = gemm_profile("wgmma.m64n128k32.e4m3", per_cta * ctas, 0, ctas);
            model(&p, &h100).seconds - LAUNCH_LATENCY_S
        };
        let one_wave = t(132);
        assert!(
            close(t(133), 2.0 * one_wave, 1e-9),
            "one CTA over costs a second wave"
        );
        assert!(close(t(133), t(264), 1e-9));
        assert!(
            close(t(66), one_wave, 1e-9),
            "half the SMs idle: the same time as a full wave"
        );
        let p = gemm_profile("wgmma.m64n128k32.e4m3", per_cta * 133, 0, 133);
        let r = model(&p, &h100);
        assert_eq!(r.ctas_per_sm, 5); // 2048 / 384 threads
        assert_eq!(r.waves, 1);
        assert!(r.peak_fraction < 0.51, "{}", r.peak_fraction);
    }

    #[test]
    fn fp8_mma_sync_on_hopper_is_fp16_rate_plus_unpacks() {
        let flops = 2 * 16 * 8 * 32 * 1_000_000u64;
        let p = gemm_profile("mma.m16n8k32.e4m3", flops, 1_000_000, 1320);
        let h = model(&p, &DeviceModel::h100_sxm());
        let tensor = time(&h, Bound::TensorCore);
        assert!(close(
            tensor.seconds,
            flops as f64 / 494.7e12 / TENSOR_EFFICIENCY,
            1e-12
        ));
        let issue = time(&h, Bound::Issue);
        let instrs = (1000 + 12 * 1_000_000) as f64;
        assert!(close(issue.seconds, instrs / (132.0 * 4.0 * 1.83e9), 1e-12));
        // Native on the L40S: the FP8 peak and no unpacks.
        let l = model(&p, &DeviceModel::l40s());
        let tensor = time(&l, Bound::TensorCore);
        assert!(close(tensor.ideal_seconds, flops as f64 / 733e12, 1e-12));
        let issue = time(&l, Bound::Issue);
        assert!(close(
            issue.ideal_seconds,
            1000.0 / (142.0 * 4.0 * 2.52e9),
            1e-12
        ));
        // BF16 mma.sync.
        let b = gemm_profile("mma.m16n8k16.bf16", flops, 1, 1320);
        let t = model(&b, &DeviceModel::l40s()).resources[0].ideal_seconds;
        assert!(close(t, flops as f64 / 362.05e12, 1e-12));
    }

    #[test]
    fn wgmma_without_wgmma_and_unknown_kinds_are_noted() {
        let p = gemm_profile("wgmma.m64n128k32.e4m3", 1 << 40, 1, 1420);
        let r = model(&p, &DeviceModel::l40s());
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(r.notes[0].contains("no wgmma"));
        let p = gemm_profile("mma.m8n8k4.f64", 1 << 30, 1, 132);
        let r = model(&p, &DeviceModel::h100_sxm());
        assert!(r.notes[0].contains("f64"));
        let (tf32, _) = DeviceModel::h100_sxm().tensor_rate("wgmma.m64n64k8.tf32");
        assert!(close(tf32, 494.7e12, 1e-12));
    }

    #[test]
    fn tiny_launches_are_latency_bound() {
        let p = LaunchProfile {
            ctas_total: 1,
            ctas_run: 1,
            threads_per_cta: 32,
            warp_instructions: 100,
            global_load_sectors: 4,
            ..Default::default()
        };
        let r = model(&p, &DeviceModel::h100_sxm());
        assert_eq!(r.bound, Bound::Latency);
        assert!(r.seconds >= LAUNCH_LATENCY_S && r.seconds < 1.1 * LAUNCH_LATENCY_S);
        assert!(r.peak_fraction < 0.01);
        let empty = model(&LaunchProfile::default(), &DeviceModel::h100_sxm());
        assert_eq!(empty.bound, Bound::Latency);
        assert_eq!(empty.peak_fraction, 0.0);
        assert!(empty.resources.is_empty());
    }

    #[test]
    fn bank_conflicts_and_fp32_are_resources() {
        // 8-way bank conflicts: 8 wavefronts per request.
        let p = LaunchProfile {
            ctas_total: 1320,
            ctas_run: 1320,
            threads_per_cta: 256,
            warp_instructions: 10_000_000,
            shared_requests: 10_000_000,
            shared_wavefronts: 80_000_000,
            ..Default::default()
        };
        let r = model(&p, &DeviceModel::h100_sxm());
        assert_eq!(r.bound, Bound::SharedMemory);
        assert!(close(
            r.resources[0].seconds,
            80e6 / (132.0 * 1.83e9),
            1e-12
        ));
        let mut f = LaunchProfile {
            ctas_total: 1320,
            ctas_run: 1320,
            threads_per_cta: 256,
            warp_instructions: 10_000_000,
            ..Default::default()
        };
        f.instruction_mix.insert("fma.rn.f32".into(), 10_000_000);
        let r = model(&f, &DeviceModel::h100_sxm());
        let fp32 = time(&r, Bound::CudaCoreFp32);
        assert!(close(fp32.seconds, 10e6 * 32.0 * 2.0 / 66.9e12, 1e-12));
        assert_eq!(fp32_flops_per_lane("ld.global.f32"), None);
        assert_eq!(fp32_flops_per_lane("add.rn.f32"), Some(1));
        assert_eq!(fp32_flops_per_lane("fma.rn.f16"), None);
    }

    #[test]
    fn devices_by_name() {
        assert_eq!(DeviceModel::by_name("H100 SXM").unwrap().name, "H100 SXM");
        assert_eq!(DeviceModel::by_name("h100-sxm").unwrap().sms, 132);
        assert_eq!(
            DeviceModel::by_name("H200").unwrap().dram_bytes_per_s,
            4.8e12
        );
        assert_eq!(DeviceModel::by_name("l40s").unwrap().sms, 142);
        assert!(DeviceModel::by_name("a100").is_none());
        for n in DeviceModel::NAMES {
            assert!(DeviceModel::by_name(n).is_some(), "{n}");
        }
    }
}
