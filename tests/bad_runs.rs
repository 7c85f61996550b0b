//! Bad inputs that need a setup the `tests/bad/` files cannot carry: output directories that
//! are not dsc's, inputs inside outputs, damaged artifacts, checkpoints and configs, models too
//! large for memory, absurd flags (issue 14). Each must fail with exit code 1, an `error:` line
//! naming the place, no panic or abort, and nothing lost.

use crate::import::{Damage, LLAMA, write_checkpoint};
use crate::support::{TempDir, dsc, root, streams};
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Asserts a clean failure of `out` (exit 1, `error:` first, no panic); returns stderr.
fn failed(out: &Output, what: &str) -> String {
    let (_, stderr) = streams(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    stderr
}

/// `dsc ARGS`, which must fail cleanly; its stderr.
fn fails(args: &[&str]) -> String {
    failed(&dsc(args), &args.join(" "))
}

/// `dsc ARGS`, which must succeed.
fn ok(args: &[&str]) {
    let out = dsc(args);
    let (_, stderr) = streams(&out);
    assert!(out.status.success(), "{args:?}: {stderr}");
}

/// The mlp example compiled into `tmp/name`.
fn mlp(tmp: &TempDir, name: &str) -> std::path::PathBuf {
    let art = tmp.join(name);
    ok(&["compile", "examples/mlp.toml", "-o", &s(&art)]);
    art
}

#[test]
fn compile_replaces_only_a_dsc_artifact() {
    let tmp = TempDir::new("bad-output-dir");
    // A directory of someone's files: refused, the files kept.
    let data = tmp.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("precious.txt"), "keep").unwrap();
    let e = fails(&["compile", "examples/mlp.toml", "-o", &s(&data)]);
    assert!(
        e.contains(&format!(
            "{} exists and is not a dsc artifact (it has no manifest.json)",
            data.display()
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("precious.txt")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);

    // `-o .` in that directory: the same.
    let out = Command::new(env!("CARGO_BIN_EXE_dsc"))
        .args(["compile", &s(&root().join("examples/mlp.toml")), "-o", "."])
        .current_dir(&data)
        .output()
        .unwrap();
    let e = failed(&out, "compile -o .");
    assert!(e.contains(". exists and is not a dsc artifact"), "{e}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);

    // A file: refused.
    let file = tmp.join("file");
    std::fs::write(&file, "x").unwrap();
    let e = fails(&["compile", "examples/mlp.toml", "-o", &s(&file)]);
    assert!(e.contains("exists and is not a directory"), "{e}");

    // An empty directory or a previous artifact is replaced.
    let empty = tmp.join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&["compile", "examples/mlp.toml", "-o", &s(&empty)]);
    ok(&["compile", "examples/mlp.toml", "-o", &s(&empty)]);
    assert!(empty.join("manifest.json").is_file());

    // A `manifest.json` dsc did not write does not make an artifact.
    let web = tmp.join("web");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("manifest.json"), r#"{"name": "web"}"#).unwrap();
    std::fs::write(web.join("data.txt"), "keep").unwrap();
    let e = fails(&["compile", "examples/mlp.toml", "-o", &s(&web)]);
    assert!(
        e.contains("is not a dsc artifact (its manifest.json is not one dsc wrote)"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(web.join("data.txt")).unwrap(),
        "keep"
    );

    // An artifact with the user's files beside it: refused, naming the file; replaced once
    // only the artifact is left.
    std::fs::write(empty.join("notes.txt"), "mine").unwrap();
    let e = fails(&["compile", "examples/mlp.toml", "-o", &s(&empty)]);
    assert!(
        e.contains("holds `notes.txt`, which dsc did not write"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(empty.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::create_dir(empty.join("results")).unwrap();
    std::fs::remove_file(empty.join("notes.txt")).unwrap();
    let e = fails(&["compile", "examples/mlp.toml", "-o", &s(&empty)]);
    assert!(
        e.contains("holds `results`, which dsc did not write"),
        "{e}"
    );
    std::fs::remove_dir(empty.join("results")).unwrap();
    ok(&[
        "compile",
        "examples/mlp.toml",
        "-o",
        &s(&empty),
        "--emit",
        "mlir",
    ]);
    ok(&["compile", "examples/mlp.toml", "-o", &s(&empty)]);
}

#[test]
fn compile_never_replaces_its_input() {
    let tmp = TempDir::new("bad-output-input");
    let ckpt = tmp.join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    std::fs::write(ckpt.join("config.json"), LLAMA).unwrap();
    let e = fails(&["compile", &s(&ckpt), "--seq-len", "8", "-o", &s(&ckpt)]);
    assert!(
        e.contains(&format!(
            "the output directory {} holds the input {}",
            ckpt.display(),
            ckpt.display()
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(ckpt.join("config.json")).unwrap(),
        LLAMA
    );
    // Even when the directory holds an artifact: a model.toml inside the output.
    let art = mlp(&tmp, "art");
    let toml = art.join("model.toml");
    std::fs::copy(root().join("examples/mlp.toml"), &toml).unwrap();
    let e = fails(&["compile", &s(&toml), "-o", &s(&art)]);
    assert!(e.contains("holds the input"), "{e}");
    assert!(toml.is_file());
}

#[test]
fn quantize_weights_never_writes_into_its_input() {
    let tmp = TempDir::new("bad-quantize-inside");
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::None);
    let before = std::fs::read_dir(&ckpt).unwrap().count();
    for out in [ckpt.join("fp8"), ckpt.join("a/../fp8")] {
        let e = fails(&["quantize-weights", &s(&ckpt), "-o", &s(&out)]);
        assert!(
            e.contains(&format!(
                "is inside the input checkpoint {}: quantize-weights never writes into its input",
                ckpt.display()
            )),
            "{e}"
        );
    }
    assert_eq!(std::fs::read_dir(&ckpt).unwrap().count(), before);
}

#[test]
fn quantize_weights_refuses_a_tensor_of_the_wrong_shape() {
    let tmp = TempDir::new("bad-quantize-shape");
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::WrongShape);
    let out = tmp.join("fp8");
    let e = fails(&["quantize-weights", &s(&ckpt), "-o", &s(&out)]);
    assert!(
        e.contains(
            "1 tensors do not have the shape the model of config.json gives them, first \
             `model.layers.0.self_attn.k_proj.weight` is [64, 32], the model needs [32, 64]"
        ),
        "{e}"
    );
    assert!(!out.exists());
}

/// A model whose weights (two 2^24 × 8192 tables, 1 TiB as host f32) fit no machine.
const HUGE: &str = r#"[model]
name = "huge"
architecture = "llama"
dim = 8192
n_layers = 1
n_heads = 64
n_kv_heads = 8
inter_dim = 256
vocab_size = 16777216
rope_theta = 10000.0
rms_norm_eps = 1e-5
batch = 1
seq_len = 1
"#;

#[test]
fn a_model_larger_than_memory_is_an_error_not_an_abort() {
    let tmp = TempDir::new("bad-huge");
    let toml = tmp.join("huge.toml");
    std::fs::write(&toml, HUGE).unwrap();
    let art = tmp.join("art");
    ok(&["compile", &s(&toml), "-o", &s(&art)]);
    for (command, device, words) in [
        (
            "run",
            "cpu",
            "of memory on cpu (weights 1024.1 GiB, inputs 4 B, intermediates",
        ),
        ("bench", "cpu", "of memory on cpu (weights 1024.1 GiB"),
        (
            "run",
            "emu",
            "of memory on emu (weights 1024.1 GiB, inputs 4 B, emulated device",
        ),
    ] {
        let e = fails(&[
            command,
            &s(&art),
            "--device",
            device,
            "--random-weights",
            "0",
        ]);
        assert!(
            e.starts_with("error: the model needs ")
                && e.contains(words)
                && e.contains("are available"),
            "{command} {device}: {e}"
        );
    }
}

#[test]
fn bench_bounds_its_iterations() {
    let tmp = TempDir::new("bad-bench-iters");
    let art = mlp(&tmp, "art");
    for (flag, n) in [
        ("--iters", "18446744073709551615"),
        ("--iters", "1000000000"),
        ("--warmup", "10001"),
    ] {
        let e = fails(&["bench", &s(&art), "--device", "cpu", flag, n]);
        assert!(
            e.contains(&format!(
                "{flag} {n} is more than 10000, the most forward passes"
            )),
            "{e}"
        );
    }
}

#[test]
fn run_on_a_missing_directory_says_so() {
    let e = fails(&["run", "no/such/dir", "--random-weights", "0"]);
    assert_eq!(
        e.trim_end(),
        "error: no/such/dir: does not exist: give the directory dsc compile wrote"
    );
}

/// `edit` applied to the compiled mlp's manifest.json must make `dsc run --device cpu` fail
/// with `want` (the CPU path does not use the launch plan, but a manifest dsc never wrote is
/// not run as if valid).
fn manifest_refused(tmp: &TempDir, name: &str, edit: impl Fn(&mut serde_json::Value), want: &str) {
    let art = mlp(tmp, name);
    let path = art.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let e = fails(&["run", &s(&art), "--device", "cpu", "--random-weights", "0"]);
    assert!(
        e.contains("manifest.json") && e.contains(want),
        "{name}: {e}"
    );
}

#[test]
fn manifests_dsc_never_writes_are_refused_on_load() {
    let tmp = TempDir::new("bad-manifests");
    manifest_refused(
        &tmp,
        "arena",
        |m| m["arena"]["bytes"] = serde_json::json!(1u64 << 62),
        "`arena.bytes` is 4611686018427387904, but its tensors end at byte",
    );
    manifest_refused(
        &tmp,
        "overlap",
        |m| {
            for t in m["tensors"].as_array_mut().unwrap() {
                if t["storage"]["kind"] == "arena" {
                    t["storage"]["offset"] = serde_json::json!(0);
                }
            }
        },
        "overlap while both are live",
    );
    manifest_refused(
        &tmp,
        "steps",
        |m| m["steps"] = serde_json::json!([]),
        "`steps` is empty",
    );
    manifest_refused(
        &tmp,
        "no-plan",
        |m| {
            m["steps"] = serde_json::json!([]);
            m["kernels"] = serde_json::json!([]);
        },
        "`steps` is empty: the manifest has no launch plan",
    );
    manifest_refused(
        &tmp,
        "target",
        |m| m["target"] = serde_json::json!("sm_70"),
        "`target` is \"sm_70\": dsc writes PTX for sm_90a or sm_89 only",
    );
    manifest_refused(
        &tmp,
        "alignment",
        |m| m["arena"]["alignment"] = serde_json::json!(0),
        "`arena.alignment` is 0: it must be a power of two",
    );
    manifest_refused(
        &tmp,
        "misaligned",
        |m| {
            let t = m["tensors"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|t| t["storage"]["kind"] == "arena")
                .unwrap();
            t["storage"]["offset"] = serde_json::json!(8);
        },
        "arena `offset` 8 is not a multiple of `arena.alignment` 256",
    );
}

#[test]
fn a_byte_order_mark_in_config_json_is_skipped() {
    let tmp = TempDir::new("bad-bom");
    let cfg = tmp.join("config.json");
    std::fs::write(&cfg, format!("\u{feff}{LLAMA}")).unwrap();
    ok(&[
        "compile",
        &s(&cfg),
        "--seq-len",
        "8",
        "-o",
        &s(&tmp.join("art")),
    ]);
    ok(&["import", &s(&cfg)]);
}

#[test]
fn config_derived_errors_point_at_the_config_field() {
    let tmp = TempDir::new("bad-config-field");
    let cfg = tmp.join("config.json");
    let text = LLAMA.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5");
    std::fs::write(&cfg, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("num_attention_heads"))
        .unwrap()
        + 1;
    let art = tmp.join("art");
    for args in [
        vec!["import".to_string(), s(&cfg)],
        vec!["compile".to_string(), s(&cfg), "-o".to_string(), s(&art)],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = fails(&args);
        assert!(
            e.starts_with(&format!(
                "error: {}:{line}:3: `num_attention_heads`: dsc cannot build this model: \
                 `n_heads` (5) must divide `dim` (64)",
                cfg.display()
            )),
            "{e}"
        );
        assert!(!e.contains("[model]"), "the model.toml is not dumped: {e}");
    }
}

#[test]
fn broken_checkpoints_are_named_for_what_they_are() {
    let tmp = TempDir::new("bad-checkpoints");
    let cfg = tmp.join("config.json");
    std::fs::write(&cfg, LLAMA).unwrap();
    let art = tmp.join("art");
    ok(&["compile", &s(&cfg), "--seq-len", "8", "-o", &s(&art)]);
    let run =
        |weights: &Path| fails(&["run", &s(&art), "--device", "cpu", "--weights", &s(weights)]);

    // A shard that is a directory.
    let ckpt = tmp.join("ckpt");
    write_checkpoint(&ckpt, LLAMA, false, Damage::None);
    let shard = ckpt.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    let e = run(&ckpt);
    assert!(
        e.contains("model-00002-of-00002.safetensors")
            && e.contains("is a directory, not a safetensors file"),
        "{e}"
    );

    // A header that names one tensor twice: the second tensor's name replaced by the first's
    // (the header's length prefix updated; the data offsets are relative to its end).
    let ckpt = tmp.join("ckpt2");
    write_checkpoint(&ckpt, LLAMA, false, Damage::None);
    let shard = ckpt.join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header).unwrap();
    let mut names = parsed.keys().filter(|k| *k != "__metadata__");
    let (first, second) = (names.next().unwrap().clone(), names.next().unwrap().clone());
    let renamed = header.replacen(&format!("\"{second}\""), &format!("\"{first}\""), 1);
    let mut damaged = (renamed.len() as u64).to_le_bytes().to_vec();
    damaged.extend_from_slice(renamed.as_bytes());
    damaged.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&shard, damaged).unwrap();
    let e = run(&ckpt);
    assert!(e.contains(&format!("lists tensor `{first}` twice")), "{e}");
}

#[test]
fn a_long_cycle_is_reported_in_a_readable_line() {
    let tmp = TempDir::new("bad-long-cycle");
    let n = 20_000;
    let mut toml = String::from(
        "[model]\nname = \"ring\"\noutputs = [\"op0\"]\n\n[[input]]\nname = \"x\"\n\
         dtype = \"f32\"\nshape = [4]\n",
    );
    for i in 0..n {
        let prev = (i + n - 1) % n;
        toml.push_str(&format!(
            "\n[[op]]\nname = \"op{i}\"\nkind = \"silu\"\ninputs = [\"op{prev}\"]\n"
        ));
    }
    let file = tmp.join("ring.toml");
    std::fs::write(&file, toml).unwrap();
    let e = fails(&["compile", &s(&file), "-o", &s(&tmp.join("out"))]);
    let first = e.lines().next().unwrap();
    assert!(first.len() < 400, "{} bytes: {first}", first.len());
    assert!(
        first.contains(":10:1: 20000 ops form a cycle through their `inputs`: op0 -> op1 -> op2 -> op3 -> … (19992 more ops) … -> op19996 -> op19997 -> op19998 -> op19999 -> op0"),
        "{first}"
    );
}

// ---------------------------------------------------------------------------------------------
// Single-file outputs (`run --output`, `bench --json`, `train --log`/`--save-grads`,
// `import -o`, `emulate --output`/`--json`, `opt -o`): checked before any work.

/// `dsc ARGS` must fail with every one of `words` in its message, each file of `kept` byte for
/// byte as before; returns stderr.
fn refused(args: &[&str], words: &[&str], kept: &[&Path]) -> String {
    let before: Vec<Vec<u8>> = kept.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let e = fails(args);
    for w in words {
        assert!(e.contains(w), "{args:?}: {w:?} not in {e}");
    }
    for (p, b) in kept.iter().zip(before) {
        assert_eq!(
            std::fs::read(p).unwrap(),
            b,
            "{args:?}: {} changed",
            p.display()
        );
    }
    e
}

/// A file of `text` at `tmp/name`.
fn file(tmp: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = tmp.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn run_and_bench_outputs_never_replace_an_input() {
    let tmp = TempDir::new("bad-run-output");
    let art = mlp(&tmp, "art");
    let manifest = art.join("manifest.json");
    let weights = file(&tmp, "w.safetensors", "weights");
    let inputs = file(&tmp, "in.safetensors", "inputs");
    let ckpt = tmp.join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    let shard = ckpt.join("model.safetensors");
    std::fs::write(&shard, "shard").unwrap();
    let (a, w, i, c) = (s(&art), s(&weights), s(&inputs), s(&ckpt));
    // The weights, spelled as given and through `sub/..`.
    std::fs::create_dir(tmp.join("sub")).unwrap();
    let around = s(&tmp.join("sub/../w.safetensors"));
    for out in [&w, &around] {
        let e = refused(
            &[
                "run",
                &a,
                "--device",
                "cpu",
                "--weights",
                &w,
                "--output",
                out,
            ],
            &[&format!("--output {out} is the --weights checkpoint {w}")],
            &[&weights],
        );
        assert!(e.contains("choose another file"), "{e}");
    }
    refused(
        &[
            "run",
            &a,
            "--random-weights",
            "0",
            "--inputs",
            &i,
            "--output",
            &i,
        ],
        &[&format!("--output {i} is the --inputs file {i}")],
        &[&inputs],
    );
    // A file of the artifact, or a new one inside it.
    let m = s(&manifest);
    refused(
        &["run", &a, "--random-weights", "0", "--output", &m],
        &[&format!("--output {m} is a file of the artifact {a}")],
        &[&manifest],
    );
    let new = s(&art.join("out.safetensors"));
    refused(
        &["run", &a, "--random-weights", "0", "--output", &new],
        &[&format!("--output {new} is inside the dsc artifact")],
        &[&manifest],
    );
    assert!(!art.join("out.safetensors").exists());
    // A checkpoint shard of --weights.
    let sh = s(&shard);
    refused(
        &["run", &a, "--weights", &c, "--output", &sh],
        &[&format!(
            "--output {sh} is a file of the --weights checkpoint {c}"
        )],
        &[&shard],
    );
    // bench --json onto its inputs.
    refused(
        &["bench", &a, "--weights", &w, "--json", &w],
        &[&format!("--json {w} is the --weights checkpoint {w}")],
        &[&weights],
    );
    refused(
        &["bench", &a, "--json", &m],
        &[&format!("--json {m} is a file of the artifact {a}")],
        &[&manifest],
    );
    // Places that cannot be written fail at once, not after the run.
    let nodir = s(&tmp.join("nodir/x.safetensors"));
    refused(
        &["run", &a, "--random-weights", "0", "--output", &nodir],
        &[
            &format!("--output {nodir}: the directory "),
            "does not exist",
        ],
        &[],
    );
    let t = s(&tmp.join("sub"));
    refused(
        &["bench", &a, "--iters", "1", "--json", &t],
        &[&format!("--json {t} names a directory")],
        &[],
    );
    // A new file elsewhere is written.
    let fresh = tmp.join("out.safetensors");
    ok(&[
        "run",
        &a,
        "--device",
        "cpu",
        "--random-weights",
        "0",
        "--output",
        &s(&fresh),
    ]);
    assert!(fresh.is_file());
}

#[test]
fn train_outputs_never_replace_an_input() {
    let tmp = TempDir::new("bad-train-output");
    let model = tmp.join("m.toml");
    std::fs::copy(root().join("tests/train/tiny-llama.toml"), &model).unwrap();
    let data = crate::support::word_corpus(&tmp);
    let corpus = Path::new(&data).to_path_buf();
    let m = s(&model);
    let train = |extra: &[&str], words: &[&str], kept: &[&Path]| {
        let mut args = vec!["train", &m, "--data", &data, "--steps", "1"];
        args.extend_from_slice(extra);
        refused(&args, words, kept)
    };
    train(
        &["--log", &m],
        &[&format!("--log {m} is the model {m} this command reads")],
        &[&model],
    );
    train(
        &["--save-grads", &m],
        &[&format!("--save-grads {m} is the model {m}")],
        &[&model],
    );
    train(
        &["--log", &data],
        &[&format!("--log {data} is the --data file {data}")],
        &[&corpus],
    );
    // Through a symlink to the model.
    let link = tmp.join("link.csv");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let l = s(&link);
    train(
        &["--log", &l],
        &[&format!("--log {l} is the model {m}")],
        &[&model],
    );
    // Two outputs on one path.
    let x = s(&tmp.join("x.out"));
    train(
        &["--log", &x, "--save-grads", &x],
        &[&format!("--log {x} and --save-grads {x} are the same file")],
        &[],
    );
    assert!(!tmp.join("x.out").exists());
    // A directory, or a directory that does not exist.
    let t = s(&tmp.join("sub-dir"));
    std::fs::create_dir(tmp.join("sub-dir")).unwrap();
    train(
        &["--log", &t],
        &[&format!("--log {t} names a directory")],
        &[],
    );
    let nodir = s(&tmp.join("nodir/log.csv"));
    train(
        &["--log", &nodir],
        &[&format!("--log {nodir}: the directory ")],
        &[],
    );
    // A checkpoint directory as the model: its config.json.
    let ckpt = tmp.join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    let config = file(&tmp, "ckpt/config.json", LLAMA);
    let (c, cj) = (s(&ckpt), s(&config));
    refused(
        &["train", &c, "--data", &data, "--steps", "1", "--log", &cj],
        &[&format!("--log {cj} is a file of the model {c}")],
        &[&config],
    );
    // The model as CKPT/config.json: a shard beside it.
    let shard = file(&tmp, "ckpt/model.safetensors", "shard");
    let sh = s(&shard);
    refused(
        &[
            "train",
            &cj,
            "--data",
            &data,
            "--steps",
            "1",
            "--save-grads",
            &sh,
        ],
        &[&format!(
            "--save-grads {sh} is a file of the model's checkpoint {c}"
        )],
        &[&shard],
    );
    // The --resume checkpoint's files.
    let state = file(&tmp, "ckpt/train_state.json", "{}");
    let st = s(&state);
    refused(
        &["train", &m, "--data", &data, "--resume", &c, "--log", &st],
        &[&format!(
            "--log {st} is a file of the --resume checkpoint {c}"
        )],
        &[&state],
    );
}

#[test]
fn import_emulate_and_opt_outputs_never_replace_an_input() {
    let tmp = TempDir::new("bad-import-output");
    let hf = tmp.join("hf");
    std::fs::create_dir(&hf).unwrap();
    let config = file(&tmp, "hf/config.json", LLAMA);
    let (h, cj) = (s(&hf), s(&config));
    refused(
        &["import", &cj, "-o", &cj],
        &[&format!("-o {cj} is the config {cj} this command reads")],
        &[&config],
    );
    refused(
        &["import", &h, "-o", &cj],
        &[&format!("-o {cj} is a file of the checkpoint {h}")],
        &[&config],
    );
    // A new file beside the config is fine; a shard of its checkpoint is not replaced.
    ok(&["import", &cj, "-o", &s(&hf.join("model.toml"))]);
    let shard = file(&tmp, "hf/model.safetensors", "shard");
    let sh = s(&shard);
    refused(
        &["import", &cj, "-o", &sh],
        &[&format!("-o {sh} is a file of the config's checkpoint {h}")],
        &[&shard],
    );

    let ptx = file(&tmp, "k.ptx", "ptx");
    let launch = file(&tmp, "launch.json", "{}");
    let (p, l) = (s(&ptx), s(&launch));
    refused(
        &["emulate", &p, "--launch", &l, "--output", &l],
        &[&format!("--output {l} is the --launch file {l}")],
        &[&launch],
    );
    refused(
        &["emulate", &p, "--launch", &l, "--json", &p],
        &[&format!("--json {p} is the PTX {p}")],
        &[&ptx],
    );
    let x = s(&tmp.join("x"));
    refused(
        &["emulate", &p, "--launch", &l, "--output", &x, "--json", &x],
        &[&format!("--output {x} and --json {x} are the same file")],
        &[],
    );

    // opt rewrites its input in place on request, but not into a missing directory.
    let art = mlp(&tmp, "art");
    let graph = tmp.join("one.dsc");
    std::fs::copy(art.join("graph.dsc"), &graph).unwrap();
    ok(&["opt", &s(&graph), "-o", &s(&graph)]);
    let nodir = s(&tmp.join("nodir/one.dsc"));
    refused(
        &["opt", &s(&graph), "-o", &nodir],
        &[&format!("-o {nodir}: the directory ")],
        &[&graph],
    );
}
