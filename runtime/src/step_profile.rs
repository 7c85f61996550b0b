//! Where a training step's time goes on the CPU backend: wall time per op kind, summed over
//! the profiled steps (`dsc train --profile`), and the share of the GEMMs.

use dsc_ir::OpKind;
use std::collections::BTreeMap;
use std::time::Duration;

/// Time per op kind over the steps run with profiling on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepProfile {
    /// Steps profiled.
    pub steps: u64,
    /// Per op kind (by its text-format name): ops run and their total wall time.
    pub by_kind: BTreeMap<&'static str, (u64, Duration)>,
}

/// The op kinds that are matrix products: the linears (BF16, or FP8 as quantize-linears and
/// fuse leave them: `fp8_partials` + `promote`, or `fp8_gemm`), batched `matmul`s and the
/// routed experts' grouped GEMMs. Attention's score and value products are its own kinds.
pub const GEMM_KINDS: [OpKind; 7] = [
    OpKind::Linear,
    OpKind::Matmul,
    OpKind::Fp8Gemm,
    OpKind::Fp8Partials,
    OpKind::Promote,
    OpKind::GroupedLinear,
    OpKind::GroupedLinearWgrad,
];

impl StepProfile {
    /// Adds one op's run.
    pub fn record(&mut self, kind: OpKind, took: Duration) {
        let entry = self.by_kind.entry(kind.name()).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    /// The time of every op.
    pub fn total(&self) -> Duration {
        self.by_kind.values().map(|&(_, t)| t).sum()
    }

    /// The time of the [`GEMM_KINDS`].
    pub fn gemm(&self) -> Duration {
        GEMM_KINDS
            .iter()
            .filter_map(|k| self.by_kind.get(k.name()))
            .map(|&(_, t)| t)
            .sum()
    }

    /// A table, costliest kind first: kind, ops per step, ms per step, share of the step; then
    /// the GEMMs' share.
    pub fn table(&self) -> String {
        let steps = self.steps.max(1) as f64;
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        let mut rows: Vec<_> = self.by_kind.iter().collect();
        rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
        let mut out = format!(
            "{:<22} {:>10} {:>12} {:>7}\n",
            "op kind", "ops/step", "ms/step", "share"
        );
        for (kind, &(calls, took)) in rows {
            out += &format!(
                "{kind:<22} {:>10.1} {:>12.2} {:>6.1}%\n",
                calls as f64 / steps,
                took.as_secs_f64() * 1e3 / steps,
                took.as_secs_f64() / total * 100.0
            );
        }
        out += &format!(
            "GEMMs ({}): {:.1}% of {:.1} ms per step over {} steps\n",
            GEMM_KINDS.map(|k| k.name()).join(", "),
            self.gemm().as_secs_f64() / total * 100.0,
            total * 1e3 / steps,
            self.steps
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_sums_per_kind_and_counts_the_gemms_share() {
        let mut p = StepProfile {
            steps: 2,
            ..Default::default()
        };
        let ms = Duration::from_millis;
        p.record(OpKind::Fp8Gemm, ms(30));
        p.record(OpKind::Fp8Gemm, ms(30));
        p.record(OpKind::Linear, ms(15));
        p.record(OpKind::Softmax, ms(25));
        assert_eq!(p.total(), ms(100));
        assert_eq!(p.gemm(), ms(75));
        let t = p.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("fp8_gemm") && lines[1].contains("30.00"),
            "{t}"
        );
        assert!(lines[1].ends_with("60.0%"), "{t}");
        assert!(lines[2].starts_with("softmax"), "{t}");
        assert!(
            lines[4].contains("75.0% of 50.0 ms per step over 2 steps"),
            "{t}"
        );
    }
}
