//! PTX tokens → [`Module`]. Registers are resolved through nested scopes (the `{ … }` blocks
//! inline asm leaves may redeclare names), variables to addresses in their state space, and
//! labels to instruction indices. Directives that do not change what a kernel computes
//! (`.file`, `.loc`, `.pragma`, performance hints) are read and dropped.

use std::collections::HashMap;

use super::decode::decode;
use super::lex::{FloatLit, Tok, Token, tokenize};
use super::module::{
    Addr, AddrBase, GlobalVar, Guard, Inst, Kernel, Module, Operand, Param, Special, Var,
};
use super::types::{Space, Ty};
use crate::error::EmuError;

/// Parses PTX text into a module.
pub fn parse_module(text: &str) -> Result<Module, EmuError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        toks: tokens,
        pos: 0,
    };
    p.module()
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// A module-scope `.shared` variable (dynamic when `bytes` is `None`).
struct ModuleShared {
    name: String,
    align: u64,
    bytes: Option<u64>,
}

/// A declared variable: its state space, alignment, element bytes and count.
struct VarDecl {
    space: Space,
    align: u64,
    bytes: Option<u64>,
    name: String,
    init: Vec<u8>,
    line: usize,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, EmuError> {
    Err(EmuError::Parse {
        line,
        message: message.into(),
    })
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map_or(1, |t| t.line)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.tok)
    }

    fn next(&mut self) -> Result<Tok, EmuError> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        match t {
            Some(t) => Ok(t),
            None => err(self.line(), "unexpected end of the PTX text"),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), EmuError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            let line = self.line();
            err(line, format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the text".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Int(i)) => format!("`{i}`"),
            Some(Tok::Float(_)) => "a float literal".into(),
            Some(Tok::Str(s)) => format!("\"{s}\""),
            Some(Tok::Punct(c)) => format!("`{c}`"),
        }
    }

    fn word(&mut self) -> Result<String, EmuError> {
        let line = self.line();
        match self.next()? {
            Tok::Word(w) => Ok(w),
            _ => {
                self.pos -= 1;
                err(line, format!("expected a name, found {}", self.describe()))
            }
        }
    }

    fn int(&mut self) -> Result<i128, EmuError> {
        let line = self.line();
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(i) => Ok(if neg { -i } else { i }),
            _ => {
                self.pos -= 1;
                err(
                    line,
                    format!("expected an integer, found {}", self.describe()),
                )
            }
        }
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    /// Skips every token on the current token's line (directives without `;`).
    fn skip_line(&mut self) {
        let line = self.line();
        while self.pos < self.toks.len() && self.toks[self.pos].line == line {
            self.pos += 1;
        }
    }

    /// Skips to the `;` ending this statement (inclusive).
    fn skip_statement(&mut self) -> Result<(), EmuError> {
        while !self.eat_punct(';') {
            self.next()?;
        }
        Ok(())
    }

    /// Skips a `{ … }` block (the next token must be `{`).
    fn skip_block(&mut self) -> Result<(), EmuError> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn module(&mut self) -> Result<Module, EmuError> {
        let mut module = Module {
            version: String::new(),
            target: String::new(),
            globals: Vec::new(),
            kernels: Vec::new(),
        };
        let mut shared: Vec<ModuleShared> = Vec::new();
        // Kernels are parsed after the whole module is read, so module-scope shared
        // variables declared later are known; keep their token ranges.
        let mut entries: Vec<usize> = Vec::new();
        while self.pos < self.toks.len() {
            let line = self.line();
            let w = match self.peek() {
                Some(Tok::Word(w)) => w.clone(),
                _ => {
                    return err(
                        line,
                        format!("unexpected {} at module scope", self.describe()),
                    );
                }
            };
            match w.as_str() {
                ".version" => {
                    self.pos += 1;
                    module.version = match self.next()? {
                        Tok::Float(FloatLit::Decimal(v)) => format!("{v}"),
                        Tok::Int(i) => i.to_string(),
                        _ => return err(line, "bad .version"),
                    };
                }
                ".target" => {
                    self.pos += 1;
                    module.target = self.word()?;
                    while self.eat_punct(',') {
                        self.word()?;
                    }
                }
                ".address_size" => {
                    self.pos += 1;
                    if self.int()? != 64 {
                        return err(line, "only .address_size 64 is supported");
                    }
                }
                ".file" | ".loc" => self.skip_line(),
                ".section" => {
                    self.pos += 1;
                    self.word()?;
                    self.skip_block()?;
                }
                ".pragma" => self.skip_statement()?,
                ".visible" | ".weak" | ".extern" | ".common" => {
                    // Linkage: look at what it qualifies.
                    let mut k = 1;
                    while matches!(self.peek_at(k), Some(Tok::Word(w)) if matches!(w.as_str(), ".visible" | ".weak" | ".extern" | ".common"))
                    {
                        k += 1;
                    }
                    match self.peek_at(k) {
                        Some(Tok::Word(w)) if w == ".entry" => {
                            self.pos += k;
                            entries.push(self.pos);
                            self.skip_entry()?;
                        }
                        Some(Tok::Word(w)) if w == ".func" => {
                            self.pos += k;
                            self.skip_func()?;
                        }
                        _ => {
                            self.pos += k;
                            self.module_var(&mut module, &mut shared)?;
                        }
                    }
                }
                ".entry" => {
                    entries.push(self.pos);
                    self.skip_entry()?;
                }
                ".func" => self.skip_func()?,
                ".global" | ".const" | ".shared" => self.module_var(&mut module, &mut shared)?,
                _ => return err(line, format!("unexpected `{w}` at module scope")),
            }
        }
        for start in entries {
            self.pos = start;
            let kernel = self.entry(&module, &shared)?;
            module.kernels.push(kernel);
        }
        if module.target.is_empty() {
            return err(1, "the module has no .target");
        }
        Ok(module)
    }

    fn skip_entry(&mut self) -> Result<(), EmuError> {
        // `.entry name ( params ) directives { body }`
        self.pos += 1;
        while !self.is_punct('{') {
            if self.eat_punct(';') {
                return Ok(()); // a prototype
            }
            self.next()?;
        }
        self.skip_block()
    }

    fn skip_func(&mut self) -> Result<(), EmuError> {
        self.pos += 1;
        while !self.is_punct('{') {
            if self.eat_punct(';') {
                return Ok(());
            }
            self.next()?;
        }
        self.skip_block()
    }

    /// `.global/.const/.shared [.align N] .type name[dims] [= init];` at module scope.
    fn module_var(
        &mut self,
        module: &mut Module,
        shared: &mut Vec<ModuleShared>,
    ) -> Result<(), EmuError> {
        let decl = self.var_decl()?;
        match decl.space {
            Space::Shared => shared.push(ModuleShared {
                name: decl.name,
                align: decl.align,
                bytes: decl.bytes,
            }),
            Space::Global | Space::Const => {
                let bytes = decl.bytes.unwrap_or(0);
                let mut init = decl.init;
                init.resize(bytes as usize, 0);
                module.globals.push(GlobalVar {
                    name: decl.name,
                    space: decl.space,
                    bytes,
                    align: decl.align,
                    init,
                });
            }
            _ => return err(decl.line, "unsupported module-scope variable"),
        }
        Ok(())
    }

    /// A variable declaration after its linkage: `.space [.align N] [.vN] .type name[[N]]…
    /// [= init];`. `bytes` is `None` for `name[]`.
    fn var_decl(&mut self) -> Result<VarDecl, EmuError> {
        let line = self.line();
        let space_word = self.word()?;
        let space =
            Space::parse(space_word.trim_start_matches('.')).ok_or_else(|| EmuError::Parse {
                line,
                message: format!("unknown state space `{space_word}`"),
            })?;
        let mut align = None;
        let mut ty = None;
        let mut vec = 1u64;
        while let Some(w) = self.peek_word().map(str::to_string) {
            if !w.starts_with('.') {
                break;
            }
            self.pos += 1;
            match w.as_str() {
                ".align" => align = Some(self.int()? as u64),
                ".v2" => vec = 2,
                ".v4" => vec = 4,
                ".ptr" => {}
                _ => match Ty::parse(&w[1..]) {
                    Some(t) => ty = Some(t),
                    None => return err(line, format!("unexpected `{w}` in a declaration")),
                },
            }
        }
        let ty = ty.ok_or_else(|| EmuError::Parse {
            line,
            message: "declaration without a type".into(),
        })?;
        let name = self.word()?;
        let elem = u64::from(ty.bytes()) * vec;
        let mut count = Some(1u64);
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                count = None;
            } else {
                let n = self.int()? as u64;
                self.expect_punct(']')?;
                count = count.map(|c| c * n);
            }
        }
        let mut init = Vec::new();
        if self.eat_punct('=') {
            self.initializer(ty, &mut init)?;
        }
        self.expect_punct(';')?;
        Ok(VarDecl {
            space,
            align: align.unwrap_or(elem),
            bytes: count.map(|c| c * elem),
            name,
            init,
            line,
        })
    }

    /// `{1, 2, {3, 4}}` or a scalar, appended little-endian as `ty`.
    fn initializer(&mut self, ty: Ty, out: &mut Vec<u8>) -> Result<(), EmuError> {
        if self.eat_punct('{') {
            loop {
                if self.eat_punct('}') {
                    break;
                }
                self.initializer(ty, out)?;
                if !self.eat_punct(',') {
                    self.expect_punct('}')?;
                    break;
                }
            }
            return Ok(());
        }
        let line = self.line();
        let neg = self.eat_punct('-');
        let bits: u64 = match self.next()? {
            Tok::Int(i) => (if neg { -i } else { i }) as u64,
            Tok::Float(FloatLit::F32Bits(b)) => u64::from(b),
            Tok::Float(FloatLit::F64Bits(b)) => b,
            Tok::Float(FloatLit::Decimal(v)) => {
                let v = if neg { -v } else { v };
                if ty == Ty::F64 {
                    v.to_bits()
                } else {
                    u64::from((v as f32).to_bits())
                }
            }
            _ => return err(line, "bad initializer"),
        };
        out.extend_from_slice(&bits.to_le_bytes()[..ty.bytes() as usize]);
        Ok(())
    }

    fn entry(&mut self, module: &Module, shared: &[ModuleShared]) -> Result<Kernel, EmuError> {
        let line = self.line();
        self.pos += 1; // .entry
        let name = self.word()?;
        let mut params = Vec::new();
        let mut param_bytes = 0u64;
        self.expect_punct('(')?;
        if !self.eat_punct(')') {
            loop {
                let pline = self.line();
                if self.word()? != ".param" {
                    return err(pline, "expected `.param`");
                }
                let mut align = None;
                let mut ty = None;
                let mut after_ptr = false;
                while let Some(w) = self.peek_word().map(str::to_string) {
                    if !w.starts_with('.') {
                        break;
                    }
                    self.pos += 1;
                    match w.as_str() {
                        ".align" => {
                            let a = self.int()? as u64;
                            // `.ptr .global .align N` describes the pointee.
                            if !after_ptr {
                                align = Some(a);
                            }
                        }
                        ".ptr" => after_ptr = true,
                        ".global" | ".shared" | ".const" | ".local" => {}
                        _ => match Ty::parse(&w[1..]) {
                            Some(t) => ty = Some(t),
                            None => return err(pline, format!("unexpected `{w}` in a parameter")),
                        },
                    }
                }
                let ty = ty.ok_or_else(|| EmuError::Parse {
                    line: pline,
                    message: "parameter without a type".into(),
                })?;
                let pname = self.word()?;
                let mut count = 1u64;
                if self.eat_punct('[') {
                    count = self.int()? as u64;
                    self.expect_punct(']')?;
                }
                let bytes = u64::from(ty.bytes()) * count;
                let align = align.unwrap_or(u64::from(ty.bytes())).max(1);
                let offset = param_bytes.next_multiple_of(align);
                param_bytes = offset + bytes;
                params.push(Param {
                    name: pname,
                    offset,
                    bytes,
                    align,
                });
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let mut max_threads = None;
        while let Some(w) = self.peek_word().map(str::to_string) {
            self.pos += 1;
            match w.as_str() {
                ".maxntid" | ".reqntid" => {
                    let mut dims = [1u32; 3];
                    dims[0] = self.int()? as u32;
                    for d in dims.iter_mut().skip(1) {
                        if !self.eat_punct(',') {
                            break;
                        }
                        *d = self.int()? as u32;
                    }
                    max_threads = Some(dims);
                }
                ".minnctapersm" | ".maxnctapersm" | ".maxnreg" | ".maxclusterrank" => {
                    self.int()?;
                }
                ".reqnctapercluster" => {
                    self.int()?;
                    while self.eat_punct(',') {
                        self.int()?;
                    }
                }
                ".explicitcluster" | ".noreturn" => {}
                ".pragma" => self.skip_statement()?,
                _ => {
                    return err(
                        self.line(),
                        format!("unexpected `{w}` before a kernel body"),
                    );
                }
            }
        }
        let mut body = Body {
            module,
            params: &params,
            scopes: vec![HashMap::new()],
            reg_names: Vec::new(),
            next_reg: 0,
            shared: Vec::new(),
            shared_bytes: 0,
            local: Vec::new(),
            local_bytes: 0,
            insts: Vec::new(),
            labels: HashMap::new(),
            blocks: vec![0],
            next_block: 0,
            fixups: Vec::new(),
            module_shared: HashMap::new(),
            dynamic_names: Vec::new(),
        };
        // Module-scope static shared variables first, each kernel gets its own copy.
        let mut dynamic_align = 16u64;
        for s in shared {
            match s.bytes {
                Some(bytes) => {
                    let offset = body.shared_bytes.next_multiple_of(s.align.max(1));
                    body.shared_bytes = offset + bytes;
                    body.module_shared.insert(s.name.clone(), offset);
                    body.shared.push(Var {
                        name: s.name.clone(),
                        offset,
                        bytes,
                    });
                }
                None => {
                    dynamic_align = dynamic_align.max(s.align);
                    body.dynamic_names.push(s.name.clone());
                }
            }
        }
        self.expect_punct('{')?;
        self.block(&mut body)?;
        let dynamic_offset = body.shared_bytes.next_multiple_of(dynamic_align);
        for (inst, operand, label, blocks, line) in std::mem::take(&mut body.fixups) {
            // Labels are scoped like registers: the innermost enclosing block's wins (inline
            // asm repeats `LAB_WAIT:`/`DONE:` in every `{ … }` it leaves).
            let target = blocks
                .iter()
                .rev()
                .find_map(|&b| body.labels.get(&(b, label.clone())).copied());
            let Some(target) = target else {
                return err(
                    line,
                    format!("`{label}` is not a label, register or variable"),
                );
            };
            set_label(&mut body.insts[inst].operands[operand], target);
        }
        let Body {
            reg_names,
            shared,
            shared_bytes,
            local_bytes,
            insts,
            ..
        } = body;
        Ok(Kernel {
            name,
            line,
            params,
            param_bytes,
            reg_names,
            shared,
            shared_static_bytes: shared_bytes,
            dynamic_shared_offset: dynamic_offset,
            local_bytes,
            max_threads,
            insts,
        })
    }

    /// Statements until the `}` closing the current block.
    fn block(&mut self, body: &mut Body) -> Result<(), EmuError> {
        loop {
            let line = self.line();
            match self.peek() {
                None => return err(line, "unterminated kernel body"),
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    body.scopes.push(HashMap::new());
                    body.next_block += 1;
                    body.blocks.push(body.next_block);
                    // A closed scope's registers can never be named again: reuse them.
                    let mark = body.next_reg;
                    self.block(body)?;
                    body.scopes.pop();
                    body.blocks.pop();
                    body.next_reg = mark;
                }
                Some(Tok::Punct('@')) => self.instruction(body)?,
                Some(Tok::Word(w)) => {
                    let w = w.clone();
                    if self.peek_at(1) == Some(&Tok::Punct(':')) && !w.starts_with('.') {
                        self.pos += 2;
                        let block = *body.blocks.last().expect("the body's block");
                        let at = body.insts.len() as u32;
                        if body.labels.insert((block, w.clone()), at).is_some() {
                            return err(line, format!("label `{w}` is defined twice in one block"));
                        }
                        continue;
                    }
                    match w.as_str() {
                        ".reg" => self.reg_decl(body)?,
                        ".local" | ".shared" => {
                            let decl = self.var_decl()?;
                            let bytes = decl.bytes.ok_or_else(|| EmuError::Parse {
                                line: decl.line,
                                message: "a kernel-scope variable needs a size".into(),
                            })?;
                            let (vars, total) = if decl.space == Space::Local {
                                (&mut body.local, &mut body.local_bytes)
                            } else {
                                (&mut body.shared, &mut body.shared_bytes)
                            };
                            let offset = total.next_multiple_of(decl.align.max(1));
                            *total = offset + bytes;
                            vars.push(Var {
                                name: decl.name,
                                offset,
                                bytes,
                            });
                        }
                        ".pragma" => self.skip_statement()?,
                        ".loc" | ".file" => self.skip_line(),
                        _ if w.starts_with('.') => {
                            return err(line, format!("unsupported directive `{w}` in a kernel"));
                        }
                        _ => self.instruction(body)?,
                    }
                }
                Some(_) => return err(line, format!("unexpected {}", self.describe())),
            }
        }
    }

    /// `.reg .type %r<N>;` or `.reg .type a, b, c;`.
    fn reg_decl(&mut self, body: &mut Body) -> Result<(), EmuError> {
        self.pos += 1;
        let line = self.line();
        let mut vec = 1;
        loop {
            let w = self.word()?;
            match w.as_str() {
                ".v2" => vec = 2,
                ".v4" => vec = 4,
                _ if Ty::parse(&w[1..]).is_some() => break,
                _ => return err(line, format!("unexpected `{w}` in .reg")),
            }
        }
        if vec != 1 {
            return err(line, "vector registers are not supported");
        }
        loop {
            let name = self.word()?;
            if self.eat_punct('<') {
                let n = self.int()?;
                self.expect_punct('>')?;
                for i in 0..n {
                    body.declare(format!("{name}{i}"));
                }
            } else {
                body.declare(name);
            }
            if self.eat_punct(';') {
                return Ok(());
            }
            self.expect_punct(',')?;
        }
    }

    fn instruction(&mut self, body: &mut Body) -> Result<(), EmuError> {
        let line = self.line();
        let guard = if self.eat_punct('@') {
            let negate = self.eat_punct('!');
            let name = self.word()?;
            let reg = body.reg(&name).ok_or_else(|| EmuError::Parse {
                line,
                message: format!("unknown predicate `{name}`"),
            })?;
            Some(Guard { reg, negate })
        } else {
            None
        };
        let opcode = self.word()?;
        let index = body.insts.len();
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                let operand = self.operand(body, index, operands.len())?;
                operands.push(operand);
                if self.eat_punct(';') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        body.insts.push(Inst {
            op: decode(&opcode),
            opcode,
            guard,
            operands,
            line: line as u32,
        });
        Ok(())
    }

    fn operand(&mut self, body: &mut Body, inst: usize, index: usize) -> Result<Operand, EmuError> {
        let line = self.line();
        if self.eat_punct('{') {
            let mut items = Vec::new();
            if !self.eat_punct('}') {
                loop {
                    items.push(self.operand(body, inst, index)?);
                    if self.eat_punct('}') {
                        break;
                    }
                    self.expect_punct(',')?;
                }
            }
            return Ok(Operand::Vector(items));
        }
        if self.eat_punct('[') {
            let addr = self.address(body)?;
            if self.eat_punct(',') {
                let Operand::Vector(coords) = self.operand(body, inst, index)? else {
                    return err(line, "expected `{coordinates}` after the tensor address");
                };
                self.expect_punct(']')?;
                return Ok(Operand::TensorCoords(addr, coords));
            }
            self.expect_punct(']')?;
            return Ok(Operand::Addr(addr));
        }
        if self.eat_punct('!') {
            let name = self.word()?;
            let reg = body.reg(&name).ok_or_else(|| EmuError::Parse {
                line,
                message: format!("unknown predicate `{name}`"),
            })?;
            return Ok(Operand::NotReg(reg));
        }
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(i) => {
                let v = if neg { -i } else { i };
                Ok(Operand::Imm(v as i64))
            }
            Tok::Float(f) => Ok(Operand::Float(match (f, neg) {
                (FloatLit::Decimal(v), true) => FloatLit::Decimal(-v),
                (f, false) => f,
                (FloatLit::F32Bits(b), true) => FloatLit::F32Bits(b ^ 0x8000_0000),
                (FloatLit::F64Bits(b), true) => FloatLit::F64Bits(b ^ (1 << 63)),
            })),
            Tok::Word(w) if !neg => {
                if w == "_" {
                    return Ok(Operand::Sink);
                }
                if let Some(s) = special(&w) {
                    return Ok(Operand::Special(s));
                }
                if let Some(reg) = body.reg(&w) {
                    if self.eat_punct('|') {
                        let second = self.word()?;
                        let other = body.reg(&second).ok_or_else(|| EmuError::Parse {
                            line,
                            message: format!("unknown predicate `{second}`"),
                        })?;
                        return Ok(Operand::PredPair(reg, other));
                    }
                    return Ok(Operand::Reg(reg));
                }
                if w.starts_with('%') {
                    return err(line, format!("unknown register `{w}`"));
                }
                if let Some(base) = body.var(&w) {
                    return Ok(Operand::VarAddr(base));
                }
                body.fixups
                    .push((inst, index, w, body.blocks.clone(), line));
                Ok(Operand::Label(u32::MAX))
            }
            _ => {
                self.pos -= 1;
                err(
                    line,
                    format!("unexpected {} in an operand", self.describe()),
                )
            }
        }
    }

    /// The inside of `[…]`: `reg`, `var`, `imm`, with `+ imm` / `+ -imm` / `- imm`.
    fn address(&mut self, body: &mut Body) -> Result<Addr, EmuError> {
        let line = self.line();
        let base = match self.next()? {
            Tok::Word(w) => {
                if let Some(reg) = body.reg(&w) {
                    AddrBase::Reg(reg)
                } else if let Some(base) = body.var(&w) {
                    base
                } else {
                    return err(line, format!("unknown address base `{w}`"));
                }
            }
            Tok::Int(i) => {
                return Ok(Addr {
                    base: AddrBase::Abs,
                    offset: i as i64,
                });
            }
            _ => return err(line, "bad address"),
        };
        let mut offset = 0i64;
        loop {
            // `+ 8`, `+ -8` and `- 8` (the sign is read by `int`).
            if self.eat_punct('+') || self.is_punct('-') {
                offset += self.int()? as i64;
            } else {
                break;
            }
        }
        Ok(Addr { base, offset })
    }
}

