//! TMA tensor maps of a launch plan ([`LaunchStep::tensor_maps`]): each map checked against the
//! manifest when an artifact is loaded ([`check_step`], part of
//! [`crate::artifact::check_manifest`]), then encoded once per session by the backend (the
//! emulator's encoding here, [`emulator_map`]; the driver's in `cuda::launch`).
//!
//! The manifest gives `cuTensorMapEncodeTiled`'s element type, dimensions, strides, box and
//! swizzle; the rest is fixed for every map ([`ELEMENT_STRIDES`], [`INTERLEAVE`],
//! [`L2_PROMOTION`], [`OOB_FILL`]). The checks are the emulator's transcription of the driver's
//! documented requirements ([`TensorMap::encode_tiled`]) plus the one the driver cannot make:
//! that every element the map covers lies inside the tensor the step names.

use std::collections::HashSet;

use dsc_emulator::tensor_map::{DataType, Interleave, L2Promotion, OobFill, Swizzle, TensorMap};
use dsc_kernels::manifest::{LaunchStep, TensorMapArg, TensorMapDtype, TensorMapSwizzle};

/// Bytes of one encoded map (the emulator's, as the driver's `CUtensorMap`).
pub(crate) use dsc_emulator::tensor_map::TENSOR_MAP_BYTES;

/// Element strides of every map: 1 along each dimension (every element of the box).
pub(crate) const ELEMENT_STRIDES: [u32; 5] = [1; 5];
/// Interleave of every map: none.
pub(crate) const INTERLEAVE: Interleave = Interleave::None;
/// L2 promotion of every map: 128 bytes.
pub(crate) const L2_PROMOTION: L2Promotion = L2Promotion::B128;
/// Out-of-bounds fill of every map: zeros (not NaN).
pub(crate) const OOB_FILL: OobFill = OobFill::None;

/// The target whose PTX may use tensor maps (`cp.async.bulk.tensor` is sm_90 and later).
const TMA_TARGET: &str = "sm_90a";

/// The emulator's data type of a manifest dtype.
fn data_type(dtype: TensorMapDtype) -> DataType {
    match dtype {
        TensorMapDtype::Uint8 => DataType::Uint8,
        TensorMapDtype::Float16 => DataType::Float16,
        TensorMapDtype::Bfloat16 => DataType::Bfloat16,
        TensorMapDtype::Float32 => DataType::Float32,
    }
}

/// The emulator's swizzle of a manifest swizzle.
fn swizzle(mode: TensorMapSwizzle) -> Swizzle {
    match mode {
        TensorMapSwizzle::None => Swizzle::None,
        TensorMapSwizzle::B32 => Swizzle::B32,
        TensorMapSwizzle::B64 => Swizzle::B64,
        TensorMapSwizzle::B128 => Swizzle::B128,
    }
}

/// The manifest field an error of [`TensorMap::encode_tiled`] is about, from the driver's
/// argument name it starts with.
fn field_of(driver_message: &str) -> &'static str {
    const FIELDS: [(&str, &str); 6] = [
        ("tensorRank", "dims"),
        ("globalDim", "dims"),
        ("globalStrides", "strides_bytes"),
        ("boxDim", "box_dims"),
        ("globalAddress", "param"),
        ("swizzle", "swizzle"),
    ];
    FIELDS
        .iter()
        .find(|(driver, _)| driver_message.starts_with(driver))
        .map_or("dtype", |&(_, field)| field)
}

/// `map` over a tensor at device address `base`, in the emulator's encoding; an error is
/// `FIELD: the driver's words` (the field of [`TensorMapArg`] it is about), for a caller to
/// prefix with the step and `tensor_maps[k]`.
pub fn emulator_map(map: &TensorMapArg, base: u64) -> Result<TensorMap, String> {
    let rank = map.rank();
    if !(1..=5).contains(&rank) {
        return Err(format!("dims: {rank} dimensions: the rank must be 1..=5"));
    }
    TensorMap::encode_tiled(
        data_type(map.dtype),
        rank as u32,
        base,
        &map.dims,
        &map.strides_bytes,
        &map.box_dims,
        &ELEMENT_STRIDES[..rank],
        INTERLEAVE,
        swizzle(map.swizzle),
        L2_PROMOTION,
        OOB_FILL,
    )
    .map_err(|message| {
        let field = field_of(&message);
        if field == "param" {
            format!("param: the tensor's address is not 16-byte aligned ({message})")
        } else {
            format!("{field}: {message}")
        }
    })
}

/// The named tensor of a map, as [`check_step`] needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappedTensor {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its byte offset from the start of its buffer (buffers are at least 256-byte aligned on
    /// every backend), so that the map's base alignment can be checked before allocating.
    pub offset: u64,
}

