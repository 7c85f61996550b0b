//! `cvt`: between integer widths, integers and floats, float widths, and the packed 16-bit and
//! FP8 pairs (`bf16x2`, `f16x2`, `e4m3x2`, `e5m2x2`: the first source goes to the upper half).
//! FP8 encoding and decoding go through `dsc_kernels`' numerics, the CPU reference's own.

use dsc_kernels::numerics::fp8::{self, Fp8Format};

use super::float::{canon, ftz, round_f32, to_bf16_bits, to_f16_bits};
use super::operand::{mask_bits, sext};
use crate::ptx::Ty;
use crate::ptx::decode::Rnd;

/// The modifiers of one `cvt`.
#[derive(Debug, Clone, Copy)]
pub struct CvtMods {
    /// Float rounding.
    pub rnd: Option<Rnd>,
    /// Integer rounding.
    pub irnd: Option<Rnd>,
    /// `.sat`.
    pub sat: bool,
    /// `.satfinite`.
    pub satfinite: bool,
    /// `.ftz`.
    pub ftz: bool,
    /// `.relu`.
    pub relu: bool,
}

fn is_int(t: Ty) -> bool {
    matches!(
        t,
        Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64
    )
}

fn int_range(t: Ty) -> (i128, i128) {
    let bits = t.bits();
    if t.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

fn fp8_format(t: Ty) -> Option<Fp8Format> {
    match t {
        Ty::E4m3 | Ty::E4m3x2 => Some(Fp8Format::E4M3),
        Ty::E5m2 | Ty::E5m2x2 => Some(Fp8Format::E5M2),
        _ => None,
    }
}

/// The exact value of a scalar float source.
fn float_source(t: Ty, bits: u64, m: &CvtMods) -> Option<f64> {
    Some(match t {
        Ty::F32 => {
            let x = f32::from_bits(bits as u32);
            f64::from(if m.ftz { ftz(x) } else { x })
        }
        Ty::F64 => f64::from_bits(bits),
        Ty::Bf16 => super::float::bf16_value(bits),
        Ty::F16 => super::float::f16_value(bits),
        _ => return None,
    })
}

/// Rounds a float to an integral value with `rnd`.
fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
    }
}

/// Rounds an exact value to a 16-bit float (`bf` or f16) with `rnd`, `.satfinite`, `.relu`.
fn to_half(x: f64, bf: bool, m: &CvtMods) -> Option<u16> {
    let rnd = m.rnd?;
    if rnd != Rnd::Rn && rnd != Rnd::Rz {
        return None;
    }
    let x = if m.relu && !x.is_nan() && x < 0.0 {
        0.0
    } else {
        x
    };
    let mut bits = if bf { to_bf16_bits(x) } else { to_f16_bits(x) };
    let value = |b: u16| {
        if bf {
            super::float::bf16_value(u64::from(b))
        } else {
            super::float::f16_value(u64::from(b))
        }
    };
    if rnd == Rnd::Rz && !x.is_nan() && value(bits).abs() > x.abs() {
        bits -= 1; // one step toward zero (magnitudes are monotonic in the bits)
    }
    let max: u16 = if bf { 0x7f7f } else { 0x7bff };
    if m.satfinite && value(bits).is_infinite() {
        bits = max | (bits & 0x8000);
    }
    if m.sat {
        let v = value(bits);
        if v.is_nan() || v < 0.0 {
            bits = 0;
        } else if v > 1.0 {
            bits = if bf { 0x3f80 } else { 0x3c00 };
        }
    }
    Some(bits)
}

/// FP8 code of an exact f32 value (RN, satfinite; NaN stays NaN).
fn to_fp8(x: f32, fmt: Fp8Format, m: &CvtMods) -> Option<u8> {
    if m.rnd != Some(Rnd::Rn) || !m.satfinite {
        return None;
    }
    let x = if m.relu && !x.is_nan() && x < 0.0 {
        0.0
    } else {
        x
    };
    Some(fp8::encode(fmt, x))
}

