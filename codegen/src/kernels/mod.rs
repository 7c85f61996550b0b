//! The GPU implementation of every kernel spec of `dsc-kernels`: one file per kernel, each a
//! struct holding the static shapes and attributes it is specialized to, that says its buffer
//! parameters, its launch shape, and builds its `gpu.func` with melior.
//!
//! Every kernel takes flat buffers only (one bare pointer each, in the order of
//! [`GpuKernel::params`]); shapes are compile-time constants, so a kernel used by many layers
//! with the same shapes is built once (the planner dedups by [`GpuKernel::entry`]).

pub mod adamw;
pub mod attention;
pub mod balance_loss;
pub mod block_quant;
pub mod canonical;
pub mod cross_entropy;
pub mod data_movement;
pub mod dequantize;
pub mod elementwise;
pub mod elementwise_grad;
pub mod embedding;
pub mod embedding_grad;
pub mod expert_bias_update;
pub mod flash_attention;
pub mod flash_attention_tma;
pub mod flash_attention_wgmma;
pub mod fp8_gemm;
pub mod fp8_gemm_cp_async;
pub mod fp8_gemm_mma;
pub mod fp8_gemm_tma;
pub mod fp8_gemm_wgmma;
pub mod global_norm;
pub mod grid_reduce;
pub mod grouped_linear_wgrad;
pub mod linear;
pub mod linear_mma;
pub mod linear_wgmma;
pub mod matmul;
pub mod mma;
pub mod moe;
pub mod moe_combine_grad;
pub mod moe_dispatch;
pub mod moe_dispatch_counts;
pub mod moe_topk_grad;
pub mod norm;
pub mod pad;
pub mod quantize;
pub mod reduce_sum;
pub mod rms_norm_grad;
pub mod rope;
pub mod rope_grad;
pub mod row_chunks;
pub mod row_window;
pub mod softmax;
pub mod softmax_grad;
pub mod tma_ring;
pub mod vector_access;
pub mod wide_access;

use std::collections::BTreeMap;

use dsc_ir::DType;
use dsc_kernels::manifest::{TensorMapArg, TensorMapSwizzle};
use melior::Context;
use melior::ir::r#type::{IntegerType, MemRefType};
use melior::ir::{Block, BlockLike, Type, Value};
use serde::Serialize;

use crate::error::CodegenError;
use crate::mlir::emit::Emit;
use crate::mlir::{KernelModule, global_thread_index};

/// Threads per block of the one-thread-per-element kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;

/// One buffer parameter of a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// What the buffer is (`x`, `scale`, `out`, …).
    pub name: &'static str,
    /// Element dtype.
    pub dtype: DType,
    /// Elements.
    pub len: u64,
}

impl Param {
    /// A parameter.
    pub fn new(name: &'static str, dtype: DType, len: u64) -> Self {
        Param { name, dtype, len }
    }
}

/// Grid and block of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: [u32; 3],
}

impl Launch {
    /// One thread per element of `len`, in [`ELEMENTWISE_BLOCK`]-thread blocks.
    pub fn per_element(len: u64) -> Launch {
        Launch::blocks(
            len.div_ceil(u64::from(ELEMENTWISE_BLOCK)),
            ELEMENTWISE_BLOCK,
        )
    }

    /// `blocks` blocks of `threads` threads, on x.
    pub fn blocks(blocks: u64, threads: u32) -> Launch {
        Launch {
            grid: [u32::try_from(blocks.max(1)).unwrap_or(u32::MAX), 1, 1],
            block: [threads, 1, 1],
        }
    }
}