/// The state of the kernel body being parsed.
struct Body<'a> {
    module: &'a Module,
    params: &'a [Param],
    scopes: Vec<HashMap<String, u32>>,
    /// The first name each register index was given (inner scopes reuse indices).
    reg_names: Vec<String>,
    next_reg: u32,
    shared: Vec<Var>,
    shared_bytes: u64,
    local: Vec<Var>,
    local_bytes: u64,
    insts: Vec<Inst>,
    /// Labels by (block, name): blocks are numbered as they open, the body is 0.
    labels: HashMap<(u32, String), u32>,
    /// The blocks enclosing the statement being parsed, outermost first.
    blocks: Vec<u32>,
    next_block: u32,
    /// (instruction, operand, label, enclosing blocks, line) of branch targets to resolve.
    fixups: Vec<(usize, usize, String, Vec<u32>, usize)>,
    /// Module-scope static shared variables' offsets.
    module_shared: HashMap<String, u64>,
    /// Module-scope `.extern .shared` arrays: dynamic shared memory.
    dynamic_names: Vec<String>,
}

impl Body<'_> {
    fn declare(&mut self, name: String) {
        let index = self.next_reg;
        self.next_reg += 1;
        if self.reg_names.len() <= index as usize {
            self.reg_names.push(name.clone());
        }
        self.scopes.last_mut().expect("a scope").insert(name, index);
    }

    fn reg(&self, name: &str) -> Option<u32> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn var(&mut self, name: &str) -> Option<AddrBase> {
        if let Some(v) = self.shared.iter().find(|v| v.name == name) {
            return Some(AddrBase::Var(Space::Shared, v.offset));
        }
        if let Some(v) = self.local.iter().find(|v| v.name == name) {
            return Some(AddrBase::Var(Space::Local, v.offset));
        }
        if let Some(p) = self.params.iter().find(|p| p.name == name) {
            return Some(AddrBase::Var(Space::Param, p.offset));
        }
        if let Some(i) = self.module.globals.iter().position(|g| g.name == name) {
            return Some(AddrBase::Global(i as u32));
        }
        if let Some(&offset) = self.module_shared.get(name) {
            return Some(AddrBase::Var(Space::Shared, offset));
        }
        if self.dynamic_names.iter().any(|n| n == name) {
            return Some(AddrBase::DynamicShared);
        }
        None
    }
}

