//! Opcode strings (`ld.global.v4.b32`, `setp.lt.f32`, …) decoded once, at parse time, into an
//! [`Op`] the interpreter matches on. An opcode or modifier combination not listed here decodes
//! to [`Op::Unsupported`], which faults when executed (naming it and its line): the emulator
//! never guesses.

use super::types::{Space, Ty};

/// Floating-point rounding of an instruction (`.rn .rz .rm .rp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
}

/// Integer binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    /// `add`.
    Add,
    /// `sub`.
    Sub,
    /// `mul.lo`.
    MulLo,
    /// `mul.hi`.
    MulHi,
    /// `mul.wide` (result twice as wide).
    MulWide,
    /// `div`.
    Div,
    /// `rem`.
    Rem,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `shl`.
    Shl,
    /// `shr` (arithmetic for signed types).
    Shr,
}

/// Integer unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntUnOp {
    /// `neg`.
    Neg,
    /// `abs`.
    Abs,
    /// `not` (also on `.pred`).
    Not,
    /// `popc`.
    Popc,
    /// `clz`.
    Clz,
    /// `brev`.
    Brev,
}

/// Floating-point binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp {
    /// `add`.
    Add,
    /// `sub`.
    Sub,
    /// `mul`.
    Mul,
    /// `div` (`.rn`/`.approx`/`.full`).
    Div,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `copysign`.
    Copysign,
}

/// Floating-point unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FUnOp {
    /// `neg`.
    Neg,
    /// `abs`.
    Abs,
    /// `sqrt`.
    Sqrt,
    /// `rcp`.
    Rcp,
    /// `rsqrt.approx`.
    Rsqrt,
    /// `ex2.approx`.
    Ex2,
    /// `lg2.approx`.
    Lg2,
    /// `sin.approx`.
    Sin,
    /// `cos.approx`.
    Cos,
    /// `tanh.approx`.
    Tanh,
}

/// A comparison of `setp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `eq`.
    Eq,
    /// `ne`.
    Ne,
    /// `lt` / `lo`.
    Lt,
    /// `le` / `ls`.
    Le,
    /// `gt` / `hi`.
    Gt,
    /// `ge` / `hs`.
    Ge,
    /// `equ` (unordered or equal).
    Equ,
    /// `neu`.
    Neu,
    /// `ltu`.
    Ltu,
    /// `leu`.
    Leu,
    /// `gtu`.
    Gtu,
    /// `geu`.
    Geu,
    /// `num`: both are numbers.
    Num,
    /// `nan`: either is NaN.
    Nan,
}

/// How `setp` combines its result with a predicate operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    /// `.and`.
    And,
    /// `.or`.
    Or,
    /// `.xor`.
    Xor,
}

/// `shfl.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    /// `.up`.
    Up,
    /// `.down`.
    Down,
    /// `.bfly`.
    Bfly,
    /// `.idx`.
    Idx,
}

/// `vote.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    /// `.all`.
    All,
    /// `.any`.
    Any,
    /// `.uni`.
    Uni,
    /// `.ballot`.
    Ballot,
}

/// `redux.sync` / atomic operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// `.add`.
    Add,
    /// `.min`.
    Min,
    /// `.max`.
    Max,
    /// `.and`.
    And,
    /// `.or`.
    Or,
    /// `.xor`.
    Xor,
    /// `.exch` (atomics only).
    Exch,
    /// `.cas` (atomics only).
    Cas,
    /// `.inc` (atomics only).
    Inc,
    /// `.dec` (atomics only).
    Dec,
}

/// Barrier flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// `bar.sync` / `barrier.sync` / `bar.red` without reduction: arrive and wait.
    Sync,
    /// `bar.arrive` / `barrier.arrive`: arrive without waiting.
    Arrive,
}

