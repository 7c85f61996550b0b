//! Clusters of CTAs, handwritten: every thread arrives on the *other* CTA's mbarrier (through
//! `mapa`) and waits on its own, so a launch completes only if remote arrivals reach their CTA;
//! `barrier.cluster` between the inits and the arrivals; and the errors of a rank outside the
//! cluster or an arrival that never comes.

mod common;

use common::{dump, kernel, u32s};
use dsc_emulator::{GlobalMemory, LaunchConfig, LaunchOptions, Module, ParamValue, launch};

/// Each thread: init (thread 0) its CTA's mbarrier for 32 arrivals, cluster barrier, arrive on
/// the mbarrier of rank `peer` (`%r20`, computed by `peer_rank`), wait for its own phase 0,
/// then store `1000 · rank + tid` at `out[ctaid · 32 + tid]`.
fn exchange_kernel(peer_rank: &str) -> String {
    let regs = "\t.reg .pred %p<4>;\n\t.reg .b32 %r<24>;\n\t.reg .b64 %rd<4>;\n\
                \t.shared .align 8 .b64 bar;";
    let body = format!(
        "\tmov.u32 %r1, %tid.x;\n\
         \tmov.u32 %r2, %cluster_ctarank;\n\
         \tmov.u32 %r3, %ctaid.x;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [bar], 32;\n\
         \tbarrier.cluster.arrive.aligned;\n\
         \tbarrier.cluster.wait.aligned;\n\
         {peer_rank}\
         \tmov.u32 %r4, bar;\n\
         \tmapa.shared::cluster.u32 %r5, %r4, %r20;\n\
         \tmbarrier.arrive.shared::cluster.b64 _, [%r5];\n\
         WAIT:\n\
         \tmbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], 0;\n\
         \t@!%p2 bra WAIT;\n\
         \tmad.lo.s32 %r6, %r2, 1000, %r1;\n\
         \tmad.lo.s32 %r7, %r3, 32, %r1;\n\
         \tld.param.u64 %rd1, [out];\n\
         \tcvta.to.global.u64 %rd1, %rd1;\n\
         \tmul.wide.u32 %rd2, %r7, 4;\n\
         \tadd.s64 %rd1, %rd1, %rd2;\n\
         \tst.global.u32 [%rd1], %r6;\n\
         \tret;"
    );
    kernel(".param .u64 out", regs, &body)
}

/// The other CTA of a cluster of 2.
const OTHER: &str = "\txor.b32 %r20, %r2, 1;\n";

fn run(name: &str, ptx: &str, grid: u32, cluster: u32) -> Result<Vec<u32>, String> {
    dump(name, ptx);
    let module = Module::parse(ptx).unwrap_or_else(|e| panic!("{name}: {e}\n{ptx}"));
    let mut memory = GlobalMemory::new();
    let out = memory.allocate(4 * 32 * u64::from(grid));
    let config = LaunchConfig {
        cluster: [cluster, 1, 1],
        ..LaunchConfig::new([grid, 1, 1], [32, 1, 1])
    };
    let options = LaunchOptions {
        step_budget: 1_000_000,
        ..LaunchOptions::default()
    };
    launch(
        &module,
        "k",
        &memory,
        &config,
        &[ParamValue::U64(out)],
        &options,
    )
    .map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; 4 * 32 * grid as usize];
    memory.read(out, &mut bytes).unwrap();
    Ok(u32s(&bytes))
}

#[test]
fn remote_arrivals_complete_the_other_ctas_mbarrier() {
    // Two clusters of two: each CTA's phase completes only through the 32 arrivals of the other.
    let got = run("cluster_exchange", &exchange_kernel(OTHER), 4, 2).unwrap();
    for cta in 0..4u32 {
        for t in 0..32u32 {
            assert_eq!(
                got[(cta * 32 + t) as usize],
                1000 * (cta % 2) + t,
                "CTA {cta} thread {t}"
            );
        }
    }
}

#[test]
fn missing_arrivals_and_an_aliased_parity_are_deadlocks() {
    // Arriving on one's own CTA's mbarrier completes too.
    let own = "\tmov.u32 %r20, %r2;\n";
    assert!(run("cluster_self", &exchange_kernel(own), 2, 2).is_ok());
    // Every thread of both CTAs arrives on rank 0's mbarrier: rank 1 polls an mbarrier nothing
    // will complete, and rank 0's, given 64 arrivals, completes phase 0 and then phase 1 before
    // its threads poll for parity 0, which now names the phase in progress (the parity aliases
    // two phases later, as on hardware): both CTAs wait forever.
    let zero = "\tmov.u32 %r20, 0;\n";
    let e = run("cluster_all_to_zero", &exchange_kernel(zero), 2, 2).unwrap_err();
    assert!(
        e.contains("deadlock in block [0, 0, 0]") && e.contains("only polls"),
        "{e}"
    );
}

#[test]
fn a_rank_outside_the_cluster_is_an_error() {
    let e = run(
        "cluster_rank_2",
        &exchange_kernel("\tmov.u32 %r20, 2;\n"),
        2,
        2,
    )
    .unwrap_err();
    assert!(e.contains("mapa to CTA rank 2 of a cluster of 2"), "{e}");
    // The same kernel in a cluster of one: rank 1 does not exist either.
    let e = run("cluster_of_one", &exchange_kernel(OTHER), 2, 1).unwrap_err();
    assert!(e.contains("mapa to CTA rank 1 of a cluster of 1"), "{e}");
}
