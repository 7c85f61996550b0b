//! The emulator backend behind the [`Backend`] trait, the CUDA backend's twin: creating it
//! parses `kernels.ptx` and allocates every buffer of the memory plan once;
//! [`Backend::set_weights`] uploads the weights once; each run copies the inputs in, launches
//! the steps in order on the emulator, and copies the outputs out. Step times are modeled
//! (the roofline over each launch's profile), never measured.

use std::collections::HashMap;

use dsc_emulator::roofline::DeviceModel;
use dsc_emulator::{LaunchProfile, Module};

use super::launch::{PreparedStep, launch, prepare};
use super::memory::EmuMemory;
use super::model::{device_model, modeled};
use super::options::EmuOptions;
use crate::artifact::Artifact;
use crate::backend::{Backend, StepPhase, StepTiming};
use crate::device::require_launch_plan;
use crate::error::RuntimeError;
use crate::memory_plan::{InputsIn, MemoryPlan, PlanBuffers};
use crate::tensor::HostTensor;
use crate::weights::Weights;

/// An artifact loaded on the PTX emulator.
pub struct EmuBackend<'a> {
    artifact: &'a Artifact,
    module: Module,
    memory: EmuMemory,
    steps: Vec<PreparedStep>,
    device: DeviceModel,
    /// The profile of each step of the last run, in launch order.
    profiles: Vec<LaunchProfile>,
    /// Host bytes of the tensor being copied, reused across copies.
    staging: Vec<u8>,
    has_weights: bool,
}

impl<'a> EmuBackend<'a> {
    /// Loads `artifact` on the emulator: parses its PTX, allocates its buffers, encodes its
    /// TMA tensor maps and resolves its launches, all once. Fails when the artifact has no
    /// launch plan, when the emulator cannot parse the PTX or lacks a kernel, or when the host
    /// lacks the memory.
    pub fn new(artifact: &'a Artifact, options: EmuOptions) -> Result<Self, RuntimeError> {
        require_launch_plan(artifact)?;
        let plan = MemoryPlan::of_artifact(artifact)?;
        let load_error = |message: String| RuntimeError::EmulatorLoad {
            module: artifact.ptx_path(),
            message,
        };
        let module = Module::parse(&artifact.ptx).map_err(|e| load_error(e.to_string()))?;
        for kernel in &artifact.manifest.kernels {
            if module.kernel(&kernel.entry).is_none() {
                return Err(load_error(format!(
                    "the manifest's kernel `{}` is not an entry of the module",
                    kernel.entry
                )));
            }
        }
        let mut memory = EmuMemory::allocate(plan)?;
        let steps = prepare(&artifact.manifest, &mut memory, &options)?;
        Ok(EmuBackend {
            artifact,
            module,
            memory,
            steps,
            device: device_model(&artifact.manifest.target),
            profiles: Vec::new(),
            staging: Vec::new(),
            has_weights: false,
        })
    }

    /// The emulator's profile of each step of the last successful run, in launch order.
    pub fn profiles(&self) -> &[LaunchProfile] {
        &self.profiles
    }

    /// Reads tensor `name` (any manifest tensor) back from emulated memory.
    pub fn read_tensor(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        self.memory.read_tensor(name, &mut self.staging)
    }

    /// Runs the plan one step at a time, calling `observe(index, phase, self)` before each
    /// step is launched and after it finished, so a caller can read any tensor: the GPU tests
    /// read a step's operands before it and its results after it, and compare them with the
    /// CPU reference of the same op.
    pub fn run_step_by_step(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        observe: &mut dyn FnMut(usize, StepPhase, &mut Self) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        if !self.has_weights {
            return Err(RuntimeError::NoWeights);
        }
        self.memory.upload_inputs(inputs, InputsIn::Every)?;
        for index in 0..self.steps.len() {
            observe(index, StepPhase::Before, self)?;
            launch(&self.module, &self.memory, index, &self.steps[index])?;
            observe(index, StepPhase::After, self)?;
        }
        Ok(())
    }
}

impl Backend for EmuBackend<'_> {
    fn set_weights(&mut self, weights: Weights) -> Result<(), RuntimeError> {
        // A failed upload leaves a mix of old and new weights: unusable until one succeeds.
        self.has_weights = false;
        self.memory.upload_weights(&self.artifact.graph, &weights)?;
        self.has_weights = true;
        Ok(())
    }

    fn has_weights(&self) -> bool {
        self.has_weights
    }

    fn run(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        self.launch_all(inputs, InputsIn::Every, timings)?;
        self.memory
            .read_outputs(&self.artifact.graph, &mut self.staging)
    }

    fn run_given(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        read: &[String],
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        self.launch_all(inputs, InputsIn::Given, timings)?;
        self.memory.read_tensors(read, &mut self.staging)
    }

    fn copy_tensors(&mut self, pairs: &[(String, String)]) -> Result<(), RuntimeError> {
        self.memory.copy_tensors(pairs)
    }

    fn read_back(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        self.read_tensor(name)
    }
}

impl EmuBackend<'_> {
    /// Copies `which` of `inputs` in and launches every step, recording the modeled timings.
    fn launch_all(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        which: InputsIn,
        timings: &mut Vec<StepTiming>,
    ) -> Result<(), RuntimeError> {
        if !self.has_weights {
            return Err(RuntimeError::NoWeights);
        }
        self.memory.upload_inputs(inputs, which)?;
        let mut profiles = Vec::with_capacity(self.steps.len());
        for (index, step) in self.steps.iter().enumerate() {
            profiles.push(launch(&self.module, &self.memory, index, step)?);
        }
        timings.clear();
        for (step, profile) in self.artifact.manifest.steps.iter().zip(&profiles) {
            let modeled = modeled(profile, &self.device, Some(step.bytes));
            timings.push(StepTiming::launched(step, modeled.seconds, Some(modeled)));
        }
        self.profiles = profiles;
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
