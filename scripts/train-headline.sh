#!/usr/bin/env bash
# The headline experiment of docs/training-headline.md (issue 13, item 7): the small
# DeepSeek-V3-shaped model of bench/train-headline/v3-small.toml trained on the King James Bible
# (public domain; Debian's bible-kjv package) with the FP8 recipe and all-BF16 from the same
# seed, a second seed of both (the run-to-run noise), and ablations; loss, gap and load-balance
# curves as SVG, the tables as markdown (bench/results/train-headline/tables.md). Not part of
# CI: about 80 minutes on a 2-core machine. A run whose log is complete is not run again.
#
#   STEPS=1000 bash scripts/train-headline.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps=${STEPS:-1000}
out=${OUT:-bench/results/train-headline}
model=bench/train-headline/v3-small.toml
mkdir -p "$out"

if ! command -v bible >/dev/null; then
    apt-get install -y bible-kjv >/dev/null
fi
# The whole text, verse references stripped: 4,137,850 bytes (= tokens).
bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9A-Za-z]+[0-9]+:[0-9]+ //' >"$out/kjv.txt"

cargo build --release --bin dsc
dsc="${CARGO_TARGET_DIR:-target}/release/dsc"

run() { # name, model, seed, extra arguments…
    local name=$1 toml=$2 seed=$3
    shift 3
    if [ ! -s "$out/$name.csv" ] || [ "$(($(wc -l <"$out/$name.csv") - 1))" -lt "$steps" ]; then
        local start=$SECONDS
        "$dsc" train "$toml" --data "$out/kjv.txt" --steps "$steps" --seed "$seed" \
            --log "$out/$name.csv" "$@" >"$out/$name.out"
        echo "$((SECONDS - start)) s" >"$out/$name.time"
    fi
}
train_variant() { # name, a [train] line: the model with that line added to [train]
    sed "s/^\\[train\\]\$/[train]\\n$2/" "$model" >"$out/v3-small-$1.toml"
    echo "$out/v3-small-$1.toml"
}
precision_variant() { # name, a [precision] table's body
    { cat "$model"; printf '\n[precision]\n%s\n' "$2"; } >"$out/v3-small-$1.toml"
    echo "$out/v3-small-$1.toml"
}
run fp8 "$model" 1 --recipe fp8
run bf16 "$model" 1 --recipe bf16
run fp8-seed2 "$model" 2 --recipe fp8
run bf16-seed2 "$model" 2 --recipe bf16
# Ablations and variants of the FP8 recipe:
# - the Wgrad operands quantized from the BF16 tensors (Transformer Engine's way) instead of
#   requantized from the FP8 copies of the Fprop and Dgrad;
# - power-of-2 scales (ue8m0) for every quantization, which makes that requantization exact
#   for every element whose new scale is not larger than its old one;
# - the Dgrad's activation gradient scaled per 128 × 128 block (the report saw divergence);
# - no expert-bias update (the routed layers' load balance without it).
run fp8-wgrad-high "$(train_variant wgrad-high 'wgrad_source = "high"')" 1 --recipe fp8
run fp8-wgrad-high-seed2 "$(train_variant wgrad-high 'wgrad_source = "high"')" 2 --recipe fp8
run fp8-pow2-scales "$(precision_variant pow2-scales 'scale_format = "ue8m0"')" 1 --recipe fp8
run fp8-pow2-scales-seed2 "$(precision_variant pow2-scales 'scale_format = "ue8m0"')" 2 --recipe fp8
run fp8-act-grad-128x128 "$(train_variant act-grad-128x128 'act_grad_scaling = "128x128"')" 1 --recipe fp8
run fp8-no-bias-update "$(train_variant no-bias-update 'bias_update_speed = 0')" 1 --recipe fp8
run bf16-no-bias-update "$(train_variant no-bias-update 'bias_update_speed = 0')" 1 --recipe bf16
# The recipe as it is now, its FP8 GEMMs summed by the Hopper tensor-core accumulator model (14
# significant bits) instead of the CPU's exact FP32 sums: promoted into FP32 every 128 as the
# kernels do, and with no promotion at all (one such accumulator over all of K, the no-promotion
# ablation of DeepSeek-V3 §3.3.2).
run fp8-hopper "$model" 1 --recipe fp8 --accumulator hopper
run fp8-no-promotion "$model" 1 --recipe fp8 --accumulator hopper-unpromoted
run fp8-hopper-seed2 "$model" 2 --recipe fp8 --accumulator hopper
run fp8-no-promotion-seed2 "$model" 2 --recipe fp8 --accumulator hopper-unpromoted

