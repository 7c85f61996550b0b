//! The host memory a CPU or emulator session needs, checked against what the machine has
//! before anything is allocated: a failed allocation aborts the process (`memory allocation of
//! … failed`, SIGABRT), where a model too large for the machine must be an error that says
//! both numbers.
//!
//! The CPU backend holds floats as `f32` and integers as `i32` (one byte per FP8 code, see
//! [`HostData`](crate::HostData)), whatever their dtype: weights for the session's life, the
//! inputs for the run, and each intermediate until its last reader (the peak is computed by
//! walking the ops as [`crate::cpu::run_observed`] frees them). The emulator's device memory
//! is host memory too: the manifest's input, weight and arena buffers, on top of the host
//! copies of the weights and inputs it uploads.

use std::fmt;

use dsc_ir::{DType, Graph, ValueId};
use dsc_kernels::manifest::{Manifest, Storage};

use crate::error::RuntimeError;

/// Bytes per element of a host tensor of `dtype`.
fn host_element_bytes(dtype: DType) -> u64 {
    if dtype.is_fp8() { 1 } else { 4 }
}

/// Bytes of the host tensor holding value `v`.
fn host_bytes(graph: &Graph, v: ValueId) -> u64 {
    let ty = graph.ty(v);
    ty.shape
        .numel()
        .saturating_mul(host_element_bytes(ty.dtype))
}

/// What a session needs, by purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// Weights as the host holds them.
    pub weights: u64,
    /// One run's inputs as the host holds them.
    pub inputs: u64,
    /// The CPU backend's intermediates at their peak.
    pub intermediates: u64,
    /// The emulator's device buffers (inputs, weights, arena); 0 on the CPU.
    pub device: u64,
}

impl MemoryNeed {
    /// The CPU backend's need for `graph`.
    pub fn cpu(graph: &Graph) -> MemoryNeed {
        let sum = |values: &[ValueId]| {
            values
                .iter()
                .fold(0u64, |acc, &v| acc.saturating_add(host_bytes(graph, v)))
        };
        MemoryNeed {
            weights: sum(&graph.params),
            inputs: sum(&graph.inputs),
            intermediates: peak_intermediates(graph),
            device: 0,
        }
    }

    /// The emulator's need: the host's weights and inputs, which it uploads, and its device
    /// buffers (it runs the launch plan, not the graph: no host intermediates).
    pub fn emulator(graph: &Graph, manifest: &Manifest) -> MemoryNeed {
        let device = manifest
            .tensors
            .iter()
            .filter(|t| matches!(t.storage, Storage::Input | Storage::Weight { .. }))
            .fold(manifest.arena.bytes, |acc, t| acc.saturating_add(t.bytes));
        MemoryNeed {
            intermediates: 0,
            device,
            ..MemoryNeed::cpu(graph)
        }
    }

    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.inputs)
            .saturating_add(self.intermediates)
            .saturating_add(self.device)
    }

    /// Ok when the total fits in `available` bytes; else the error for `device`.
    pub fn check(&self, device: &str, available: Option<u64>) -> Result<(), RuntimeError> {
        match available {
            Some(available) if self.total() > available => Err(RuntimeError::OutOfHostMemory {
                device: device.to_string(),
                need: self.to_string(),
                needed: self.total(),
                available,
            }),
            _ => Ok(()),
        }
    }
}

/// Bytes in GiB, MiB or KiB (one decimal), or plain bytes under 1 KiB.
pub(crate) fn human(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

impl fmt::Display for MemoryNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weights {}, inputs {}",
            human(self.weights),
            human(self.inputs)
        )?;
        if self.intermediates > 0 {
            write!(
                f,
                ", intermediates at their peak {}",
                human(self.intermediates)
            )?;
        }
        if self.device > 0 {
            write!(
                f,
                ", emulated device buffers (inputs, weights, arena) {}",
                human(self.device)
            )?;
        }
        Ok(())
    }
}

