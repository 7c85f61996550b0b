//! Checkpoints: one `.safetensors` file or a Hugging Face checkpoint directory, memory-mapped.
//!
//! A directory is read through `model.safetensors.index.json` (its `weight_map` names the shard
//! of each tensor) or, without an index, its single `model.safetensors`. Every shard's header is
//! parsed and validated when the checkpoint opens, so a truncated or corrupt file is an error
//! naming it there, never a panic later; tensor data stays in the mapped files until read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::RuntimeError;

/// The index file of a sharded Hugging Face checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single file of an unsharded Hugging Face checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// A borrowed tensor of a checkpoint: its dtype, shape and raw little-endian bytes.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    /// The shard file holding it.
    pub file: &'a Path,
}

impl std::fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .field("file", &self.file)
            .finish()
    }
}

/// One mapped shard.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Where a tensor lives.
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the shard's mapping.
    bytes: Range<usize>,
}

/// An opened checkpoint: every tensor of every shard, by name.
pub struct Checkpoint {
    path: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn err(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The file length a safetensors header describes (8 + header + the end of the last tensor's
/// data), when the header itself is readable.
fn described_len(buffer: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(buffer.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value =
        serde_json::from_slice(buffer.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_end = header
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    (8 + n).checked_add(usize::try_from(data_end).ok()?)
}

/// A sentence for a safetensors parse error of `buffer`.
fn describe(e: &SafeTensorError, buffer: &[u8]) -> String {
    let len = buffer.len();
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("truncated: {len} bytes, too short for a safetensors header")
        }
        SafeTensorError::InvalidHeaderLength => format!(
            "truncated or corrupt: the header length runs past the end of the file ({len} bytes)"
        ),
        SafeTensorError::MetadataIncompleteBuffer => match described_len(buffer) {
            Some(want) if want > len => {
                format!("truncated: the header describes {want} bytes, the file has {len}")
            }
            Some(want) => format!("corrupt: the header describes {want} bytes, the file has {len}"),
            None => {
                format!("truncated or corrupt: the header does not describe the file's {len} bytes")
            }
        },
        other => match inconsistent_tensor(buffer) {
            Some(why) => format!("corrupt: {why}"),
            None => format!("not a valid safetensors file: {other}"),
        },
    }
}

/// The first tensor of the safetensors header of `buffer` whose data offsets do not hold its
/// shape and dtype (the format's parser says only that one does not), in words.
fn inconsistent_tensor(buffer: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(buffer.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value =
        serde_json::from_slice(buffer.get(8..8usize.checked_add(n)?)?).ok()?;
    for (name, info) in header
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
    {
        let dtype = info.get("dtype")?.as_str()?;
        let size: u64 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "U16" | "I16" | "F16" | "BF16" => 2,
            "U32" | "I32" | "F32" => 4,
            "U64" | "I64" | "F64" => 8,
            _ => return Some(format!("tensor `{name}` has the unknown dtype {dtype}")),
        };
        let shape: Option<Vec<u64>> = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64())
            .collect();
        let Some(shape) = shape else {
            return Some(format!(
                "tensor `{name}` has a shape that is not a list of sizes"
            ));
        };
        let offsets: Option<Vec<u64>> = info
            .get("data_offsets")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64())
            .collect();
        let (start, end) = match offsets.as_deref() {
            Some(&[start, end]) if start <= end => (start, end),
            _ => {
                return Some(format!(
                    "tensor `{name}` has data_offsets that are not [start, end]"
                ));
            }
        };
        let bytes = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        if bytes != Some(end - start) {
            return Some(format!(
                "tensor `{name}` is {shape:?} {dtype} ({} bytes), but its data_offsets span {} \
                 bytes",
                bytes.map_or("too many".to_string(), |b| b.to_string()),
                end - start
            ));
        }
    }
    None
}

/// The first key the safetensors header of `buffer` has twice, when its header is JSON: the
/// format's parser keeps the last and then finds the data offsets inconsistent, which would
/// hide the cause.
fn duplicate_header_key(buffer: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstDuplicate;
    impl<'de> Visitor<'de> for FirstDuplicate {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // The whole map is read: serde_json checks that it ends where it should.
            let (mut seen, mut first) = (BTreeSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && first.is_none() {
                    first = Some(key);
                }
            }
            Ok(first)
        }
    }
    let n = usize::try_from(u64::from_le_bytes(buffer.get(..8)?.try_into().ok()?)).ok()?;
    let header = buffer.get(8..8usize.checked_add(n)?)?;
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(FirstDuplicate)
        .ok()?
}

