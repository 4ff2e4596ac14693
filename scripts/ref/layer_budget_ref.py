#!/usr/bin/python3
"""Independent numpy reference of per-layer budgets (issue 17, method 5;
analysis/moe/layer_budget.h documents the rules this file re-implements).

  layer_budget_ref.py alloc SPEC_JSON
      SPEC_JSON: a list of cases {"method": "activity"|"greedy", "budget": B,
      "min_k": m, "dense": [per layer], "flops": [[F_i(k) for k = 1..E_i]],
      "activity": [a_i] (activity) or "error": [[err_i(k)]] (greedy)}.
      Prints a JSON list, per case {"k": [...], "fraction": f} or
      {"error": "below"} when m experts per layer exceed the budget.
  layer_budget_ref.py recording REC_DIR PART_JSON D_MODEL D_FF GATED ROUTER BUDGET
      The activity rule on a recording: a_i = sum(count_i) / (tokens d_ff)
      from REC_DIR/stats.safetensors and manifest.json, per layer of the
      partition (PART_JSON: partition.json: layers, experts, shared), the
      FLOP table from the formula of analysis/moe/ffn_flops.h (re-typed here):
          m = 2 if gated else 1; dense = (m + 1) d d_ff
          moe(k) = (m + 1) d n + R, n = shared + k (d_ff - shared) / E
          R = d E (similarity, sigmoid, dynamic-k), d E + E^2 (mlp),
              m d d_ff (oracle)
      Prints {"activity": [...], "k": [...], "fraction": f}.
  layer_budget_ref.py probe DIR
      The greedy rule's quality probe of a plain ReLU FFN with biases:
      DIR/x.npy [N, d], up.npy [F, d], b1.npy [1, F], down.npy [d, F],
      b2.npy [1, d], labels.npy [1, F] (expert ids), scores.npy [N, E].
      y = relu(x up^T + b1) down^T + b2; y_k keeps the neurons of each row's
      k highest-scored experts (stable, lower id first on ties), b2 always.
      Writes DIR/err.npy [1, E]: sqrt(sum ||y_k - y||^2 / sum ||y||^2).

Rules (the same words as layer_budget.h): every layer starts at m experts;
then one expert at a time goes to the layer of the highest priority among
those whose next expert keeps sum_i F_i(k_i) <= B sum_i dense_i (1 + 1e-12);
ties to the lower index; stop when none fits. Priority: activity a_i E_i / k_i
(Adams' divisor method); greedy (err_i(k_i) - err_i(k_i + 1)) /
(F_i(k_i + 1) - F_i(k_i)).

numpy only, float64; nothing here calls torch or the C++ code.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def allocate(method, budget, min_k, dense, flops, activity=None, error=None):
    n = len(flops)
    limit = budget * sum(dense) * (1 + 1e-12)
    k = [min_k] * n
    total = sum(flops[i][min_k - 1] for i in range(n))
    if total > limit:
        return None
    while True:
        best, best_p = None, None
        for i in range(n):
            E = len(flops[i])
            if k[i] >= E:
                continue
            step = flops[i][k[i]] - flops[i][k[i] - 1]
            if total + step > limit:
                continue
            if method == "activity":
                p = activity[i] * E / float(k[i])
            else:
                p = (error[i][k[i] - 1] - error[i][k[i]]) / step
            if best is None or p > best_p:
                best, best_p = i, p
        if best is None:
            return k
        total += flops[best][k[best]] - flops[best][k[best] - 1]
        k[best] += 1


def fraction(k, dense, flops):
    return sum(flops[i][k[i] - 1] for i in range(len(k))) / sum(dense)


def cmd_alloc(path):
    out = []
    for c in json.load(open(path)):
        k = allocate(c["method"], c["budget"], c["min_k"], c["dense"], c["flops"], c.get("activity"), c.get("error"))
        out.append({"error": "below"} if k is None else {"k": k, "fraction": fraction(k, c["dense"], c["flops"])})
    print(json.dumps(out))


def flop_table(d, F, gated, router, E, shared):
    m = 2.0 if gated else 1.0
    R = {"similarity": d * E, "sigmoid": d * E, "dynamic-k": d * E, "mlp": d * E + E * E, "oracle": m * d * F}[router]
    routed = (F - shared) / E
    return (m + 1) * d * F, [(m + 1) * d * (shared + k * routed) + R for k in range(1, E + 1)]


def cmd_recording(rec, part_json, d, F, gated, router, budget):
    man = json.load(open(os.path.join(rec, "manifest.json")))
    stats, _ = st_io.load(os.path.join(rec, "stats.safetensors"))
    part = json.load(open(part_json))
    E = int(part["experts"])
    shared = part.get("shared", {}).get("neurons", {})
    activity, dense, flops = [], [], []
    for L in part["layers"]:
        count = stats[f"blk.{L}.count"].astype(np.float64)
        activity.append(float(count.sum() / (float(man["tokens"]) * F)))
        dn, fl = flop_table(d, F, gated, router, E, int(shared.get(str(L), 0)))
        dense.append(dn)
        flops.append(fl)
    k = allocate("activity", budget, 1, dense, flops, activity=activity)
    print(json.dumps({"activity": activity, "k": k, "fraction": None if k is None else fraction(k, dense, flops)}))


def cmd_probe(d):
    ld = lambda n: np.load(os.path.join(d, n)).astype(np.float64)  # noqa: E731
    x, up, b1, down, b2 = ld("x.npy"), ld("up.npy"), ld("b1.npy"), ld("down.npy"), ld("b2.npy")
    labels, scores = ld("labels.npy")[0].astype(np.int64), ld("scores.npy")
    h = np.maximum(x @ up.T + b1, 0.0)
    y = h @ down.T + b2
    N, E = scores.shape
    # Stable descending order: sort by (-score, id).
    order = np.array([sorted(range(E), key=lambda e: (-scores[r, e], e)) for r in range(N)])
    den = float((y ** 2).sum())
    err = []
    for k in range(1, E + 1):
        keep = np.zeros((N, E), bool)
        for r in range(N):
            keep[r, order[r, :k]] = True
        mask = keep[:, labels]  # [N, F]
        yk = (h * mask) @ down.T + b2
        err.append(np.sqrt(float(((yk - y) ** 2).sum()) / den))
    np.save(os.path.join(d, "err.npy"), np.array([err], dtype=np.float32))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "alloc":
        cmd_alloc(sys.argv[2])
    elif len(sys.argv) == 9 and sys.argv[1] == "recording":
        cmd_recording(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1", sys.argv[7],
                      float(sys.argv[8]))
    elif len(sys.argv) == 3 and sys.argv[1] == "probe":
        cmd_probe(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
