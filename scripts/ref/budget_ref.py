#!/usr/bin/python3
"""Independent numpy references for quality at a compute budget (issue 17).

  budget_ref.py bound SPEC_JSON
      The top-k activation bound of small FFNs. SPEC_JSON is a list of cases
      {"dir": D, "act": "relu"|"gelu"|"gelu_tanh"|"silu", "gated": bool,
       "bias": bool, "keep": K}; D holds float32 .npy files x [N, d_model],
      up [d_ff, d_model], down [d_model, d_ff], gate [d_ff, d_model] (gated),
      b1 [1, d_ff] and b2 [1, d_model] (bias). Writes D/y.npy [N, d_model]
      and D/h.npy [N, d_ff]:
          h = act(x up^T + b1)                 (plain)
          h = act(x gate^T) * (x up^T)         (gated)
          keep the K entries of each row of h with the largest |h|, zero the rest
          y = h down^T + b2
  budget_ref.py sigmoid DIR K
      sigma-MoE router scores of DIR/x.npy [N, d_model] and DIR/w1.npy
      [E, d_model]: s = 1 / (1 + exp(-x w1^T)), written to DIR/scores.npy
      [N, E], and the top-K experts of every row (descending score) to
      DIR/top.npy [N, K] (as float32).

numpy only, in float64; nothing here calls torch or the C++ code.
"""
import json
import math
import sys

import numpy as np


def load(path):
    return np.load(path).astype(np.float64)


def save(path, a):
    np.save(path, np.ascontiguousarray(a, dtype=np.float32))


def act(name, v):
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    if name == "silu":
        return v / (1.0 + np.exp(-v))
    raise SystemExit("unknown activation " + name)


def bound(case):
    d = case["dir"]
    x, up, down = load(d + "/x.npy"), load(d + "/up.npy"), load(d + "/down.npy")
    if case["gated"]:
        h = act(case["act"], x @ load(d + "/gate.npy").T) * (x @ up.T)
    else:
        pre = x @ up.T
        if case["bias"]:
            pre = pre + load(d + "/b1.npy")[0]
        h = act(case["act"], pre)
    k = int(case["keep"])
    # The K largest |h| of every row: argsort descending, stable on ties.
    order = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :k]
    mask = np.zeros_like(h)
    np.put_along_axis(mask, order, 1.0, axis=1)
    hk = h * mask
    y = hk @ down.T
    if case["bias"]:
        y = y + load(d + "/b2.npy")[0]
    save(d + "/y.npy", y)
    save(d + "/h.npy", hk)


def sigmoid(d, k):
    x, w = load(d + "/x.npy"), load(d + "/w1.npy")
    s = 1.0 / (1.0 + np.exp(-(x @ w.T)))
    save(d + "/scores.npy", s)
    save(d + "/top.npy", np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.float64))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "bound":
        for case in json.load(open(sys.argv[2])):
            bound(case)
    elif len(sys.argv) == 4 and sys.argv[1] == "sigmoid":
        sigmoid(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
