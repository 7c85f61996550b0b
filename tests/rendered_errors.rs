//! Errors as the `dsc` binary renders them (`error: FILE:LINE:COL: message`, the source line
//! and a caret under the column), snapshot-tested as naga does: one snapshot per
//! representative bad input, so a change to the renderer, a message or a location shows up
//! in review. The inputs are in `tests/errors/` and `tests/bad/`.

use crate::support::{dsc, streams};

/// Runs `dsc ARGS` and returns its stderr, which must be an error with exit code 1.
fn rendered(args: &[&str]) -> String {
    let out = dsc(args);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    stderr
}

/// Where `compile` is told to write: nothing may appear there.
const OUT: &str = "target/test-tmp/rendered-errors";

#[test]
fn rendered_errors() {
    let cases: [(&str, &[&str]); 7] = [
        // model.toml: an unknown key, at its line:col (a two-digit line number).
        (
            "toml_unknown_key",
            &["compile", "tests/bad/toml_unknown_key.toml", "-o", OUT],
        ),
        // model.toml: a TOML syntax error, as the TOML parser locates it.
        (
            "toml_malformed",
            &["compile", "tests/bad/toml_malformed.toml", "-o", OUT],
        ),
        // model.toml: a value of the wrong type.
        (
            "toml_wrong_type",
            &["compile", "tests/bad/toml_wrong_type.toml", "-o", OUT],
        ),
        // Textual IR: an unknown op kind.
        ("ir_unknown_kind", &["opt", "tests/bad/ir_unknown_kind.dsc"]),
        // Textual IR: a tab before the error, on line 11 (the caret lines up, the gutter widens).
        ("ir_tab", &["opt", "tests/errors/tab_parse_error.dsc"]),
        // config.json: an unsupported value, at its field.
        ("hf_gelu", &["import", "tests/errors/llama_gelu.json"]),
        // config.json: sizes that do not fit together.
        ("hf_heads", &["import", "tests/errors/llama_heads.json"]),
    ];
    for (name, args) in cases {
        let stderr = rendered(args);
        insta::assert_snapshot!(name, stderr);
    }
    assert!(!crate::support::path(OUT).exists());
}
