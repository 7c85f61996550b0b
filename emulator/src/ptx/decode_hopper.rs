//! Decoding of Hopper's asynchronous machinery (sm_90): `mbarrier`, `cp.async` (non-bulk, bulk
//! and tensor), `wgmma`, `elect.sync`, `setmaxnreg`, `griddepcontrol`, `bar.warp.sync`, `mapa`,
//! `barrier.cluster`, `prefetch` and the tensormap proxy fence. Every modifier must be one this
//! decoder knows; anything else decodes to `None` (and so to [`super::decode::Op::Unsupported`]):
//! the emulator never guesses.

use super::types::{Space, Ty};

/// A decoded Hopper operation (carried by [`super::decode::Op::Hopper`]).
#[derive(Debug, Clone, PartialEq)]
pub enum HopperOp {
    /// Does nothing observable (`griddepcontrol`, `prefetch`, `fence.proxy.tensormap`,
    /// `wgmma.fence`).
    Nop,
    /// `mbarrier.init [addr], count`.
    MbarInit(Space),
    /// `mbarrier.arrive[.expect_tx|_drop][.noComplete] state, [addr]{, count|txCount}`.
    MbarArrive {
        /// Where the mbarrier lives.
        space: Space,
        /// `.expect_tx`: the third operand is a tx count and the arrival count is 1.
        expect_tx: bool,
        /// `arrive_drop`: the expected count drops by the arrival count.
        drop: bool,
        /// `.noComplete`: must not complete the phase.
        no_complete: bool,
    },
    /// `mbarrier.expect_tx [addr], txCount`.
    MbarExpectTx(Space),
    /// `mbarrier.complete_tx [addr], txCount`.
    MbarCompleteTx(Space),
    /// `mbarrier.test_wait` / `mbarrier.try_wait` (`.parity`: third operand is a phase parity,
    /// else a state token).
    MbarWait {
        /// Where the mbarrier lives.
        space: Space,
        /// `.parity`.
        parity: bool,
    },
    /// `mbarrier.inval [addr]`.
    MbarInval(Space),
    /// `cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}`.
    CpAsync,
    /// `cp.async.commit_group`.
    CpAsyncCommit,
    /// `cp.async.wait_group N` (`all`: `cp.async.wait_all`).
    CpAsyncWait {
        /// `wait_all`.
        all: bool,
    },
    /// `cp.async.mbarrier.arrive[.noinc] [addr]`.
    CpAsyncMbarArrive {
        /// Where the mbarrier lives.
        space: Space,
        /// `.noinc`.
        noinc: bool,
    },
    /// `cp.async.bulk.tensor.Nd.shared::cluster.global[.tile].mbarrier::complete_tx::bytes`.
    TensorLoad {
        /// Rank 1..=5.
        dims: u8,
        /// `.multicast::cluster` (a ctaMask operand follows the mbarrier).
        multicast: bool,
        /// `.L2::cache_hint` (a cache-policy operand ends the list).
        cache_hint: bool,
    },
    /// `cp.async.bulk.tensor.Nd.global.shared::cta[.tile].bulk_group`.
    TensorStore {
        /// Rank 1..=5.
        dims: u8,
    },
    /// `cp.async.bulk.shared::{cta,cluster}.global.mbarrier::complete_tx::bytes`.
    BulkLoad {
        /// `.multicast::cluster`.
        multicast: bool,
    },
    /// `cp.async.bulk.global.shared::cta.bulk_group`.
    BulkStore,
    /// `cp.async.bulk.commit_group`.
    BulkCommit,
    /// `cp.async.bulk.wait_group[.read] N`.
    BulkWait,
    /// `wgmma.mma_async.sync.aligned.m64nNkK.dtype.atype.btype`.
    Wgmma {
        /// N (8..=256, a multiple of 8).
        n: u32,
        /// K (8 for tf32, 16 for f16/bf16, 32 for FP8).
        k: u32,
        /// Accumulator type (f32 or f16).
        d: Ty,
        /// A's element type.
        a: Ty,
        /// B's element type.
        b: Ty,
    },
    /// `wgmma.commit_group.sync.aligned`.
    WgmmaCommit,
    /// `wgmma.wait_group.sync.aligned N`.
    WgmmaWait,
    /// `wgmma.fence.sync.aligned`.
    WgmmaFence,
    /// `elect.sync d|p, membermask`.
    Elect,
    /// `setmaxnreg.{inc,dec}.sync.aligned.u32 imm`.
    SetMaxNReg,
    /// `bar.warp.sync membermask`.
    BarWarpSync,
    /// `mapa[.shared::cluster].{u32,u64} d, a, rank`.
    Mapa,
    /// `barrier.cluster.arrive[.release|.relaxed][.aligned]`.
    ClusterArrive,
    /// `barrier.cluster.wait[.acquire][.aligned]`.
    ClusterWait,
}

