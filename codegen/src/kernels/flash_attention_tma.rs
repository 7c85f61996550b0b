//! The pipelined Hopper form of fused attention (sm_90a, FlashAttention-3's loading): the
//! products of [`super::flash_attention_wgmma`] and the softmax of
//! [`super::flash_attention`], fed by the TMA through the ring of [`super::tma_ring`].
//!
//! - **Ring.** A stage is one key tile: the K tile (`k_nope | k_pe`, 128-byte-swizzled K-major
//!   panels of 64 score dims) at the stage's A and the V tile (panels of 64 value dims) at its
//!   B, the layouts the wgmma descriptors read and a 128B-swizzled TMA box writes. The maps
//!   see each operand `[batch, kv_len, heads, dim]` as 4-D (`dim` innermost) with a box of 64
//!   dims × 1 head × [`KV_TILE`] keys × 1 batch: one TMA load per panel, keys past `kv_len`
//!   the TMA's zero fill (then masked to −inf as in every form), MLA's one `k_pe` head and
//!   GQA's shared heads just the head coordinate.
//! - **Roles.** Warpgroup 0's first thread issues the loads of every key tile of the block in
//!   order; each consumer warpgroup takes 64 of the block's queries, waits for a tile's `full`
//!   mbarrier, runs the tile and releases the stage once its P·V has completed. Causal blocks
//!   read only the tiles up to their last query, as in the other forms.
//! - **One consumer.** The code takes [`CONSUMERS`] warpgroups (two: 128 queries a block, the
//!   registers moved to them by `setmaxnreg`, each K/V tile read by twice the queries); one
//!   is what the modeled profile favours: causal blocks of 64 queries are twice as many, and
//!   the model charges a grid of unequal blocks one busiest block over an even share (V3's
//!   layer: 1.161 ms modeled with one, 1.193 ms with two).
//! - Shapes: each of the head, RoPE and value dims in whole 64-dim panels (DeepSeek-V3's
//!   128 | 64 and 128, Llama's 128); others keep the staged form
//!   ([`super::flash_attention::AttentionForm::Wgmma`]).

use dsc_ir::DType;
use dsc_kernels::manifest::{TensorMapArg, TensorMapDtype, TensorMapSwizzle};
use melior::dialect::arith::CmpiPredicate;
use melior::ir::Value;

use super::attention::HeadOperand;
use super::flash_attention::{FlashAttention, KV_TILE, Operands, Place, Running};
use super::flash_attention_wgmma::{PANEL_BYTES, panels};
use super::fp8_gemm::TENSOR_MAP_BYTES;
use super::tma_ring::{Ring, TmaTiles, WARPGROUP};
use super::{Param, kernel_args, param_types};
use crate::error::CodegenError;
use crate::mlir::KernelModule;
use crate::mlir::emit::Emit;

/// Warpgroups that multiply, 64 queries each (see the module's notes).
pub const CONSUMERS: u64 = 1;
/// The producer warpgroup and the consumers.
pub const THREADS: u32 = (WARPGROUP * (1 + CONSUMERS)) as u32;
/// Dims of a panel (one 128-byte swizzle row of BF16).
const PANEL_DIMS: u64 = 64;
/// Shared memory a Hopper block may opt into (227 KiB).
const SHARED_LIMIT: u64 = 227 * 1024;
/// Most stages: the loads of three tiles ahead cover a tile's math many times over.
const MAX_STAGES: u64 = 3;

/// Whether `spec` can take this form: every dim in whole panels, a value width one wgmma
/// takes, and at least two stages in shared memory.
pub fn eligible(spec: &FlashAttention) -> bool {
    let whole = |d: u64| d.is_multiple_of(PANEL_DIMS);
    whole(spec.main().dim)
        && whole(spec.rope_dim())
        && whole(spec.v_dim())
        && spec.v_dim() <= 256
        && stages_for(spec) >= 2
}

fn stage(spec: &FlashAttention, stages: u64) -> TmaTiles {
    TmaTiles {
        block_m: KV_TILE * panels(spec.qk_padded()),
        block_n: KV_TILE * panels(spec.v_dim()),
        stages,
    }
}

fn stages_for(spec: &FlashAttention) -> u64 {
    (1..=MAX_STAGES)
        .rev()
        .find(|&n| stage(spec, n).dynamic_shared_bytes() <= SHARED_LIMIT)
        .unwrap_or(0)
}

fn tiles(spec: &FlashAttention) -> TmaTiles {
    stage(spec, stages_for(spec))
}

/// Dynamic shared memory of a block: the ring, its mbarriers and the alignment slack.
pub fn dynamic_shared_bytes(spec: &FlashAttention) -> u64 {
    tiles(spec).dynamic_shared_bytes()
}

/// The tensor maps' parameters, after the operands: `k_map`, `v_map`[, `k_pe_map`].
pub fn map_params(spec: &FlashAttention) -> Vec<Param> {
    let map = |name| Param::new(name, DType::I64, TENSOR_MAP_BYTES / 8);
    let mut params = vec![map("k_map"), map("v_map")];
    if spec.rope.is_some() {
        params.push(map("k_pe_map"));
    }
    params
}

