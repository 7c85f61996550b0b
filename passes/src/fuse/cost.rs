//! The cost model `fuse` extracts with: memory traffic between kernels plus launches.
//!
//! The kernels around an FP8 GEMM (norms, activations, quantization, promotion) are
//! memory-bound: their time is the bytes they move through HBM. Fusing two kernels removes
//! the intermediate tensor's write and read and one launch. So an op that stays its own kernel
//! costs
//!
//! ```text
//! bytes read (every operand, weights included) + bytes written (every result) + LAUNCH_BYTES
//! ```
//!
//! and a term costs the sum over its ops. Arithmetic is not priced: the alternatives a rule
//! offers do the same arithmetic (a fused kernel does its parts' work), so only traffic and
//! launches tell them apart. The constants:
//!
//! - [`HBM_BYTES_PER_US`] = 3.35e6: an H100 SXM moves 3.35 TB/s, i.e. 3.35 MB per µs. Bytes
//!   are the unit, so a time converts at this rate.
//! - [`LAUNCH_US`] = 2: the gap a dependent kernel launch costs on Hopper (launch latency plus
//!   the ramp-up and tail of a short grid), about 2 µs without CUDA graphs.
//! - [`LAUNCH_BYTES`] = their product, about 6.7 MB: a launch is worth moving 6.7 MB, so for
//!   the small activations of decoding it dominates and for prefill tensors the bytes do.
//!
//! A `reshape` is a view of the same buffer (no kernel, no bytes); projections (`get`),
//! signatures and leaves are free.
//!
//! egg extracts per e-class, pricing a term as a tree, so a value read by several ops would
//! be charged once per reader. A value that the input graph reads more than once (or that is a
//! graph output) is materialized whatever the extraction chooses, so its readers are not
//! charged for it ([`KernelCost::new`]'s `shared` set). This makes the choice DAG-aware where
//! it matters: `rms_norm → quantize` is fused when the quantize is the norm output's only
//! reader; when the norm output is also read elsewhere (in a MoE layer, `tokens`, the norm
//! output reshaped, feeds the gate as well as the experts' quantize), fusing would compute the
//! norm twice for the same traffic, and the quantize is cheaper by the norm weight it need not
//! read, so the two stay separate. It also keeps term costs linear in the graph's size: a tree
//! cost of a deep residual network would otherwise double at every shared value.

use super::lang::{Data, FuseGraph, Node};
use dsc_ir::OpKind;
use egg::{CostFunction, Id};

/// HBM bandwidth of the reference device, in bytes per microsecond (H100 SXM: 3.35 TB/s).
pub const HBM_BYTES_PER_US: f64 = 3.35e6;
/// What a kernel launch costs in time, in microseconds.
pub const LAUNCH_US: f64 = 2.0;
/// A launch priced in bytes: the traffic that takes as long as a launch.
pub const LAUNCH_BYTES: f64 = LAUNCH_US * HBM_BYTES_PER_US;

/// Bytes moved plus launches, per op that stays a kernel (see the module documentation).
pub struct KernelCost<'a> {
    egraph: &'a FuseGraph,
    /// Per canonical e-class: the bytes of its value (0 for other classes).
    bytes: Vec<u64>,
    /// Per canonical signature class: the bytes its op writes.
    written: Vec<u64>,
    /// Per canonical e-class: materialized whatever is extracted.
    shared: Vec<bool>,
}

impl<'a> KernelCost<'a> {
    /// The cost function over `egraph`; `shared` holds the e-classes that are materialized
    /// whatever is extracted (read more than once, or graph outputs), canonical or not.
    pub fn new(egraph: &'a FuseGraph, shared: impl IntoIterator<Item = Id>) -> Self {
        let len = egraph
            .classes()
            .map(|c| usize::from(c.id) + 1)
            .max()
            .unwrap_or(0);
        let (mut bytes, mut written) = (vec![0; len], vec![0; len]);
        for class in egraph.classes() {
            let i = usize::from(class.id);
            match class.data {
                Data::Sig(s) => {
                    let types = &egraph.analysis.sig(s).types;
                    written[i] = types.iter().map(|t| t.size_bytes()).sum();
                }
                data => bytes[i] = egraph.analysis.tensor(&data).map_or(0, |t| t.size_bytes()),
            }
        }
        let mut is_shared = vec![false; len];
        for id in shared {
            is_shared[usize::from(egraph.find(id))] = true;
        }
        KernelCost {
            egraph,
            bytes,
            written,
            shared: is_shared,
        }
    }

    /// The cost of `enode` alone: its traffic and launch if it is a kernel.
    fn own_cost(&self, enode: &Node) -> f64 {
        let Node::Op(kind, children) = enode else {
            return 0.0;
        };
        if *kind == OpKind::Reshape {
            return 0.0;
        }
        let read: u64 = children[1..]
            .iter()
            .map(|&c| self.bytes[usize::from(self.egraph.find(c))])
            .sum();
        let written = self.written[usize::from(self.egraph.find(children[0]))];
        (read + written) as f64 + LAUNCH_BYTES
    }
}

impl CostFunction<Node> for KernelCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &Node, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = self.own_cost(enode);
        let children: f64 = match enode {
            // A projection costs what its op costs.
            Node::Get([_, tuple]) => costs(*tuple),
            Node::Op(_, children) => children[1..]
                .iter()
                .filter(|&&c| !self.shared[usize::from(self.egraph.find(c))])
                .map(|&c| costs(c))
                .sum(),
            Node::Index(_) | Node::Sig(_) | Node::Leaf(_) => 0.0,
        };
        own + children
    }
}