/// The most bytes of intermediates the CPU backend holds at once: each op's results are made
/// while its operands are alive, and an intermediate is freed after its last reader (graph
/// outputs are kept).
fn peak_intermediates(graph: &Graph) -> u64 {
    let mut remaining = graph.use_counts();
    let mut owned = vec![false; graph.values.len()];
    let (mut live, mut peak) = (0u64, 0u64);
    for op in &graph.ops {
        for &r in &op.results {
            owned[r.index()] = true;
            live = live.saturating_add(host_bytes(graph, r));
        }
        peak = peak.max(live.saturating_add(scratch_bytes(graph, op)));
        for &v in &op.operands {
            let left = &mut remaining[v.index()];
            *left = left.saturating_sub(1);
            if *left == 0 && owned[v.index()] {
                owned[v.index()] = false;
                live = live.saturating_sub(host_bytes(graph, v));
            }
        }
    }
    peak
}

/// What a CPU reference allocates for itself while it runs `op`, beyond its results: the FP8
/// block GEMM decodes both operands' codes to f32 (4 bytes for each 1-byte code). (The fused
/// attention holds a block of rows' scores per thread, at most 16 MiB, and nothing else is
/// that large.)
fn scratch_bytes(graph: &Graph, op: &dsc_ir::Op) -> u64 {
    let codes = match (op.fp8_gemm_operands(), op.fp8_partials_operands()) {
        (Ok(o), _) => [o.x, o.w],
        (_, Ok(o)) => [o.x, o.w],
        _ => return 0,
    };
    codes.iter().fold(0u64, |acc, &v| {
        acc.saturating_add(graph.ty(v).shape.numel().saturating_mul(4))
    })
}

/// The memory this process can still allocate, when the system says: `MemAvailable` of
/// `/proc/meminfo`, or less when a cgroup (v2) limit leaves less. `None` elsewhere.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo.lines().find_map(|line| {
        let kib = line
            .strip_prefix("MemAvailable:")?
            .trim()
            .strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok()?.checked_mul(1024)
    })?;
    let read = |file: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{file}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    Some(cgroup.map_or(available, |c| c.min(available)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::example_graph;

    #[test]
    fn counts_host_f32_weights_inputs_and_the_peak_of_intermediates() {
        // x bf16[64, 512] -> norm -> up [1024] -> act -> down [512] (examples/mlp.toml).
        let graph = example_graph("mlp");
        let need = MemoryNeed::cpu(&graph);
        assert_eq!(need.inputs, 64 * 512 * 4);
        assert_eq!(need.weights, (512 + 1024 * 512 + 512 * 1024) * 4);
        // At `act`: `up` and `act` alive (the norm was freed after `up` read it).
        assert_eq!(need.intermediates, 2 * 64 * 1024 * 4);
        assert_eq!(need.device, 0);
    }

    #[test]
    fn a_need_above_what_is_available_is_an_error_that_says_both() {
        let need = MemoryNeed {
            weights: 3 << 30,
            inputs: 1 << 10,
            intermediates: 2 << 20,
            device: 0,
        };
        assert!(need.check("cpu", Some(4 << 30)).is_ok());
        assert!(need.check("cpu", None).is_ok());
        let message = need.check("cpu", Some(1 << 30)).unwrap_err().to_string();
        assert!(
            message.contains("needs 3.0 GiB of memory on cpu")
                && message.contains(
                    "weights 3.0 GiB, inputs 1.0 KiB, intermediates at their peak 2.0 MiB"
                )
                && message.contains("1.0 GiB are available"),
            "{message}"
        );
    }

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(human(4), "4 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
        assert_eq!(human(1 << 40), "1024.0 GiB");
    }

    #[test]
    fn the_machine_says_how_much_is_available() {
        if cfg!(target_os = "linux") {
            assert!(available_bytes().is_some_and(|b| b > 0));
        }
    }
}
