//! Host tensors: the runtime's in-memory form of weights, inputs and outputs.
//!
//! A float tensor of any high dtype (f32, bf16, f16) holds f32 values that are exactly
//! representable in its dtype: bf16 and f16 are widened exactly, and the runtime rounds at op
//! boundaries (round to nearest even, as DESIGN.md §3 fixes). Integer and bool tensors hold
//! i32 values (an i64 tensor's values must fit in i32). FP8 tensors hold their raw codes; their
//! scales are separate tensors.
//!
//! Conversions to and from safetensors bytes live here too: reading a checkpoint or inputs
//! file into a tensor of a given IR dtype, and writing tensors (outputs, weights) back.

use std::path::Path;

use dsc_ir::DType;
use dsc_ir::atomic_write::{WriteFailure, write_file_atomically};
use dsc_kernels::numerics::bf16::{from_bf16_bits, to_bf16};
use half::f16;
use safetensors::Dtype as StDtype;

use crate::error::RuntimeError;

/// The elements of a host tensor.
#[derive(Clone, PartialEq)]
pub enum HostData {
    /// f32, bf16 and f16 tensors: values exactly representable in the tensor's dtype.
    F32(Vec<f32>),
    /// i32, i64 and bool tensors (bool as 0 or 1).
    I32(Vec<i32>),
    /// f8e4m3 and f8e5m2 tensors: one raw code per element.
    Codes(Vec<u8>),
}

impl std::fmt::Debug for HostData {
    /// The variant, the length and the first few elements (a weight can hold millions).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 8;
        fn head<T: std::fmt::Debug>(v: &[T]) -> &[T] {
            &v[..v.len().min(SHOWN)]
        }
        let (variant, shown) = match self {
            HostData::F32(v) => ("F32", format!("{:?}", head(v))),
            HostData::I32(v) => ("I32", format!("{:?}", head(v))),
            HostData::Codes(v) => ("Codes", format!("{:x?}", head(v))),
        };
        let more = if self.len() > SHOWN { " …" } else { "" };
        write!(f, "{variant}(len {}: {shown}{more})", self.len())
    }
}

impl HostData {
    /// The element count.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::Codes(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The variant's name, for messages.
    fn kind(&self) -> &'static str {
        match self {
            HostData::F32(_) => "f32 values",
            HostData::I32(_) => "i32 values",
            HostData::Codes(_) => "FP8 codes",
        }
    }
}

/// A tensor in host memory: dtype, shape (outermost first) and row-major elements.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// Which [`HostData`] variant a dtype is held in.
fn storage_kind(dtype: DType) -> &'static str {
    if dtype.is_fp8() {
        "FP8 codes"
    } else if dtype.is_float() {
        "f32 values"
    } else {
        "i32 values"
    }
}

fn tensor_err(message: String) -> RuntimeError {
    RuntimeError::Tensor { message }
}

/// Rounds `x` to the nearest value of the high float dtype `dtype` (ties to even) and returns it
/// widened back to f32; f32 and non-float dtypes return `x` unchanged.
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::Bf16 => to_bf16(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::F12E5M6 => dsc_kernels::numerics::e5m6::round(x),
        _ => x,
    }
}

/// Rounds every element in place as [`round_to`] does.
pub fn round_slice(dtype: DType, xs: &mut [f32]) {
    match dtype {
        DType::Bf16 | DType::F16 | DType::F12E5M6 => {
            xs.iter_mut().for_each(|x| *x = round_to(dtype, *x))
        }
        _ => {}
    }
}

/// The safetensors dtype an IR dtype is stored as.
pub fn safetensors_dtype(dtype: DType) -> StDtype {
    match dtype {
        DType::F32 => StDtype::F32,
        DType::Bf16 => StDtype::BF16,
        // Every E5M6 value is exactly an FP16 value.
        DType::F16 | DType::F12E5M6 => StDtype::F16,
        DType::F8E4M3 => StDtype::F8_E4M3,
        DType::F8E5M2 => StDtype::F8_E5M2,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::Bool => StDtype::BOOL,
    }
}

impl HostTensor {
    /// A tensor from its parts; the data's variant must be the one `dtype` is held in and its
    /// length the shape's element count.
    pub fn new(dtype: DType, shape: Vec<usize>, data: HostData) -> Result<Self, RuntimeError> {
        let t = HostTensor { dtype, shape, data };
        if t.data.kind() != storage_kind(dtype) {
            return Err(tensor_err(format!(
                "a {dtype} tensor holds {}, not {}",
                storage_kind(dtype),
                t.data.kind()
            )));
        }
        if t.data.len() != t.numel() {
            return Err(tensor_err(format!(
                "shape {:?} has {} elements but {} were given",
                t.shape,
                t.numel(),
                t.data.len()
            )));
        }
        Ok(t)
    }

