//! Splits one line of the text format into tokens.
//!
//! The lexer is line-based because every item of the format is one line. It is slightly
//! context-sensitive: `{`, `}` and `/` belong to a name only right after a sigil (`@w.{e}.up`),
//! elsewhere `{`/`}` delimit an attribute block.

use super::parse::ParseError;

/// Which sigil a name was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sigil {
    /// `%`: an input or an op result.
    Value,
    /// `@`: a parameter.
    Param,
}

impl Sigil {
    /// The character written before the name.
    pub(super) fn char(self) -> char {
        match self {
            Sigil::Value => '%',
            Sigil::Param => '@',
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A keyword, dtype, role, op kind, attribute key or number (`-1`, `1e-6`, `inf`).
    Word(String),
    /// A double-quoted string, escapes resolved.
    Str(String),
    /// `%name` or `@name`, bare or quoted.
    Name(Sigil, String),
    /// One of `: , = ( ) [ ] { }`.
    Punct(char),
}

/// A token and the 1-based column of its first character.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub col: usize,
}

/// Characters of a bare name after a sigil (the printer's `is_bare_name`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '{' | '}' | '/')
}

/// Characters of a word: identifiers and numbers, including signs and exponents.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')
}

/// The tokens of `line` (number `line_no`, for errors) and the column just past its last
/// token, where "expected …, found end of line" errors point. A comment-only or blank line
/// gives no tokens.
pub(super) fn lex_line(line: &str, line_no: usize) -> Result<(Vec<Token>, usize), ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let err = |col: usize, message: String| ParseError {
        line: line_no,
        col,
        message,
    };
    let mut toks = Vec::new();
    let mut end_col = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let tok = match c {
            // `\r` so that CRLF files read like LF ones.
            ' ' | '\t' | '\r' => {
                i += 1;
                continue;
            }
            '#' => break,
            '"' => {
                let (s, next) = lex_string(&chars, i, line_no)?;
                i = next;
                Tok::Str(s)
            }
            '%' | '@' => {
                let sigil = if c == '%' { Sigil::Value } else { Sigil::Param };
                i += 1;
                if chars.get(i) == Some(&'"') {
                    let (s, next) = lex_string(&chars, i, line_no)?;
                    i = next;
                    Tok::Name(sigil, s)
                } else {
                    let start = i;
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                    if i == start {
                        return Err(err(
                            col + 1,
                            format!("expected a name after `{c}` (bare, or quoted as {c}\"…\")"),
                        ));
                    }
                    Tok::Name(sigil, chars[start..i].iter().collect())
                }
            }
            ':' | ',' | '=' | '(' | ')' | '[' | ']' | '{' | '}' => {
                i += 1;
                Tok::Punct(c)
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                Tok::Word(chars[start..i].iter().collect())
            }
            _ => {
                return Err(err(
                    col,
                    format!("unexpected character `{}`", c.escape_debug()),
                ));
            }
        };
        toks.push(Token { tok, col });
        end_col = i + 1;
    }
    Ok((toks, end_col))
}

/// Reads the string whose opening quote is at `chars[start]`, resolving the escapes Rust's
/// `{:?}` writes. Returns the string and the index just past the closing quote.
fn lex_string(chars: &[char], start: usize, line_no: usize) -> Result<(String, usize), ParseError> {
    let err = |i: usize, message: String| ParseError {
        line: line_no,
        col: i + 1,
        message,
    };
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(err(start, "unterminated string".into()));
        };
        match c {
            '"' => return Ok((s, i + 1)),
            '\\' => {
                let esc = i;
                let bad = || {
                    err(esc, "invalid escape in string (expected one of \\\" \\\\ \\n \\r \\t \\0 \\' \\u{…})".into())
                };
                let Some(&e) = chars.get(i + 1) else {
                    return Err(err(start, "unterminated string".into()));
                };
                i += 2;
                s.push(match e {
                    '"' => '"',
                    '\\' => '\\',
                    '\'' => '\'',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    'u' => {
                        if chars.get(i) != Some(&'{') {
                            return Err(bad());
                        }
                        let digits_start = i + 1;
                        let mut j = digits_start;
                        while j < chars.len() && chars[j].is_ascii_hexdigit() {
                            j += 1;
                        }
                        let n = j - digits_start;
                        if chars.get(j) != Some(&'}') || n == 0 || n > 6 {
                            return Err(bad());
                        }
                        let hex: String = chars[digits_start..j].iter().collect();
                        i = j + 1;
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                err(esc, format!("\\u{{{hex}}} is not a Unicode scalar value"))
                            })?
                    }
                    _ => return Err(bad()),
                });
            }
            _ => {
                s.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str) -> Vec<Tok> {
        lex_line(line, 1)
            .unwrap()
            .0
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn names_words_and_comments() {
        assert_eq!(
            toks("%a.{e}/b-c: bf16[1, 2] # comment %x"),
            vec![
                Tok::Name(Sigil::Value, "a.{e}/b-c".into()),
                Tok::Punct(':'),
                Tok::Word("bf16".into()),
                Tok::Punct('['),
                Tok::Word("1".into()),
                Tok::Punct(','),
                Tok::Word("2".into()),
                Tok::Punct(']'),
            ]
        );
        assert_eq!(
            toks("{eps = -1e-6}"),
            vec![
                Tok::Punct('{'),
                Tok::Word("eps".into()),
                Tok::Punct('='),
                Tok::Word("-1e-6".into()),
                Tok::Punct('}'),
            ]
        );
        assert!(toks("   \t# only a comment").is_empty());
    }

    #[test]
    fn string_escapes() {
        let t = toks(r#"@"a \"b\" \\ \n \t \0 \' \u{1f600} #""#);
        assert_eq!(
            t,
            vec![Tok::Name(
                Sigil::Param,
                "a \"b\" \\ \n \t \0 ' \u{1f600} #".into()
            )]
        );
        for (bad, col) in [
            (r#""abc"#, 1),
            (r#"x "a\q""#, 5),
            (r#""\u{110000}""#, 2),
            (r#""\u{}""#, 2),
            (r#""\u1234""#, 2),
            (r#""\"#, 1),
        ] {
            let e = lex_line(bad, 3).unwrap_err();
            assert_eq!((e.line, e.col), (3, col), "{bad}: {e}");
        }
    }

    #[test]
    fn end_column_ignores_trailing_space_and_comments() {
        assert_eq!(lex_line("ab cd   # x", 1).unwrap().1, 6);
    }
}
