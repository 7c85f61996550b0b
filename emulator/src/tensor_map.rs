//! Tensor maps and TMA box copies: what `cp.async.bulk.tensor` needs.
//!
//! A real `CUtensorMap` is an opaque 128-byte object built by the driver's
//! `cuTensorMapEncodeTiled`. The emulator defines its own 128-byte encoding of the same
//! information ([`TensorMap::to_bytes`] / [`TensorMap::from_bytes`]), so a host (or a test)
//! passes a tensor map to a kernel exactly as on a GPU: as a 128-byte `__grid_constant__`
//! parameter (or a 128-byte object in global memory). The encoding starts with a magic word
//! and a version and ends with a checksum, so a corrupt map, or a real driver-encoded map handed
//! to the emulator, is an error rather than garbage.
//!
//! [`TensorMap::encode_tiled`] checks the requirements that the CUDA driver API documents for
//! `cuTensorMapEncodeTiled` (CUDA Driver API, "Tensor Map Object Management"), each error naming
//! the argument it is about.
//!
//! The copies themselves are pure functions over a closure that reads (or writes) global
//! memory, independent of the interpreter's internals:
//! - [`load_box`]: the `.tile` mode of `cp.async.bulk.tensor.Nd.shared::cluster.global`: the box
//!   at the given coordinates, out-of-bounds elements filled with zero (or the NaN of
//!   `oob_fill = nan_request_zero_fma` for floating-point types), written densely into shared
//!   memory with the map's swizzle applied on shared-memory address bits.
//! - [`store_box`]: the `.tile` mode of `cp.async.bulk.tensor.Nd.global.shared::cta`: the box read
//!   from (swizzled) shared memory, out-of-bounds elements not written.
//!
//! **For `wgmma`**: [`swizzle_offset`] (the 16-byte-chunk XOR swizzle on an address) and
//! [`Swizzle`] (its span, [`Swizzle::span_bytes`], and repeat, [`Swizzle::repeat_bytes`]) are what
//! a shared-memory matrix descriptor's swizzle mode means: the element a wgmma reads at logical
//! byte address `a` of a swizzled tile lies at `swizzle_offset(a, mode)`. A descriptor's 2-bit
//! layout field maps to [`Swizzle`] as 0 → none ("interleave"), 1 → 128B, 2 → 64B, 3 → 32B (PTX ISA,
//! "Matrix Descriptor Format"); that mapping belongs with the descriptor decoder, not here.
//!
//! Not implemented (an error, never a guess): interleaved layouts (`interleave` 16B/32B are
//! accepted by [`TensorMap::encode_tiled`] but [`load_box`]/[`store_box`] refuse them), the
//! `im2col` mode, and the packed sub-byte data types (`16U4_ALIGN8B`, …) and the
//! `128B_ATOM_*` swizzles that newer drivers added for sm_100.
//!
//! Facts used (sources):
//! - requirements and enums: CUDA Driver API reference, `cuTensorMapEncodeTiled` (rank 1..=5,
//!   ≥ 3 with interleave; global address 16-byte aligned, 32 with 32B interleave; dims non-zero
//!   and ≤ 2^32; strides multiples of 16 (32 with 32B interleave) and < 2^40; box dims non-zero
//!   and ≤ 256, `boxDim[0] × element size` a multiple of 16 bytes without interleave; element
//!   strides 1..=8, the first ignored without interleave; `ceil(boxDim[i] / elementStrides[i])`
//!   elements loaded along dimension i; inner box dimension ≤ swizzle span (32/64/128 bytes)
//!   without interleave; 32B interleave requires 32B swizzle; NaN OOB fill only for
//!   floating-point types).
//! - the swizzle: CUTLASS `cute/atom/copy_traits_sm90_tma_swizzle.hpp` maps the TMA modes
//!   128B/64B/32B to CuTe's `Swizzle<3,4,3>`, `Swizzle<2,4,3>`, `Swizzle<1,4,3>` on byte
//!   offsets, and CuTe's `Swizzle<B,M,S>` is `offset ^ ((offset & (((1<<B)-1) << (M+S))) >> S)`:
//!   bits [4, 4+B) of the address are XORed with bits [7, 7+B). The pattern repeats every
//!   `2^(M+S+B)` = 256/512/1024 bytes.
//!
//! Emulator rules where the documents are silent (stated, so they can be checked on a GPU):
//! - The destination shared-memory address must be 128-byte aligned, and aligned to the
//!   swizzle's repeat (256/512/1024 bytes) when swizzling: the hardware swizzles on address bits,
//!   so a tile that does not start at a repeat boundary gets a shifted pattern that no reader
//!   (wgmma descriptors, CUTLASS layouts) expects. The emulator refuses it.
//! - The box is laid out densely in shared memory, innermost dimension first (`boxDim[0]` ×
//!   element size bytes per row, no padding), and the swizzle is applied to each byte's
//!   shared-memory address.
//! - The NaN filled with `nan_request_zero_fma` is the canonical quiet NaN of the type
//!   (f16 `0x7E00`, bf16 `0x7FC0`, f32/tf32 `0x7FC00000`, f64 `0x7FF8000000000000`); the driver
//!   documents only "a special NaN constant".

use std::ops::Range;

// FNV-1a, 32-bit: the encoding's checksum, part of the 128-byte format.
use dsc_kernels::fnv::fnv1a32;

/// Size of an encoded tensor map, as of a `CUtensorMap`.
pub const TENSOR_MAP_BYTES: usize = 128;

/// The magic word at byte 0 of an emulator tensor map.
const TENSOR_MAP_MAGIC: [u8; 4] = *b"dTMA";

/// The encoding's version (byte 4).
const TENSOR_MAP_VERSION: u8 = 1;

/// The maximum tensor rank (`CU_TENSOR_MAP_MAX_RANK`-like: the driver documents ≤ 5).
const MAX_RANK: usize = 5;

/// Declares a fieldless enum that mirrors a driver enum, with `ALL` (every value, indexed by
/// code) and `from_code` made from its one list of variants. The codes must be 0, 1, 2, … in
/// declaration order (checked at compile time), so that `ALL[code]` has that code.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $code:literal,)+
        }
        $(#[$all_meta:meta])*
        $all_vis:vis const ALL;
        $(#[$from_meta:meta])*
        fn from_code;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $code,)+
        }

        impl $name {
            $(#[$all_meta])*
            $all_vis const ALL: [$name; [$($code),+].len()] = [$($name::$variant),+];

            $(#[$from_meta])*
            fn from_code(code: u8) -> Option<$name> {
                Self::ALL.get(code as usize).copied()
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!(
                    $name::ALL[i] as usize == i,
                    concat!(stringify!($name), ": codes must be 0, 1, 2, … in order")
                );
                i += 1;
            }
        };
    };
}

