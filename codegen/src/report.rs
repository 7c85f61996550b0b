//! The analysis behind `report.txt` and `report.json` (DESIGN.md §5): precision per op, FP8
//! share of GEMM FLOPs, weight bytes as deployed (FP8 + scales) against all-BF16, fused kernels,
//! time per pass and the launch plan's figures. [`Report`] is report.json's schema
//! ([`Report::to_json`]); the `dsc` binary renders report.txt and its summary from it.

use crate::Generated;
use crate::lower::KernelTime;
use dsc_ir::{DType, Graph, Op, OpKind, Role};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// The whole report, as written to report.json.
#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub ops: Vec<OpReport>,
    pub summary: Summary,
    pub passes: Vec<PassReport>,
    /// The launch plan and where codegen's time went (absent until codegen ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codegen: Option<CodegenReport>,
}

/// The launch plan's figures and codegen's time.
#[derive(Debug, Serialize)]
pub struct CodegenReport {
    pub target: String,
    /// Distinct kernel entries in kernels.ptx.
    pub kernels: usize,
    /// Launches per forward pass.
    pub launches: usize,
    /// Arena bytes with liveness-based reuse.
    pub arena_bytes: u64,
    /// Arena bytes if every intermediate had its own region.
    pub arena_bytes_no_reuse: u64,
    /// Kernel selection and arena planning.
    pub plan_ms: f64,
    /// Building the kernels' MLIR with melior, summed over the kernels lowered.
    pub build_mlir_ms: f64,
    /// MLIR's passes down to PTX, summed over the kernels lowered.
    pub lower_ms: f64,
    /// Wall time of building, lowering (on `threads` threads) and joining every kernel.
    pub kernels_ms: f64,
    /// Threads that lowered kernels.
    pub threads: usize,
    /// Kernels whose PTX came from the cache.
    pub cache_hits: usize,
    /// Whether the kernels' PTX could not be joined and was lowered again as one module.
    pub lowered_whole: bool,
    /// The kernels that took longest to build and lower, longest first.
    pub slowest_kernels: Vec<KernelTime>,
}

/// One op's precision.
#[derive(Debug, Serialize)]
pub struct OpReport {
    pub name: String,
    pub kind: &'static str,
    pub role: &'static str,
    pub compute: Option<&'static str>,
    pub accumulate: Option<&'static str>,
    pub inputs: Vec<&'static str>,
    pub outputs: Vec<&'static str>,
    /// Multiply-add FLOPs (2 per MAC) for matrix products, absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm_flops: Option<u64>,
}

/// How many ops of a role compute in a dtype.
#[derive(Debug, Serialize)]
pub struct RolePrecisionCount {
    pub role: &'static str,
    pub compute: &'static str,
    pub count: usize,
}

/// Totals over the graph.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub op_count: usize,
    pub ops_by_role_and_precision: Vec<RolePrecisionCount>,
    pub gemm_flops: u64,
    pub fp8_gemm_flops: u64,
    /// `fp8_gemm_flops / gemm_flops` (0 when there are no GEMMs).
    pub fp8_gemm_flop_share: f64,
    pub param_count: usize,
    pub param_elements: u64,
    /// FP8 weight bytes of FP8 GEMMs.
    pub weight_bytes_fp8: u64,
    /// Their f32 block scales (`weight_scale_inv`).
    pub weight_bytes_scales: u64,
    /// Every other weight in its stored dtype.
    pub weight_bytes_high: u64,
    /// The sum of the three above: what a deployed FP8 checkpoint holds.
    pub weight_bytes_deployed: u64,
    /// The same weights all in BF16.
    pub weight_bytes_bf16: u64,
    /// How many fused kernels of each kind the graph holds (`fp8_gemm`, `rms_norm_quant`, …).
    pub fusions: Vec<FusionCount>,
}

/// How many ops of one fused kind (and, for GEMMs, how many of them are grouped).
#[derive(Debug, Serialize)]
pub struct FusionCount {
    pub kind: &'static str,
    pub count: usize,
    pub grouped: usize,
}

/// The fused kinds, in the order reports list them.
const FUSED_KINDS: [OpKind; 7] = [
    OpKind::Fp8Gemm,
    OpKind::RmsNormQuant,
    OpKind::SwigluQuant,
    OpKind::Attention,
    OpKind::AttentionQuant,
    OpKind::AddRmsNormQuant,
    OpKind::AddRmsNorm,
];

fn fusions(g: &Graph) -> Vec<FusionCount> {
    FUSED_KINDS
        .iter()
        .map(|&kind| {
            let ops = g.ops.iter().filter(|o| o.kind == kind);
            let (count, grouped) = ops.fold((0, 0), |(c, gr), o| {
                (
                    c + 1,
                    gr + usize::from(kind == OpKind::Fp8Gemm && o.operands.len() == 5),
                )
            });
            FusionCount {
                kind: kind.name(),
                count,
                grouped,
            }
        })
        .collect()
}

/// How long one pass took.
#[derive(Debug, Serialize)]
pub struct PassReport {
    pub name: &'static str,
    pub ms: f64,
}

fn is_fp8(op: &Op) -> bool {
    op.precision.is_some_and(|p| p.compute.is_fp8())
}

