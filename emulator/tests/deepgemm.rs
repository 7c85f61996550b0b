//! DeepGEMM's own SM90 FP8 GEMM kernels (PTX from `shared/peers/deepgemm/`, proven on H800s)
//! on the emulator, against the CPU reference of their recipe: clusters of 2 CTAs, multicast
//! TMA, remote mbarrier arrivals, TMA stores, `stmatrix`, wgmma and `setmaxnreg`, none of it
//! written here. One cluster of the persistent grid is run (the grid is 132 CTAs and K is baked
//! in, so a whole launch takes minutes); D starts as a NaN sentinel, so every tile the cluster
//! stored is found and checked, and the tiles it must store are counted.

use dsc_emulator::LaunchOptions;
use dsc_emulator::deepgemm::{DeepGemmKernel, GemmType, Problem, problem, reference};
use dsc_emulator::{LaunchProfile, Module};

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/peers/deepgemm");

/// The peer kernel `name`: its module and specialization.
fn peer(name: &str) -> (Module, DeepGemmKernel) {
    let read = |ext: &str| {
        let path = format!("{PEERS}/{name}.{ext}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{path}: {e} (the peer kernels live in the shared checkout next to this repository)"
            )
        })
    };
    let module = Module::parse(&read("ptx")).expect("DeepGEMM's PTX parses");
    let kernel = DeepGemmKernel::from_entry(&read("entry.txt"), &read("config.json")).unwrap();
    (module, kernel)
}

/// Bits of a bf16 NaN that no kernel output can be.
const SENTINEL: u16 = 0xFFFF;

/// Runs one cluster of `kernel` over `p` and checks every stored element against the reference
/// (≤ 1 bf16 ulp, exact zeros for skipped padding halves); returns (tiles stored, profile).
fn run_and_check(module: &Module, kernel: &DeepGemmKernel, p: &Problem) -> (usize, LaunchProfile) {
    let mut launch = kernel.launch_file(p.m);
    launch.allocate.remove("d");
    let mut inputs = p.buffers.clone();
    let d_elems = p.m as usize * kernel.n as usize;
    inputs.insert(
        "d".into(),
        SENTINEL
            .to_le_bytes()
            .iter()
            .copied()
            .cycle()
            .take(2 * d_elems)
            .collect(),
    );
    let options = LaunchOptions {
        sample_ctas: Some(2),
        ..LaunchOptions::default()
    };
    let out = launch.run(module, &inputs, &options).unwrap();
    let d: Vec<u16> = out.buffers["d"]
        .chunks(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let n = kernel.n as usize;
    let (bm, bn) = (kernel.block_m as usize, kernel.block_n as usize);
    let mut stored = 0;
    for tm in 0..p.m as usize / bm {
        let rows = tm * bm..(tm + 1) * bm;
        for tn in 0..n.div_ceil(bn) {
            let cols = tn * bn..((tn + 1) * bn).min(n);
            let written = rows
                .clone()
                .flat_map(|r| cols.clone().map(move |c| (r, c)))
                .filter(|&(r, c)| d[r * n + c] != SENTINEL)
                .count();
            if written == 0 {
                continue;
            }
            stored += 1;
            let span = |r: &std::ops::Range<usize>| r.start as u32..r.end as u32;
            let expected = reference(kernel, p, span(&rows), span(&cols));
            let width = cols.len();
            for r in rows.clone() {
                for c in cols.clone() {
                    let want = expected[(r - rows.start) * width + c - cols.start];
                    let got = d[r * n + c];
                    let ulps = (i32::from(got as i16) - i32::from(want as i16)).abs();
                    assert!(
                        got != SENTINEL && (got == want || ulps <= 1),
                        "D[{r}, {c}] = {got:#06x} ({}), reference {want:#06x} ({}): tile ({tm}, {tn})",
                        half::bf16::from_bits(got),
                        half::bf16::from_bits(want),
                    );
                }
            }
        }
    }
    (stored, out.profile)
}

#[test]
fn deepgemm_dense_fp8_gemm_matches_the_reference() {
    let (module, kernel) = peer("normal_m4096_n7168_k16384");
    assert_eq!(kernel.gemm_type, GemmType::Normal);
    let p = problem(&kernel, &[256], 7);
    let (stored, profile) = run_and_check(&module, &kernel, &p);
    // 56 tiles over 132 CTAs: CTAs 0 and 1 (the first cluster) take one each.
    assert_eq!(stored, 2, "tiles stored by the first cluster");
    assert_eq!(profile.ctas_run, 2);
    let wgmma: u64 = profile.tensor_ops.values().sum();
    // Each tile: 128 K-blocks × 4 k-steps × (256/64) m64n128k32 MMAs.
    assert_eq!(wgmma, 2 * 128 * 4 * 4 * 132 / 2, "scaled to the grid");
}

#[test]
fn deepgemm_m_grouped_fp8_gemm_matches_the_reference_with_padding_rows() {
    let (module, kernel) = peer("mgrouped_contig_g4_n6144_k7168");
    assert_eq!(kernel.gemm_type, GemmType::MGroupedContiguous);
    assert_eq!(kernel.groups, 4);
    // Groups of 150, 40, 1 and 128 rows, each padded to a multiple of 128: 5 × 32 = 160 tiles
    // over 132 CTAs, so the first cluster stores two tiles per CTA. Its first ones are m-blocks
    // 0 and 1 of the first n-block, both of group 0, so rank 0 multicasts B to both CTAs; m-block 1 has padding rows inside a computed 64-row half (rows 150..192) and
    // a half that is all padding (rows 192..256: skipped by the kernel, stored as zeros).
    let p = problem(&kernel, &[150, 40, 1, 128], 11);
    assert_eq!(p.m, 640);
    let (stored, _) = run_and_check(&module, &kernel, &p);
    assert_eq!(stored, 4, "tiles stored by the first cluster");
    let zero_half = reference(&kernel, &p, 192..256, 0..kernel.n);
    assert!(zero_half.iter().all(|&x| x == 0));
}