/// The operands the maps cover, by parameter (k 1, v 2, k_pe 4), with their heads and the
/// elements per row of their tensors (wider than the head dim for an operand read in place:
/// its loads start at its offset in the row).
fn mapped(spec: &FlashAttention) -> Vec<(usize, HeadOperand)> {
    let values = HeadOperand {
        kv_heads: spec.v_heads(),
        dim: spec.v_window().0,
        dtype: spec.values,
    };
    let keys = HeadOperand {
        dim: spec.k_window().0,
        ..spec.main()
    };
    let mut mapped = vec![(1, keys), (2, values)];
    mapped.extend(spec.rope.map(|r| (4, r)));
    mapped
}

/// `(mapped parameter, map)` for each map parameter: `[dim, heads, kv_len, batch]` BF16 in
/// boxes of one panel of one head's [`KV_TILE`] keys, 128-byte swizzle.
pub fn tensor_maps(spec: &FlashAttention) -> Vec<(usize, TensorMapArg)> {
    let params = spec.params();
    mapped(spec)
        .into_iter()
        .map(|(over, o)| {
            let name = format!("{}_map", params[over].name);
            let param = params
                .iter()
                .position(|p| p.name == name)
                .expect("each mapped operand has its map parameter");
            let dims = vec![o.dim, o.kv_heads, spec.kv_len(), spec.batch()];
            let row = o.dim * 2;
            let arg = TensorMapArg {
                param,
                dtype: TensorMapDtype::Bfloat16,
                strides_bytes: vec![row, row * o.kv_heads, row * o.kv_heads * spec.kv_len()],
                dims,
                box_dims: vec![PANEL_DIMS as u32, 1, KV_TILE as u32, 1],
                swizzle: TensorMapSwizzle::B128,
            };
            (over, arg)
        })
        .collect()
}

/// Builds the kernel.
pub fn build(
    spec: &FlashAttention,
    module: &KernelModule<'_>,
    entry: &str,
) -> Result<(), CodegenError> {
    let context = module.context();
    let params = spec.params();
    let types = param_types(context, &params);
    let n_args = types.len();
    module.add_kernel_with_dynamic_shared(entry, &types, THREADS, |block, location| {
        let e = Emit::new(context, block, location);
        let args = kernel_args(block, n_args)?;
        let ops = Operands::new(spec, &args);
        let first_map = if ops.pe.is_some() { 5 } else { 3 };
        let maps = &args[first_map..n_args - spec.output_params()];
        // Variables first, in the entry block (before the ring's branches), where LLVM keeps
        // them in registers.
        let running = Running::new(spec, &e)?;
        let zero = e.index(0)?;
        let passes = e.cell(zero)?;
        // The producer takes consumer 0's place: the same block, heads and tiles.
        let tid = e.thread_x()?;
        let warpgroup_size = e.index(WARPGROUP as i64)?;
        let warpgroup = e.divui(tid, warpgroup_size)?;
        let one = e.index(1)?;
        let is_consumer = e.cmpi(CmpiPredicate::Ne, warpgroup, zero)?;
        let consumer = e.select(is_consumer, e.subi(warpgroup, one)?, zero)?;
        let first = e.muli(consumer, e.index(super::flash_attention::BLOCK_Q as i64)?)?;
        let at = Place::new(spec, &e, e.remui(tid, warpgroup_size)?, first)?;
        let ring = Ring::with_consumers(&e, entry, tiles(spec), 1, CONSUMERS)?;
        let tiles = spec.tiles(&e, at.qb)?;
        let pipeline = Pipeline {
            spec,
            ring: &ring,
            at: &at,
            tiles,
        };
        ring.split_roles(
            &e,
            |e| pipeline.produce(e, maps, passes),
            |e, _| pipeline.consume(e, &ops, &running, passes),
        )
    })
}

/// Fused attention's use of the ring.
struct Pipeline<'s, 'c, 'a> {
    spec: &'s FlashAttention,
    ring: &'s Ring<'c, 'a>,
    at: &'s Place<'c, 'a>,
    /// Key tiles of this block (an index).
    tiles: Value<'c, 'a>,
}

