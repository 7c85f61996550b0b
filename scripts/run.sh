#!/usr/bin/env bash
# Compiles the example model to an artifact in build/tiny-moe and prints its report.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

DSC_PTXAS="$ROOT/.tools/cuda-nvcc/nvidia/cuda_nvcc/bin/ptxas"
export DSC_PTXAS

cargo run --release -q -- compile examples/tiny-moe.toml -o build/tiny-moe
cat build/tiny-moe/report.txt