/// Every GPU kernel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GpuKernel {
    /// `add`, `cast`: one output element per thread.
    Elementwise(elementwise::Elementwise),
    /// `slice`: a strided copy.
    Slice(elementwise::SliceCopy),
    /// `embedding`: a row gather.
    Embedding(embedding::Embedding),
    /// `rms_norm`, `rms_norm_quant`.
    RmsNorm(norm::RmsNorm),
    /// `quantize` (1 × tile), `swiglu_quant`.
    ActQuant(quantize::ActQuant),
    /// `quantize` in square blocks (weights, the ablation's activation gradients).
    BlockQuant(block_quant::BlockQuant),
    /// `dequantize`.
    Dequantize(dequantize::Dequantize),
    /// `rope`.
    Rope(rope::Rope),
    /// `softmax` over the last axis.
    Softmax(softmax::Softmax),
    /// `attn_scores`.
    AttnScores(attention::AttnScores),
    /// `attn_values`.
    AttnValues(attention::AttnValues),
    /// `attention`: scores, softmax and values fused.
    FlashAttention(flash_attention::FlashAttention),
    /// `linear` in BF16/F32 (head, gate).
    Linear(linear::Linear),
    /// A BF16 `linear` on wgmma (sm_90a).
    LinearWgmma(linear_wgmma::LinearWgmma),
    /// `fp8_gemm`, dense or grouped over routed experts.
    Fp8Gemm(fp8_gemm::Fp8Gemm),
    /// `moe_topk`.
    MoeTopk(moe::MoeTopk),
    /// `moe_combine`.
    MoeCombine(moe::MoeCombine),
    /// The expert-contiguous layout of a grouped GEMM's rows (a planning step, no graph op).
    MoeDispatch(moe_dispatch::MoeDispatch),
    /// The per-block expert counts a multi-block dispatch reads (its first launch).
    MoeDispatchCounts(moe_dispatch_counts::MoeDispatchCounts),
    /// `transpose`.
    Transpose(data_movement::Transpose),
    /// `concat`.
    Concat(data_movement::Concat),
    /// `matmul` (batched).
    Matmul(matmul::Matmul),
    /// `scale`, `silu_grad`, `swiglu_grad`.
    ElementwiseGrad(elementwise_grad::ElementwiseGrad),
    /// `reduce_sum` over one axis.
    ReduceSum(reduce_sum::ReduceSum),
    /// `global_norm`: a deterministic grid-wide sum of squares.
    GlobalNorm(global_norm::GlobalNorm),
    /// `adamw`.
    AdamW(adamw::AdamW),
    /// `cross_entropy`, `cross_entropy_grad`.
    CrossEntropy(cross_entropy::CrossEntropy),
    /// `expert_bias_update`: the routers' load-balancing bias step.
    ExpertBiasUpdate(expert_bias_update::ExpertBiasUpdate),
    /// `rms_norm_grad`: `dx` and the weight's gradient summed over rows.
    RmsNormGrad(rms_norm_grad::RmsNormGrad),
    /// `softmax_grad` along one axis.
    SoftmaxGrad(softmax_grad::SoftmaxGrad),
    /// `pad`: zeros around the operand along one axis.
    Pad(pad::Pad),
    /// `rope_grad`: the inverse rotation of `rope`.
    RopeGrad(rope_grad::RopeGrad),
    /// `embedding_grad`: the table's gradient, rows summed per id in token order.
    EmbeddingGrad(embedding_grad::EmbeddingGrad),
    /// `grouped_linear_wgrad`: the routed experts' k-grouped weight gradient.
    GroupedLinearWgrad(grouped_linear_wgrad::GroupedLinearWgrad),
    /// `moe_combine_grad`: the gradients of the experts' outputs and of the routing weights.
    MoeCombineGrad(moe_combine_grad::MoeCombineGrad),
    /// `moe_topk_grad`: the routing weights' gradient w.r.t. the gate's logits.
    MoeTopkGrad(moe_topk_grad::MoeTopkGrad),
    /// `balance_loss`, `balance_loss_grad`: the sequence-wise balance loss and its gradient.
    BalanceLoss(balance_loss::BalanceLoss),
}