/// Every problem of step `index`'s tensor maps, one sentence each (`step 3 (`linear`):
/// tensor_maps[0].box_dims: …`): a parameter in range and mapped once, the rank and the lengths
/// of `dims`, `strides_bytes` and `box_dims`, `cuTensorMapEncodeTiled`'s requirements, and the
/// covered bytes inside the named tensor. `tensor` gives the tensor an argument names (`None`
/// when it is not listed, which the caller reports). A manifest of another `target` than sm_90a
/// may not have maps.
pub(crate) fn check_step(
    index: usize,
    step: &LaunchStep,
    target: &str,
    tensor: &dyn Fn(&str) -> Option<MappedTensor>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if step.tensor_maps.is_empty() {
        return problems;
    }
    let at = format!("step {index} (`{}`)", step.op);
    if target != TMA_TARGET {
        problems.push(format!(
            "{at}: tensor_maps: TMA needs target {TMA_TARGET}, the manifest's is {target}"
        ));
    }
    let mut seen = HashSet::new();
    for (k, map) in step.tensor_maps.iter().enumerate() {
        let mut problem = |field: &str, message: String| {
            problems.push(format!("{at}: tensor_maps[{k}].{field}: {message}"));
        };
        let Some(name) = step.args.get(map.param) else {
            problem(
                "param",
                format!(
                    "{} is not a parameter of the step's {} arguments",
                    map.param,
                    step.args.len()
                ),
            );
            continue;
        };
        if !seen.insert(map.param) {
            problem(
                "param",
                format!("parameter {} has a map already", map.param),
            );
            continue;
        }
        let rank = map.rank();
        if !(1..=5).contains(&rank) {
            problem("dims", format!("{rank} dimensions: the rank must be 1..=5"));
            continue;
        }
        if map.box_dims.len() != rank {
            problem(
                "box_dims",
                format!(
                    "{} entries for the {rank} dimensions of `dims`",
                    map.box_dims.len()
                ),
            );
            continue;
        }
        if map.strides_bytes.len() != rank - 1 {
            problem(
                "strides_bytes",
                format!(
                    "{} entries: the {rank} dimensions of `dims` need {}",
                    map.strides_bytes.len(),
                    rank - 1
                ),
            );
            continue;
        }
        let Some(tensor) = tensor(name) else {
            continue;
        };
        if let Err(message) = emulator_map(map, tensor.offset) {
            problems.push(format!("{at}: tensor_maps[{k}].{message}"));
            continue;
        }
        match map.extent_bytes() {
            Some(end) if end <= tensor.bytes => {}
            end => problems.push(format!(
                "{at}: tensor_maps[{k}].dims: the map covers {} bytes from the start of `{name}`, \
                 which has {}",
                end.map_or("more than 2^64".to_string(), |end| end.to_string()),
                tensor.bytes
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step of three arguments whose second is mapped: bf16 [8][64] (rows 128 bytes apart),
    /// box 64 × 4, 128B swizzle.
    fn step(edit: impl FnOnce(&mut TensorMapArg)) -> LaunchStep {
        let mut map = TensorMapArg {
            param: 1,
            dtype: TensorMapDtype::Bfloat16,
            dims: vec![64, 8],
            strides_bytes: vec![128],
            box_dims: vec![64, 4],
            swizzle: TensorMapSwizzle::B128,
        };
        edit(&mut map);
        LaunchStep {
            op: "linear".into(),
            kernel: "k".into(),
            grid: [1, 1, 1],
            block: [128, 1, 1],
            shared_bytes: 0,
            args: vec!["a".into(), "w".into(), "y".into()],
            flops: 0,
            bytes: 0,
            tensor_maps: vec![map],
        }
    }

    /// The problems of `step` as step 3, every tensor 1024 bytes at `offset` in its buffer.
    fn problems(step: &LaunchStep, offset: u64) -> Vec<String> {
        let tensor = |_: &str| {
            Some(MappedTensor {
                bytes: 1024,
                offset,
            })
        };
        check_step(3, step, "sm_90a", &tensor)
    }

    fn one_problem(step: &LaunchStep) -> String {
        let found = problems(step, 0);
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }

    #[test]
    fn a_good_map_has_no_problem_and_encodes() {
        assert_eq!(problems(&step(|_| {}), 256), Vec::<String>::new());
        // Exactly the tensor's 1024 bytes.
        let map = emulator_map(&step(|_| {}).tensor_maps[0], 0x7000_0000_0100).unwrap();
        assert_eq!(map.global_address, 0x7000_0000_0100);
        assert_eq!((map.rank, map.global_dims[..2].to_vec()), (2, vec![64, 8]));
        assert_eq!(map.oob_fill, OobFill::None);
        assert_eq!(map.l2_promotion, L2Promotion::B128);
        assert_eq!(TensorMap::from_bytes(&map.to_bytes()).unwrap(), map);
    }

    #[test]
    fn each_bad_field_is_named_with_the_step_and_op() {
        let cases: Vec<(LaunchStep, &str)> = vec![
            (
                step(|m| m.param = 3),
                "step 3 (`linear`): tensor_maps[0].param: 3 is not a parameter of the step's 3 \
                 arguments",
            ),
            (
                step(|m| {
                    m.dims = vec![];
                    m.strides_bytes = vec![];
                    m.box_dims = vec![];
                }),
                "step 3 (`linear`): tensor_maps[0].dims: 0 dimensions: the rank must be 1..=5",
            ),
            (
                step(|m| {
                    m.dims = vec![1; 6];
                    m.strides_bytes = vec![16; 5];
                    m.box_dims = vec![1; 6];
                }),
                "step 3 (`linear`): tensor_maps[0].dims: 6 dimensions: the rank must be 1..=5",
            ),
            (
                step(|m| m.box_dims = vec![64]),
                "step 3 (`linear`): tensor_maps[0].box_dims: 1 entries for the 2 dimensions of \
                 `dims`",
            ),
            (
                step(|m| m.strides_bytes = vec![]),
                "step 3 (`linear`): tensor_maps[0].strides_bytes: 0 entries: the 2 dimensions \
                 of `dims` need 1",
            ),
            (
                step(|m| m.box_dims = vec![64, 300]),
                "step 3 (`linear`): tensor_maps[0].box_dims: boxDim[1] = 300: must be non-zero \
                 and ≤ 256",
            ),
            (
                step(|m| m.strides_bytes = vec![120]),
                "step 3 (`linear`): tensor_maps[0].strides_bytes: globalStrides[0] = 120: must \
                 be a multiple of 16 and < 2^40",
            ),
            (
                step(|m| m.swizzle = TensorMapSwizzle::B64),
                "step 3 (`linear`): tensor_maps[0].box_dims: boxDim[0] = 64: the inner box \
                 dimension (128 bytes) must be ≤ the 64-byte span of swizzle B64",
            ),
            (
                step(|m| m.dims = vec![64, 0]),
                "step 3 (`linear`): tensor_maps[0].dims: globalDim[1] = 0: must be non-zero and \
                 ≤ 2^32",
            ),
            (
                // 9 rows of 128 bytes: 1152 bytes of a 1024-byte tensor.
                step(|m| m.dims = vec![64, 9]),
                "step 3 (`linear`): tensor_maps[0].dims: the map covers 1152 bytes from the \
                 start of `w`, which has 1024",
            ),
            (
                step(|m| m.strides_bytes = vec![1 << 36]),
                "step 3 (`linear`): tensor_maps[0].dims: the map covers 481036337280 bytes from \
                 the start of `w`, which has 1024",
            ),
            (
                step(|m| m.dims = vec![u64::MAX / 2, 8]),
                "step 3 (`linear`): tensor_maps[0].dims: globalDim[0] = 9223372036854775807: \
                 must be non-zero and ≤ 2^32",
            ),
        ];
        for (step, want) in cases {
            assert_eq!(one_problem(&step), want);
        }
    }

    #[test]
    fn overflowing_extents_duplicates_misalignment_and_the_target_are_refused() {
        // Every field within the driver's limits, the extent past 2^64 bytes.
        let mut big = step(|m| {
            m.dtype = TensorMapDtype::Uint8;
            m.dims = vec![1 << 32; 5];
            m.strides_bytes = vec![(1 << 40) - 16; 4];
            m.box_dims = vec![16, 1, 1, 1, 1];
            m.swizzle = TensorMapSwizzle::None;
        });
        assert_eq!(
            one_problem(&big),
            "step 3 (`linear`): tensor_maps[0].dims: the map covers more than 2^64 bytes from \
             the start of `w`, which has 1024"
        );
        big.tensor_maps = vec![step(|_| {}).tensor_maps[0].clone(); 2];
        assert_eq!(
            one_problem(&big),
            "step 3 (`linear`): tensor_maps[1].param: parameter 1 has a map already"
        );
        let misaligned = problems(&step(|_| {}), 8);
        assert_eq!(
            misaligned,
            [
                "step 3 (`linear`): tensor_maps[0].param: the tensor's address is not 16-byte \
              aligned (globalAddress = 0x8: must be 16-byte aligned)"
            ]
        );
        let tensor = |_: &str| {
            Some(MappedTensor {
                bytes: 1024,
                offset: 0,
            })
        };
        assert_eq!(
            check_step(0, &step(|_| {}), "sm_89", &tensor),
            ["step 0 (`linear`): tensor_maps: TMA needs target sm_90a, the manifest's is sm_89"]
        );
    }
}
