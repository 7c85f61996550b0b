#!/usr/bin/env python3
"""Times PyTorch's FP8 and BF16 GEMMs on DeepGEMM's shape table, and its
scaled_dot_product_attention at DeepSeek-V3's attention shape, on the GPU it runs on: the baselines
scripts/gpu-check.sh puts beside dsc's kernels.

    python3 scripts/torch_baselines.py --json OUT.json

FP8 is `torch._scaled_mm` on e4m3 operands with rowwise scales (one f32 scale per row of A and per
column of B, bf16 out): the finest scaling PyTorch's public FP8 GEMM takes, coarser than the
recipe's 1x128 / 128x128 blocks. BF16 is `torch.matmul`. Each time is triton.testing.do_bench's
median (CUDA events) over random data, never zeros; TFLOP/s = 2*M*N*K / time.
"""
import argparse
import json

import torch
import triton.testing

SHAPES = [
    (4096, 7168, 16384),
    (4096, 4096, 7168),
    (4096, 2112, 7168),
    (128, 7168, 16384),
    (64, 2112, 7168),
]


def fp8_rowwise(m, n, k):
    a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
    # B is K-major: [N, K] as checkpoints store it, passed transposed (column-major [K, N]).
    b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
    scale_a = torch.rand(m, 1, device="cuda") + 0.5
    scale_b = torch.rand(1, n, device="cuda") + 0.5
    run = lambda: torch._scaled_mm(a, b.t(), scale_a=scale_a, scale_b=scale_b,
                                   out_dtype=torch.bfloat16)
    run()
    return triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median") * 1e-3


def bf16(m, n, k):
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    run = lambda: torch.matmul(a, b.t())
    run()
    return triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median") * 1e-3


# DeepSeek-V3's attention at 4096 tokens (MLA prefill: 128 heads, q/k head dim 192 = 128 + 64,
# value head dim 128, causal), beside the fused attention step of the V3 layer artifacts: FLOPs as
# FlashAttention counts them, 2·S·T·H·(Dqk + Dv) halved by the causal mask.
ATTENTION = {"batch": 1, "heads": 128, "seq": 4096, "dqk": 192, "dv": 128}


def sdpa(batch, heads, seq, dqk, dv):
    q = torch.randn(batch, heads, seq, dqk, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, heads, seq, dqk, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(batch, heads, seq, dv, device="cuda", dtype=torch.bfloat16)
    run = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    run()
    return triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median") * 1e-3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    rows = []
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| M×N×K | torch._scaled_mm FP8 rowwise µs | TFLOP/s | torch.matmul BF16 µs | TFLOP/s |")
    print("|---|---|---|---|---|")
    for m, n, k in SHAPES:
        flops = 2 * m * n * k
        entry = {"m": m, "n": n, "k": k}
        for name, fn in (("fp8_rowwise", fp8_rowwise), ("bf16", bf16)):
            try:
                seconds = fn(m, n, k)
                entry[name] = {"median_seconds": seconds, "tflops": flops / seconds / 1e12}
            except Exception as e:  # an unsupported form is a row, not a crash
                entry[name] = {"error": str(e)}
        rows.append(entry)
        cell = lambda r: (f"{r['median_seconds'] * 1e6:.1f} | {r['tflops']:.0f}"
                          if "median_seconds" in r else f"error | {r['error'][:40]}")
        print(f"| {m}×{n}×{k} | {cell(entry['fp8_rowwise'])} | {cell(entry['bf16'])} |")
    a = ATTENTION
    attention = dict(a)
    flops = 2 * a["seq"] * a["seq"] * a["heads"] * (a["dqk"] + a["dv"]) // 2
    try:
        seconds = sdpa(**a)
        attention["sdpa"] = {"median_seconds": seconds, "tflops": flops / seconds / 1e12}
        print(f"\nscaled_dot_product_attention {a}: {seconds * 1e6:.1f} µs, "
              f"{flops / seconds / 1e12:.0f} TFLOP/s")
    except Exception as e:  # an unsupported form is a row, not a crash
        attention["sdpa"] = {"error": str(e)}
        print(f"\nscaled_dot_product_attention {a}: error {str(e)[:80]}")
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "rows": rows, "attention": attention}, f, indent=2)


if __name__ == "__main__":
    main()