code_enum! {
    /// Element types, in the order (and with the codes) of `CUtensorMapDataType`.
    pub enum DataType {
        /// `CU_TENSOR_MAP_DATA_TYPE_UINT8`, 1 byte.
        Uint8 = 0,
        /// `UINT16`, 2 bytes.
        Uint16 = 1,
        /// `UINT32`, 4 bytes.
        Uint32 = 2,
        /// `INT32`, 4 bytes.
        Int32 = 3,
        /// `UINT64`, 8 bytes.
        Uint64 = 4,
        /// `INT64`, 8 bytes.
        Int64 = 5,
        /// `FLOAT16`, 2 bytes.
        Float16 = 6,
        /// `FLOAT32`, 4 bytes.
        Float32 = 7,
        /// `FLOAT64`, 8 bytes.
        Float64 = 8,
        /// `BFLOAT16`, 2 bytes.
        Bfloat16 = 9,
        /// `FLOAT32_FTZ`, 4 bytes.
        Float32Ftz = 10,
        /// `TFLOAT32`, 4 bytes.
        Tfloat32 = 11,
        /// `TFLOAT32_FTZ`, 4 bytes.
        Tfloat32Ftz = 12,
    }
    /// All types, by code.
    pub const ALL;
    /// The type of a `CUtensorMapDataType` code (the packed sub-byte types 13..=15 are not
    /// supported).
    fn from_code;
}

impl DataType {
    /// The `CUtensorMapDataType` code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Element size in bytes.
    pub fn size_bytes(self) -> u32 {
        match self {
            DataType::Uint8 => 1,
            DataType::Uint16 | DataType::Float16 | DataType::Bfloat16 => 2,
            DataType::Uint32
            | DataType::Int32
            | DataType::Float32
            | DataType::Float32Ftz
            | DataType::Tfloat32
            | DataType::Tfloat32Ftz => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Float64 => 8,
        }
    }

    /// Whether the type is floating point (the only types that may use the NaN OOB fill).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Bfloat16
                | DataType::Float32Ftz
                | DataType::Tfloat32
                | DataType::Tfloat32Ftz
        )
    }

    /// The little-endian bytes of the canonical quiet NaN of a floating-point type (see the
    /// module documentation), `None` for integer types.
    fn nan_bytes(self) -> Option<Vec<u8>> {
        match self {
            DataType::Float16 => Some(0x7E00u16.to_le_bytes().to_vec()),
            DataType::Bfloat16 => Some(0x7FC0u16.to_le_bytes().to_vec()),
            DataType::Float32
            | DataType::Float32Ftz
            | DataType::Tfloat32
            | DataType::Tfloat32Ftz => Some(0x7FC0_0000u32.to_le_bytes().to_vec()),
            DataType::Float64 => Some(0x7FF8_0000_0000_0000u64.to_le_bytes().to_vec()),
            _ => None,
        }
    }
}

code_enum! {
    /// `CUtensorMapInterleave`.
    pub enum Interleave {
        /// `CU_TENSOR_MAP_INTERLEAVE_NONE`.
        None = 0,
        /// `CU_TENSOR_MAP_INTERLEAVE_16B`.
        B16 = 1,
        /// `CU_TENSOR_MAP_INTERLEAVE_32B`.
        B32 = 2,
    }
    const ALL;
    /// The mode of a `CUtensorMapInterleave` code.
    fn from_code;
}

code_enum! {
    /// `CUtensorMapSwizzle` (the sm_90 modes): 16-byte chunks XOR-permuted within a
    /// 32/64/128-byte span.
    pub enum Swizzle {
        /// `CU_TENSOR_MAP_SWIZZLE_NONE`.
        None = 0,
        /// `CU_TENSOR_MAP_SWIZZLE_32B`: address bit 4 ^= bit 7.
        B32 = 1,
        /// `CU_TENSOR_MAP_SWIZZLE_64B`: bits 4..=5 ^= bits 7..=8.
        B64 = 2,
        /// `CU_TENSOR_MAP_SWIZZLE_128B`: bits 4..=6 ^= bits 7..=9.
        B128 = 3,
    }
    const ALL;
    /// The mode of a `CUtensorMapSwizzle` code (`128B_ATOM_*`, codes 4..=6, are not supported).
    fn from_code;
}

impl Swizzle {
    /// The span whose 16-byte chunks are permuted (32, 64, 128 bytes; 0 for none): the most
    /// bytes the box's inner dimension may have.
    pub fn span_bytes(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }

    /// The period of the pattern (256, 512, 1024 bytes; 1 for none): the alignment a swizzled
    /// shared-memory tile needs.
    fn repeat_bytes(self) -> u64 {
        match self {
            Swizzle::None => 1,
            Swizzle::B32 => 256,
            Swizzle::B64 => 512,
            Swizzle::B128 => 1024,
        }
    }

    /// Number of XORed bits (CuTe's `B`): 0, 1, 2, 3.
    fn bits(self) -> u32 {
        self as u32
    }
}

/// The address at which the byte of logical address `address` lies under `mode`: bits
/// [4, 4+B) of the address XORed with bits [7, 7+B), B = 1, 2, 3 for 32B, 64B, 128B
/// (CuTe `Swizzle<B,4,3>`). The map is an involution (applying it twice gives `address`), so
/// the same function maps physical to logical addresses. Reusable for wgmma's shared-memory
/// matrix descriptors.
pub fn swizzle_offset(address: u64, mode: Swizzle) -> u64 {
    let b = mode.bits();
    if b == 0 {
        return address;
    }
    let mask = ((1u64 << b) - 1) << 4;
    address ^ ((address >> 3) & mask)
}

code_enum! {
    /// `CUtensorMapL2promotion`.
    pub enum L2Promotion {
        /// `CU_TENSOR_MAP_L2_PROMOTION_NONE`.
        None = 0,
        /// `L2_64B`.
        B64 = 1,
        /// `L2_128B`.
        B128 = 2,
        /// `L2_256B`.
        B256 = 3,
    }
    const ALL;
    /// The mode of a `CUtensorMapL2promotion` code.
    fn from_code;
}

code_enum! {
    /// `CUtensorMapFloatOOBfill`.
    pub enum OobFill {
        /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`: zeros.
        None = 0,
        /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA`: a NaN (floating-point types only).
        NanRequestZeroFma = 1,
    }
    const ALL;
    /// The mode of a `CUtensorMapFloatOOBfill` code.
    fn from_code;
}

/// A tiled tensor map: what `cuTensorMapEncodeTiled` takes. Arrays are innermost dimension
/// first, as the driver takes them; entries at and beyond `rank` (beyond `rank - 1` for strides)
/// are zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorMap {
    /// Element type.
    pub data_type: DataType,
    /// Number of dimensions, 1..=5.
    pub rank: u32,
    /// Global address of element (0, …, 0).
    pub global_address: u64,
    /// Elements along each dimension.
    pub global_dims: [u64; 5],
    /// Byte stride of dimensions 1..rank (dimension 0 is contiguous): `global_strides_bytes[i]`
    /// is the stride of dimension `i + 1`.
    pub global_strides_bytes: [u64; 4],
    /// Box size along each dimension (elements traversed).
    pub box_dims: [u32; 5],
    /// Traversal stride along each dimension, 1..=8 (the first is ignored without interleave).
    pub element_strides: [u32; 5],
    /// Interleaved layout.
    pub interleave: Interleave,
    /// Shared-memory swizzle.
    pub swizzle: Swizzle,
    /// L2 promotion (no effect in the emulator).
    pub l2_promotion: L2Promotion,
    /// Out-of-bounds fill for floating-point types.
    pub oob_fill: OobFill,
}

