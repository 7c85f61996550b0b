//! The CUDA backend behind the [`Backend`] trait. Creating it loads `kernels.ptx`, allocates
//! every buffer and resolves every launch; [`Backend::set_weights`] uploads the weights once;
//! each run copies the inputs in, launches the steps on one stream with a CUDA event between
//! steps (the per-step timings), and copies the outputs out. Runs allocate no device memory.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, sys};

use super::launch::{PreparedStep, launch, prepare};
use super::memory::{DeviceMemory, OnStream};
use super::module::KernelModule;
use super::probe::{DeviceInfo, driver_error, driver_present, without_driver_panics};
use crate::artifact::Artifact;
use crate::backend::{Backend, StepPhase, StepTiming};
use crate::error::RuntimeError;
use crate::memory_plan::{InputsIn, MemoryPlan, PlanBuffers};
use crate::tensor::HostTensor;
use crate::weights::Weights;

/// An artifact loaded on one GPU.
pub struct CudaBackend<'a> {
    artifact: &'a Artifact,
    device: DeviceInfo,
    stream: Arc<CudaStream>,
    module: KernelModule,
    memory: DeviceMemory,
    steps: Vec<PreparedStep>,
    /// `steps.len() + 1` timing events: before the first step and after each.
    events: Vec<CudaEvent>,
    /// Host bytes of the tensor being copied, reused across copies.
    staging: Vec<u8>,
    has_weights: bool,
    /// The context last: it must outlive every buffer, event and module above.
    _ctx: Arc<CudaContext>,
}

impl<'a> CudaBackend<'a> {
    /// Loads `artifact` on `device` (which [`crate::device::choose_device`] found able to run
    /// it): PTX, buffers, TMA tensor maps, launches and events, all once.
    pub fn new(artifact: &'a Artifact, device: &DeviceInfo) -> Result<Self, RuntimeError> {
        without_driver_panics("loading the artifact on the GPU", || {
            Self::load(artifact, device)
        })
    }

    fn load(artifact: &'a Artifact, device: &DeviceInfo) -> Result<Self, RuntimeError> {
        if !driver_present() {
            return Err(RuntimeError::NoDriver);
        }
        let plan = MemoryPlan::of_artifact(artifact)?;
        let ctx = CudaContext::new(device.ordinal).map_err(|e| driver_error("cuCtxCreate", e))?;
        // SAFETY: every buffer of the session is allocated after this call and used only on
        // the one stream created below, in order, so cudarc's cross-stream events are not
        // needed; the backend synchronizes before reading results and before dropping buffers.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| driver_error("cuStreamCreate", e))?;
        let module = KernelModule::load(&ctx, artifact)?;
        let mut memory = DeviceMemory::allocate(&ctx, &stream, plan, &device.to_string())?;
        let steps = prepare(&artifact.manifest, &mut memory, &stream)?;
        let events = (0..=steps.len())
            .map(|_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)))
            .collect::<Result<_, _>>()
            .map_err(|e| driver_error("cuEventCreate", e))?;
        Ok(CudaBackend {
            artifact,
            device: device.clone(),
            stream,
            module,
            memory,
            steps,
            events,
            staging: Vec::new(),
            has_weights: false,
            _ctx: ctx,
        })
    }

    /// The GPU.
    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// The buffers with the stream their copies go on.
    fn buffers(&mut self) -> OnStream<'_> {
        OnStream {
            memory: &mut self.memory,
            stream: &self.stream,
        }
    }

    /// Launches step `index` and records the event after it.
    fn launch_step(&self, index: usize) -> Result<(), RuntimeError> {
        launch(&self.stream, &self.module, index, &self.steps[index])?;
        self.events[index + 1]
            .record(&self.stream)
            .map_err(|e| driver_error("cuEventRecord", e))
    }

    fn synchronize(&self) -> Result<(), RuntimeError> {
        // Kernel faults surface here, after the launches that caused them.
        self.stream
            .synchronize()
            .map_err(|e| driver_error("cuStreamSynchronize (a kernel failed)", e))
    }

    /// Reads tensor `name` (any manifest tensor) back from the device.
    pub fn read_tensor(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        let buffers = OnStream {
            memory: &mut self.memory,
            stream: &self.stream,
        };
        buffers.read_tensor(name, &mut self.staging)
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
        self.buffers().upload_inputs(inputs, InputsIn::Every)?;
        self.synchronize()?;
        for index in 0..self.steps.len() {
            observe(index, StepPhase::Before, self)?;
            self.launch_step(index)?;
            self.synchronize()?;
            observe(index, StepPhase::After, self)?;
        }
        Ok(())
    }
}

impl Backend for CudaBackend<'_> {
    fn set_weights(&mut self, weights: Weights) -> Result<(), RuntimeError> {
        without_driver_panics("uploading the weights", || self.upload_weights(weights))
    }

    fn has_weights(&self) -> bool {
        self.has_weights
    }

    fn run(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        without_driver_panics("running the launch plan", || {
            self.launch_plan(inputs, InputsIn::Every, timings)?;
            let buffers = OnStream {
                memory: &mut self.memory,
                stream: &self.stream,
            };
            buffers.read_outputs(&self.artifact.graph, &mut self.staging)
        })
    }

    fn run_given(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        read: &[String],
        timings: &mut Vec<StepTiming>,
    ) -> Result<Vec<(String, HostTensor)>, RuntimeError> {
        without_driver_panics("running the launch plan", || {
            self.launch_plan(inputs, InputsIn::Given, timings)?;
            let buffers = OnStream {
                memory: &mut self.memory,
                stream: &self.stream,
            };
            buffers.read_tensors(read, &mut self.staging)
        })
    }

    fn copy_tensors(&mut self, pairs: &[(String, String)]) -> Result<(), RuntimeError> {
        without_driver_panics("copying tensors on the device", || {
            self.buffers().copy_tensors(pairs)?;
            self.synchronize()
        })
    }

    fn read_back(&mut self, name: &str) -> Result<HostTensor, RuntimeError> {
        without_driver_panics("reading a tensor back", || self.read_tensor(name))
    }
}

impl CudaBackend<'_> {
    /// Uploads every weight into its buffer.
    fn upload_weights(&mut self, weights: Weights) -> Result<(), RuntimeError> {
        // A failed upload leaves a mix of old and new weights: unusable until one succeeds.
        self.has_weights = false;
        let graph = &self.artifact.graph;
        self.buffers().upload_weights(graph, &weights)?;
        self.synchronize()?;
        self.has_weights = true;
        Ok(())
    }

    /// One forward pass: `which` of `inputs` in, every step launched between timing events.
    fn launch_plan(
        &mut self,
        inputs: &HashMap<String, HostTensor>,
        which: InputsIn,
        timings: &mut Vec<StepTiming>,
    ) -> Result<(), RuntimeError> {
        if !self.has_weights {
            return Err(RuntimeError::NoWeights);
        }
        self.buffers().upload_inputs(inputs, which)?;
        self.events[0]
            .record(&self.stream)
            .map_err(|e| driver_error("cuEventRecord", e))?;
        for index in 0..self.steps.len() {
            self.launch_step(index)?;
        }
        self.synchronize()?;
        timings.clear();
        for (index, step) in self.artifact.manifest.steps.iter().enumerate() {
            let ms = self.events[index]
                .elapsed_ms(&self.events[index + 1])
                .map_err(|e| driver_error("cuEventElapsedTime", e))?;
            timings.push(StepTiming::launched(step, f64::from(ms) * 1e-3, None));
        }
        Ok(())
    }
}
