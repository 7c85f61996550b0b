//! End-to-end codegen tests over the example models (the DeepSeek-V3 and V2-Lite shapes
//! included): every kernel they need is built, lowered for both targets and accepted by ptxas
//! without spills; the plan is consistent with the graph.

use std::path::PathBuf;

use dsc_ir::Graph;
use dsc_kernels::manifest::{Manifest, Storage};
use dsc_passes::{PassOptions, Pipeline};

use crate::{Options, PtxCache, Target, generate, generate_with, ptxas};

/// An example model after the default pipeline.
fn compiled(name: &str) -> Graph {
    compiled_with(name, "")
}

/// An example model with `extra` appended to its model.toml, after the default pipeline.
fn compiled_with(name: &str, extra: &str) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.toml"));
    let source = std::fs::read_to_string(&path).expect("example model exists") + extra;
    let mut graph = dsc_ir::model::load_model(&source).expect("example model loads");
    Pipeline::default_pipeline()
        .run(&mut graph, &PassOptions::default(), |_, _| {})
        .expect("default pipeline runs");
    graph
}

#[test]
fn every_example_kernel_assembles_for_both_targets_without_spills() {
    let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
    for name in [
        "tiny-moe",
        "llama-small",
        "qwen2-small",
        "mlp",
        "deepseek-v2-lite",
        "deepseek-v3",
    ] {
        let graph = compiled(name);
        for target in Target::ALL {
            let generated = generate(&graph, target, false)
                .unwrap_or_else(|error| panic!("{name} {target}: {error}"));
            assert!(
                !generated.timings.lowered_whole,
                "{name} {target}: the kernels' PTX could not be joined"
            );
            // Dense FP8 GEMMs run on the tensor cores: wgmma on Hopper, mma.sync on Ada.
            // (On sm_90a the tile width follows the shape: `m64n{16,32,64,128}k32`.)
            let fp8_mma = match target {
                Target::Sm90a => "k32.f32.e4m3.e4m3",
                Target::Sm89 => "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
            };
            assert!(
                generated.ptx.lines().any(|l| l.contains(fp8_mma)
                    && l.contains(match target {
                        Target::Sm90a => "wgmma.mma_async.sync.aligned.m64n",
                        Target::Sm89 => "mma.sync",
                    })),
                "{name} {target}: no FP8 tensor-core MMA ({fp8_mma}) in the PTX"
            );
            if name != "mlp" {
                // The BF16 head runs on the tensor cores too.
                let bf16_mma = match target {
                    Target::Sm90a => "k16.f32.bf16.bf16",
                    Target::Sm89 => "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                };
                let head_on_tensor_cores = generated
                    .ptx
                    .split(".entry ")
                    .any(|entry| entry.starts_with("linear_") && entry.contains(bf16_mma));
                assert!(
                    head_on_tensor_cores,
                    "{name} {target}: no BF16 tensor-core MMA in a linear's PTX"
                );
            }
            let report = ptxas::assemble(&ptxas, &generated.ptx, target)
                .unwrap_or_else(|error| panic!("{name} {target}: {error}"));
            let mut entries: Vec<&str> = report.functions.iter().map(|f| f.name.as_str()).collect();
            entries.sort_unstable();
            let mut expected: Vec<&str> = generated
                .manifest
                .kernels
                .iter()
                .map(|k| k.entry.as_str())
                .collect();
            expected.sort_unstable();
            assert_eq!(entries, expected, "{name} {target}:\n{}", report.output);
            assert_eq!(
                report.spill_store_bytes(),
                0,
                "{name} {target}:\n{}",
                report.output
            );
            assert_eq!(
                report.spill_load_bytes(),
                0,
                "{name} {target}:\n{}",
                report.output
            );
            assert!(
                report.notes.is_empty(),
                "{name} {target}:\n{}",
                report.output
            );
            // Every entry bounds its threads (`.maxntid`), and each launch stays within them:
            // ptxas then fits its registers to the block, so no launch fails for registers.
            for step in &generated.manifest.steps {
                let body = generated
                    .ptx
                    .split(".entry ")
                    .find(|entry| entry.starts_with(&format!("{}(", step.kernel)))
                    .unwrap_or_else(|| panic!("{name} {target}: no entry {}", step.kernel));
                let [x, y, z] = step.block;
                assert!(
                    body.contains(&format!(".maxntid {x}, {y}, {z}")),
                    "{name} {target}: `{}` launched with {x}x{y}x{z} threads does not declare them",
                    step.kernel
                );
            }
            // The tensor-core GEMMs keep their accumulators in registers: no local memory.
            for f in &report.functions {
                if f.name.starts_with("fp8_gemm_") || f.name.starts_with("linear_") {
                    assert_eq!(
                        f.stack_frame_bytes, 0,
                        "{name} {target} `{}`:\n{}",
                        f.name, report.output
                    );
                }
            }
        }
    }
}

/// On sm_90a every dense FP8 GEMM is the pipelined form: TMA loads over the two tensor maps the
/// manifest asks for, an mbarrier ring, wgmma, dynamic shared memory, and `setmaxnreg` where two
/// consumer warpgroups take registers from the producer.
#[test]
fn dense_fp8_gemms_on_hopper_are_pipelined_with_tma() {
    for name in ["mlp", "llama-small", "deepseek-v3"] {
        let graph = compiled(name);
        let generated =
            generate(&graph, Target::Sm90a, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut pipelined = 0;
        for step in &generated.manifest.steps {
            let kernel = generated
                .manifest
                .kernel(&step.kernel)
                .expect("a step's kernel");
            if kernel.spec != "fp8_gemm" || kernel.params.iter().any(|p| p == "rows") {
                continue;
            }
            let body = generated
                .ptx
                .split(".entry ")
                .find(|entry| entry.starts_with(&format!("{}(", step.kernel)))
                .unwrap_or_else(|| panic!("{name}: no PTX for `{}`", step.kernel));
            for instruction in [
                "cp.async.bulk.tensor.2d.shared::cluster.global",
                "mbarrier.arrive.expect_tx",
                "mbarrier.try_wait.parity",
                "wgmma.mma_async.sync.aligned.m64n",
            ] {
                assert!(
                    body.contains(instruction),
                    "{name} `{}`: no {instruction}",
                    step.kernel
                );
            }
            let maps: Vec<usize> = step.tensor_maps.iter().map(|m| m.param).collect();
            assert_eq!(
                maps.iter()
                    .map(|&p| kernel.params[p].as_str())
                    .collect::<Vec<_>>(),
                ["x_map", "w_map"],
                "{name} `{}`",
                step.kernel
            );
            // Each map's parameter gets the tensor it maps: x's and w's.
            assert_eq!(step.args[maps[0]], step.args[0]);
            assert_eq!(step.args[maps[1]], step.args[2]);
            assert!(step.shared_bytes > 48 * 1024, "{name} `{}`", step.kernel);
            let two_consumers = step.block == [384, 1, 1];
            let words = body.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(
                words.contains("setmaxnreg.dec.sync.aligned.u32 40;")
                    && words.contains("setmaxnreg.inc.sync.aligned.u32 232;"),
                two_consumers,
                "{name} `{}`",
                step.kernel
            );
            pipelined += 1;
        }
        assert!(pipelined > 0, "{name}: no dense FP8 GEMM");
    }
}

/// On sm_89 every FP8 GEMM whose K is whole 16-byte chunks (dense and grouped) is the
/// pipelined form: `cp.async` 16-byte copies with zero fill into a ring in dynamic shared
/// memory, `ldmatrix` fragments and native FP8 `mma.sync`, and no byte-wise global operand
/// loads; the one-warp-per-tile form is left to the GEMMs it cannot take.
#[test]
fn fp8_gemms_on_ada_are_pipelined_with_cp_async_and_ldmatrix() {
    for name in ["mlp", "tiny-moe", "deepseek-v3"] {
        let graph = compiled(name);
        let generated =
            generate(&graph, Target::Sm89, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mut pipelined, mut grouped) = (0, 0);
        for step in &generated.manifest.steps {
            let kernel = generated
                .manifest
                .kernel(&step.kernel)
                .expect("a step's kernel");
            if kernel.spec != "fp8_gemm" {
                continue;
            }
            let form = &kernel.attrs["form"];
            assert!(
                form.get("mma_pipelined").is_some(),
                "{name} `{}`: form {form}",
                step.kernel
            );
            let body = generated
                .ptx
                .split(".entry ")
                .find(|entry| entry.starts_with(&format!("{}(", step.kernel)))
                .unwrap_or_else(|| panic!("{name}: no PTX for `{}`", step.kernel));
            for instruction in [
                "cp.async.cg.shared.global",
                "cp.async.commit_group",
                "cp.async.wait_group",
                "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
                "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
            ] {
                assert!(
                    body.contains(instruction),
                    "{name} `{}`: no {instruction}",
                    step.kernel
                );
            }
            assert!(
                !body.contains("ld.global.u8") && !body.contains("ld.global.nc.u8"),
                "{name} `{}`: byte-wise operand loads",
                step.kernel
            );
            assert!(step.shared_bytes > 0, "{name} `{}`", step.kernel);
            assert!(step.tensor_maps.is_empty(), "{name} `{}`", step.kernel);
            pipelined += 1;
            grouped += usize::from(kernel.params.iter().any(|p| p == "rows"));
        }
        assert!(pipelined > 0, "{name}: no FP8 GEMM");
        if name != "mlp" {
            assert!(grouped > 0, "{name}: no grouped FP8 GEMM");
        }
    }
}

#[test]
fn a_model_kept_entirely_in_f32_compiles_and_assembles() {
    // No FP8 at all: the GEMMs stay `linear` and the routed experts `grouped_linear`.
    let graph = compiled_with(
        "tiny-moe",
        "\n[precision]\nhigh = \"f32\"\n\n[[precision.override]]\nmatch = \"*\"\ndtype = \"f32\"\n",
    );
    assert!(
        graph
            .ops
            .iter()
            .any(|op| op.kind == dsc_ir::OpKind::GroupedLinear),
        "the experts should stay grouped_linear"
    );
    let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
    let generated = generate(&graph, Target::Sm90a, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        generated
            .manifest
            .kernels
            .iter()
            .any(|k| k.spec == "grouped_linear")
    );
    let report = ptxas::assemble(&ptxas, &generated.ptx, Target::Sm90a)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.spill_store_bytes(), 0, "{}", report.output);
}

#[test]
fn the_plan_binds_every_step_to_known_tensors_and_keeps_live_tensors_apart() {
    let graph = compiled("tiny-moe");
    let manifest = generate(&graph, Target::Sm90a, false).unwrap().manifest;
    check_manifest(&graph, &manifest);
    // Identical layers share kernels: far fewer entries than steps.
    assert!(
        manifest.kernels.len() * 3 < manifest.steps.len(),
        "{} kernels for {} steps",
        manifest.kernels.len(),
        manifest.steps.len()
    );
    assert!(manifest.arena.bytes < manifest.arena.no_reuse_bytes);
    let text = manifest.to_json();
    assert_eq!(
        Manifest::from_json(&text, "manifest.json").unwrap(),
        manifest
    );
}

#[test]
fn the_residual_stream_is_summed_in_place_at_each_fused_norm() {
    let graph = compiled("llama-small");
    let manifest = generate(&graph, Target::Sm90a, false).unwrap().manifest;
    check_manifest(&graph, &manifest);
    let fused: Vec<_> = graph
        .ops
        .iter()
        .filter(|op| op.kind == dsc_ir::OpKind::AddRmsNormQuant)
        .collect();
    assert_eq!(fused.len(), 7, "two residual adds a layer but the last");
    for op in fused {
        let sum = graph.name(*op.results.last().unwrap());
        let tensor = manifest.tensor(sum).unwrap();
        let Storage::Alias { of, offset: 0 } = &tensor.storage else {
            panic!("{sum} has its own bytes: {:?}", tensor.storage);
        };
        // The bytes of the operand the fused norm reads last: the branch's output or the
        // stream's previous value (itself, possibly, in place of an earlier sum).
        let operands: Vec<&str> = op.operands.iter().map(|&v| graph.name(v)).collect();
        let root = |name: &str| match &manifest.tensor(name).unwrap().storage {
            Storage::Alias { of, .. } => of.clone(),
            _ => name.to_string(),
        };
        assert!(
            operands[..2].iter().any(|&o| root(o) == *of),
            "{sum} aliases {of}, not an operand of {operands:?}"
        );
    }
}

#[test]
fn a_sum_taken_in_place_of_an_earlier_sum_takes_its_bytes() {
    // r1 takes g's bytes; r2 and r3 (their residual operands are inputs) take r1's and r2's,
    // which are g's: every sum of the chain must name g, the bytes it is in.
    let mut source = String::from("[model]\nname = \"chain\"\noutputs = [\"out\"]\n");
    for input in ["a", "b", "c"] {
        source += &format!("[[input]]\nname = \"{input}\"\ndtype = \"bf16\"\nshape = [8, 256]\n");
    }
    let ops = [
        ("h", "mul", "\"a\", \"b\""),
        ("g", "mul", "\"a\", \"c\""),
        ("r1", "add", "\"h\", \"g\""),
        ("n1", "rms_norm", "\"r1\""),
        ("r2", "add", "\"r1\", \"c\""),
        ("n2", "rms_norm", "\"r2\""),
        ("m", "mul", "\"n1\", \"n2\""),
        ("r3", "add", "\"r2\", \"b\""),
        ("n3", "rms_norm", "\"r3\""),
        ("out", "mul", "\"n3\", \"m\""),
    ];
    for (name, kind, inputs) in ops {
        let eps = if kind == "rms_norm" {
            "eps = 1e-6\n"
        } else {
            ""
        };
        source +=
            &format!("[[op]]\nname = \"{name}\"\nkind = \"{kind}\"\ninputs = [{inputs}]\n{eps}");
    }
    let mut graph = dsc_ir::model::load_model(&source).expect("the chain loads");
    Pipeline::default_pipeline()
        .run(&mut graph, &PassOptions::default(), |_, _| {})
        .expect("default pipeline runs");
    let manifest = generate(&graph, Target::Sm90a, false).unwrap().manifest;
    check_manifest(&graph, &manifest);
    for sum in ["r1", "r2", "r3"] {
        let storage = &manifest.tensor(sum).unwrap().storage;
        assert!(
            matches!(storage, Storage::Alias { of, offset: 0 } if of == "g"),
            "{sum}: {storage:?}"
        );
    }
}

/// Every step's arguments exist with the kernel's arity, and no two arena tensors that are live
/// at the same step share bytes. A tensor is live at each step it is an argument of and at each
/// step of an op that reads it, even where the kernel reads something else in its place (a
/// grouped GEMM's expert indices, replaced by the dispatch layout): a step-by-step check reads
/// an op's operands before its first step.
fn check_manifest(graph: &Graph, manifest: &Manifest) {
    let mut live_range = std::collections::HashMap::new();
    let ops: std::collections::HashMap<&str, &dsc_ir::Op> =
        graph.ops.iter().map(|op| (graph.op_name(op), op)).collect();
    for (i, step) in manifest.steps.iter().enumerate() {
        let kernel = manifest
            .kernel(&step.kernel)
            .expect("step kernel is listed");
        assert_eq!(kernel.params.len(), step.args.len(), "{}", step.op);
        let operands = ops[step.op.as_str()]
            .operands
            .iter()
            .map(|&v| graph.name(v).to_string());
        for arg in step.args.iter().cloned().chain(operands) {
            let arg = &arg;
            let mut tensor = manifest
                .tensor(arg)
                .unwrap_or_else(|| panic!("{arg} is listed"));
            while let Storage::Alias { of, .. } = &tensor.storage {
                tensor = manifest.tensor(of).expect("alias target is listed");
            }
            let range = live_range.entry(tensor.name.clone()).or_insert((i, i));
            range.1 = i;
        }
    }
    let arena: Vec<_> = manifest
        .tensors
        .iter()
        .filter_map(|t| match t.storage {
            Storage::Arena { offset } => Some((t, offset)),
            _ => None,
        })
        .collect();
    for (a, oa) in &arena {
        assert!(
            oa + a.bytes <= manifest.arena.bytes,
            "{} past the arena",
            a.name
        );
        for (b, ob) in &arena {
            if a.name >= b.name {
                continue;
            }
            let (Some(ra), Some(rb)) = (live_range.get(&a.name), live_range.get(&b.name)) else {
                continue;
            };
            let in_time = ra.0 <= rb.1 && rb.0 <= ra.1;
            let in_space = *oa < ob + b.bytes && *ob < oa + a.bytes;
            assert!(!(in_time && in_space), "{} and {} overlap", a.name, b.name);
        }
    }
}

/// The MLIR of one kernel, as built (before lowering).
fn kernel_mlir(kernel: &crate::kernels::GpuKernel) -> String {
    let context = crate::mlir::create_context();
    let module = crate::mlir::KernelModule::new(&context, "dsc_kernels");
    kernel
        .build(&module, &kernel.entry())
        .expect("kernel builds");
    use melior::ir::operation::OperationLike;
    assert!(module.module().as_operation().verify());
    module.module().as_operation().to_string()
}

#[test]
fn mlir_of_the_add_kernel() {
    use crate::kernels::GpuKernel;
    use crate::kernels::elementwise::{Elementwise, ElementwiseOp};
    use dsc_ir::DType;
    let kernel = GpuKernel::Elementwise(Elementwise {
        op: ElementwiseOp::Add,
        len: 1000,
        inputs: vec![DType::Bf16, DType::Bf16],
        output: DType::Bf16,
        rhs_len: None,
    });
    insta::assert_snapshot!(kernel_mlir(&kernel));
}

#[test]
fn mlir_of_the_bias_add_kernel() {
    use crate::kernels::GpuKernel;
    use crate::kernels::elementwise::{Elementwise, ElementwiseOp};
    use dsc_ir::DType;
    // `[10, 100] + [100]`: the rhs is read at `i % 100`.
    let kernel = GpuKernel::Elementwise(Elementwise {
        op: ElementwiseOp::Add,
        len: 1000,
        inputs: vec![DType::Bf16, DType::Bf16],
        output: DType::Bf16,
        rhs_len: Some(100),
    });
    insta::assert_snapshot!(kernel_mlir(&kernel));
}

#[test]
fn mlir_of_the_activation_quantization_kernel() {
    use crate::kernels::GpuKernel;
    use crate::kernels::quantize::{ActQuant, QuantSource, QuantSpec};
    use dsc_ir::{DType, ScaleFormat};
    let kernel = GpuKernel::ActQuant(ActQuant {
        rows: 4,
        dim: 256,
        source: QuantSource::Plain(DType::Bf16),
        quant: QuantSpec {
            tile: 128,
            format: DType::F8E4M3,
            scale_format: ScaleFormat::F32,
        },
    });
    insta::assert_snapshot!(kernel_mlir(&kernel));
}

#[test]
fn entry_names_are_stable_and_distinguish_shapes() {
    use crate::kernels::GpuKernel;
    use crate::kernels::elementwise::{Elementwise, ElementwiseOp};
    use dsc_ir::DType;
    let add = |len| {
        GpuKernel::Elementwise(Elementwise {
            op: ElementwiseOp::Add,
            len,
            inputs: vec![DType::Bf16, DType::Bf16],
            output: DType::Bf16,
            rhs_len: None,
        })
    };
    assert_eq!(add(1000).entry(), add(1000).entry());
    assert_ne!(add(1000).entry(), add(1001).entry());
    assert!(add(1000).entry().starts_with("add_"));
}

/// The entry names of every kernel of an example, with the canonical text each hashes: a change
/// to a name (a new field, a changed value, a new canonical form) shows up in review instead of
/// silently invalidating artifacts and caches. Renaming a Rust field or type changes nothing.
#[test]
fn entry_names_of_tiny_moe_are_pinned() {
    let graph = compiled("tiny-moe");
    let program = crate::plan::plan(&graph, Target::Sm90a).unwrap();
    let mut lines = String::new();
    for (entry, kernel) in &program.kernels {
        assert_eq!(*entry, kernel.entry());
        lines.push_str(&format!("{entry}  {}\n", kernel.canonical()));
    }
    insta::assert_snapshot!(lines);
}

#[test]
fn a_kernel_holding_its_reference_spec_reads_as_if_declared_flat() {
    // `AttnValues` holds the reference's `ValueDims` (flattened): its canonical text, so its
    // entry name, and its manifest attributes are those of the six sizes declared in place.
    use crate::kernels::GpuKernel;
    use crate::kernels::attention::AttnValues;
    use dsc_ir::DType;
    use dsc_kernels::ops::ValueDims;
    let kernel = GpuKernel::AttnValues(AttnValues {
        dims: ValueDims {
            batch: 1,
            q_len: 8,
            kv_len: 16,
            heads: 4,
            v_heads: 2,
            v_dim: 32,
        },
        probs: DType::F32,
        values: DType::Bf16,
        output: DType::Bf16,
        causal: true,
    });
    assert_eq!(
        kernel.canonical(),
        r#"attn_values(1,8,16,4,2,32,"f32","bf16","bf16",true)"#
    );
    let attrs = kernel.attrs();
    let keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "batch", "causal", "heads", "kv_len", "output", "probs", "q_len", "v_dim", "v_heads",
            "values"
        ]
    );
    assert_eq!(attrs["kv_len"], serde_json::json!(16));
}

