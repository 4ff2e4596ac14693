#!/usr/bin/python3
"""Independent numpy references for shared experts (issue 17, `split --shared`).

  shared_ref.py choose SPEC_JSON
      The shared expert's neurons of activation counts. SPEC_JSON is a list of
      cases {"dir": D, "experts": E, "mode": "count"|"auto", "neurons": N,
      "mass": m, "max_fraction": f}; D/count.npy is [1, d_ff]. Prints a JSON
      list, one {"n": N, "ids": [ascending ids]} per case, or {"error": ...}
      for a count that leaves no E equal routed experts:
          valid N: 0 <= N <= d_ff - E and (d_ff - N) % E == 0
          count: N as given (must be >= 1 and valid)
          auto:  order neurons by descending count (ties: lower id first);
                 N0 = smallest n whose n first neurons hold >= m * sum(count);
                 cap = min(floor(f * d_ff), d_ff - E); N0 = min(N0, cap);
                 N = the smallest valid value >= N0 if it is <= cap, else the
                 largest valid value <= N0 (0: no shared expert)
          ids: the N first neurons of that order
  shared_ref.py moe DIR
      A MoE FFN with a shared expert, from the dense weights. DIR holds float32
      .npy files x [N, d_model], up [d_ff, d_model], down [d_model, d_ff],
      gate [d_ff, d_model] (gated), b1 [1, d_ff], b2 [1, d_model] (bias),
      labels [1, d_ff] (expert ids; E = the shared expert), sel [N, k]
      (routed expert ids, -1 = none) and meta.json {"experts": E, "act":
      "relu"|"silu"|..., "gated": bool, "bias": bool}. Writes DIR/y.npy and
      DIR/h.npy:
          h = act(x up^T + b1)  or  act(x gate^T) * (x up^T)
          keep h[t, i] when labels[i] == E or labels[i] is in sel[t]
          y = h down^T + b2
  shared_ref.py flops SPEC_JSON
      FFN FLOP fractions (multiply-adds, docs/moe.md "Compute accounting") of
      cases {"d", "F", "E", "shared", "k", "router": "similarity"|"sigmoid"|
      "mlp", "gated"} with equal routed experts of (F - shared) / E neurons:
          n = shared + k (F - shared) / E;   m = 2 if gated else 1
          fraction = ((m + 1) d n + R) / ((m + 1) d F),
          R = d E (similarity, sigmoid), d E + E^2 (mlp)
      Prints a JSON list of fractions.
  shared_ref.py partition PART_DIR REC_DIR
      Checks a partition written by `moefy split --shared` against its
      recording: per layer, the shared neurons (label E) must be the
      recording's most active ones (blk.L.count, ties by id) and the routed
      experts equal-sized; recomputes coact_inside over the routed neurons
      (off-diagonal co-activation inside routed experts / all off-diagonal
      co-activation among routed neurons, unordered pairs) and the share of
      the activation counts the shared neurons hold. Prints JSON
      {"L": {"shared": N, "top_by_count": bool, "routed_sizes": [...],
      "coact_inside": x, "shared_mass": y, "auto_n": N (--shared auto: the
      rule of `choose` on blk.L.count with the partition's mass and cap)}}.

numpy only, in float64; nothing here calls torch or the C++ code.
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402  (the repository's numpy safetensors reader)


def by_activity(count):
    return np.argsort(-np.asarray(count, dtype=np.int64), kind="stable")


def valid(n, F, E):
    return 0 <= n <= F - E and (F - n) % E == 0


def shared_count(count, E, mode, neurons=0, mass=0.25, max_fraction=0.125):
    F = len(count)
    if mode == "count":
        if neurons >= 1 and valid(neurons, F, E):
            return neurons
        return None
    total = float(np.maximum(count, 0).sum())
    if total <= 0:
        return 0
    order = by_activity(count)
    cum = np.cumsum(np.maximum(np.asarray(count, dtype=np.float64)[order], 0))
    n0 = int(np.searchsorted(cum, mass * total, side="left")) + 1
    n0 = min(n0, F)
    cap = min(int(math.floor(max_fraction * F)), F - E)
    n0 = min(n0, cap)
    if n0 <= 0:
        return 0
    for n in range(n0, cap + 1):
        if valid(n, F, E):
            return n
    for n in range(n0, -1, -1):
        if valid(n, F, E):
            return n
    return 0


def choose(spec):
    out = []
    for c in json.load(open(spec)):
        count = np.load(c["dir"] + "/count.npy").astype(np.float64).reshape(-1).round().astype(np.int64)
        n = shared_count(count, c["experts"], c["mode"], c.get("neurons", 0), c.get("mass", 0.25),
                         c.get("max_fraction", 0.125))
        if n is None:
            out.append({"error": "invalid count"})
            continue
        out.append({"n": n, "ids": sorted(int(i) for i in by_activity(count)[:n])})
    print(json.dumps(out))


def act(name, v):
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "silu":
        return v / (1.0 + np.exp(-v))
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)))
    raise SystemExit("unknown activation " + name)


def moe(d):
    meta = json.load(open(d + "/meta.json"))
    ld = lambda n: np.load(d + "/" + n + ".npy").astype(np.float64)  # noqa: E731
    x, up, down = ld("x"), ld("up"), ld("down")
    labels = ld("labels").reshape(-1).round().astype(np.int64)
    sel = ld("sel").round().astype(np.int64)
    E = meta["experts"]
    if meta["gated"]:
        h = act(meta["act"], x @ ld("gate").T) * (x @ up.T)
    else:
        pre = x @ up.T
        if meta["bias"]:
            pre = pre + ld("b1")[0]
        h = act(meta["act"], pre)
    keep = np.zeros_like(h)
    for t in range(h.shape[0]):
        chosen = set(int(e) for e in sel[t] if e >= 0)
        for i in range(h.shape[1]):
            if labels[i] == E or labels[i] in chosen:
                keep[t, i] = 1.0
    hk = h * keep
    y = hk @ down.T
    if meta["bias"]:
        y = y + ld("b2")[0]
    np.save(d + "/y.npy", y.astype(np.float32))
    np.save(d + "/h.npy", hk.astype(np.float32))


def flops(spec):
    out = []
    for c in json.load(open(spec)):
        d, F, E, s, k = c["d"], c["F"], c["E"], c["shared"], c["k"]
        m = 2 if c["gated"] else 1
        n = s + k * (F - s) / E
        R = d * E + (E * E if c["router"] == "mlp" else 0)
        out.append(((m + 1) * d * n + R) / ((m + 1) * d * F))
    print(json.dumps(out))


def partition(part_dir, rec_dir):
    meta = json.load(open(part_dir + "/partition.json"))
    labels, _ = st_io.load(part_dir + "/labels.safetensors")
    stats, _ = st_io.load(rec_dir + "/stats.safetensors")
    coact = st_io.load_coact(rec_dir)  # full [n, n] matrices (format version 1 or 2)
    E = meta["experts"]
    out = {}
    for L in meta["layers"]:
        lab = labels[f"blk.{L}.labels"].astype(np.int64)
        count = stats[f"blk.{L}.count"].astype(np.int64)
        shared = np.nonzero(lab == E)[0]
        n = len(shared)
        top = sorted(int(i) for i in by_activity(count)[:n])
        routed = np.nonzero(lab != E)[0]
        sizes = np.bincount(lab[routed], minlength=E).tolist()
        C = coact[f"blk.{L}.coact"].astype(np.float64)[np.ix_(routed, routed)]
        rl = lab[routed]
        iu = np.triu_indices(len(routed), 1)
        total = C[iu].sum()
        inside = C[iu][rl[iu[0]] == rl[iu[1]]].sum()
        out[str(L)] = {"shared": n, "top_by_count": top == shared.tolist(), "routed_sizes": sizes,
                       "coact_inside": inside / total if total > 0 else 0.0,
                       "shared_mass": float(count[shared].sum()) / float(count.sum()) if count.sum() > 0 else 0.0}
        rule = meta.get("shared", {})
        if rule.get("rule") == "auto":
            out[str(L)]["auto_n"] = shared_count(count, E, "auto", 0, rule["mass"], rule["max_fraction"])
    print(json.dumps(out))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "choose":
        choose(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "moe":
        moe(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "flops":
        flops(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "partition":
        partition(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