/// A decoded operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Not implemented: faults when executed.
    Unsupported,
    /// Does nothing observable in the emulator (fences, `membar`, prefetches, pragmas).
    Nop,
    /// `mov`.
    Mov(Ty),
    /// `ld` (`vec` elements).
    Ld {
        /// State space.
        space: Space,
        /// Element type.
        ty: Ty,
        /// 1, 2, 4 (or 8).
        vec: u8,
    },
    /// `st`.
    St {
        /// State space.
        space: Space,
        /// Element type.
        ty: Ty,
        /// Elements.
        vec: u8,
    },
    /// `cvta[.to].space`.
    Cvta {
        /// `cvta.to.space` (generic → space) rather than `cvta.space` (space → generic).
        to_space: bool,
        /// The non-generic space.
        space: Space,
        /// Address width in bits (`.u32` or `.u64`).
        bits: u32,
    },
    /// Integer binary operations.
    Int {
        /// Which.
        op: IntOp,
        /// Operand type.
        ty: Ty,
    },
    /// `mad.lo` / `mad.hi` / `mad.wide`.
    Mad {
        /// `MulLo`, `MulHi` or `MulWide`.
        mode: IntOp,
        /// Operand type.
        ty: Ty,
    },
    /// Integer unary operations.
    IntUn {
        /// Which.
        op: IntUnOp,
        /// Type.
        ty: Ty,
    },
    /// Floating-point binary operations.
    Float {
        /// Which.
        op: FOp,
        /// Type (`f32`, `f64`, `bf16`, `bf16x2`, `f16`, `f16x2`).
        ty: Ty,
        /// Rounding (`None`: the default, round to nearest).
        rnd: Option<Rnd>,
        /// `.ftz`.
        ftz: bool,
        /// `.sat`.
        sat: bool,
        /// `.approx` / `.full` (division only).
        approx: bool,
        /// `.NaN` (min/max).
        nan: bool,
    },
    /// `fma` / `mad` on floats.
    Fma {
        /// Type.
        ty: Ty,
        /// Rounding.
        rnd: Rnd,
        /// `.ftz`.
        ftz: bool,
        /// `.sat`.
        sat: bool,
    },
    /// Floating-point unary operations.
    FloatUn {
        /// Which.
        op: FUnOp,
        /// Type.
        ty: Ty,
        /// Rounding, `None` for `.approx`.
        rnd: Option<Rnd>,
        /// `.ftz`.
        ftz: bool,
    },
    /// `setp`.
    Setp {
        /// Comparison.
        cmp: Cmp,
        /// Operand type.
        ty: Ty,
        /// Combination with a third predicate operand.
        combine: Option<BoolOp>,
        /// `.ftz`.
        ftz: bool,
    },
    /// `selp`.
    Selp(Ty),
    /// Boolean ops on predicates: `and.pred`, `or.pred`, `xor.pred`, `not.pred` use [`Op::Int`]
    /// / [`Op::IntUn`] with `Ty::Pred`.
    /// `cvt`.
    Cvt {
        /// Destination type.
        dst: Ty,
        /// Source type.
        src: Ty,
        /// Float rounding (`.rn` …) for float destinations.
        rnd: Option<Rnd>,
        /// Integer rounding (`.rni` …) for float → int or float → float rounding to integers.
        irnd: Option<Rnd>,
        /// `.sat`.
        sat: bool,
        /// `.satfinite`.
        satfinite: bool,
        /// `.ftz`.
        ftz: bool,
        /// `.relu`.
        relu: bool,
    },
    /// `bfe`.
    Bfe(Ty),
    /// `bfi`.
    Bfi(Ty),
    /// `prmt.b32` (default mode).
    Prmt,
    /// `lop3.b32`.
    Lop3,
    /// `shfl.sync`.
    Shfl(ShflMode),
    /// `vote.sync`.
    Vote(VoteMode),
    /// `redux.sync`.
    Redux {
        /// Operation.
        op: ReduceOp,
        /// Type.
        ty: Ty,
    },
    /// CTA barriers.
    Bar(BarKind),
    /// `bra`.
    Bra,
    /// `ret` / `exit`.
    Exit,
    /// `atom` (returns the old value).
    Atom {
        /// Space.
        space: Space,
        /// Operation.
        op: ReduceOp,
        /// Type.
        ty: Ty,
    },
    /// `red` (no result).
    Red {
        /// Space.
        space: Space,
        /// Operation.
        op: ReduceOp,
        /// Type.
        ty: Ty,
    },
    /// `mma.sync.aligned`.
    Mma {
        /// M, N, K.
        shape: (u32, u32, u32),
        /// A's type.
        a: Ty,
        /// B's type.
        b: Ty,
        /// C's type.
        c: Ty,
        /// D's type.
        d: Ty,
    },
    /// Hopper's asynchronous machinery (`mbarrier`, `cp.async*`, `wgmma`, …): see
    /// [`super::decode_hopper`].
    Hopper(super::decode_hopper::HopperOp),
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16`.
    Ldmatrix {
        /// Matrices.
        num: u8,
        /// `.trans`.
        trans: bool,
        /// `.shared` or generic addresses.
        space: Space,
    },
    /// `stmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16`.
    Stmatrix {
        /// Matrices.
        num: u8,
        /// `.trans`.
        trans: bool,
        /// `.shared` or generic addresses.
        space: Space,
    },
    /// `wmma.load` / `wmma.mma` / `wmma.store` (m16n16k16, f16 operands): see `exec/wmma.rs`.
    Wmma(Wmma),
}

/// A `wmma` fragment: the A (M×K), B (K×N) or accumulator (C or D, M×N) matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmmaFrag {
    /// `.a`.
    A,
    /// `.b`.
    B,
    /// `.c` (loads) or `.d` (stores).
    Acc,
}

/// A decoded `wmma.*.sync.aligned.m16n16k16` instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wmma {
    /// `wmma.load.{a,b,c}.sync.aligned.{row,col}.m16n16k16[.space].{f16,f32}`.
    Load {
        /// Which fragment.
        frag: WmmaFrag,
        /// `.row` (true) or `.col` layout in memory.
        row: bool,
        /// State space (generic when absent).
        space: Space,
        /// Element type.
        ty: Ty,
    },
    /// `wmma.store.d.sync.aligned.{row,col}.m16n16k16[.space].{f16,f32}`.
    Store {
        /// `.row` (true) or `.col`.
        row: bool,
        /// State space.
        space: Space,
        /// Element type.
        ty: Ty,
    },
    /// `wmma.mma.sync.aligned.{row,col}.{row,col}.m16n16k16.dtype.ctype` on f16 A and B.
    Mma {
        /// D's type (f16 or f32).
        d: Ty,
        /// C's type (f16 or f32).
        c: Ty,
    },
}

fn rnd(s: &str) -> Option<Rnd> {
    Some(match s {
        "rn" => Rnd::Rn,
        "rz" => Rnd::Rz,
        "rm" => Rnd::Rm,
        "rp" => Rnd::Rp,
        _ => return None,
    })
}

fn irnd(s: &str) -> Option<Rnd> {
    Some(match s {
        "rni" => Rnd::Rn,
        "rzi" => Rnd::Rz,
        "rmi" => Rnd::Rm,
        "rpi" => Rnd::Rp,
        _ => return None,
    })
}

fn cmp(s: &str) -> Option<Cmp> {
    Some(match s {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" | "lo" => Cmp::Lt,
        "le" | "ls" => Cmp::Le,
        "gt" | "hi" => Cmp::Gt,
        "ge" | "hs" => Cmp::Ge,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn reduce_op(s: &str) -> Option<ReduceOp> {
    Some(match s {
        "add" => ReduceOp::Add,
        "min" => ReduceOp::Min,
        "max" => ReduceOp::Max,
        "and" => ReduceOp::And,
        "or" => ReduceOp::Or,
        "xor" => ReduceOp::Xor,
        "exch" => ReduceOp::Exch,
        "cas" => ReduceOp::Cas,
        "inc" => ReduceOp::Inc,
        "dec" => ReduceOp::Dec,
        _ => return None,
    })
}

/// The modifiers of an opcode, sorted into what the decoder asks about.
struct Mods<'a> {
    parts: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn has(&self, m: &str) -> bool {
        self.parts.contains(&m)
    }
    fn types(&self) -> Vec<Ty> {
        self.parts.iter().filter_map(|p| Ty::parse(p)).collect()
    }
    fn last_type(&self) -> Option<Ty> {
        self.types().last().copied()
    }
    fn space(&self) -> Space {
        self.parts
            .iter()
            .find_map(|p| Space::parse(p))
            .unwrap_or(Space::Generic)
    }
    fn rnd(&self) -> Option<Rnd> {
        self.parts.iter().find_map(|p| rnd(p))
    }
    fn vec(&self) -> u8 {
        self.parts
            .iter()
            .find_map(|p| match *p {
                "v2" => Some(2),
                "v4" => Some(4),
                "v8" => Some(8),
                _ => None,
            })
            .unwrap_or(1)
    }
    /// Every modifier is one of `allowed`, a type, or a space.
    fn only(&self, allowed: &[&str]) -> bool {
        self.only_in(&[allowed])
    }
    /// Every modifier is in one of `lists`, a type, or a space.
    fn only_in(&self, lists: &[&[&str]]) -> bool {
        self.parts.iter().all(|p| {
            lists.iter().any(|l| l.contains(p))
                || Ty::parse(p).is_some()
                || Space::parse(p).is_some()
        })
    }
}

/// Qualifiers both `ld` and `st` take: vectors, memory order and scope, cache eviction.
const ACCESS_HINTS: &[&str] = &[
    "v2",
    "v4",
    "v8",
    "cg",
    "cs",
    "weak",
    "relaxed",
    "volatile",
    "cta",
    "gpu",
    "sys",
    "L1::no_allocate",
    "L1::evict_last",
    "L1::evict_first",
    "L1::evict_normal",
    "L1::evict_unchanged",
    "L2::cache_hint",
];

/// Qualifiers only loads take.
const LOAD_HINTS: &[&str] = &[
    "ca", "lu", "cv", "nc", "acquire", "L2::64B", "L2::128B", "L2::256B",
];

/// Qualifiers only stores take.
const STORE_HINTS: &[&str] = &["wb", "wt", "release"];

/// Decodes one opcode with its modifiers.
pub fn decode(opcode: &str) -> Op {
    let mut parts = opcode.split('.');
    let base = parts.next().unwrap_or_default();
    let m = Mods {
        parts: parts.collect(),
    };
    if let Some(h) = super::decode_hopper::decode(base, &m.parts) {
        return Op::Hopper(h);
    }
    decode_parts(base, &m).unwrap_or(Op::Unsupported)
}

fn decode_parts(base: &str, m: &Mods) -> Option<Op> {
    let ty = m.last_type();
    Some(match base {
        "mov" => Op::Mov(ty?),
        "ld" | "ldu" | "st" => {
            // Cache, eviction and memory-order qualifiers change nothing a single emulated
            // access can observe; anything else is not implemented.
            let own = if base == "st" {
                STORE_HINTS
            } else {
                LOAD_HINTS
            };
            if !m.only_in(&[ACCESS_HINTS, own]) {
                return None;
            }
            let (space, ty, vec) = (m.space(), ty?, m.vec());
            if base == "st" {
                Op::St { space, ty, vec }
            } else {
                Op::Ld { space, ty, vec }
            }
        }
        "cvta" => Op::Cvta {
            to_space: m.has("to"),
            space: m.space(),
            bits: ty?.bits(),
        },
        "add" | "sub" | "mul" | "min" | "max" | "div" | "rem" | "and" | "or" | "xor" | "shl"
        | "shr" | "copysign" => {
            let ty = ty?;
            if ty.is_float() {
                let op = match base {
                    "add" => FOp::Add,
                    "sub" => FOp::Sub,
                    "mul" => FOp::Mul,
                    "div" => FOp::Div,
                    "min" => FOp::Min,
                    "max" => FOp::Max,
                    "copysign" => FOp::Copysign,
                    _ => return None,
                };
                if !m.only(&[
                    "rn", "rz", "rm", "rp", "ftz", "sat", "approx", "full", "NaN",
                ]) {
                    return None;
                }
                Op::Float {
                    op,
                    ty,
                    rnd: m.rnd(),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    approx: m.has("approx") || m.has("full"),
                    nan: m.has("NaN"),
                }
            } else {
                let op = match base {
                    "add" => IntOp::Add,
                    "sub" => IntOp::Sub,
                    "mul" if m.has("wide") => IntOp::MulWide,
                    "mul" if m.has("hi") => IntOp::MulHi,
                    "mul" => IntOp::MulLo,
                    "div" => IntOp::Div,
                    "rem" => IntOp::Rem,
                    "min" => IntOp::Min,
                    "max" => IntOp::Max,
                    "and" => IntOp::And,
                    "or" => IntOp::Or,
                    "xor" => IntOp::Xor,
                    "shl" => IntOp::Shl,
                    "shr" => IntOp::Shr,
                    _ => return None,
                };
                if !m.only(&["lo", "hi", "wide"]) {
                    return None;
                }
                Op::Int { op, ty }
            }
        }
        "mad" | "fma" => {
            let ty = ty?;
            if ty.is_float() {
                if !m.only(&["rn", "rz", "rm", "rp", "ftz", "sat"]) {
                    return None;
                }
                Op::Fma {
                    ty,
                    rnd: m.rnd().unwrap_or(Rnd::Rn),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                }
            } else if base == "mad" {
                let mode = if m.has("wide") {
                    IntOp::MulWide
                } else if m.has("hi") {
                    IntOp::MulHi
                } else {
                    IntOp::MulLo
                };
                if !m.only(&["lo", "hi", "wide"]) {
                    return None;
                }
                Op::Mad { mode, ty }
            } else {
                return None;
            }
        }
        "neg" | "abs" | "not" | "popc" | "clz" | "brev" | "sqrt" | "rcp" | "rsqrt" | "ex2"
        | "lg2" | "sin" | "cos" | "tanh" => {
            let ty = ty?;
            if ty.is_float() {
                let op = match base {
                    "neg" => FUnOp::Neg,
                    "abs" => FUnOp::Abs,
                    "sqrt" => FUnOp::Sqrt,
                    "rcp" => FUnOp::Rcp,
                    "rsqrt" => FUnOp::Rsqrt,
                    "ex2" => FUnOp::Ex2,
                    "lg2" => FUnOp::Lg2,
                    "sin" => FUnOp::Sin,
                    "cos" => FUnOp::Cos,
                    "tanh" => FUnOp::Tanh,
                    _ => return None,
                };
                if !m.only(&["rn", "rz", "rm", "rp", "ftz", "approx", "full"]) {
                    return None;
                }
                let rnd = m.rnd();
                // Only sqrt and rcp have correctly rounded forms.
                if rnd.is_some() && !matches!(op, FUnOp::Sqrt | FUnOp::Rcp) {
                    return None;
                }
                if rnd.is_none() && matches!(op, FUnOp::Sqrt | FUnOp::Rcp) && !m.has("approx") {
                    return None;
                }
                Op::FloatUn {
                    op,
                    ty,
                    rnd,
                    ftz: m.has("ftz"),
                }
            } else {
                let op = match base {
                    "neg" => IntUnOp::Neg,
                    "abs" => IntUnOp::Abs,
                    "not" => IntUnOp::Not,
                    "popc" => IntUnOp::Popc,
                    "clz" => IntUnOp::Clz,
                    "brev" => IntUnOp::Brev,
                    _ => return None,
                };
                if !m.only(&[]) {
                    return None;
                }
                Op::IntUn { op, ty }
            }
        }
        "setp" => {
            let c = m.parts.first().and_then(|p| cmp(p))?;
            let combine = if m.has("and") {
                Some(BoolOp::And)
            } else if m.has("or") {
                Some(BoolOp::Or)
            } else if m.has("xor") {
                Some(BoolOp::Xor)
            } else {
                None
            };
            let rest = Mods {
                parts: m.parts[1..].to_vec(),
            };
            if !rest.only(&["and", "or", "xor", "ftz"]) {
                return None;
            }
            Op::Setp {
                cmp: c,
                ty: ty?,
                combine,
                ftz: m.has("ftz"),
            }
        }
        "selp" => Op::Selp(ty?),
        "cvt" => {
            let types = m.types();
            let [dst, src] = types[..] else {
                return None;
            };
            if !m.only(&[
                "rn",
                "rz",
                "rm",
                "rp",
                "rni",
                "rzi",
                "rmi",
                "rpi",
                "sat",
                "satfinite",
                "ftz",
                "relu",
                "rna",
            ]) || m.has("rna")
            {
                return None;
            }
            Op::Cvt {
                dst,
                src,
                rnd: m.rnd(),
                irnd: m.parts.iter().find_map(|p| irnd(p)),
                sat: m.has("sat"),
                satfinite: m.has("satfinite"),
                ftz: m.has("ftz"),
                relu: m.has("relu"),
            }
        }
        "bfe" => Op::Bfe(ty?),
        "bfi" => Op::Bfi(ty?),
        "prmt" if m.parts == ["b32"] => Op::Prmt,
        "lop3" if m.parts == ["b32"] => Op::Lop3,
        "shfl" if m.has("sync") && m.has("b32") => Op::Shfl(if m.has("up") {
            ShflMode::Up
        } else if m.has("down") {
            ShflMode::Down
        } else if m.has("bfly") {
            ShflMode::Bfly
        } else if m.has("idx") {
            ShflMode::Idx
        } else {
            return None;
        }),
        "vote" if m.has("sync") => Op::Vote(if m.has("all") {
            VoteMode::All
        } else if m.has("any") {
            VoteMode::Any
        } else if m.has("uni") {
            VoteMode::Uni
        } else if m.has("ballot") {
            VoteMode::Ballot
        } else {
            return None;
        }),
        "redux" if m.has("sync") => Op::Redux {
            op: m.parts.iter().find_map(|p| reduce_op(p))?,
            ty: ty?,
        },
        "bar" | "barrier" => {
            if m.has("red") {
                return None;
            }
            let kind = if m.has("arrive") {
                BarKind::Arrive
            } else if m.has("sync") || m.parts.is_empty() || m.has("aligned") {
                BarKind::Sync
            } else {
                return None;
            };
            if m.has("cluster") {
                return None;
            }
            Op::Bar(kind)
        }
        "membar" | "fence" if !m.has("proxy") || m.has("async") || m.has("alias") => Op::Nop,
        "bra" => Op::Bra,
        "ret" | "exit" => Op::Exit,
        "atom" | "red" => {
            let op = m.parts.iter().find_map(|p| reduce_op(p))?;
            let ty = ty?;
            let space = m.space();
            if base == "atom" {
                Op::Atom { space, op, ty }
            } else {
                Op::Red { space, op, ty }
            }
        }
        "mma" if m.has("sync") && m.has("aligned") && m.has("row") && m.has("col") => {
            let shape = m.parts.iter().find_map(|p| parse_shape(p))?;
            let t = m.types();
            let [d, a, b, c] = t[..] else {
                return None;
            };
            Op::Mma { shape, a, b, c, d }
        }
        "ldmatrix" | "stmatrix" if m.has("sync") && m.has("aligned") && m.has("m8n8") => {
            let num = if m.has("x4") {
                4
            } else if m.has("x2") {
                2
            } else if m.has("x1") {
                1
            } else {
                return None;
            };
            if !m.has("b16") {
                return None;
            }
            let (trans, space) = (m.has("trans"), m.space());
            if base == "ldmatrix" {
                Op::Ldmatrix { num, trans, space }
            } else {
                Op::Stmatrix { num, trans, space }
            }
        }
        "wmma" => decode_wmma(m)?,
        _ => return None,
    })
}

fn decode_wmma(m: &Mods) -> Option<Op> {
    let layouts: Vec<bool> = m
        .parts
        .iter()
        .filter_map(|p| match *p {
            "row" => Some(true),
            "col" => Some(false),
            _ => None,
        })
        .collect();
    let types = m.types();
    let acc = |t: Ty| matches!(t, Ty::F16 | Ty::F32);
    let verb = *m.parts.first()?;
    let frag = m.parts.get(1).copied().unwrap_or_default();
    let rest = Mods {
        parts: m.parts[1..].to_vec(),
    };
    let common = ["sync", "aligned", "row", "col", "m16n16k16"];
    if !(m.has("sync") && m.has("aligned") && m.has("m16n16k16")) {
        return None;
    }
    Some(Op::Wmma(match (verb, frag, &layouts[..], &types[..]) {
        ("load", "a" | "b", [row], [Ty::F16]) | ("load", "c", [row], [Ty::F16 | Ty::F32]) => {
            if !rest.only(&[&common[..], &["a", "b", "c"]].concat()) {
                return None;
            }
            Wmma::Load {
                frag: match frag {
                    "a" => WmmaFrag::A,
                    "b" => WmmaFrag::B,
                    _ => WmmaFrag::Acc,
                },
                row: *row,
                space: m.space(),
                ty: types[0],
            }
        }
        ("store", "d", [row], [ty]) if acc(*ty) => {
            if !rest.only(&[&common[..], &["d"]].concat()) {
                return None;
            }
            Wmma::Store {
                row: *row,
                space: m.space(),
                ty: *ty,
            }
        }
        ("mma", _, [_, _], [d, c]) if acc(*d) && acc(*c) && m.space() == Space::Generic => {
            if !rest.only(&common) {
                return None;
            }
            Wmma::Mma { d: *d, c: *c }
        }
        _ => return None,
    }))
}

/// `m16n8k32` → (16, 8, 32).
pub fn parse_shape(s: &str) -> Option<(u32, u32, u32)> {
    let rest = s.strip_prefix('m')?;
    let (m, rest) = rest.split_once('n')?;
    let (n, k) = rest.split_once('k')?;
    Some((m.parse().ok()?, n.parse().ok()?, k.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_dsc_emits() {
        assert_eq!(
            decode("ld.global.v4.b32"),
            Op::Ld {
                space: Space::Global,
                ty: Ty::B32,
                vec: 4
            }
        );
        assert_eq!(
            decode("mul.wide.u32"),
            Op::Int {
                op: IntOp::MulWide,
                ty: Ty::U32
            }
        );
        assert!(matches!(
            decode("max.NaN.f32"),
            Op::Float {
                op: FOp::Max,
                nan: true,
                ..
            }
        ));
        assert!(matches!(
            decode("cvt.rn.satfinite.e4m3x2.f32"),
            Op::Cvt {
                dst: Ty::E4m3x2,
                src: Ty::F32,
                satfinite: true,
                ..
            }
        ));
        assert!(matches!(
            decode("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"),
            Op::Mma {
                shape: (16, 8, 32),
                a: Ty::E4m3,
                ..
            }
        ));
        assert_eq!(decode("sqrt.f32"), Op::Unsupported);
        assert_eq!(decode("frobnicate.b32"), Op::Unsupported);
        assert_eq!(decode("ld.global.b32.bogus"), Op::Unsupported);
    }
}