#[test]
fn fused_attention_holds_the_reference_dims_nested_yet_reads_flat() {
    // `FlashAttention` holds the reference's `AttentionDims`, which holds its `ScoreDims`
    // (both flattened): the eight sizes read as if declared in place, in the canonical text
    // and the manifest; MLA's RoPE pair, which the reference takes with its data, stays nested.
    use crate::kernels::GpuKernel;
    use crate::kernels::attention::HeadOperand;
    use crate::kernels::flash_attention::{AttentionForm, FlashAttention};
    use dsc_ir::DType;
    use dsc_kernels::ops::{AttentionDims, ScoreDims};
    let kernel = GpuKernel::FlashAttention(FlashAttention {
        dims: AttentionDims {
            scores: ScoreDims {
                batch: 1,
                q_len: 8,
                kv_len: 16,
                heads: 4,
                kv_heads: 2,
                head_dim: 32,
            },
            v_heads: 2,
            v_dim: 24,
        },
        q_row: None,
        k_row: None,
        v_row: None,
        qk: DType::Bf16,
        rope: Some(HeadOperand {
            kv_heads: 1,
            dim: 16,
            dtype: DType::Bf16,
        }),
        values: DType::Bf16,
        output: DType::Bf16,
        quant: None,
        scale: 0.5,
        causal: true,
        form: AttentionForm::MmaSync,
    });
    assert_eq!(
        kernel.canonical(),
        r#"attention(1,8,16,4,2,32,2,24,"bf16",(1,16,"bf16"),"bf16","bf16",0.5,true,MmaSync)"#
    );
    let attrs = kernel.attrs();
    assert!(!attrs.contains_key("scores"), "{attrs:?}");
    assert_eq!(attrs["head_dim"], serde_json::json!(32));
    assert_eq!(attrs["v_dim"], serde_json::json!(24));
    assert_eq!(attrs["rope"]["dim"], serde_json::json!(16));
}

