//! DeepGEMM's SM90 FP8 GEMM (`sm90_fp8_gemm_1d2d_impl`) as a peer kernel: its host launch
//! contract (`shared/peers/deepgemm/LAUNCH_CONTRACT.md`) turned into a [`LaunchFile`], test
//! inputs, and the CPU reference of its recipe, so that DeepGEMM's own PTX runs on the emulator
//! next to dsc's kernels.
//!
//! The specialization is read from the mangled entry name, whose template arguments are, in
//! order: the SF-B major, `SHAPE_M`, `SHAPE_N`, `SHAPE_K`, the group count, `BLOCK_M/N/K`, the
//! A/B/D swizzle modes, the stage count, the TMA and math thread counts, the multicast width,
//! whether A is multicast, the SM count, the GEMM type (0 normal, 1 m-grouped contiguous).
//!
//! The recipe (`D = bf16_rn(Σ_kb sfa[m,kb]·sfb[n/128,kb]·(Σ_{k∈kb} A·B))`, each 128-deep block
//! summed by wgmma into a fresh accumulator, then promoted with `fma.rn.f32`) is computed by
//! [`reference`] in that order, with the block sums exact in f32.

use std::collections::BTreeMap;

use dsc_kernels::numerics::fp8::Fp8Format;
use dsc_kernels::rng::SplitMix64;

use crate::launch::LaunchConfig;
use crate::launch_file::{LaunchFile, ParamSpec, TensorMapSpec};
use crate::tensor_map::{DataType, Interleave, L2Promotion, OobFill, Swizzle};

/// Which GEMM the kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmType {
    /// `D[M, N] = A[M, K] · B[N, K]ᵀ`.
    Normal,
    /// Rows of A grouped contiguously by expert; B is `[groups, N, K]`.
    MGroupedContiguous,
}

/// One specialization of DeepGEMM's SM90 FP8 GEMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepGemmKernel {
    /// The mangled entry name.
    pub entry: String,
    /// N (baked in).
    pub n: u32,
    /// K (baked in).
    pub k: u32,
    /// Groups (1 for a normal GEMM).
    pub groups: u32,
    /// Tile rows.
    pub block_m: u32,
    /// Tile columns.
    pub block_n: u32,
    /// Tile depth (128).
    pub block_k: u32,
    /// Shared-memory swizzle of A, B and D tiles, bytes (0: none).
    pub swizzle: [u32; 3],
    /// Pipeline stages.
    pub stages: u32,
    /// Threads per CTA (TMA + math).
    pub threads: u32,
    /// CTAs per cluster along the multicast dimension.
    pub multicast: u32,
    /// Whether A (else B) is multicast.
    pub multicast_on_a: bool,
    /// The persistent grid (the SM count baked in).
    pub sms: u32,
    /// The GEMM type.
    pub gemm_type: GemmType,
    /// Dynamic shared memory (from the heuristic's configuration).
    pub shared_bytes: u32,
}

/// The rows of the m-grouped layout are padded per group to this (DeepGEMM's
/// `get_mk_alignment_for_contiguous_layout`).
const GROUP_ALIGNMENT: u32 = 128;

