#!/usr/bin/env bash
# Models DeepGEMM's own FP8 GEMM PTX (bench/peers/deepgemm) on the emulator at the nine shapes of
# its published H800 table and prints the modeled TFLOP/s next to the published ones, with the
# model's error per shape (docs/emulator-model.md, "Calibration").
#
#   scripts/deepgemm-calibrate.sh [OUT.jsonl]
#
# One cluster (2 CTAs) of each persistent grid is emulated and its profile scaled to the grid;
# the whole run takes about 3 minutes on 2 cores. Every figure is modeled, none measured.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/dev/null}
cargo build --quiet --release -p dsc-emulator --example deepgemm
bin=${CARGO_TARGET_DIR:-target}/release/examples/deepgemm
peers=bench/peers/deepgemm
# stem, rows (M, or rows per group), published H800 TFLOP/s (DeepGEMM README, last table).
shapes=(
  "normal_m4096_n7168_k16384 4096 1520"
  "normal_m4096_n4096_k7168 4096 1410"
  "normal_m4096_n2112_k7168 4096 1127"
  "normal_m128_n7168_k16384 128 645"
  "normal_m64_n2112_k7168 64 206"
  "mgrouped_contig_m32768_n4096_k7168_g4 8192,8192,8192,8192 1346"
  "mgrouped_contig_m32768_n7168_k2048_g4 8192,8192,8192,8192 1214"
  "mgrouped_contig_m32768_n4096_k7168_g8 4096,4096,4096,4096,4096,4096,4096,4096 1346"
  "mgrouped_contig_m32768_n7168_k2048_g8 4096,4096,4096,4096,4096,4096,4096,4096 1214"
)
: > "$out"
printf '| kernel | M×N×K | modeled µs | modeled TFLOP/s | bound | published TFLOP/s | model error |\n'
printf '|---|---|---|---|---|---|---|\n'
for s in "${shapes[@]}"; do
  read -r stem rows published <<< "$s"
  line=$("$bin" model "$peers" "$stem" "$rows")
  echo "$line" >> "$out"
  LINE="$line" PUBLISHED="$published" python3 - <<'PY'
import json, os
r = json.loads(os.environ["LINE"])
pub = float(os.environ["PUBLISHED"])
shape = f"{r['m']}×{r['n']}×{r['k']}"
error = 100 * (r["modeled_tflops"] / pub - 1)
print(f"| `{r['kernel']}` | {shape} | {r['modeled_seconds'] * 1e6:.1f} | "
      f"{r['modeled_tflops']:.0f} | {r['bound']} | {pub:.0f} | {error:+.1f}% |")
PY
done