impl Shard {
    /// Maps `path` and lists its tensors.
    fn open(path: &Path) -> Result<(Shard, Vec<(String, Entry)>), RuntimeError> {
        // A directory opens (and then fails to map with ENODEV, "No such device").
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(err(path, "is a directory, not a safetensors file"));
        }
        let file = File::open(path).map_err(|e| err(path, e.to_string()))?;
        // SAFETY: the mapping is read-only; like every safetensors reader we assume the file is
        // not modified while it is mapped (a concurrent writer could change bytes under us, which
        // only ever yields wrong values: all offsets are validated against the length below).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| err(path, e.to_string()))?;
        if let Some(key) = duplicate_header_key(&mmap) {
            return Err(err(
                path,
                format!("corrupt: the safetensors header lists tensor `{key}` twice"),
            ));
        }
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| err(path, describe(&e, &mmap)))?;
        let start = 8 + header_len;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (a, b) = info.data_offsets;
                let entry = Entry {
                    shard: 0,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: start + a..start + b,
                };
                (name, entry)
            })
            .collect();
        Ok((
            Shard {
                path: path.to_path_buf(),
                mmap,
            },
            entries,
        ))
    }
}

impl Checkpoint {
    /// Opens a `.safetensors` file, or a Hugging Face checkpoint directory (an index with shards,
    /// or a single `model.safetensors`). Every file is validated now; errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, RuntimeError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| err(path, e.to_string()))?;
        let files = if meta.is_dir() {
            let index = path.join(INDEX_FILE);
            let single = path.join(SINGLE_FILE);
            if index.is_file() {
                return Self::open_index(path, &index);
            } else if single.exists() {
                vec![single]
            } else {
                return Err(err(
                    path,
                    format!(
                        "a checkpoint directory needs `{INDEX_FILE}` (with shards) or `{SINGLE_FILE}`"
                    ),
                ));
            }
        } else {
            vec![path.to_path_buf()]
        };
        Self::from_files(path, &files)
    }

    /// Opens the shards an index names and checks the index against them.
    fn open_index(dir: &Path, index: &Path) -> Result<Checkpoint, RuntimeError> {
        let text = std::fs::read_to_string(index).map_err(|e| err(index, e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(index, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| err(index, "no `weight_map` object"))?;
        let mut weight_map = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                err(
                    index,
                    format!("`weight_map` entry `{name}` is not a file name"),
                )
            })?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(err(
                    index,
                    format!("shard `{file}` is not a file name in the directory"),
                ));
            }
            weight_map.insert(name.clone(), file.to_string());
        }
        let files: BTreeSet<&String> = weight_map.values().collect();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let ckpt = Self::from_files(dir, &paths)?;
        for (name, file) in &weight_map {
            let shard = ckpt.tensors.get(name).map(|e| &ckpt.shards[e.shard].path);
            if shard != Some(&dir.join(file)) {
                return Err(err(
                    index,
                    format!("`weight_map` puts `{name}` in `{file}`, which does not hold it"),
                ));
            }
        }
        Ok(ckpt)
    }

    /// Maps `files` as one checkpoint; a tensor name in two files is an error.
    fn from_files(path: &Path, files: &[PathBuf]) -> Result<Checkpoint, RuntimeError> {
        let mut ckpt = Checkpoint {
            path: path.to_path_buf(),
            shards: Vec::with_capacity(files.len()),
            tensors: BTreeMap::new(),
        };
        for file in files {
            let (shard, entries) = Shard::open(file)?;
            let index = ckpt.shards.len();
            for (name, mut entry) in entries {
                entry.shard = index;
                if let Some(other) = ckpt.tensors.get(&name) {
                    return Err(err(
                        file,
                        format!(
                            "tensor `{name}` is also in `{}`",
                            ckpt.shards[other.shard].path.display()
                        ),
                    ));
                }
                ckpt.tensors.insert(name, entry);
            }
            ckpt.shards.push(shard);
        }
        Ok(ckpt)
    }

    /// The file or directory this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard files, in the order they were opened.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// The tensor called `name`, if the checkpoint has it.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let (name, e) = self.tensors.get_key_value(name)?;
        let shard = &self.shards[e.shard];
        Some(TensorView {
            name,
            dtype: e.dtype,
            shape: &e.shape,
            data: &shard.mmap[e.bytes.clone()],
            file: &shard.path,
        })
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// How many tensors the checkpoint holds.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{HostTensor, write_safetensors};
    use crate::testutil::scratch_dir;
    use dsc_ir::DType;

    fn t(values: &[f32]) -> HostTensor {
        HostTensor::from_f32(DType::Bf16, vec![values.len()], values.to_vec()).unwrap()
    }

    fn write(path: &Path, tensors: &[(&str, &HostTensor)]) {
        write_safetensors(path, tensors.iter().copied()).unwrap();
    }

    fn message(r: Result<Checkpoint, RuntimeError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn opens_a_file_and_a_directory() {
        let dir = scratch_dir("ckpt-single");
        let (a, b) = (t(&[1.0, 2.0]), t(&[3.0]));
        write(&dir.join(SINGLE_FILE), &[("a", &a), ("b", &b)]);
        for path in [dir.join(SINGLE_FILE), dir.clone()] {
            let ckpt = Checkpoint::open(&path).unwrap();
            assert_eq!(ckpt.names().collect::<Vec<_>>(), ["a", "b"]);
            assert_eq!(ckpt.len(), 2);
            let v = ckpt.tensor("a").unwrap();
            assert_eq!((v.dtype, v.shape), (Dtype::BF16, &[2][..]));
            assert_eq!(v.data, a.to_safetensors_bytes());
            assert_eq!(v.file, dir.join(SINGLE_FILE));
            assert!(ckpt.tensor("c").is_none());
        }
    }

    #[test]
    fn opens_a_sharded_directory_through_its_index() {
        let dir = scratch_dir("ckpt-sharded");
        let (a, b, c) = (t(&[1.0]), t(&[2.0]), t(&[3.0, 4.0]));
        write(
            &dir.join("model-00001-of-00002.safetensors"),
            &[("a", &a), ("b", &b)],
        );
        write(&dir.join("model-00002-of-00002.safetensors"), &[("c", &c)]);
        let index = r#"{"metadata": {"total_size": 8}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(dir.join(INDEX_FILE), index).unwrap();
        let ckpt = Checkpoint::open(&dir).unwrap();
        assert_eq!(ckpt.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(ckpt.files().count(), 2);
        assert_eq!(ckpt.tensor("c").unwrap().data, c.to_safetensors_bytes());

        // An index that puts a tensor in the wrong shard is refused.
        std::fs::write(
            dir.join(INDEX_FILE),
            index.replace(
                "00002-of-00002.safetensors\"}",
                "00001-of-00002.safetensors\"}",
            ),
        )
        .unwrap();
        let e = message(Checkpoint::open(&dir));
        assert!(e.contains("`c`") && e.contains("does not hold it"), "{e}");
        // An index naming a shard that is not there names the file.
        std::fs::write(
            dir.join(INDEX_FILE),
            r#"{"weight_map": {"a": "gone.safetensors"}}"#,
        )
        .unwrap();
        let e = message(Checkpoint::open(&dir));
        assert!(e.contains("gone.safetensors"), "{e}");
        std::fs::write(dir.join(INDEX_FILE), "{").unwrap();
        assert!(message(Checkpoint::open(&dir)).contains("invalid JSON"));
    }

    #[test]
    fn truncated_or_corrupt_files_are_clear_errors() {
        let dir = scratch_dir("ckpt-truncated");
        let path = dir.join("w.safetensors");
        write(&path, &[("a", &t(&[1.0; 64]))]);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() - 1, bytes.len() / 2, 12, 3, 0] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let e = message(Checkpoint::open(&path));
            assert!(
                e.contains("w.safetensors") && e.contains("truncated"),
                "{cut}: {e}"
            );
        }
        std::fs::write(&path, b"\x10\0\0\0\0\0\0\0not json at all!").unwrap();
        let e = message(Checkpoint::open(&path));
        assert!(
            e.contains("w.safetensors") && e.contains("not a valid safetensors"),
            "{e}"
        );

        let e = message(Checkpoint::open(dir.join("absent.safetensors")));
        assert!(e.contains("absent.safetensors"), "{e}");
        let empty = scratch_dir("ckpt-empty-dir");
        let e = message(Checkpoint::open(&empty));
        assert!(e.contains(INDEX_FILE) && e.contains(SINGLE_FILE), "{e}");
    }

    #[test]
    fn a_tensor_whose_offsets_do_not_hold_its_shape_is_named() {
        let dir = scratch_dir("ckpt-bad-shape");
        let path = dir.join("w.safetensors");
        write(&path, &[("a", &t(&[1.0, 2.0])), ("b", &t(&[3.0, 4.0]))]);
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        // `b` claims 3 elements in the bytes of 2 (the header keeps its length).
        let damaged_header = header.replacen("[2]", "[3]", 2).replacen("[3]", "[2]", 1);
        assert_ne!(damaged_header, header);
        let mut damaged = bytes[..8].to_vec();
        damaged.extend_from_slice(damaged_header.as_bytes());
        damaged.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&path, damaged).unwrap();
        let e = message(Checkpoint::open(&path));
        assert!(
            e.contains("w.safetensors")
                && e.contains(
                    "tensor `b` is [3] BF16 (6 bytes), but its data_offsets span 4 bytes"
                ),
            "{e}"
        );
    }

    #[test]
    fn a_key_twice_in_a_header_is_named_as_such() {
        let dir = scratch_dir("ckpt-duplicate-key");
        let path = dir.join("w.safetensors");
        // `b` renamed `a` below; `c` after them (the duplicate is not the header's last key).
        write(
            &path,
            &[("a", &t(&[1.0])), ("b", &t(&[2.0])), ("c", &t(&[3.0]))],
        );
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        // The same length, `b` renamed `a`: the JSON stays valid, the key is there twice.
        let renamed = header.replace("\"b\"", "\"a\"");
        assert_ne!(renamed, header);
        let mut damaged = bytes[..8].to_vec();
        damaged.extend_from_slice(renamed.as_bytes());
        damaged.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&path, damaged).unwrap();
        let e = message(Checkpoint::open(&path));
        assert!(
            e.contains("w.safetensors") && e.contains("lists tensor `a` twice"),
            "{e}"
        );
    }

    #[test]
    fn a_shard_that_is_a_directory_is_named() {
        let dir = scratch_dir("ckpt-shard-dir");
        std::fs::create_dir(dir.join(SINGLE_FILE)).unwrap();
        let e = message(Checkpoint::open(&dir));
        assert!(
            e.contains(SINGLE_FILE) && e.contains("is a directory, not a safetensors file"),
            "{e}"
        );
        write(&dir.join("s1.safetensors"), &[("a", &t(&[1.0]))]);
        std::fs::create_dir(dir.join("s2.safetensors")).unwrap();
        std::fs::write(
            dir.join(INDEX_FILE),
            r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#,
        )
        .unwrap();
        let e = message(Checkpoint::open(&dir));
        assert!(
            e.contains("s2.safetensors") && e.contains("is a directory"),
            "{e}"
        );
    }

    #[test]
    fn a_tensor_in_two_shards_is_an_error() {
        let dir = scratch_dir("ckpt-duplicate");
        write(&dir.join("s1.safetensors"), &[("a", &t(&[1.0]))]);
        write(&dir.join("s2.safetensors"), &[("a", &t(&[2.0]))]);
        std::fs::write(
            dir.join(INDEX_FILE),
            r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#,
        )
        .unwrap();
        let e = message(Checkpoint::open(&dir));
        assert!(e.contains("`a` is also in"), "{e}");
    }
}
