#!/usr/bin/python3
"""Independent numpy references for dynamic-k routing (issue 17; Szatkowski
et al. 2024, "Exploiting Activation Sparsity with Dense to Dynamic-k
Mixture-of-Experts Conversion").

  dynamic_k_ref.py select SPEC_JSON
      SPEC_JSON: a list of cases {"dir": D, "tau": t, "min_k": a, "max_k": b};
      D/scores.npy [N, E] holds non-negative scores (predicted output norms).
      Writes D/sel.npy [N, b] (float32): per row, the experts in descending
      score (ties: lower id first), k of them, then -1, where
          k = the smallest k with sum of the k largest scores >= t * row total,
          clamped to [a, b]
  dynamic_k_ref.py norms DIR
      Expert output norms. DIR: h.npy [S, d_ff] (FFN hidden, original neuron
      order), down.npy [d_model, d_ff] (W2), labels.npy [1, d_ff] and
      meta.json {"experts": E}. Writes DIR/norms.npy [S, E]:
          norms[s, e] = || sum_{i: labels[i] = e} down[:, i] h[s, i] ||_2
      (neurons labelled E, a shared expert, are not part of any routed expert).

numpy only, in float64; nothing here calls torch or the C++ code.
"""
import json
import sys

import numpy as np


def select(spec):
    for c in json.load(open(spec)):
        d = c["dir"]
        s = np.load(d + "/scores.npy").astype(np.float64)
        tau, lo, hi = float(c["tau"]), int(c["min_k"]), int(c["max_k"])
        out = np.full((s.shape[0], hi), -1.0)
        for t in range(s.shape[0]):
            order = np.argsort(-s[t], kind="stable")
            prefix = np.cumsum(s[t, order])  # sums of the k largest, k = 1..E
            k = int(np.argmax(prefix >= tau * prefix[-1])) + 1
            k = max(lo, min(hi, k))
            out[t, :k] = order[:k]
        np.save(d + "/sel.npy", out.astype(np.float32))


def norms(d):
    h = np.load(d + "/h.npy").astype(np.float64)
    down = np.load(d + "/down.npy").astype(np.float64)
    labels = np.load(d + "/labels.npy").reshape(-1).round().astype(np.int64)
    E = json.load(open(d + "/meta.json"))["experts"]
    out = np.zeros((h.shape[0], E))
    for e in range(E):
        idx = np.nonzero(labels == e)[0]
        out[:, e] = np.linalg.norm(h[:, idx] @ down[:, idx].T, axis=1)
    np.save(d + "/norms.npy", out.astype(np.float32))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "select":
        select(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "norms":
        norms(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
