#!/usr/bin/env bash
# Training fidelity of dsc to transformers' autograd (outside CI; issue 13, item 6): the Python
# env of scripts/fidelity.sh (.tools/fidelity-venv: torch, transformers, safetensors, numpy),
# the dsc binary, then scripts/train_fidelity.py with the given arguments, e.g.
#   scripts/train-fidelity.sh --doc docs/training-fidelity.md
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/fidelity-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install torch --index-url https://download.pytorch.org/whl/cpu \
    || "$venv/bin/pip" install torch
  "$venv/bin/pip" install transformers safetensors numpy
fi
cargo build --release -p dsc
exec "$venv/bin/python" scripts/train_fidelity.py --dsc "${CARGO_TARGET_DIR:-target}/release/dsc" "$@"
