//! Type rules of the FP8 kinds that quantize-linears and fuse introduce: partial products,
//! promotion, the fused block-scaled GEMM, and norms/activations that quantize their output.

use super::{Inferred, Result, fixed, free, named, need_float, need_int, need_min_rank, need_rank};
use crate::attr::Attrs;
use crate::operands::{Fp8GemmOperands, Fp8PartialsOperands, PromoteOperands};
use crate::{DType, OpKind, Shape, TensorType};

fn need_fp8(what: &str, t: &TensorType) -> Result<()> {
    if t.dtype.is_fp8() {
        Ok(())
    } else {
        Err(format!("{what} must be FP8 codes, got {t}"))
    }
}

fn need_f32(what: &str, t: &TensorType) -> Result<()> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!("{what} must be f32, got {t}"))
    }
}

/// A positive size attribute that is a multiple of `of`.
fn size_attr(attrs: &Attrs, name: &str, of: i64) -> Result<u64> {
    match attrs.int(name) {
        Some(v) if v > 0 && v % of == 0 => Ok(v as u64),
        other => Err(format!(
            "`{name}` must be a positive multiple of {of}, got {}",
            other.map_or("nothing".to_string(), |v| v.to_string())
        )),
    }
}

/// The GEMM's operand layout: dense (`w [N, K]`) or grouped (`w [E, N, K]` + indices `[T, k]`).
struct Gemm {
    /// Result dims before the `N` axis: `x`'s leading dims (dense) or `[T, k]` (grouped).
    rows: Vec<u64>,
    n: u64,
    k: u64,
}

/// Checks x `[*, K]` against w and optional indices; returns the output layout.
fn gemm_layout(x: &TensorType, w: &TensorType, idx: Option<&TensorType>) -> Result<Gemm> {
    need_min_rank("input", x, 1)?;
    let k = x.shape.last();
    match idx {
        None => {
            need_rank("weight", w, 2)?;
            let (n, wk) = (w.shape.dims()[0], w.shape.dims()[1]);
            if wk != k {
                return Err(format!(
                    "input {x} has {k} features but weight {w} expects {wk}"
                ));
            }
            let r = x.shape.rank();
            Ok(Gemm {
                rows: x.shape.dims()[..r - 1].to_vec(),
                n,
                k,
            })
        }
        Some(idx) => {
            need_rank("weight", w, 3)?;
            need_int("indices", idx)?;
            need_rank("indices", idx, 2)?;
            let (t, top) = (idx.shape.dims()[0], idx.shape.dims()[1]);
            let (n, wk) = (w.shape.dims()[1], w.shape.dims()[2]);
            let ok = match x.shape.dims() {
                [xt, xk] => *xt == t && *xk == wk,
                [xt, xs, xk] => *xt == t && *xs == top && *xk == wk,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "input {x} must be [{t}, {wk}] or [{t}, {top}, {wk}] for weight {w} and indices {idx}"
                ));
            }
            Ok(Gemm {
                rows: vec![t, top],
                n,
                k,
            })
        }
    }
}

/// Checks the activation scales `[x rows…, ceil(K/tile)]`, or `[ceil(M/rows), ceil(K/tile)]`
/// for `rows` × `tile` blocks of a 2-D activation (`rows` > 1).
fn check_x_scale(x_rows: &[u64], s: &TensorType, k: u64, tile: u64, rows: u64) -> Result<()> {
    need_f32("activation scales", s)?;
    let mut want = x_rows.to_vec();
    if rows > 1 {
        let [m] = x_rows else {
            return Err(format!(
                "{X_SQUARE_BLOCKS} needs a 2-D activation, got {} row dimensions",
                x_rows.len()
            ));
        };
        want = vec![m.div_ceil(rows)];
    }
    want.push(k.div_ceil(tile));
    if s.shape.dims() != want {
        return Err(format!(
            "activation scales {s} must be [{}] ({rows}×{tile} tiles over K = {k})",
            join(&want)
        ));
    }
    Ok(())
}

/// The optional `promote` / `fp8_gemm` attribute saying the weight operand is an activation
/// quantized in 1 × `weight_block` tiles, one scale per row and group (a training step's Wgrad,
/// whose operands are both tiled along the tokens), rather than in square blocks.
pub const W_ROW_TILES: &str = "w_row_tiles";

