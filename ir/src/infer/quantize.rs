//! Type rules of block quantization: `quantize` (codes + scale grid) and `dequantize`. The codes
//! are FP8 (`f8e4m3`, `f8e5m2`) or the emulated 12-bit `f12e5m6` (DESIGN.md §8).

use super::{Inferred, Result, fixed, named, need_float};
use crate::attr::Attrs;
use crate::operands::DequantizeOperands;
use crate::{DType, Shape, TensorType};

/// `quantize` to FP8 (or E5M6) codes and an f32 scale grid of `block`s.
pub(super) fn quantize(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let x = ins[0];
    need_float("input", x)?;
    let d = attrs.dtype("dtype").expect("checked");
    if !d.is_block_quantized() {
        return Err(format!(
            "quantize dtype must be an FP8 type or f12e5m6, not {d}"
        ));
    }
    if !matches!(attrs.str("scale_format"), Some("f32" | "ue8m0")) {
        return Err("scale_format must be \"f32\" or \"ue8m0\"".into());
    }
    let scale = block_scale_shape(&x.shape, attrs.ints("block").expect("checked"))?;
    Ok(vec![fixed(d, x.shape.0.clone()), fixed(DType::F32, scale)])
}

/// `dequantize` FP8 codes with their scale grid back to `dtype`.
pub(super) fn dequantize(attrs: &Attrs, ins: &[&TensorType]) -> Result<Vec<Inferred>> {
    let DequantizeOperands {
        codes: q,
        scales: s,
    } = named(DequantizeOperands::from_slice(ins))?;
    if !q.dtype.is_block_quantized() {
        return Err(format!("dequantize input must be FP8 or f12e5m6, got {q}"));
    }
    let want = block_scale_shape(&q.shape, attrs.ints("block").expect("checked"))?;
    if s.dtype != DType::F32 || s.shape.0 != want {
        return Err(format!("scales {s} must be f32{}", Shape(want)));
    }
    let d = attrs.dtype("dtype").expect("checked");
    Ok(vec![fixed(d, q.shape.0.clone())])
}

/// Scale-grid shape of a block quantization: the last two axes divided (rounding up) by `block`.
fn block_scale_shape(shape: &Shape, block: &[i64]) -> Result<Vec<u64>> {
    let [br, bc] = block else {
        return Err(format!(
            "`block` must be [rows, cols], got {} values",
            block.len()
        ));
    };
    if *br <= 0 || *bc <= 0 {
        return Err(format!("`block` sizes must be positive, got [{br}, {bc}]"));
    }
    let mut dims = shape.0.clone();
    let n = dims.len();
    match n {
        0 => return Err("cannot block-quantize a scalar".into()),
        1 => dims[0] = dims[0].div_ceil(*bc as u64),
        _ => {
            dims[n - 2] = dims[n - 2].div_ceil(*br as u64);
            dims[n - 1] = dims[n - 1].div_ceil(*bc as u64);
        }
    }
    Ok(dims)
}
