//! PTX text → [`Module`]: kernels with their parameters, register and shared/local
//! declarations, and decoded instructions.

pub mod decode;
pub mod decode_hopper;
pub mod lex;
pub mod module;
pub mod parse;
pub mod types;

pub use module::{Addr, AddrBase, Guard, Inst, Kernel, Module, Operand, Param, Special, Var};
pub use types::{Space, Ty};

use crate::error::EmuError;

impl Module {
    /// Parses PTX text.
    pub fn parse(text: &str) -> Result<Module, EmuError> {
        parse::parse_module(text)
    }
}
