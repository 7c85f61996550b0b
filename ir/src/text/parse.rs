//! Parses the text format (grammar in `text/mod.rs`) back into a [`Graph`].
//!
//! Two passes. The first reads line by line, checking syntax and recording every definition,
//! so a duplicate name is reported where it is written. The second resolves references: an op
//! may read any input or parameter, wherever its line is (they are graph-level), but only
//! results of ops before it, because op lines are the program order. Shapes and attributes are
//! not checked here; callers run `verify`, whose errors name the op.
//!
//! The value arena is built in printing order (inputs, parameters, op results), so parsing a
//! printed graph gives back the same graph whenever its arena was in that order already.

use super::lex::{Sigil, Tok, Token, lex_line};
use super::print::is_bare_name;
use crate::policy::keys;
use crate::{
    Attr, Attrs, DType, Graph, Op, OpKind, Precision, PrecisionOverride, PrecisionPolicy, Role,
    ScaleFormat, TensorType, ValueId,
};
use std::collections::HashMap;

/// A parse error at a 1-based line and column.
pub type ParseError = crate::LocatedError;

type Result<T> = std::result::Result<T, ParseError>;

/// Parses text into a graph. Does not verify it: run `verify` on the result.
pub fn parse(text: &str) -> Result<Graph> {
    let mut p = Parser::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let (toks, end_col) = lex_line(raw, line)?;
        if toks.is_empty() {
            continue;
        }
        p.item(Line {
            toks: &toks,
            pos: 0,
            line,
            end_col,
        })?;
    }
    p.finish()
}

/// A name as the printer writes it, for messages: `%x`, `@w`, `%"a b"`.
fn display_name(sigil: Sigil, name: &str) -> String {
    if is_bare_name(name) {
        format!("{}{name}", sigil.char())
    } else {
        format!("{}{name:?}", sigil.char())
    }
}

/// A name as written in a reference, with where it was written.
#[derive(Debug)]
struct Ref {
    sigil: Sigil,
    name: String,
    line: usize,
    col: usize,
}

impl Ref {
    fn err(&self, message: String) -> ParseError {
        ParseError {
            line: self.line,
            col: self.col,
            message,
        }
    }

    fn display(&self) -> String {
        display_name(self.sigil, &self.name)
    }
}

/// A declared value: an input, parameter or op result.
struct Decl {
    name: String,
    ty: TensorType,
}

/// An op line before its operands are resolved.
struct OpItem {
    kind: OpKind,
    results: Vec<Decl>,
    operands: Vec<Ref>,
    attrs: Attrs,
    role: Role,
    precision: Option<Precision>,
}

/// Where a name is defined.
#[derive(Debug, Clone, Copy)]
enum Def {
    Input(usize),
    Param(usize),
    Result { op: usize, result: usize },
}

/// The first pass's state: the header and every item line, unresolved.
#[derive(Default)]
struct Parser {
    name: Option<String>,
    policy: PrecisionPolicy,
    policy_line: Option<usize>,
    /// Set by the first input, param, op or output line; header lines may not follow.
    body_started: bool,
    inputs: Vec<Decl>,
    params: Vec<Decl>,
    ops: Vec<OpItem>,
    outputs: Vec<Ref>,
    /// Every defined name, where, and on which line.
    defs: HashMap<String, (Def, usize)>,
}

impl Parser {
    /// Parses one non-empty line.
    fn item(&mut self, mut l: Line<'_>) -> Result<()> {
        let first = l.toks[0].tok.clone();
        let keyword = match &first {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        };
        if self.name.is_none() {
            if keyword != Some("graph") {
                return Err(l.expected("`graph \"name\"`"));
            }
            l.pos += 1;
            self.name = Some(l.string("the graph name, quoted")?);
            return l.end();
        }
        match keyword {
            Some("graph") => Err(l.err_at(
                l.toks[0].col,
                "a second `graph` line (a file holds one graph)".into(),
            )),
            Some("policy") => self.policy_line(l),
            Some("override") => self.override_line(l),
            Some("input") => {
                self.body_started = true;
                l.pos += 1;
                let (name, col) = l.decl(Sigil::Value, "an input")?;
                l.end()?;
                self.define(&name, Def::Input(self.inputs.len()), Sigil::Value, l.line, col)?;
                self.inputs.push(name);
                Ok(())
            }
            Some("param") => {
                self.body_started = true;
                l.pos += 1;
                let (name, col) = l.decl(Sigil::Param, "a parameter")?;
                l.end()?;
                self.define(&name, Def::Param(self.params.len()), Sigil::Param, l.line, col)?;
                self.params.push(name);
                Ok(())
            }
            Some("output") => {
                self.body_started = true;
                l.pos += 1;
                let r = l.name("the output's %name or @name")?;
                l.end()?;
                self.outputs.push(r);
                Ok(())
            }
            _ if matches!(first, Tok::Name(..)) => {
                self.body_started = true;
                self.op_line(l)
            }
            _ => Err(l.expected(
                "`input`, `param`, `output`, `policy`, `override` or an op line (`%name: type = kind(…) role=…`)",
            )),
        }
    }

    fn define(
        &mut self,
        decl: &Decl,
        def: Def,
        sigil: Sigil,
        line: usize,
        col: usize,
    ) -> Result<()> {
        if let Some(&(_, first)) = self.defs.get(&decl.name) {
            return Err(ParseError {
                line,
                col,
                message: format!(
                    "duplicate name {} (first defined on line {first})",
                    display_name(sigil, &decl.name)
                ),
            });
        }
        self.defs.insert(decl.name.clone(), (def, line));
        Ok(())
    }

