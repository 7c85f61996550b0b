//! `fp8_gemm`: the block-scaled FP8 GEMM with FP32 promotion (DESIGN.md §3), dense or grouped
//! over routed experts.
//!
//! `y[r, n] = Σ_g (Σ_{k in interval g} x_q[r, k] · w_q[n, k]) · (s_x[r, k/tile] · s_w[n/block,
//! k/block])`: FP8 products (exact in f32) are summed per promotion interval, and each partial
//! sum is scaled and added into the f32 accumulator, in the order the CPU reference adds them.
//! The grouped form computes row `r = t·top_k + slot` with the weights of expert
//! `indices[t, slot]`, reading x row `t` (shared activation) or `r` (per-slot activation).
//!
//! Four forms: [`GemmForm::WgmmaTma`], Hopper's pipelined kernel of [`super::fp8_gemm_tma`]
//! (sm_90a: TMA ring, warp-specialized, persistent); [`GemmForm::MmaPipelined`], Ada's
//! pipelined kernel of [`super::fp8_gemm_cp_async`] (sm_89: cp.async ring, ldmatrix, mma.sync);
//! [`GemmForm::MmaSync`], the one-warp-per-16×8-tile tensor-core kernel of
//! [`super::fp8_gemm_mma`] (what the pipelined forms cannot take: K not in whole 16-byte
//! chunks, other scale tiles); and [`GemmForm::Simt`], one output per thread with the
//! exact accumulator's numerics (any promotion interval; grouped rows gathered through the
//! indices). The tensor-core forms' grouped GEMMs read the expert-contiguous layout of
//! [`super::moe_dispatch`] instead of the indices.

use dsc_ir::DType;
use melior::ir::Value;
use serde::Serialize;

use super::{Launch, Param, add_per_element_kernel};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::{Emit, Emitted};

/// Routed experts of a grouped GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Grouped {
    /// Experts (the leading dim of the weights).
    pub experts: u64,
    /// Tokens.
    pub tokens: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Whether x has one row per (token, slot) (`[T, k, K]`) rather than per token.
    pub x_per_slot: bool,
}

/// How the products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmForm {
    /// One output per thread on the CUDA cores.
    Simt,
    /// One 16 × 8 tile per warp on the tensor cores (`mma.sync m16n8k32`).
    MmaSync,
    /// The pipelined Hopper kernel of [`super::fp8_gemm_tma`] (sm_90a): TMA loads into a ring
    /// of `stages`, a producer and `block_m / 64` consumer warpgroups (`wgmma m64nNk32`),
    /// persistent.
    WgmmaTma {
        /// Rows of a tile: 64 or 128.
        block_m: u64,
        /// Columns of a tile: 128, 64, 32 or 16.
        block_n: u64,
        /// Stages of the shared-memory ring.
        stages: u64,
    },
    /// The pipelined Ada kernel of [`super::fp8_gemm_cp_async`] (sm_89): `cp.async` loads into
    /// a ring of `stages` in shared memory, `ldmatrix` fragments, one warp per 64 × 32 sub-tile
    /// (32 × 32 or 32 × 16 in blocks under 128 × 64) of `mma.sync m16n8k32`, one block per
    /// tile.
    MmaPipelined {
        /// Rows of a tile: 64 or 128.
        block_m: u64,
        /// Columns of a tile: 128, 64 or 32.
        block_n: u64,
        /// Stages of the shared-memory ring.
        stages: u64,
    },
}

/// One block-scaled FP8 GEMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fp8Gemm {
    /// Output rows (tokens × top_k when grouped).
    pub rows: u64,
    /// Output columns.
    pub n: u64,
    /// Reduction length.
    pub k: u64,
    /// Activation scale groups along K.
    pub act_tile: u64,
    /// Weight scale block edge.
    pub weight_block: u64,
    /// Elements of K per partial sum.
    pub promote_interval: u64,
    /// FP8 format of both operands.
    pub format: DType,
    /// Output dtype.
    pub output: DType,
    /// Present for routed experts.
    pub grouped: Option<Grouped>,
    /// The kernel form.
    pub form: GemmForm,
    /// Whether w's scales are per row and K block (1 × `weight_block` tiles: a training step's
    /// Wgrad, whose operands are both activations tiled along the tokens) rather than per
    /// `weight_block`² block. Left out of the canonical spec when false, so that the entry
    /// names of the forward's GEMMs do not depend on it.
    #[serde(skip_serializing_if = "is_false")]
    pub w_row_tiles: bool,
    /// Whether x's scales are per `act_tile`² block rather than per 1 × `act_tile` group (the
    /// recipe's ablation scaling activation gradients per block; dense only).
    #[serde(skip_serializing_if = "is_false")]
    pub x_square_blocks: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

