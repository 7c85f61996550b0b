//! Training data for `dsc train`: a file of token ids, and random windows of it as batches of
//! `input_ids` and next-token `labels`.
//!
//! The format is chosen by the file's extension (exact, lowercase):
//! - `.bin`: little-endian uint16 token ids, the nanoGPT convention;
//! - `.u32` or `.bin32`: little-endian uint32 token ids;
//! - anything else: UTF-8 text whose bytes are the tokens (a byte-level vocabulary, which needs
//!   `vocab >= 256`).
//!
//! Every token id is checked against the model's vocabulary when the file is loaded, so a batch
//! never holds an id the embedding cannot look up.

use dsc_kernels::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// The largest vocabulary whose ids fit the model's i32 `input_ids`.
const MAX_VOCAB: u64 = 1 << 31;

/// The smallest vocabulary a text file's byte tokens fit.
const BYTE_VOCAB: u64 = 256;

/// Why a token file cannot be loaded or batched. Every message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainDataError {
    /// The path does not exist.
    #[error("token file {} does not exist", .path.display())]
    Missing { path: PathBuf },
    /// The path is a directory, a device, a FIFO or a socket: `what` says which.
    #[error("token file {} is {what}, not a regular file", .path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    /// Another I/O error (permissions, …), with the reason in words.
    #[error("cannot read token file {}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    /// The file has no bytes.
    #[error("token file {} is empty", .path.display())]
    Empty { path: PathBuf },
    /// A binary file whose length is not a whole number of tokens.
    #[error(
        "token file {} has {len} bytes, not a multiple of {width}: a {ext} file holds little-endian uint{bits} tokens",
        .path.display(), bits = .width * 8
    )]
    Ragged {
        path: PathBuf,
        len: usize,
        width: usize,
        ext: String,
    },
    /// A token id the vocabulary does not have.
    #[error(
        "token file {}: token {id} at index {index} is out of range for vocab_size {vocab}",
        .path.display()
    )]
    OutOfVocab {
        path: PathBuf,
        id: u32,
        index: usize,
        vocab: u64,
    },
    /// A text file (read as UTF-8 bytes) that is not UTF-8.
    #[error(
        "token file {} is not valid UTF-8 at byte offset {offset} (a file not named .bin, .u32 or .bin32 is read as text)",
        .path.display()
    )]
    NotUtf8 { path: PathBuf, offset: usize },
    /// A text file for a vocabulary that cannot hold its byte tokens.
    #[error(
        "token file {} is read as UTF-8 text, one token per byte, which needs vocab_size >= 256, not {vocab}",
        .path.display()
    )]
    VocabTooSmallForText { path: PathBuf, vocab: u64 },
    /// A vocabulary whose ids do not fit i32 `input_ids`.
    #[error(
        "vocab_size {vocab} for token file {} is too large: token ids must fit i32 (vocab_size <= 2^31)",
        .path.display()
    )]
    VocabTooLarge { path: PathBuf, vocab: u64 },
    /// Fewer tokens than one window needs.
    #[error(
        "token file {} has {present} tokens, but a window of seq_len {seq} needs {needed} (seq_len + 1 for the shifted labels)",
        .path.display()
    )]
    TooShort {
        path: PathBuf,
        seq: usize,
        needed: usize,
        present: usize,
    },
    /// A batch with no rows or no columns.
    #[error(
        "cannot draw a batch of {batch} x {seq} tokens from token file {}: batch and seq_len must be positive",
        .path.display()
    )]
    EmptyBatch {
        path: PathBuf,
        batch: usize,
        seq: usize,
    },
}

/// How a token file is stored, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    U16,
    U32,
    Text,
}

impl Format {
    fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("bin") => Format::U16,
            Some("u32" | "bin32") => Format::U32,
            _ => Format::Text,
        }
    }
}