/// The optional `promote` / `fp8_gemm` attribute saying the activation operand is quantized in
/// `act_tile` × `act_tile` blocks, one scale per block, rather than in 1 × `act_tile` groups:
/// the training recipe's ablation that scales activation gradients per 128 × 128 block (the
/// report saw it diverge). Only for a dense GEMM of a 2-D activation.
pub const X_SQUARE_BLOCKS: &str = "x_square_blocks";

/// Rows of the activation one scale covers: 1, or `tile` with [`X_SQUARE_BLOCKS`].
fn x_block_rows(attrs: &Attrs, tile: u64) -> u64 {
    if attrs.bool(X_SQUARE_BLOCKS).unwrap_or(false) {
        tile
    } else {
        1
    }
}

/// Rows of the weight one scale covers: `block`, or 1 with [`W_ROW_TILES`].
fn block_rows(attrs: &Attrs, block: u64) -> u64 {
    if attrs.bool(W_ROW_TILES).unwrap_or(false) {
        1
    } else {
        block
    }
}

/// Checks the weight scales `[E?, ceil(N/rows), ceil(K/b)]`.
fn check_w_scale(w: &TensorType, s: &TensorType, block: u64, rows: u64) -> Result<()> {
    need_f32("weight scales", s)?;
    let dims = w.shape.dims();
    let r = dims.len();
    let mut want = dims[..r - 2].to_vec();
    want.push(dims[r - 2].div_ceil(rows));
    want.push(dims[r - 1].div_ceil(block));
    if s.shape.dims() != want {
        return Err(format!(
            "weight scales {s} must be [{}] ({rows}×{block} blocks of {w})",
            join(&want)
        ));
    }
    Ok(())
}

