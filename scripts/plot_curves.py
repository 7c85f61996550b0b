#!/usr/bin/env python3
"""Draws training-loss curves from `dsc train --log` CSVs as one SVG (standard library only).

usage: plot_curves.py OUT.svg LABEL=FILE.csv [LABEL=FILE.csv ...] [--smooth N]
Each curve is the loss per step, smoothed by a trailing mean over N steps (default 20).
"""
import csv
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def smooth(values, n):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= n:
            acc -= values[i - n]
        out.append(acc / min(i + 1, n))
    return out


def main():
    args = sys.argv[1:]
    n = 20
    if "--smooth" in args:
        i = args.index("--smooth")
        n = int(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    out, specs = args[0], args[1:]
    curves = []
    for spec in specs:
        label, path = spec.split("=", 1)
        steps, losses = read(path)
        curves.append((label, steps, smooth(losses, n)))
    w, h, pad = 720, 420, 60
    xs = [s for _, steps, _ in curves for s in steps]
    ys = [v for _, _, vals in curves for v in vals]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    y1 = min(y1, y0 + 3 * (sorted(ys)[len(ys) // 2] - y0) + 1e-9) if len(ys) > 10 else y1
    sx = lambda x: pad + (x - x0) / max(x1 - x0, 1) * (w - 2 * pad)
    sy = lambda y: h - pad - (min(y, y1) - y0) / max(y1 - y0, 1e-9) * (h - 2 * pad)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">step</text>',
        f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">loss (mean of {n} steps)</text>',
    ]
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{pad - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        parts.append(f'<line x1="{pad}" y1="{sy(y):.1f}" x2="{w - pad}" y2="{sy(y):.1f}" stroke="#ddd"/>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{h - pad + 16}" text-anchor="middle">{int(x)}</text>')
    for k, (label, steps, vals) in enumerate(curves):
        color = COLORS[k % len(COLORS)]
        points = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in zip(steps, vals))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<text x="{w - pad - 160}" y="{pad + 16 * (k + 1)}" fill="{color}">{label}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
