//! Everything the emulator can refuse or detect, each naming the place: the PTX line for parse
//! errors and unimplemented instructions; kernel, line, thread and address for faults.

use thiserror::Error;

/// A thread of a launch: its CTA (block) index and its thread index in the CTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadId {
    /// `%ctaid` (x, y, z).
    pub cta: [u32; 3],
    /// `%tid` (x, y, z).
    pub tid: [u32; 3],
}

impl std::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.cta;
        let [x, y, z] = self.tid;
        write!(f, "block ({a}, {b}, {c}) thread ({x}, {y}, {z})")
    }
}

/// An emulator error.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EmuError {
    /// The PTX text does not parse.
    #[error("PTX line {line}: {message}")]
    Parse {
        /// 1-based line in the PTX text.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An instruction (or a form of one) the emulator does not implement: never guessed.
    #[error(
        "kernel `{kernel}`, PTX line {line}: `{instruction}` is not implemented by the emulator"
    )]
    Unsupported {
        /// The kernel entry.
        kernel: String,
        /// 1-based PTX line.
        line: usize,
        /// The instruction as written (opcode with its modifiers).
        instruction: String,
    },
    /// A memory access outside any allocation, or misaligned.
    #[error("kernel `{kernel}`, PTX line {line}, {thread}: {message} (address {address:#x})")]
    Memory {
        /// The kernel entry.
        kernel: String,
        /// 1-based PTX line.
        line: usize,
        /// The faulting thread.
        thread: ThreadId,
        /// The address (in the instruction's state space).
        address: u64,
        /// What went wrong: space, width, bounds or alignment.
        message: String,
    },
    /// Any other fault of a running thread (a bad operand value, a trap).
    #[error("kernel `{kernel}`, PTX line {line}, {thread}: {message}")]
    Fault {
        /// The kernel entry.
        kernel: String,
        /// 1-based PTX line.
        line: usize,
        /// The faulting thread.
        thread: ThreadId,
        /// What went wrong.
        message: String,
    },
    /// Threads wait on something no other thread can release.
    #[error("kernel `{kernel}`: deadlock in block {cta:?}: {message}")]
    Deadlock {
        /// The kernel entry.
        kernel: String,
        /// The stuck CTA.
        cta: [u32; 3],
        /// Who waits where (PTX lines).
        message: String,
    },
    /// A launch ran more warp-instructions than its budget (a hang, or a budget set too low).
    #[error(
        "kernel `{kernel}`: block {cta:?} exceeded the step budget of {budget} warp-instructions \
         (a hang? raise it with DSC_EMU_STEP_BUDGET), last at PTX line {line}"
    )]
    StepBudget {
        /// The kernel entry.
        kernel: String,
        /// The CTA that ran out.
        cta: [u32; 3],
        /// The budget.
        budget: u64,
        /// Where the CTA was.
        line: usize,
    },
    /// A launch the target could not run (shape limits, parameters, shared memory).
    #[error("kernel `{kernel}`: {message}")]
    Launch {
        /// The kernel entry.
        kernel: String,
        /// What is wrong.
        message: String,
    },
    /// No such entry in the module.
    #[error("no kernel `{0}` in the PTX module")]
    NoSuchKernel(String),
    /// A host-side access to global memory outside any allocation.
    #[error("host access to device memory: {0}")]
    Host(String),
}
