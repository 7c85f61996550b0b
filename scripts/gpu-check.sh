#!/usr/bin/env bash
# Runs on a lent GPU (the device tool), after scripts/gpu-prepare.sh here:
#   run(command="bash scripts/gpu-check.sh", carry=["build/gpu-check"], timeout_s=540)
# 1. every prepared model on the GPU against the CPU reference (whole-model outputs), then timed;
#    the prepared training steps, two steps each against the CPU backend (gpu_check --train);
# 2. DeepGEMM's shape table through dsc, torch._scaled_mm (FP8, rowwise scales) and torch.matmul
#    (BF16) in the same run; V3's dense and MoE layers and its gate through dsc, step by step, and
#    torch's scaled_dot_product_attention at V3's attention shape;
# 3. one table (report.md) and the JSON behind it under $OUT (bench/results/<date>-<gpu>.json
#    once fetched). Try it without a GPU with GPU_CHECK_DEVICE=emu GPU_CHECK_ITERS=1 (models
#    only, no torch part).
# Exit status: the runner's (1 if any model differs from the CPU reference or fails).
set -uo pipefail
cd "$(dirname "$0")/.."
g=build/gpu-check
out=${OUT:-$g/out}
mkdir -p "$out"
device=${GPU_CHECK_DEVICE:-cuda}
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/nvidia-smi.txt"
fi
time_only=()
# On the emulator (a dry run) the large shapes would take hours: models only.
if [ "$device" = cuda ]; then
  while read -r d; do time_only+=(--time-only "$d"); done < "$g/time-only.txt"
fi
mapfile -t checked < "$g/checked.txt"
train=()
while read -r d; do train+=(--train "$d"); done < "$g/train.txt"
"$g/gpu_check" --device "$device" --iters "${GPU_CHECK_ITERS:-20}" --json "$out/dsc.json" \
  "${checked[@]}" "${time_only[@]}" "${train[@]}" 2>&1 | tee "$out/dsc.log"
rc=${PIPESTATUS[0]}
if [ "$device" = cuda ]; then
  python3 scripts/torch_baselines.py --json "$out/torch.json" 2>&1 | tee "$out/torch.log"
fi
python3 scripts/gpu_report.py "$out/dsc.json" "$out/torch.json" | tee "$out/report.md"
exit "$rc"
