//! The pass manager: a registry of named passes, pipelines parsed from comma lists, the
//! verifier after every pass (in tests and debug builds), timings, and print-after hooks.

use crate::PassError;
use dsc_ir::{Graph, verify};
use std::time::{Duration, Instant};

/// Options every pass receives.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Run the verifier after each pass.
    pub verify_each: bool,
}

impl Default for PassOptions {
    /// Verifies after each pass in debug builds (tests included), not in release builds.
    fn default() -> Self {
        PassOptions {
            verify_each: cfg!(debug_assertions),
        }
    }
}

/// The signature every pass has.
pub type PassFn = fn(&mut Graph, &PassOptions) -> Result<(), PassError>;

/// A registered pass.
#[derive(Debug)]
pub struct Pass {
    /// The name used in pipeline strings.
    pub name: &'static str,
    /// One line for `--help` and errors.
    pub summary: &'static str,
    pub run: PassFn,
}

/// Every pass, in the order of the default pipeline where they appear in it.
pub static PASSES: &[Pass] = &[
    Pass {
        name: "verify",
        summary: "check the graph is well formed",
        run: crate::verify_pass::run,
    },
    Pass {
        name: "infer-shapes",
        summary: "recompute result shapes and fixed dtypes from operands",
        run: crate::infer_shapes::run,
    },
    Pass {
        name: "autodiff",
        summary: "append the backward of output 0 (a scalar loss) and every parameter's gradient as outputs",
        run: crate::autodiff::run,
    },
    Pass {
        name: "assign-precision",
        summary: "choose compute/accumulate/storage dtypes per op (DESIGN.md §3) and insert casts",
        run: crate::assign_precision::run,
    },
    Pass {
        name: "quantize-linears",
        summary: "rewrite FP8 GEMMs as quantize -> fp8_partials -> promote (DESIGN.md §3)",
        run: crate::quantize_linears::run,
    },
    Pass {
        name: "requantize-transposed",
        summary: "feed a training step's Wgrad from the FP8 copies of its operands (dequantize, transpose, requantize; DeepSeek-V3 §3.5.2)",
        run: crate::requantize_transposed::run,
    },
    Pass {
        name: "fold-weights",
        summary: "quantize weights once: FP8 weight + weight_scale_inv parameters",
        run: crate::fold_weights::run,
    },
    Pass {
        name: "fuse",
        summary: "fuse kernels by equality saturation: fp8_gemm, rms_norm_quant, swiglu_quant, cast chains",
        run: crate::fuse::run,
    },
    Pass {
        name: "fuse-attention",
        summary: "fuse attn_scores -> softmax -> attn_values into one attention op (no [B, H, S, T] tensor)",
        run: crate::fuse_attention::run,
    },
    Pass {
        name: "recompute",
        summary: "recompute RMSNorm and SwiGLU outputs in a training step's backward instead of keeping them (DeepSeek-V3 §3.2.3)",
        run: crate::recompute::run,
    },
    Pass {
        name: "recompute-full",
        summary: "recompute every token-dependent forward op but the residual stream and the head in a training step's backward (whole-layer activation checkpointing)",
        run: crate::recompute::run_full,
    },
    Pass {
        name: "cache-swiglu-inputs",
        summary: "keep a training step's MoE SwiGLU inputs for the backward as FP8 copies, SwiGLU recomputed from them (DeepSeek-V3 §3.3)",
        run: crate::cache_swiglu_inputs::run,
    },
    Pass {
        name: "cse",
        summary: "merge ops that compute the same thing",
        run: crate::cse::run,
    },
    Pass {
        name: "dce",
        summary: "remove ops and parameters no output depends on",
        run: crate::dce::run,
    },
    Pass {
        name: "fuse-residual-norm",
        summary: "fuse a residual add into the rms_norm(_quant) of its sum: one kernel writes the sum and the norm",
        run: crate::fuse_residual_norm::run,
    },
    Pass {
        name: "fuse-attention-quant",
        summary: "fold the quantize of a fused attention's output into the attention (attention_quant): its FP8 codes are written by the attention kernel",
        run: crate::fuse_attention_quant::run,
    },
    Pass {
        name: "fold-slices",
        summary: "a rope or norm reads the last-axis slice it alone reads in place (x_cols): no copy",
        run: crate::fold_slices::run,
    },
    Pass {
        name: "fold-widening-casts",
        summary: "a linear reads the BF16/F16 x a cast to f32 widened for it alone (the MoE gate's tokens): no f32 copy, BF16 tensor cores",
        run: crate::fold_widening_casts::run,
    },
];

/// The pipeline `dsc compile` runs by default.
pub const DEFAULT_PIPELINE: &str = "verify,infer-shapes,assign-precision,quantize-linears,fold-weights,fuse,fuse-attention,cse,dce,fuse-residual-norm,fuse-attention-quant,fold-slices,fold-widening-casts";

/// Looks a pass up by name.
pub fn find_pass(name: &str) -> Option<&'static Pass> {
    PASSES.iter().find(|p| p.name == name)
}

/// An ordered list of passes.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub passes: Vec<&'static Pass>,
}

impl Pipeline {
    /// Parses a comma-separated list of pass names (spaces around names are ignored).
    pub fn parse(list: &str) -> Result<Pipeline, PassError> {
        let mut passes = Vec::new();
        for name in list.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(PassError::EmptyPassName {
                    pipeline: list.to_string(),
                });
            }
            let pass = find_pass(name).ok_or_else(|| PassError::UnknownPass {
                name: name.to_string(),
                known: PASSES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            })?;
            passes.push(pass);
        }
        Ok(Pipeline { passes })
    }

    /// The default pipeline.
    pub fn default_pipeline() -> Pipeline {
        Pipeline::parse(DEFAULT_PIPELINE).expect("the default pipeline names registered passes")
    }

    /// Runs every pass in order, verifying after each when asked, and calls `after` with
    /// each pass's name and the graph it left. Returns the time each pass took.
    pub fn run(
        &self,
        graph: &mut Graph,
        options: &PassOptions,
        mut after: impl FnMut(&str, &Graph),
    ) -> Result<Vec<PassTiming>, PassError> {
        let mut timings = Vec::with_capacity(self.passes.len());
        for pass in &self.passes {
            let start = Instant::now();
            (pass.run)(graph, options)?;
            let elapsed = start.elapsed();
            if options.verify_each && pass.name != "verify" {
                verify(graph).map_err(|errors| PassError::Verify {
                    pass: pass.name.to_string(),
                    errors,
                })?;
            }
            timings.push(PassTiming {
                pass: pass.name,
                elapsed,
            });
            after(pass.name, graph);
        }
        Ok(timings)
    }
}

/// How long one pass took.
#[derive(Debug, Clone, Copy)]
pub struct PassTiming {
    pub pass: &'static str,
    pub elapsed: Duration,
}