impl DeepGemmKernel {
    /// Reads the specialization from the mangled entry name and the shared memory size from
    /// the heuristic's configuration (`*.config.json`).
    pub fn from_entry(entry: &str, config_json: &str) -> Result<DeepGemmKernel, String> {
        let entry = entry.trim();
        let args = template_args(entry)?;
        if args.len() != 18 {
            return Err(format!(
                "entry `{entry}`: {} integral template arguments, sm90_fp8_gemm_1d2d_impl has 18",
                args.len()
            ));
        }
        let config: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| format!("config: {e}"))?;
        let field = |k: &str| {
            config
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("config: `{k}` missing or not an unsigned integer"))
        };
        let kernel = DeepGemmKernel {
            entry: entry.to_string(),
            n: args[2] as u32,
            k: args[3] as u32,
            groups: args[4] as u32,
            block_m: args[5] as u32,
            block_n: args[6] as u32,
            block_k: args[7] as u32,
            swizzle: [args[8] as u32, args[9] as u32, args[10] as u32],
            stages: args[11] as u32,
            threads: (args[12] + args[13]) as u32,
            multicast: args[14] as u32,
            multicast_on_a: args[15] == 1,
            sms: args[16] as u32,
            gemm_type: match args[17] {
                0 => GemmType::Normal,
                1 => GemmType::MGroupedContiguous,
                t => return Err(format!("entry `{entry}`: GEMM type {t} is not supported")),
            },
            shared_bytes: field("smem_size")? as u32,
        };
        if args[1] != 0 {
            return Err(format!(
                "entry `{entry}`: SHAPE_M = {} is baked in; only M at run time is supported",
                args[1]
            ));
        }
        for (what, config_key, v) in [
            ("BLOCK_M", "block_m", kernel.block_m),
            ("BLOCK_N", "block_n", kernel.block_n),
            ("stages", "num_stages", kernel.stages),
            ("SM count", "num_sms", kernel.sms),
        ] {
            if field(config_key)? != u64::from(v) {
                return Err(format!(
                    "entry's {what} {v} differs from the config's `{config_key}`"
                ));
            }
        }
        if kernel.block_k != 128 || !kernel.k.is_multiple_of(128) {
            return Err(format!(
                "BLOCK_K {} and K {} must be 128 and a multiple of 128",
                kernel.block_k, kernel.k
            ));
        }
        Ok(kernel)
    }

    fn kb(&self) -> u32 {
        self.k / 128
    }

    /// Rows of the weight-scale grid per group.
    fn n_blocks(&self) -> u32 {
        self.n.div_ceil(128)
    }

    /// The launch of this kernel on `m` rows, per the contract: buffers `a`, `b`, `sfa`, `sfb`,
    /// `d` (and `grouped_layout` for the m-grouped form).
    pub fn launch_file(&self, m: u32) -> LaunchFile {
        let (n, k) = (u64::from(self.n), u64::from(self.k));
        let m64 = u64::from(m);
        let m_aligned = u64::from(m.next_multiple_of(4));
        let tma = |buffer: &str, dtype, dims: [u64; 2], stride: u64, box_dims: [u32; 2], sw| {
            ParamSpec::TensorMap(TensorMapSpec {
                buffer: buffer.to_string(),
                dtype,
                dims: dims.to_vec(),
                strides_bytes: vec![stride],
                box_dims: box_dims.to_vec(),
                element_strides: vec![1, 1],
                swizzle: sw,
                interleave: Interleave::None,
                l2_promotion: L2Promotion::B256,
                oob_fill: OobFill::None,
            })
        };
        let b_rows = n * u64::from(self.groups);
        let [sw_a, sw_b, sw_d] = self.swizzle.map(swizzle_mode);
        // With a swizzle, a box row spans the swizzle's bytes (DeepGEMM's `make_tma_2d_desc`):
        // D is stored in BLOCK_N / (swizzle / 2) boxes.
        let d_box_inner = match self.swizzle[2] {
            0 => self.block_n,
            bytes => bytes / 2,
        };
        let grouped = self.gemm_type == GemmType::MGroupedContiguous;
        LaunchFile {
            entry: self.entry.clone(),
            config: LaunchConfig {
                grid: [self.sms, 1, 1],
                block: [self.threads, 1, 1],
                cluster: [self.multicast, 1, 1],
                dynamic_shared_bytes: self.shared_bytes,
            },
            allocate: BTreeMap::from([("d".to_string(), m64 * n * 2)]),
            params: vec![
                ParamSpec::Ptr(Some("sfb".into())),
                ParamSpec::Ptr(grouped.then(|| "grouped_layout".into())),
                ParamSpec::U32(m),
                ParamSpec::U32(self.n),
                ParamSpec::U32(self.k),
                tma(
                    "a",
                    DataType::Uint8,
                    [k, m64],
                    k,
                    [self.block_k, self.block_m],
                    sw_a,
                ),
                tma(
                    "b",
                    DataType::Uint8,
                    [k, b_rows],
                    k,
                    [self.block_k, self.block_n],
                    sw_b,
                ),
                tma(
                    "d",
                    DataType::Bfloat16,
                    [n, m64],
                    2 * n,
                    [d_box_inner, self.block_m],
                    sw_d,
                ),
                tma(
                    "sfa",
                    DataType::Float32,
                    [m_aligned, u64::from(self.kb())],
                    4 * m_aligned,
                    [self.block_m, 1],
                    Swizzle::None,
                ),
            ],
        }
    }
}

/// The tensor-map swizzle of a DeepGEMM swizzle mode in bytes.
fn swizzle_mode(bytes: u32) -> Swizzle {
    match bytes {
        32 => Swizzle::B32,
        64 => Swizzle::B64,
        128 => Swizzle::B128,
        _ => Swizzle::None,
    }
}