/// The tokens of one file, every id below the vocabulary it was loaded for.
#[derive(Debug, Clone)]
pub struct TokenData {
    tokens: Vec<u32>,
    source: PathBuf,
}

impl TokenData {
    /// Reads `path` (format by extension, see the module docs) and checks every token id
    /// against `vocab`.
    pub fn load(path: &Path, vocab: u64) -> Result<TokenData, TrainDataError> {
        let source = path.to_path_buf();
        // What is wrong with the path comes first, then the vocabulary, then the contents.
        check_file(path)?;
        if vocab > MAX_VOCAB {
            return Err(TrainDataError::VocabTooLarge {
                path: source,
                vocab,
            });
        }
        let format = Format::of(path);
        if format == Format::Text && vocab < BYTE_VOCAB {
            return Err(TrainDataError::VocabTooSmallForText {
                path: source,
                vocab,
            });
        }
        let bytes = std::fs::read(path).map_err(|e| TrainDataError::Read {
            path: source.clone(),
            reason: e.kind().to_string(),
        })?;
        if bytes.is_empty() {
            return Err(TrainDataError::Empty { path: source });
        }
        let tokens: Vec<u32> = match format {
            Format::U16 => words::<2>(&source, &bytes)?
                .map(|w| u16::from_le_bytes(w) as u32)
                .collect(),
            Format::U32 => words::<4>(&source, &bytes)?
                .map(u32::from_le_bytes)
                .collect(),
            Format::Text => {
                if let Err(e) = std::str::from_utf8(&bytes) {
                    return Err(TrainDataError::NotUtf8 {
                        path: source,
                        offset: e.valid_up_to(),
                    });
                }
                bytes.iter().map(|&b| b as u32).collect()
            }
        };
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as u64 >= vocab)
        {
            return Err(TrainDataError::OutOfVocab {
                path: source,
                id,
                index,
                vocab,
            });
        }
        Ok(TokenData { tokens, source })
    }

    /// `batch` windows of `seq + 1` tokens at offsets `rng.next_u64() % (len − seq)`, one draw
    /// per row in row order: `input_ids` are each window's first `seq` tokens and `labels` its
    /// last `seq`, both row-major `[batch, seq]`. The same rng state gives the same batch.
    pub fn batch(
        &self,
        rng: &mut SplitMix64,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<i32>, Vec<i32>), TrainDataError> {
        if batch == 0 || seq == 0 {
            return Err(TrainDataError::EmptyBatch {
                path: self.source.clone(),
                batch,
                seq,
            });
        }
        let needed = seq.saturating_add(1);
        if self.tokens.len() < needed {
            return Err(TrainDataError::TooShort {
                path: self.source.clone(),
                seq,
                needed,
                present: self.tokens.len(),
            });
        }
        // Each id is below a vocabulary of at most 2^31 (checked on load), so it fits i32.
        let starts = (self.tokens.len() - seq) as u64;
        let mut input_ids = Vec::with_capacity(batch * seq);
        let mut labels = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let o = (rng.next_u64() % starts) as usize;
            let window = &self.tokens[o..o + seq + 1];
            input_ids.extend(window[..seq].iter().map(|&t| t as i32));
            labels.extend(window[1..].iter().map(|&t| t as i32));
        }
        Ok((input_ids, labels))
    }
}

/// That `path` is a file, with errors that name it rather than only the OS's words.
fn check_file(path: &Path) -> Result<(), TrainDataError> {
    let source = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TrainDataError::Missing { path: source() },
        kind => TrainDataError::Read {
            path: source(),
            reason: kind.to_string(),
        },
    })?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(TrainDataError::NotAFile {
            path: source(),
            what,
        });
    }
    Ok(())
}

/// `bytes` as little-endian words of `N` bytes, or the error for a ragged length.
fn words<'a, const N: usize>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<impl Iterator<Item = [u8; N]> + 'a, TrainDataError> {
    if !bytes.len().is_multiple_of(N) {
        return Err(TrainDataError::Ragged {
            path: path.to_path_buf(),
            len: bytes.len(),
            width: N,
            ext: path
                .extension()
                .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy())),
        });
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact gives N bytes")))
}

