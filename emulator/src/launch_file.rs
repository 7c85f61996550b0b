//! Launch files: any PTX kernel launched on the emulator from a JSON description of its grid,
//! buffers and parameters (tensor maps included), as `dsc emulate` reads them. The format is
//! documented in the README ("Running any PTX kernel"); every error names the field
//! (`params[3].tensor_map.box[1]`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::launch::{LaunchConfig, LaunchOptions, ParamValue};
use crate::memory::GlobalMemory;
use crate::profile::LaunchProfile;
use crate::ptx::Module;
use crate::tensor_map::{DataType, Interleave, L2Promotion, OobFill, Swizzle, TensorMap};

/// A parsed launch file.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFile {
    /// The kernel's entry name.
    pub entry: String,
    /// Grid, block, cluster and dynamic shared memory.
    pub config: LaunchConfig,
    /// Zeroed buffers to allocate, by name, with their sizes in bytes.
    pub allocate: BTreeMap<String, u64>,
    /// The parameters, in the entry's order.
    pub params: Vec<ParamSpec>,
}

/// One parameter of a launch file.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSpec {
    /// The device address of a buffer (`None`: a null pointer).
    Ptr(Option<String>),
    /// A 32-bit integer (`u32` or `i32` in the file).
    U32(u32),
    /// A 64-bit integer.
    U64(u64),
    /// A 32-bit float.
    F32(f32),
    /// A 128-byte tensor map over a buffer.
    TensorMap(TensorMapSpec),
}

/// `cuTensorMapEncodeTiled`'s arguments over a named buffer (arrays innermost first).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMapSpec {
    /// The buffer whose address is `globalAddress`.
    pub buffer: String,
    /// Element type.
    pub dtype: DataType,
    /// `globalDim`.
    pub dims: Vec<u64>,
    /// `globalStrides` in bytes (rank − 1 entries).
    pub strides_bytes: Vec<u64>,
    /// `boxDim`.
    pub box_dims: Vec<u32>,
    /// `elementStrides`.
    pub element_strides: Vec<u32>,
    /// Swizzle.
    pub swizzle: Swizzle,
    /// Interleave.
    pub interleave: Interleave,
    /// L2 promotion.
    pub l2_promotion: L2Promotion,
    /// Out-of-bounds fill.
    pub oob_fill: OobFill,
}

/// A field's value, or an error naming the field.
type Field<T> = Result<T, String>;

fn object<'a>(v: &'a Value, path: &str) -> Field<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{path}: expected an object, found {}", kind(v)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fails on keys outside `known`.
fn known_keys(m: &Map<String, Value>, path: &str, known: &[&str]) -> Field<()> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{}: unknown field `{k}` (expected one of: {})",
            join(path, k),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn required<'a>(m: &'a Map<String, Value>, path: &str, key: &str) -> Field<&'a Value> {
    m.get(key)
        .ok_or_else(|| format!("{}: missing", join(path, key)))
}

fn unsigned(v: &Value, path: &str, max: u64) -> Field<u64> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(format!("{path}: {n} is larger than {max}")),
        None => Err(format!(
            "{path}: expected an unsigned integer, found {}",
            match v {
                Value::Number(n) => n.to_string(),
                _ => kind(v).to_string(),
            }
        )),
    }
}

fn string<'a>(v: &'a Value, path: &str) -> Field<&'a str> {
    v.as_str()
        .ok_or_else(|| format!("{path}: expected a string, found {}", kind(v)))
}

fn array<'a>(v: &'a Value, path: &str) -> Field<&'a Vec<Value>> {
    v.as_array()
        .ok_or_else(|| format!("{path}: expected an array, found {}", kind(v)))
}

fn unsigned_array(v: &Value, path: &str, max: u64) -> Field<Vec<u64>> {
    array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, x)| unsigned(x, &format!("{path}[{i}]"), max))
        .collect()
}

fn dim3(m: &Map<String, Value>, key: &str, default: Option<[u32; 3]>) -> Field<[u32; 3]> {
    let Some(v) = m.get(key) else {
        return default.ok_or_else(|| format!("{key}: missing"));
    };
    let xs = unsigned_array(v, key, u64::from(u32::MAX))?;
    if xs.len() != 3 {
        return Err(format!(
            "{key}: expected 3 entries [x, y, z], found {}",
            xs.len()
        ));
    }
    Ok([xs[0] as u32, xs[1] as u32, xs[2] as u32])
}