/// `parts` are the modifiers after `base`, without dots. Every one must be in `allowed` (or the
/// decoder returns `None`).
fn only(parts: &[&str], allowed: &[&str]) -> bool {
    parts.iter().all(|p| allowed.contains(p))
}

fn mbar_space(parts: &[&str]) -> Space {
    if parts.contains(&"shared::cluster") {
        Space::SharedCluster
    } else if parts.contains(&"shared") || parts.contains(&"shared::cta") {
        Space::Shared
    } else {
        Space::Generic
    }
}

const MBAR_COMMON: &[&str] = &[
    "shared",
    "shared::cta",
    "shared::cluster",
    "b64",
    "cta",
    "cluster",
];

/// Decodes `base.parts…` if it is one of the Hopper instructions above.
pub(crate) fn decode(base: &str, parts: &[&str]) -> Option<HopperOp> {
    let has = |m: &str| parts.contains(&m);
    let first = parts.first().copied().unwrap_or("");
    Some(match base {
        "mbarrier" => {
            let rest = &parts[1.min(parts.len())..];
            let allowed = |extra: &[&str]| {
                rest.iter()
                    .all(|p| MBAR_COMMON.contains(p) || extra.contains(p))
            };
            if !has("b64") {
                return None;
            }
            let space = mbar_space(parts);
            match first {
                "init" if only(rest, &["shared", "shared::cta", "b64"]) => {
                    HopperOp::MbarInit(space)
                }
                "inval" if only(rest, &["shared", "shared::cta", "b64"]) => {
                    HopperOp::MbarInval(space)
                }
                "arrive" | "arrive_drop"
                    if allowed(&["expect_tx", "noComplete", "release", "relaxed"]) =>
                {
                    HopperOp::MbarArrive {
                        space,
                        expect_tx: has("expect_tx"),
                        drop: first == "arrive_drop",
                        no_complete: has("noComplete"),
                    }
                }
                "expect_tx" if allowed(&["relaxed"]) => HopperOp::MbarExpectTx(space),
                "complete_tx" if allowed(&["relaxed"]) => HopperOp::MbarCompleteTx(space),
                "test_wait" | "try_wait"
                    if allowed(&["parity", "acquire", "relaxed"])
                        && space != Space::SharedCluster =>
                {
                    HopperOp::MbarWait {
                        space,
                        parity: has("parity"),
                    }
                }
                _ => return None,
            }
        }
        "cp" => {
            if first != "async" {
                return None;
            }
            let rest = &parts[1..];
            let second = rest.first().copied().unwrap_or("");
            match second {
                "ca" | "cg" => {
                    let ok = only(
                        &rest[1..],
                        &[
                            "shared",
                            "shared::cta",
                            "global",
                            "L2::cache_hint",
                            "L2::64B",
                            "L2::128B",
                            "L2::256B",
                        ],
                    ) && (has("shared") || has("shared::cta"))
                        && has("global");
                    if !ok {
                        return None;
                    }
                    HopperOp::CpAsync
                }
                "commit_group" if rest.len() == 1 => HopperOp::CpAsyncCommit,
                "wait_group" if rest.len() == 1 => HopperOp::CpAsyncWait { all: false },
                "wait_all" if rest.len() == 1 => HopperOp::CpAsyncWait { all: true },
                "mbarrier"
                    if rest.get(1) == Some(&"arrive")
                        && only(&rest[2..], &["noinc", "shared", "shared::cta", "b64"]) =>
                {
                    HopperOp::CpAsyncMbarArrive {
                        space: mbar_space(parts),
                        noinc: has("noinc"),
                    }
                }
                "bulk" => decode_bulk(&rest[1..])?,
                _ => return None,
            }
        }
        "wgmma" => match first {
            "fence" if only(&parts[1..], &["sync", "aligned"]) => HopperOp::WgmmaFence,
            "commit_group" if only(&parts[1..], &["sync", "aligned"]) => HopperOp::WgmmaCommit,
            "wait_group" if only(&parts[1..], &["sync", "aligned"]) => HopperOp::WgmmaWait,
            "mma_async" => {
                if !(has("sync") && has("aligned")) {
                    return None;
                }
                let mut shape = None;
                let mut types = Vec::new();
                for p in &parts[1..] {
                    match *p {
                        "sync" | "aligned" => {}
                        p if p.starts_with("m64") => shape = super::decode::parse_shape(p),
                        p => types.push(Ty::parse(p)?),
                    }
                }
                let (m, n, k) = shape?;
                let [d, a, b] = types[..] else {
                    return None;
                };
                if m != 64 {
                    return None;
                }
                HopperOp::Wgmma { n, k, d, a, b }
            }
            _ => return None,
        },
        "elect" if parts == ["sync"] => HopperOp::Elect,
        "setmaxnreg"
            if parts.len() == 4
                && matches!(first, "inc" | "dec")
                && only(&parts[1..], &["sync", "aligned", "u32"]) =>
        {
            HopperOp::SetMaxNReg
        }
        "griddepcontrol" if parts == ["wait"] || parts == ["launch_dependents"] => HopperOp::Nop,
        "bar" if first == "warp" && parts.len() == 2 && parts[1] == "sync" => HopperOp::BarWarpSync,
        "mapa" if only(parts, &["shared::cluster", "u32", "u64"]) && (has("u32") != has("u64")) => {
            HopperOp::Mapa
        }
        "barrier" if first == "cluster" => match parts.get(1).copied() {
            Some("arrive") if only(&parts[2..], &["release", "relaxed", "aligned"]) => {
                HopperOp::ClusterArrive
            }
            Some("wait") if only(&parts[2..], &["acquire", "aligned"]) => HopperOp::ClusterWait,
            _ => return None,
        },
        "prefetch" | "prefetchu" => {
            let ok = only(
                parts,
                &[
                    "global",
                    "local",
                    "L1",
                    "L2",
                    "tensormap",
                    "L2::evict_last",
                    "L2::evict_normal",
                    "const",
                    "param",
                ],
            );
            if !ok {
                return None;
            }
            HopperOp::Nop
        }
        "fence"
            if first == "proxy" && parts.get(1).is_some_and(|p| p.starts_with("tensormap::")) =>
        {
            if !only(
                &parts[2..],
                &["release", "acquire", "cta", "cluster", "gpu", "sys"],
            ) {
                return None;
            }
            HopperOp::Nop
        }
        _ => return None,
    })
}