impl Fp8Gemm {
    /// A dense `rows × n × k` GEMM in DeepSeek-V3's recipe (1×128 activation tiles, 128×128
    /// weight blocks, promotion every 128 of K, E4M3, BF16 output) of `form`: the shape the
    /// tile heuristics are documented and tested with.
    pub fn recipe(rows: u64, n: u64, k: u64, form: GemmForm) -> Self {
        Fp8Gemm {
            rows,
            n,
            k,
            act_tile: 128,
            weight_block: 128,
            promote_interval: 128,
            format: DType::F8E4M3,
            output: DType::Bf16,
            grouped: None,
            form,
            w_row_tiles: false,
            x_square_blocks: false,
        }
    }

    /// Rows of w one scale covers: `weight_block`, or 1 with [`Self::w_row_tiles`].
    pub fn w_scale_rows(&self) -> u64 {
        if self.w_row_tiles {
            1
        } else {
            self.weight_block
        }
    }

    /// Rows of x one scale covers: 1, or `act_tile` with [`Self::x_square_blocks`].
    pub fn x_scale_rows(&self) -> u64 {
        if self.x_square_blocks {
            self.act_tile
        } else {
            1
        }
    }

    /// Spec name.
    pub fn spec(&self) -> &'static str {
        "fp8_gemm"
    }

    fn x_rows(&self) -> u64 {
        match self.grouped {
            Some(g) if !g.x_per_slot => g.tokens,
            _ => self.rows,
        }
    }

    fn experts(&self) -> u64 {
        self.grouped.map_or(1, |g| g.experts)
    }

    /// The expert-contiguous layout a tensor-core form reads, padded to its tile rows.
    pub fn dispatch(&self, g: Grouped) -> super::moe_dispatch::MoeDispatch {
        super::moe_dispatch::MoeDispatch {
            tokens: g.tokens,
            top_k: g.top_k,
            experts: g.experts,
            tile_rows: match self.form {
                GemmForm::WgmmaTma { block_m, .. } | GemmForm::MmaPipelined { block_m, .. } => {
                    block_m
                }
                _ => super::mma::TILE_M,
            },
        }
    }

    /// `(x, x_scale, w, w_scale, [indices | rows, tiles,] [x_map,] [w_map,] out)`: the pipelined
    /// form's maps are the TMA tensor maps over x and w ([`super::fp8_gemm_tma::tensor_maps`]).
    pub fn params(&self) -> Vec<Param> {
        let k_tiles = self.k.div_ceil(self.act_tile);
        let w_blocks = self.n.div_ceil(self.w_scale_rows()) * self.k.div_ceil(self.weight_block);
        let x_scale_rows = self.x_rows().div_ceil(self.x_scale_rows());
        let mut params = vec![
            Param::new("x", self.format, self.x_rows() * self.k),
            Param::new("x_scale", DType::F32, x_scale_rows * k_tiles),
            Param::new("w", self.format, self.experts() * self.n * self.k),
            Param::new("w_scale", DType::F32, self.experts() * w_blocks),
        ];
        let map = |name| Param::new(name, DType::I64, TENSOR_MAP_BYTES / 8);
        match (self.grouped, self.form) {
            (None, GemmForm::WgmmaTma { .. }) => {
                params.push(map("x_map"));
                params.push(map("w_map"));
            }
            (None, _) => {}
            (Some(g), GemmForm::Simt) => {
                params.push(Param::new("indices", DType::I32, g.tokens * g.top_k));
            }
            (
                Some(g),
                GemmForm::MmaSync | GemmForm::WgmmaTma { .. } | GemmForm::MmaPipelined { .. },
            ) => {
                params.extend(self.dispatch(g).layout_params());
                if let GemmForm::WgmmaTma { .. } = self.form {
                    params.push(map("w_map"));
                }
            }
        }
        params.push(Param::new("out", self.output, self.rows * self.n));
        params
    }

    /// One thread per output (SIMT), one warp per tile (MMA) or one block per tile (pipelined).
    pub fn launch(&self) -> Launch {
        match self.form {
            GemmForm::Simt => Launch::per_element(self.rows * self.n),
            GemmForm::MmaSync => super::fp8_gemm_mma::launch(self),
            GemmForm::WgmmaTma { .. } => super::fp8_gemm_tma::launch(self),
            GemmForm::MmaPipelined { .. } => super::fp8_gemm_cp_async::launch(self),
        }
    }

    /// Builds the kernel.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        match self.form {
            GemmForm::Simt => self.build_simt(module, entry),
            GemmForm::MmaSync => super::fp8_gemm_mma::build(self, module, entry),
            GemmForm::WgmmaTma { .. } => super::fp8_gemm_tma::build(self, module, entry),
            GemmForm::MmaPipelined { .. } => super::fp8_gemm_cp_async::build(self, module, entry),
        }
    }

    fn build_simt(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        add_per_element_kernel(
            module,
            entry,
            &self.params(),
            self.rows * self.n,
            |e, args, i| {
                let (x, x_scale, w, w_scale) = (args[0], args[1], args[2], args[3]);
                let out = *args.last().expect("out");
                let n = e.index(self.n as i64)?;
                let k = e.index(self.k as i64)?;
                let row = e.divui(i, n)?;
                let col = e.remui(i, n)?;
                let (x_row, expert) = match self.grouped {
                    None => (row, e.index(0)?),
                    Some(g) => {
                        let index = e.load(args[4], row)?;
                        let expert = e.index_cast(index, e.index_type())?;
                        let x_row = if g.x_per_slot {
                            row
                        } else {
                            let top_k = e.index(g.top_k as i64)?;
                            e.divui(row, top_k)?
                        };
                        (x_row, expert)
                    }
                };
                let x_base = e.muli(x_row, k)?;
                let w_row = e.muli(expert, n)?;
                let w_row = e.addi(w_row, col)?;
                let w_base = e.muli(w_row, k)?;
                let k_tiles = e.index(self.k.div_ceil(self.act_tile) as i64)?;
                let x_scale_row = e.index(self.x_scale_rows() as i64)?;
                let x_scale_row = e.divui(x_row, x_scale_row)?;
                let x_scale_base = e.muli(x_scale_row, k_tiles)?;
                let block = e.index(self.weight_block as i64)?;
                let k_blocks = self.k.div_ceil(self.weight_block);
                let n_blocks = self.n.div_ceil(self.w_scale_rows());
                let w_scale_row = e.index((n_blocks * k_blocks) as i64)?;
                let w_scale_base = e.muli(expert, w_scale_row)?;
                let w_scale_rows = e.index(self.w_scale_rows() as i64)?;
                let n_block = e.divui(col, w_scale_rows)?;
                let k_blocks_v = e.index(k_blocks as i64)?;
                let n_block_base = e.muli(n_block, k_blocks_v)?;
                let w_scale_base = e.addi(w_scale_base, n_block_base)?;
                let tile = e.index(self.act_tile as i64)?;
                let interval = e.index(self.promote_interval as i64)?;

                let zero = e.f32(0.0)?;
                let acc = e.cell(zero)?;
                e.for_const(0, self.k as i64, self.promote_interval as i64, |e, k0| {
                    let partial = e.cell(zero)?;
                    let end = e.addi(k0, interval)?;
                    let end = e.minui(end, k)?;
                    let one = e.index(1)?;
                    e.for_range(k0, end, one, |e, kk| {
                        let xa = e.addi(x_base, kk)?;
                        let xq = e.load(x, xa)?;
                        let xv = decode_fp8(&e, xq, self.format)?;
                        let wa = e.addi(w_base, kk)?;
                        let wq = e.load(w, wa)?;
                        let wv = decode_fp8(&e, wq, self.format)?;
                        let product = e.mulf(xv, wv)?;
                        e.accumulate(partial, product)
                    })?;
                    let g = e.divui(k0, tile)?;
                    let sx = e.load_f32(x_scale, x_scale_base, g)?;
                    let kb = e.divui(k0, block)?;
                    let sw = e.load_f32(w_scale, w_scale_base, kb)?;
                    let s = e.mulf(sx, sw)?;
                    let p = e.get(partial)?;
                    let scaled = e.mulf(p, s)?;
                    e.accumulate(acc, scaled)
                })?;
                let value = e.get(acc)?;
                let value = e.round_to(value, self.output)?;
                e.store(value, out, i);
                Ok(())
            },
        )
    }
}