/// One of `names` (each paired with its value), or an error listing them.
fn choice<T: Copy>(v: &Value, path: &str, names: &[(&str, T)]) -> Field<T> {
    let s = string(v, path)?;
    names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            format!(
                "{path}: unknown value `{s}` (expected one of: {})",
                all.join(", ")
            )
        })
}

const DTYPES: &[(&str, DataType)] = &[
    ("uint8", DataType::Uint8),
    ("uint16", DataType::Uint16),
    ("uint32", DataType::Uint32),
    ("int32", DataType::Int32),
    ("uint64", DataType::Uint64),
    ("int64", DataType::Int64),
    ("float16", DataType::Float16),
    ("float32", DataType::Float32),
    ("float64", DataType::Float64),
    ("bfloat16", DataType::Bfloat16),
    ("float32_ftz", DataType::Float32Ftz),
    ("tfloat32", DataType::Tfloat32),
    ("tfloat32_ftz", DataType::Tfloat32Ftz),
];

const SWIZZLES: &[(&str, Swizzle)] = &[
    ("none", Swizzle::None),
    ("32B", Swizzle::B32),
    ("64B", Swizzle::B64),
    ("128B", Swizzle::B128),
];

const INTERLEAVES: &[(&str, Interleave)] = &[
    ("none", Interleave::None),
    ("16B", Interleave::B16),
    ("32B", Interleave::B32),
];

const PROMOTIONS: &[(&str, L2Promotion)] = &[
    ("none", L2Promotion::None),
    ("64B", L2Promotion::B64),
    ("128B", L2Promotion::B128),
    ("256B", L2Promotion::B256),
];

const FILLS: &[(&str, OobFill)] = &[
    ("none", OobFill::None),
    ("nan_request_zero_fma", OobFill::NanRequestZeroFma),
];

fn tensor_map_spec(v: &Value, path: &str) -> Field<TensorMapSpec> {
    let m = object(v, path)?;
    known_keys(
        m,
        path,
        &[
            "buffer",
            "dtype",
            "dims",
            "strides_bytes",
            "box",
            "element_strides",
            "swizzle",
            "interleave",
            "l2_promotion",
            "oob_fill",
        ],
    )?;
    let field = |k: &str| required(m, path, k).map(|v| (v, join(path, k)));
    let optional = |k: &str, default: &'static str| {
        (
            m.get(k).cloned().unwrap_or(Value::from(default)),
            join(path, k),
        )
    };
    let (buffer, p) = field("buffer")?;
    let buffer = string(buffer, &p)?.to_string();
    let (dtype, p) = field("dtype")?;
    let dtype = choice(dtype, &p, DTYPES)?;
    let (dims, p) = field("dims")?;
    let dims = unsigned_array(dims, &p, u64::MAX)?;
    let (strides, p) = field("strides_bytes")?;
    let strides_bytes = unsigned_array(strides, &p, u64::MAX)?;
    let (box_dims, p) = field("box")?;
    let box_dims = unsigned_array(box_dims, &p, u64::from(u32::MAX))?;
    let element_strides = match m.get("element_strides") {
        Some(v) => unsigned_array(v, &join(path, "element_strides"), u64::from(u32::MAX))?,
        None => vec![1; dims.len()],
    };
    let (v, p) = optional("swizzle", "none");
    let swizzle = choice(&v, &p, SWIZZLES)?;
    let (v, p) = optional("interleave", "none");
    let interleave = choice(&v, &p, INTERLEAVES)?;
    let (v, p) = optional("l2_promotion", "none");
    let l2_promotion = choice(&v, &p, PROMOTIONS)?;
    let (v, p) = optional("oob_fill", "none");
    let oob_fill = choice(&v, &p, FILLS)?;
    Ok(TensorMapSpec {
        buffer,
        dtype,
        dims,
        strides_bytes,
        box_dims: box_dims.into_iter().map(|b| b as u32).collect(),
        element_strides: element_strides.into_iter().map(|e| e as u32).collect(),
        swizzle,
        interleave,
        l2_promotion,
        oob_fill,
    })
}

