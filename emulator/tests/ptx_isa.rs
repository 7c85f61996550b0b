//! Instruction families checked against the PTX ISA's own definitions (its pseudo-code, tables
//! and fragment formulas, transcribed here independently of the emulator's sources), and the
//! emulator's error reports (memory faults, unimplemented instructions, deadlocks, hangs).
//!
//! Every kernel here assembles with `ptxas -arch=sm_90a` (run the tests with
//! `DSC_DUMP_PTX=<dir>` to get them).

mod common;

use common::{
    Rng, bytes_u16, bytes_u32, elementwise, kernel, run_block, run_elementwise, u16s, u32s,
};
use dsc_emulator::{
    EmuError, GlobalMemory, LaunchConfig, LaunchOptions, Module, ParamValue, launch,
};

fn f32s(b: &[u8]) -> Vec<f32> {
    u32s(b).into_iter().map(f32::from_bits).collect()
}

/// 1-based line of the first line of `ptx` containing `needle`.
fn line_of(ptx: &str, needle: &str) -> usize {
    ptx.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in the kernel"))
        + 1
}

// ---------------------------------------------------------------------------------------------
// shfl.sync: the ISA's pseudo-code
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Shfl {
    Up,
    Down,
    Bfly,
    Idx,
}

/// PTX ISA, `shfl.sync`, "Semantics": the source lane `j` and predicate `p` of `lane`.
fn shfl_reference(mode: Shfl, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let bval = b & 0x1f;
    let cval = c & 0x1f;
    let segmask = (c >> 8) & 0x1f;
    let max_lane = (lane & segmask) | (cval & !segmask);
    let min_lane = lane & segmask;
    let (j, pval) = match mode {
        Shfl::Up => {
            let j = lane as i32 - bval as i32;
            (j, j >= max_lane as i32)
        }
        Shfl::Down => {
            let j = (lane + bval) as i32;
            (j, j <= max_lane as i32)
        }
        Shfl::Bfly => {
            let j = (lane ^ bval) as i32;
            (j, j <= max_lane as i32)
        }
        Shfl::Idx => {
            let j = (min_lane | (bval & !segmask)) as i32;
            (j, j <= max_lane as i32)
        }
    };
    if pval {
        (j as u32, true)
    } else {
        (lane, false)
    }
}

/// One CTA (one warp) per `(b, c)` configuration; lane `l` of CTA `w` shuffles the value
/// `1000 + 3 (32 w + l)` and writes `d` and `p`.
fn shfl_mode(mode: Shfl, name: &str) {
    let widths = [32u32, 16, 8, 4, 2, 1];
    let mut configs = Vec::new();
    for b in [0u32, 1, 2, 3, 5, 8, 13, 16, 31, 33] {
        for w in widths {
            configs.push((b, (32 - w) << 8));
            configs.push((b, ((32 - w) << 8) | 0x1f));
        }
        for c in [0x0u32, 0x0c, 0x1f, 0x0f, 0x1c07, 0x181f, 0x1f1f] {
            configs.push((b, c));
        }
    }
    let body = format!(
        "\t.reg .pred %p<2>;\n\t.reg .b32 %r<10>;\n\t.reg .b64 %rd<6>;\n\
         \tld.param.u64 %rd1, [cfg];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
         \tld.param.u64 %rd2, [out];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
         \tmov.u32 %r1, %tid.x;\n\tmov.u32 %r2, %ctaid.x;\n\
         \tmul.wide.u32 %rd3, %r2, 8;\n\tadd.s64 %rd3, %rd1, %rd3;\n\
         \tld.global.v2.u32 {{%r3, %r4}}, [%rd3];\n\
         \tshl.b32 %r8, %r2, 5;\n\tadd.s32 %r8, %r8, %r1;\n\
         \tmad.lo.s32 %r5, %r8, 3, 1000;\n\
         \tshfl.sync.{name}.b32 %r6|%p1, %r5, %r3, %r4, -1;\n\
         \tselp.u32 %r7, 1, 0, %p1;\n\
         \tmul.wide.u32 %rd4, %r8, 8;\n\tadd.s64 %rd4, %rd2, %rd4;\n\
         \tst.global.v2.u32 [%rd4], {{%r6, %r7}};\n\tret;"
    );
    let ptx = kernel(".param .u64 cfg, .param .u64 out", "", &body);
    common::dump(&format!("shfl_{name}"), &ptx);
    let module = Module::parse(&ptx).unwrap();
    let mut memory = GlobalMemory::new();
    let cfg: Vec<u32> = configs.iter().flat_map(|&(b, c)| [b, c]).collect();
    let a = memory.allocate(cfg.len() as u64 * 4);
    memory.write(a, &bytes_u32(&cfg)).unwrap();
    let n = configs.len() as u32;
    let out = memory.allocate(u64::from(n) * 32 * 8);
    let config = LaunchConfig::new([n, 1, 1], [32, 1, 1]);
    let params = [ParamValue::U64(a), ParamValue::U64(out)];
    launch(
        &module,
        "k",
        &memory,
        &config,
        &params,
        &LaunchOptions::default(),
    )
    .unwrap();
    let mut got = vec![0u8; (n * 32 * 8) as usize];
    memory.read(out, &mut got).unwrap();
    let got = u32s(&got);
    for (w, &(b, c)) in configs.iter().enumerate() {
        for lane in 0..32u32 {
            let (j, p) = shfl_reference(mode, lane, b, c);
            let want = 1000 + 3 * (32 * w as u32 + j);
            let i = (32 * w as u32 + lane) as usize;
            assert_eq!(
                (got[2 * i], got[2 * i + 1]),
                (want, u32::from(p)),
                "shfl.sync.{name} b={b} c={c:#x} lane {lane}: (d, p)"
            );
        }
    }
}

#[test]
fn shfl_up_follows_the_isa_pseudocode() {
    shfl_mode(Shfl::Up, "up");
}

#[test]
fn shfl_down_follows_the_isa_pseudocode() {
    shfl_mode(Shfl::Down, "down");
}

#[test]
fn shfl_bfly_follows_the_isa_pseudocode() {
    shfl_mode(Shfl::Bfly, "bfly");
}

#[test]
fn shfl_idx_follows_the_isa_pseudocode() {
    shfl_mode(Shfl::Idx, "idx");
}

// ---------------------------------------------------------------------------------------------
// bfe, bfi, prmt: the ISA's semantics
// ---------------------------------------------------------------------------------------------