/// Converts `a` (and `b` for the two-source packed forms) from `src` to `dst`; `None` for a
/// combination not implemented.
pub fn cvt(dst: Ty, src: Ty, m: &CvtMods, a: u64, b: Option<u64>) -> Option<u64> {
    // Two f32 sources packed into one destination.
    if let Some(b) = b {
        if src != Ty::F32 {
            return None;
        }
        let (x, y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
        return match dst {
            Ty::Bf16x2 | Ty::F16x2 => {
                let bf = dst == Ty::Bf16x2;
                let hi = to_half(f64::from(x), bf, m)?;
                let lo = to_half(f64::from(y), bf, m)?;
                Some((u64::from(hi) << 16) | u64::from(lo))
            }
            Ty::E4m3x2 | Ty::E5m2x2 => {
                let fmt = fp8_format(dst)?;
                let hi = to_fp8(x, fmt, m)?;
                let lo = to_fp8(y, fmt, m)?;
                Some((u64::from(hi) << 8) | u64::from(lo))
            }
            _ => None,
        };
    }
    // Packed pair to packed pair.
    match (dst, src) {
        (Ty::F16x2, Ty::E4m3x2 | Ty::E5m2x2) => {
            let fmt = fp8_format(src)?;
            let half = |code: u64| u64::from(to_f16_bits(f64::from(fp8::decode(fmt, code as u8))));
            return Some((half((a >> 8) & 0xff) << 16) | half(a & 0xff));
        }
        (Ty::E4m3x2 | Ty::E5m2x2, Ty::F16x2) => {
            let fmt = fp8_format(dst)?;
            let code = |h: u64| to_fp8(super::float::f16_value(h) as f32, fmt, m).map(u64::from);
            return Some((code((a >> 16) & 0xffff)? << 8) | code(a & 0xffff)?);
        }
        _ => {}
    }
    if is_int(dst) && is_int(src) {
        let v: i128 = if src.is_signed() {
            i128::from(sext(a, src.bits()))
        } else {
            i128::from(mask_bits(a, src.bits()))
        };
        let v = if m.sat {
            let (lo, hi) = int_range(dst);
            v.clamp(lo, hi)
        } else {
            v
        };
        return Some(mask_bits(v as u64, dst.bits()));
    }
    if is_int(src) {
        let v: i128 = if src.is_signed() {
            i128::from(sext(a, src.bits()))
        } else {
            i128::from(mask_bits(a, src.bits()))
        };
        let rnd = m.rnd.unwrap_or(Rnd::Rn);
        return match dst {
            Ty::F32 => {
                let hi = v as f64;
                let lo = (v - hi as i128) as f64;
                let r = if rnd == Rnd::Rn {
                    v as f32
                } else {
                    round_f32(hi, lo, rnd)
                };
                Some(u64::from(r.to_bits()))
            }
            Ty::F64 if rnd == Rnd::Rn || v.unsigned_abs() < (1 << 53) => Some((v as f64).to_bits()),
            Ty::Bf16 | Ty::F16 => {
                let exact = v.unsigned_abs() < (1 << 53);
                let mods = CvtMods {
                    rnd: Some(rnd),
                    ..*m
                };
                exact
                    .then(|| to_half(v as f64, dst == Ty::Bf16, &mods))
                    .flatten()
                    .map(u64::from)
            }
            _ => None,
        };
    }
    let x = float_source(src, a, m)?;
    if is_int(dst) {
        let rnd = m.irnd?;
        if x.is_nan() {
            return Some(0);
        }
        let (lo, hi) = int_range(dst);
        let r = round_integral(x, rnd);
        let v = if r < lo as f64 {
            lo
        } else if r > hi as f64 {
            hi
        } else {
            r as i128
        };
        return Some(mask_bits(v as u64, dst.bits()));
    }
    match dst {
        Ty::F32 => {
            let r = if let Some(irnd) = m.irnd {
                canon(round_integral(x, irnd) as f32)
            } else if src == Ty::F64 {
                canon(round_f32(x, 0.0, m.rnd?))
            } else {
                // Widening (bf16, f16, f32 → f32) is exact.
                canon(x as f32)
            };
            let r = if m.ftz { ftz(r) } else { r };
            let r = if m.sat { super::float::saturate(r) } else { r };
            Some(u64::from(r.to_bits()))
        }
        Ty::F64 => {
            let r = match m.irnd {
                Some(irnd) => round_integral(x, irnd),
                None => x,
            };
            Some(super::float::canon64(r).to_bits())
        }
        Ty::Bf16 | Ty::F16 => {
            if let Some(irnd) = m.irnd {
                let r = round_integral(x, irnd);
                let mods = CvtMods {
                    rnd: Some(Rnd::Rn),
                    ..*m
                };
                return to_half(r, dst == Ty::Bf16, &mods).map(u64::from);
            }
            to_half(x, dst == Ty::Bf16, m).map(u64::from)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: CvtMods = CvtMods {
        rnd: None,
        irnd: None,
        sat: false,
        satfinite: false,
        ftz: false,
        relu: false,
    };

    #[test]
    fn integer_widths() {
        assert_eq!(
            cvt(Ty::U64, Ty::U32, &NONE, 0xffff_ffff, None),
            Some(0xffff_ffff)
        );
        assert_eq!(
            cvt(Ty::S64, Ty::S32, &NONE, 0xffff_ffff, None),
            Some(u64::MAX)
        );
        assert_eq!(cvt(Ty::U32, Ty::U64, &NONE, 0x1_0000_0005, None), Some(5));
        let sat = CvtMods { sat: true, ..NONE };
        assert_eq!(
            cvt(Ty::U8, Ty::S32, &sat, (-5i32) as u32 as u64, None),
            Some(0)
        );
    }

    #[test]
    fn float_to_int_saturates_and_rounds() {
        let rni = CvtMods {
            irnd: Some(Rnd::Rn),
            ..NONE
        };
        let f = |x: f32| u64::from(x.to_bits());
        assert_eq!(cvt(Ty::S32, Ty::F32, &rni, f(2.5), None), Some(2));
        assert_eq!(
            cvt(Ty::S32, Ty::F32, &rni, f(-3.5), None),
            Some((-4i32) as u32 as u64)
        );
        assert_eq!(
            cvt(Ty::S32, Ty::F32, &rni, f(1e20), None),
            Some(0x7fff_ffff)
        );
        assert_eq!(cvt(Ty::S32, Ty::F32, &rni, f(f32::NAN), None), Some(0));
        assert_eq!(cvt(Ty::S32, Ty::F32, &NONE, f(1.0), None), None);
        assert_eq!(
            cvt(
                Ty::F32,
                Ty::F32,
                &CvtMods {
                    irnd: Some(Rnd::Rm),
                    ..NONE
                },
                f(-1.5),
                None
            ),
            Some(f(-2.0))
        );
    }

    #[test]
    fn packed_pairs_put_the_first_source_high() {
        let f = |x: f32| u64::from(x.to_bits());
        let rn = CvtMods {
            rnd: Some(Rnd::Rn),
            ..NONE
        };
        assert_eq!(
            cvt(Ty::Bf16x2, Ty::F32, &rn, f(1.0), Some(f(2.0))),
            Some(0x3f80_4000)
        );
        let sf = CvtMods {
            rnd: Some(Rnd::Rn),
            satfinite: true,
            ..NONE
        };
        // 448 → 0x7e, -1000 saturates to -448 → 0xfe.
        assert_eq!(
            cvt(Ty::E4m3x2, Ty::F32, &sf, f(448.0), Some(f(-1000.0))),
            Some(0x7efe)
        );
        assert_eq!(
            cvt(Ty::F16x2, Ty::E4m3x2, &rn, 0x7e38, None),
            Some((0x5f00 << 16) | 0x3c00)
        );
        assert_eq!(
            cvt(Ty::E4m3x2, Ty::F32, &rn, 0, Some(0)),
            None,
            "needs .satfinite"
        );
    }

    #[test]
    fn narrowing_floats() {
        let f = |x: f32| u64::from(x.to_bits());
        let rz = CvtMods {
            rnd: Some(Rnd::Rz),
            ..NONE
        };
        // 1 + 2^-8 + 2^-10 rounds to nearest 1 + 2^-7 but toward zero to 1.
        let x = 1.0 + 2f32.powi(-8) + 2f32.powi(-10);
        assert_eq!(cvt(Ty::Bf16, Ty::F32, &rz, f(x), None), Some(0x3f80));
        let rn = CvtMods {
            rnd: Some(Rnd::Rn),
            ..NONE
        };
        assert_eq!(cvt(Ty::Bf16, Ty::F32, &rn, f(x), None), Some(0x3f81));
        let sf = CvtMods {
            rnd: Some(Rnd::Rn),
            satfinite: true,
            ..NONE
        };
        assert_eq!(cvt(Ty::F16, Ty::F32, &sf, f(1e6), None), Some(0x7bff));
        assert_eq!(cvt(Ty::F32, Ty::Bf16, &NONE, 0x3f80, None), Some(f(1.0)));
    }
}
