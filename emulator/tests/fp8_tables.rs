//! Every FP8 and BF16 conversion instruction dsc uses, run on the emulator over all of
//! `shared/testdata/fp8_tables.json` (reference values from numpy + ml_dtypes, independent of
//! dsc; see the README next to it): one launch per table, every entry compared.
//!
//! Packing (PTX ISA, `cvt`): converting two f32 inputs `a`, `b` to `.e4m3x2`/`.e5m2x2` (`.b16`)
//! or `.bf16x2` (`.b32`) puts the value from `a` in the upper half of `d` and the value from `b`
//! in the lower half; `cvt.f16x2.e4m3x2 d, a` converts the upper 8 bits of `a` into the upper
//! 16 bits of `d` and the lower into the lower.

mod common;

use common::{bytes_u16, bytes_u32, elementwise, run_elementwise, u16s, u32s};
use serde_json::Value;

const TABLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/fp8_tables.json"
);

fn tables() -> Value {
    let text = std::fs::read_to_string(TABLES).unwrap_or_else(|e| {
        panic!("the reference tables {TABLES} are missing ({e}): they live in the shared checkout next to this repository (shared/testdata/fp8_tables.json)")
    });
    serde_json::from_str(&text).expect("fp8_tables.json parses")
}

fn hex(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().expect("a hex string"), 16).expect("hex")
}

/// `(f32 bits, expected code)` pairs of an encode table.
fn pairs(t: &Value, key: &str) -> Vec<(u32, u32)> {
    t[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} missing"))
        .iter()
        .map(|p| (hex(&p[0]), hex(&p[1])))
        .collect()
}

