//! The PTX tokenizer: words (opcodes, directives, registers, labels — dots and `%`/`$`
//! included), numbers, strings and punctuation, each with its 1-based line.

use crate::error::EmuError;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An identifier-like word: `ld.global.b32`, `.reg`, `%r1`, `%tid.x`, `$L__BB0_2`, `_`.
    Word(String),
    /// An integer literal (decimal, hex `0x…`, octal `0…`, binary `0b…`), as written sign aside.
    Int(i128),
    /// A float literal: `0fXXXXXXXX` (f32 bits) or `0dXXXXXXXXXXXXXXXX` (f64 bits) or decimal.
    Float(FloatLit),
    /// A string literal (`.pragma "nounroll"`).
    Str(String),
    /// One punctuation character: `, ; : [ ] { } ( ) < > + - @ ! | =`.
    Punct(char),
}

/// A float literal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatLit {
    /// `0f` + 8 hex digits: f32 bits.
    F32Bits(u32),
    /// `0d` + 16 hex digits: f64 bits.
    F64Bits(u64),
    /// A decimal literal such as `1.5`.
    Decimal(f64),
}

/// A token and its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// 1-based line.
    pub line: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%' | '.')
}

/// Splits PTX text into tokens, dropping `//` and `/* */` comments.
pub fn tokenize(text: &str) -> Result<Vec<Token>, EmuError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let err = |line, message: String| EmuError::Parse { line, message };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(err(start, "unterminated `/*` comment".into()));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\n' {
                    return Err(err(line, "unterminated string".into()));
                }
                i += 1;
            }
            tokens.push(Token {
                tok: Tok::Str(chars[start..i].iter().collect()),
                line,
            });
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            // Exponents of decimal floats (`1.5e-3`).
            if i < chars.len()
                && matches!(chars[i], '-' | '+')
                && chars[i - 1].eq_ignore_ascii_case(&'e')
                && chars[start..i].contains(&'.')
            {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = chars[start..i].iter().collect();
            tokens.push(Token {
                tok: number(&s).ok_or_else(|| err(line, format!("bad number `{s}`")))?,
                line,
            });
        } else if is_word_start(c) {
            let start = i;
            // `::` belongs to words (`shared::cta`, `mbarrier::complete_tx::bytes`).
            while i < chars.len()
                && (is_word_char(chars[i])
                    || (chars[i] == ':' && chars.get(i + 1) == Some(&':'))
                    || (chars[i] == ':' && i > 0 && chars[i - 1] == ':'))
            {
                i += 1;
            }
            tokens.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                line,
            });
        } else if ",;:[]{}()<>+-@!|=".contains(c) {
            tokens.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(err(line, format!("unexpected character `{c}`")));
        }
    }
    Ok(tokens)
}

/// A numeric literal as PTX writes it.
fn number(s: &str) -> Option<Tok> {
    let (body, unsigned) = match s.strip_suffix('U') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let _ = unsigned;
    if let Some(h) = body.strip_prefix("0f").or_else(|| body.strip_prefix("0F"))
        && h.len() == 8
    {
        return u32::from_str_radix(h, 16)
            .ok()
            .map(|b| Tok::Float(FloatLit::F32Bits(b)));
    }
    if let Some(h) = body.strip_prefix("0d").or_else(|| body.strip_prefix("0D"))
        && h.len() == 16
    {
        return u64::from_str_radix(h, 16)
            .ok()
            .map(|b| Tok::Float(FloatLit::F64Bits(b)));
    }
    if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return i128::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        return i128::from_str_radix(b, 2).ok().map(Tok::Int);
    }
    if body.contains('.') || body.contains('e') || body.contains('E') {
        return body
            .parse::<f64>()
            .ok()
            .map(|v| Tok::Float(FloatLit::Decimal(v)));
    }
    if body.len() > 1 && body.starts_with('0') {
        return i128::from_str_radix(&body[1..], 8).ok().map(Tok::Int);
    }
    body.parse::<i128>().ok().map(Tok::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_numbers_and_comments() {
        let t = tokenize("ld.global.b32 %r1, [%rd2+-16]; // x\n/* y\n */ mov.b32 %r2, 0f3F800000;")
            .unwrap();
        let words: Vec<_> = t.iter().map(|t| (t.tok.clone(), t.line)).collect();
        assert_eq!(words[0], (Tok::Word("ld.global.b32".into()), 1));
        assert!(words.contains(&(Tok::Int(16), 1)));
        assert_eq!(
            words[words.len() - 2],
            (Tok::Float(FloatLit::F32Bits(0x3F80_0000)), 3)
        );
        assert_eq!(number("0x10"), Some(Tok::Int(16)));
        assert_eq!(number("010"), Some(Tok::Int(8)));
    }
}