impl TensorMap {
    /// Builds a tensor map, checking `cuTensorMapEncodeTiled`'s documented requirements (see
    /// the module documentation); an error names the argument (in the driver's spelling).
    /// `global_dims`, `box_dims` and `element_strides` have `rank` entries, `global_strides` has
    /// `rank - 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_tiled(
        data_type: DataType,
        rank: u32,
        global_address: u64,
        global_dims: &[u64],
        global_strides: &[u64],
        box_dims: &[u32],
        element_strides: &[u32],
        interleave: Interleave,
        swizzle: Swizzle,
        l2_promotion: L2Promotion,
        oob_fill: OobFill,
    ) -> Result<TensorMap, String> {
        let r = rank as usize;
        if !(1..=MAX_RANK).contains(&r) {
            return Err(format!("tensorRank = {rank}: must be 1..=5"));
        }
        if interleave != Interleave::None && r < 3 {
            return Err(format!(
                "tensorRank = {rank}: must be at least 3 when interleave is not NONE"
            ));
        }
        let count = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(format!(
                    "{name}: {len} entries given, tensorRank {rank} needs {want}"
                ))
            }
        };
        count("globalDim", global_dims.len(), r)?;
        count("globalStrides", global_strides.len(), r - 1)?;
        count("boxDim", box_dims.len(), r)?;
        count("elementStrides", element_strides.len(), r)?;

        // Every entry of an array must pass `ok`; the error names the first that does not.
        fn each<T: Copy + std::fmt::Display>(
            name: &str,
            values: &[T],
            ok: impl Fn(T) -> bool,
            rule: &str,
        ) -> Result<(), String> {
            match values.iter().position(|&v| !ok(v)) {
                Some(i) => Err(format!("{name}[{i}] = {}: {rule}", values[i])),
                None => Ok(()),
            }
        }

        let esize = data_type.size_bytes();
        // The global address's alignment and the strides' multiple: 32 bytes with 32B
        // interleave, else 16.
        let align: u64 = if interleave == Interleave::B32 {
            32
        } else {
            16
        };
        if !global_address.is_multiple_of(align) {
            return Err(format!(
                "globalAddress = {global_address:#x}: must be {align}-byte aligned{}",
                if align == 32 {
                    " with 32B interleave"
                } else {
                    ""
                }
            ));
        }
        each(
            "globalDim",
            global_dims,
            |d| d != 0 && d <= 1 << 32,
            "must be non-zero and ≤ 2^32",
        )?;
        each(
            "globalStrides",
            global_strides,
            |s| s.is_multiple_of(align) && s < 1 << 40,
            &format!("must be a multiple of {align} and < 2^40"),
        )?;
        each(
            "boxDim",
            box_dims,
            |b| b != 0 && b <= 256,
            "must be non-zero and ≤ 256",
        )?;
        let inner_bytes = box_dims[0] as u64 * esize as u64;
        if interleave == Interleave::None && !inner_bytes.is_multiple_of(16) {
            return Err(format!(
                "boxDim[0] = {}: boxDim[0] × {esize}-byte elements = {inner_bytes} bytes must be a \
                 multiple of 16 without interleave",
                box_dims[0]
            ));
        }
        each(
            "elementStrides",
            element_strides,
            |e| e != 0 && e <= 8,
            "must be non-zero and ≤ 8",
        )?;
        if interleave == Interleave::None
            && swizzle != Swizzle::None
            && inner_bytes > swizzle.span_bytes() as u64
        {
            return Err(format!(
                "boxDim[0] = {}: the inner box dimension ({inner_bytes} bytes) must be ≤ the \
                 {}-byte span of swizzle {swizzle:?}",
                box_dims[0],
                swizzle.span_bytes()
            ));
        }
        if interleave == Interleave::B32 && swizzle != Swizzle::B32 {
            return Err(format!(
                "swizzle = {swizzle:?}: must be 32B when interleave is 32B"
            ));
        }
        if oob_fill == OobFill::NanRequestZeroFma && !data_type.is_float() {
            return Err(format!(
                "oobFill = NAN_REQUEST_ZERO_FMA: only for floating-point types, not {data_type:?}"
            ));
        }

        let mut map = TensorMap {
            data_type,
            rank,
            global_address,
            global_dims: [0; 5],
            global_strides_bytes: [0; 4],
            box_dims: [0; 5],
            element_strides: [0; 5],
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
        };
        map.global_dims[..r].copy_from_slice(global_dims);
        map.global_strides_bytes[..r - 1].copy_from_slice(global_strides);
        map.box_dims[..r].copy_from_slice(box_dims);
        map.element_strides[..r].copy_from_slice(element_strides);
        Ok(map)
    }

    /// The 128-byte encoding (little-endian):
    ///
    /// | bytes    | field |
    /// |----------|-------|
    /// | 0..4     | magic `b"dTMA"` |
    /// | 4        | version (1) |
    /// | 5        | data type code |
    /// | 6        | rank |
    /// | 7        | interleave code |
    /// | 8        | swizzle code |
    /// | 9        | L2 promotion code |
    /// | 10       | OOB fill code |
    /// | 11..16   | zero |
    /// | 16..24   | global address |
    /// | 24..64   | 5 × u64 global dims |
    /// | 64..96   | 4 × u64 global strides |
    /// | 96..116  | 5 × u32 box dims |
    /// | 116..121 | 5 × u8 element strides |
    /// | 121..124 | zero |
    /// | 124..128 | FNV-1a 32-bit checksum of bytes 0..124 |
    pub fn to_bytes(&self) -> [u8; TENSOR_MAP_BYTES] {
        let mut b = [0u8; TENSOR_MAP_BYTES];
        b[0..4].copy_from_slice(&TENSOR_MAP_MAGIC);
        b[4] = TENSOR_MAP_VERSION;
        b[5] = self.data_type.code();
        b[6] = self.rank as u8;
        b[7] = self.interleave as u8;
        b[8] = self.swizzle as u8;
        b[9] = self.l2_promotion as u8;
        b[10] = self.oob_fill as u8;
        b[16..24].copy_from_slice(&self.global_address.to_le_bytes());
        for (i, d) in self.global_dims.iter().enumerate() {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, s) in self.global_strides_bytes.iter().enumerate() {
            b[64 + 8 * i..72 + 8 * i].copy_from_slice(&s.to_le_bytes());
        }
        for (i, d) in self.box_dims.iter().enumerate() {
            b[96 + 4 * i..100 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, e) in self.element_strides.iter().enumerate() {
            b[116 + i] = *e as u8;
        }
        let sum = fnv1a32(&b[..124]);
        b[124..128].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes [`TensorMap::to_bytes`]'s encoding, checking the magic word, version, checksum
    /// and every `cuTensorMapEncodeTiled` requirement.
    pub fn from_bytes(bytes: &[u8]) -> Result<TensorMap, String> {
        if bytes.len() != TENSOR_MAP_BYTES {
            return Err(format!(
                "tensor map: {} bytes, an emulator tensor map has {TENSOR_MAP_BYTES}",
                bytes.len()
            ));
        }
        if bytes[0..4] != TENSOR_MAP_MAGIC {
            return Err(format!(
                "tensor map: magic {:02x?} is not the emulator's {:?} (a driver-encoded \
                 CUtensorMap, or not a tensor map)",
                &bytes[0..4],
                std::str::from_utf8(&TENSOR_MAP_MAGIC).unwrap_or("?")
            ));
        }
        if bytes[4] != TENSOR_MAP_VERSION {
            return Err(format!(
                "tensor map: version {}, the emulator reads version {TENSOR_MAP_VERSION}",
                bytes[4]
            ));
        }
        let stored = u32::from_le_bytes(bytes[124..128].try_into().expect("4 bytes"));
        let actual = fnv1a32(&bytes[..124]);
        if stored != actual {
            return Err(format!(
                "tensor map: checksum {stored:#010x} does not match its contents ({actual:#010x}): \
                 the map is corrupt"
            ));
        }
        fn field<T>(v: Option<T>, name: &str, code: u8) -> Result<T, String> {
            v.ok_or_else(|| format!("tensor map: unsupported {name} code {code}"))
        }
        let data_type = field(DataType::from_code(bytes[5]), "data type", bytes[5])?;
        let rank = bytes[6] as u32;
        let interleave = field(Interleave::from_code(bytes[7]), "interleave", bytes[7])?;
        let swizzle = field(Swizzle::from_code(bytes[8]), "swizzle", bytes[8])?;
        let l2_promotion = field(L2Promotion::from_code(bytes[9]), "L2 promotion", bytes[9])?;
        let oob_fill = field(OobFill::from_code(bytes[10]), "OOB fill", bytes[10])?;
        if !(1..=MAX_RANK as u32).contains(&rank) {
            return Err(format!("tensor map: tensorRank = {rank}: must be 1..=5"));
        }
        let r = rank as usize;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let global_address = u64_at(16);
        let dims: Vec<u64> = (0..r).map(|i| u64_at(24 + 8 * i)).collect();
        let strides: Vec<u64> = (0..r - 1).map(|i| u64_at(64 + 8 * i)).collect();
        let boxes: Vec<u32> = (0..r).map(|i| u32_at(96 + 4 * i)).collect();
        let estrides: Vec<u32> = (0..r).map(|i| bytes[116 + i] as u32).collect();
        TensorMap::encode_tiled(
            data_type,
            rank,
            global_address,
            &dims,
            &strides,
            &boxes,
            &estrides,
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
        )
        .map_err(|e| format!("tensor map: {e}"))
    }

    /// Elements the box holds along each dimension: `boxDim[0]` along dimension 0 (whose element
    /// stride is ignored without interleave), `ceil(boxDim[i] / elementStrides[i])` along the
    /// others.
    fn box_elements(&self) -> Vec<u64> {
        (0..self.rank as usize)
            .map(|i| {
                if i == 0 && self.interleave == Interleave::None {
                    self.box_dims[0] as u64
                } else {
                    (self.box_dims[i] as u64).div_ceil(self.element_strides[i] as u64)
                }
            })
            .collect()
    }

    /// Bytes of the box in shared memory: the transaction count a load signals on its mbarrier
    /// (out-of-bounds elements included).
    pub fn box_bytes(&self) -> u64 {
        self.box_elements().iter().product::<u64>() * self.data_type.size_bytes() as u64
    }
}

/// Reads global memory: `(address, buffer)` fills `buffer` from `address`, or says why not (a
/// fault naming the address).
pub type ReadGlobal<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), String> + 'a;