#[test]
fn moe_topk_is_built_from_and_gives_back_the_reference_spec() {
    use crate::kernels::GpuKernel;
    use crate::kernels::moe::MoeTopk;
    use dsc_ir::DType;
    use dsc_kernels::ops::{ScoreFunc, TopkDims, TopkParams};
    let dims = TopkDims {
        tokens: 64,
        experts: 8,
    };
    let params = TopkParams {
        score_func: ScoreFunc::Softmax,
        top_k: 2,
        n_groups: 2,
        topk_groups: 1,
        norm_topk_prob: false,
        route_scale: 2.5,
    };
    let kernel = MoeTopk {
        dims,
        params,
        bias: false,
        logits: DType::Bf16,
        weights: DType::F32,
    };
    assert_eq!(
        GpuKernel::MoeTopk(kernel).canonical(),
        r#"moe_topk(64,8,2,2,1,softmax,false,2.5,false,"bf16","f32")"#
    );
}

#[test]
fn data_movement_and_batched_matmul_kernels_assemble() {
    // What explicit model graphs may use besides the presets' ops.
    let text = "graph \"moves\"\n\
        input %x: bf16[2, 8, 16]\n\
        input %y: bf16[2, 16, 8]\n\
        %t: bf16[2, 16, 8] = transpose(%x) {perm = [0, 2, 1]} role=other\n\
        %c: bf16[2, 32, 8] = concat(%t, %y) {axis = 1} role=other\n\
        %m: bf16[2, 8, 8] = matmul(%x, %y) role=other\n\
        %mt: bf16[2, 8, 8] = matmul(%x, %x) {transpose_b = true} role=other\n\
        output %c\n\
        output %m\n\
        output %mt\n";
    let graph = dsc_ir::text::parse(text).unwrap_or_else(|e| panic!("{}", e.message));
    dsc_ir::verify(&graph).unwrap_or_else(|e| panic!("{e}"));
    let generated = generate(&graph, Target::Sm89, false).unwrap_or_else(|e| panic!("{e}"));
    let specs: Vec<&str> = generated
        .manifest
        .kernels
        .iter()
        .map(|k| k.spec.as_str())
        .collect();
    assert_eq!(specs, ["transpose", "concat", "matmul", "matmul"]);
    let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
    let report = ptxas::assemble(&ptxas, &generated.ptx, Target::Sm89)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.functions.len(), 4, "{}", report.output);
}