/// Builds the report of a compiled graph; `passes` is the time of each pass, in order.
pub fn build(g: &Graph, passes: Vec<PassReport>) -> Report {
    let ops: Vec<OpReport> = g
        .ops
        .iter()
        .map(|op| OpReport {
            name: g.op_name(op).to_string(),
            kind: op.kind.name(),
            role: op.role.name(),
            compute: op.precision.map(|p| p.compute.name()),
            accumulate: op.precision.and_then(|p| p.accumulate.map(DType::name)),
            inputs: op.operands.iter().map(|&v| g.ty(v).dtype.name()).collect(),
            outputs: op.results.iter().map(|&v| g.ty(v).dtype.name()).collect(),
            gemm_flops: dsc_kernels::cost::gemm_flops(g, op),
        })
        .collect();

    let mut by_role: BTreeMap<(Role, &'static str), usize> = BTreeMap::new();
    for op in &g.ops {
        let compute = op.precision.map_or("unassigned", |p| p.compute.name());
        *by_role.entry((op.role, compute)).or_default() += 1;
    }
    let (mut total, mut fp8) = (0u64, 0u64);
    for op in &g.ops {
        if let Some(f) = dsc_kernels::cost::gemm_flops(g, op) {
            total = total.saturating_add(f);
            if is_fp8(op) {
                fp8 = fp8.saturating_add(f);
            }
        }
    }

    let w = weight_bytes(g);
    Report {
        model: g.name.clone(),
        ops,
        summary: Summary {
            op_count: g.ops.len(),
            ops_by_role_and_precision: by_role
                .into_iter()
                .map(|((role, compute), count)| RolePrecisionCount {
                    role: role.name(),
                    compute,
                    count,
                })
                .collect(),
            gemm_flops: total,
            fp8_gemm_flops: fp8,
            fp8_gemm_flop_share: if total == 0 {
                0.0
            } else {
                fp8 as f64 / total as f64
            },
            param_count: g.params.len(),
            param_elements: w.elements,
            weight_bytes_fp8: w.fp8,
            weight_bytes_scales: w.scales,
            weight_bytes_high: w.high,
            weight_bytes_deployed: w.fp8 + w.scales + w.high,
            weight_bytes_bf16: w.bf16,
            fusions: fusions(g),
        },
        passes,
        codegen: None,
    }
}

/// Weight bytes by storage class.
#[derive(Default)]
struct WeightBytes {
    elements: u64,
    fp8: u64,
    scales: u64,
    high: u64,
    /// Every weight (scales aside) in BF16.
    bf16: u64,
}

/// Weight bytes as deployed: FP8 parameters (after fold-weights) and weights that an FP8 GEMM
/// reads (before it) count one byte per element plus their block scales; scale parameters
/// count as scales; everything else in its stored dtype.
fn weight_bytes(g: &Graph) -> WeightBytes {
    let mut scale_params = HashSet::new();
    let mut fp8_read = HashSet::new();
    for op in &g.ops {
        match op.kind {
            OpKind::Promote => scale_params.extend(op.operands.get(2).copied()),
            OpKind::Fp8Gemm => scale_params.extend(op.operands.get(3).copied()),
            OpKind::Linear | OpKind::GroupedLinear if is_fp8(op) => {
                fp8_read.extend(op.operands.get(1).copied())
            }
            _ => {}
        }
    }
    let block = u64::from(g.policy.weight_block);
    let mut w = WeightBytes::default();
    for &p in &g.params {
        let ty = g.ty(p);
        let n = ty.shape.numel();
        if scale_params.contains(&p) {
            w.scales = w.scales.saturating_add(ty.size_bytes());
            continue;
        }
        w.elements = w.elements.saturating_add(n);
        w.bf16 = w.bf16.saturating_add(n.saturating_mul(2));
        if ty.dtype.is_fp8() {
            w.fp8 = w.fp8.saturating_add(n);
        } else if fp8_read.contains(&p) {
            w.fp8 = w.fp8.saturating_add(n);
            let dims = ty.shape.dims();
            let r = dims.len();
            let lead: u64 = dims[..r - 2].iter().product();
            let scales = lead * dims[r - 2].div_ceil(block) * dims[r - 1].div_ceil(block);
            w.scales = w.scales.saturating_add(scales * 4);
        } else {
            w.high = w.high.saturating_add(ty.size_bytes());
        }
    }
    w
}

impl Report {
    /// Adds the launch plan and codegen's timings.
    pub fn with_codegen(mut self, generated: &Generated) -> Self {
        let m = &generated.manifest;
        let t = &generated.timings;
        self.codegen = Some(CodegenReport {
            target: m.target.clone(),
            kernels: m.kernels.len(),
            launches: m.steps.len(),
            arena_bytes: m.arena.bytes,
            arena_bytes_no_reuse: m.arena.no_reuse_bytes,
            plan_ms: t.plan_ms,
            build_mlir_ms: t.build_mlir_ms,
            lower_ms: t.lower_ms,
            kernels_ms: t.kernels_ms,
            threads: t.threads,
            cache_hits: t.cache_hits,
            lowered_whole: t.lowered_whole,
            slowest_kernels: t.slowest.clone(),
        });
        self
    }

    /// report.json, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}
