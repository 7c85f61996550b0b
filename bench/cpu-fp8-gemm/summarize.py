"""Markdown table of a run.sh log: per shape, the median over rounds of each GFLOP/s figure and of
the per-round (paired) ratios.

Usage: python summarize.py LOG
"""

import statistics
import sys
from collections import defaultdict


def main():
    rounds = defaultdict(dict)  # (round, shape) -> {who: gflops}
    order = []
    rnd = 0
    for line in open(sys.argv[1]):
        f = line.split()
        if not f:
            continue
        if f[0] == "round":
            rnd = int(f[1])
        elif len(f) > 2 and f[1] == "shape":
            who, shape = f[0], f[2]
            kv = dict(zip(f[3::2], f[4::2]))
            g = float(kv["numpy_gflops"] if who == "numpy" else kv["fp8_gflops"])
            rounds[(rnd, shape)][who] = g
            if shape not in order:
                order.append(shape)
    med = statistics.median
    print("| shape (M×N×K) | FP8 before, GFLOP/s | FP8 after, GFLOP/s | numpy sgemm, GFLOP/s "
          "| before / numpy | after / numpy | after / before | rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in order:
        rs = [v for (r, s), v in rounds.items() if s == shape and len(v) == 3]
        b, a, n = (med([r[w] for r in rs]) for w in ("before", "after", "numpy"))
        bn = med([r["before"] / r["numpy"] for r in rs])
        an = med([r["after"] / r["numpy"] for r in rs])
        ab = med([r["after"] / r["before"] for r in rs])
        print(f"| {shape.replace('x', '×')} | {b:.1f} | {a:.1f} | {n:.1f} | {bn:.2f}× | {an:.2f}× "
              f"| {ab:.2f}× | {len(rs)} |")


if __name__ == "__main__":
    main()
