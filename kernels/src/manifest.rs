//! The artifact's `manifest.json` (DESIGN.md §5): the one schema `dsc-codegen` writes and
//! `dsc-runtime` reads, so it lives here, below both.
//!
//! A manifest names every tensor of the compiled graph with its dtype, shape and storage (an input
//! buffer, a weight by its Hugging Face name, or an offset in one planned arena), every kernel
//! entry of `kernels.ptx` with its spec and launch rules, and the ordered launch steps. Kernels
//! are specialized to static shapes and take only buffer pointers (MLIR's bare-pointer memref
//! convention), so a step's arguments are tensor names, in the entry's parameter order. A step
//! may ask for some parameters to receive a TMA tensor map over the tensor instead of its address
//! ([`LaunchStep::tensor_maps`], [`TensorMapArg`]); the backend encodes the maps once per session.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version this build writes and accepts; any change to these types bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// The GPU targets dsc writes PTX for (`codegen::Target::ALL`, whose test checks the two agree);
/// a manifest naming another was not written by dsc.
pub const TARGETS: [&str; 2] = ["sm_90a", "sm_89"];

/// File names inside an artifact directory.
pub mod files {
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
    /// One PTX module holding every kernel entry.
    pub const KERNELS: &str = "kernels.ptx";
    /// The final IR, in text form.
    pub const GRAPH: &str = "graph.dsc";
}

/// What every GPU dsc targets allows one launch: the driver refuses more. Codegen checks each
/// kernel against them, and loading an artifact checks each launch step, whatever the device.
pub mod launch_limits {
    /// Threads per block.
    pub const MAX_THREADS_PER_BLOCK: u64 = 1024;
    /// Threads along each block dimension (x, y, z).
    pub const MAX_BLOCK: [u64; 3] = [1024, 1024, 64];
    /// Blocks along each grid dimension (x, y, z).
    pub const MAX_GRID: [u64; 3] = [(1 << 31) - 1, 65535, 65535];
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The graph's name.
    pub model: String,
    /// The GPU target the PTX was built for (`sm_90a`, `sm_89`).
    pub target: String,
    /// Every tensor a step reads or writes, plus the graph's inputs and outputs.
    pub tensors: Vec<TensorInfo>,
    /// The arena holding intermediates and outputs.
    pub arena: ArenaInfo,
    /// Every kernel entry of `kernels.ptx`, each listed once.
    pub kernels: Vec<KernelInfo>,
    /// The launches of one forward pass, in order.
    pub steps: Vec<LaunchStep>,
}

/// One tensor: its IR name (without `%` or `@`), dtype as the IR spells it, shape and storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorInfo {
    /// The value or parameter name.
    pub name: String,
    /// `f32`, `bf16`, `f8e4m3`, `i32`, ….
    pub dtype: String,
    /// Static shape.
    pub shape: Vec<usize>,
    /// Size in bytes (elements × dtype size).
    pub bytes: u64,
    /// Where it lives.
    pub storage: Storage,
}

/// Where a tensor's bytes live on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Storage {
    /// A graph input, uploaded by each run into its own buffer.
    Input,
    /// A weight, uploaded once; `name` is its Hugging Face name (experts: with `{e}`, see
    /// `experts`).
    Weight {
        /// For grouped expert weights `[E, …]`: E, each slice one checkpoint tensor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        experts: Option<usize>,
    },
    /// A region of the arena (intermediates and graph outputs).
    Arena {
        /// Byte offset from the arena's base (a multiple of [`ArenaInfo::alignment`]).
        offset: u64,
    },
    /// The same bytes as another tensor (a reshape of a contiguous tensor), at a byte offset.
    Alias {
        /// The tensor whose bytes these are.
        of: String,
        /// Byte offset into it.
        offset: u64,
    },
}

/// The planned arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArenaInfo {
    /// Bytes to allocate (the peak of the plan, with liveness-based reuse).
    pub bytes: u64,
    /// What a plan giving every tensor its own region would need.
    pub no_reuse_bytes: u64,
    /// Alignment of every offset.
    pub alignment: u64,
}

