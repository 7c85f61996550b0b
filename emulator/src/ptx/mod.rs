//! PTX text → [`Module`]: kernels with their parameters, register and shared/local
//! declarations and decoded instructions. (Stub; being written.)

use crate::error::EmuError;

/// A parsed PTX module.
#[derive(Debug, Clone)]
pub struct Module {
    /// `.target` (`sm_90a`, `sm_89`).
    pub target: String,
    /// Kernel entries.
    pub kernels: Vec<Kernel>,
}

/// One `.entry`.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Entry name.
    pub name: String,
}

impl Module {
    /// Parses PTX text.
    pub fn parse(text: &str) -> Result<Module, EmuError> {
        let _ = text;
        Err(EmuError::Parse { line: 1, message: "not yet".into() })
    }

    /// The entry named `name`.
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}
