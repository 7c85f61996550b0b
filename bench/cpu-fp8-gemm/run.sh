#!/bin/sh
# Before/after/numpy, paired: for each round and each shape, the FP8 GEMM bench built from the
# old source, the one built from the new source, and numpy's sgemm run one after the other, so
# that a change in the machine's load hits all three alike. Appends every line to LOG.
#
# usage: bench/cpu-fp8-gemm/run.sh BEFORE_BENCH AFTER_BENCH PYTHON LOG ROUNDS [SHAPE ...]
#   BEFORE_BENCH, AFTER_BENCH: the `block_gemm` bench executables (cargo bench --no-run prints them)
#   PYTHON: a python with numpy
set -eu
before=$1 after=$2 python=$3 log=$4 rounds=$5
shift 5
shapes=${*:-2048x2048x2048 4096x2048x512 1024x2048x2048 256x2048x2048 2048x256x256 wgrad:2048x512x4096 wgrad:512x128x2048}
here=$(dirname "$0")
for r in $(seq "$rounds"); do
    for s in $shapes; do
        echo "round $r" >>"$log"
        "$before" "$s" | sed 's/^shape/before shape/' >>"$log"
        "$after" "$s" | sed 's/^shape/after shape/' >>"$log"
        "$python" "$here/numpy_sgemm.py" "$s" | sed 's/^shape/numpy shape/' >>"$log"
    done
done