/// PTX ISA `bfe` (32-bit): bits `[pos, pos + len)` of `a`, zero- or sign-extended; a field
/// beyond the msb is filled with the sign bit; a zero length gives 0.
fn bfe_reference(signed: bool, a: u32, b: u32, c: u32) -> u32 {
    let msb = 31u32;
    let pos = b & 0xff;
    let len = c & 0xff;
    let bit = |i: u32| (a >> i) & 1;
    let sbit = if signed && len > 0 {
        bit((pos + len - 1).min(msb))
    } else {
        0
    };
    let mut d = 0u32;
    for i in 0..=msb {
        let v = if i < len && pos + i <= msb {
            bit(pos + i)
        } else {
            sbit
        };
        d |= v << i;
    }
    d
}

/// PTX ISA `bfi` (32-bit): `b` with bits `[pos, pos + len)` replaced by the low bits of `a`.
fn bfi_reference(a: u32, b: u32, c: u32, d: u32) -> u32 {
    let pos = c & 0xff;
    let len = d & 0xff;
    let mut f = b;
    let mut i = 0;
    while i < len && pos + i <= 31 {
        f = (f & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
        i += 1;
    }
    f
}

/// PTX ISA `prmt.b32` (default mode): byte i of d is byte `c[4i+2:4i]` of `{b, a}`, sign-
/// replicated when `c[4i+3]` is set.
fn prmt_reference(a: u32, b: u32, c: u32) -> u32 {
    let tmp = (u64::from(b) << 32) | u64::from(a);
    let mut d = 0u32;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = ((tmp >> (8 * (sel & 7))) & 0xff) as u32;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 { 0xff } else { 0 }
        } else {
            byte
        };
        d |= byte << (8 * i);
    }
    d
}

fn random_fields(n: usize, seed: u64) -> [Vec<u32>; 4] {
    let mut rng = Rng(seed);
    let a: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
    let b: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
    // Positions and lengths mostly in 0..40 (beyond the msb too), sometimes with high bits set
    // (only the low 8 bits count).
    let small = |rng: &mut Rng| {
        let v = rng.below(42) as u32;
        if rng.below(8) == 0 {
            v | (rng.next_u32() & 0xffff_ff00)
        } else {
            v
        }
    };
    let c: Vec<u32> = (0..n).map(|_| small(&mut rng)).collect();
    let d: Vec<u32> = (0..n).map(|_| small(&mut rng)).collect();
    [a, b, c, d]
}

#[test]
fn bfe_matches_the_isa_semantics() {
    let n = 4096;
    let [a, _, pos, len] = random_fields(n, 7);
    let ptx = elementwise(
        &[4, 4, 4],
        &[4, 4],
        "\t.reg .b32 %v<6>;",
        "\tld.global.u32 %v1, [%in0];\n\tld.global.u32 %v2, [%in1];\n\tld.global.u32 %v3, [%in2];\n\
         \tbfe.u32 %v4, %v1, %v2, %v3;\n\tbfe.s32 %v5, %v1, %v2, %v3;\n\
         \tst.global.u32 [%out0], %v4;\n\tst.global.u32 [%out1], %v5;",
    );
    let out = run_elementwise(
        "bfe",
        &ptx,
        n as u32,
        &[&bytes_u32(&a), &bytes_u32(&pos), &bytes_u32(&len)],
        &[4, 4],
    );
    let (u, s) = (u32s(&out[0]), u32s(&out[1]));
    for i in 0..n {
        let (x, p, l) = (a[i], pos[i], len[i]);
        assert_eq!(
            u[i],
            bfe_reference(false, x, p, l),
            "bfe.u32 {x:#x}, {p}, {l}"
        );
        assert_eq!(
            s[i],
            bfe_reference(true, x, p, l),
            "bfe.s32 {x:#x}, {p}, {l}"
        );
    }
}

#[test]
fn bfi_matches_the_isa_semantics() {
    let n = 4096;
    let [a, b, pos, len] = random_fields(n, 8);
    let ptx = elementwise(
        &[4, 4, 4, 4],
        &[4],
        "\t.reg .b32 %v<6>;",
        "\tld.global.u32 %v1, [%in0];\n\tld.global.u32 %v2, [%in1];\n\tld.global.u32 %v3, [%in2];\n\
         \tld.global.u32 %v4, [%in3];\n\tbfi.b32 %v5, %v1, %v2, %v3, %v4;\n\
         \tst.global.u32 [%out0], %v5;",
    );
    let ins = [a.clone(), b.clone(), pos.clone(), len.clone()].map(|v| bytes_u32(&v));
    let out = run_elementwise(
        "bfi",
        &ptx,
        n as u32,
        &[&ins[0], &ins[1], &ins[2], &ins[3]],
        &[4],
    );
    for (i, got) in u32s(&out[0]).into_iter().enumerate() {
        let want = bfi_reference(a[i], b[i], pos[i], len[i]);
        assert_eq!(
            got, want,
            "bfi.b32 {:#x}, {:#x}, {}, {}",
            a[i], b[i], pos[i], len[i]
        );
    }
}