    /// A high float tensor from f32 values, each rounded to `dtype` (ties to even).
    pub fn from_f32(
        dtype: DType,
        shape: Vec<usize>,
        mut values: Vec<f32>,
    ) -> Result<Self, RuntimeError> {
        if !dtype.is_high_float() {
            return Err(tensor_err(format!(
                "from_f32 needs f32, bf16 or f16, not {dtype}"
            )));
        }
        round_slice(dtype, &mut values);
        Self::new(dtype, shape, HostData::F32(values))
    }

    /// An integer or bool tensor from i32 values.
    pub fn from_i32(
        dtype: DType,
        shape: Vec<usize>,
        values: Vec<i32>,
    ) -> Result<Self, RuntimeError> {
        Self::new(dtype, shape, HostData::I32(values))
    }

    /// An FP8 tensor from raw codes.
    pub fn from_codes(
        dtype: DType,
        shape: Vec<usize>,
        codes: Vec<u8>,
    ) -> Result<Self, RuntimeError> {
        Self::new(dtype, shape, HostData::Codes(codes))
    }

    /// A tensor of zeros (code 0 for FP8, which is +0 in both formats).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        let data = if dtype.is_fp8() {
            HostData::Codes(vec![0; n])
        } else if dtype.is_float() {
            HostData::F32(vec![0.0; n])
        } else {
            HostData::I32(vec![0; n])
        };
        HostTensor { dtype, shape, data }
    }

    /// The element count (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn wrong_kind(&self, want: &str) -> RuntimeError {
        tensor_err(format!(
            "expected {want}, but this {} tensor of shape {:?} holds {}",
            self.dtype,
            self.shape,
            self.data.kind()
        ))
    }

    /// The values of a high float tensor.
    pub fn as_f32(&self) -> Result<&[f32], RuntimeError> {
        match &self.data {
            HostData::F32(v) => Ok(v),
            _ => Err(self.wrong_kind("f32 values")),
        }
    }

    /// The values of a high float tensor, mutably (the caller keeps them representable).
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32], RuntimeError> {
        if !matches!(self.data, HostData::F32(_)) {
            return Err(self.wrong_kind("f32 values"));
        }
        match &mut self.data {
            HostData::F32(v) => Ok(v),
            _ => unreachable!("checked above"),
        }
    }

    /// The values of an integer or bool tensor.
    pub fn as_i32(&self) -> Result<&[i32], RuntimeError> {
        match &self.data {
            HostData::I32(v) => Ok(v),
            _ => Err(self.wrong_kind("i32 values")),
        }
    }

    /// The codes of an FP8 tensor.
    pub fn as_codes(&self) -> Result<&[u8], RuntimeError> {
        match &self.data {
            HostData::Codes(v) => Ok(v),
            _ => Err(self.wrong_kind("FP8 codes")),
        }
    }

    /// Every element as f32: float values as they are, integers converted, FP8 codes decoded
    /// (without any block scale). For comparisons and reports.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            HostData::Codes(v) => {
                let fmt = dsc_kernels::Fp8Format::from_dtype(self.dtype)
                    .unwrap_or(dsc_kernels::Fp8Format::E4M3);
                v.iter()
                    .map(|&c| dsc_kernels::numerics::fp8::decode(fmt, c))
                    .collect()
            }
        }
    }

    /// Slice `i` of the outermost axis (shape without its first dimension), e.g. one expert of
    /// a grouped `[E, N, K]` weight.
    pub fn outer_slice(&self, i: usize) -> Result<HostTensor, RuntimeError> {
        let Some((&outer, inner)) = self.shape.split_first() else {
            return Err(tensor_err("a scalar has no outer axis to slice".into()));
        };
        if i >= outer {
            return Err(tensor_err(format!(
                "slice {i} of an outer axis of size {outer}"
            )));
        }
        let size: usize = inner.iter().product();
        let range = i * size..(i + 1) * size;
        let data = match &self.data {
            HostData::F32(v) => HostData::F32(v[range].to_vec()),
            HostData::I32(v) => HostData::I32(v[range].to_vec()),
            HostData::Codes(v) => HostData::Codes(v[range].to_vec()),
        };
        Ok(HostTensor {
            dtype: self.dtype,
            shape: inner.to_vec(),
            data,
        })
    }

    /// The safetensors dtype this tensor is written as.
    pub fn safetensors_dtype(&self) -> StDtype {
        safetensors_dtype(self.dtype)
    }

    /// The little-endian bytes of the tensor as safetensors stores its dtype: bf16 as BF16,
    /// f16 (and the emulated E5M6, whose values are FP16 values) as F16, f32 as F32, FP8 codes as
    /// F8_E4M3/F8_E5M2, i32 as I32, i64 as I64, bool as BOOL.
    pub fn to_safetensors_bytes(&self) -> Vec<u8> {
        match (&self.data, self.dtype) {
            (HostData::F32(v), DType::Bf16) => v
                .iter()
                .flat_map(|&x| to_bf16(x).to_bits().to_le_bytes())
                .collect(),
            (HostData::F32(v), DType::F16 | DType::F12E5M6) => v
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
                .collect(),
            (HostData::F32(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (HostData::I32(v), DType::I64) => {
                v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect()
            }
            (HostData::I32(v), DType::Bool) => v.iter().map(|&x| u8::from(x != 0)).collect(),
            (HostData::I32(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (HostData::Codes(v), _) => v.clone(),
        }
    }

    /// Reads safetensors data of dtype `src` and shape `shape` as a tensor of the IR dtype
    /// `dtype`: BF16/F16/F32 into any high float dtype (rounding to it), integer types into
    /// i32/i64 (values must fit in i32), BOOL into bool, and FP8 codes only into the same FP8
    /// format. The error says what does not convert.
    pub fn from_safetensors(
        src: StDtype,
        shape: &[usize],
        bytes: &[u8],
        dtype: DType,
    ) -> Result<Self, RuntimeError> {
        let data = convert(src, bytes, dtype).map_err(tensor_err)?;
        Self::new(dtype, shape.to_vec(), data)
    }
}

/// True when checkpoint data of dtype `src` can become a tensor of the IR dtype `dtype` through
/// [`HostTensor::from_safetensors`].
pub fn converts_to(src: StDtype, dtype: DType) -> bool {
    use StDtype as S;
    match dtype {
        DType::F32 | DType::Bf16 | DType::F16 => matches!(src, S::BF16 | S::F16 | S::F32),
        DType::F8E4M3 => src == S::F8_E4M3,
        DType::F8E5M2 => src == S::F8_E5M2,
        // An intermediate of the training step (the cached o_proj input), never read from a file.
        DType::F12E5M6 => false,
        DType::I32 | DType::I64 => matches!(
            src,
            S::I8 | S::I16 | S::I32 | S::I64 | S::U8 | S::U16 | S::U32 | S::U64
        ),
        DType::Bool => src == S::BOOL,
    }
}

/// Decodes little-endian elements of `N` bytes each.
fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

/// Reads safetensors bytes of dtype `src` as f32 values: exact for BF16, F16 and F32.
pub fn read_f32(src: StDtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match src {
        StDtype::BF16 => le(bytes, |b| from_bf16_bits(u16::from_le_bytes(b))),
        StDtype::F16 => le(bytes, |b| f16::from_bits(u16::from_le_bytes(b)).to_f32()),
        StDtype::F32 => le(bytes, f32::from_le_bytes),
        _ => return None,
    })
}

/// Reads safetensors integer bytes as i64 values.
fn read_ints(src: StDtype, bytes: &[u8]) -> Option<Vec<i64>> {
    Some(match src {
        StDtype::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
        StDtype::U8 => bytes.iter().map(|&b| i64::from(b)).collect(),
        StDtype::I16 => le(bytes, |b| i64::from(i16::from_le_bytes(b))),
        StDtype::U16 => le(bytes, |b| i64::from(u16::from_le_bytes(b))),
        StDtype::I32 => le(bytes, |b| i64::from(i32::from_le_bytes(b))),
        StDtype::U32 => le(bytes, |b| i64::from(u32::from_le_bytes(b))),
        StDtype::I64 => le(bytes, i64::from_le_bytes),
        StDtype::U64 => le(bytes, |b| {
            i64::try_from(u64::from_le_bytes(b)).unwrap_or(i64::MAX)
        }),
        _ => return None,
    })
}

/// Converts safetensors bytes to the storage of `dtype`; the error is a sentence.
pub(crate) fn convert(src: StDtype, bytes: &[u8], dtype: DType) -> Result<HostData, String> {
    if !converts_to(src, dtype) {
        return Err(format!("{src} data cannot be read as {dtype}"));
    }
    if dtype.is_fp8() {
        return Ok(HostData::Codes(bytes.to_vec()));
    }
    if dtype.is_float() {
        let mut v = read_f32(src, bytes).ok_or_else(|| format!("{src} is not a float dtype"))?;
        round_slice(dtype, &mut v);
        return Ok(HostData::F32(v));
    }
    if dtype == DType::Bool {
        return Ok(HostData::I32(
            bytes.iter().map(|&b| i32::from(b != 0)).collect(),
        ));
    }
    let ints = read_ints(src, bytes).ok_or_else(|| format!("{src} is not an integer dtype"))?;
    ints.into_iter()
        .map(|x| {
            i32::try_from(x).map_err(|_| {
                format!("value {x} does not fit in i32 (the runtime holds {dtype} as i32)")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(HostData::I32)
}

/// One tensor to write: its bytes in safetensors form.
struct Raw {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes named tensors as one safetensors file, atomically (a temporary file in the same
/// folder, then a rename). Names must be unique.
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
) -> Result<(), RuntimeError> {
    let write_err = |message: String| RuntimeError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut raws: Vec<(String, Raw)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, t) in tensors {
        if !seen.insert(name) {
            return Err(write_err(format!("tensor `{name}` is given twice")));
        }
        let raw = Raw {
            dtype: t.safetensors_dtype(),
            shape: t.shape.clone(),
            bytes: t.to_safetensors_bytes(),
        };
        raws.push((name.to_string(), raw));
    }
    let views = raws.iter().map(|(n, r)| (n.as_str(), r));
    write_file_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, None, tmp).map_err(|e| write_err(e.to_string()))
    })
}

/// A failed atomic write, as the runtime reports it: the path and why.
impl From<WriteFailure> for RuntimeError {
    fn from(failure: WriteFailure) -> Self {
        RuntimeError::Write {
            path: failure.path,
            message: failure.error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_kind_and_length() {
        let t = HostTensor::from_f32(DType::Bf16, vec![2, 2], vec![1.0, 1.001, -3.0, 0.5]).unwrap();
        assert_eq!(t.numel(), 4);
        // 1.001 rounds to the nearest bf16 (1.0).
        assert_eq!(t.as_f32().unwrap(), &[1.0, 1.0, -3.0, 0.5]);
        let e = t.as_codes().unwrap_err().to_string();
        assert!(e.contains("expected FP8 codes"), "{e}");
        let e = t.as_i32().unwrap_err().to_string();
        assert!(
            e.contains("expected i32 values") && e.contains("bf16"),
            "{e}"
        );
        let e = HostTensor::new(DType::F32, vec![3], HostData::F32(vec![0.0; 2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 elements but 2 were given"), "{e}");
        let e = HostTensor::new(DType::F8E4M3, vec![2], HostData::F32(vec![0.0; 2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a f8e4m3 tensor holds"), "{e}");
        assert!(HostTensor::from_i32(DType::I64, vec![2], vec![1, 2]).is_ok());
        assert_eq!(
            HostTensor::zeros(DType::F8E5M2, vec![3])
                .as_codes()
                .unwrap(),
            &[0; 3]
        );
        assert_eq!(HostTensor::zeros(DType::F32, vec![]).numel(), 1);
    }

    #[test]
    fn safetensors_bytes_round_trip() {
        let cases = [
            HostTensor::from_f32(DType::Bf16, vec![3], vec![1.5, -2.0, 3.0e-3]).unwrap(),
            HostTensor::from_f32(DType::F16, vec![2], vec![0.1, 65504.0]).unwrap(),
            HostTensor::from_f32(DType::F32, vec![2], vec![0.1, -7.0]).unwrap(),
            HostTensor::from_i32(DType::I32, vec![2], vec![-5, 7]).unwrap(),
            HostTensor::from_i32(DType::I64, vec![2], vec![-5, 7]).unwrap(),
            HostTensor::from_i32(DType::Bool, vec![2], vec![0, 1]).unwrap(),
            HostTensor::from_codes(DType::F8E4M3, vec![2], vec![0x38, 0x7e]).unwrap(),
            HostTensor::from_codes(DType::F8E5M2, vec![1], vec![0x3c]).unwrap(),
        ];
        for t in cases {
            let bytes = t.to_safetensors_bytes();
            assert_eq!(bytes.len(), t.numel() * t.dtype.size_bytes() as usize);
            let back =
                HostTensor::from_safetensors(t.safetensors_dtype(), &t.shape, &bytes, t.dtype)
                    .unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn conversions_round_and_refuse() {
        let bytes: Vec<u8> = [1.0f32 + 2f32.powi(-8), 2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = HostTensor::from_safetensors(StDtype::F32, &[2], &bytes, DType::Bf16).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0]);
        let e = HostTensor::from_safetensors(StDtype::I32, &[2], &[0; 8], DType::Bf16).unwrap_err();
        assert!(
            e.to_string().contains("I32 data cannot be read as bf16"),
            "{e}"
        );
        assert!(!converts_to(StDtype::F8_E5M2, DType::F8E4M3));
        let big: Vec<u8> = i64::MAX.to_le_bytes().to_vec();
        let e = HostTensor::from_safetensors(StDtype::I64, &[1], &big, DType::I64).unwrap_err();
        assert!(e.to_string().contains("does not fit in i32"), "{e}");
    }
}