/// Where row `p` of a tensor-core tile reads and writes: in the M extent (dense), or position
/// `p` of the expert-contiguous layout whose `rows` the dispatch wrote (grouped).
pub(super) fn tile_row<'c, 'a>(
    gemm: &Fp8Gemm,
    e: &Emit<'c, 'a>,
    dispatch_rows: Option<Value<'c, '_>>,
    p: Value<'c, 'a>,
) -> Result<TileRow<'c, 'a>, CodegenError> {
    match (dispatch_rows, gemm.grouped) {
        (Some(rows), Some(grouped)) => {
            let r = e.load(rows, p)?;
            let zero = e.int(32, 0)?;
            let real = e.cmpi(melior::dialect::arith::CmpiPredicate::Sge, r, zero)?;
            let r = e.select(real, r, zero)?;
            let out = e.index_cast(r, e.index_type())?;
            let x = if grouped.x_per_slot {
                out
            } else {
                let top_k = e.index(grouped.top_k as i64)?;
                e.divui(out, top_k)?
            };
            Ok(TileRow { x, out, real })
        }
        _ => {
            let rows = e.index(gemm.rows as i64)?;
            let real = e.lt(p, rows)?;
            let zero = e.index(0)?;
            let safe = e.select(real, p, zero)?;
            Ok(TileRow {
                x: safe,
                out: safe,
                real,
            })
        }
    }
}

