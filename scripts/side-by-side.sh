#!/usr/bin/env bash
# dsc's FP8 GEMM next to DeepGEMM's on the emulator, on the shapes of DeepGEMM's published H800
# table: each dense shape compiled by dsc as one FP8 linear (bench/side-by-side/*.toml) and timed
# with `dsc bench --device emu`, DeepGEMM's own PTX (bench/peers/deepgemm) modeled with the same
# roofline and DRAM assumption (the buffers' unique bytes). Prints one markdown table; the ratio
# is dsc's FP8 GEMM step over DeepGEMM's kernel (≤ 1.0: dsc as fast or faster). Every figure is
# modeled on the H100 SXM model, none measured.
#
#   scripts/side-by-side.sh [SAMPLE_CTAS]     (default 8; DeepGEMM: one cluster of its persistent grid)
set -euo pipefail
cd "$(dirname "$0")/.."
sample=${1:-8}
cargo build --quiet --release --bin dsc
cargo build --quiet --release -p dsc-emulator --example deepgemm
tgt=${CARGO_TARGET_DIR:-target}
dsc=$tgt/release/dsc
work=$tgt/side-by-side
mkdir -p "$work"
shapes=(
  "4096 7168 16384 normal_m4096_n7168_k16384"
  "4096 4096 7168 normal_m4096_n4096_k7168"
  "4096 2112 7168 normal_m4096_n2112_k7168"
  "128 7168 16384 normal_m128_n7168_k16384"
  "64 2112 7168 normal_m64_n2112_k7168"
)
printf '| M×N×K | dsc act quant µs | dsc FP8 GEMM µs: overlapped – serial (bound) | DeepGEMM µs (bound) | DeepGEMM TFLOP/s | dsc GEMM / DeepGEMM |\n'
printf '|---|---|---|---|---|---|\n'
for s in "${shapes[@]}"; do
  read -r m n k stem <<< "$s"
  name=gemm_m${m}_n${n}_k${k}
  "$dsc" compile "bench/side-by-side/$name.toml" -o "$work/$name" > /dev/null
  "$dsc" bench "$work/$name" --device emu --sample-ctas "$sample" --json "$work/$name.json" > /dev/null
  peer=$("$tgt"/release/examples/deepgemm model bench/peers/deepgemm "$stem" "$m")
  SHAPE="${m}×${n}×${k}" PEER="$peer" DSC="$work/$name.json" python3 - <<'PY'
import json, os
peer = json.loads(os.environ["PEER"])
steps = json.load(open(os.environ["DSC"]))["steps"]
gemm = next(s for s in steps if s["kernel"].startswith("fp8_gemm"))
quant = sum(s["modeled_seconds"] for s in steps if s is not gemm)
low = gemm["modeled_seconds"] / peer["modeled_seconds"]
high = gemm["modeled_serial_seconds"] / peer["modeled_seconds"]
print(f"| {os.environ['SHAPE']} | {quant * 1e6:.1f} | {gemm['modeled_seconds'] * 1e6:.1f} – "
      f"{gemm['modeled_serial_seconds'] * 1e6:.1f} ({gemm['bound']}) | "
      f"{peer['modeled_seconds'] * 1e6:.1f} ({peer['bound']}) | "
      f"{peer['modeled_tflops']:.0f} | {low:.2f} – {high:.2f} |")
PY
done

# Grouped: the routed-expert GEMMs of one DeepSeek-V3 MoE layer (32768 rows = 4096 tokens × 8
# experts; bench/side-by-side/v3-moe-layer.toml) against DeepGEMM's m-grouped kernel on the same
# total rows (4 groups × 8192). dsc's gate and up projections are two N=2048 GEMMs; DeepGEMM's
# N=4096 row is them fused.
"$dsc" compile bench/side-by-side/v3-moe-layer.toml -o "$work/v3-moe-layer" > /dev/null
"$dsc" bench "$work/v3-moe-layer" --device emu --sample-ctas "$sample" --json "$work/v3-moe-layer.json" > /dev/null
rows=8192,8192,8192,8192
up=$("$tgt"/release/examples/deepgemm model bench/peers/deepgemm mgrouped_contig_m32768_n4096_k7168_g4 $rows)
down=$("$tgt"/release/examples/deepgemm model bench/peers/deepgemm mgrouped_contig_m32768_n7168_k2048_g4 $rows)
printf '\n| M×N×K (grouped) | dsc grouped FP8 GEMM µs: overlapped – serial (bound) | DeepGEMM µs (bound) | DeepGEMM TFLOP/s | dsc GEMM / DeepGEMM |\n'
printf '|---|---|---|---|---|\n'
UP="$up" DOWN="$down" DSC="$work/v3-moe-layer.json" python3 - <<'PY'
import json, os
steps = json.load(open(os.environ["DSC"]))["steps"]
def gemm(op):
    return next(s for s in steps if s["op"] == op and s["kernel"].startswith("fp8_gemm"))
experts = "model.layers.0.mlp.experts."
gate, up, down = (gemm(experts + p) for p in ("gate_proj", "up_proj", "down_proj"))
for label, ours, peer in [
    ("32768×4096×7168 (V3 gate+up)", [gate, up], json.loads(os.environ["UP"])),
    ("32768×7168×2048 (V3 down)", [down], json.loads(os.environ["DOWN"])),
]:
    seconds = sum(s["modeled_seconds"] for s in ours)
    serial = sum(s["modeled_serial_seconds"] for s in ours)
    print(f"| {label} | {seconds * 1e6:.1f} – {serial * 1e6:.1f} ({ours[0]['bound']}) | "
          f"{peer['modeled_seconds'] * 1e6:.1f} ({peer['bound']}) | {peer['modeled_tflops']:.0f} | "
          f"{seconds / peer['modeled_seconds']:.2f} – {serial / peer['modeled_seconds']:.2f} |")
PY