impl<'c> Pipeline<'_, 'c, '_> {
    /// The first thread's loop: every key tile's panels into the next stage.
    fn produce(
        &self,
        e: &Emit<'c, '_>,
        maps: &[Value<'c, '_>],
        passes: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let maps: Vec<Value> = maps
            .iter()
            .map(|&m| e.address_of(m))
            .collect::<Result<_, _>>()?;
        // Once per block, before the maps are read (every producer thread: no branch).
        for &map in &maps {
            e.fence_tensormap_acquire(map)?;
        }
        let zero = e.index(0)?;
        let leader = e.cmpi(CmpiPredicate::Eq, self.ring.tid, zero)?;
        e.if_then(leader, |e| {
            let one = e.index(1)?;
            let i32_type = e.int_type(32);
            let at = self.at;
            let b = e.index_cast(at.b, i32_type)?;
            let [kh, kh_pe, vh] = [at.kh, at.kh_pe, at.vh].map(|h| e.index_cast(h, i32_type));
            let (kh, kh_pe, vh) = (kh?, kh_pe?, vh?);
            e.for_range(zero, self.tiles, one, |e, tile| {
                let pass = self.ring.next_pass(&e, passes)?;
                self.ring.wait_free(&e, &pass)?;
                let bytes = e.int(32, self.ring.t.stage_bytes() as i64)?;
                e.mbarrier_arrive_expect_tx(pass.full, bytes)?;
                let t0 = e.muli(tile, e.index(KV_TILE as i64)?)?;
                let t0 = e.index_cast(t0, i32_type)?;
                // (map, head, tile, first panel of the tile, panels, first dim in the row).
                let main_panels = self.spec.main().dim / PANEL_DIMS;
                let mut loads = vec![
                    (maps[0], kh, pass.a, 0, main_panels, self.spec.k_window().1),
                    (
                        maps[1],
                        vh,
                        pass.b,
                        0,
                        self.spec.v_dim() / PANEL_DIMS,
                        self.spec.v_window().1,
                    ),
                ];
                if let Some(&k_pe) = maps.get(2) {
                    let panels = self.spec.rope_dim() / PANEL_DIMS;
                    loads.push((k_pe, kh_pe, pass.a, main_panels, panels, 0));
                }
                for (map, head, tile, first, count, start) in loads {
                    for p in 0..count {
                        let offset = e.int(32, ((first + p) * PANEL_BYTES) as i64)?;
                        let destination = e.addi(tile, offset)?;
                        let dim = e.int(32, (start + p * PANEL_DIMS) as i64)?;
                        e.tma_load(destination, map, &[dim, head, t0, b], pass.full, None)?;
                    }
                }
                Ok(())
            })
        })
    }

    /// A consumer warpgroup's loop: its 64 queries against every key tile of the block.
    fn consume(
        &self,
        e: &Emit<'c, '_>,
        ops: &Operands<'c, '_>,
        running: &Running<'c, '_>,
        passes: Value<'c, '_>,
    ) -> Result<(), CodegenError> {
        let q_frags = self.spec.q_fragments(e, ops, self.at)?;
        let zero = e.index(0)?;
        let one = e.index(1)?;
        e.for_range(zero, self.tiles, one, |e, tile| {
            let pass = self.ring.next_pass(&e, passes)?;
            e.mbarrier_wait(pass.full, pass.parity)?;
            let t0 = e.muli(tile, e.index(KV_TILE as i64)?)?;
            let tiles = [pass.a, pass.b];
            self.spec
                .tile(&e, self.at, running, &q_frags, t0, tiles, |_| Ok(()))?;
            // P·V has completed (its wait): the stage is free.
            e.mbarrier_arrive(pass.empty)
        })?;
        self.spec.finish(e, ops, self.at, running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::flash_attention::AttentionForm;
    use dsc_kernels::ops::{AttentionDims, ScoreDims};

    fn v3(rope: u64) -> FlashAttention {
        FlashAttention {
            dims: AttentionDims {
                scores: ScoreDims {
                    batch: 1,
                    q_len: 4096,
                    kv_len: 4096,
                    heads: 128,
                    kv_heads: 128,
                    head_dim: 128,
                },
                v_heads: 128,
                v_dim: 128,
            },
            q_row: None,
            k_row: None,
            v_row: None,
            qk: DType::Bf16,
            rope: (rope > 0).then_some(HeadOperand {
                kv_heads: 1,
                dim: rope,
                dtype: DType::Bf16,
            }),
            values: DType::Bf16,
            output: DType::Bf16,
            quant: None,
            scale: 0.1,
            causal: true,
            form: AttentionForm::WgmmaTma,
        }
    }

    #[test]
    fn deepseek_v3s_attention_takes_three_stages_of_five_panels() {
        let spec = v3(64);
        assert!(eligible(&spec));
        let t = tiles(&spec);
        assert_eq!((t.block_m, t.block_n, t.stages), (192, 128, 3));
        assert!(dynamic_shared_bytes(&spec) <= SHARED_LIMIT);
        assert_eq!(
            spec.launch().grid,
            [128 * 4096 / (64 * CONSUMERS as u32), 1, 1]
        );
        assert_eq!(spec.launch().block, [128 * (1 + CONSUMERS as u32), 1, 1]);
        let maps = tensor_maps(&spec);
        let names: Vec<&str> = spec.params().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "q", "k", "v", "q_pe", "k_pe", "k_map", "v_map", "k_pe_map", "out"
            ]
        );
        let k_pe = &maps[2].1;
        assert_eq!((maps[2].0, k_pe.param), (4, 7));
        assert_eq!(k_pe.dims, [64, 1, 4096, 1]);
        assert_eq!(k_pe.strides_bytes, [128, 128, 128 * 4096]);
        assert_eq!(k_pe.box_dims, [64, 1, 64, 1]);
    }

    #[test]
    fn dims_outside_whole_panels_keep_the_staged_form() {
        assert!(!eligible(&v3(32)));
        let mut narrow = v3(0);
        narrow.dims.v_dim = 96;
        assert!(!eligible(&narrow));
    }
}
