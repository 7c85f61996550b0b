//! What every instruction of a CTA can see: the launch (module, kernel, parameters, global
//! memory, options), the CTA's coordinates, its shared memory and its counters.

use crate::error::{EmuError, ThreadId};
use crate::launch::{LaunchConfig, LaunchOptions};
use crate::memory::{GLOBAL_BASE, GlobalMemory, MODULE_VARIABLES_BASE};
use crate::ptx::{Inst, Kernel, Module};

/// The launch, shared by every CTA.
pub struct Launch<'a> {
    /// The module.
    pub module: &'a Module,
    /// The kernel.
    pub kernel: &'a Kernel,
    /// Global memory.
    pub memory: &'a GlobalMemory,
    /// The parameter buffer.
    pub params: &'a [u8],
    /// Grid and block.
    pub config: &'a LaunchConfig,
    /// Options.
    pub options: &'a LaunchOptions,
    /// Device addresses of the module's `.global`/`.const` variables, in `module_memory`.
    pub globals: Vec<u64>,
    /// The module's variables, allocated and initialized for this launch.
    pub module_memory: GlobalMemory,
}

impl Launch<'_> {
    /// The memory that holds global address `address`: the module's variables or the device's.
    pub fn memory_for(&self, address: u64) -> &GlobalMemory {
        if (MODULE_VARIABLES_BASE..GLOBAL_BASE).contains(&address) {
            &self.module_memory
        } else {
            self.memory
        }
    }
}

/// Counters of one CTA, turned into a [`crate::LaunchProfile`] at the end.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Warp-instructions issued per instruction index.
    pub per_inst: Vec<u64>,
    /// Thread-instructions.
    pub threads: u64,
    /// Global load sectors.
    pub load_sectors: u64,
    /// Global load bytes.
    pub load_bytes: u64,
    /// Global store sectors.
    pub store_sectors: u64,
    /// Global store bytes.
    pub store_bytes: u64,
    /// Async copy bytes.
    pub async_bytes: u64,
    /// Shared-memory requests.
    pub shared_requests: u64,
    /// Shared-memory wavefronts.
    pub shared_wavefronts: u64,
    /// Barrier waits.
    pub barrier_waits: u64,
    /// Failed mbarrier polls.
    pub mbarrier_polls: u64,
}

/// One CTA's view.
pub struct CtaContext<'a> {
    /// The launch.
    pub launch: &'a Launch<'a>,
    /// `%ctaid`.
    pub cta: [u32; 3],
    /// `%cluster_ctarank`.
    pub rank: u32,
    /// The cluster the CTA belongs to.
    pub cluster: &'a super::cluster::Cluster,
    /// Shared memory (static then dynamic).
    pub shared: Vec<u8>,
    /// Counters.
    pub counters: Counters,
    /// Hopper's asynchronous state (mbarrier-tracked copies, async-groups, wgmma).
    pub hopper: super::hopper::HopperState,
}

impl CtaContext<'_> {
    /// The thread of `lane` in warp `warp`.
    pub fn thread(&self, warp_first_thread: u32, lane: usize) -> ThreadId {
        let [bx, by, _] = self.launch.config.block;
        let linear = warp_first_thread + lane as u32;
        ThreadId {
            cta: self.cta,
            tid: [linear % bx, (linear / bx) % by, linear / (bx * by)],
        }
    }

    /// A fault of `lane` at `inst`.
    pub fn fault(&self, inst: &Inst, first_thread: u32, lane: usize, message: String) -> EmuError {
        EmuError::Fault {
            kernel: self.launch.kernel.name.clone(),
            line: inst.line as usize,
            thread: self.thread(first_thread, lane),
            message,
        }
    }

    /// A memory fault of `lane` at `inst`.
    pub fn memory_fault(
        &self,
        inst: &Inst,
        first_thread: u32,
        lane: usize,
        address: u64,
        message: String,
    ) -> EmuError {
        EmuError::Memory {
            kernel: self.launch.kernel.name.clone(),
            line: inst.line as usize,
            thread: self.thread(first_thread, lane),
            address,
            message,
        }
    }

    /// `inst` is not implemented.
    pub fn unsupported(&self, inst: &Inst) -> EmuError {
        EmuError::Unsupported {
            kernel: self.launch.kernel.name.clone(),
            line: inst.line as usize,
            instruction: inst.opcode.clone(),
        }
    }
}