    fn policy_line(&mut self, mut l: Line<'_>) -> Result<()> {
        let col = l.toks[0].col;
        if let Some(first) = self.policy_line {
            return Err(l.err_at(
                col,
                format!("a second `policy` line (the first is on line {first})"),
            ));
        }
        if self.body_started || !self.policy.overrides.is_empty() {
            return Err(l.err_at(
                col,
                "`policy` must come right after `graph`, before `override`, `input`, `param`, op and `output` lines".into(),
            ));
        }
        self.policy_line = Some(l.line);
        l.pos += 1;
        let mut seen: Vec<&str> = Vec::new();
        while !l.at_end() {
            let (key, kc) = l.word("a policy key (`key=value`)")?;
            let Some(&key) = keys::ALL.iter().find(|&&k| k == key) else {
                return Err(l.err_at(
                    kc,
                    format!(
                        "unknown policy key `{key}` (expected one of {})",
                        keys::ALL.join(", ")
                    ),
                ));
            };
            if seen.contains(&key) {
                return Err(l.err_at(kc, format!("duplicate policy key `{key}`")));
            }
            seen.push(key);
            l.punct('=')?;
            let p = &mut self.policy;
            match key {
                keys::KEEP_HIGH => p.keep_high = l.list('[', ']', |l| l.role())?,
                keys::HIGH => p.high = l.dtype()?,
                keys::FP8_FORMAT => p.fp8_format = l.dtype()?,
                keys::ACT_TILE => p.act_tile = l.positive(key)?,
                keys::WEIGHT_BLOCK => p.weight_block = l.positive(key)?,
                keys::PROMOTE_INTERVAL => p.promote_interval = l.positive(key)?,
                _ => {
                    let (w, c) = l.word("a scale format (f32 or ue8m0)")?;
                    p.scale_format = ScaleFormat::parse(w).ok_or_else(|| {
                        l.err_at(
                            c,
                            format!("unknown scale format `{w}` (expected f32 or ue8m0)"),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    fn override_line(&mut self, mut l: Line<'_>) -> Result<()> {
        if self.body_started {
            return Err(l.err_at(
                l.toks[0].col,
                "`override` lines belong to the header, before `input`, `param`, op and `output` lines".into(),
            ));
        }
        l.pos += 1;
        let pattern = l.string("the override's glob, quoted")?;
        let dtype = l.dtype()?;
        l.end()?;
        self.policy
            .overrides
            .push(PrecisionOverride { pattern, dtype });
        Ok(())
    }

    fn op_line(&mut self, mut l: Line<'_>) -> Result<()> {
        let mut results = Vec::new();
        loop {
            results.push(l.decl(Sigil::Value, "an op result")?);
            if !l.eat(',') {
                break;
            }
        }
        l.punct('=')?;
        let (k, kc) = l.word("an op kind")?;
        let kind: OpKind = k.parse().map_err(|e| l.err_at(kc, format!("{e}")))?;
        let want = kind.num_results();
        if results.len() != want {
            return Err(l.err_at(
                kc,
                format!(
                    "{kind} has {want} result{}, but {} {} declared",
                    if want == 1 { "" } else { "s" },
                    results.len(),
                    if results.len() == 1 { "is" } else { "are" }
                ),
            ));
        }
        let operands = l.list('(', ')', |l| l.name("an operand (%name or @name)"))?;
        let mut attrs = Attrs::new();
        if l.peek_punct('{') {
            l.list('{', '}', |l| {
                let (key, kc) = l.word("an attribute name")?;
                if attrs.get(key).is_some() {
                    return Err(l.err_at(kc, format!("duplicate attribute `{key}`")));
                }
                l.punct('=')?;
                let value = l.attr_value()?;
                attrs.set(key, value);
                Ok(())
            })?;
        }

        let mut role = None;
        let mut compute = None;
        let mut accumulate = None;
        while !l.at_end() {
            let (key, kc) = l.word("`role=`, `compute=` or `accumulate=`")?;
            let slot_taken = match key {
                "role" => role.is_some(),
                "compute" => compute.is_some(),
                "accumulate" => accumulate.is_some(),
                _ => {
                    return Err(l.err_at(
                        kc,
                        format!(
                            "unknown op field `{key}` (expected role=, compute= or accumulate=)"
                        ),
                    ));
                }
            };
            if slot_taken {
                return Err(l.err_at(kc, format!("duplicate `{key}=`")));
            }
            l.punct('=')?;
            match key {
                "role" => role = Some(l.role()?),
                "compute" => compute = Some(l.dtype()?),
                _ => accumulate = Some((l.dtype()?, kc)),
            }
        }
        let Some(role) = role else {
            return Err(l.err_at(l.end_col, "missing `role=…` (every op has a role)".into()));
        };
        let precision = match (compute, accumulate) {
            (Some(compute), acc) => Some(Precision {
                compute,
                accumulate: acc.map(|(d, _)| d),
            }),
            (None, Some((_, ac))) => {
                return Err(l.err_at(ac, "`accumulate=` needs `compute=` before it".into()));
            }
            (None, None) => None,
        };

        let op = self.ops.len();
        for (result, (decl, col)) in results.iter().enumerate() {
            self.define(decl, Def::Result { op, result }, Sigil::Value, l.line, *col)?;
        }
        self.ops.push(OpItem {
            kind,
            results: results.into_iter().map(|(d, _)| d).collect(),
            operands,
            attrs,
            role,
            precision,
        });
        Ok(())
    }

    /// Builds the graph, resolving every reference; reports the earliest bad one.
    fn finish(self) -> Result<Graph> {
        let Some(name) = self.name else {
            return Err(ParseError {
                line: 1,
                col: 1,
                message: "expected `graph \"name\"`, found end of file".into(),
            });
        };
        let mut g = Graph::new(name);
        g.policy = self.policy;
        for d in self.inputs {
            g.add_input(d.name, d.ty);
        }
        for d in self.params {
            g.add_param(d.name, d.ty);
        }
        let n_inputs = g.inputs.len();
        let mut result_ids: Vec<Vec<ValueId>> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let ids = op
                .results
                .iter()
                .map(|d| g.add_value(d.name.clone(), d.ty.clone()))
                .collect();
            result_ids.push(ids);
        }

        let defs = &self.defs;
        let resolve = |r: &Ref, reader: Option<usize>| -> Result<ValueId> {
            let Some(&(def, _)) = defs.get(&r.name) else {
                return Err(r.err(format!("undefined value {}", r.display())));
            };
            if let (Def::Result { op, .. }, Some(reader)) = (def, reader)
                && op >= reader
            {
                return Err(r.err(format!(
                    "{} is used before it is defined (a cycle, or ops out of order)",
                    r.display()
                )));
            }
            let is_param = matches!(def, Def::Param(_));
            match (r.sigil, is_param) {
                (Sigil::Value, true) => Err(r.err(format!(
                    "{} names a parameter: write {}",
                    r.display(),
                    display_name(Sigil::Param, &r.name)
                ))),
                (Sigil::Param, false) => Err(r.err(format!(
                    "{} is not a parameter: write {}",
                    r.display(),
                    display_name(Sigil::Value, &r.name)
                ))),
                _ => Ok(match def {
                    Def::Input(i) => ValueId(i as u32),
                    Def::Param(i) => ValueId((n_inputs + i) as u32),
                    Def::Result { op, result } => result_ids[op][result],
                }),
            }
        };

        let mut earliest: Option<ParseError> = None;
        let mut resolve_or_note = |r: &Ref, reader: Option<usize>| {
            resolve(r, reader).unwrap_or_else(|e| {
                if earliest
                    .as_ref()
                    .is_none_or(|f| (e.line, e.col) < (f.line, f.col))
                {
                    earliest = Some(e);
                }
                ValueId(0)
            })
        };
        for (i, (op, results)) in self.ops.into_iter().zip(&result_ids).enumerate() {
            let operands = op
                .operands
                .iter()
                .map(|r| resolve_or_note(r, Some(i)))
                .collect();
            g.ops.push(Op {
                kind: op.kind,
                operands,
                results: results.clone(),
                attrs: op.attrs,
                role: op.role,
                precision: op.precision,
            });
        }
        for r in &self.outputs {
            let v = resolve_or_note(r, None);
            g.outputs.push(v);
        }
        match earliest {
            Some(e) => Err(e),
            None => Ok(g),
        }
    }
}

/// A cursor over the tokens of one line.
struct Line<'a> {
    toks: &'a [Token],
    pos: usize,
    line: usize,
    /// The column just past the last token, for "found end of line" errors.
    end_col: usize,
}

impl<'a> Line<'a> {
    fn err_at(&self, col: usize, message: String) -> ParseError {
        ParseError {
            line: self.line,
            col,
            message,
        }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.pos)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn col(&self) -> usize {
        self.peek().map_or(self.end_col, |t| t.col)
    }

    /// "expected `what`, found …" at the current token.
    fn expected(&self, what: &str) -> ParseError {
        let found = match self.peek().map(|t| &t.tok) {
            None => "end of line".to_string(),
            Some(Tok::Word(w)) => format!("`{}`", clip(w)),
            Some(Tok::Str(s)) => format!("string {:?}", clip(s)),
            Some(Tok::Name(sigil, n)) => display_name(*sigil, clip(n)),
            Some(Tok::Punct(c)) => format!("`{c}`"),
        };
        self.err_at(self.col(), format!("expected {what}, found {found}"))
    }

    fn end(&self) -> Result<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }

    fn peek_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek_punct(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn punct(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn word(&mut self, what: &str) -> Result<(&'a str, usize)> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                col,
            }) => {
                self.pos += 1;
                Ok((w, *col))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(self.expected(what)),
        }
    }

    fn name(&mut self, what: &str) -> Result<Ref> {
        match self.peek() {
            Some(Token {
                tok: Tok::Name(sigil, name),
                col,
            }) => {
                if name.is_empty() {
                    return Err(self.err_at(*col, "a name cannot be empty".into()));
                }
                self.pos += 1;
                Ok(Ref {
                    sigil: *sigil,
                    name: name.clone(),
                    line: self.line,
                    col: *col,
                })
            }
            _ => Err(self.expected(what)),
        }
    }

    /// `%name: type` (or `@name: type` for parameters) and the name's column.
    fn decl(&mut self, sigil: Sigil, what: &str) -> Result<(Decl, usize)> {
        let r = self.name(&format!("{what}'s {}name", sigil.char()))?;
        if r.sigil != sigil {
            return Err(r.err(format!(
                "{what} is written {}, not {}",
                display_name(sigil, &r.name),
                r.display()
            )));
        }
        self.punct(':')?;
        let ty = self.ty()?;
        Ok((Decl { name: r.name, ty }, r.col))
    }

    /// `open item, item, … close`; the list may be empty.
    fn list<T>(
        &mut self,
        open: char,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.punct(open)?;
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat(close) {
                return Ok(items);
            }
            if !self.eat(',') {
                return Err(self.expected(&format!("`,` or `{close}`")));
            }
        }
    }

    fn dtype(&mut self) -> Result<DType> {
        let (w, c) = self.word("a dtype")?;
        w.parse().map_err(|e| self.err_at(c, format!("{e}")))
    }

    fn role(&mut self) -> Result<Role> {
        let (w, c) = self.word("a role")?;
        w.parse().map_err(|e| self.err_at(c, format!("{e}")))
    }

    /// `dtype[d0, d1, …]`.
    fn ty(&mut self) -> Result<TensorType> {
        let dtype = self.dtype()?;
        let dims = self.list('[', ']', |l| {
            let (w, c) = l.word("a dimension")?;
            if !w.bytes().all(|b| b.is_ascii_digit()) {
                return Err(l.err_at(
                    c,
                    format!(
                        "expected a dimension (a non-negative integer), found `{}`",
                        clip(w)
                    ),
                ));
            }
            w.parse::<u64>().map_err(|_| {
                l.err_at(
                    c,
                    format!("dimension `{}` does not fit in 64 bits", clip(w)),
                )
            })
        })?;
        Ok(TensorType::new(dtype, dims))
    }

    /// A policy integer: positive and within u32.
    fn positive(&mut self, key: &str) -> Result<u32> {
        let (w, c) = self.word("a positive integer")?;
        match w.parse::<u32>() {
            Ok(n) if n > 0 && w.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(self.err_at(
                c,
                format!(
                    "`{key}` must be a positive integer below 2^32, not `{}`",
                    clip(w)
                ),
            )),
        }
    }

    fn int(&mut self) -> Result<i64> {
        let (w, c) = self.word("an integer")?;
        if !is_int_word(w) {
            return Err(self.err_at(c, format!("expected an integer, found `{}`", clip(w))));
        }
        parse_int(w).map_err(|m| self.err_at(c, m))
    }

    fn attr_value(&mut self) -> Result<Attr> {
        let Some(t) = self.peek() else {
            return Err(self.expected("an attribute value"));
        };
        match &t.tok {
            Tok::Punct('[') => Ok(Attr::Ints(self.list('[', ']', |l| l.int())?)),
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Attr::Str(s.clone()))
            }
            Tok::Word(w) => {
                self.pos += 1;
                word_attr(w).map_err(|m| self.err_at(t.col, m))
            }
            _ => Err(self.expected("an attribute value")),
        }
    }
}

/// Shortens garbage echoed in messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `-?[0-9]+`.
fn is_int_word(w: &str) -> bool {
    let digits = w.strip_prefix('-').unwrap_or(w);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse_int(w: &str) -> std::result::Result<i64, String> {
    w.parse()
        .map_err(|_| format!("integer `{}` does not fit in 64 bits", clip(w)))
}

/// The infinities and NaN as Rust's `{:?}` prints them.
const SPECIAL_FLOATS: [&str; 4] = ["inf", "-inf", "+inf", "NaN"];

/// A bare attribute value: boolean, dtype, integer or float.
fn word_attr(w: &str) -> std::result::Result<Attr, String> {
    match w {
        "true" => return Ok(Attr::Bool(true)),
        "false" => return Ok(Attr::Bool(false)),
        _ => {}
    }
    if let Ok(d) = w.parse::<DType>() {
        return Ok(Attr::DType(d));
    }
    if is_int_word(w) {
        return parse_int(w).map(Attr::Int);
    }
    let special = SPECIAL_FLOATS.contains(&w);
    let unsigned = w.strip_prefix(['-', '+']).unwrap_or(w);
    let numeric = unsigned.starts_with(|c: char| c.is_ascii_digit())
        || (unsigned.starts_with('.') && unsigned[1..].starts_with(|c: char| c.is_ascii_digit()));
    if !special && !numeric {
        return Err(format!(
            "expected an attribute value (an integer, a float, true or false, a dtype, a \"string\" or [integers]), found `{}`",
            clip(w)
        ));
    }
    match w.parse::<f64>() {
        Ok(f) if f.is_infinite() && !special => Err(format!("float `{}` is out of range", clip(w))),
        Ok(f) => Ok(Attr::Float(f)),
        Err(_) => Err(format!("invalid number `{}`", clip(w))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::print;
    use crate::{GraphBuilder, verify};

    /// Every syntax feature, in the printer's canonical form; it also verifies.
    const TOUR: &str = r#"graph "syntax \"tour\""
policy keep_high=[embedding, head, norm] high=f32 fp8_format=f8e5m2 act_tile=64 weight_block=128 promote_interval=32 scale_format=ue8m0
override "model.layers.0.*" bf16
override "lm_head" f32
input %input_ids: i32[1, 4]
input %"odd name #1\t\u{301}": f32[4, 8]
input %temp: f32[]
param @model.embed_tokens.weight: bf16[16, 8]
param @model.norm.weight: bf16[8]
param @model.layers.0.mlp.experts.{e}.up_proj.weight: bf16[4, 8, 8]
param @gate/weight: bf16[4, 8]
%embed: bf16[1, 4, 8] = embedding(%input_ids, @model.embed_tokens.weight) role=embedding
%flat: bf16[4, 8] = reshape(%embed) {shape = [4, 8]} role=other
%norm: bf16[4, 8] = rms_norm(%flat, @model.norm.weight) {eps = 1e-6} role=norm compute=f32
%logits: bf16[4, 4] = linear(%norm, @gate/weight) role=gating compute=bf16 accumulate=f32
%route: f32[4, 2], %route.indices: i32[4, 2] = moe_topk(%logits) {n_groups = 2, norm_topk_prob = true, route_scale = 2.5, score_func = "sigmoid", top_k = 2, topk_groups = 1} role=gating
%up: bf16[4, 2, 8] = grouped_linear(%norm, @model.layers.0.mlp.experts.{e}.up_proj.weight, %route.indices) role=expert compute=f8e5m2 accumulate=f32
%out: bf16[4, 8] = moe_combine(%up, %route) role=expert
%q: f8e4m3[4, 8], %q.scale: f32[4, 1] = quantize(%"odd name #1\t\u{301}") {block = [1, 128], dtype = f8e4m3, scale_format = "f32"} role=other
%sm: f32[4, 8] = softmax(%"odd name #1\t\u{301}") {axis = -1} role=attention
%mm: f32[4, 4] = matmul(%sm, %sm) {transpose_b = true} role=other
%"a \"quoted\" result": bf16[4, 8] = add(%out, %flat) role=residual
%s: f32[] = reshape(%temp) {shape = []} role=other
%c: bf16[] = cast(%s) {dtype = bf16} role=other
output %out
output @gate/weight
output %"a \"quoted\" result"
"#;

    fn err(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Ok(_) => panic!("parsed, but expected an error:\n{text}"),
            Err(e) => (e.line, e.col, e.message),
        }
    }

    /// `err` with a `graph` header line prepended: lines of `body` start at 2.
    fn body_err(body: &str) -> (usize, usize, String) {
        err(&format!("graph \"g\"\n{body}"))
    }

    #[test]
    fn tour_round_trips() {
        let g = parse(TOUR).unwrap();
        assert_eq!(print(&g), TOUR);
        assert_eq!(g.name, "syntax \"tour\"");
        assert_eq!(g.name(g.inputs[1]), "odd name #1\t\u{301}");
        assert_eq!(g.ops.len(), 13);
        assert_eq!(g.ops[4].results.len(), 2);
        assert_eq!(
            g.policy.keep_high,
            [Role::Embedding, Role::Head, Role::Norm]
        );
        assert_eq!(g.policy.scale_format, ScaleFormat::Ue8m0);
        assert_eq!(g.policy.overrides.len(), 2);
        assert_eq!(g.ops[2].precision.map(|p| p.accumulate), Some(None));
        assert!(g.ops[0].precision.is_none());
        assert_eq!(g.ops[8].attrs.int("axis"), Some(-1));
        assert!(g.is_param(g.outputs[1]));
        // The arena is in printing order: inputs, params, then results.
        let names: Vec<_> = g.values.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names[..4],
            [
                "input_ids",
                "odd name #1\t\u{301}",
                "temp",
                "model.embed_tokens.weight"
            ]
        );
        assert_eq!(names[7], "embed");
        verify(&g).unwrap();
    }

    #[test]
    fn comments_blank_lines_and_spacing_are_ignored() {
        let mut messy = String::from("# leading comment\n\n");
        for line in TOUR.lines() {
            // Respace around punctuation outside of strings: the tour's strings hold none of
            // `:,=()[]`, only `{`/`}`/`"` inside names, which we leave alone.
            let spaced: String = line
                .chars()
                .flat_map(|c| match c {
                    ':' | ',' | '(' | ')' | '[' | ']' => vec!['\t', c, ' ', ' '],
                    _ => vec![c],
                })
                .collect();
            messy.push_str("  ");
            messy.push_str(&spaced);
            // Alternate trailing comments with CRLF endings; blank lines in between.
            if messy.len() % 2 == 0 {
                messy.push_str("   # trailing comment, with %refs and \"quotes\n\n");
            } else {
                messy.push_str(" \t\r\n \n");
            }
        }
        let g = parse(&messy).unwrap();
        assert_eq!(print(&g), TOUR);
    }

    #[test]
    fn policy_keys_are_optional_and_unordered() {
        let g = parse("graph \"g\"\npolicy scale_format=ue8m0 keep_high=[] act_tile=32\n").unwrap();
        let want = PrecisionPolicy {
            keep_high: vec![],
            act_tile: 32,
            scale_format: ScaleFormat::Ue8m0,
            ..PrecisionPolicy::default()
        };
        assert_eq!(g.policy, want);
        assert_eq!(
            parse("graph \"g\"\n").unwrap().policy,
            PrecisionPolicy::default()
        );
        let g = parse("graph \"g\"\npolicy\noverride \"*\" f8e4m3\n").unwrap();
        assert_eq!(g.policy.overrides[0].dtype, DType::F8E4M3);
    }

    #[test]
    fn float_and_int_attrs_round_trip() {
        let floats = [
            0.5,
            100.0,
            1e-6,
            1e20,
            -0.0,
            2.5e-7,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let mut attrs = Attrs::new()
            .with("i_min", Attr::Int(i64::MIN))
            .with("i_max", Attr::Int(i64::MAX))
            .with("ints", Attr::Ints(vec![-3, 0, i64::MAX]))
            .with("none", Attr::Ints(vec![]))
            .with("f", Attr::Bool(false))
            .with("d", Attr::DType(DType::Bool));
        for (i, f) in floats.into_iter().enumerate() {
            attrs.set(&format!("x{i:02}"), Attr::Float(f));
        }
        let mut g = Graph::new("attrs");
        let x = g.add_input("x", TensorType::new(DType::F32, [2]));
        let y = g.add_value("y", TensorType::new(DType::F32, [2]));
        g.ops.push(Op {
            kind: OpKind::Silu,
            operands: vec![x],
            results: vec![y],
            attrs,
            role: Role::Other,
            precision: None,
        });
        g.outputs.push(y);
        let text = print(&g);
        let back = parse(&text).unwrap();
        assert_eq!(print(&back), text);
        // Attr compares floats by bits; only NaN's payload may differ.
        for (name, a) in g.ops[0].attrs.iter() {
            let b = back.ops[0].attrs.get(name).unwrap();
            match (a, b) {
                (Attr::Float(a), Attr::Float(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(a, b, "{name}"),
            }
        }
    }

    #[test]
    fn builder_graphs_round_trip() {
        // Canonical arena order (inputs, params, ops): the graph itself comes back.
        let mut b = GraphBuilder::new("mlp");
        let x = b.input("x", TensorType::new(DType::Bf16, [4, 16])).unwrap();
        let w_up = b
            .param("up.weight", TensorType::new(DType::Bf16, [32, 16]))
            .unwrap();
        let w_down = b
            .param("down.weight", TensorType::new(DType::Bf16, [16, 32]))
            .unwrap();
        let up = b
            .op(
                OpKind::Linear,
                "up",
                Role::Ffn,
                &[x, w_up],
                Attrs::new(),
                None,
            )
            .unwrap();
        let act = b
            .op(OpKind::Silu, "act", Role::Ffn, &[up], Attrs::new(), None)
            .unwrap();
        let down = b
            .op(
                OpKind::Linear,
                "down",
                Role::Ffn,
                &[act, w_down],
                Attrs::new(),
                None,
            )
            .unwrap();
        b.output(down);
        let g = b.finish();
        assert_eq!(parse(&print(&g)).unwrap(), g);

        // Params created lazily between ops: the arena differs, the text does not.
        let mut b = GraphBuilder::new("lazy");
        let x = b.input("x", TensorType::new(DType::F32, [2, 8])).unwrap();
        let w = b
            .param("n.weight", TensorType::new(DType::F32, [8]))
            .unwrap();
        let n = b
            .op(
                OpKind::RmsNorm,
                "n",
                Role::Norm,
                &[x, w],
                Attrs::new().with("eps", Attr::Float(1e-5)),
                None,
            )
            .unwrap();
        let w2 = b
            .param("p.weight", TensorType::new(DType::F32, [4, 8]))
            .unwrap();
        let p = b
            .op(
                OpKind::Linear,
                "p",
                Role::Head,
                &[n, w2],
                Attrs::new(),
                None,
            )
            .unwrap();
        b.output(p);
        let g = b.finish();
        let text = print(&g);
        let back = parse(&text).unwrap();
        assert_eq!(print(&back), text);
        verify(&back).unwrap();
    }

    #[test]
    fn items_may_come_in_any_order() {
        let text = "graph \"g\"\noutput %y\n%y: f32[2] = silu(%x) role=other\ninput %x: f32[2]\n";
        let g = parse(text).unwrap();
        assert_eq!(
            print(&g),
            "graph \"g\"\npolicy keep_high=[embedding, head, gating, norm, attention] high=bf16 \
             fp8_format=f8e4m3 act_tile=128 weight_block=128 promote_interval=128 scale_format=f32\n\
             input %x: f32[2]\n%y: f32[2] = silu(%x) role=other\noutput %y\n"
        );
    }

    #[test]
    fn missing_header() {
        let want = "expected `graph \"name\"`, found end of file";
        assert_eq!(err(""), (1, 1, want.into()));
        assert_eq!(err("# just a comment\n\n"), (1, 1, want.into()));
        assert_eq!(
            err("input %x: f32[1]\n"),
            (1, 1, "expected `graph \"name\"`, found `input`".into())
        );
        assert_eq!(
            err("graph name\n"),
            (1, 7, "expected the graph name, quoted, found `name`".into())
        );
        assert_eq!(
            err("graph \"a\"\ngraph \"b\"\n"),
            (
                2,
                1,
                "a second `graph` line (a file holds one graph)".into()
            )
        );
    }

    #[test]
    fn policy_errors() {
        let keys =
            "keep_high, high, fp8_format, act_tile, weight_block, promote_interval, scale_format";
        assert_eq!(
            body_err("policy high=bf16 tile=3\n"),
            (
                2,
                18,
                format!("unknown policy key `tile` (expected one of {keys})")
            )
        );
        assert_eq!(
            body_err("policy high=bf16 high=f32\n"),
            (2, 18, "duplicate policy key `high`".into())
        );
        assert_eq!(
            body_err("policy high=b16\n"),
            (
                2,
                13,
                format!("{}", crate::dtype::UnknownDType("b16".into()))
            )
        );
        assert_eq!(
            body_err("policy scale_format=e8m0\n"),
            (
                2,
                21,
                "unknown scale format `e8m0` (expected f32 or ue8m0)".into()
            )
        );
        assert_eq!(
            body_err("policy keep_high=[norm, normal]\n"),
            (
                2,
                25,
                format!("{}", crate::role::UnknownRole("normal".into()))
            )
        );
        for bad in ["0", "-1", "4294967296", "1.5"] {
            assert_eq!(
                body_err(&format!("policy act_tile={bad}\n")),
                (
                    2,
                    17,
                    format!("`act_tile` must be a positive integer below 2^32, not `{bad}`")
                )
            );
        }
        assert_eq!(
            body_err("input %x: f32[1]\npolicy high=f32\n"),
            (
                3,
                1,
                "`policy` must come right after `graph`, before `override`, `input`, `param`, op and `output` lines"
                    .into()
            )
        );
        assert_eq!(
            body_err("policy\npolicy\n"),
            (
                3,
                1,
                "a second `policy` line (the first is on line 2)".into()
            )
        );
        assert_eq!(
            body_err("param @w: f32[1]\noverride \"*\" bf16\n"),
            (
                3,
                1,
                "`override` lines belong to the header, before `input`, `param`, op and `output` lines".into()
            )
        );
        assert_eq!(
            body_err("override \"*\" fp8\n"),
            (
                2,
                14,
                format!("{}", crate::dtype::UnknownDType("fp8".into()))
            )
        );
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            body_err("input %x: f64[1]\n"),
            (
                2,
                11,
                format!("{}", crate::dtype::UnknownDType("f64".into()))
            )
        );
        assert_eq!(
            body_err("input %x: f32[1, 18446744073709551616]\n"),
            (
                2,
                18,
                "dimension `18446744073709551616` does not fit in 64 bits".into()
            )
        );
        assert_eq!(
            body_err("input %x: f32[-1]\n"),
            (
                2,
                15,
                "expected a dimension (a non-negative integer), found `-1`".into()
            )
        );
        assert_eq!(
            body_err("input %x: f32[1 2]\n"),
            (2, 17, "expected `,` or `]`, found `2`".into())
        );
        assert_eq!(
            body_err("input %x: f32\n"),
            (2, 14, "expected `[`, found end of line".into())
        );
        assert_eq!(
            body_err("input @x: f32[1]\n"),
            (2, 7, "an input is written %x, not @x".into())
        );
        assert_eq!(
            body_err("param %w: f32[1]\n"),
            (2, 7, "a parameter is written @w, not %w".into())
        );
        assert_eq!(
            body_err("input %\"\": f32[1]\n"),
            (2, 7, "a name cannot be empty".into())
        );
        assert_eq!(
            body_err("input %x: f32[1] extra\n"),
            (2, 18, "expected end of line, found `extra`".into())
        );
        // The maximum fits.
        parse("graph \"g\"\ninput %x: f32[18446744073709551615]\n").unwrap();
    }

    const XY: &str = "graph \"g\"\ninput %x: f32[2]\nparam @w: f32[2]\n";

    fn op_err(op_line: &str) -> (usize, usize, String) {
        err(&format!("{XY}{op_line}\n"))
    }

    #[test]
    fn op_line_errors() {
        assert_eq!(
            op_err("%y: f32[2] = gelu(%x) role=ffn"),
            (
                4,
                14,
                format!("{}", crate::op::UnknownOpKind("gelu".into()))
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=mlp"),
            (4, 28, format!("{}", crate::role::UnknownRole("mlp".into())))
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x)"),
            (4, 22, "missing `role=…` (every op has a role)".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=other role=ffn"),
            (4, 34, "duplicate `role=`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=other precision=f32"),
            (
                4,
                34,
                "unknown op field `precision` (expected role=, compute= or accumulate=)".into()
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=other accumulate=f32"),
            (4, 34, "`accumulate=` needs `compute=` before it".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=other compute=f9"),
            (
                4,
                42,
                format!("{}", crate::dtype::UnknownDType("f9".into()))
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = 1, a = 2} role=other"),
            (4, 31, "duplicate attribute `a`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = yes} role=other"),
            (
                4,
                28,
                "expected an attribute value (an integer, a float, true or false, a dtype, a \"string\" or [integers]), found `yes`"
                    .into()
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = 9223372036854775808} role=other"),
            (
                4,
                28,
                "integer `9223372036854775808` does not fit in 64 bits".into()
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = [1, 2.5]} role=other"),
            (4, 32, "expected an integer, found `2.5`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = 1e999} role=other"),
            (4, 28, "float `1e999` is out of range".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a = 1.2.3} role=other"),
            (4, 28, "invalid number `1.2.3`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) {a 1} role=other"),
            (4, 26, "expected `=`, found `1`".into())
        );
        assert_eq!(
            op_err("%y: f32[2], %z: f32[2] = silu(%x) role=other"),
            (4, 26, "silu has 1 result, but 2 are declared".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = moe_topk(%x) role=gating"),
            (4, 14, "moe_topk has 2 results, but 1 is declared".into())
        );
        assert_eq!(
            op_err("@y: f32[2] = silu(%x) role=other"),
            (4, 1, "an op result is written %y, not @y".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x role=other"),
            (4, 22, "expected `,` or `)`, found `role`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] silu(%x) role=other"),
            (4, 12, "expected `=`, found `silu`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%x) role=other $"),
            (4, 34, "unexpected character `$`".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(% x) role=other"),
            (
                4,
                20,
                "expected a name after `%` (bare, or quoted as %\"…\")".into()
            )
        );
        assert_eq!(
            body_err("role=other\n"),
            (
                2,
                1,
                "expected `input`, `param`, `output`, `policy`, `override` or an op line (`%name: type = kind(…) role=…`), found `role`"
                    .into()
            )
        );
    }

    #[test]
    fn resolution_errors() {
        assert_eq!(
            op_err("%y: f32[2] = add(%x, %z) role=other\n%z: f32[2] = silu(%x) role=other"),
            (
                4,
                22,
                "%z is used before it is defined (a cycle, or ops out of order)".into()
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = silu(%y) role=other"),
            (
                4,
                19,
                "%y is used before it is defined (a cycle, or ops out of order)".into()
            )
        );
        assert_eq!(
            op_err("%y: f32[2] = add(%x, %nope) role=other"),
            (4, 22, "undefined value %nope".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = add(%x, %\"no pe\") role=other"),
            (4, 22, "undefined value %\"no pe\"".into())
        );
        // The earliest bad reference wins, whichever pass finds it.
        assert_eq!(
            op_err("output %nope\n%y: f32[2] = silu(%missing) role=other"),
            (4, 8, "undefined value %nope".into())
        );
        // Outputs may name results of ops on later lines.
        parse(&format!(
            "{XY}output %late\n%late: f32[2] = silu(%x) role=other\n"
        ))
        .unwrap();
        assert_eq!(
            op_err("%w: f32[2] = silu(%x) role=other"),
            (4, 1, "duplicate name %w (first defined on line 3)".into())
        );
        assert_eq!(
            op_err(
                "%y: f32[2] = silu(%x) role=other\n%q: f32[2], %y: i32[2] = quantize(%x) role=other"
            ),
            (5, 13, "duplicate name %y (first defined on line 4)".into())
        );
        assert_eq!(
            body_err("param @x: f32[1]\ninput %x: f32[1]\n"),
            (3, 7, "duplicate name %x (first defined on line 2)".into())
        );
        assert_eq!(
            op_err("output %nope"),
            (4, 8, "undefined value %nope".into())
        );
        assert_eq!(
            op_err("%y: f32[2] = mul(%x, %w) role=other"),
            (4, 22, "%w names a parameter: write @w".into())
        );
        assert_eq!(
            op_err("output @x"),
            (4, 8, "@x is not a parameter: write %x".into())
        );
    }

    /// Arbitrary input must give an error, never a panic.
    #[test]
    fn garbage_never_panics() {
        let chars: Vec<char> = TOUR.chars().collect();
        for n in 0..=chars.len() {
            let prefix: String = chars[..n].iter().collect();
            let _ = parse(&prefix);
        }
        // Replace each character by a few troublemakers.
        for (i, _) in chars.iter().enumerate().step_by(3) {
            for r in ['"', '\\', '%', '@', '{', '[', '#', '\n', '-', '9', 'é'] {
                let mut m = chars.clone();
                m[i] = r;
                let text: String = m.into_iter().collect();
                let _ = parse(&text);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..300 {
            let bytes: Vec<u8> = (0..seed % 200)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            // Without a `graph` line nothing parses: either a character the lexer refuses or
            // the missing header.
            let e = parse(&text).unwrap_err();
            assert!(
                e.message.starts_with("unexpected character")
                    || e.message.contains("expected `graph \"name\"`"),
                "{e}"
            );
            let _ = parse(&format!("graph \"g\"\n{text}"));
        }
        for (g, expected) in [
            ("\0", "1:1: unexpected character `\\0`"),
            ("graph", "1:6: expected the graph name, quoted"),
            ("graph \"", "1:7: unterminated string"),
            ("graph \"\\u{", "1:8: invalid escape in string"),
            (
                "graph \"\\u{ffffffffffffffff}\"",
                "1:8: invalid escape in string",
            ),
            (
                "graph \"g\"\ninput %x: f32[99999999999999999999999999]",
                "2:15: dimension `99999999999999999999999999` does not fit in 64 bits",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {a = -} role=other",
                "2:25: expected an attribute value",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {a = .} role=other",
                "2:25: expected an attribute value",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {a = -.e} role=other",
                "2:25: expected an attribute value",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {a = [} role=other",
                "2:26: expected an integer, found `}`",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {a = \"} role=other",
                "2:25: unterminated string",
            ),
            (
                "graph \"g\"\n%y: f32[] = silu() {= 1} role=other",
                "2:21: expected an attribute name, found `=`",
            ),
            (
                "graph \"g\"\n%: f32[] = silu() role=other",
                "2:2: expected a name after `%`",
            ),
            ("graph \"g\"\n%y", "2:3: expected `:`, found end of line"),
            (
                "graph \"g\"\n%y:",
                "2:4: expected a dtype, found end of line",
            ),
            (
                "graph \"g\"\noutput",
                "2:7: expected the output's %name or @name",
            ),
            (
                "graph \"g\"\npolicy keep_high",
                "2:17: expected `=`, found end of line",
            ),
            (
                "graph \"g\"\npolicy keep_high=[",
                "2:19: expected a role, found end of line",
            ),
        ] {
            let e = parse(g).unwrap_err().to_string();
            assert!(e.contains(expected), "{g:?}: {e}");
        }
    }
}
