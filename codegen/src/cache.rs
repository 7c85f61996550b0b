//! A cache of lowered kernels across compiles: each kernel's own PTX module (what
//! [`crate::lower`] produces, before [`crate::link`] joins them), stored under a hash of its
//! key. The key is everything that decides that PTX: the kernel's entry name and full spec
//! (every shape and attribute it is specialized to), the target, the MLIR pass pipeline, and
//! the version of the code generator ([`CODEGEN_VERSION`]: a hash of codegen's, dsc-kernels'
//! and dsc-ir's sources, the locked dependencies and the LLVM/MLIR linked in). An edit to any of
//! them is a new key, so a stale entry is never found.
//!
//! Entries are written to a temporary file and renamed into place, so a reader sees a whole
//! entry or none. Each holds its full key (not only its hash) and a checksum of its PTX, and is
//! read back only when both match and the PTX is one module holding the expected entry: a
//! collision, a truncated or corrupt file, or one from another version is a miss. Every cache
//! failure (an unreadable or unwritable directory, a full disk) is a miss or a skipped store:
//! the cache can only cost or save time, never change the PTX or fail a compile.
//!
//! Layout: `<dir>/ptx/<codegen version>/<target>/<entry>-<hash of the key>.ptx`. Entries of
//! another version can never be read, so when a version's directory is created, all but the
//! [`KEEP_VERSIONS`] newest others are deleted: rebuilding dsc again and again does not fill the
//! disk. [`PtxCache::default_dir`] is `$DSC_CACHE_DIR`, else `$XDG_CACHE_HOME/dsc`, else
//! `$HOME/.cache/dsc`.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::kernels::GpuKernel;
use crate::target::Target;
use dsc_ir::atomic_write::write_file_atomically;
use dsc_kernels::fnv::Fnv1a;

/// The version of the code generator the cache keys every entry with (see the module docs).
pub const CODEGEN_VERSION: &str = env!("DSC_CODEGEN_VERSION");

/// Versions kept besides the current one (for builds of other sources used side by side).
pub const KEEP_VERSIONS: usize = 4;

/// The largest entry read or written (a kernel's PTX is tens of KiB).
const MAX_ENTRY_BYTES: usize = 64 << 20;

/// First line of every entry.
const MAGIC: &str = "dsc ptx cache 1\n";

/// A directory of cached PTX, one file per kernel.
#[derive(Debug, Clone)]
pub struct PtxCache {
    dir: PathBuf,
}

impl PtxCache {
    /// The cache in `dir` (created when the first entry is stored).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PtxCache { dir: dir.into() }
    }

    /// Where the cache lives by default: `$DSC_CACHE_DIR`, else `$XDG_CACHE_HOME/dsc`, else
    /// `$HOME/.cache/dsc`; `None` when none of them is set (or `DSC_CACHE_DIR` is empty).
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = std::env::var_os("DSC_CACHE_DIR") {
            return (!dir.is_empty()).then(|| PathBuf::from(dir));
        }
        var("XDG_CACHE_HOME")
            .map(|dir| PathBuf::from(dir).join("dsc"))
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/dsc")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached PTX of `kernel` as `entry` for `target`, if there is a sound entry.
    pub fn load(&self, target: Target, entry: &str, kernel: &GpuKernel) -> Option<String> {
        let key = Key::new(target, entry, kernel)?;
        let path = self.path(&key);
        if std::fs::metadata(&path).ok()?.len() > MAX_ENTRY_BYTES as u64 {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        let ptx = decode(&bytes, &key.text)?;
        crate::link::check(target, entry, ptx).ok()?;
        Some(ptx.to_string())
    }

    /// Stores the PTX of `kernel` as `entry` for `target`; a failure is ignored (the next
    /// compile lowers the kernel again).
    pub fn store(&self, target: Target, entry: &str, kernel: &GpuKernel, ptx: &str) {
        if let Some(key) = Key::new(target, entry, kernel) {
            let _ = self.write(&key, ptx);
        }
    }

    /// The directory of this version's entries.
    fn version_dir(&self) -> PathBuf {
        self.dir.join("ptx").join(CODEGEN_VERSION)
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.version_dir()
            .join(key.target.chip())
            .join(format!("{}-{:016x}.ptx", key.entry, key.hash))
    }

    fn write(&self, key: &Key, ptx: &str) -> std::io::Result<()> {
        if ptx.len() > MAX_ENTRY_BYTES / 2 {
            return Ok(());
        }
        let path = self.path(key);
        let dir = path.parent().expect("an entry's path has a parent");
        if !self.version_dir().is_dir() {
            std::fs::create_dir_all(dir)?;
            self.prune();
        }
        std::fs::create_dir_all(dir)?;
        write_file_atomically(&path, |temp| {
            std::fs::File::create(temp)?.write_all(&encode(&key.text, ptx))
        })
    }

    /// Deletes the directories of other versions but the [`KEEP_VERSIONS`] newest.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("ptx")) else {
            return;
        };
        let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != CODEGEN_VERSION)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        others.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, old) in others.into_iter().skip(KEEP_VERSIONS) {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// What an entry is stored under.
struct Key<'a> {
    target: Target,
    entry: &'a str,
    /// Everything that decides the PTX.
    text: String,
    /// Its hash, for the file name.
    hash: u64,
}