fn set_label(operand: &mut Operand, target: u32) {
    match operand {
        Operand::Label(t) => *t = target,
        Operand::Vector(items) => items.iter_mut().for_each(|o| set_label(o, target)),
        _ => {}
    }
}

/// The special register named `name`.
fn special(name: &str) -> Option<Special> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((reg, d)) = name.split_once('.') {
        let d = dim(d)?;
        return Some(match reg {
            "%tid" => Special::Tid(d),
            "%ntid" => Special::Ntid(d),
            "%ctaid" => Special::Ctaid(d),
            "%nctaid" => Special::Nctaid(d),
            "%cluster_ctaid" => Special::ClusterCtaid(d),
            "%cluster_nctaid" => Special::ClusterNctaid(d),
            "%clusterid" => Special::Clusterid(d),
            "%nclusterid" => Special::Nclusterid(d),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Special::Laneid,
        "%warpid" => Special::Warpid,
        "%nwarpid" => Special::Nwarpid,
        "%smid" => Special::Smid,
        "%nsmid" => Special::Nsmid,
        "%lanemask_eq" => Special::Lanemask(0),
        "%lanemask_lt" => Special::Lanemask(1),
        "%lanemask_le" => Special::Lanemask(2),
        "%lanemask_gt" => Special::Lanemask(3),
        "%lanemask_ge" => Special::Lanemask(4),
        "%clock" | "%clock64" | "%globaltimer" | "%globaltimer_lo" => Special::Clock,
        "%dynamic_smem_size" => Special::DynamicSmemSize,
        "%total_smem_size" => Special::TotalSmemSize,
        "%cluster_ctarank" => Special::ClusterCtarank,
        "%cluster_nctarank" => Special::ClusterNctarank,
        "%is_explicit_cluster" => Special::IsExplicitCluster,
        "%gridid" => Special::Gridid,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inline asm leaves the same labels in every `{ … }` block; a branch must reach the label
    /// of its own block, not a later block's (the upstream wgmma GEMM jumped over its whole
    /// main loop when labels were function-wide).
    #[test]
    fn labels_are_scoped_by_block() {
        let m = parse_module(
            ".version 8.4\n.target sm_90a\n.address_size 64\n\
             .visible .entry k()\n{\n.reg .pred %p<2>;\n\
             { @%p1 bra DONE; DONE: }\n\
             { @%p1 bra DONE; bra.uni OUT; DONE: }\n\
             OUT: ret;\n}\n",
        )
        .unwrap();
        let target = |i: usize| match &m.kernels[0].insts[i].operands[0] {
            Operand::Label(t) => *t,
            o => panic!("{o:?}"),
        };
        assert_eq!(target(0), 1, "the first block's DONE");
        assert_eq!(target(1), 3, "the second block's DONE");
        assert_eq!(target(2), 3, "OUT, in the body");
        let twice = parse_module(
            ".version 8.4\n.target sm_90a\n.address_size 64\n\
             .visible .entry k()\n{\nL: ret;\nL: ret;\n}\n",
        );
        assert!(
            matches!(twice, Err(EmuError::Parse { line: 7, .. })),
            "{twice:?}"
        );
    }
}