macro_rules! each_kernel {
    ($self:ident, $k:ident => $body:expr) => {
        match $self {
            GpuKernel::Elementwise($k) => $body,
            GpuKernel::Slice($k) => $body,
            GpuKernel::Embedding($k) => $body,
            GpuKernel::RmsNorm($k) => $body,
            GpuKernel::ActQuant($k) => $body,
            GpuKernel::BlockQuant($k) => $body,
            GpuKernel::Dequantize($k) => $body,
            GpuKernel::Rope($k) => $body,
            GpuKernel::Softmax($k) => $body,
            GpuKernel::AttnScores($k) => $body,
            GpuKernel::AttnValues($k) => $body,
            GpuKernel::FlashAttention($k) => $body,
            GpuKernel::Linear($k) => $body,
            GpuKernel::LinearWgmma($k) => $body,
            GpuKernel::Fp8Gemm($k) => $body,
            GpuKernel::MoeTopk($k) => $body,
            GpuKernel::MoeCombine($k) => $body,
            GpuKernel::MoeDispatch($k) => $body,
            GpuKernel::MoeDispatchCounts($k) => $body,
            GpuKernel::Transpose($k) => $body,
            GpuKernel::Concat($k) => $body,
            GpuKernel::Matmul($k) => $body,
            GpuKernel::ElementwiseGrad($k) => $body,
            GpuKernel::ReduceSum($k) => $body,
            GpuKernel::GlobalNorm($k) => $body,
            GpuKernel::AdamW($k) => $body,
            GpuKernel::CrossEntropy($k) => $body,
            GpuKernel::ExpertBiasUpdate($k) => $body,
            GpuKernel::RmsNormGrad($k) => $body,
            GpuKernel::SoftmaxGrad($k) => $body,
            GpuKernel::Pad($k) => $body,
            GpuKernel::RopeGrad($k) => $body,
            GpuKernel::EmbeddingGrad($k) => $body,
            GpuKernel::GroupedLinearWgrad($k) => $body,
            GpuKernel::MoeCombineGrad($k) => $body,
            GpuKernel::MoeTopkGrad($k) => $body,
            GpuKernel::BalanceLoss($k) => $body,
        }
    };
}

impl GpuKernel {
    /// The kernel spec it implements (the op kind of the final graph).
    pub fn spec(&self) -> &'static str {
        each_kernel!(self, k => k.spec())
    }

    /// Buffer parameters, in order.
    pub fn params(&self) -> Vec<Param> {
        each_kernel!(self, k => k.params())
    }

    /// Grid and block.
    pub fn launch(&self) -> Launch {
        each_kernel!(self, k => k.launch())
    }

    /// Adds the kernel as `entry` to `module`.
    pub fn build(&self, module: &KernelModule<'_>, entry: &str) -> Result<(), CodegenError> {
        each_kernel!(self, k => k.build(module, entry))?;
        module.bound_threads(entry, self.launch().block)
    }

    /// Bytes of dynamic shared memory a block needs at launch (the manifest's `shared_bytes`);
    /// 0 for kernels whose shared memory is all static.
    pub fn dynamic_shared_bytes(&self) -> u64 {
        match self {
            GpuKernel::Fp8Gemm(gemm)
                if matches!(gemm.form, fp8_gemm::GemmForm::WgmmaTma { .. }) =>
            {
                fp8_gemm_tma::dynamic_shared_bytes(gemm)
            }
            GpuKernel::Fp8Gemm(gemm)
                if matches!(gemm.form, fp8_gemm::GemmForm::MmaPipelined { .. }) =>
            {
                fp8_gemm_cp_async::dynamic_shared_bytes(gemm)
            }
            GpuKernel::LinearWgmma(linear) => linear.tiles.dynamic_shared_bytes(),
            GpuKernel::GroupedLinearWgrad(wgrad) => wgrad.dynamic_shared_bytes(),
            GpuKernel::FlashAttention(a) if a.form == flash_attention::AttentionForm::WgmmaTma => {
                flash_attention_tma::dynamic_shared_bytes(a)
            }
            _ => 0,
        }
    }

    /// The TMA tensor maps the kernel's `<tensor>_map` parameters take.
    fn tile_maps(&self) -> Vec<tma_ring::TileMap> {
        match self {
            GpuKernel::Fp8Gemm(gemm)
                if matches!(gemm.form, fp8_gemm::GemmForm::WgmmaTma { .. }) =>
            {
                fp8_gemm_tma::tensor_maps(gemm)
            }
            GpuKernel::LinearWgmma(linear) => linear.tensor_maps(),
            _ => Vec::new(),
        }
    }

    /// The parameters that take a TMA tensor map (the manifest's `tensor_maps`), each with the
    /// parameter whose tensor it maps; in parameter order, each after the one it maps.
    pub fn tensor_maps(&self) -> Vec<(usize, TensorMapArg)> {
        if let GpuKernel::FlashAttention(a) = self
            && a.form == flash_attention::AttentionForm::WgmmaTma
        {
            return flash_attention_tma::tensor_maps(a);
        }
        let params = self.params();
        self.tile_maps()
            .into_iter()
            .map(|map| {
                let name = format!("{}_map", params[map.over].name);
                let param = params
                    .iter()
                    .position(|p| p.name == name)
                    .expect("a pipelined GEMM takes a map parameter per mapped tensor");
                let arg = TensorMapArg {
                    param,
                    dtype: map.dtype,
                    dims: map.dims.to_vec(),
                    strides_bytes: vec![map.dims[0] * map.dtype.size_bytes()],
                    box_dims: map.box_dims.to_vec(),
                    swizzle: TensorMapSwizzle::B128,
                };
                (map.over, arg)
            })
            .collect()
    }

    /// Attributes and static shapes, for the manifest.
    pub fn attrs(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The canonical text of the spec: the spec it implements (each names one kind of kernel),
    /// then every field's value in order, without the fields' Rust names ([`canonical`]).
    pub fn canonical(&self) -> String {
        each_kernel!(self, k => canonical::canonical(k.spec(), k))
    }

    /// The entry name: the spec and a hash of its canonical text (everything the kernel is
    /// specialized to), so equal kernels share one entry, different ones never collide in
    /// practice, and renaming a Rust field or type changes no name.
    pub fn entry(&self) -> String {
        let hash = dsc_kernels::fnv::fnv1a64(self.canonical().as_bytes());
        format!("{}_{:012x}", self.spec(), hash & 0xffff_ffff_ffff)
    }
}