impl<'a> Key<'a> {
    /// The key of `kernel` as `entry`; `None` for an entry name unfit for a file name.
    fn new(target: Target, entry: &'a str, kernel: &GpuKernel) -> Option<Self> {
        let plain = !entry.is_empty()
            && entry.len() <= 128
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return None;
        }
        let mut text = String::new();
        let _ = write!(
            text,
            "codegen {CODEGEN_VERSION}\ntarget {target}\npipeline {}\nentry {entry}\nkernel {kernel:?}\n",
            crate::pipeline(target)
        );
        let mut hasher = Fnv1a::default();
        hasher.write(text.as_bytes());
        Some(Key {
            target,
            entry,
            text,
            hash: hasher.finish(),
        })
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv1a::default();
    hasher.write(bytes);
    hasher.finish()
}

/// An entry: the magic line, `<key bytes> <PTX bytes> <PTX checksum>`, the key, the PTX.
fn encode(key: &str, ptx: &str) -> Vec<u8> {
    let mut out = format!(
        "{MAGIC}{} {} {:016x}\n",
        key.len(),
        ptx.len(),
        checksum(ptx.as_bytes())
    )
    .into_bytes();
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(ptx.as_bytes());
    out
}

/// The PTX of an entry whose key is `key`, if the entry is whole and sound.
fn decode<'b>(bytes: &'b [u8], key: &str) -> Option<&'b str> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes())?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&rest[..newline]).ok()?;
    let body = &rest[newline + 1..];
    let mut fields = header.split(' ');
    let key_len: usize = fields.next()?.parse().ok()?;
    let ptx_len: usize = fields.next()?.parse().ok()?;
    let sum = u64::from_str_radix(fields.next()?, 16).ok()?;
    if fields.next().is_some() || key_len.checked_add(ptx_len)? != body.len() {
        return None;
    }
    let (stored_key, ptx) = body.split_at(key_len);
    if stored_key != key.as_bytes() || checksum(ptx) != sum {
        return None;
    }
    std::str::from_utf8(ptx).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_only_with_its_key_and_intact() {
        let entry = encode("key", "ptx text");
        assert_eq!(decode(&entry, "key"), Some("ptx text"));
        assert_eq!(decode(&entry, "other key"), None);
        assert_eq!(decode(&entry[..entry.len() - 1], "key"), None);
        let mut flipped = entry.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped, "key"), None);
        let mut longer = entry.clone();
        longer.push(b'x');
        assert_eq!(decode(&longer, "key"), None);
        assert_eq!(decode(b"", "key"), None);
        assert_eq!(decode(MAGIC.as_bytes(), "key"), None);
    }

    #[test]
    fn the_codegen_version_names_the_llvm() {
        assert!(CODEGEN_VERSION.contains("-llvm"), "{CODEGEN_VERSION}");
    }
}
