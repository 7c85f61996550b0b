//! Every file in `tests/bad/` is a bad input. Its first lines say what the error must contain:
//! `# expect: TEXT` (one or more; `{file}` stands for the file's path). The test asserts exit
//! code 1, an `error:` line, each expected text, and no panic. `.toml` files go through
//! `dsc compile`, `.dsc` files through `dsc opt --passes verify,assign-precision` (or the
//! list of a `# passes: LIST` line).

use crate::support::{TempDir, dsc, path, streams};
use std::path::Path;

fn check(file: &Path, expects: &[String], passes: &str) -> Result<(), String> {
    let rel = file.strip_prefix(crate::support::root()).unwrap_or(file);
    let rel_str = rel.to_string_lossy().into_owned();
    let tmp = TempDir::new(&format!(
        "bad-{}",
        file.file_stem().unwrap().to_string_lossy()
    ));
    let out_dir = tmp.join("out");
    let out = match file.extension().and_then(|e| e.to_str()) {
        Some("dsc") => dsc(&["opt", &rel_str, "--passes", passes]),
        _ => dsc(&["compile", &rel_str, "-o", &out_dir.to_string_lossy()]),
    };
    let (_, stderr) = streams(&out);
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}, expected 1", out.status.code()));
    }
    if !stderr.starts_with("error: ") {
        problems.push("stderr does not start with `error: `".into());
    }
    if stderr.contains("panicked") {
        problems.push("the binary panicked".into());
    }
    for e in expects {
        let e = e.replace("{file}", &rel_str);
        if !stderr.contains(&e) {
            problems.push(format!("stderr lacks `{e}`"));
        }
    }
    if out_dir.exists() {
        problems.push("an output directory was written".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n--- stderr ---\n{stderr}",
            rel.display(),
            problems.join("; ")
        ))
    }
}

fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_bad_input_fails_cleanly_with_its_location() {
    let dir = path("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "dsc")))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected a folder full of bad inputs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let expects = expectations(&text);
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            f.display()
        );
        let passes = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix("# passes: "))
            .unwrap_or("verify,assign-precision");
        if let Err(e) = check(f, &expects, passes) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Files that cannot carry a header: empty, binary, not UTF-8, missing.
#[test]
fn empty_binary_and_missing_files_fail_cleanly() {
    let tmp = TempDir::new("bad-special");
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty.toml", b"", "1:1"),
        ("blank.toml", b"\n  \n", "[model]"),
        (
            "binary.toml",
            b"\x7fELF\x02\x01\x00\x00garbage",
            "binary file",
        ),
        ("latin1.toml", b"[model]\nname = \"caf\xe9\"\n", "not UTF-8"),
        ("empty.dsc", b"", "1:1"),
        ("binary.dsc", b"\x00\x01\x02\x03", "binary file"),
    ];
    for (name, bytes, expect) in cases {
        let file = tmp.join(name);
        std::fs::write(&file, bytes).unwrap();
        let f = file.to_string_lossy().into_owned();
        let out = if name.ends_with(".dsc") {
            dsc(&["opt", &f])
        } else {
            dsc(&["compile", &f, "-o", &tmp.join("out").to_string_lossy()])
        };
        let (_, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{name}: wanted `{expect}` in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let out = dsc(&["compile", "no/such/model.toml"]);
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read no/such/model.toml"),
        "{stderr}"
    );
}
