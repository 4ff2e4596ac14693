#!/usr/bin/python3
"""Independent float64 numpy reference for the router losses of native MoE
training (analysis/train/router_loss.h), written from Hugging Face's
load_balancing_loss_func (modeling_mixtral.py; the same function in
modeling_qwen2_moe.py and modeling_olmoe.py) without an attention mask, and
the ST-MoE router z-loss (Zoph et al. 2022, eq. 5).

usage:
  router_loss_ref.py losses DIR
      DIR holds meta.json {"experts": E, "top_k": k, "layers": n} and
      logits_0.npy .. logits_{n-1}.npy (float32 [N_l, E], one per MoE layer).
      Prints {"aux": a, "z": z} and writes DIR/grad_aux_l.npy and
      DIR/grad_z_l.npy (float32 [N_l, E]), the gradients of a and z with
      respect to each layer's logits.
  router_loss_ref.py selftest
      checks the analytic gradients against central finite differences.

Definitions (Z [M, E]: the layers' logits stacked row-wise, M = sum N_l):
  p = softmax(Z) per row
  sel = the k largest p of each row        (torch.topk; the test data has no ties)
  mask[m, j, e] = 1 if sel[m, j] == e      ([M, k, E], constant: no gradient)
  f = mean_m mask                          ([k, E])
  P = mean_m p                             ([E])
  aux = E * sum_{j,e} f[j, e] * P[e]
  z = mean_m logsumexp(Z_m)^2
Gradients (c_e = sum_j f[j, e]):
  d aux / d Z[m, i] = (E / M) p[m, i] (c_i - sum_e c_e p[m, e])
  d z / d Z[m, i]   = (2 / M) logsumexp(Z_m) p[m, i]
"""
import json
import os
import sys

import numpy as np


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z):
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def losses(z, experts, k):
    """aux, z-loss and their gradients for Z [M, E] (float64)."""
    M = z.shape[0]
    p = softmax(z)
    sel = np.argsort(-p, axis=1, kind="stable")[:, :k]  # [M, k], largest first
    mask = np.zeros((M, k, experts))
    for j in range(k):
        mask[np.arange(M), j, sel[:, j]] = 1.0
    f = mask.mean(axis=0)  # [k, E]
    P = p.mean(axis=0)  # [E]
    aux = experts * float((f * P[None, :]).sum())
    lse = logsumexp(z)
    zl = float((lse ** 2).mean())
    c = f.sum(axis=0)  # [E]
    g_aux = experts / M * p * (c[None, :] - (p * c[None, :]).sum(axis=1, keepdims=True))
    g_z = 2.0 / M * lse[:, None] * p
    return aux, zl, g_aux, g_z, sel


def read_npy(path):
    return np.load(path).astype(np.float64)


def cmd_losses(d):
    meta = json.load(open(os.path.join(d, "meta.json")))
    E, k, n = meta["experts"], meta["top_k"], meta["layers"]
    parts = [read_npy(os.path.join(d, "logits_%d.npy" % l)) for l in range(n)]
    for x in parts:
        if x.ndim != 2 or x.shape[1] != E:
            sys.exit("logits must be [N, %d]" % E)
    z = np.concatenate(parts, axis=0)
    aux, zl, g_aux, g_z, _ = losses(z, E, k)
    row = 0
    for l, x in enumerate(parts):
        rows = slice(row, row + x.shape[0])
        np.save(os.path.join(d, "grad_aux_%d.npy" % l), g_aux[rows].astype(np.float32))
        np.save(os.path.join(d, "grad_z_%d.npy" % l), g_z[rows].astype(np.float32))
        row += x.shape[0]
    print(json.dumps({"aux": aux, "z": zl}))


def selftest():
    rng = np.random.default_rng(3)
    for E, k, M in [(8, 2, 30), (4, 1, 9), (6, 3, 13)]:
        z = rng.normal(size=(M, E)) * 2
        aux, zl, g_aux, g_z, sel = losses(z, E, k)
        h = 1e-6
        for m, i in [(0, 0), (M - 1, E - 1), (M // 2, 1)]:
            zp, zm = z.copy(), z.copy()
            zp[m, i] += h
            zm[m, i] -= h
            ap, zlp, _, _, sp = losses(zp, E, k)
            am, zlm, _, _, sm = losses(zm, E, k)
            assert (sp == sel).all() and (sm == sel).all(), "selection changed under the perturbation"
            assert abs((ap - am) / (2 * h) - g_aux[m, i]) < 1e-6, "aux gradient"
            assert abs((zlp - zlm) / (2 * h) - g_z[m, i]) < 1e-6, "z gradient"
        # Perfectly even routing (each expert chosen by the same share, equal mean probabilities) gives aux = k.
    z = np.log(np.eye(4) * 3 + 1)  # row m favours expert m; P uniform, each expert chosen once as top-1
    aux, _, _, _, _ = losses(z, 4, 1)
    assert abs(aux - 1.0) < 1e-12, aux
    print("selftest ok")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "selftest":
        selftest()
    elif len(sys.argv) == 3 and sys.argv[1] == "losses":
        cmd_losses(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