#[test]
fn kernels_lowered_apart_and_joined_are_the_module_lowered_whole() {
    // Shared-memory globals (every model), which the join must keep as the NVPTX back end
    // does for a whole module (local depots: `local_depots_are_numbered_as_in_a_whole_module`).
    use crate::mlir::{KernelModule, create_context};
    for name in ["tiny-moe", "deepseek-v2-lite"] {
        let graph = compiled(name);
        for target in Target::ALL {
            let program = crate::plan::plan(&graph, target).unwrap();
            let context = create_context();
            let mut module = KernelModule::new(&context, crate::artifact::GPU_MODULE);
            for (entry, kernel) in &program.kernels {
                kernel.build(&module, entry).unwrap();
            }
            let whole = crate::compile_to_ptx(module.module_mut(), target).unwrap();
            assert!(whole.contains("has been demoted"), "{name} {target}");
            for jobs in [1, 3] {
                let options = Options {
                    jobs: Some(jobs),
                    ..Options::default()
                };
                let generated = generate_with(&graph, target, &options).unwrap();
                assert_eq!(generated.timings.threads, jobs);
                assert!(
                    !generated.timings.lowered_whole,
                    "{name} {target}: the join failed"
                );
                assert!(
                    generated.ptx == whole,
                    "{name} {target}, {jobs} threads: the joined PTX differs from the whole module's"
                );
            }
        }
    }
}