fn param(v: &Value, path: &str) -> Field<ParamSpec> {
    let m = object(v, path)?;
    if m.len() != 1 {
        return Err(format!(
            "{path}: expected exactly one of ptr, u32, i32, u64, f32, tensor_map, found {} fields",
            m.len()
        ));
    }
    let (key, v) = m.iter().next().expect("one field");
    let p = join(path, key);
    Ok(match key.as_str() {
        "ptr" => match v {
            Value::Null => ParamSpec::Ptr(None),
            v => ParamSpec::Ptr(Some(string(v, &p)?.to_string())),
        },
        "u32" => ParamSpec::U32(unsigned(v, &p, u64::from(u32::MAX))? as u32),
        "u64" => ParamSpec::U64(unsigned(v, &p, u64::MAX)?),
        "i32" => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => ParamSpec::U32(n as i32 as u32),
            _ => return Err(format!("{p}: expected a 32-bit signed integer, found {v}")),
        },
        "f32" => match v.as_f64() {
            Some(x) => ParamSpec::F32(x as f32),
            None => return Err(format!("{p}: expected a number, found {}", kind(v))),
        },
        "tensor_map" => ParamSpec::TensorMap(tensor_map_spec(v, &p)?),
        other => {
            return Err(format!(
                "{path}: unknown parameter kind `{other}` (expected one of: ptr, u32, i32, \
                 u64, f32, tensor_map)"
            ));
        }
    })
}

impl LaunchFile {
    /// Parses a launch file; an error names the field (or the JSON line and column).
    pub fn parse(text: &str) -> Result<LaunchFile, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let m = object(&root, "the launch file")?;
        known_keys(
            m,
            "",
            &[
                "entry",
                "grid",
                "block",
                "cluster",
                "dynamic_shared_bytes",
                "allocate",
                "params",
            ],
        )?;
        let entry = string(required(m, "", "entry")?, "entry")?.to_string();
        let grid = dim3(m, "grid", None)?;
        let block = dim3(m, "block", None)?;
        let cluster = dim3(m, "cluster", Some([1, 1, 1]))?;
        let dynamic_shared_bytes = match m.get("dynamic_shared_bytes") {
            Some(v) => unsigned(v, "dynamic_shared_bytes", u64::from(u32::MAX))? as u32,
            None => 0,
        };
        let mut allocate = BTreeMap::new();
        if let Some(v) = m.get("allocate") {
            for (name, bytes) in object(v, "allocate")? {
                let bytes = unsigned(bytes, &format!("allocate.{name}"), u64::MAX)?;
                allocate.insert(name.clone(), bytes);
            }
        }
        let params = match m.get("params") {
            Some(v) => array(v, "params")?
                .iter()
                .enumerate()
                .map(|(i, p)| param(p, &format!("params[{i}]")))
                .collect::<Field<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(LaunchFile {
            entry,
            config: LaunchConfig {
                grid,
                block,
                cluster,
                dynamic_shared_bytes,
            },
            allocate,
            params,
        })
    }

    /// The launch file's JSON text (what [`LaunchFile::parse`] reads back).
    pub fn to_json(&self) -> String {
        fn name<T: PartialEq + Copy>(names: &[(&str, T)], v: T) -> String {
            names
                .iter()
                .find(|(_, t)| *t == v)
                .map(|(n, _)| n.to_string())
                .expect("every value has a name")
        }
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|p| match p {
                ParamSpec::Ptr(b) => serde_json::json!({ "ptr": b }),
                ParamSpec::U32(v) => serde_json::json!({ "u32": v }),
                ParamSpec::U64(v) => serde_json::json!({ "u64": v }),
                ParamSpec::F32(v) => serde_json::json!({ "f32": v }),
                ParamSpec::TensorMap(t) => serde_json::json!({ "tensor_map": {
                    "buffer": t.buffer,
                    "dtype": name(DTYPES, t.dtype),
                    "dims": t.dims,
                    "strides_bytes": t.strides_bytes,
                    "box": t.box_dims,
                    "element_strides": t.element_strides,
                    "swizzle": name(SWIZZLES, t.swizzle),
                    "interleave": name(INTERLEAVES, t.interleave),
                    "l2_promotion": name(PROMOTIONS, t.l2_promotion),
                    "oob_fill": name(FILLS, t.oob_fill),
                }}),
            })
            .collect();
        let c = &self.config;
        let doc = serde_json::json!({
            "entry": self.entry,
            "grid": c.grid,
            "block": c.block,
            "cluster": c.cluster,
            "dynamic_shared_bytes": c.dynamic_shared_bytes,
            "allocate": self.allocate,
            "params": params,
        });
        serde_json::to_string_pretty(&doc).expect("serializable") + "\n"
    }

    /// The parameter values over buffers at `addresses` (by name): pointers resolved, tensor
    /// maps encoded with `cuTensorMapEncodeTiled`'s checks. An error names the parameter.
    fn param_values(&self, addresses: &BTreeMap<String, u64>) -> Result<Vec<ParamValue>, String> {
        let address = |name: &str, path: &str| {
            addresses.get(name).copied().ok_or_else(|| {
                let known: Vec<&str> = addresses.keys().map(String::as_str).collect();
                format!(
                    "{path}: no buffer `{name}` (buffers: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            })
        };
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(match p {
                    ParamSpec::Ptr(None) => ParamValue::U64(0),
                    ParamSpec::Ptr(Some(name)) => {
                        ParamValue::U64(address(name, &format!("params[{i}].ptr"))?)
                    }
                    ParamSpec::U32(v) => ParamValue::U32(*v),
                    ParamSpec::U64(v) => ParamValue::U64(*v),
                    ParamSpec::F32(v) => ParamValue::F32(*v),
                    ParamSpec::TensorMap(t) => {
                        let path = format!("params[{i}].tensor_map");
                        let base = address(&t.buffer, &format!("{path}.buffer"))?;
                        let map = TensorMap::encode_tiled(
                            t.dtype,
                            t.dims.len() as u32,
                            base,
                            &t.dims,
                            &t.strides_bytes,
                            &t.box_dims,
                            &t.element_strides,
                            t.interleave,
                            t.swizzle,
                            t.l2_promotion,
                            t.oob_fill,
                        )
                        .map_err(|m| format!("{path}: {m}"))?;
                        ParamValue::Bytes(map.to_bytes().to_vec())
                    }
                })
            })
            .collect()
    }
}