fn join(dims: &[u64]) -> String {
    dims.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `act_tile`, `weight_block`, `promote_interval`, checked against each other (§3).
fn recipe(attrs: &Attrs) -> Result<(u64, u64, u64)> {
    let tile = size_attr(attrs, "act_tile", 32)?;
    let block = size_attr(attrs, "weight_block", tile as i64)?;
    let interval = size_attr(attrs, "promote_interval", 32)?;
    if !tile.is_multiple_of(interval) {
        return Err(format!(
            "promote_interval {interval} must divide act_tile {tile}: a partial sum never spans two scale groups"
        ));
    }
    Ok((tile, block, interval))
}

fn x_rows(x: &TensorType) -> &[u64] {
    let r = x.shape.rank();
    &x.shape.dims()[..r - 1]
}

/// Infers the result types of the FP8 kinds.
pub(super) fn infer(kind: OpKind, attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    match kind {
        OpKind::Fp8Partials => {
            let Fp8PartialsOperands { x, w, indices: idx } =
                named(Fp8PartialsOperands::from_slice(ins))?;
            need_fp8("input", x)?;
            need_fp8("weight", w)?;
            let interval = size_attr(attrs, "interval", 32)?;
            let g = gemm_layout(x, w, idx)?;
            let mut dims = g.rows;
            dims.extend([g.n, g.k.div_ceil(interval)]);
            Ok(vec![fixed(DType::F32, dims)])
        }
        OpKind::Promote => {
            let PromoteOperands {
                partials: p,
                x_scale: xs,
                w_scale: ws,
                indices: idx,
            } = named(PromoteOperands::from_slice(ins))?;
            let (tile, block, interval) = recipe(attrs)?;
            need_f32("partials", p)?;
            need_min_rank("partials", p, 2)?;
            let r = p.shape.rank();
            let (n, groups) = (p.shape.dims()[r - 2], p.shape.dims()[r - 1]);
            let k_max = groups * interval;
            // The scale grids fix K only up to a tile; check them against the widest K.
            let x_rows_len = xs.shape.rank().saturating_sub(1);
            check_x_scale(&xs.shape.dims()[..x_rows_len], xs, k_max, tile, 1)?;
            let x_blocks = x_block_rows(attrs, tile);
            if x_blocks > 1 && (idx.is_some() || r != 3 || xs.shape.rank() != 2) {
                return Err(format!(
                    "{X_SQUARE_BLOCKS} needs a dense GEMM of a 2-D activation, got partials {p}"
                ));
            }
            if x_blocks > 1 && xs.shape.dims()[0] != p.shape.dims()[0].div_ceil(x_blocks) {
                return Err(format!(
                    "activation scales {xs} must have one row per {x_blocks} rows of partials {p}"
                ));
            }
            if let Some(idx) = idx {
                need_int("indices", idx)?;
                need_rank("partials", p, 4)?;
                need_rank("weight scales", ws, 3)?;
                if p.shape.dims()[..2] != *idx.shape.dims() {
                    return Err(format!("partials {p} and indices {idx} disagree on [T, k]"));
                }
            } else {
                need_rank("weight scales", ws, 2)?;
            }
            let wr = ws.shape.rank();
            need_f32("weight scales", ws)?;
            let rows = block_rows(attrs, block);
            if ws.shape.dims()[wr - 2] != n.div_ceil(rows)
                || ws.shape.dims()[wr - 1] != k_max.div_ceil(block)
            {
                return Err(format!(
                    "weight scales {ws} do not match {n} outputs and {groups} groups of {interval} in {rows}×{block} blocks"
                ));
            }
            Ok(vec![free(DType::Bf16, p.shape.dims()[..r - 1].to_vec())])
        }
        OpKind::Fp8Gemm => {
            let Fp8GemmOperands {
                x,
                x_scale: xs,
                w,
                w_scale: ws,
                indices: idx,
            } = named(Fp8GemmOperands::from_slice(ins))?;
            let (tile, block, _) = recipe(attrs)?;
            need_fp8("input", x)?;
            need_fp8("weight", w)?;
            let g = gemm_layout(x, w, idx)?;
            if idx.is_some() && x_block_rows(attrs, tile) > 1 {
                return Err(format!(
                    "{X_SQUARE_BLOCKS} needs a dense GEMM, not a grouped one"
                ));
            }
            check_x_scale(x_rows(x), xs, g.k, tile, x_block_rows(attrs, tile))?;
            check_w_scale(w, ws, block, block_rows(attrs, block))?;
            let mut dims = g.rows;
            dims.push(g.n);
            Ok(vec![free(DType::Bf16, dims)])
        }
        OpKind::RmsNormQuant | OpKind::SwigluQuant => {
            let (a, b) = (ins[0], ins[1]);
            need_float("input", a)?;
            need_float(
                if kind == OpKind::RmsNormQuant {
                    "weight"
                } else {
                    "up"
                },
                b,
            )?;
            need_min_rank("input", a, 1)?;
            let d = a.shape.last();
            if kind == OpKind::RmsNormQuant {
                if b.shape.dims() != [d] {
                    return Err(format!(
                        "weight {b} must have shape [{d}] to match input {a}"
                    ));
                }
                if attrs.float("eps").is_some_and(|e| e <= 0.0) {
                    return Err("eps must be positive".into());
                }
            } else if a.shape != b.shape {
                return Err(format!("swiglu_quant: shapes differ, {a} vs {b}"));
            }
            quantized_rows(kind, attrs, &a.shape)
        }
        _ => unreachable!("{kind} is not an FP8 kind"),
    }
}

/// The `(codes, scales)` of a kind that quantizes its own output, of shape `out`, in 1 ×
/// `act_tile` groups of the last axis (`dtype`, `act_tile`, `scale_format`): codes of that
/// shape, scales with one group per tile of the last axis.
pub(super) fn quantized_rows(kind: OpKind, attrs: &Attrs, out: &Shape) -> Result<Vec<Inferred>> {
    let dtype = attrs.dtype("dtype").unwrap_or(DType::F8E4M3);
    if !dtype.is_fp8() {
        return Err(format!("{kind} dtype must be an FP8 type, not {dtype}"));
    }
    if !matches!(attrs.str("scale_format"), Some("f32" | "ue8m0")) {
        return Err("scale_format must be \"f32\" or \"ue8m0\"".into());
    }
    let tile = size_attr(attrs, "act_tile", 32)?;
    let dims = out.dims();
    let mut scale = dims[..dims.len() - 1].to_vec();
    scale.push(out.last().div_ceil(tile));
    Ok(vec![fixed(dtype, dims.to_vec()), fixed(DType::F32, scale)])
}