/// The integral template arguments of a mangled entry, in order: `Lj<n>E` / `Lb<n>E` literals,
/// and enum literals `L<qualified name>E<n>E`.
fn template_args(entry: &str) -> Result<Vec<u64>, String> {
    let start = entry
        .find("sm90_fp8_gemm_1d2d_implI")
        .ok_or_else(|| format!("entry `{entry}` is not DeepGEMM's sm90_fp8_gemm_1d2d_impl"))?;
    let s = &entry.as_bytes()[start + "sm90_fp8_gemm_1d2d_implI".len()..];
    let digits = |from: usize| -> Option<(u64, usize)> {
        let end = from + s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let v = std::str::from_utf8(&s[from..end]).ok()?.parse().ok()?;
        (s.get(end) == Some(&b'E')).then_some((v, end + 1))
    };
    let mut args = Vec::new();
    let mut i = 0;
    while i < s.len() && s[i] == b'L' {
        let value = match s.get(i + 1) {
            Some(b'j' | b'b' | b'i') => digits(i + 2),
            // An enum literal: its value follows the first `E` of the name.
            _ => s[i..]
                .iter()
                .position(|&c| c == b'E')
                .and_then(|e| digits(i + e + 1)),
        };
        let Some((v, next)) = value else {
            return Err(format!(
                "entry `{entry}`: unreadable template argument at byte {i}"
            ));
        };
        args.push(v);
        i = next;
    }
    Ok(args)
}

/// Inputs of one problem: the buffers by name, and per row its group (`-1`: padding).
#[derive(Debug, Clone)]
pub struct Problem {
    /// Rows.
    pub m: u32,
    /// Buffers by name (raw little-endian bytes).
    pub buffers: BTreeMap<String, Vec<u8>>,
    /// The group of each row (all 0 for a normal GEMM; `-1` for padding rows).
    pub row_group: Vec<i32>,
}

/// A finite e4m3 code of magnitude between 2^-3 and 2^4 (no NaN, no overflow risk).
fn random_e4m3(rng: &mut SplitMix64) -> u8 {
    let r = rng.next_u64();
    let exponent = 4 + (r % 8) as u8; // biased 4..=11: 2^-3 ..= 2^4
    let mantissa = ((r >> 8) & 7) as u8;
    let sign = ((r >> 16) & 1) as u8;
    sign << 7 | exponent << 3 | mantissa
}

/// A positive scale in [2^-8, 2^-6).
fn random_scale(rng: &mut SplitMix64) -> f32 {
    let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    (1.0 + u) * 2f32.powi(-8 + (rng.next_u64() % 2) as i32)
}

/// Random inputs for `kernel` with the groups' row counts `group_rows` (one entry, the whole M,
/// for a normal GEMM); each group is padded to [`GROUP_ALIGNMENT`] rows for the m-grouped form.
pub fn problem(kernel: &DeepGemmKernel, group_rows: &[u32], seed: u64) -> Problem {
    let mut rng = SplitMix64(seed);
    let mut row_group = Vec::new();
    match kernel.gemm_type {
        GemmType::Normal => row_group.resize(group_rows.iter().sum::<u32>() as usize, 0),
        GemmType::MGroupedContiguous => {
            for (g, &rows) in group_rows.iter().enumerate() {
                let padded = rows.next_multiple_of(GROUP_ALIGNMENT);
                row_group.extend((0..padded).map(|r| if r < rows { g as i32 } else { -1 }));
            }
        }
    }
    let m = row_group.len() as u32;
    let (n, k) = (kernel.n as usize, kernel.k as usize);
    let kb = kernel.kb() as usize;
    let m_aligned = m.next_multiple_of(4) as usize;
    let a: Vec<u8> = (0..m as usize * k).map(|_| random_e4m3(&mut rng)).collect();
    let b: Vec<u8> = (0..kernel.groups as usize * n * k)
        .map(|_| random_e4m3(&mut rng))
        .collect();
    let mut sfa = vec![0f32; m_aligned * kb];
    for row in 0..m as usize {
        for blk in 0..kb {
            sfa[row + blk * m_aligned] = random_scale(&mut rng);
        }
    }
    let sfb: Vec<f32> = (0..kernel.groups as usize * kernel.n_blocks() as usize * kb)
        .map(|_| random_scale(&mut rng))
        .collect();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut buffers = BTreeMap::from([
        ("a".to_string(), a),
        ("b".to_string(), b),
        ("sfa".to_string(), f32_bytes(&sfa)),
        ("sfb".to_string(), f32_bytes(&sfb)),
    ]);
    if kernel.gemm_type == GemmType::MGroupedContiguous {
        buffers.insert(
            "grouped_layout".into(),
            row_group.iter().flat_map(|g| g.to_le_bytes()).collect(),
        );
    }
    Problem {
        m,
        buffers,
        row_group,
    }
}

