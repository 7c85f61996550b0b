#!/usr/bin/env python3
"""Training fidelity of dsc to transformers' autograd (issue 13, item 6).

For each of deepseek_v3, deepseek_v2 and llama: the tiny config of scripts/fidelity.py with
random weights (torch, seeded) saved with `save_pretrained`, a random batch (`input_ids`,
`labels`), then
  - transformers in float32 on the CPU: the mean next-token cross-entropy over every position
    and its gradient by autograd (`loss.backward()`);
  - dsc: `dsc import` of the checkpoint with every op overridden to f32 (`high = "f32"` plus an
    override `*` -> f32), `dsc train --recipe bf16 --weights CKPT --inputs BATCH --steps 1
    --save-grads` (the step's first-step loss and gradients);
and compares the loss and every parameter's gradient: relative Frobenius error per tensor,
target <= 1e-4. The gradients of transformers are saved with `save_pretrained` too (each
parameter's value replaced by its gradient), so both sides carry checkpoint names (one tensor
per expert) whatever layout transformers uses inside.

usage: scripts/train-fidelity.sh [--models a,b] [--doc docs/training-fidelity.md]
Needs torch, transformers, safetensors, numpy (scripts/fidelity.sh makes the venv).
"""
import argparse
import copy
import csv
import datetime
import glob
import os
import platform
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fidelity  # noqa: E402  (the tiny configs, make_model, sh, the f32 precision table)

TARGET = 1e-4
MODELS = ["deepseek_v3", "deepseek_v2", "llama"]


def load_dir(path):
    out = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        out.update(load_file(f))
    return out


def hf_loss_and_grads(model, ids, labels, work):
    model.zero_grad()
    logits = model(input_ids=ids).logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    grads = copy.deepcopy(model)
    with torch.no_grad():
        for (name, p), (_, g) in zip(model.named_parameters(), grads.named_parameters()):
            g.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    path = os.path.join(work, "hf-grads")
    grads.save_pretrained(path, safe_serialization=True)
    return float(loss.detach()), {k: v.astype(np.float64) for k, v in load_dir(path).items()}


def dsc_loss_and_grads(dsc, work, ckpt, inputs, batch, seq, log):
    toml_path = os.path.join(work, "model.toml")
    fidelity.sh([dsc, "import", os.path.join(ckpt, "config.json"), "--batch", str(batch),
                 "--seq-len", str(seq), "-o", toml_path], log)
    text = open(toml_path).read()
    if "[precision]" in text:
        raise SystemExit(f"{toml_path}: the import already has a [precision] table")
    open(toml_path, "w").write(text + fidelity.EXACT)
    grads_path = os.path.join(work, "dsc-grads.safetensors")
    csv_path = os.path.join(work, "dsc-step.csv")
    fidelity.sh([dsc, "train", toml_path, "--recipe", "bf16", "--weights", ckpt, "--inputs",
                 inputs, "--steps", "1", "--save-grads", grads_path, "--log", csv_path], log)
    with open(csv_path) as f:
        loss = float(next(csv.DictReader(f))["loss"])
    grads = {k: v.astype(np.float64) for k, v in load_file(grads_path).items()}
    return loss, grads