/// Writes global memory: `(address, bytes)` stores `bytes` at `address`, or says why not.
pub type WriteGlobal<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// One copy's box, checked for what both directions need ([`load_box`], [`store_box`]): the
/// traversal they share, from the box's rows to global addresses and swizzled shared-memory
/// offsets.
struct BoxCopy<'a> {
    map: &'a TensorMap,
    /// The box's starting coordinates, innermost first.
    coords: &'a [i32],
    /// Elements along each dimension ([`TensorMap::box_elements`]).
    counts: Vec<u64>,
    /// Bytes of one row (the run of dimension 0) in the dense box.
    row_bytes: usize,
    /// Shared-memory address of the slice the box is copied to or from.
    shared_address: u64,
    /// Length of that slice.
    shared_len: usize,
    /// The instruction, for errors.
    what: &'static str,
}

/// One row of the box.
struct BoxRow {
    /// Byte offset of the row's first element in the dense box.
    box_offset: u64,
    /// The row's in-bounds elements: their byte range within the row, and the global address
    /// of the first; `None` when none is in bounds.
    global: Option<(Range<usize>, u64)>,
}

impl<'a> BoxCopy<'a> {
    /// Checks the coordinates, the layout and the shared memory given.
    fn new(
        map: &'a TensorMap,
        coords: &'a [i32],
        shared_len: usize,
        shared_address: u64,
        what: &'static str,
    ) -> Result<BoxCopy<'a>, String> {
        let r = map.rank as usize;
        if coords.len() != r {
            return Err(format!(
                "{what}: {} coordinates for a rank-{r} tensor map",
                coords.len()
            ));
        }
        if map.interleave != Interleave::None {
            return Err(format!(
                "{what}: interleaved tensor maps ({:?}) are not implemented",
                map.interleave
            ));
        }
        let align = 128u64.max(map.swizzle.repeat_bytes());
        if !shared_address.is_multiple_of(align) {
            return Err(format!(
                "{what}: shared-memory address {shared_address:#x} must be {align}-byte aligned{}",
                if map.swizzle == Swizzle::None {
                    String::new()
                } else {
                    format!(" (the repeat of swizzle {:?})", map.swizzle)
                }
            ));
        }
        let total = map.box_bytes();
        if (shared_len as u64) < total {
            return Err(format!(
                "{what}: the box is {total} bytes, only {shared_len} bytes of shared memory given"
            ));
        }
        let counts = map.box_elements();
        let row_bytes = counts[0] as usize * map.data_type.size_bytes() as usize;
        Ok(BoxCopy {
            map,
            coords,
            counts,
            row_bytes,
            shared_address,
            shared_len,
            what,
        })
    }

    /// The box's rows in shared-memory order (outer coordinates, dimension 1 fastest).
    fn rows(&self) -> impl Iterator<Item = BoxRow> + '_ {
        let rows: u64 = self.counts[1..].iter().product();
        (0..rows).map(move |row| BoxRow {
            box_offset: row * self.row_bytes as u64,
            global: self.global_span(row),
        })
    }

    /// Where box row `row` (the linear index of its outer coordinates) lies in global memory:
    /// `None` if an outer coordinate is out of bounds or no element of dimension 0 is in
    /// bounds, else the in-bounds bytes of the row and the global address of the first.
    fn global_span(&self, row: u64) -> Option<(Range<usize>, u64)> {
        let map = self.map;
        let mut address = map.global_address;
        let mut rest = row;
        for d in 1..map.rank as usize {
            let k = rest % self.counts[d];
            rest /= self.counts[d];
            let c = self.coords[d] as i64 + (k * map.element_strides[d] as u64) as i64;
            if c < 0 || c as u64 >= map.global_dims[d] {
                return None;
            }
            address = address.wrapping_add(c as u64 * map.global_strides_bytes[d - 1]);
        }
        let esize = map.data_type.size_bytes() as u64;
        let count0 = self.counts[0] as i64;
        let c0 = self.coords[0] as i64;
        let lo = (-c0).clamp(0, count0);
        let hi = (map.global_dims[0] as i64 - c0).clamp(lo, count0);
        if lo == hi {
            return None;
        }
        let address = address.wrapping_add(((c0 + lo) as u64).wrapping_mul(esize));
        Some((
            lo as usize * esize as usize..hi as usize * esize as usize,
            address,
        ))
    }

    /// Calls `copy(in_row, in_shared)` for each 16-byte chunk of the row at box byte
    /// `box_offset`: bytes `in_row` of the row lie at `in_shared` of the shared-memory slice,
    /// the swizzle applied on the address. Swizzling permutes 16-byte chunks and rows are
    /// multiples of 16 bytes, so a chunk moves whole.
    fn for_each_chunk(
        &self,
        box_offset: u64,
        mut copy: impl FnMut(Range<usize>, Range<usize>),
    ) -> Result<(), String> {
        let (what, len) = (self.what, self.shared_len);
        for start in (0..self.row_bytes).step_by(16) {
            let n = 16.min(self.row_bytes - start);
            let offset = box_offset + start as u64;
            let phys = swizzle_offset(self.shared_address + offset, self.map.swizzle)
                - self.shared_address;
            if phys >= len as u64 {
                return Err(format!(
                    "{what}: swizzled byte {offset} of the box falls at shared offset {phys}, \
                     beyond the {len} bytes given"
                ));
            }
            let at = phys as usize;
            if at + n > len {
                return Err(format!(
                    "{what}: the box overruns the {len} bytes of shared memory given"
                ));
            }
            copy(start..start + n, at..at + n);
        }
        Ok(())
    }
}