/// Kernels with a local depot (no example kernel has one any more): a private array indexed by
/// the thread, which LLVM cannot keep in registers. Lowered apart and joined, their depots and
/// labels are numbered as in the module lowered whole.
#[test]
fn local_depots_are_numbered_as_in_a_whole_module() {
    use crate::mlir::emit::Emit;
    use crate::mlir::{KernelModule, create_context};
    use melior::ir::r#type::MemRefType;
    use melior::ir::{BlockLike, Type};
    let build = |module: &KernelModule<'_>, entry: &str| {
        let context = module.context();
        let buffer: Type = MemRefType::new(Type::float32(context), &[64], None, None).into();
        module
            .add_kernel(entry, &[buffer], |block, location| {
                let e = Emit::new(context, block, location);
                let out: melior::ir::Value = block.argument(0)?.into();
                let local = MemRefType::new(Type::float32(context), &[16], None, None);
                let array = e.push(melior::dialect::memref::alloca(
                    context,
                    local,
                    &[],
                    &[],
                    None,
                    location,
                ))?;
                let tid = e.thread_x()?;
                let slot = e.remui(tid, e.index(16)?)?;
                let value = e.load(out, tid)?;
                e.store(value, array, slot);
                let other = e.remui(e.addi(tid, e.index(5)?)?, e.index(16)?)?;
                let read = e.load(array, other)?;
                e.store(read, out, tid);
                Ok(())
            })
            .unwrap();
    };
    let entries = ["depot_a", "depot_b"];
    let target = Target::Sm90a;
    let context = create_context();
    let mut whole = KernelModule::new(&context, crate::artifact::GPU_MODULE);
    for entry in entries {
        build(&whole, entry);
    }
    let whole = crate::compile_to_ptx(whole.module_mut(), target).unwrap();
    assert!(whole.contains("__local_depot1"), "{whole}");
    let apart: Vec<String> = entries
        .iter()
        .map(|entry| {
            let mut module = KernelModule::new(&context, crate::artifact::GPU_MODULE);
            build(&module, entry);
            crate::compile_to_ptx(module.module_mut(), target).unwrap()
        })
        .collect();
    let joined = crate::link::link(&[(entries[0], &apart[0]), (entries[1], &apart[1])]).unwrap();
    assert!(joined == whole, "joined:\n{joined}\nwhole:\n{whole}");
}