/// What [`LaunchFile::run`] gives back.
#[derive(Debug, Clone)]
pub struct Emulated {
    /// Every buffer after the launch, by name.
    pub buffers: BTreeMap<String, Vec<u8>>,
    /// The launch's profile.
    pub profile: LaunchProfile,
}

impl LaunchFile {
    /// Runs the launch on `module` over `inputs` (raw bytes by name) plus the `allocate`d
    /// buffers; returns every buffer afterwards and the profile. Errors name the field, the
    /// buffer, or (from the emulator) the kernel, PTX line and thread.
    pub fn run(
        &self,
        module: &Module,
        inputs: &BTreeMap<String, Vec<u8>>,
        options: &LaunchOptions,
    ) -> Result<Emulated, String> {
        let buffers = Buffers::new(self, inputs)?;
        let params = self.param_values(&buffers.addresses())?;
        let profile = crate::launch::launch(
            module,
            &self.entry,
            &buffers.memory,
            &self.config,
            &params,
            options,
        )
        .map_err(|e| e.to_string())?;
        Ok(Emulated {
            buffers: buffers.read_all()?,
            profile,
        })
    }
}

/// Device buffers by name, for one launch: the given tensors uploaded and the file's
/// `allocate`d ones zeroed.
pub struct Buffers {
    /// The device memory.
    pub memory: GlobalMemory,
    /// Each buffer's device address and size.
    pub layout: BTreeMap<String, (u64, u64)>,
}

impl Buffers {
    /// Uploads `inputs` and allocates the launch file's zeroed buffers; a name given twice is an
    /// error.
    pub fn new(launch: &LaunchFile, inputs: &BTreeMap<String, Vec<u8>>) -> Result<Buffers, String> {
        let mut memory = GlobalMemory::new();
        let mut layout = BTreeMap::new();
        for (name, bytes) in inputs {
            let a = memory.allocate(bytes.len() as u64);
            memory.write(a, bytes).map_err(|e| e.to_string())?;
            layout.insert(name.clone(), (a, bytes.len() as u64));
        }
        for (name, &bytes) in &launch.allocate {
            if layout.contains_key(name) {
                return Err(format!(
                    "allocate.{name}: a buffer `{name}` is already given as an input"
                ));
            }
            layout.insert(name.clone(), (memory.allocate(bytes), bytes));
        }
        Ok(Buffers { memory, layout })
    }

    /// Each buffer's device address.
    pub fn addresses(&self) -> BTreeMap<String, u64> {
        self.layout
            .iter()
            .map(|(n, &(a, _))| (n.clone(), a))
            .collect()
    }

