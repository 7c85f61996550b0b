#!/usr/bin/env python3
"""Draws training-loss curves from `dsc train --log` CSVs as one SVG (standard library only).

usage: plot_curves.py OUT.svg LABEL=FILE.csv [LABEL=FILE.csv ...] [--smooth N] [--column NAME]
                      [--gap-to FILE.csv]
Each curve is a column of the log per step (default `loss`), smoothed by a trailing mean over N
steps (default 20). With --gap-to, each curve is instead its smoothed value's relative difference
to FILE's, in percent (a curve at 0 tracks FILE exactly).
"""
import csv
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def read(path, column="loss"):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        sys.exit(f"{path}: no column `{column}` (it has {', '.join(rows[0])})")
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


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
    def option(name, default):
        if name not in args:
            return default
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return value

    n = int(option("--smooth", n))
    column = option("--column", "loss")
    gap_to = option("--gap-to", None)
    if len(args) < 2:
        sys.exit(__doc__)
    out, specs = args[0], args[1:]
    reference = smooth(read(gap_to, column)[1], n) if gap_to else None
    curves = []
    for spec in specs:
        label, path = spec.split("=", 1)
        steps, values = read(path, column)
        values = smooth(values, n)
        if reference is not None:
            values = [(v - r) / r * 100 for v, r in zip(values, reference)]
            steps = steps[: len(values)]
        curves.append((label, steps, values))
    ylabel = (f"{column}: % relative to the reference" if gap_to else column) + f" (mean of {n} steps)"
    w, h, pad = 720, 420, 60
    xs = [s for _, steps, _ in curves for s in steps]
    ys = [v for _, _, vals in curves for v in vals]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if reference is None and column == "loss" and len(ys) > 10:
        # The first steps' losses would squeeze the rest: cap the axis.
        y1 = min(y1, y0 + 8 * (sorted(ys)[len(ys) // 2] - y0) + 1e-9)
    sx = lambda x: pad + (x - x0) / max(x1 - x0, 1) * (w - 2 * pad)
    sy = lambda y: h - pad - (min(y, y1) - y0) / max(y1 - y0, 1e-9) * (h - 2 * pad)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">step</text>',
        f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">{ylabel}</text>',
    ]
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{pad - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        parts.append(f'<line x1="{pad}" y1="{sy(y):.1f}" x2="{w - pad}" y2="{sy(y):.1f}" stroke="#ddd"/>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{h - pad + 16}" text-anchor="middle">{int(x)}</text>')
    legend_w = 7 * max(len(label) for label, _, _ in curves) + 16
    legend = [
        f'<rect x="{w - pad - legend_w}" y="{pad + 2}" width="{legend_w}" height="{16 * len(curves) + 8}" fill="white" fill-opacity="0.85" stroke="#999"/>'
    ]
    for k, (label, steps, vals) in enumerate(curves):
        color = COLORS[k % len(COLORS)]
        points = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in zip(steps, vals))
        if reference is not None and k == 0 and y0 < 0 < y1:
            parts.append(f'<line x1="{pad}" y1="{sy(0):.1f}" x2="{w - pad}" y2="{sy(0):.1f}" stroke="black" stroke-dasharray="4"/>')
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        legend.append(f'<text x="{w - pad - legend_w + 8}" y="{pad + 16 * (k + 1)}" fill="{color}">{label}</text>')
    parts.extend(legend)
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
