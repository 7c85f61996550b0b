#!/usr/bin/env bash
# Fidelity of dsc to Hugging Face transformers (outside CI): makes the Python env
# .tools/fidelity-venv if it is missing (torch, transformers, safetensors, numpy from PyPI),
# builds the dsc binary and runs scripts/fidelity.py with the given arguments, e.g.
#   scripts/fidelity.sh --doc docs/fidelity.md
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/fidelity-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  # The CPU-only wheel index, when reachable, avoids the CUDA wheels; PyPI's torch works too.
  "$venv/bin/pip" install torch --index-url https://download.pytorch.org/whl/cpu \
    || "$venv/bin/pip" install torch
  "$venv/bin/pip" install transformers safetensors numpy
fi
cargo build --release -p dsc
exec "$venv/bin/python" scripts/fidelity.py --dsc target/release/dsc "$@"
