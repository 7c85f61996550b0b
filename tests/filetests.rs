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

/// Lines of context kept around each change in [`diff`].
const CONTEXT: usize = 2;

/// A line diff in order (a longest common subsequence of lines): lines only in `expected` with
/// `-`, only in `actual` with `+`, and [`CONTEXT`] unchanged lines around each change with ` `;
/// `@@ line N` starts each run, numbered as in `expected`. A moved line shows as removed at
/// its old place and added at its new one.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the longest common subsequence of e[i..] and a[j..].
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, line number in expected, text), in order.
    let mut lines: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            lines.push((' ', i + 1, e[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < e.len() && (j == a.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', i + 1, e[i]));
            i += 1;
        } else {
            lines.push(('+', i + 1, a[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let shown = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
    let mut out = String::new();
    let mut previous: Option<usize> = None;
    for (k, &(tag, line, text)) in lines.iter().enumerate() {
        if !shown(k) {
            continue;
        }
        if previous.is_none_or(|p| p + 1 != k) {
            out.push_str(&format!("@@ line {line}\n"));
        }
        out.push_str(&format!("{tag}{text}\n"));
        previous = Some(k);
    }
    out
}

#[test]
fn the_diff_shows_order() {
    // Swapped lines are the same set: a set difference would show nothing.
    let d = diff("a\nb\nc\nd\n", "a\nc\nb\nd\n");
    assert_eq!(d, "@@ line 1\n a\n-b\n c\n+b\n d\n");
    // A repeated line, added once more.
    let d = diff("x\ny\n", "x\nx\ny\n");
    assert_eq!(d, "@@ line 1\n x\n+x\n y\n");
    // Far-apart changes are separate runs, with context only around each.
    let expected: String = (1..=12).map(|n| format!("{n}\n")).collect();
    let actual: String = (1..=12)
        .map(|n| match n {
            2 => "two\n".to_string(),
            11 => "eleven\n".to_string(),
            n => format!("{n}\n"),
        })
        .collect();
    let d = diff(&expected, &actual);
    assert_eq!(
        d,
        "@@ line 1\n 1\n-2\n+two\n 3\n 4\n@@ line 9\n 9\n 10\n-11\n+eleven\n 12\n"
    );
    assert_eq!(diff("same\n", "same\n"), "");
}