/// Bytes of a TMA tensor map (`CUtensorMap`).
pub const TENSOR_MAP_BYTES: u64 = 128;

/// The buffers of a tensor-core form, named (found by [`Fp8Gemm::params`]' names).
pub(super) struct Operands<'c, 'x> {
    pub x: Value<'c, 'x>,
    pub x_scale: Value<'c, 'x>,
    pub w: Value<'c, 'x>,
    pub w_scale: Value<'c, 'x>,
    /// Grouped: the dispatch's `rows` and `tiles`.
    pub dispatch: Option<(Value<'c, 'x>, Value<'c, 'x>)>,
    /// The pipelined form: the tensor map over x (dense only).
    pub x_map: Option<Value<'c, 'x>>,
    /// The pipelined form: the tensor map over w.
    pub w_map: Option<Value<'c, 'x>>,
    pub out: Value<'c, 'x>,
}

impl<'c, 'x> Operands<'c, 'x> {
    /// The kernel arguments `args` of a tensor-core form of `gemm`.
    pub fn of(gemm: &Fp8Gemm, args: &[Value<'c, 'x>]) -> Self {
        let params = gemm.params();
        let at = |name: &str| params.iter().position(|p| p.name == name).map(|i| args[i]);
        let pair = |a: &str, b: &str| at(a).zip(at(b));
        let named =
            |name: &str| at(name).expect("every tensor-core form takes x, w, their scales and out");
        Operands {
            x: named("x"),
            x_scale: named("x_scale"),
            w: named("w"),
            w_scale: named("w_scale"),
            dispatch: pair("rows", "tiles"),
            x_map: at("x_map"),
            w_map: at("w_map"),
            out: named("out"),
        }
    }
}

/// One row of a tensor-core tile.
#[derive(Clone, Copy)]
pub(super) struct TileRow<'c, 'x> {
    /// Row of x (and of its scales) it reads; 0 when not real.
    pub x: Value<'c, 'x>,
    /// Row of the output it writes.
    pub out: Value<'c, 'x>,
    /// Whether it is a real row (not padding, not past M).
    pub real: Value<'c, 'x>,
}

/// The f32 value of FP8 code `code` (an `i8`): PTX `cvt.rn.f16x2.{e4m3,e5m2}x2` (exact) then
/// f16 → f32 (exact).
pub(super) fn decode_fp8<'c, 'a>(
    e: &Emit<'c, 'a>,
    code: Value<'c, '_>,
    format: DType,
) -> Emitted<'c, 'a> {
    let wide = e.extui(code, e.int_type(16))?;
    let instruction = match format {
        DType::F8E5M2 => {
            "{ .reg .b32 pair; .reg .b16 lo, hi; cvt.rn.f16x2.e5m2x2 pair, $1; mov.b32 {lo, hi}, pair; cvt.f32.f16 $0, lo; }"
        }
        _ => {
            "{ .reg .b32 pair; .reg .b16 lo, hi; cvt.rn.f16x2.e4m3x2 pair, $1; mov.b32 {lo, hi}, pair; cvt.f32.f16 $0, lo; }"
        }
    };
    e.inline_asm(instruction, "=f,h", &[wide], e.f32_type())
}
