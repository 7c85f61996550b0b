#!/usr/bin/env bash
# Formatting, lints and the whole test suite (PTX tests assemble with the project-local ptxas).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

DSC_PTXAS="$ROOT/.tools/cuda-nvcc/nvidia/cuda_nvcc/bin/ptxas"
export DSC_PTXAS

step() { printf '==> %s\n' "$*"; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace --no-fail-fast"
  cargo nextest run --workspace --no-fail-fast
else
  step "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast
fi