plot() { python3 scripts/plot_curves.py "$@"; }
plot docs/training-headline.svg --smooth 25 \
    "all-BF16=$out/bf16.csv" "FP8 recipe=$out/fp8.csv" "FP8, power-of-2 scales=$out/fp8-pow2-scales.csv"
plot docs/training-headline-gap.svg --smooth 50 --gap-to "$out/bf16.csv" \
    "FP8 recipe=$out/fp8.csv" "FP8, power-of-2 scales=$out/fp8-pow2-scales.csv" \
    "FP8, Wgrad from BF16=$out/fp8-wgrad-high.csv" \
    "FP8, dY in 128×128 blocks=$out/fp8-act-grad-128x128.csv" \
    "FP8, Hopper accumulator, no promotion=$out/fp8-no-promotion.csv"
plot docs/training-headline-balance.svg --smooth 10 --column max_vio \
    "BF16=$out/bf16.csv" "FP8=$out/fp8.csv" "BF16, no bias update=$out/bf16-no-bias-update.csv" \
    "FP8, no bias update=$out/fp8-no-bias-update.csv"

python3 - "$out" "$steps" >"$out/tables.md" <<'PY'
import csv, sys
out, steps = sys.argv[1], int(sys.argv[2])
def column(name, key):
    with open(f"{out}/{name}.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f)]
def seconds(name):
    with open(f"{out}/{name}.time") as f:
        return f.read().split()[0]
tail = max(1, steps // 10)
m = lambda xs: sum(xs[-tail:]) / tail
runs = [  # label, run, its BF16 reference
    ("all-BF16 (seed 1)", "bf16", "bf16"),
    ("FP8 recipe (seed 1)", "fp8", "bf16"),
    ("all-BF16 (seed 2)", "bf16-seed2", "bf16-seed2"),
    ("FP8 recipe (seed 2)", "fp8-seed2", "bf16-seed2"),
    ("FP8, Wgrad operands from BF16 (seed 1)", "fp8-wgrad-high", "bf16"),
    ("FP8, Wgrad operands from BF16 (seed 2)", "fp8-wgrad-high-seed2", "bf16-seed2"),
    ("FP8, power-of-2 scales (seed 1)", "fp8-pow2-scales", "bf16"),
    ("FP8, power-of-2 scales (seed 2)", "fp8-pow2-scales-seed2", "bf16-seed2"),
    ("FP8, dY of Dgrad in 128×128 blocks", "fp8-act-grad-128x128", "bf16"),
    ("FP8, no expert-bias update", "fp8-no-bias-update", "bf16-no-bias-update"),
    ("all-BF16, no expert-bias update", "bf16-no-bias-update", "bf16"),
    ("FP8, Hopper accumulator promoted every 128 (seed 1)", "fp8-hopper", "bf16"),
    ("FP8, Hopper accumulator, no promotion (seed 1)", "fp8-no-promotion", "bf16"),
    ("FP8, Hopper accumulator promoted every 128 (seed 2)", "fp8-hopper-seed2", "bf16-seed2"),
    ("FP8, Hopper accumulator, no promotion (seed 2)", "fp8-no-promotion-seed2", "bf16-seed2"),
    ("no promotion against promoted (seed 1)", "fp8-no-promotion", "fp8-hopper"),
    ("no promotion against promoted (seed 2)", "fp8-no-promotion-seed2", "fp8-hopper-seed2"),
]
# A run's own row comes before any row that compares it with another: its label names it.
label_of = {}
for label, name, _ in runs:
    label_of.setdefault(name, label)
print(f"| run | mean loss, last {tail} steps | relative gap | to | mean max_vio, last {tail} steps | wall time |")
print("|---|---:|---:|---|---:|---:|")
for label, name, ref in runs:
    loss, base = m(column(name, "loss")), m(column(ref, "loss"))
    gap, to = ("—", "") if name == ref else (f"{(loss - base) / base * 100:+.2f}%", label_of[ref])
    print(f"| {label} | {loss:.4f} | {gap} | {to} | {m(column(name, 'max_vio')):.3f} | {seconds(name)} s |")
print()
print(f"Relative gap to the reference of the table above, of the mean loss over each window of {tail} steps:")
print()
gaps = [r for r in runs if r[1] != r[2]]
print("| steps | " + " | ".join(label for label, _, _ in gaps) + " |")
print("|---|" + "---:|" * len(gaps))
for s in range(0, steps, tail):
    w = lambda xs: sum(xs[s:s + tail]) / len(xs[s:s + tail])
    cells = []
    for _, name, ref in gaps:
        a, b = w(column(name, "loss")), w(column(ref, "loss"))
        cells.append(f"{(a - b) / b * 100:+.2f}%")
    print(f"| {s + 1}–{min(s + tail, steps)} | " + " | ".join(cells) + " |")
PY
cat "$out/tables.md"
