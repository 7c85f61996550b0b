//! File tests for `dsc opt`, in the manner of compiler file tests: each `tests/opt/*.dsc` is
//!
//! ```text
//! # passes: assign-precision,dce
//! <input IR>
//! # ----- expected
//! <expected IR>
//! ```
//!
//! The input goes through `dsc opt --passes LIST`; the output must equal the expected IR.
//! `DSC_BLESS=1` rewrites the expected part from the actual output.

use crate::support::{TempDir, dsc, path, streams};

const SEPARATOR: &str = "# ----- expected\n";

#[test]
fn opt_file_tests() {
    let mut files: Vec<_> = std::fs::read_dir(path("tests/opt"))
        .expect("tests/opt exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dsc"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected file tests in tests/opt, found {}",
        files.len()
    );
    let bless = std::env::var_os("DSC_BLESS").is_some();
    let tmp = TempDir::new("filetests");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let passes = text
            .lines()
            .find_map(|l| l.strip_prefix("# passes: "))
            .unwrap_or_else(|| panic!("{name}: no `# passes:` line"));
        let (input, expected) = text
            .split_once(SEPARATOR)
            .unwrap_or_else(|| panic!("{name}: no `{}` line", SEPARATOR.trim()));
        let input_file = tmp.join(&name);
        std::fs::write(&input_file, input).unwrap();
        let out = dsc(&["opt", &input_file.to_string_lossy(), "--passes", passes]);
        let (stdout, stderr) = streams(&out);
        if !out.status.success() {
            failures.push(format!("{name}: dsc opt failed:\n{stderr}"));
            continue;
        }
        if stdout != expected {
            if bless {
                std::fs::write(file, format!("{input}{SEPARATOR}{stdout}")).unwrap();
            } else {
                failures.push(format!(
                    "{name}: output differs (DSC_BLESS=1 to accept)\n{}",
                    diff(expected, &stdout)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A line diff: lines only in `expected` with `-`, only in `actual` with `+`.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<_> = expected.lines().collect();
    let a: Vec<_> = actual.lines().collect();
    let mut out = String::new();
    for l in &e {
        if !a.contains(l) {
            out.push_str(&format!("-{l}\n"));
        }
    }
    for l in &a {
        if !e.contains(l) {
            out.push_str(&format!("+{l}\n"));
        }
    }
    out
}
