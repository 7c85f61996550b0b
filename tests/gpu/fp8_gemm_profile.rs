//! The sm_90a FP8 GEMM's work as the emulator counts it (issue 11's static checks): every wgmma
//! it issues is one of the padded tile grid's (FP8 tensor-core operations = FLOPs / instruction
//! size), the TMA brings exactly each tile's A and B K-slices once and all global traffic stays
//! within 1.2× of that plus the output, and shared memory sees no bank conflicts (dense: no
//! shared-memory data access by the CUDA cores at all).

use super::compiled;
use crate::support::TempDir;
use dsc_emulator::LaunchProfile;
use dsc_runtime::inputs::random_inputs;
use dsc_runtime::{Artifact, Backend, EmuBackend, EmuOptions, random_weights};

/// A pipelined FP8 GEMM step's shape and tiles, read back from the manifest.
pub(super) struct GemmStep {
    pub(super) op: String,
    pub(super) rows: u64,
    pub(super) n: u64,
    pub(super) k: u64,
    pub(super) block_m: u64,
    pub(super) block_n: u64,
    pub(super) grouped: bool,
}

/// The steps whose FP8 GEMM is of `form` (the spec's serialized form: `wgmma_tma`,
/// `mma_pipelined`), with their indices.
pub(super) fn gemm_steps(artifact: &Artifact, form: &str) -> Vec<(usize, GemmStep)> {
    let manifest = &artifact.manifest;
    manifest
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let kernel = manifest.kernel(&step.kernel)?;
            let form = kernel.attrs.get("form")?.get(form)?;
            let attr = |name: &str| kernel.attrs[name].as_u64().expect("a shape attribute");
            Some((
                i,
                GemmStep {
                    op: step.op.clone(),
                    rows: attr("rows"),
                    n: attr("n"),
                    k: attr("k"),
                    block_m: form["block_m"].as_u64().expect("block_m"),
                    block_n: form["block_n"].as_u64().expect("block_n"),
                    grouped: !kernel.attrs["grouped"].is_null(),
                },
            ))
        })
        .collect()
}

/// Every launch's profile from one emulated forward with random weights and inputs.
pub(super) fn profiles(artifact: &Artifact) -> Vec<LaunchProfile> {
    let mut backend = EmuBackend::new(artifact, EmuOptions::default()).expect("emulator");
    backend
        .set_weights(random_weights(&artifact.graph, 3).expect("weights"))
        .expect("weights");
    let inputs = random_inputs(&artifact.graph, 5);
    backend.run(&inputs, &mut Vec::new()).expect("runs");
    backend.profiles().to_vec()
}

/// The dense GEMMs of wide-mlp (128 × 128 tiles with two consumer warpgroups for `up`, 64-row
/// tiles for `down`; M, N and K off the tiles).
#[test]
fn dense_fp8_gemms_issue_the_tile_grids_wgmmas_and_load_each_tile_once() {
    let tmp = TempDir::new("fp8-gemm-profile-dense");
    let artifact = compiled(&tmp, "tests/gpu/models/wide-mlp.toml", "sm_90a");
    let profiles = profiles(&artifact);
    let steps = gemm_steps(&artifact, "wgmma_tma");
    assert_eq!(steps.len(), 2, "wide-mlp has two FP8 GEMMs");
    for (i, g) in steps {
        let p = &profiles[i];
        let what = format!(
            "{} ({}×{}×{}, {}×{} tiles)",
            g.op, g.rows, g.n, g.k, g.block_m, g.block_n
        );
        assert!(!g.grouped);
        let tiles = g.rows.div_ceil(g.block_m) * g.n.div_ceil(g.block_n);
        let k_blocks = g.k.div_ceil(128);
        // FP8 tensor-core operations: the padded tile grid's FLOPs over one wgmma's.
        let kind = format!("wgmma.m64n{}k32.e4m3", g.block_n);
        let padded_flops = 2 * tiles * g.block_m * g.block_n * k_blocks * 128;
        assert_eq!(p.tensor_ops.keys().collect::<Vec<_>>(), [&kind], "{what}");
        assert_eq!(
            p.tensor_ops[&kind],
            padded_flops / (2 * 64 * g.block_n * 32),
            "{what}"
        );
        assert_eq!(p.total_tensor_flops(), padded_flops, "{what}");
        // Each tile's A and B K-slices through the TMA, once.
        let tile_bytes = tiles * (g.block_m + g.block_n) * k_blocks * 128;
        assert_eq!(p.async_copy_bytes, tile_bytes, "{what}");
        let output = g.rows * g.n * 2;
        let global = p.async_copy_bytes + p.global_load_bytes + p.global_store_bytes;
        assert!(
            global as f64 <= 1.2 * (tile_bytes + output) as f64,
            "{what}: {global} bytes against {tile_bytes} + {output}"
        );
        assert_eq!(p.global_store_bytes, output, "{what}: every output once");
        // The TMA writes shared memory and wgmma reads it: the CUDA cores move no data there
        // (the mbarrier operations are requests without wavefronts).
        assert_eq!(p.shared_wavefronts, 0, "{what}");
        assert!(p.cta_imbalance >= 1.0, "{what}");
    }
}

/// The grouped GEMMs of wide-moe: B through the TMA, A's rows gathered by the producer
/// warpgroup with 16-byte stores into the swizzled tile, which are conflict-free (4 wavefronts
/// per warp-wide 512-byte store, the least there can be).
#[test]
fn grouped_fp8_gemms_gather_rows_without_bank_conflicts() {
    let tmp = TempDir::new("fp8-gemm-profile-grouped");
    let artifact = compiled(&tmp, "tests/gpu/models/wide-moe.toml", "sm_90a");
    let profiles = profiles(&artifact);
    let grouped: Vec<_> = gemm_steps(&artifact, "wgmma_tma")
        .into_iter()
        .filter(|(_, g)| g.grouped)
        .collect();
    assert_eq!(grouped.len(), 3, "gate, up and down of the routed experts");
    for (i, g) in grouped {
        let p = &profiles[i];
        let what = format!("{} ({} tiles of {}×{})", g.op, g.rows, g.block_m, g.block_n);
        assert!(p.total_tensor_flops() > 0, "{what}");
        let stores = p
            .instruction_mix
            .get("st.shared.v4.u32")
            .copied()
            .unwrap_or(0);
        assert!(stores > 0, "{what}: no gathered rows");
        // The mbarrier operations are requests without wavefronts; only the stores move data.
        assert_eq!(p.shared_wavefronts, 4 * stores, "{what}: bank conflicts");
    }
}
