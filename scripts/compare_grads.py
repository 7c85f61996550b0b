#!/usr/bin/env python3
"""Per-tensor comparison of two gradient files written by `dsc train --save-grads`.

    python3 scripts/compare_grads.py REFERENCE.safetensors OTHER.safetensors

For every tensor in both files, prints the relative Frobenius error ‖other − ref‖ / ‖ref‖ and the
cosine between the two, worst first; tensors present in one file only are named. Pure Python
(no numpy): reads the safetensors header and the F32/BF16 payloads with `struct`.
"""
import json
import math
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        dtype = info["dtype"]
        if dtype == "F32":
            values = struct.unpack(f"<{len(raw) // 4}f", raw)
        elif dtype == "BF16":
            halves = struct.unpack(f"<{len(raw) // 2}H", raw)
            values = struct.unpack(
                f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))
            )
        else:
            raise SystemExit(f"{path}: tensor `{name}` has dtype {dtype} (F32 and BF16 only)")
        tensors[name] = values
    return tensors


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    ref, other = load(sys.argv[1]), load(sys.argv[2])
    rows = []
    for name in sorted(ref.keys() & other.keys()):
        a, b = ref[name], other[name]
        if len(a) != len(b):
            raise SystemExit(f"`{name}`: {len(a)} elements against {len(b)}")
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
        dot = sum(x * y for x, y in zip(a, b))
        rel = diff / na if na > 0 else float("inf") if diff > 0 else 0.0
        cos = dot / (na * nb) if na > 0 and nb > 0 else float("nan")
        rows.append((rel, cos, name, na))
    print(f"{'relative error':>14}  {'cosine':>9}  {'‖ref‖':>10}  tensor")
    for rel, cos, name, na in sorted(rows, reverse=True):
        print(f"{rel:14.3e}  {cos:9.6f}  {na:10.3e}  {name}")
    for name in sorted(ref.keys() - other.keys()):
        print(f"only in {sys.argv[1]}: {name}")
    for name in sorted(other.keys() - ref.keys()):
        print(f"only in {sys.argv[2]}: {name}")


if __name__ == "__main__":
    main()