/// `cvt.rn.f16x2.<fmt>x2` over all 256 codes: element i holds code i in its low byte and code
/// 255 - i in its high byte, so every code is decoded in both halves.
fn decode(fmt: &str, key: &str) {
    let t = tables();
    let table = t[key].as_array().unwrap_or_else(|| panic!("{key} missing"));
    assert_eq!(table.len(), 256);
    let codes: Vec<u16> = (0..256u16).map(|i| i | (255 - i) << 8).collect();
    let ptx = elementwise(
        &[2],
        &[4],
        "\t.reg .b16 %h1;\n\t.reg .b32 %v1;",
        &format!(
            "\tld.global.b16 %h1, [%in0];\n\tcvt.rn.f16x2.{fmt}x2 %v1, %h1;\n\tst.global.b32 [%out0], %v1;"
        ),
    );
    let out = run_elementwise(
        &format!("decode_{fmt}"),
        &ptx,
        256,
        &[&bytes_u16(&codes)],
        &[4],
    );
    let got = u32s(&out[0]);
    let mut failures = Vec::new();
    for (i, &word) in got.iter().enumerate() {
        for (code, half) in [(i, word & 0xffff), (255 - i, word >> 16)] {
            let value = half::f16::from_bits(half as u16).to_f32();
            let want = table[code].as_str().unwrap();
            let ok = if want == "nan" {
                value.is_nan()
            } else {
                value.to_bits() == u32::from_str_radix(want, 16).unwrap()
            };
            if !ok {
                failures.push(format!(
                    "code {code:#04x}: got {value} ({half:#06x}), want {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "cvt.rn.f16x2.{fmt}x2: {} wrong: {:?}",
        failures.len(),
        failures
    );
}

/// Thread i converts `a = x[i]`, `b = x[(i + 1) % n]` with `inst`; the result's upper part must
/// be the code of `x[i]` and its lower part that of `x[i + 1]`. A NaN input may give any NaN
/// code (`is_nan`).
fn encode_pairs(
    name: &str,
    inst: &str,
    out_bytes: u32,
    pairs: &[(u32, u32)],
    is_nan: impl Fn(u32) -> bool,
) {
    let n = pairs.len() as u32;
    let x: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let y: Vec<u32> = (0..pairs.len()).map(|i| x[(i + 1) % pairs.len()]).collect();
    let (st, reg) = if out_bytes == 2 {
        ("b16", "b16")
    } else {
        ("b32", "b32")
    };
    let ptx = elementwise(
        &[4, 4],
        &[out_bytes],
        &format!("\t.reg .f32 %f<3>;\n\t.reg .{reg} %d1;"),
        &format!(
            "\tld.global.f32 %f1, [%in0];\n\tld.global.f32 %f2, [%in1];\n\
             \t{inst} %d1, %f1, %f2;\n\tst.global.{st} [%out0], %d1;"
        ),
    );
    let out = run_elementwise(
        name,
        &ptx,
        n,
        &[&bytes_u32(&x), &bytes_u32(&y)],
        &[out_bytes],
    );
    let got: Vec<u32> = if out_bytes == 2 {
        u16s(&out[0]).into_iter().map(u32::from).collect()
    } else {
        u32s(&out[0])
    };
    let bits = out_bytes * 4;
    let mask = (1u32 << bits) - 1;
    let mut failures = Vec::new();
    for (i, &d) in got.iter().enumerate() {
        let j = (i + 1) % pairs.len();
        for (k, part) in [(i, d >> bits), (j, d & mask)] {
            let (input, want) = pairs[k];
            let input_nan = f32::from_bits(input).is_nan();
            let ok = if input_nan {
                is_nan(part)
            } else {
                part == want
            };
            if !ok {
                failures.push(format!(
                    "{} ({input:#010x}): got {part:#x}, want {want:#x}",
                    f32::from_bits(input)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{inst}: {} wrong: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

#[test]
fn decode_e4m3x2_to_f16x2() {
    decode("e4m3", "e4m3_decode");
}

#[test]
fn decode_e5m2x2_to_f16x2() {
    decode("e5m2", "e5m2_decode");
}

#[test]
fn encode_f32_pairs_to_e4m3x2_satfinite() {
    let p = pairs(&tables(), "e4m3_encode");
    encode_pairs("encode_e4m3", "cvt.rn.satfinite.e4m3x2.f32", 2, &p, |c| {
        c & 0x7f == 0x7f
    });
}

#[test]
fn encode_f32_pairs_to_e5m2x2_satfinite() {
    let p = pairs(&tables(), "e5m2_encode");
    encode_pairs("encode_e5m2", "cvt.rn.satfinite.e5m2x2.f32", 2, &p, |c| {
        c & 0x7f > 0x7c
    });
}

#[test]
fn encode_f32_pairs_to_bf16x2() {
    let p = pairs(&tables(), "bf16_encode");
    encode_pairs("encode_bf16x2", "cvt.rn.bf16x2.f32", 4, &p, |c| {
        c & 0x7f80 == 0x7f80 && c & 0x7f != 0
    });
}

#[test]
fn encode_f32_to_bf16() {
    let pairs = pairs(&tables(), "bf16_encode");
    let x: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let ptx = elementwise(
        &[4],
        &[2],
        "\t.reg .f32 %f1;\n\t.reg .b16 %d1;",
        "\tld.global.f32 %f1, [%in0];\n\tcvt.rn.bf16.f32 %d1, %f1;\n\tst.global.b16 [%out0], %d1;",
    );
    let out = run_elementwise("encode_bf16", &ptx, x.len() as u32, &[&bytes_u32(&x)], &[2]);
    let mut failures = Vec::new();
    for (&(input, want), got) in pairs.iter().zip(u16s(&out[0])) {
        let got = u32::from(got);
        let ok = if f32::from_bits(input).is_nan() {
            got & 0x7f80 == 0x7f80 && got & 0x7f != 0
        } else {
            got == want
        };
        if !ok {
            failures.push(format!("{input:#010x}: got {got:#06x}, want {want:#06x}"));
        }
    }
    assert!(failures.is_empty(), "cvt.rn.bf16.f32: {failures:?}");
}