/// The element type a buffer of `dtype` holds in MLIR: FP8 codes are `i8`.
pub fn element_type(context: &Context, dtype: DType) -> Type<'_> {
    match dtype {
        DType::F32 => Type::float32(context),
        DType::Bf16 => Type::bfloat16(context),
        DType::F16 => Type::float16(context),
        DType::F8E4M3 | DType::F8E5M2 | DType::Bool => IntegerType::new(context, 8).into(),
        // The emulated E5M6's 16-bit container; selection refuses every op that reads or
        // writes it (`plan::select`), so no kernel is built over one.
        DType::F12E5M6 => IntegerType::new(context, 16).into(),
        DType::I32 => IntegerType::new(context, 32).into(),
        DType::I64 => IntegerType::new(context, 64).into(),
    }
}

/// A workgroup (shared-memory) buffer of `bytes` bytes, for kernels that lay their tiles
/// out by hand.
pub(crate) fn shared_bytes_type(context: &Context, bytes: u64) -> Type<'_> {
    let workgroup = melior::ir::Attribute::parse(context, "#gpu.address_space<workgroup>");
    MemRefType::new(
        IntegerType::new(context, 8).into(),
        &[bytes as i64],
        None,
        workgroup,
    )
    .into()
}

/// The memref types of `params`: flat, static, one per buffer.
pub fn param_types<'c>(context: &'c Context, params: &[Param]) -> Vec<Type<'c>> {
    params
        .iter()
        .map(|p| {
            MemRefType::new(
                element_type(context, p.dtype),
                &[p.len.max(1) as i64],
                None,
                None,
            )
            .into()
        })
        .collect()
}

/// The entry block's first `count` arguments: the kernel's buffers, in parameter order.
pub(crate) fn kernel_args<'c, 'a>(
    block: &'a Block<'c>,
    count: usize,
) -> Result<Vec<Value<'c, 'a>>, CodegenError> {
    (0..count).map(|i| Ok(block.argument(i)?.into())).collect()
}

/// Adds `entry` over `params`, one thread per element of `len`: `body(e, args, i)` emits the
/// work of element `i` (the global thread index) for every `i < len`, with `args` the buffers in
/// parameter order.
pub(crate) fn add_per_element_kernel<'c, F>(
    module: &KernelModule<'c>,
    entry: &str,
    params: &[Param],
    len: u64,
    body: F,
) -> Result<(), CodegenError>
where
    F: for<'a, 'b> FnOnce(
        Emit<'c, 'b>,
        &[Value<'c, 'a>],
        Value<'c, 'a>,
    ) -> Result<(), CodegenError>,
{
    let context = module.context();
    let types = param_types(context, params);
    module.add_kernel(entry, &types, |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, types.len())?;
        let i = global_thread_index(context, block, location)?;
        let n = e.index(len as i64)?;
        let in_bounds = e.lt(i, n)?;
        e.if_then(in_bounds, |inner| body(inner, &args, i))
    })
}
