#!/usr/bin/env python3
"""CPU-against-device parity of MoEfy outputs (scripts/gpu-check.sh).

  gpu_parity.py dumps A.safetensors B.safetensors    forward --dump files
  gpu_parity.py recordings REC_A REC_B               record folders
  gpu_parity.py evals EVAL_A EVAL_B                  eval folders (eval.json)

Prints, per tensor or figure, the max absolute difference and that difference
relative to the largest magnitude of the tensor (or the figure), and exits 1
when one is over 1e-3: the float32 forward of a GPU sums in another order, so
logits and hooks differ by rounding, and a recorded count may differ where an
activation sits within rounding of the threshold. Different tensor names,
shapes or result rows are failures too.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import st_io  # noqa: E402


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), 1e-12)
    return float(np.abs(a - b).max(initial=0.0)), float(np.abs(a - b).max(initial=0.0) / scale)


def compare(pairs, tol, what):
    worst = 0.0
    for name, a, b in pairs:
        if np.shape(a) != np.shape(b):
            print(f"  {name}: shape {np.shape(a)} vs {np.shape(b)}")
            return False
        ad, rd = rel(a, b)
        worst = max(worst, rd)
        print(f"  {name}: max |diff| {ad:.3g}, relative {rd:.3g}")
    ok = worst <= tol
    print(f"{what}: worst relative difference {worst:.3g} (tolerance {tol}): {'ok' if ok else 'FAILED'}")
    return ok


def dumps(a, b):
    ta, tb = st_io.read_f32(a), st_io.read_f32(b)
    if set(ta) != set(tb):
        print(f"dumps: tensor names differ: {sorted(set(ta) ^ set(tb))}")
        return False
    return compare([(k, ta[k], tb[k]) for k in sorted(ta)], 1e-3, f"dumps {a} vs {b}")


def recordings(a, b):
    sa, sb = st_io.read_f32(os.path.join(a, "stats.safetensors")), st_io.read_f32(os.path.join(b, "stats.safetensors"))
    ca, cb = st_io.load_coact(a), st_io.load_coact(b)
    if set(sa) != set(sb) or set(ca) != set(cb):
        print(f"recordings: tensor names differ: {sorted((set(sa) ^ set(sb)) | (set(ca) ^ set(cb)))}")
        return False
    pairs = [(k, sa[k], sb[k]) for k in sorted(sa)] + [(k, ca[k], cb[k]) for k in sorted(ca)]
    return compare(pairs, 1e-3, f"recordings {a} vs {b}")


def evals(a, b):
    ja = json.load(open(os.path.join(a, "eval.json")))
    jb = json.load(open(os.path.join(b, "eval.json")))
    if len(ja["results"]) != len(jb["results"]):
        print(f"evals: {len(ja['results'])} results against {len(jb['results'])}")
        return False
    pairs = [("reference perplexity", ja["reference"]["perplexity"], jb["reference"]["perplexity"])]
    for ra, rb in zip(ja["results"], jb["results"]):
        label = f"{ra.get('router', '')} {ra.get('fraction', '')}"
        for key in ("perplexity", "top1_agreement"):
            pairs.append((f"{label} {key}", ra[key], rb[key]))
    return compare(pairs, 1e-3, f"evals {a} vs {b}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("dumps", "recordings", "evals"):
        print("usage: gpu_parity.py dumps|recordings|evals A B", file=sys.stderr)
        sys.exit(2)
    ok = {"dumps": dumps, "recordings": recordings, "evals": evals}[sys.argv[1]](sys.argv[2], sys.argv[3])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