def rel(a, b):
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsc", default="target/release/dsc")
    ap.add_argument("--work", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--doc", default=None, help="write the table to this markdown file")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    work = a.work or tempfile.mkdtemp(prefix="dsc-train-fidelity-")
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(work, "log.txt"), "w")
    dsc = os.path.abspath(a.dsc)
    rows, failed = [], False
    for kind in a.models.split(","):
        kdir = os.path.join(work, kind)
        ckpt = os.path.join(kdir, "hf")
        model = fidelity.make_model(kind, a.seed).float()
        model.save_pretrained(ckpt, safe_serialization=True)
        g = torch.Generator().manual_seed(a.seed + 1)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (a.batch, a.seq_len), generator=g)
        labels = torch.randint(0, vocab, (a.batch, a.seq_len), generator=g)
        inputs = os.path.join(kdir, "batch.safetensors")
        save_file({"input_ids": ids.numpy().astype(np.int32),
                   "labels": labels.numpy().astype(np.int32)}, inputs)

        hf_loss, hf_grads = hf_loss_and_grads(model, ids, labels, kdir)
        dsc_loss, dsc_grads = dsc_loss_and_grads(dsc, kdir, ckpt, inputs, a.batch, a.seq_len, log)
        common = sorted(hf_grads.keys() & dsc_grads.keys())
        errors = {n: rel(dsc_grads[n], hf_grads[n]) for n in common}
        worst = max(errors, key=errors.get)
        # Checkpoint tensors without a dsc gradient: buffers saved with the weights (the
        # selection bias of aux-loss-free routing has no gradient in either framework).
        only_hf = sorted(hf_grads.keys() - dsc_grads.keys())
        only_dsc = sorted(dsc_grads.keys() - hf_grads.keys())
        loss_err = abs(dsc_loss - hf_loss) / abs(hf_loss)
        ok = errors[worst] <= TARGET and loss_err <= TARGET and not only_dsc
        failed |= not ok
        rows.append(dict(model=kind, tensors=len(common), worst=worst, worst_err=errors[worst],
                         median=float(np.median(list(errors.values()))), loss_hf=hf_loss,
                         loss_dsc=dsc_loss, loss_err=loss_err, only_hf=only_hf,
                         only_dsc=only_dsc, ok=ok))
        print(f"{kind}: loss {dsc_loss:.6f} vs {hf_loss:.6f} (rel {loss_err:.2e}); "
              f"{len(common)} gradients, worst {errors[worst]:.2e} ({worst}), "
              f"median {rows[-1]['median']:.2e}; only in transformers' file: {only_hf}; "
              f"only in dsc's: {only_dsc}")
    table = [
        "| model | loss: dsc vs transformers | gradients compared | worst relative error "
        f"(tensor) | median | within {TARGET:g} |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['model']} | {r['loss_dsc']:.6f} vs {r['loss_hf']:.6f} ({r['loss_err']:.1e}) "
            f"| {r['tensors']} | {r['worst_err']:.2e} (`{r['worst']}`) | {r['median']:.2e} "
            f"| {'yes' if r['ok'] else '**no**'} |")
    print("\n".join(table))
    if a.doc:
        skipped = sorted({n for r in rows for n in r["only_hf"]})
        with open(a.doc, "w") as f:
            f.write("# Training fidelity: dsc's gradients against transformers' autograd\n\n")
            f.write(
                "`scripts/train-fidelity.sh --doc docs/training-fidelity.md` (outside CI): for "
                "each tiny model of `scripts/fidelity.py` (random weights, seed "
                f"{a.seed}), one batch of {a.batch}×{a.seq_len} random tokens and labels; "
                "transformers in float32 computes the mean next-token cross-entropy and its "
                "gradients by autograd; dsc imports the checkpoint with every op in f32 and runs "
                "`dsc train --recipe bf16 --weights CKPT --inputs BATCH --steps 1 --save-grads` "
                "(its first step's loss and FP32 gradients, by checkpoint name). Relative "
                "Frobenius error per gradient tensor, target ≤ 1e-4.\n\n")
            f.write("\n".join(table) + "\n\n")
            if skipped:
                f.write("Saved with the weights but not parameters with a gradient (buffers), "
                        "so not compared: " + ", ".join(f"`{n}`" for n in skipped[:6])
                        + (f" and {len(skipped) - 6} more" if len(skipped) > 6 else "")
                        + ".\n\n")
            f.write(f"Run {datetime.date.today()} on {platform.machine()} with torch "
                    f"{torch.__version__}, transformers {transformers.__version__}.\n")
    if failed:
        raise SystemExit("some model is outside the target")


if __name__ == "__main__":
    main()
