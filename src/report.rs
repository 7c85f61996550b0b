//! Printing of the report (`report.txt`, the summary `dsc compile` prints, time per pass); the
//! analysis and report.json's schema are [`dsc_codegen::report`].

use dsc_codegen::report::{self, PassReport, Report};
use dsc_ir::Graph;
use dsc_passes::PassTiming;
use std::fmt::Write;

/// Builds the report of a compiled graph from its passes' timings.
pub fn build(g: &Graph, timings: &[PassTiming]) -> Report {
    let passes = timings
        .iter()
        .map(|t| PassReport {
            name: t.pass,
            ms: t.elapsed.as_secs_f64() * 1e3,
        })
        .collect();
    report::build(g, passes)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn human_flops(f: u64) -> String {
    let f = f as f64;
    if f >= 1e12 {
        format!("{:.2} TFLOP", f / 1e12)
    } else if f >= 1e9 {
        format!("{:.2} GFLOP", f / 1e9)
    } else {
        format!("{:.2} MFLOP", f / 1e6)
    }
}

/// The short summary `dsc compile` prints: ops by role and precision, FP8 share of GEMM
/// FLOPs, weight bytes, fused kernels.
pub fn summary_text(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: {} ops, {} weights",
        report.model, s.op_count, s.param_count
    );
    let _ = writeln!(out, "ops by role and compute dtype:");
    for c in &s.ops_by_role_and_precision {
        let _ = writeln!(out, "  {:<14} {:<10} {:>6}", c.role, c.compute, c.count);
    }
    let _ = writeln!(
        out,
        "GEMM FLOPs per forward: {} total, {} in FP8 ({:.1}%)",
        human_flops(s.gemm_flops),
        human_flops(s.fp8_gemm_flops),
        100.0 * s.fp8_gemm_flop_share
    );
    let ratio = if s.weight_bytes_bf16 == 0 {
        0.0
    } else {
        s.weight_bytes_deployed as f64 / s.weight_bytes_bf16 as f64
    };
    let _ = writeln!(
        out,
        "weights: {} as FP8 + scales + high ({} FP8, {} scales, {} high) vs {} all-BF16 ({:.2}x)",
        human_bytes(s.weight_bytes_deployed),
        human_bytes(s.weight_bytes_fp8),
        human_bytes(s.weight_bytes_scales),
        human_bytes(s.weight_bytes_high),
        human_bytes(s.weight_bytes_bf16),
        ratio
    );
    let fused: Vec<String> = s
        .fusions
        .iter()
        .map(|f| match f.grouped {
            0 => format!("{} {}", f.count, f.kind),
            g => format!("{} {} ({g} grouped)", f.count, f.kind),
        })
        .collect();
    let _ = writeln!(out, "fused kernels: {}", fused.join(", "));
    if let Some(c) = &report.codegen {
        let _ = writeln!(
            out,
            "GPU plan ({}): {} launches of {} distinct kernels; arena {} (no reuse: {})",
            c.target,
            c.launches,
            c.kernels,
            human_bytes(c.arena_bytes),
            human_bytes(c.arena_bytes_no_reuse)
        );
    }
    out
}

/// Time per pass, one line each.
pub fn timings_text(report: &Report) -> String {
    let mut out = String::from("time per pass:\n");
    let mut total = 0.0;
    for p in &report.passes {
        let _ = writeln!(out, "  {:<18} {:>9.3} ms", p.name, p.ms);
        total += p.ms;
    }
    let _ = writeln!(out, "  {:<18} {:>9.3} ms", "total", total);
    if let Some(c) = &report.codegen {
        let _ = writeln!(out, "codegen:");
        let _ = writeln!(out, "  {:<18} {:>9.3} ms", "plan", c.plan_ms);
        let _ = writeln!(
            out,
            "  {:<18} {:>9.3} ms  ({} kernels: {} from the PTX cache, {} lowered on {} threads)",
            "kernels",
            c.kernels_ms,
            c.kernels,
            c.cache_hits,
            c.kernels - c.cache_hits,
            c.threads
        );
        if c.lowered_whole {
            let _ = writeln!(
                out,
                "  (their PTX could not be joined: lowered again as one module)"
            );
        }
        for (name, ms) in [
            ("  build MLIR", c.build_mlir_ms),
            ("  MLIR to PTX", c.lower_ms),
        ] {
            let _ = writeln!(out, "  {name:<18} {ms:>9.3} ms  (summed over the threads)");
        }
        if !c.slowest_kernels.is_empty() {
            let _ = writeln!(out, "  slowest to lower:");
            for k in &c.slowest_kernels {
                let _ = writeln!(out, "    {:<30} {:>9.3} ms", k.entry, k.ms);
            }
        }
    }
    out
}

/// report.txt: the summary, time per pass, then precision per op.
pub fn to_text(report: &Report) -> String {
    let mut out = summary_text(report);
    out.push('\n');
    out.push_str(&timings_text(report));
    out.push_str("\nprecision per op (name kind role compute accumulate: inputs -> outputs):\n");
    for op in &report.ops {
        let _ = writeln!(
            out,
            "  {} {} {} {} {}: {} -> {}",
            op.name,
            op.kind,
            op.role,
            op.compute.unwrap_or("-"),
            op.accumulate.unwrap_or("-"),
            op.inputs.join(","),
            op.outputs.join(",")
        );
    }
    out
}
