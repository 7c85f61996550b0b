//! The parsed form of a PTX module: kernels, their parameters and variables, and their
//! instructions with operands resolved to register indices, addresses and instruction indices.

use super::decode::Op;
use super::types::Space;
use crate::ptx::lex::FloatLit;

/// A parsed PTX module.
#[derive(Debug, Clone)]
pub struct Module {
    /// `.version`.
    pub version: String,
    /// `.target` (first entry: `sm_90a`, `sm_89`, …).
    pub target: String,
    /// Module-scope `.global`/`.const` variables.
    pub globals: Vec<GlobalVar>,
    /// Kernel entries.
    pub kernels: Vec<Kernel>,
}

impl Module {
    /// The entry named `name`.
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

/// A module-scope variable in global or constant memory.
#[derive(Debug, Clone)]
pub struct GlobalVar {
    /// Its name.
    pub name: String,
    /// `.global` or `.const`.
    pub space: Space,
    /// Bytes.
    pub bytes: u64,
    /// Alignment.
    pub align: u64,
    /// Initial bytes (zeros when not initialized).
    pub init: Vec<u8>,
}

/// One kernel parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Offset in the parameter buffer.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
    /// Alignment.
    pub align: u64,
}

/// A `.shared` or `.local` variable with its offset in the CTA's (thread's) memory.
#[derive(Debug, Clone)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Byte offset.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One `.entry`.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Entry name.
    pub name: String,
    /// 1-based line of `.entry`.
    pub line: usize,
    /// Parameters in order.
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer.
    pub param_bytes: u64,
    /// Registers (all scopes; inner-scope names are distinct registers).
    pub reg_names: Vec<String>,
    /// Static shared variables (kernel- and module-scope ones it uses).
    pub shared: Vec<Var>,
    /// Static shared bytes; dynamic shared memory starts at `dynamic_shared_offset`.
    pub shared_static_bytes: u64,
    /// Where dynamic shared memory begins (aligned as the `.extern .shared` declaration asks).
    pub dynamic_shared_offset: u64,
    /// Per-thread local bytes.
    pub local_bytes: u64,
    /// `.reqntid` / `.maxntid` if declared.
    pub max_threads: Option<[u32; 3]>,
    /// The instructions.
    pub insts: Vec<Inst>,
}

/// A guard predicate `@%p` / `@!%p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// The predicate register.
    pub reg: u32,
    /// `@!%p`.
    pub negate: bool,
}

/// One instruction.
#[derive(Debug, Clone)]
pub struct Inst {
    /// The opcode with its modifiers as written (`ld.global.v4.b32`).
    pub opcode: String,
    /// The decoded operation.
    pub op: Op,
    /// Guard predicate.
    pub guard: Option<Guard>,
    /// Operands as written, resolved.
    pub operands: Vec<Operand>,
    /// 1-based PTX line.
    pub line: u32,
}

/// What an address is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrBase {
    /// A register's value.
    Reg(u32),
    /// A variable: its address in `space`.
    Var(Space, u64),
    /// A module-scope global variable (index into [`Module::globals`]).
    Global(u32),
    /// The start of dynamic shared memory (`.extern .shared` arrays).
    DynamicShared,
    /// An absolute address.
    Abs,
}

/// `[base + offset]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// The base.
    pub base: AddrBase,
    /// Byte offset.
    pub offset: i64,
}

/// A special register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `%tid.{x,y,z}`.
    Tid(u8),
    /// `%ntid.{x,y,z}`.
    Ntid(u8),
    /// `%ctaid.{x,y,z}`.
    Ctaid(u8),
    /// `%nctaid.{x,y,z}`.
    Nctaid(u8),
    /// `%laneid`.
    Laneid,
    /// `%warpid`.
    Warpid,
    /// `%nwarpid`.
    Nwarpid,
    /// `%smid`.
    Smid,
    /// `%nsmid`.
    Nsmid,
    /// `%lanemask_{eq,lt,le,gt,ge}`.
    Lanemask(u8),
    /// `%clock`, `%clock64`, `%globaltimer`: a deterministic counter.
    Clock,
    /// `%dynamic_smem_size`.
    DynamicSmemSize,
    /// `%total_smem_size`.
    TotalSmemSize,
    /// `%cluster_ctarank`.
    ClusterCtarank,
    /// `%cluster_nctarank`.
    ClusterNctarank,
    /// `%cluster_ctaid.{x,y,z}`.
    ClusterCtaid(u8),
    /// `%cluster_nctaid.{x,y,z}`.
    ClusterNctaid(u8),
    /// `%clusterid.{x,y,z}`.
    Clusterid(u8),
    /// `%nclusterid.{x,y,z}`.
    Nclusterid(u8),
    /// `%is_explicit_cluster`.
    IsExplicitCluster,
    /// `%gridid`.
    Gridid,
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register.
    Reg(u32),
    /// `!%p`: a negated predicate.
    NotReg(u32),
    /// An integer immediate (sign-extended to 64 bits).
    Imm(i64),
    /// A float immediate.
    Float(FloatLit),
    /// A special register.
    Special(Special),
    /// A memory address `[…]`.
    Addr(Addr),
    /// `[addr, {coords}]`: a tensor-map address with coordinates (TMA).
    TensorCoords(Addr, Vec<Operand>),
    /// `{a, b, …}`.
    Vector(Vec<Operand>),
    /// A branch target (instruction index).
    Label(u32),
    /// The address of a variable (`mov.u64 %rd, name`).
    VarAddr(AddrBase),
    /// `_`.
    Sink,
    /// `%p|%q`: setp's two destinations.
    PredPair(u32, u32),
}