#[cfg(test)]
mod tests {
    use super::{TokenData, TrainDataError};
    use dsc_kernels::rng::SplitMix64;
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("dsc-train-data-{}-{n}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes `bytes` to `name` in the directory and returns its path.
        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn u16s(ids: &[u16]) -> Vec<u8> {
        ids.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    fn u32s(ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    fn load_err(path: &Path, vocab: u64) -> TrainDataError {
        match TokenData::load(path, vocab) {
            Ok(d) => panic!("expected an error, loaded {} tokens", d.tokens.len()),
            Err(e) => e,
        }
    }

    /// The message starts lowercase, names the file and contains each of `parts`.
    fn assert_message(e: &TrainDataError, path: &Path, parts: &[&str]) {
        let m = e.to_string();
        assert!(m.starts_with(|c: char| c.is_ascii_lowercase()), "{m}");
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(!m.contains("os error"), "{m}");
        for p in parts {
            assert!(m.contains(p), "`{p}` not in: {m}");
        }
    }

    #[test]
    fn uint16_bin_is_little_endian() {
        let dir = TempDir::new("u16");
        let p = dir.file("train.bin", &u16s(&[1, 258, 50_000, 0]));
        let d = TokenData::load(&p, 50_257).unwrap();
        assert_eq!(d.tokens, [1, 258, 50_000, 0]);
        assert_eq!(d.source, p);
        assert_eq!(&std::fs::read(&p).unwrap()[..2], &[1, 0]);
    }

    #[test]
    fn uint32_by_u32_and_bin32() {
        let dir = TempDir::new("u32");
        let ids = [7, 65_536, 100_000, 0x0102_0304];
        for name in ["train.u32", "train.bin32"] {
            let p = dir.file(name, &u32s(&ids));
            let d = TokenData::load(&p, 0x0102_0305).unwrap();
            assert_eq!(d.tokens, ids, "{name}");
        }
    }

    #[test]
    fn anything_else_is_utf8_text_bytes() {
        let dir = TempDir::new("text");
        for name in ["input.txt", "README", "data.u16"] {
            let p = dir.file(name, "hé!".as_bytes());
            let d = TokenData::load(&p, 256).unwrap();
            assert_eq!(d.tokens, [b'h' as u32, 0xc3, 0xa9, b'!' as u32], "{name}");
        }
    }

    #[test]
    fn text_needs_a_byte_vocab() {
        let dir = TempDir::new("text-vocab");
        let p = dir.file("input.txt", b"abc");
        let e = load_err(&p, 255);
        assert!(
            matches!(e, TrainDataError::VocabTooSmallForText { vocab: 255, .. }),
            "{e:?}"
        );
        assert_message(&e, &p, &["UTF-8 text", "vocab_size >= 256", "not 255"]);
    }

    #[test]
    fn text_that_is_not_utf8_names_the_offset() {
        let dir = TempDir::new("utf8");
        let p = dir.file("input.txt", b"ab\xc3(cd");
        let e = load_err(&p, 256);
        assert_eq!(
            e,
            TrainDataError::NotUtf8 {
                path: p.clone(),
                offset: 2
            }
        );
        assert_message(&e, &p, &["not valid UTF-8", "byte offset 2"]);
    }

    #[test]
    fn ragged_binary_lengths() {
        let dir = TempDir::new("ragged");
        let p = dir.file("train.bin", &[1, 0, 2]);
        let e = load_err(&p, 100);
        assert!(
            matches!(
                e,
                TrainDataError::Ragged {
                    len: 3,
                    width: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_message(&e, &p, &["3 bytes", "multiple of 2", ".bin", "uint16"]);
        for (name, len) in [("train.u32", 6), ("train.bin32", 5)] {
            let p = dir.file(name, &vec![0; len]);
            let e = load_err(&p, 100);
            assert_message(
                &e,
                &p,
                &[&format!("{len} bytes"), "multiple of 4", "uint32"],
            );
        }
    }

    #[test]
    fn token_out_of_vocab_names_id_index_and_vocab() {
        let dir = TempDir::new("vocab");
        let p = dir.file("train.bin", &u16s(&[3, 9, 10, 12]));
        let e = load_err(&p, 10);
        assert_eq!(
            e,
            TrainDataError::OutOfVocab {
                path: p.clone(),
                id: 10,
                index: 2,
                vocab: 10
            }
        );
        assert_message(
            &e,
            &p,
            &["token 10", "index 2", "vocab_size 10", "out of range"],
        );
        let p = dir.file("train.u32", &u32s(&[u32::MAX]));
        let e = load_err(&p, 1 << 31);
        assert_message(&e, &p, &[&format!("token {}", u32::MAX), "index 0"]);
        // A vocabulary of 0 has no ids at all.
        let p = dir.file("train.bin", &u16s(&[0]));
        assert_message(&load_err(&p, 0), &p, &["token 0 at index 0"]);
    }

    #[test]
    fn vocab_must_fit_i32() {
        let dir = TempDir::new("big-vocab");
        let p = dir.file("train.u32", &u32s(&[1]));
        let e = load_err(&p, (1 << 31) + 1);
        assert!(matches!(e, TrainDataError::VocabTooLarge { .. }), "{e:?}");
        assert_message(&e, &p, &["vocab_size 2147483649", "i32"]);
        assert!(TokenData::load(&p, 1 << 31).is_ok());
    }

    #[test]
    fn empty_files() {
        let dir = TempDir::new("empty");
        for name in ["train.bin", "train.u32", "input.txt"] {
            let p = dir.file(name, &[]);
            let e = load_err(&p, 256);
            assert_eq!(e, TrainDataError::Empty { path: p.clone() }, "{name}");
            assert_message(&e, &p, &["is empty"]);
        }
    }

    #[test]
    fn missing_file_and_directory_name_the_path() {
        let dir = TempDir::new("missing");
        let p = dir.0.join("nope.bin");
        let e = load_err(&p, 256);
        assert_eq!(e, TrainDataError::Missing { path: p.clone() });
        assert_message(&e, &p, &["does not exist"]);
        let sub = dir.0.join("shards.bin");
        std::fs::create_dir(&sub).unwrap();
        let e = load_err(&sub, 256);
        assert_eq!(
            e,
            TrainDataError::NotAFile {
                path: sub.clone(),
                what: "a directory"
            }
        );
        assert_message(&e, &sub, &["is a directory, not a regular file"]);
        // A device (and, the same way, a FIFO) is named for what it is.
        let null = std::path::Path::new("/dev/null");
        let e = load_err(null, 256);
        assert_message(&e, null, &["is a device, not a regular file"]);
        // The path's problem comes before the vocabulary's (a text path with vocab < 256).
        let text = dir.0.join("corpus");
        assert_eq!(
            load_err(&text, 5),
            TrainDataError::Missing { path: text.clone() }
        );
        std::fs::create_dir(&text).unwrap();
        assert_eq!(
            load_err(&text, 5),
            TrainDataError::NotAFile {
                path: text,
                what: "a directory"
            }
        );
    }

    #[test]
    fn unreadable_path_names_the_path_and_the_reason() {
        let dir = TempDir::new("unreadable");
        // A path through a regular file: metadata fails with "not a directory", not NotFound.
        let file = dir.file("plain.txt", b"x");
        let p = file.join("train.bin");
        let e = load_err(&p, 256);
        assert!(matches!(e, TrainDataError::Read { .. }), "{e:?}");
        assert_message(&e, &p, &["cannot read token file"]);
    }

    /// `n` tokens `0, 1, …, n − 1` in a `.bin` file.
    fn iota(dir: &TempDir, n: u16) -> TokenData {
        let ids: Vec<u16> = (0..n).collect();
        TokenData::load(&dir.file("iota.bin", &u16s(&ids)), n as u64).unwrap()
    }

    #[test]
    fn batch_windows_and_shifted_labels() {
        let dir = TempDir::new("batch");
        let d = iota(&dir, 100);
        let (batch, seq) = (8, 16);
        let (x, y) = d.batch(&mut SplitMix64(1), batch, seq).unwrap();
        assert_eq!((x.len(), y.len()), (batch * seq, batch * seq));
        for r in 0..batch {
            let row = &x[r * seq..(r + 1) * seq];
            let labels = &y[r * seq..(r + 1) * seq];
            let o = row[0];
            assert!((0..100 - seq as i32).contains(&o), "offset {o}");
            for j in 0..seq {
                assert_eq!(row[j], o + j as i32);
                assert_eq!(labels[j], o + j as i32 + 1);
            }
        }
    }

    #[test]
    fn batch_offsets_follow_the_rng() {
        let dir = TempDir::new("rng");
        let d = iota(&dir, 1000);
        let seq = 10;
        let mut expect = SplitMix64(42);
        let offsets: Vec<i32> = (0..5)
            .map(|_| (expect.next_u64() % (1000 - seq as u64)) as i32)
            .collect();
        let mut rng = SplitMix64(42);
        let (x, _) = d.batch(&mut rng, 5, seq).unwrap();
        let got: Vec<i32> = x.chunks(seq).map(|r| r[0]).collect();
        assert_eq!(got, offsets);
        // The rng advanced by one draw per row.
        assert_eq!(rng.0, expect.0);
    }

    #[test]
    fn batch_is_deterministic_given_the_rng_state() {
        let dir = TempDir::new("det");
        let d = iota(&dir, 5000);
        let a = d.batch(&mut SplitMix64(7), 4, 32).unwrap();
        let b = d.batch(&mut SplitMix64(7), 4, 32).unwrap();
        assert_eq!(a, b);
        let mut rng = SplitMix64(7);
        let first = d.batch(&mut rng, 4, 32).unwrap();
        let second = d.batch(&mut rng, 4, 32).unwrap();
        assert_eq!(first, a);
        assert_ne!(first, second);
    }

    #[test]
    fn exactly_seq_plus_one_tokens_is_one_window() {
        let dir = TempDir::new("exact");
        let d = iota(&dir, 5);
        let (x, y) = d.batch(&mut SplitMix64(3), 2, 4).unwrap();
        assert_eq!(x, [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(y, [1, 2, 3, 4, 1, 2, 3, 4]);
    }

    #[test]
    fn too_short_for_a_window() {
        let dir = TempDir::new("short");
        let d = iota(&dir, 5);
        let e = d.batch(&mut SplitMix64(0), 1, 5).unwrap_err();
        assert_eq!(
            e,
            TrainDataError::TooShort {
                path: d.source.clone(),
                seq: 5,
                needed: 6,
                present: 5
            }
        );
        assert_message(&e, &d.source, &["has 5 tokens", "seq_len 5", "needs 6"]);
    }

    #[test]
    fn empty_batches_are_errors() {
        let dir = TempDir::new("zero");
        let d = iota(&dir, 10);
        for (batch, seq) in [(0, 4), (2, 0)] {
            let e = d.batch(&mut SplitMix64(0), batch, seq).unwrap_err();
            assert!(matches!(e, TrainDataError::EmptyBatch { .. }), "{e:?}");
            assert_message(&e, &d.source, &["must be positive"]);
        }
    }

    #[test]
    fn temp_dirs_are_removed() {
        let path = {
            let dir = TempDir::new("cleanup");
            dir.file("a.bin", &[0, 0]);
            dir.0.clone()
        };
        assert!(!path.exists());
    }
}