#[test]
fn prmt_matches_the_isa_semantics_and_examples() {
    // The ISA's examples of the default mode (`prmt.b32 r1, r2, r3, r4`) as selectors; plus
    // random selectors (including the sign-replicate bit).
    let n = 4096;
    let [a, b, _, _] = random_fields(n, 9);
    let mut rng = Rng(10);
    let mut c: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
    c[..6].copy_from_slice(&[0x3210, 0x7654, 0x0123, 0x4567, 0x8888, 0x1032]);
    let ptx = elementwise(
        &[4, 4, 4],
        &[4],
        "\t.reg .b32 %v<5>;",
        "\tld.global.u32 %v1, [%in0];\n\tld.global.u32 %v2, [%in1];\n\tld.global.u32 %v3, [%in2];\n\
         \tprmt.b32 %v4, %v1, %v2, %v3;\n\tst.global.u32 [%out0], %v4;",
    );
    let out = run_elementwise(
        "prmt",
        &ptx,
        n as u32,
        &[&bytes_u32(&a), &bytes_u32(&b), &bytes_u32(&c)],
        &[4],
    );
    let got = u32s(&out[0]);
    assert_eq!(got[0], a[0], "selector 0x3210 gives a");
    assert_eq!(got[1], b[1], "selector 0x7654 gives b");
    assert_eq!(got[2], a[2].swap_bytes(), "selector 0x0123 reverses a");
    for i in 0..n {
        assert_eq!(
            got[i],
            prmt_reference(a[i], b[i], c[i]),
            "prmt {:#x} {:#x} {:#x}",
            a[i],
            b[i],
            c[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// setp with NaN, min/max with NaN
// ---------------------------------------------------------------------------------------------

const CMPS: [&str; 14] = [
    "eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan",
];

/// PTX ISA, "Floating Point Comparison Operators": ordered comparisons are false when either
/// operand is NaN, the unordered ones (`…u`) true; `num`: both numbers, `nan`: either NaN.
fn setp_reference(cmp: &str, a: f32, b: f32) -> bool {
    let unordered = a.is_nan() || b.is_nan();
    match cmp {
        "eq" => a == b,
        "ne" => !unordered && a != b,
        "lt" => a < b,
        "le" => a <= b,
        "gt" => a > b,
        "ge" => a >= b,
        "equ" => unordered || a == b,
        "neu" => unordered || a != b,
        "ltu" => unordered || a < b,
        "leu" => unordered || a <= b,
        "gtu" => unordered || a > b,
        "geu" => unordered || a >= b,
        "num" => !unordered,
        "nan" => unordered,
        _ => unreachable!(),
    }
}

fn special_pairs() -> (Vec<f32>, Vec<f32>) {
    let vals = [
        1.0f32,
        2.0,
        -1.0,
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::MIN_POSITIVE,
        1e-45,
    ];
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in &vals {
        for &y in &vals {
            a.push(x);
            b.push(y);
        }
    }
    (a, b)
}

#[test]
fn setp_ordered_and_unordered_comparisons_with_nan() {
    let (a, b) = special_pairs();
    let mut body = String::from(
        "\tld.global.f32 %f1, [%in0];\n\tld.global.f32 %f2, [%in1];\n\tmov.u32 %v1, 0;\n",
    );
    for (bit, cmp) in CMPS.iter().enumerate() {
        body += &format!(
            "\tsetp.{cmp}.f32 %q1, %f1, %f2;\n\tselp.u32 %v2, {}, 0, %q1;\n\tor.b32 %v1, %v1, %v2;\n",
            1u32 << bit
        );
    }
    body += "\tst.global.u32 [%out0], %v1;";
    let ptx = elementwise(
        &[4, 4],
        &[4],
        "\t.reg .f32 %f<3>;\n\t.reg .b32 %v<3>;\n\t.reg .pred %q<2>;",
        &body,
    );
    let bits = |v: &[f32]| bytes_u32(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let out = run_elementwise("setp", &ptx, a.len() as u32, &[&bits(&a), &bits(&b)], &[4]);
    for (i, got) in u32s(&out[0]).into_iter().enumerate() {
        for (bit, cmp) in CMPS.iter().enumerate() {
            assert_eq!(
                got >> bit & 1 == 1,
                setp_reference(cmp, a[i], b[i]),
                "setp.{cmp}.f32 {}, {}",
                a[i],
                b[i]
            );
        }
    }
}

#[test]
fn min_max_with_nan_and_the_nan_modifier() {
    // PTX ISA `min`/`max` (f32): if one input is NaN the result is the other; both NaN: NaN.
    // With `.NaN`: NaN if either input is NaN.
    let (a, b) = special_pairs();
    let ptx = elementwise(
        &[4, 4],
        &[4, 4, 4, 4],
        "\t.reg .f32 %f<7>;",
        "\tld.global.f32 %f1, [%in0];\n\tld.global.f32 %f2, [%in1];\n\
         \tmin.f32 %f3, %f1, %f2;\n\tmax.f32 %f4, %f1, %f2;\n\
         \tmin.NaN.f32 %f5, %f1, %f2;\n\tmax.NaN.f32 %f6, %f1, %f2;\n\
         \tst.global.f32 [%out0], %f3;\n\tst.global.f32 [%out1], %f4;\n\
         \tst.global.f32 [%out2], %f5;\n\tst.global.f32 [%out3], %f6;",
    );
    let bits = |v: &[f32]| bytes_u32(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let out = run_elementwise(
        "minmax",
        &ptx,
        a.len() as u32,
        &[&bits(&a), &bits(&b)],
        &[4, 4, 4, 4],
    );
    let got: Vec<Vec<f32>> = out.iter().map(|o| f32s(o)).collect();
    for i in 0..a.len() {
        let (x, y) = (a[i], b[i]);
        let zeros_of_both_signs =
            x == 0.0 && y == 0.0 && x.is_sign_negative() != y.is_sign_negative();
        for (k, (name, max, nan)) in [
            ("min", false, false),
            ("max", true, false),
            ("min.NaN", false, true),
            ("max.NaN", true, true),
        ]
        .into_iter()
        .enumerate()
        {
            let g = got[k][i];
            let want = if x.is_nan() && y.is_nan() || nan && (x.is_nan() || y.is_nan()) {
                f32::NAN
            } else if x.is_nan() {
                y
            } else if y.is_nan() {
                x
            } else if max {
                x.max(y)
            } else {
                x.min(y)
            };
            if want.is_nan() {
                assert!(g.is_nan(), "{name}.f32 {x}, {y}: got {g}, want NaN");
            } else if zeros_of_both_signs {
                assert_eq!(g, 0.0, "{name}.f32 {x}, {y}");
            } else {
                assert_eq!(g.to_bits(), want.to_bits(), "{name}.f32 {x}, {y}: got {g}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// div.rn / sqrt.rn / rcp.rn and their directed roundings: correctly rounded
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Round {
    Rn,
    Rz,
    Rm,
    Rp,
}

/// `exact` (an f64 that is the exact result, or within 2^-53 relative of it and on the same
/// side of every f32) rounded to f32 in mode `r`. Division and square roots of f32 operands
/// are never closer than 2^-48 (relative) to an f32 they differ from, so the f64 result rounds
/// like the exact one (and round-to-nearest through f64 is exact: 53 ≥ 2·24 + 2).
fn round_f32(exact: f64, r: Round) -> f32 {
    let n = exact as f32;
    if exact.is_nan() {
        return n;
    }
    let down = match r {
        Round::Rn => return n,
        Round::Rm => true,
        Round::Rp => false,
        Round::Rz => exact > 0.0,
    };
    if down && f64::from(n) > exact {
        n.next_down()
    } else if !down && f64::from(n) < exact {
        n.next_up()
    } else {
        n
    }
}

fn random_f32s(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| match i % 8 {
            // Any bit pattern (NaNs, infinities, subnormals included).
            0 => f32::from_bits(rng.next_u32()),
            // Subnormals.
            1 => f32::from_bits(rng.next_u32() & 0x807f_ffff),
            // Moderate magnitudes, where most roundings happen.
            _ => {
                let e = 100 + rng.below(55) as u32;
                f32::from_bits((rng.next_u32() & 0x807f_ffff) | e << 23)
            }
        })
        .collect()
}

fn check_rounded(name: &str, got: &[f32], want: &[f32], inputs: &dyn Fn(usize) -> String) {
    let mut failures = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            g.to_bits() == w.to_bits()
        };
        if !ok {
            failures.push(format!(
                "{}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                inputs(i),
                g.to_bits(),
                w.to_bits()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} wrong: {:?}",
        failures.len(),
        got.len(),
        &failures[..failures.len().min(10)]
    );
}

const ROUNDS: [(&str, Round); 4] = [
    ("rn", Round::Rn),
    ("rz", Round::Rz),
    ("rm", Round::Rm),
    ("rp", Round::Rp),
];

#[test]
fn div_is_correctly_rounded_in_every_mode() {
    let n = 8192;
    let a = random_f32s(n, 11);
    let b = random_f32s(n, 12);
    let mut body = String::from("\tld.global.f32 %f1, [%in0];\n\tld.global.f32 %f2, [%in1];\n");
    for (j, (r, _)) in ROUNDS.iter().enumerate() {
        body += &format!("\tdiv.{r}.f32 %f3, %f1, %f2;\n\tst.global.f32 [%out{j}], %f3;\n");
    }
    let ptx = elementwise(&[4, 4], &[4, 4, 4, 4], "\t.reg .f32 %f<4>;", &body);
    let bits = |v: &[f32]| bytes_u32(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let out = run_elementwise(
        "div",
        &ptx,
        n as u32,
        &[&bits(&a), &bits(&b)],
        &[4, 4, 4, 4],
    );
    for (j, (r, mode)) in ROUNDS.iter().enumerate() {
        let want: Vec<f32> = (0..n)
            .map(|i| round_f32(f64::from(a[i]) / f64::from(b[i]), *mode))
            .collect();
        check_rounded(&format!("div.{r}.f32"), &f32s(&out[j]), &want, &|i| {
            format!("{:e} / {:e}", a[i], b[i])
        });
    }
}

#[test]
fn sqrt_and_rcp_are_correctly_rounded_in_every_mode() {
    let n = 8192;
    let a = random_f32s(n, 13);
    let mut body = String::from("\tld.global.f32 %f1, [%in0];\n");
    for (j, (r, _)) in ROUNDS.iter().enumerate() {
        body += &format!(
            "\tsqrt.{r}.f32 %f2, %f1;\n\tst.global.f32 [%out{j}], %f2;\n\
             \trcp.{r}.f32 %f3, %f1;\n\tst.global.f32 [%out{}], %f3;\n",
            j + 4
        );
    }
    let ptx = elementwise(&[4], &[4; 8], "\t.reg .f32 %f<4>;", &body);
    let bits = bytes_u32(&a.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let out = run_elementwise("sqrt_rcp", &ptx, n as u32, &[&bits], &[4; 8]);
    for (j, (r, mode)) in ROUNDS.iter().enumerate() {
        let sqrt: Vec<f32> = a
            .iter()
            .map(|&x| round_f32(f64::from(x).sqrt(), *mode))
            .collect();
        check_rounded(&format!("sqrt.{r}.f32"), &f32s(&out[j]), &sqrt, &|i| {
            format!("{:e}", a[i])
        });
        let rcp: Vec<f32> = a
            .iter()
            .map(|&x| round_f32(1.0 / f64::from(x), *mode))
            .collect();
        check_rounded(&format!("rcp.{r}.f32"), &f32s(&out[j + 4]), &rcp, &|i| {
            format!("{:e}", a[i])
        });
    }
}

// ---------------------------------------------------------------------------------------------
// cvt float → integer: rounding modes, saturation, NaN
// ---------------------------------------------------------------------------------------------

#[test]
fn cvt_float_to_int_rounds_saturates_and_maps_nan_to_zero() {
    // PTX ISA `cvt`: `.rni` rounds to nearest even, `.rzi` toward zero, `.rmi` down, `.rpi` up;
    // float-to-integer conversions saturate to the destination's range, and NaN becomes 0.
    let mut x: Vec<f32> = vec![
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        0.49999997,
        2.4999998,
        1.0000001,
        -1.0000001,
        3.7,
        -3.7,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        4294967040.0,
        4294967296.0,
        1e20,
        -1e20,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        8388609.0,
        16777216.0,
        12582912.5,
    ];
    let mut rng = Rng(14);
    x.extend((0..2000).map(|_| (rng.next_u32() as i32 as f32) / (1 << rng.below(28)) as f32));
    let ptx = elementwise(
        &[4],
        &[4, 4, 4, 4, 4, 8],
        "\t.reg .f32 %f1;\n\t.reg .b32 %v<6>;\n\t.reg .b64 %w1;",
        "\tld.global.f32 %f1, [%in0];\n\
         \tcvt.rni.s32.f32 %v1, %f1;\n\tst.global.s32 [%out0], %v1;\n\
         \tcvt.rzi.s32.f32 %v2, %f1;\n\tst.global.s32 [%out1], %v2;\n\
         \tcvt.rmi.s32.f32 %v3, %f1;\n\tst.global.s32 [%out2], %v3;\n\
         \tcvt.rpi.s32.f32 %v4, %f1;\n\tst.global.s32 [%out3], %v4;\n\
         \tcvt.rni.u32.f32 %v5, %f1;\n\tst.global.u32 [%out4], %v5;\n\
         \tcvt.rzi.s64.f32 %w1, %f1;\n\tst.global.s64 [%out5], %w1;",
    );
    let bits = bytes_u32(&x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    let out = run_elementwise(
        "cvt_f2i",
        &ptx,
        x.len() as u32,
        &[&bits],
        &[4, 4, 4, 4, 4, 8],
    );
    let sat = |v: f64, lo: f64, hi: f64| if v.is_nan() { 0.0 } else { v.clamp(lo, hi) };
    let (i32lo, i32hi) = (f64::from(i32::MIN), f64::from(i32::MAX));
    let s64: Vec<i64> = out[5]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (i, &v) in x.iter().enumerate() {
        let v64 = f64::from(v);
        let cases = [
            (
                "rni.s32",
                sat(v64.round_ties_even(), i32lo, i32hi) as i32 as u32,
                0,
            ),
            ("rzi.s32", sat(v64.trunc(), i32lo, i32hi) as i32 as u32, 1),
            ("rmi.s32", sat(v64.floor(), i32lo, i32hi) as i32 as u32, 2),
            ("rpi.s32", sat(v64.ceil(), i32lo, i32hi) as i32 as u32, 3),
            (
                "rni.u32",
                sat(v64.round_ties_even(), 0.0, f64::from(u32::MAX)) as u32,
                4,
            ),
        ];
        for (name, want, j) in cases {
            assert_eq!(u32s(&out[j])[i], want, "cvt.{name}.f32 {v:e}");
        }
        let want64 = if v.is_nan() {
            0
        } else {
            v64.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64
        };
        assert_eq!(s64[i], want64, "cvt.rzi.s64.f32 {v:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// mma.sync fragments, from the ISA's formulas
// ---------------------------------------------------------------------------------------------

/// PTX ISA "Matrix Fragments for mma.m16n8k16 / m16n8k32": `groupID = lane >> 2`,
/// `threadID_in_group = lane % 4`; `e` elements per 32-bit register (2 for bf16, 4 for e4m3);
/// A element `i` of a lane: row `groupID + 8` for the second and fourth group of `e` elements,
/// column `threadID_in_group * e + (i % e) + K/2` for the second half; B element `i`: row
/// `threadID_in_group * e + (i % e) + K/2` for the second half, column `groupID`; C/D element
/// `i` (f32): row `groupID + 8 * (i >= 2)`, column `threadID_in_group * 2 + (i & 1)`.
fn a_position(lane: usize, i: usize, e: usize, k: usize) -> (usize, usize) {
    let (group, tig) = (lane >> 2, lane % 4);
    let row = if (i / e).is_multiple_of(2) {
        group
    } else {
        group + 8
    };
    let col = tig * e + (i % e) + if i >= 2 * e { k / 2 } else { 0 };
    (row, col)
}

fn b_position(lane: usize, i: usize, e: usize, k: usize) -> (usize, usize) {
    let (group, tig) = (lane >> 2, lane % 4);
    let row = tig * e + (i % e) + if i >= e { k / 2 } else { 0 };
    (row, group)
}

fn cd_position(lane: usize, i: usize) -> (usize, usize) {
    let (group, tig) = (lane >> 2, lane % 4);
    (group + if i >= 2 { 8 } else { 0 }, tig * 2 + (i & 1))
}

/// E4M3 value of a code (OCP FP8: bias 7, no infinities, S.1111.111 is NaN).
fn e4m3_value(code: u8) -> f32 {
    let s = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((code >> 3) & 0xf);
    let m = f32::from(code & 7);
    if code & 0x7f == 0x7f {
        f32::NAN
    } else if e == 0 {
        s * m / 8.0 * 2f32.powi(-6)
    } else {
        s * (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// Runs `mma.sync.aligned.m16n8k{k}.row.col.f32.{ty}.{ty}.f32` on A (16×k), B (k×8), C (16×8)
/// given as element bit patterns (`bits` wide), with the fragments built from the ISA formulas;
/// returns D (16×8).
fn run_mma(ty: &str, k: usize, bits: usize, a: &[u32], b: &[u32], c: &[f32]) -> Vec<f32> {
    let e = 32 / bits;
    let pack = |lane: usize, n_elems: usize, value: &dyn Fn(usize, usize) -> u32| -> Vec<u32> {
        let mut regs = vec![0u32; n_elems / e];
        for i in 0..n_elems {
            regs[i / e] |= value(lane, i) << (bits * (i % e));
        }
        regs
    };
    let mut fa = Vec::new();
    let mut fb = Vec::new();
    let mut fc = Vec::new();
    for lane in 0..32 {
        fa.extend(pack(lane, 16 * k / 32, &|l, i| {
            let (r, col) = a_position(l, i, e, k);
            a[r * k + col]
        }));
        fb.extend(pack(lane, 8 * k / 32, &|l, i| {
            let (r, col) = b_position(l, i, e, k);
            b[r * 8 + col]
        }));
        for i in 0..4 {
            let (r, col) = cd_position(lane, i);
            fc.push(c[r * 8 + col].to_bits());
        }
    }
    let ptx = kernel(
        ".param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd",
        "\t.reg .b32 %a<4>;\n\t.reg .b32 %b<2>;\n\t.reg .f32 %c<4>;\n\t.reg .f32 %d<4>;\n\
         \t.reg .b32 %r<2>;\n\t.reg .b64 %rd<9>;",
        &format!(
            "\tmov.u32 %r1, %tid.x;\n\
             \tld.param.u64 %rd1, [pa];\n\tld.param.u64 %rd2, [pb];\n\
             \tld.param.u64 %rd3, [pc];\n\tld.param.u64 %rd4, [pd];\n\
             \tmul.wide.u32 %rd5, %r1, 16;\n\tmul.wide.u32 %rd6, %r1, 8;\n\
             \tadd.s64 %rd1, %rd1, %rd5;\n\tadd.s64 %rd2, %rd2, %rd6;\n\
             \tadd.s64 %rd3, %rd3, %rd5;\n\tadd.s64 %rd4, %rd4, %rd5;\n\
             \tld.global.v4.b32 {{%a0, %a1, %a2, %a3}}, [%rd1];\n\
             \tld.global.v2.b32 {{%b0, %b1}}, [%rd2];\n\
             \tld.global.v4.f32 {{%c0, %c1, %c2, %c3}}, [%rd3];\n\
             \tmma.sync.aligned.m16n8k{k}.row.col.f32.{ty}.{ty}.f32 {{%d0, %d1, %d2, %d3}}, \
             {{%a0, %a1, %a2, %a3}}, {{%b0, %b1}}, {{%c0, %c1, %c2, %c3}};\n\
             \tst.global.v4.f32 [%rd4], {{%d0, %d1, %d2, %d3}};\n\tret;"
        ),
    );
    let (out, _) = run_block(
        &format!("mma_{ty}"),
        &ptx,
        [32, 1, 1],
        &[
            bytes_u32(&fa),
            bytes_u32(&fb),
            bytes_u32(&fc),
            vec![0; 32 * 16],
        ],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap();
    let fd = f32s(&out[3]);
    let mut d = vec![f32::NAN; 16 * 8];
    for lane in 0..32 {
        for i in 0..4 {
            let (r, col) = cd_position(lane, i);
            d[r * 8 + col] = fd[lane * 4 + i];
        }
    }
    d
}

/// A plain matmul `C + A·B` in f64 (exact for the small values used).
fn matmul(k: usize, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    (0..16 * 8)
        .map(|rc| {
            let (r, col) = (rc / 8, rc % 8);
            let s: f64 = (0..k)
                .map(|kk| f64::from(a[r * k + kk]) * f64::from(b[kk * 8 + col]))
                .sum();
            (s + f64::from(c[rc])) as f32
        })
        .collect()
}

#[test]
fn mma_m16n8k32_e4m3_fragments_follow_the_isa() {
    let k = 32;
    let mut rng = Rng(15);
    // Codes of values {-3.5, …, 3.5} in steps of 0.25 (exact products and sums).
    let codes: Vec<u8> = (0u8..=255)
        .filter(|&c| {
            let v = e4m3_value(c);
            v.is_finite() && v.abs() <= 3.5 && (v * 4.0).fract() == 0.0
        })
        .collect();
    let pick = |rng: &mut Rng| u32::from(codes[rng.below(codes.len() as u64) as usize]);
    let a: Vec<u32> = (0..16 * k).map(|_| pick(&mut rng)).collect();
    let b: Vec<u32> = (0..k * 8).map(|_| pick(&mut rng)).collect();
    let c: Vec<f32> = (0..16 * 8).map(|_| rng.below(64) as f32 - 32.0).collect();
    let d = run_mma("e4m3", k, 8, &a, &b, &c);
    let av: Vec<f32> = a.iter().map(|&x| e4m3_value(x as u8)).collect();
    let bv: Vec<f32> = b.iter().map(|&x| e4m3_value(x as u8)).collect();
    assert_eq!(d, matmul(k, &av, &bv, &c));
}

#[test]
fn mma_m16n8k16_bf16_fragments_follow_the_isa() {
    let k = 16;
    let mut rng = Rng(16);
    let val = |rng: &mut Rng| (rng.below(33) as f32 - 16.0) / 4.0;
    let av: Vec<f32> = (0..16 * k).map(|_| val(&mut rng)).collect();
    let bv: Vec<f32> = (0..k * 8).map(|_| val(&mut rng)).collect();
    let c: Vec<f32> = (0..16 * 8).map(|_| rng.below(64) as f32 - 32.0).collect();
    let bf = |v: &[f32]| {
        v.iter()
            .map(|&x| u32::from(half::bf16::from_f32(x).to_bits()))
            .collect::<Vec<_>>()
    };
    let d = run_mma("bf16", k, 16, &bf(&av), &bf(&bv), &c);
    assert_eq!(d, matmul(k, &av, &bv, &c));
}

// ---------------------------------------------------------------------------------------------
// ldmatrix
// ---------------------------------------------------------------------------------------------

/// `ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16` (PTX ISA): lanes 8i..8i+7 give the row
/// addresses of matrix i; without `.trans` lane t receives row t/4, columns 2(t%4) and
/// 2(t%4)+1 of matrix i in register i (lower column in the lower half); with `.trans` the
/// matrix is read column-major: lane t receives rows 2(t%4), 2(t%4)+1 of column t/4.
#[test]
fn ldmatrix_x4_and_trans_follow_the_isa() {
    // 32 stored rows of 8 b16 values, 32 bytes apart (16 bytes of padding).
    let mut mem = vec![0xdeadu16; 32 * 16];
    for row in 0..32 {
        for col in 0..8 {
            mem[row * 16 + col] = (0x100 + row * 8 + col) as u16;
        }
    }
    // Lane t (matrix t/8, row t%8) points at stored row `perm(t)`.
    let perm = |t: usize| (3 - t / 8) * 8 + (t % 8 * 3) % 8;
    let ptx = kernel(
        ".param .u64 src, .param .u64 out",
        "\t.shared .align 16 .b8 smem[1024];\n\t.reg .pred %p<2>;\n\t.reg .b32 %r<20>;\n\t.reg .b64 %rd<8>;",
        "\tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [src];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
         \tld.param.u64 %rd2, [out];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
         \tmov.u32 %r2, smem;\n\tmov.u32 %r3, 0;\n\
         COPY:\n\tshl.b32 %r4, %r3, 5;\n\tadd.s32 %r4, %r4, %r1;\n\tshl.b32 %r4, %r4, 2;\n\
         \tcvt.u64.u32 %rd3, %r4;\n\tadd.s64 %rd3, %rd1, %rd3;\n\tld.global.u32 %r5, [%rd3];\n\
         \tadd.s32 %r6, %r2, %r4;\n\tst.shared.u32 [%r6], %r5;\n\
         \tadd.s32 %r3, %r3, 1;\n\tsetp.lt.u32 %p1, %r3, 8;\n\t@%p1 bra COPY;\n\
         \tbar.sync 0;\n\
         \tshr.u32 %r7, %r1, 3;\n\tsub.s32 %r7, 3, %r7;\n\tand.b32 %r8, %r1, 7;\n\
         \tmul.lo.s32 %r8, %r8, 3;\n\tand.b32 %r8, %r8, 7;\n\tshl.b32 %r7, %r7, 3;\n\
         \tadd.s32 %r7, %r7, %r8;\n\tshl.b32 %r7, %r7, 5;\n\tadd.s32 %r7, %r2, %r7;\n\
         \tldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r10, %r11, %r12, %r13}, [%r7];\n\
         \tldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r14, %r15, %r16, %r17}, [%r7];\n\
         \tmul.wide.u32 %rd4, %r1, 32;\n\tadd.s64 %rd4, %rd2, %rd4;\n\
         \tst.global.v4.u32 [%rd4], {%r10, %r11, %r12, %r13};\n\
         \tst.global.v4.u32 [%rd4+16], {%r14, %r15, %r16, %r17};\n\tret;",
    );
    let (out, _) = run_block(
        "ldmatrix",
        &ptx,
        [32, 1, 1],
        &[bytes_u16(&mem), vec![0; 32 * 32]],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap();
    let got = u16s(&out[1]);
    // Element (r, c) of matrix i: stored row perm(8i + r), column c.
    let element = |i: usize, r: usize, c: usize| mem[perm(8 * i + r) * 16 + c];
    for t in 0..32 {
        for i in 0..4 {
            for half in 0..2 {
                let plain = element(i, t / 4, 2 * (t % 4) + half);
                let trans = element(i, 2 * (t % 4) + half, t / 4);
                assert_eq!(
                    got[t * 16 + 2 * i + half],
                    plain,
                    "ldmatrix x4 lane {t} reg {i} half {half}"
                );
                assert_eq!(
                    got[t * 16 + 8 + 2 * i + half],
                    trans,
                    "ldmatrix x4.trans lane {t} reg {i} half {half}"
                );
            }
        }
    }
}

/// The wavefronts the profile counts for one `ldmatrix.x4` whose lane `t` points at shared byte
/// `offset(t)`: each matrix is one phase of eight 16-byte rows.
fn ldmatrix_wavefronts(offset: &str) -> (u64, u64) {
    let ptx = kernel(
        ".param .u64 out",
        "\t.shared .align 16 .b8 smem[2048];\n\t.reg .b32 %r<20>;\n\t.reg .b64 %rd<8>;",
        &format!(
            "\tmov.u32 %r1, %tid.x;\n\tmov.u32 %r2, smem;\n{offset}\
             \tadd.s32 %r7, %r2, %r7;\n\
             \tldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r10, %r11, %r12, %r13}}, [%r7];\n\
             \tld.param.u64 %rd2, [out];\n\tcvta.to.global.u64 %rd2, %rd2;\n\
             \tmul.wide.u32 %rd4, %r1, 16;\n\tadd.s64 %rd4, %rd2, %rd4;\n\
             \tst.global.v4.u32 [%rd4], {{%r10, %r11, %r12, %r13}};\n\tret;"
        ),
    );
    let (_, profile) = run_block(
        "ldmatrix-banks",
        &ptx,
        [32, 1, 1],
        &[vec![0; 32 * 16]],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap();
    (profile.shared_requests, profile.shared_wavefronts)
}

/// `ldmatrix` in the profile: one request per instruction, and per matrix the wavefronts its
/// eight 16-byte rows need: 1 when they cover the 32 banks (rows 16 bytes apart, or 128 bytes
/// apart with the XOR swizzle `chunk ^ (row mod 8)`), 8 when every row starts in the same bank
/// (rows 128 bytes apart, unswizzled), 2 with rows 32 bytes apart.
#[test]
fn ldmatrix_counts_one_wavefront_per_conflict_free_matrix() {
    // Lane t: row t (16 bytes apart).
    let packed = "\tshl.b32 %r7, %r1, 4;\n";
    assert_eq!(ldmatrix_wavefronts(packed), (1, 4));
    // Lane t: row t of a 128-byte-row tile, chunk 0.
    let strided = "\tand.b32 %r7, %r1, 15;\n\tshl.b32 %r7, %r7, 7;\n";
    assert_eq!(ldmatrix_wavefronts(strided), (1, 4 * 8));
    // The same rows, chunk (t / 16) swizzled by the row's phase.
    let swizzled = "\tand.b32 %r7, %r1, 15;\n\tand.b32 %r8, %r1, 7;\n\tshr.u32 %r9, %r1, 4;\n\
                    \txor.b32 %r8, %r8, %r9;\n\tshl.b32 %r8, %r8, 4;\n\
                    \tshl.b32 %r7, %r7, 7;\n\tadd.s32 %r7, %r7, %r8;\n";
    assert_eq!(ldmatrix_wavefronts(swizzled), (1, 4));
    // Rows 32 bytes apart: rows r and r + 4 share banks.
    let padded = "\tshl.b32 %r7, %r1, 5;\n";
    assert_eq!(ldmatrix_wavefronts(padded), (1, 4 * 2));
}

// ---------------------------------------------------------------------------------------------
// wmma: whatever the fragment layout, load + mma + store is a matmul
// ---------------------------------------------------------------------------------------------

#[test]
fn wmma_m16n16k16_f16_with_f32_accumulator_is_a_matmul() {
    // A row-major (ld 16), B column-major (ld 24), C and D f32 row-major (ld 20).
    let mut rng = Rng(17);
    let val = |rng: &mut Rng| (rng.below(17) as f32 - 8.0) / 2.0;
    let a: Vec<f32> = (0..256).map(|_| val(&mut rng)).collect();
    let b: Vec<f32> = (0..256).map(|_| val(&mut rng)).collect();
    let c: Vec<f32> = (0..256).map(|_| rng.below(32) as f32).collect();
    let f16 = |x: f32| half::f16::from_f32(x).to_bits();
    let a_mem: Vec<u16> = a.iter().map(|&x| f16(x)).collect();
    let mut b_mem = vec![0u16; 16 * 24];
    for k in 0..16 {
        for n in 0..16 {
            b_mem[n * 24 + k] = f16(b[k * 16 + n]);
        }
    }
    let mut c_mem = vec![0u32; 16 * 20];
    for m in 0..16 {
        for n in 0..16 {
            c_mem[m * 20 + n] = c[m * 16 + n].to_bits();
        }
    }
    let ptx = kernel(
        ".param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd",
        "\t.reg .b32 %a<8>;\n\t.reg .b32 %b<8>;\n\t.reg .f32 %c<8>;\n\t.reg .f32 %d<8>;\n\
         \t.reg .b32 %r<4>;\n\t.reg .b64 %rd<5>;",
        "\tld.param.u64 %rd1, [pa];\n\tld.param.u64 %rd2, [pb];\n\
         \tld.param.u64 %rd3, [pc];\n\tld.param.u64 %rd4, [pd];\n\
         \tmov.u32 %r1, 24;\n\tmov.u32 %r2, 20;\n\
         \twmma.load.a.sync.aligned.row.m16n16k16.global.f16 {%a0, %a1, %a2, %a3, %a4, %a5, %a6, %a7}, [%rd1];\n\
         \twmma.load.b.sync.aligned.col.m16n16k16.global.f16 {%b0, %b1, %b2, %b3, %b4, %b5, %b6, %b7}, [%rd2], %r1;\n\
         \twmma.load.c.sync.aligned.row.m16n16k16.global.f32 {%c0, %c1, %c2, %c3, %c4, %c5, %c6, %c7}, [%rd3], %r2;\n\
         \twmma.mma.sync.aligned.row.col.m16n16k16.f32.f32 {%d0, %d1, %d2, %d3, %d4, %d5, %d6, %d7}, \
         {%a0, %a1, %a2, %a3, %a4, %a5, %a6, %a7}, {%b0, %b1, %b2, %b3, %b4, %b5, %b6, %b7}, \
         {%c0, %c1, %c2, %c3, %c4, %c5, %c6, %c7};\n\
         \twmma.store.d.sync.aligned.row.m16n16k16.global.f32 [%rd4], {%d0, %d1, %d2, %d3, %d4, %d5, %d6, %d7}, %r2;\n\
         \tret;",
    );
    let (out, _) = run_block(
        "wmma_f32",
        &ptx,
        [32, 1, 1],
        &[
            bytes_u16(&a_mem),
            bytes_u16(&b_mem),
            bytes_u32(&c_mem),
            vec![0xff; 16 * 20 * 4],
        ],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap();
    let d = u32s(&out[3]);
    for m in 0..16 {
        for n in 0..16 {
            let want: f32 =
                c[m * 16 + n] + (0..16).map(|k| a[m * 16 + k] * b[k * 16 + n]).sum::<f32>();
            assert_eq!(f32::from_bits(d[m * 20 + n]), want, "D[{m}][{n}]");
        }
        // The padding between rows is untouched.
        assert!(
            d[m * 20 + 16..m * 20 + 20].iter().all(|&x| x == u32::MAX),
            "row {m} padding"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: faults, unimplemented instructions, deadlocks, hangs
// ---------------------------------------------------------------------------------------------

/// A one-warp kernel reading `buf[tid]` from a 16-element buffer.
const OOB: &str = ".version 8.0
.target sm_90a
.address_size 64

.visible .entry k(.param .u64 buf)
{
\t.reg .b32 %r<3>;
\t.reg .b64 %rd<4>;
\tld.param.u64 %rd1, [buf];
\tcvta.to.global.u64 %rd1, %rd1;
\tmov.u32 %r1, %tid.x;
\tmul.wide.u32 %rd2, %r1, 4;
\tadd.s64 %rd3, %rd1, %rd2;
\tld.global.u32 %r2, [%rd3];
\tst.global.u32 [%rd3], %r2;
\tret;
}
";

#[test]
fn out_of_bounds_load_names_kernel_line_and_thread() {
    let err = run_block(
        "oob",
        OOB,
        [32, 1, 1],
        &[vec![0; 64]],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap_err();
    let EmuError::Memory {
        kernel,
        line,
        thread,
        address,
        ..
    } = &err
    else {
        panic!("expected a memory fault, got {err:?}");
    };
    assert_eq!(kernel, "k");
    assert_eq!(*line, line_of(OOB, "ld.global.u32"));
    assert_eq!(thread.cta, [0, 0, 0]);
    assert!((16..32).contains(&thread.tid[0]), "thread {thread}");
    assert_eq!(thread.tid[1..], [0, 0]);
    assert_eq!(address % 4, 0);
    let text = err.to_string();
    assert!(
        text.contains("`k`") && text.contains(&format!("line {line}")),
        "{text}"
    );
}

#[test]
fn unimplemented_instruction_is_named_with_its_line() {
    let ptx = ".version 8.0
.target sm_90a
.address_size 64

.visible .entry k(.param .u64 buf)
{
\t.reg .b32 %r<3>;
\t.reg .b64 %rd<2>;
\tld.param.u64 %rd1, [buf];
\tmov.u32 %r1, %tid.x;
\tbfind.u32 %r2, %r1;
\tst.global.u32 [%rd1], %r2;
\tret;
}
";
    let err = run_block(
        "unsupported",
        ptx,
        [1, 1, 1],
        &[vec![0; 4]],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap_err();
    let EmuError::Unsupported {
        kernel,
        line,
        instruction,
    } = &err
    else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(kernel, "k");
    assert_eq!(instruction, "bfind.u32");
    assert_eq!(*line, line_of(ptx, "bfind"));
}

#[test]
fn barrier_reached_by_half_the_threads_is_a_deadlock() {
    // Warp 0 waits at barrier 0, warp 1 at barrier 1: each expects all 64 threads.
    let ptx = ".version 8.0
.target sm_90a
.address_size 64

.visible .entry k()
{
\t.reg .pred %p<2>;
\t.reg .b32 %r<2>;
\tmov.u32 %r1, %tid.x;
\tsetp.lt.u32 %p1, %r1, 32;
\t@%p1 bra FIRST;
\tbar.sync 1;
\tbra.uni DONE;
FIRST:
\tbar.sync 0;
DONE:
\tret;
}
";
    let err = run_block(
        "deadlock",
        ptx,
        [64, 1, 1],
        &[],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap_err();
    let EmuError::Deadlock { kernel, cta, .. } = &err else {
        panic!("expected a deadlock, got {err:?}");
    };
    assert_eq!(kernel, "k");
    assert_eq!(*cta, [0, 0, 0]);
}

#[test]
fn infinite_loop_exhausts_a_small_step_budget() {
    let ptx = ".version 8.0
.target sm_90a
.address_size 64

.visible .entry k()
{
\t.reg .b32 %r<2>;
\tmov.u32 %r1, 0;
LOOP:
\tadd.u32 %r1, %r1, 1;
\tbra.uni LOOP;
}
";
    let options = LaunchOptions {
        step_budget: 10_000,
        ..LaunchOptions::default()
    };
    let err = run_block("hang", ptx, [32, 1, 1], &[], &[], &options).unwrap_err();
    let EmuError::StepBudget {
        kernel,
        budget,
        line,
        ..
    } = &err
    else {
        panic!("expected a step-budget error, got {err:?}");
    };
    assert_eq!(kernel, "k");
    assert_eq!(*budget, 10_000);
    assert!(
        *line == line_of(ptx, "add.u32") || *line == line_of(ptx, "bra.uni"),
        "line {line}"
    );
}

#[test]
fn module_variables_are_allocated_and_initialized() {
    // A `.global` table with an initializer, a `.const` one, an uninitialized `.global` counter
    // every thread adds to (atomically), and a 1024-aligned `.global`: thread t stores
    // {table[t % 4], const[t % 2] as bits, counter's old value, address % 1024}.
    let ptx = ".version 8.4\n.target sm_90a\n.address_size 64\n\n\
        .global .align 4 .u32 table[4] = {11, 22, 33, 44};\n\
        .const .align 4 .f32 halves[2] = {0f3F000000, 0f3FC00000};\n\
        .global .align 4 .u32 counter;\n\
        .global .align 1024 .b8 aligned[16];\n\n\
        .visible .entry k(.param .u64 out)\n{\n\
        \t.reg .b32 %r<10>;\n\t.reg .b64 %rd<10>;\n\t.reg .f32 %f<2>;\n\
        \tmov.u32 %r1, %tid.x;\n\
        \tand.b32 %r2, %r1, 3;\n\
        \tmov.u64 %rd1, table;\n\
        \tmul.wide.u32 %rd2, %r2, 4;\n\
        \tadd.s64 %rd3, %rd1, %rd2;\n\
        \tld.global.u32 %r3, [%rd3];\n\
        \tand.b32 %r4, %r1, 1;\n\
        \tmul.wide.u32 %rd4, %r4, 4;\n\
        \tmov.u64 %rd5, halves;\n\
        \tadd.s64 %rd5, %rd5, %rd4;\n\
        \tld.const.f32 %f1, [%rd5];\n\
        \tmov.b32 %r5, %f1;\n\
        \tatom.global.add.u32 %r6, [counter], 1;\n\
        \tmov.u64 %rd6, aligned;\n\
        \tcvt.u32.u64 %r7, %rd6;\n\
        \tand.b32 %r7, %r7, 1023;\n\
        \tld.param.u64 %rd7, [out];\n\
        \tcvta.to.global.u64 %rd7, %rd7;\n\
        \tmul.wide.u32 %rd8, %r1, 16;\n\
        \tadd.s64 %rd7, %rd7, %rd8;\n\
        \tst.global.v4.u32 [%rd7], {%r3, %r5, %r6, %r7};\n\
        \tret;\n}\n";
    let (out, _) = run_block(
        "module_variables",
        ptx,
        [8, 1, 1],
        &[vec![0u8; 8 * 16]],
        &[],
        &LaunchOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got = u32s(&out[0]);
    let mut olds: Vec<u32> = (0..8).map(|t| got[4 * t + 2]).collect();
    olds.sort_unstable();
    assert_eq!(
        olds,
        (0..8).collect::<Vec<u32>>(),
        "the counter starts at 0 and takes 8 adds"
    );
    for t in 0..8 {
        assert_eq!(got[4 * t], [11, 22, 33, 44][t % 4], "table[{t} % 4]");
        assert_eq!(
            f32::from_bits(got[4 * t + 1]),
            [0.5, 1.5][t % 2],
            "halves[{t} % 2]"
        );
        assert_eq!(got[4 * t + 3], 0, "`aligned` is 1024-byte aligned");
    }
}