/// `cp.async.bulk.…` after `bulk`.
fn decode_bulk(parts: &[&str]) -> Option<HopperOp> {
    let has = |m: &str| parts.contains(&m);
    match parts.first().copied() {
        Some("commit_group") if parts.len() == 1 => return Some(HopperOp::BulkCommit),
        Some("wait_group") if only(&parts[1..], &["read"]) => return Some(HopperOp::BulkWait),
        _ => {}
    }
    // `tensor.Nd` (rank 1..=5), or a non-tensor copy (rank 0).
    let (dims, rest) = match parts.split_first() {
        Some((&"tensor", rest)) => {
            let (d, rest) = rest.split_first()?;
            let n: u8 = d.strip_suffix('d')?.parse().ok()?;
            if !(1..=5).contains(&n) {
                return None;
            }
            (n, rest)
        }
        _ => (0, parts),
    };
    let tensor = dims > 0;
    // Destination then source space.
    let (dst, src) = (rest.first().copied()?, rest.get(1).copied()?);
    let mods = &rest[2..];
    let load = (dst == "shared::cluster" || dst == "shared::cta") && src == "global";
    let store = dst == "global" && src == "shared::cta";
    if load {
        if !has("mbarrier::complete_tx::bytes")
            || !only(
                mods,
                &[
                    "tile",
                    "mbarrier::complete_tx::bytes",
                    "multicast::cluster",
                    "L2::cache_hint",
                ],
            )
        {
            return None;
        }
        if has("tile") && !tensor {
            return None;
        }
        let multicast = has("multicast::cluster");
        if multicast && dst != "shared::cluster" {
            return None;
        }
        Some(if tensor {
            HopperOp::TensorLoad {
                dims,
                multicast,
                cache_hint: has("L2::cache_hint"),
            }
        } else {
            HopperOp::BulkLoad { multicast }
        })
    } else if store {
        if !has("bulk_group") || !only(mods, &["tile", "bulk_group", "L2::cache_hint"]) {
            return None;
        }
        if has("L2::cache_hint") && !tensor {
            // The cache-policy operand of the non-tensor form is followed by an optional byte
            // mask; not implemented.
            return None;
        }
        Some(if tensor {
            HopperOp::TensorStore { dims }
        } else {
            HopperOp::BulkStore
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<HopperOp> {
        let mut it = s.split('.');
        let base = it.next().unwrap();
        let parts: Vec<&str> = it.collect();
        decode(base, &parts)
    }

    #[test]
    fn decodes_the_forms_deepgemm_and_mlir_emit() {
        assert_eq!(
            d("mbarrier.try_wait.parity.shared::cta.b64"),
            Some(HopperOp::MbarWait {
                space: Space::Shared,
                parity: true
            })
        );
        assert!(matches!(
            d("mbarrier.arrive.expect_tx.shared::cta.b64"),
            Some(HopperOp::MbarArrive {
                expect_tx: true,
                ..
            })
        ));
        assert!(matches!(
            d("mbarrier.arrive.shared::cluster.b64"),
            Some(HopperOp::MbarArrive {
                space: Space::SharedCluster,
                ..
            })
        ));
        assert_eq!(
            d("mbarrier.init.shared.b64"),
            Some(HopperOp::MbarInit(Space::Shared))
        );
        assert_eq!(
            d(
                "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster.L2::cache_hint"
            ),
            Some(HopperOp::TensorLoad {
                dims: 2,
                multicast: true,
                cache_hint: true
            })
        );
        assert_eq!(
            d("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"),
            Some(HopperOp::TensorLoad {
                dims: 2,
                multicast: false,
                cache_hint: false
            })
        );
        assert_eq!(
            d("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group"),
            Some(HopperOp::TensorStore { dims: 2 })
        );
        assert_eq!(d("cp.async.bulk.wait_group.read"), Some(HopperOp::BulkWait));
        assert_eq!(
            d("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3"),
            Some(HopperOp::Wgmma {
                n: 128,
                k: 32,
                d: Ty::F32,
                a: Ty::E4m3,
                b: Ty::E4m3
            })
        );
        assert_eq!(
            d("setmaxnreg.inc.sync.aligned.u32"),
            Some(HopperOp::SetMaxNReg)
        );
        assert_eq!(
            d("barrier.cluster.arrive.relaxed.aligned"),
            Some(HopperOp::ClusterArrive)
        );
        assert_eq!(d("bar.warp.sync"), Some(HopperOp::BarWarpSync));
        assert_eq!(
            d("fence.proxy.tensormap::generic.acquire.gpu"),
            Some(HopperOp::Nop)
        );
        assert_eq!(
            d("cp.async.cg.shared.global.L2::128B"),
            Some(HopperOp::CpAsync)
        );
        assert_eq!(d("mbarrier.try_wait.parity.shared::cluster.b64"), None);
        assert_eq!(
            d("cp.async.bulk.tensor.2d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"),
            None
        );
        assert_eq!(d("mbarrier.arrive.bogus.shared.b64"), None);
    }
}
