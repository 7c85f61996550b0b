//! The work of one op of a graph: the FLOPs of its matrix products and the bytes it must move.
//! The report's FP8 share of GEMM FLOPs, the launch plan's per-step figures and `dsc bench`'s
//! TFLOP/s and GB/s all come from here.

use dsc_ir::{Graph, Op, OpKind};

/// FLOPs and bytes of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpCost {
    /// Multiply-add FLOPs of a matrix product (2 per MAC), 0 for other ops.
    pub flops: u64,
    /// Bytes of every operand and result, each counted once: the traffic of a kernel that reads
    /// its inputs and writes its outputs once (of a slice, the window it reads).
    pub bytes: u64,
}

/// The cost of `op` in `g`. A `slice` reads only its window of the operand: as many bytes as
/// it writes; so does a fused attention reading a window of its q, k or v (`q_cols`, …), and a
/// `rope` or norm reading a window of its x (`x_cols`).
pub fn op_cost(g: &Graph, op: &Op) -> OpCost {
    let bytes = if op.kind == OpKind::Slice {
        g.ty(op.results[0]).size_bytes().saturating_mul(2)
    } else {
        let all = op
            .operands
            .iter()
            .chain(&op.results)
            .map(|&v| g.ty(v).size_bytes())
            .fold(0u64, u64::saturating_add);
        let windows: &[(usize, &str)] = match op.kind {
            OpKind::Attention | OpKind::AttentionQuant => &dsc_ir::infer::ATTENTION_WINDOWS,
            kind if dsc_ir::infer::X_WINDOWED.contains(&kind) => &[(0, dsc_ir::infer::X_COLS)],
            _ => &[],
        };
        let unread: u64 = windows
            .iter()
            .filter_map(|&(i, key)| {
                let ty = g.ty(*op.operands.get(i)?);
                let read = dsc_ir::infer::window_type(&op.attrs, key, ty).ok()?;
                Some(ty.size_bytes() - read.size_bytes())
            })
            .sum();
        all - unread
    };
    OpCost {
        flops: gemm_flops(g, op).unwrap_or(0),
        bytes,
    }
}

/// Multiply-add FLOPs of a matrix-product op (2 per MAC; causal masking not discounted).
pub fn gemm_flops(g: &Graph, op: &Op) -> Option<u64> {
    let ty = |i: usize| g.ty(op.operands[i]);
    let out = g.ty(op.results[0]);
    let flops = match op.kind {
        // rows × N outputs, each K MACs.
        OpKind::Linear | OpKind::GroupedLinear => {
            let k = ty(1).shape.last();
            out.shape.numel().saturating_mul(k)
        }
        // [*, N, G] partial sums over K; the fused GEMM writes [*, N]: each output K MACs.
        OpKind::Fp8Partials => {
            let groups = out.shape.last().max(1);
            (out.shape.numel() / groups).saturating_mul(ty(0).shape.last())
        }
        OpKind::Fp8Gemm => out.shape.numel().saturating_mul(ty(0).shape.last()),
        OpKind::Matmul => {
            let r = ty(0).shape.rank();
            out.shape.numel().saturating_mul(ty(0).shape.dims()[r - 1])
        }
        // [B, H, S, T] scores, each over the head dim (plus the rope part for MLA).
        OpKind::AttnScores => {
            let d: u64 = op
                .operands
                .iter()
                .step_by(2)
                .map(|&v| g.ty(v).shape.last())
                .sum();
            out.shape.numel().saturating_mul(d)
        }
        // [B, S, H, Dv] outputs, each over T keys.
        OpKind::AttnValues => out.shape.numel().saturating_mul(ty(0).shape.last()),
        _ => return None,
    };
    Some(flops.saturating_mul(2))
}