/// The CPU reference of the recipe for `rows` × `cols` of D: bf16 bits, row-major.
///
/// m-grouped: a tile's group is that of its first row; a 64-row half whose first row is padding
/// is not computed and stores zeros (the kernel's documented behaviour).
pub fn reference(
    kernel: &DeepGemmKernel,
    problem: &Problem,
    rows: std::ops::Range<u32>,
    cols: std::ops::Range<u32>,
) -> Vec<u16> {
    let (n, k) = (kernel.n as usize, kernel.k as usize);
    let kb = kernel.kb() as usize;
    let m_aligned = problem.m.next_multiple_of(4) as usize;
    let bytes = |name: &str| &problem.buffers[name];
    let f32_at = |name: &str, i: usize| {
        f32::from_le_bytes(bytes(name)[4 * i..4 * i + 4].try_into().expect("4 bytes"))
    };
    let a = bytes("a");
    let b = bytes("b");
    let grouped = kernel.gemm_type == GemmType::MGroupedContiguous;
    let width = cols.len();
    let mut out = Vec::with_capacity(rows.len() * width);
    let table = Fp8Format::E4M3.table();
    let mut a_row = vec![0f64; k];
    for row in rows {
        let r = row as usize;
        let tile_first = r - r % kernel.block_m as usize;
        let half_first = r - r % 64;
        let group = if grouped {
            problem.row_group[tile_first]
        } else {
            0
        };
        if grouped && (problem.row_group[half_first] < 0 || group < 0) {
            out.extend(std::iter::repeat_n(0u16, width));
            continue;
        }
        let g = group as usize;
        for (kk, v) in a_row.iter_mut().enumerate() {
            *v = f64::from(table[a[r * k + kk] as usize]);
        }
        for col in cols.clone().map(|c| c as usize) {
            let b_row = &b[(g * n + col) * k..(g * n + col + 1) * k];
            let mut acc = 0f32;
            for blk in 0..kb {
                let mut partial = 0f64;
                for kk in blk * 128..(blk + 1) * 128 {
                    partial += a_row[kk] * f64::from(table[b_row[kk] as usize]);
                }
                let sa = f32_at("sfa", r + blk * m_aligned);
                let sb = f32_at(
                    "sfb",
                    (g * kernel.n_blocks() as usize + col / 128) * kb + blk,
                );
                acc = (sa * sb).mul_add(partial as f32, acc);
            }
            out.push(half::bf16::from_f32(acc).to_bits());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: &str = "_ZN9deep_gemm23sm90_fp8_gemm_1d2d_implILN4cute4UMMA5MajorE0ELj0ELj7168ELj16384ELj1ELj256ELj128ELj128ELj128ELj128ELj128ELj3ELj128ELj256ELj2ELb1ELj132ELNS_8GemmTypeE0EN7cutlass10bfloat16_tENS_8epilogue9transform16EpilogueIdentityEEEvPfPijjjNS1_13TmaDescriptorESC_SC_SC_";

    #[test]
    fn the_specialization_is_read_from_the_entry() {
        let config = r#"{"block_m": 256, "block_n": 128, "num_stages": 3, "num_sms": 132, "smem_size": 216832}"#;
        let k = DeepGemmKernel::from_entry(NORMAL, config).unwrap();
        assert_eq!((k.n, k.k, k.groups), (7168, 16384, 1));
        assert_eq!(
            (k.block_m, k.block_n, k.block_k, k.stages),
            (256, 128, 128, 3)
        );
        assert_eq!((k.threads, k.multicast, k.multicast_on_a), (384, 2, true));
        assert_eq!((k.sms, k.gemm_type), (132, GemmType::Normal));
        let wrong = config.replace("\"num_stages\": 3", "\"num_stages\": 4");
        assert_eq!(
            DeepGemmKernel::from_entry(NORMAL, &wrong).unwrap_err(),
            "entry's stages 3 differs from the config's `num_stages`"
        );
    }
}