/// One kernel entry of `kernels.ptx`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// The `.entry` name.
    pub entry: String,
    /// The kernel spec it implements (`fp8_gemm`, `rms_norm_quant`, …).
    pub spec: String,
    /// The spec's attributes and the static shapes it was specialized to.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Parameter names, in order; each is one buffer pointer.
    pub params: Vec<String>,
    /// Threads per block.
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

/// One launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchStep {
    /// The op of the final graph this step computes.
    pub op: String,
    /// The kernel entry it launches.
    pub kernel: String,
    /// Blocks in the grid.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    /// Tensor names bound to the entry's parameters, in order.
    pub args: Vec<String>,
    /// Floating-point operations the step performs (2 per multiply-add).
    pub flops: u64,
    /// Bytes it reads and writes at least once.
    pub bytes: u64,
    /// Parameters that receive a TMA tensor map instead of a tensor's address (empty for most steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensor_maps: Vec<TensorMapArg>,
}

/// A kernel parameter that receives the device address of a 128-byte TMA tensor map (64-byte
/// aligned, in global memory) over the tensor that the step's `args[param]` names, encoded by
/// the backend once per session with `cuTensorMapEncodeTiled`'s arguments (innermost dimension
/// first). The backend fixes the rest: element strides 1, no interleave, L2 promotion 128B,
/// out-of-bounds elements filled with zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorMapArg {
    /// Index into the step's `args` (and the kernel's parameters).
    pub param: usize,
    /// Element type of the map.
    pub dtype: TensorMapDtype,
    /// Elements per dimension, innermost first; rank 1..=5.
    pub dims: Vec<u64>,
    /// Byte strides of `dims[1..]` (rank − 1 entries).
    pub strides_bytes: Vec<u64>,
    /// Box (elements one copy moves) per dimension, innermost first.
    pub box_dims: Vec<u32>,
    /// Shared-memory swizzle of the box.
    pub swizzle: TensorMapSwizzle,
}

