//! `fold-widening-casts`: a `linear` whose x is a cast widening BF16 or F16 to f32, read by
//! nothing else, reads the narrow x itself and the cast goes. The MoE gate is the case: Hugging
//! Face computes `logits = x.float() · Wg.float()ᵀ`, and the graph casts the BF16 tokens to f32
//! for it (`mlp.tokens.to_f32`, one 4096 × 7168 f32 copy per layer written and read back).
//!
//! Every BF16 or F16 value widens to f32 exactly, and the linear's kernels and CPU reference
//! widen each element as they read it, so the products are the cast's, and the logits on the CPU
//! are the same bits. On the GPU a BF16 x with BF16 weights (V3's gate) then runs on the tensor
//! cores (the head's BF16 form: exact products, f32 accumulation) instead of the f32 CUDA-core
//! form: the logits are an f32 sum of the same products in another order, as any two f32 GEMMs
//! agree (DeepSeek-V3's own inference code computes the gate in BF16). A pipeline without this
//! pass keeps the f32 form, which sums each output's products in increasing k.

use crate::{PassError, PassOptions};
use dsc_ir::{DType, Graph, OpKind, ValueDef, ValueId};
use std::collections::HashMap;

/// Folds each widening cast read only by a `linear`'s x into that linear.
pub fn run(graph: &mut Graph, _options: &PassOptions) -> Result<(), PassError> {
    let uses = graph.use_counts();
    let defs = graph.defs();
    let mut dead = vec![false; graph.ops.len()];
    for i in 0..graph.ops.len() {
        if graph.ops[i].kind != OpKind::Linear {
            continue;
        }
        let Some(&x) = graph.ops[i].operands.first() else {
            continue;
        };
        if let Some((cast, narrow)) = widening_cast(graph, &defs, &uses, x) {
            graph.ops[i].operands[0] = narrow;
            dead[cast] = true;
        }
    }
    graph.remove_ops(&dead);
    Ok(())
}

/// The cast defining `x` and its operand, when the cast widens BF16 or F16 to f32 and nothing
/// else reads `x` (nor is it a graph output).
fn widening_cast(
    graph: &Graph,
    defs: &HashMap<ValueId, ValueDef>,
    uses: &[u32],
    x: ValueId,
) -> Option<(usize, ValueId)> {
    let Some(&ValueDef::OpResult { op, .. }) = defs.get(&x) else {
        return None;
    };
    let cast = &graph.ops[op];
    let narrow = *cast.operands.first()?;
    let widens = matches!(graph.ty(narrow).dtype, DType::Bf16 | DType::F16)
        && graph.ty(x).dtype == DType::F32;
    (cast.kind == OpKind::Cast && widens && uses[x.index()] == 1).then_some((op, narrow))
}