    /// Reads every buffer back.
    fn read_all(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.layout
            .iter()
            .map(|(name, &(a, n))| {
                let mut out = vec![0u8; n as usize];
                self.memory.read(a, &mut out).map_err(|e| e.to_string())?;
                Ok((name.clone(), out))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"entry": "k", "grid": [132, 1, 1], "block": [384, 1, 1],
        "cluster": [2, 1, 1], "dynamic_shared_bytes": 216832, "allocate": {"d": 64},
        "params": [{"ptr": "sfb"}, {"ptr": null}, {"u32": 4096}, {"i32": -1}, {"f32": 0.5},
          {"tensor_map": {"buffer": "a", "dtype": "uint8", "dims": [16384, 4096],
           "strides_bytes": [16384], "box": [128, 256], "element_strides": [1, 1],
           "swizzle": "128B", "interleave": "none", "l2_promotion": "256B", "oob_fill": "none"}}]}"#;

    #[test]
    fn the_documented_example_parses() {
        let f = LaunchFile::parse(MINIMAL).unwrap();
        assert_eq!(f.config.cluster, [2, 1, 1]);
        assert_eq!(f.config.dynamic_shared_bytes, 216832);
        assert_eq!(f.allocate["d"], 64);
        assert_eq!(f.params[3], ParamSpec::U32(u32::MAX));
        let ParamSpec::TensorMap(t) = &f.params[5] else {
            panic!("{:?}", f.params[5]);
        };
        assert_eq!(
            (t.swizzle, t.l2_promotion),
            (Swizzle::B128, L2Promotion::B256)
        );
        assert_eq!(t.box_dims, [128, 256]);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |from: &str, to: &str| LaunchFile::parse(&MINIMAL.replace(from, to)).unwrap_err();
        assert_eq!(
            bad(r#""swizzle": "128B""#, r#""swizzle": "256B""#),
            "params[5].tensor_map.swizzle: unknown value `256B` (expected one of: none, 32B, 64B, 128B)"
        );
        assert_eq!(
            bad(r#""grid": [132, 1, 1]"#, r#""grid": [132, 1]"#),
            "grid: expected 3 entries [x, y, z], found 2"
        );
        assert_eq!(
            bad(r#"{"u32": 4096}"#, r#"{"u32": -1}"#),
            "params[2].u32: expected an unsigned integer, found -1"
        );
        assert_eq!(
            bad(r#""box": [128, 256]"#, r#""box": [128, "x"]"#),
            "params[5].tensor_map.box[1]: expected an unsigned integer, found a string"
        );
        assert_eq!(
            bad(r#""entry": "k""#, r#""entri": "k""#),
            "entri: unknown field `entri` (expected one of: entry, grid, block, cluster, \
             dynamic_shared_bytes, allocate, params)"
        );
        assert_eq!(
            bad(r#"{"ptr": null}"#, r#"{"pointer": null}"#),
            "params[1]: unknown parameter kind `pointer` (expected one of: ptr, u32, i32, u64, \
             f32, tensor_map)"
        );
        assert!(bad("\"entry\"", "entry").contains("line 1 column"));
    }

    #[test]
    fn the_json_text_round_trips() {
        let f = LaunchFile::parse(MINIMAL).unwrap();
        assert_eq!(LaunchFile::parse(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn params_resolve_buffers_and_encode_maps() {
        let f = LaunchFile::parse(MINIMAL).unwrap();
        let mut addresses = BTreeMap::from([("sfb".to_string(), 0x7000_0000_0000u64)]);
        assert_eq!(
            f.param_values(&addresses).unwrap_err(),
            "params[5].tensor_map.buffer: no buffer `a` (buffers: sfb)"
        );
        addresses.insert("a".into(), 0x7000_0001_0000);
        let v = f.param_values(&addresses).unwrap();
        assert_eq!(v[0], ParamValue::U64(0x7000_0000_0000));
        assert_eq!(v[1], ParamValue::U64(0));
        let ParamValue::Bytes(b) = &v[5] else {
            panic!()
        };
        let map = TensorMap::from_bytes(b).unwrap();
        assert_eq!(map.global_address, 0x7000_0001_0000);
        assert_eq!(map.global_dims[..2], [16384, 4096]);
        let bad = LaunchFile::parse(&MINIMAL.replace("[128, 256]", "[128, 512]")).unwrap();
        assert!(
            bad.param_values(&addresses)
                .unwrap_err()
                .starts_with("params[5].tensor_map: boxDim[1] = 512"),
        );
    }
}