/// A fresh directory under the system's temporary directory, deleted when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dsc-codegen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_ptx_cache_changes_nothing_but_time() {
    let graph = compiled("mlp");
    let target = Target::Sm89;
    let fresh = generate(&graph, target, false).unwrap();
    let kernels = fresh.timings.kernels;
    let temp = TempDir::new("cache");
    let with_cache = |dir: PathBuf| {
        let options = Options {
            cache: Some(PtxCache::new(dir)),
            ..Options::default()
        };
        let generated = generate_with(&graph, target, &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(generated.ptx == fresh.ptx, "the PTX differs with the cache");
        assert_eq!(generated.manifest, fresh.manifest);
        generated.timings.cache_hits
    };

    // Cold, then warm.
    let dir = temp.0.join("cache");
    assert_eq!(with_cache(dir.clone()), 0);
    let entries = files_under(&dir);
    assert_eq!(entries.len(), kernels, "{entries:?}");
    assert_eq!(with_cache(dir.clone()), kernels);

    // Corrupt entries are misses, and are replaced.
    let damage: [fn(&mut Vec<u8>); 5] = [
        |bytes| bytes.truncate(bytes.len() / 2),
        |bytes| *bytes.last_mut().unwrap() ^= 1,
        |bytes| bytes.clear(),
        |bytes| *bytes = b"dsc ptx cache 1\n0 5 0000000000000000\nhello".to_vec(),
        // An entry stored under another key.
        |bytes| {
            let text = String::from_utf8(bytes.clone()).unwrap();
            *bytes = text.replacen("kernel ", "kernel  ", 1).into_bytes();
        },
    ];
    for (entry, damage) in entries.iter().zip(damage.iter().cycle()) {
        let mut bytes = std::fs::read(entry).unwrap();
        damage(&mut bytes);
        std::fs::write(entry, bytes).unwrap();
    }
    assert_eq!(with_cache(dir.clone()), 0);
    assert_eq!(with_cache(dir.clone()), kernels);

    // Another version's entries are neither read nor kept beyond a few versions.
    let versions = dir.join("ptx");
    for old in 0..crate::cache::KEEP_VERSIONS + 2 {
        std::fs::create_dir_all(versions.join(format!("old{old}"))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let current = versions.join(crate::cache::CODEGEN_VERSION);
    std::fs::remove_dir_all(&current).unwrap();
    assert_eq!(with_cache(dir.clone()), 0);
    let mut kept: Vec<String> = std::fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), crate::cache::KEEP_VERSIONS + 1, "{kept:?}");
    assert!(!kept.contains(&"old0".to_string()) && !kept.contains(&"old1".to_string()));

    // A cache that cannot be written, or whose directory is a file, costs time only.
    let file = temp.0.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    assert_eq!(with_cache(file.clone()), 0);
    assert_eq!(with_cache(file.join("below")), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn a_row_too_wide_for_shared_memory_still_compiles_and_assembles() {
    // The fused RMS norm + quantization of a row of 16384 would need 64 KiB of shared memory
    // (more than a block may declare); it recomputes its groups instead.
    let source = "[model]\nname = \"wide\"\noutputs = [\"up\"]\n\n\
                  [[input]]\nname = \"x\"\ndtype = \"bf16\"\nshape = [2, 16384]\n\n\
                  [[op]]\nname = \"norm\"\nkind = \"rms_norm\"\ninputs = [\"x\"]\neps = 1e-6\n\n\
                  [[op]]\nname = \"up\"\nkind = \"linear\"\ninputs = [\"norm\"]\n\
                  out_features = 128\nrole = \"ffn\"\n";
    let mut graph = dsc_ir::model::load_model(source).expect("the model loads");
    Pipeline::default_pipeline()
        .run(&mut graph, &PassOptions::default(), |_, _| {})
        .expect("default pipeline runs");
    let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
    for target in Target::ALL {
        let generated = generate(&graph, target, false)
            .unwrap_or_else(|e| panic!("{target}: a 16384-wide row compiles: {e}"));
        assert!(generated.ptx.contains(".entry rms_norm_quant_"), "{target}");
        let report = ptxas::assemble(&ptxas, &generated.ptx, target)
            .unwrap_or_else(|e| panic!("{target}: ptxas: {e}"));
        assert_eq!(report.spill_store_bytes(), 0, "{target}");
    }
}

/// The training models' steps (`dsc train --device emu|cuda`) and every recipe: each op has a
/// kernel, and every kernel assembles for both targets without spills or notes. Their numbers
/// are checked against the CPU on the emulator by the integration test `training_steps`.
#[test]
fn every_training_step_kernel_assembles_for_both_targets_without_spills() {
    let ptxas = ptxas::locate().unwrap_or_else(|error| panic!("{error}"));
    for (model, alpha) in [
        ("tests/train/tiny-llama.toml", 0.0),
        // Routed layers, with the sequence-wise balance loss.
        ("tests/train/tiny-moe.toml", 0.01),
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(model);
        let source = std::fs::read_to_string(&path).expect("the training model exists");
        let forward = dsc_ir::model::load_model(&source).expect("the training model loads");
        let config = dsc_ir::load_train_config(&source)
            .expect("its [train] table is valid")
            .unwrap_or_default();
        for recipe in [dsc_ir::Recipe::Fp8, dsc_ir::Recipe::Bf16] {
            let config = dsc_ir::TrainConfig {
                recipe,
                balance_loss_alpha: alpha,
                ..config.clone()
            };
            let step = dsc_passes::train_step::build_lowered(&forward, &config)
                .unwrap_or_else(|e| panic!("{model} {recipe}: {e}"));
            for target in Target::ALL {
                let what = format!("{model} {recipe} {target}");
                let generated =
                    generate(&step, target, false).unwrap_or_else(|e| panic!("{what}: {e}"));
                let report = ptxas::assemble(&ptxas, &generated.ptx, target)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let spilled = report.spill_store_bytes() + report.spill_load_bytes();
                assert!(
                    spilled == 0 && report.notes.is_empty(),
                    "{what}:\n{}",
                    report.output
                );
            }
        }
    }
}