/// A tensor map's element type (`CUtensorMapDataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorMapDtype {
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT8` (FP8 tensors are mapped as bytes).
    #[serde(rename = "uint8")]
    Uint8,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT16`.
    #[serde(rename = "float16")]
    Float16,
    /// `CU_TENSOR_MAP_DATA_TYPE_BFLOAT16`.
    #[serde(rename = "bfloat16")]
    Bfloat16,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT32`.
    #[serde(rename = "float32")]
    Float32,
}

impl TensorMapDtype {
    /// Element size in bytes.
    pub fn size_bytes(self) -> u64 {
        match self {
            TensorMapDtype::Uint8 => 1,
            TensorMapDtype::Float16 | TensorMapDtype::Bfloat16 => 2,
            TensorMapDtype::Float32 => 4,
        }
    }
}

/// A tensor map's shared-memory swizzle (`CUtensorMapSwizzle`, the sm_90 modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorMapSwizzle {
    /// `CU_TENSOR_MAP_SWIZZLE_NONE`.
    #[serde(rename = "none")]
    None,
    /// `CU_TENSOR_MAP_SWIZZLE_32B`.
    #[serde(rename = "32B")]
    B32,
    /// `CU_TENSOR_MAP_SWIZZLE_64B`.
    #[serde(rename = "64B")]
    B64,
    /// `CU_TENSOR_MAP_SWIZZLE_128B`.
    #[serde(rename = "128B")]
    B128,
}

impl TensorMapArg {
    /// The number of dimensions (`dims.len()`).
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Bytes from the tensor's base to one past the last element the map covers,
    /// `dims[0]·elem_size + Σ (dims[i]−1)·strides_bytes[i−1]`; `None` when it overflows, a
    /// dimension is 0, or the strides do not match the rank.
    pub fn extent_bytes(&self) -> Option<u64> {
        let (&inner, outer) = self.dims.split_first()?;
        if self.dims.contains(&0) || self.strides_bytes.len() != outer.len() {
            return None;
        }
        outer.iter().zip(&self.strides_bytes).try_fold(
            inner.checked_mul(self.dtype.size_bytes())?,
            |end, (&dim, &stride)| end.checked_add((dim - 1).checked_mul(stride)?),
        )
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of this schema.
    #[error("{path}: not a dsc manifest: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// serde's words, with line and column.
        message: String,
    },
    /// Written by a dsc of another schema.
    #[error(
        "{path}: manifest schema version {found}, this dsc reads version {expected}: recompile the model with this dsc"
    )]
    SchemaVersion {
        /// The file.
        path: String,
        /// What the file says.
        found: u64,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
}

impl Manifest {
    /// The manifest as pretty JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    /// Parses `text` (read from `path`, named in errors). The schema version is checked before
    /// anything else, so a manifest of another version gets that error, not a field error.
    pub fn from_json(text: &str, path: &str) -> Result<Manifest, ManifestError> {
        let malformed = |error: serde_json::Error| ManifestError::Malformed {
            path: path.to_string(),
            message: error.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
        match value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(found) if found == u64::from(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(ManifestError::SchemaVersion {
                    path: path.to_string(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            None => {
                return Err(ManifestError::Malformed {
                    path: path.to_string(),
                    message: "no integer `schema_version`".to_string(),
                });
            }
        }
        serde_json::from_value(value).map_err(malformed)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// The kernel whose entry is `entry`.
    pub fn kernel(&self, entry: &str) -> Option<&KernelInfo> {
        self.kernels.iter().find(|kernel| kernel.entry == entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            model: "m".to_string(),
            target: "sm_90a".to_string(),
            tensors: vec![
                TensorInfo {
                    name: "x".to_string(),
                    dtype: "bf16".to_string(),
                    shape: vec![2, 128],
                    bytes: 512,
                    storage: Storage::Input,
                },
                TensorInfo {
                    name: "model.layers.0.mlp.experts.{e}.up_proj.weight".to_string(),
                    dtype: "f8e4m3".to_string(),
                    shape: vec![4, 128, 128],
                    bytes: 65536,
                    storage: Storage::Weight { experts: Some(4) },
                },
                TensorInfo {
                    name: "y".to_string(),
                    dtype: "bf16".to_string(),
                    shape: vec![2, 128],
                    bytes: 512,
                    storage: Storage::Arena { offset: 256 },
                },
                TensorInfo {
                    name: "y_flat".to_string(),
                    dtype: "bf16".to_string(),
                    shape: vec![256],
                    bytes: 512,
                    storage: Storage::Alias {
                        of: "y".to_string(),
                        offset: 0,
                    },
                },
            ],
            arena: ArenaInfo {
                bytes: 768,
                no_reuse_bytes: 1024,
                alignment: 256,
            },
            kernels: vec![KernelInfo {
                entry: "add_bf16_256".to_string(),
                spec: "add".to_string(),
                attrs: BTreeMap::from([("len".to_string(), serde_json::json!(256))]),
                params: vec!["a".to_string(), "b".to_string(), "c".to_string()],
                block: [256, 1, 1],
                shared_bytes: 0,
            }],
            steps: vec![LaunchStep {
                op: "y".to_string(),
                kernel: "add_bf16_256".to_string(),
                grid: [1, 1, 1],
                block: [256, 1, 1],
                shared_bytes: 0,
                args: vec!["x".to_string(), "x".to_string(), "y".to_string()],
                flops: 256,
                bytes: 1536,
                tensor_maps: vec![TensorMapArg {
                    param: 0,
                    dtype: TensorMapDtype::Bfloat16,
                    dims: vec![128, 2],
                    strides_bytes: vec![256],
                    box_dims: vec![64, 8],
                    swizzle: TensorMapSwizzle::B128,
                }],
            }],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let manifest = sample();
        let text = manifest.to_json();
        assert!(text.contains("\"kind\": \"arena\""), "{text}");
        assert!(text.contains("\"experts\": 4"), "{text}");
        assert_eq!(Manifest::from_json(&text, "m.json").unwrap(), manifest);
        assert_eq!(manifest.tensor("y").unwrap().shape, [2, 128]);
        assert_eq!(manifest.kernel("add_bf16_256").unwrap().params.len(), 3);
    }

    #[test]
    fn tensor_maps_round_trip_with_the_driver_names_and_are_optional() {
        let manifest = sample();
        let text = manifest.to_json();
        for field in [
            "\"tensor_maps\"",
            "\"dtype\": \"bfloat16\"",
            "\"swizzle\": \"128B\"",
            "\"strides_bytes\"",
            "\"box_dims\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        let step = &Manifest::from_json(&text, "m.json").unwrap().steps[0];
        assert_eq!(step.tensor_maps, manifest.steps[0].tensor_maps);
        assert_eq!(step.tensor_maps[0].extent_bytes(), Some(512));
        fn names(value: impl Serialize) -> serde_json::Value {
            serde_json::to_value(value).unwrap()
        }
        assert_eq!(names(TensorMapDtype::Uint8), "uint8");
        assert_eq!(names(TensorMapDtype::Float32), "float32");
        assert_eq!(names(TensorMapSwizzle::None), "none");
        assert_eq!(names(TensorMapSwizzle::B32), "32B");

        // A step without maps writes no field, and a manifest without it reads as no maps.
        let mut plain = manifest.clone();
        plain.steps[0].tensor_maps.clear();
        let text = plain.to_json();
        assert!(!text.contains("tensor_maps"), "{text}");
        assert_eq!(Manifest::from_json(&text, "m.json").unwrap(), plain);

        // Unknown names and fields are refused.
        let text = manifest.to_json().replace("\"128B\"", "\"256B\"");
        let error = Manifest::from_json(&text, "a.json").unwrap_err();
        assert!(error.to_string().contains("256B"), "{error}");
        let text = manifest.to_json().replace("\"box_dims\"", "\"box\"");
        let error = Manifest::from_json(&text, "a.json").unwrap_err();
        assert!(error.to_string().contains("box"), "{error}");
    }

    #[test]
    fn the_extent_is_checked_arithmetic() {
        let mut map = sample().steps[0].tensor_maps[0].clone();
        map.dims = vec![3, 4, 5];
        map.strides_bytes = vec![16, 100];
        assert_eq!(map.extent_bytes(), Some(3 * 2 + 3 * 16 + 4 * 100));
        map.strides_bytes = vec![16, u64::MAX / 2];
        assert_eq!(map.extent_bytes(), None);
        map.strides_bytes = vec![16];
        assert_eq!(map.extent_bytes(), None);
        map.dims = vec![3, 0, 5];
        map.strides_bytes = vec![16, 100];
        assert_eq!(map.extent_bytes(), None);
        map.dims.clear();
        map.strides_bytes.clear();
        assert_eq!(map.extent_bytes(), None);
    }

    #[test]
    fn refuses_another_schema_version_first() {
        let text = sample()
            .to_json()
            .replace("\"schema_version\": 1", "\"schema_version\": 99");
        // A field this version does not know must not hide the version error.
        let text = text.replacen("\"model\"", "\"future_field\": 1, \"model\"", 1);
        let error = Manifest::from_json(&text, "dir/manifest.json").unwrap_err();
        assert!(matches!(
            error,
            ManifestError::SchemaVersion { found: 99, .. }
        ));
        let message = error.to_string();
        assert!(message.starts_with("dir/manifest.json: "), "{message}");
        assert!(message.contains("version 99"), "{message}");
    }

    #[test]
    fn names_what_is_malformed() {
        let error = Manifest::from_json("{", "a.json").unwrap_err();
        assert!(matches!(error, ManifestError::Malformed { .. }), "{error}");
        let error = Manifest::from_json("{\"model\": \"m\"}", "a.json").unwrap_err();
        assert!(error.to_string().contains("schema_version"), "{error}");
        let text = sample().to_json().replace("\"target\"", "\"targte\"");
        let error = Manifest::from_json(&text, "a.json").unwrap_err();
        assert!(error.to_string().contains("targte"), "{error}");
    }
}