/// Copies the box at `coords` (innermost first, may be negative or beyond the tensor) from
/// global memory into shared memory: `dst` is the shared memory starting at the instruction's
/// destination, whose shared-memory address is `dst_shared_address`. Out-of-bounds elements
/// are zero, or the type's NaN with [`OobFill::NanRequestZeroFma`]. Returns the bytes written
/// (the box size, the count to signal on the mbarrier). `read_global(addr, buf)` fills `buf`
/// from global address `addr`; it is called once per in-bounds run of dimension 0.
pub fn load_box(
    map: &TensorMap,
    coords: &[i32],
    read_global: &mut ReadGlobal<'_>,
    dst: &mut [u8],
    dst_shared_address: u64,
) -> Result<u64, String> {
    let plan = BoxCopy::new(
        map,
        coords,
        dst.len(),
        dst_shared_address,
        "cp.async.bulk.tensor (load)",
    )?;
    let fill: Vec<u8> = match (map.oob_fill, map.data_type.nan_bytes()) {
        (OobFill::NanRequestZeroFma, Some(nan)) => nan,
        _ => vec![0; map.data_type.size_bytes() as usize],
    };
    let mut row = vec![0u8; plan.row_bytes];
    for BoxRow { box_offset, global } in plan.rows() {
        for element in row.chunks_exact_mut(fill.len()) {
            element.copy_from_slice(&fill);
        }
        if let Some((bytes, address)) = global {
            read_global(address, &mut row[bytes])?;
        }
        plan.for_each_chunk(box_offset, |in_row, in_shared| {
            dst[in_shared].copy_from_slice(&row[in_row])
        })?;
    }
    Ok(map.box_bytes())
}

