#!/usr/bin/env python3
"""The table of scripts/gpu-check.sh: dsc's FP8 GEMM per shape of DeepGEMM's table next to
torch._scaled_mm (FP8 rowwise), torch.matmul (BF16) and DeepGEMM's published H800 figures;
then the training steps checked against the CPU (`gpu_check --train`).

    python3 scripts/gpu_report.py DSC.json [TORCH.json]
"""
import json
import os
import re
import sys

# DeepGEMM's published H800 TFLOP/s (README of deepseek-ai/DeepGEMM, early 2025).
DEEPGEMM = {(4096, 7168, 16384): 1520, (4096, 4096, 7168): 1410, (4096, 2112, 7168): 1127,
            (128, 7168, 16384): 645, (64, 2112, 7168): 206}


def main():
    dsc = json.load(open(sys.argv[1]))
    torch_rows = {}
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        t = json.load(open(sys.argv[2]))
        torch_rows = {(r["m"], r["n"], r["k"]): r for r in t["rows"]}
    failed = [r["artifact"] for r in dsc if not r.get("passed")]
    print(f"models compared with the CPU reference: "
          f"{sum(1 for r in dsc if r.get('compared'))}, failed: {failed or 'none'}\n")
    print("| M×N×K | dsc FP8 GEMM µs | TFLOP/s | torch FP8 rowwise TFLOP/s | torch BF16 TFLOP/s "
          "| DeepGEMM H800 TFLOP/s | dsc / DeepGEMM |")
    print("|---|---|---|---|---|---|---|")
    for r in dsc:
        m = re.search(r"gemm_m(\d+)_n(\d+)_k(\d+)", r["artifact"])
        if not m or "steps" not in r:
            continue
        shape = tuple(int(x) for x in m.groups())
        gemm = next(s for s in r["steps"] if s["kernel"].startswith("fp8_gemm"))
        tr = torch_rows.get(shape, {})
        cell = lambda e: f"{e['tflops']:.0f}" if e and "tflops" in e else "–"
        label = " (modeled)" if r.get("modeled") else ""
        print(f"| {shape[0]}×{shape[1]}×{shape[2]} | {gemm['median_seconds'] * 1e6:.1f}{label} "
              f"| {gemm['tflops']:.0f} | {cell(tr.get('fp8_rowwise'))} | {cell(tr.get('bf16'))} "
              f"| {DEEPGEMM[shape]} | {gemm['tflops'] / DEEPGEMM[shape]:.2f} |")
    # Whole layers (V3's dense and MoE layers, its gate): every step, measured.
    for r in dsc:
        name = os.path.basename(r["artifact"].rstrip("/"))
        if re.search(r"gemm_m\d+", name) or "steps" not in r or r.get("compared"):
            continue
        label = " (modeled)" if r.get("modeled") else ""
        print(f"\n{name}: {r['total_median_seconds'] * 1e3:.3f} ms{label}, "
              f"{len(r['steps'])} steps\n")
        print("| step | op | kernel | µs | TFLOP/s | TB/s |")
        print("|---|---|---|---|---|---|")
        for i, st in enumerate(r["steps"]):
            print(f"| {i} | {st['op']} | {st['kernel']} | {st['median_seconds'] * 1e6:.1f} "
                  f"| {st['tflops']:.1f} | {st['tb_per_s']:.2f} |")
    training = [r for r in dsc if r.get("training")]
    if training:
        print("\n| training step | recipe | device vs CPU | worst / bound | device ms per step |")
        print("|---|---|---|---|---|")
    for r in training:
        name = os.path.basename(r["artifact"].rstrip("/"))
        if "error" in r:
            print(f"| {name} | – | FAILED: {r['error']} | – | – |")
            continue
        worst = max(r["differences"], key=lambda d: d["relative"] / d["bound"])
        seconds = ", ".join(f"{s * 1e3:.1f}" for s in r["device_step_seconds"])
        if r.get("emulated"):
            seconds += " (emulation wall clock, not a GPU's)"
        print(f"| {name} | {'FP8' if r['fp8'] else 'all-BF16'} "
              f"| {'passed' if r['passed'] else 'DIFFERS'} "
              f"| {worst['what']}: {worst['relative']:.1e} / {worst['bound']:.0e} | {seconds} |")


if __name__ == "__main__":
    main()
