#!/usr/bin/env bash
# Prepares, on this machine, what scripts/gpu-check.sh needs on a lent GPU, which has no Rust,
# MLIR or dsc: the release `gpu_check` runner (dsc-runtime only, no MLIR) and the artifacts
# compiled for sm_90a, in build/gpu-check (git-ignored; carried to the device, under 64 MiB).
#
#   bash scripts/gpu-prepare.sh
#   then, with the device tool: run(command="bash scripts/gpu-check.sh", carry=["build/gpu-check"])
set -euo pipefail
cd "$(dirname "$0")/.."
tgt=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release --bin dsc
cargo build --quiet --release -p dsc-runtime --example gpu_check
out=build/gpu-check
rm -rf "$out"
mkdir -p "$out/artifacts"
cp "$tgt/release/examples/gpu_check" "$out/"
strip "$out/gpu_check" 2>/dev/null || true
# Compared with the CPU reference: every model the emulator tests cover.
checked=(examples/mlp.toml examples/tiny-moe.toml examples/llama-small.toml examples/qwen2-small.toml
         tests/gpu/models/ragged-mlp.toml tests/gpu/models/ragged-head.toml
         tests/gpu/models/wide-mlp.toml tests/gpu/models/wide-mlp-e5m2.toml
         tests/gpu/models/wide-moe.toml tests/gpu/models/narrow-moe.toml tests/gpu/models/wide-norm.toml)
# Timed only (their CPU reference would take minutes): DeepGEMM's shape table, then V3's
# dense and MoE layers at 4096 tokens and its gate (issue 12's per-step tables, measured).
timed=(bench/side-by-side/gemm_m4096_n7168_k16384.toml bench/side-by-side/gemm_m4096_n4096_k7168.toml
       bench/side-by-side/gemm_m4096_n2112_k7168.toml bench/side-by-side/gemm_m128_n7168_k16384.toml
       bench/side-by-side/gemm_m64_n2112_k7168.toml
       bench/v3-layer/v3-dense-layer.toml bench/side-by-side/v3-moe-layer.toml bench/moe-gate/v3-gate.toml)
# Training steps (compiled here: the device has no MLIR), run there against the CPU backend.
train_steps=("tests/train/tiny-llama.toml fp8" "tests/train/tiny-llama.toml bf16"
             "tests/train/tiny-moe.toml fp8")
: > "$out/train.txt"
for t in "${train_steps[@]}"; do
  read -r m recipe <<<"$t"
  dir="$out/artifacts/train-$(basename "$m" .toml)-$recipe"
  "$tgt/release/dsc" train "$m" --recipe "$recipe" --target sm_90a --write-step "$dir" > /dev/null
  echo "$dir" >> "$out/train.txt"
done
: > "$out/checked.txt"
: > "$out/time-only.txt"
for m in "${checked[@]}" "${timed[@]}"; do
  name=$(basename "$m" .toml)
  "$tgt/release/dsc" compile "$m" --target sm_90a -o "$out/artifacts/$name" > /dev/null
done
for m in "${checked[@]}"; do echo "$out/artifacts/$(basename "$m" .toml)" >> "$out/checked.txt"; done
for m in "${timed[@]}"; do echo "$out/artifacts/$(basename "$m" .toml)" >> "$out/time-only.txt"; done
du -sh "$out"
bytes=$(du -sb "$out" | cut -f1)
if [ "$bytes" -gt $((60 * 1024 * 1024)) ]; then
  echo "error: $out is $bytes bytes, over the 64 MiB the device tool carries" >&2
  exit 1
fi
echo "ready: run scripts/gpu-check.sh on the device with carry build/gpu-check"