/// Copies the box at `coords` from shared memory (`src`, starting at shared-memory address
/// `src_shared_address`, laid out as [`load_box`] writes it, swizzle included) to global
/// memory; out-of-bounds elements are not written. Returns the box's bytes.
/// `write_global(addr, bytes)` writes `bytes` at global address `addr`; it is called once per
/// in-bounds run of dimension 0.
pub fn store_box(
    map: &TensorMap,
    coords: &[i32],
    src: &[u8],
    src_shared_address: u64,
    write_global: &mut WriteGlobal<'_>,
) -> Result<u64, String> {
    let plan = BoxCopy::new(
        map,
        coords,
        src.len(),
        src_shared_address,
        "cp.async.bulk.tensor (store)",
    )?;
    let mut row = vec![0u8; plan.row_bytes];
    for BoxRow { box_offset, global } in plan.rows() {
        let Some((bytes, address)) = global else {
            continue;
        };
        plan.for_each_chunk(box_offset, |in_row, in_shared| {
            row[in_row].copy_from_slice(&src[in_shared])
        })?;
        write_global(address, &row[bytes])?;
    }
    Ok(map.box_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row-major `rows × cols` array of `esize`-byte elements at `base`, as a closure
    /// reading it; element (r, c) holds bytes derived from r·cols + c.
    struct Global {
        base: u64,
        bytes: Vec<u8>,
    }

    impl Global {
        fn new_u16(base: u64, rows: usize, cols: usize, pitch_elems: usize) -> Global {
            let mut bytes = vec![0u8; rows * pitch_elems * 2];
            for r in 0..rows {
                for c in 0..cols {
                    let v = (r * 1000 + c) as u16;
                    let at = (r * pitch_elems + c) * 2;
                    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            Global { base, bytes }
        }
        fn reader(&self) -> impl FnMut(u64, &mut [u8]) -> Result<(), String> + '_ {
            move |addr, buf| {
                let off = addr
                    .checked_sub(self.base)
                    .ok_or_else(|| format!("read below the array at {addr:#x}"))?
                    as usize;
                if off + buf.len() > self.bytes.len() {
                    return Err(format!("read beyond the array at {addr:#x}"));
                }
                buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
                Ok(())
            }
        }
    }

    fn u16_at(b: &[u8], byte: usize) -> u16 {
        u16::from_le_bytes([b[byte], b[byte + 1]])
    }

    fn map2d(
        dt: DataType,
        base: u64,
        dims: [u64; 2],
        stride: u64,
        bx: [u32; 2],
        swizzle: Swizzle,
        oob: OobFill,
    ) -> Result<TensorMap, String> {
        TensorMap::encode_tiled(
            dt,
            2,
            base,
            &dims,
            &[stride],
            &bx,
            &[1, 1],
            Interleave::None,
            swizzle,
            L2Promotion::B128,
            oob,
        )
    }

    /// An 8 × 4 box over a 20 × 10 tensor of 2-byte elements at 0x1000 with a 64-byte pitch
    /// (as [`Global::new_u16`]`(0x1000, 10, 20, 32)` lays out).
    fn map_20x10(dt: DataType, oob: OobFill) -> TensorMap {
        map2d(dt, 0x1000, [20, 10], 64, [8, 4], Swizzle::None, oob).unwrap()
    }

    #[test]
    fn swizzle_offset_matches_the_documented_bit_formula() {
        // Derived by hand from CuTe's Swizzle<B,4,3>: chunk bits [4, 4+B) ^= bits [7, 7+B).
        // 128B: address 0x380 (row 7 of a 1024-byte atom, chunk 0) → chunk 7 → 0x3F0.
        assert_eq!(swizzle_offset(0x380, Swizzle::B128), 0x3F0);
        // row 1, chunk 2, byte 5: 0x80 + 0x20 + 5 = 0xA5 → chunk 2 ^ 1 = 3 → 0x80 + 0x30 + 5.
        assert_eq!(swizzle_offset(0xA5, Swizzle::B128), 0xB5);
        // row 0 is unchanged; bits above 9 are unchanged.
        assert_eq!(swizzle_offset(0x47, Swizzle::B128), 0x47);
        assert_eq!(swizzle_offset(0x400 + 0x380, Swizzle::B128), 0x400 + 0x3F0);
        // 64B: bits [4:5] ^= [7:8]: 0x180 (bits 7,8 set) → chunk 3 → 0x1B0; bit 9 ignored.
        assert_eq!(swizzle_offset(0x180, Swizzle::B64), 0x1B0);
        assert_eq!(swizzle_offset(0x200, Swizzle::B64), 0x200);
        // 32B: bit 4 ^= bit 7.
        assert_eq!(swizzle_offset(0x80, Swizzle::B32), 0x90);
        assert_eq!(swizzle_offset(0x100, Swizzle::B32), 0x100);
        assert_eq!(swizzle_offset(0x1234, Swizzle::None), 0x1234);
        // An involution.
        for a in 0..4096u64 {
            for m in [Swizzle::B32, Swizzle::B64, Swizzle::B128] {
                assert_eq!(swizzle_offset(swizzle_offset(a, m), m), a);
            }
        }
    }

    #[test]
    fn loads_a_box_without_swizzle() {
        // 10 × 20 u16 array, rows padded to 32 elements (64-byte pitch).
        let g = Global::new_u16(0x1000, 10, 20, 32);
        let map = map_20x10(DataType::Uint16, OobFill::None);
        let mut smem = vec![0xAAu8; 64];
        let n = load_box(&map, &[4, 3], &mut g.reader(), &mut smem, 0x400).unwrap();
        assert_eq!(n, 64);
        for r in 0..4 {
            for c in 0..8 {
                let want = ((3 + r) * 1000 + 4 + c) as u16;
                assert_eq!(u16_at(&smem, (r * 8 + c) * 2), want, "box ({r}, {c})");
            }
        }
    }

    #[test]
    fn out_of_bounds_elements_are_zero_or_nan() {
        let g = Global::new_u16(0x1000, 10, 20, 32);
        let map = map_20x10(DataType::Uint16, OobFill::None);
        let mut smem = vec![0xAAu8; 64];
        // Columns -3..5, rows 8..12: rows 10, 11 and columns -3..0 are outside.
        load_box(&map, &[-3, 8], &mut g.reader(), &mut smem, 0).unwrap();
        for r in 0..4i32 {
            for c in 0..8i32 {
                let (gr, gc) = (8 + r, -3 + c);
                let want = if gr < 10 && gc >= 0 {
                    (gr * 1000 + gc) as u16
                } else {
                    0
                };
                assert_eq!(
                    u16_at(&smem, ((r * 8 + c) * 2) as usize),
                    want,
                    "box ({r}, {c})"
                );
            }
        }
        // Beyond the last column.
        load_box(&map, &[16, 0], &mut g.reader(), &mut smem, 0).unwrap();
        assert_eq!(u16_at(&smem, 3 * 2), 19);
        assert_eq!(u16_at(&smem, 4 * 2), 0);
        // NaN fill for a float type.
        let fmap = map_20x10(DataType::Float16, OobFill::NanRequestZeroFma);
        load_box(&fmap, &[16, 9], &mut g.reader(), &mut smem, 0).unwrap();
        assert_eq!(u16_at(&smem, 0), 9016);
        assert_eq!(u16_at(&smem, 4 * 2), 0x7E00);
        assert_eq!(u16_at(&smem, 8 * 2), 0x7E00);
        // Entirely outside: nothing is read, everything filled.
        let mut never = |_: u64, _: &mut [u8]| -> Result<(), String> { Err("read".into()) };
        load_box(&map, &[100, -50], &mut never, &mut smem, 0).unwrap();
        assert!(smem.iter().all(|&b| b == 0));
    }

    #[test]
    fn loads_with_128b_swizzle_at_the_documented_positions() {
        // u8 tensor 16 × 128 (one 128-byte row per tensor row), box 128 × 8 = one 1024-byte atom.
        let rows = 16;
        let mut bytes = vec![0u8; rows * 128];
        for r in 0..rows {
            for c in 0..128 {
                bytes[r * 128 + c] = (r * 16 + c / 8) as u8; // distinct per (row, 8-byte half-chunk)
            }
        }
        let g = Global {
            base: 0x8000,
            bytes,
        };
        let map = map2d(
            DataType::Uint8,
            0x8000,
            [128, 16],
            128,
            [128, 8],
            Swizzle::B128,
            OobFill::None,
        )
        .unwrap();
        let mut smem = vec![0u8; 2048];
        // Destination at shared offset 1024 of a 1024-aligned buffer.
        let base = 0x2000u64;
        let n = load_box(
            &map,
            &[0, 2],
            &mut g.reader(),
            &mut smem[1024..],
            base + 1024,
        )
        .unwrap();
        assert_eq!(n, 1024);
        let dst = &smem[1024..];
        // By hand: box row r (tensor row 2 + r), 16-byte chunk j lands at chunk j ^ (r mod 8) of
        // shared row r. Row 0: identity. Row 1, chunk 0 → chunk 1; row 5, chunk 2 → chunk 7;
        // row 7, chunk 7 → chunk 0.
        let chunk = |r: usize, j: usize| dst[r * 128 + j * 16];
        assert_eq!(chunk(0, 3), (2 * 16 + 3 * 2) as u8);
        assert_eq!(chunk(1, 1), (3 * 16) as u8); // tensor row 3, chunk 0
        assert_eq!(chunk(1, 0), (3 * 16 + 2) as u8); // tensor row 3, chunk 1
        assert_eq!(chunk(5, 7), (7 * 16 + 2 * 2) as u8); // tensor row 7, chunk 2
        assert_eq!(chunk(7, 0), (9 * 16 + 7 * 2) as u8); // tensor row 9, chunk 7
        // Within a chunk the bytes keep their order: the second 8 bytes of row 7's chunk 7.
        assert_eq!(dst[7 * 128 + 8], (9 * 16 + 7 * 2 + 1) as u8);
    }

    #[test]
    fn swizzle_is_on_shared_address_bits() {
        // 64B swizzle, box of 32 u16 × 4 rows = 64-byte rows. Rows at logical offsets 0, 64, 128,
        // 192: address bits [7:8] of row 2 (offset 128) are 01 → chunks XOR 1; row 1 (offset
        // 64) has bits [7:8] = 00 → unchanged.
        let g = Global::new_u16(0x1000, 4, 32, 32);
        let map = map2d(
            DataType::Uint16,
            0x1000,
            [32, 4],
            64,
            [32, 4],
            Swizzle::B64,
            OobFill::None,
        )
        .unwrap();
        let mut smem = vec![0u8; 256];
        load_box(&map, &[0, 0], &mut g.reader(), &mut smem, 0x200).unwrap();
        assert_eq!(u16_at(&smem, 64), 1000); // row 1, element 0: unchanged
        assert_eq!(u16_at(&smem, 128 + 16), 2000); // row 2, chunk 0 → chunk 1
        assert_eq!(u16_at(&smem, 128), 2008); // row 2, chunk 1 → chunk 0
        assert_eq!(u16_at(&smem, 192 + 16), 3000); // row 3 (offset 192: bit 7 set) → chunk 1
        // A destination not aligned to the 512-byte repeat is refused.
        let e = load_box(&map, &[0, 0], &mut g.reader(), &mut smem, 0x280).unwrap_err();
        assert!(e.contains("512-byte aligned"), "{e}");
        // Without swizzle 128-byte alignment is still required.
        let plain = map2d(
            DataType::Uint16,
            0x1000,
            [32, 4],
            64,
            [32, 4],
            Swizzle::None,
            OobFill::None,
        )
        .unwrap();
        let e = load_box(&plain, &[0, 0], &mut g.reader(), &mut smem, 0x40).unwrap_err();
        assert!(e.contains("128-byte aligned"), "{e}");
    }

    #[test]
    fn element_strides_skip_outer_elements() {
        let g = Global::new_u16(0x1000, 10, 20, 32);
        let map = TensorMap::encode_tiled(
            DataType::Uint16,
            2,
            0x1000,
            &[20, 10],
            &[64],
            &[8, 6],
            &[4, 2], // dim 0's stride is ignored without interleave
            Interleave::None,
            Swizzle::None,
            L2Promotion::None,
            OobFill::None,
        )
        .unwrap();
        assert_eq!(map.box_elements(), vec![8, 3]);
        let mut smem = vec![0u8; 48];
        assert_eq!(
            load_box(&map, &[0, 1], &mut g.reader(), &mut smem, 0).unwrap(),
            48
        );
        for k in 0..3 {
            assert_eq!(u16_at(&smem, k * 16), ((1 + 2 * k) * 1000) as u16);
            assert_eq!(u16_at(&smem, k * 16 + 14), ((1 + 2 * k) * 1000 + 7) as u16);
        }
    }

    #[test]
    fn store_box_writes_in_bounds_elements_and_unswizzles() {
        // Load a 128B-swizzled box, store it back to a zeroed copy at a partially OOB position.
        let mut bytes = vec![0u8; 8 * 128];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let g = Global {
            base: 0,
            bytes: bytes.clone(),
        };
        let map = map2d(
            DataType::Uint8,
            0,
            [128, 8],
            128,
            [128, 8],
            Swizzle::B128,
            OobFill::None,
        )
        .unwrap();
        let mut smem = vec![0u8; 1024];
        load_box(&map, &[0, 0], &mut g.reader(), &mut smem, 0x400).unwrap();
        let mut out = vec![0u8; 8 * 128];
        let mut writes = 0;
        let mut writer = |addr: u64, b: &[u8]| -> Result<(), String> {
            writes += 1;
            out[addr as usize..addr as usize + b.len()].copy_from_slice(b);
            Ok(())
        };
        assert_eq!(
            store_box(&map, &[0, 0], &smem, 0x400, &mut writer).unwrap(),
            1024
        );
        assert_eq!(writes, 8);
        assert_eq!(out, bytes);
        // Shifted by (-16, 5): only rows 5..8 and columns 0..112 exist.
        let mut out = vec![0u8; 8 * 128];
        let mut writer = |addr: u64, b: &[u8]| -> Result<(), String> {
            out[addr as usize..addr as usize + b.len()].copy_from_slice(b);
            Ok(())
        };
        store_box(&map, &[-16, 5], &smem, 0x400, &mut writer).unwrap();
        for r in 0..8 {
            for c in 0..128 {
                let want = if r >= 5 && c < 112 {
                    bytes[(r - 5) * 128 + c + 16]
                } else {
                    0
                };
                assert_eq!(out[r * 128 + c], want, "({r}, {c})");
            }
        }
    }

    #[test]
    fn rank_1_and_rank_3_boxes() {
        let g = Global::new_u16(0, 1, 64, 64);
        let m1 = TensorMap::encode_tiled(
            DataType::Uint16,
            1,
            0,
            &[64],
            &[],
            &[16],
            &[1],
            Interleave::None,
            Swizzle::None,
            L2Promotion::None,
            OobFill::None,
        )
        .unwrap();
        // Shared memory starts non-zero, so the zeros below are the out-of-bounds fill.
        let mut smem = vec![0xAAu8; 32];
        load_box(&m1, &[56], &mut g.reader(), &mut smem, 0).unwrap();
        assert_eq!(u16_at(&smem, 0), 56);
        assert_eq!(u16_at(&smem, 14), 63);
        assert_eq!(u16_at(&smem, 16), 0);
        // 3-D: 2 planes of 4 × 8 u16, plane stride 128 bytes; rows 16 bytes.
        let mut bytes = vec![0u8; 256];
        for p in 0..2 {
            for r in 0..4 {
                for c in 0..8 {
                    let v = (p * 100 + r * 10 + c) as u16;
                    let at = p * 128 + r * 16 + c * 2;
                    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        let g = Global { base: 0x100, bytes };
        let m3 = TensorMap::encode_tiled(
            DataType::Uint16,
            3,
            0x100,
            &[8, 4, 2],
            &[16, 128],
            &[8, 2, 2],
            &[1, 1, 1],
            Interleave::None,
            Swizzle::None,
            L2Promotion::None,
            OobFill::None,
        )
        .unwrap();
        let mut smem = vec![0xAAu8; 64];
        load_box(&m3, &[0, 3, 0], &mut g.reader(), &mut smem, 0).unwrap();
        assert_eq!(u16_at(&smem, 0), 30); // plane 0, row 3
        assert_eq!(u16_at(&smem, 16), 0); // plane 0, row 4: outside
        assert_eq!(u16_at(&smem, 32 + 2), 131); // plane 1, row 3, col 1
    }

    /// `cuTensorMapEncodeTiled`'s arguments, for tests that vary one or two of them.
    #[derive(Clone)]
    struct Args {
        data_type: DataType,
        rank: Option<u32>, // `dims.len()` unless given
        address: u64,
        dims: Vec<u64>,
        strides: Vec<u64>,
        box_dims: Vec<u32>,
        element_strides: Vec<u32>,
        interleave: Interleave,
        swizzle: Swizzle,
        oob_fill: OobFill,
    }

    impl Args {
        fn encode(&self) -> Result<TensorMap, String> {
            TensorMap::encode_tiled(
                self.data_type,
                self.rank.unwrap_or(self.dims.len() as u32),
                self.address,
                &self.dims,
                &self.strides,
                &self.box_dims,
                &self.element_strides,
                self.interleave,
                self.swizzle,
                L2Promotion::None,
                self.oob_fill,
            )
        }
    }

    #[test]
    fn encode_tiled_checks_the_documented_requirements() {
        use DataType::*;
        let err = |args: Args, needle: &str| {
            let e = args.encode().expect_err("should fail");
            assert!(e.contains(needle), "{e:?} does not name {needle}");
        };
        // A valid 2-D map; each case below breaks one requirement.
        let d2 = Args {
            data_type: Uint8,
            rank: None,
            address: 0,
            dims: vec![16, 64],
            strides: vec![128],
            box_dims: vec![16, 1],
            element_strides: vec![1, 1],
            interleave: Interleave::None,
            swizzle: Swizzle::None,
            oob_fill: OobFill::None,
        };
        assert!(d2.encode().is_ok());
        let wide = Args {
            dims: vec![128, 64],
            ..d2.clone()
        };
        assert!(
            Args {
                address: 0x100,
                box_dims: vec![128, 64],
                swizzle: Swizzle::B128,
                ..wide.clone()
            }
            .encode()
            .is_ok()
        );
        err(
            Args {
                address: 0x108,
                ..wide.clone()
            },
            "globalAddress",
        );
        err(
            Args {
                dims: vec![0, 64],
                ..d2.clone()
            },
            "globalDim[0]",
        );
        err(
            Args {
                dims: vec![16, (1 << 32) + 1],
                ..d2.clone()
            },
            "globalDim[1]",
        );
        assert!(
            Args {
                dims: vec![16, 1 << 32],
                ..d2.clone()
            }
            .encode()
            .is_ok()
        );
        for stride in [120, 1 << 40] {
            err(
                Args {
                    strides: vec![stride],
                    ..d2.clone()
                },
                "globalStrides[0]",
            );
        }
        for box1 in [257, 0] {
            err(
                Args {
                    box_dims: vec![16, box1],
                    ..d2.clone()
                },
                "boxDim[1]",
            );
        }
        err(
            Args {
                data_type: Uint16,
                box_dims: vec![4, 1], // 8 bytes
                ..d2.clone()
            },
            "boxDim[0]",
        );
        err(
            Args {
                element_strides: vec![1, 9],
                ..d2.clone()
            },
            "elementStrides[1]",
        );
        err(
            Args {
                element_strides: vec![0, 1],
                ..d2.clone()
            },
            "elementStrides[0]",
        );
        err(
            Args {
                data_type: Uint16,
                strides: vec![256],
                box_dims: vec![128, 8],
                swizzle: Swizzle::B128,
                ..wide.clone()
            },
            "boxDim[0]",
        );
        let box_64x8 = Args {
            box_dims: vec![64, 8],
            ..wide.clone()
        };
        err(
            Args {
                swizzle: Swizzle::B32,
                ..box_64x8.clone()
            },
            "32-byte span",
        );
        assert!(
            Args {
                swizzle: Swizzle::B64,
                ..box_64x8
            }
            .encode()
            .is_ok()
        );
        err(
            Args {
                data_type: Uint32,
                oob_fill: OobFill::NanRequestZeroFma,
                ..d2.clone()
            },
            "oobFill",
        );
        err(
            Args {
                interleave: Interleave::B16,
                ..d2.clone()
            },
            "tensorRank",
        );
        // A valid 3-D map with 32B interleave; each case below breaks one requirement.
        let d3 = Args {
            dims: vec![16, 4, 4],
            strides: vec![32, 128],
            box_dims: vec![16, 1, 1],
            element_strides: vec![1, 1, 1],
            interleave: Interleave::B32,
            swizzle: Swizzle::B32,
            ..d2.clone()
        };
        assert!(d3.encode().is_ok());
        err(
            Args {
                address: 0x10,
                ..d3.clone()
            },
            "globalAddress",
        );
        err(
            Args {
                swizzle: Swizzle::None,
                ..d3.clone()
            },
            "swizzle",
        );
        err(
            Args {
                strides: vec![48, 128],
                ..d3
            },
            "globalStrides[0]",
        );
        err(
            Args {
                rank: Some(6),
                dims: vec![1; 6],
                strides: vec![16; 5],
                box_dims: vec![16; 6],
                element_strides: vec![1; 6],
                ..d2.clone()
            },
            "tensorRank",
        );
        err(
            Args {
                rank: Some(2),
                dims: vec![16],
                strides: vec![16],
                ..d2
            },
            "globalDim",
        );
    }

    #[test]
    fn bytes_round_trip_and_corruption_is_detected() {
        let map = TensorMap::encode_tiled(
            DataType::Bfloat16,
            3,
            0xdead_bee0,
            &[64, 300, 7],
            &[128, 128 * 300],
            &[64, 32, 2],
            &[1, 2, 1],
            Interleave::None,
            Swizzle::B128,
            L2Promotion::B256,
            OobFill::NanRequestZeroFma,
        )
        .unwrap();
        let b = map.to_bytes();
        assert_eq!(TensorMap::from_bytes(&b).unwrap(), map);
        for dt in DataType::ALL {
            assert_eq!(DataType::from_code(dt.code()), Some(dt));
        }
        // The first codes the emulator does not support: the packed sub-byte types, the
        // sm_100 `128B_ATOM_*` swizzles.
        assert_eq!(DataType::from_code(13), None);
        assert_eq!(Interleave::from_code(3), None);
        assert_eq!(Swizzle::from_code(4), None);
        assert_eq!(L2Promotion::from_code(4), None);
        assert_eq!(OobFill::from_code(2), None);
        let mut bad = b;
        bad[8] = 4;
        let sum = fnv1a32(&bad[..124]);
        bad[124..128].copy_from_slice(&sum.to_le_bytes());
        assert!(
            TensorMap::from_bytes(&bad)
                .unwrap_err()
                .contains("unsupported swizzle code 4")
        );
        let mut bad = b;
        bad[30] ^= 1;
        assert!(
            TensorMap::from_bytes(&bad)
                .unwrap_err()
                .contains("checksum")
        );
        let mut bad = b;
        bad[0] = 0;
        assert!(TensorMap::from_bytes(&bad).unwrap_err().contains("magic"));
        assert!(
            TensorMap::from_bytes(&[0u8; 128])
                .unwrap_err()
                .contains("magic")
        );
        assert!(
            TensorMap::from_bytes(&b[..64])
                .unwrap_err()
                .contains("64 bytes")
        );
        let mut bad = b;
        bad[4] = 9;
        assert!(TensorMap::from_bytes(&bad).unwrap_err().contains("version"));
        // A well-formed encoding of invalid values is still refused (re-validated).
        let mut bad = b;
        bad[96..100].copy_from_slice(&300u32.to_le_bytes());
        let sum = fnv1a32(&bad[..124]);
        bad[124..128].copy_from_slice(&sum.to_le_bytes());
        assert!(
            TensorMap::from_bytes(&bad)
                .unwrap_err()
                .contains("boxDim[0]")
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let g = Global::new_u16(0x1000, 10, 20, 32);
        let map = map_20x10(DataType::Uint16, OobFill::None);
        let mut small = vec![0u8; 32];
        assert!(
            load_box(&map, &[0, 0], &mut g.reader(), &mut small, 0)
                .unwrap_err()
                .contains("64 bytes")
        );
        let mut smem = vec![0u8; 64];
        assert!(
            load_box(&map, &[0], &mut g.reader(), &mut smem, 0)
                .unwrap_err()
                .contains("1 coordinates")
        );
        // A 64B-swizzled box of 9 rows of 32 bytes: its last row (box bytes 256..288) swizzles
        // to shared bytes 288..320, beyond the 288 bytes the box needs.
        let g8 = Global {
            base: 0,
            bytes: vec![1; 9 * 32],
        };
        let swizzled = map2d(
            DataType::Uint8,
            0,
            [32, 9],
            32,
            [32, 9],
            Swizzle::B64,
            OobFill::None,
        )
        .unwrap();
        let mut exact = vec![0u8; 288];
        let e = load_box(&swizzled, &[0, 0], &mut g8.reader(), &mut exact, 0).unwrap_err();
        assert!(e.contains("swizzled byte 256"), "{e}");
        let mut ignore = |_: u64, _: &[u8]| -> Result<(), String> { Ok(()) };
        let e = store_box(&swizzled, &[0, 0], &exact, 0, &mut ignore).unwrap_err();
        assert!(e.contains("swizzled byte 256"), "{e}");
        let mut failing =
            |_: u64, _: &mut [u8]| -> Result<(), String> { Err("fault at 0x1000".into()) };
        assert_eq!(
            load_box(&map, &[0, 0], &mut failing, &mut smem, 0).unwrap_err(),
            "fault at 0x1000"
        );
    }
}
