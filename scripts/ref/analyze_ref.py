#!/usr/bin/env python3
"""Independent float64 reference of `moefy analyze` (analysis/analyze/moe_analysis.h)
for native MoE checkpoints (Mixtral, Qwen2-MoE, OLMoE), written from the
definitions (Lo et al., arXiv 2406.18219; the standard MoE usage metrics), not
from moefy's C++:

usage: analyze_ref.py MODEL_DIR --ids-file FILE.ids --out REF.safetensors [--fire-eps EPS]
       analyze_ref.py export MOE_DIR --inputs X.safetensors --out REF.safetensors [--fire-eps EPS] [--oracle]
       (a MoE export of moefy: see "MoE exports" below)

FILE.ids holds one token sequence per line (whitespace-separated ids; each
shorter than moefy's --seq-len, so no window is cut). The forward pass is
moe_native_ref.MoeRef in every-expert mode. Writes the same tensor names as
analysis.safetensors (F64 / I64 / I32 / U8) and REF.json with the scalars
(router_r2, pca_explained, output_similarity, top1_norm_share, usage
perplexity, dead share, overlap_next) and the margins that decide the
discrete results (smallest gap between consecutive router logits and output
norms of a token, smallest | |h| - eps | of a routed hidden), which must stay
well above the float32 rounding of moefy's forward pass for the ranks, counts
and channel usage to agree exactly. The matching is solved exactly by scipy's
linear_sum_assignment on float64 cosines of the same float32 weights.

Definitions:
  sim.P        cosine of flattened projection P (gate = w1/gate_proj, up = w3/up_proj,
               down = w2/down_proj) between experts; a zero vector has cosine 0
  mean_sim.P   cosine of the neuron means (gate/up: mean of rows; down: mean of columns)
  match_*      neuron vectors [gate row | up row | down column]; scipy
               linear_sum_assignment(cos, maximize=True); match_sim = mean matched cosine,
               match_sim.P the same on projection P's part; match_tau = scipy kendalltau
               of (arange, perm); match_perm[i, j] = perm (inverse for j < i)
  router_sim   cosine of router rows; R^2 = linregress(x=sim.P pairs i<j, y=router pairs).rvalue^2
  pca.*        SVD of the centred rows: scores U S, explained S^2 / sum S^2; each column's
               entry of largest magnitude made positive
  output_sim   mean over tokens of 1 - arccos(cos(y_i, y_j)) / pi, y_e = down_e h_e
  rank_counts  [score rank, norm rank] counts, ranks by stable descending argsort
  usage etc.   share = count / (N k); perplexity = exp(H) / E; dead = share of zero counts;
               cooccurrence = C^T C with zero diagonal, rows divided by their sums;
               overlap_next = mean |S_L & S_L'| / k; transition = C_L^T C_L'
  channel_usage  share of neurons with |h| > eps on some token routed to the expert
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_native_ref  # noqa: E402
import st_io  # noqa: E402

PROJ = ("gate", "up", "down")


def cos_matrix(a, b):
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    s = a @ b.T
    with np.errstate(divide="ignore", invalid="ignore"):
        s = s / np.outer(na, nb)
    s[~np.isfinite(s)] = 0.0
    return np.clip(s, -1.0, 1.0)


def pca2(x):
    xc = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    scores = np.zeros((x.shape[0], 2))
    total = float((s ** 2).sum())
    explained = [0.0, 0.0]
    for c in range(min(2, len(s))):
        if total <= 0 or s[c] ** 2 <= 1e-12 * total:
            continue
        col = u[:, c] * s[c]
        if col[np.argmax(np.abs(col))] < 0:
            col = -col
        scores[:, c] = col
        explained[c] = float(s[c] ** 2 / total)
    return scores, explained


def ranks(x):
    order = np.argsort(-x, axis=1, kind="stable")
    r = np.empty_like(order)
    np.put_along_axis(r, order, np.arange(x.shape[1])[None, :].repeat(x.shape[0], 0), 1)
    return r, order


def expert_names(cfg, l, e):
    if cfg["model_type"] == "mixtral":
        m = "model.layers.%d.block_sparse_moe." % l
        return m + "experts.%d.w1.weight" % e, m + "experts.%d.w3.weight" % e, m + "experts.%d.w2.weight" % e
    m = "model.layers.%d.mlp.experts.%d." % (l, e)
    return m + "gate_proj.weight", m + "up_proj.weight", m + "down_proj.weight"


def router_name(cfg, l):
    return "model.layers.%d.%s.gate.weight" % (l, "block_sparse_moe" if cfg["model_type"] == "mixtral" else "mlp")


def match_pair(ni, nj, C, same):
    """The optimal one-to-one matching of neuron vectors ni, nj [F, P C] (same: i == j, the
    identity): (perm, mean matched cosine, [mean matched cosine per projection], Kendall tau)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.stats import kendalltau
    S = cos_matrix(ni, nj)
    F = ni.shape[0]
    if same:
        p = np.arange(F)
    else:
        rows, p = linear_sum_assignment(S, maximize=True)
        assert (rows == np.arange(F)).all()
    proj = []
    for q in range(ni.shape[1] // C):
        a = ni[:, q * C:(q + 1) * C]
        b = nj[p, q * C:(q + 1) * C]
        proj.append(np.mean([cos_matrix(a[r:r + 1], b[r:r + 1])[0, 0] for r in range(F)]))
    tau = 1.0 if same else kendalltau(np.arange(F), p).correlation
    return p, S[np.arange(F), p].mean(), proj, tau


def static(cfg, w, l, E, out, info):
    # scipy imported here so that batch.py (which imports this module) runs without it.
    from scipy.stats import linregress
    site = "blk.%d" % l
    ex = [[w[n].astype(np.float64) for n in expert_names(cfg, l, e)] for e in range(E)]  # gate, up, down
    s = {}
    flat = {}
    for p, name in enumerate(PROJ):
        flat[name] = cos_matrix(np.stack([ex[e][p].ravel() for e in range(E)]), np.stack([ex[e][p].ravel() for e in range(E)]))
        means = np.stack([ex[e][p].mean(1) if p == 2 else ex[e][p].mean(0) for e in range(E)])
        mean = cos_matrix(means, means)
        out.append((site + ".sim." + name, "F64", flat[name]))
        out.append((site + ".mean_sim." + name, "F64", mean))
        s[name] = mean
    router = w[router_name(cfg, l)].astype(np.float64)
    rs = cos_matrix(router, router)
    out.append((site + ".router_sim", "F64", rs))
    iu = np.triu_indices(E, 1)
    info["router_r2"] = {
        "sim": {n: float(linregress(flat[n][iu], rs[iu]).rvalue ** 2) for n in PROJ},
        "mean_sim": {n: float(linregress(s[n][iu], rs[iu]).rvalue ** 2) for n in PROJ},
    }
    allflat = np.stack([np.concatenate([ex[e][0].ravel(), ex[e][1].ravel(), ex[e][2].ravel()]) for e in range(E)])
    sc, expl = pca2(allflat)
    out.append((site + ".pca.experts", "F64", sc))
    neurons = [np.concatenate([ex[e][0], ex[e][1], ex[e][2].T], 1) for e in range(E)]  # [F, 3C]
    F, C3 = neurons[0].shape
    C = C3 // 3
    sc_n, expl_n = pca2(np.concatenate(neurons, 0))
    out.append((site + ".pca.neurons", "F64", sc_n))
    out.append((site + ".pca.neuron_expert", "I32", np.repeat(np.arange(E), F).astype(np.int32)))
    info["pca_explained"] = {"experts": expl, "neurons": expl_n}
    msim = np.zeros((E, E))
    mproj = np.zeros((3, E, E))
    tau = np.zeros((E, E))
    perm = np.zeros((E, E, F), np.int32)
    for i in range(E):
        for j in range(E):
            perm[i, j], msim[i, j], mproj[:, i, j], tau[i, j] = match_pair(neurons[i], neurons[j], C, i == j)
    out.append((site + ".match_sim", "F64", msim))
    for q, name in enumerate(PROJ):
        out.append((site + ".match_sim." + name, "F64", mproj[q]))
    out.append((site + ".match_tau", "F64", tau))
    out.append((site + ".match_perm", "I32", perm))


def layer_stats(site, scores, Y, chosen, out, gaps, score_key):
    """The per-layer dynamic results shared by native layers and exports: output_sim,
    rank_counts, chosen, usage, cooccurrence (appended to out) and the scalars.
    scores [N, E] (router logits / scores), Y [N, E, C] expert outputs, chosen [N, E] U8.
    Returns (scalars, rank counts, top-1 hits); updates the deciding margins in gaps."""
    N, E = chosen.shape
    norms = np.linalg.norm(Y, axis=2)
    ang = np.zeros((E, E))
    for t in range(N):
        ang += 1 - np.arccos(cos_matrix(Y[t], Y[t])) / np.pi
    ang /= N
    out.append((site + ".output_sim", "F64", ang))
    iu = np.triu_indices(E, 1)
    d = {"output_similarity": float(ang[iu].mean()) if E > 1 else None}
    rs, so = ranks(scores)
    rn, no = ranks(norms)
    counts = np.zeros((E, E), np.int64)
    np.add.at(counts, (rs.ravel(), rn.ravel()), 1)
    out.append((site + ".rank_counts", "I64", counts))
    hits = int((so[:, 0] == no[:, 0]).sum())
    d["top1_norm_share"] = hits / N
    for x, key in ((scores, score_key), (norms, "norm")):
        srt = -np.sort(-x, axis=1)
        gaps[key] = min(gaps[key], float((srt[:, :-1] - srt[:, 1:]).min()))
    out.append((site + ".chosen", "U8", chosen))
    cnt = chosen.sum(0).astype(np.float64)
    share = cnt / cnt.sum()
    nz = share[share > 0]
    d["usage_perplexity"] = float(np.exp(-(nz * np.log(nz)).sum()) / E)
    d["dead_share"] = float((cnt == 0).mean())
    co = chosen.T.astype(np.float64) @ chosen.astype(np.float64)
    np.fill_diagonal(co, 0)
    rows = co.sum(1, keepdims=True)
    co = np.where(rows > 0, co / np.where(rows > 0, rows, 1), 0)
    out.append((site + ".usage", "F64", share))
    out.append((site + ".cooccurrence", "F64", co))
    return d, counts, hits


def dynamic(cfg, w, layers, seqs, eps, out, info, sites):
    ref = moe_native_ref.MoeRef(cfg, w, every=True)
    c = ref.c
    E, K = c["E"], c["k"]
    ids, mask = moe_native_ref.batch(seqs)
    ref.forward(ids, mask)
    if ref.min_margin < moe_native_ref.MARGIN:
        raise SystemExit("analyze_ref: a top-k choice has a router-logit margin of %.3g" % ref.min_margin)
    valid = mask.reshape(-1) == 1
    N = int(valid.sum())
    out.append(("token_ids", "I64", ids.reshape(-1)[valid]))
    out.append(("token_sequence", "I32", np.repeat(np.arange(len(seqs)), [len(s) for s in seqs]).astype(np.int32)))
    gaps = {"logit": np.inf, "norm": np.inf, "fire": np.inf}
    chosen_by = []
    rank_total = np.zeros((E, E), np.int64)
    hits_total = 0
    for l in layers:
        site = "blk.%d" % l
        logits = ref.hooks[site + ".router_logits"].reshape(-1, E)[valid]
        topk = ref.hooks[site + ".topk_ids"].reshape(-1, K)[valid]
        chosen = np.zeros((N, E), np.uint8)
        np.put_along_axis(chosen, topk, 1, 1)
        ys, fired = [], np.zeros((E, c["F"]), bool)
        for e in range(E):
            h = ref.hooks[site + ".exp.%d.ffn_act" % e][valid]  # every-expert mode: all tokens
            down = w[expert_names(cfg, l, e)[2]].astype(np.float64)
            ys.append(h @ down.T)
            routed = chosen[:, e] == 1
            if routed.any():
                a = np.abs(h[routed])
                fired[e] = (a > eps).any(0)
                gaps["fire"] = min(gaps["fire"], float(np.abs(a - eps).min()))
        d, counts, hits = layer_stats(site, logits, np.stack(ys, 1), chosen, out, gaps, "logit")
        rank_total += counts
        hits_total += hits
        out.append((site + ".channel_usage", "F64", fired.mean(1)))
        sites[site]["dynamic"] = d
        chosen_by.append((l, chosen))
    for (l, a), (nx, b) in zip(chosen_by, chosen_by[1:]):
        site = "blk.%d" % l
        sites[site]["dynamic"]["overlap_next"] = float((a & b).sum(1).mean() / K)
        sites[site]["dynamic"]["next"] = "blk.%d" % nx
        out.append((site + ".transition", "I64", a.T.astype(np.int64) @ b.astype(np.int64)))
    out.append(("rank_counts", "I64", rank_total))
    info["top1_norm_share"] = hits_total / (N * len(layers))
    info["tokens"] = N
    info["gaps"] = gaps


# ---- MoE exports of moefy (moefy export) ----
#
# usage: analyze_ref.py export MOE_DIR --inputs X.safetensors --out REF.safetensors [--fire-eps EPS] [--oracle]
#
# X.safetensors holds the FFN inputs blk.L.x F32 [n, d_model] of every MoEfied
# layer (the same n tokens at each). The export is read from its files alone
# (docs/formats.md "MoE checkpoint": config.json's moefication block and
# moe.safetensors' blk.L.experts.E.{gate,up}.weight [s_E, C], .up.bias [s_E],
# .down.weight [C, s_E], blk.L.router.*). Definitions, as for native MoE
# layers above, over the E routed experts (a shared expert, blk.L.shared.*,
# is not routed and is left out), with:
#   sizes        experts may differ in size: sim.P, match_sim*, match_tau are NaN for a
#                pair of unequal sizes; match_perm and pca.experts only when all are equal
#   plain FFNs   no gate: projections up and down, neuron vector [up row | down column];
#                the up bias b1 is left out of the weight analyses, kept in h
#   router_sim   rows: similarity blk.L.router.centroids, sigmoid / dynamic-k blk.L.router.w1;
#                mlp and oracle: none (skipped); R^2 over the pairs where both are finite
#   h            gated: act(x Wg^T) * (x Wu^T); plain: act(x Wu^T + b1); y_e = h_e Wd_e^T
#   scores       similarity: normalise(x) C^T; sigmoid: sigmoid(x W1^T); mlp:
#                tanh(normalise(x) W1^T) W2^T; dynamic-k: exp(x W1^T + b1);
#                oracle (--oracle, or the export's router): per expert sum of h (plain ReLU FFN)
#                or of |h| (otherwise)
#   chosen       the top_k experts by score (ties: lower id); dynamic-k: the fewest experts in
#                descending score whose scores reach tau * the row total, clamped to [min_k, top_k]
#   usage        share = count / total selections; overlap_next = mean |S & S'| / min(|S|, |S'|)
#                (layers of equal E only, as the transition matrix); mean_k = mean |S|

def _act(name, x):
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("silu", "swish"):
        return x / (1 + np.exp(-x))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        from scipy.special import erf
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    raise SystemExit("analyze_ref: unknown activation " + name)


def _unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _dynamic_k(s, tau, min_k, max_k):
    n, E = s.shape
    chosen = np.zeros((n, E), np.uint8)
    for t in range(n):
        order = np.argsort(-s[t], kind="stable")
        c = np.cumsum(s[t][order])
        reached = c >= tau * s[t].sum()
        k = int(np.argmax(reached)) + 1 if reached.any() else E
        k = min(max(k, min_k), max_k)
        chosen[t, order[:k]] = 1
    return chosen


def export_static(w, l, E, gated, rows, out, info, match_max=1024):
    from scipy.stats import linregress
    site = "blk.%d" % l
    names = ("gate", "up", "down") if gated else ("up", "down")
    ex = []
    for e in range(E):
        p = "%s.experts.%d." % (site, e)
        d = {"up": w[p + "up.weight"].astype(np.float64), "down": w[p + "down.weight"].astype(np.float64)}
        if gated:
            d["gate"] = w[p + "gate.weight"].astype(np.float64)
        ex.append(d)
    sizes = [ex[e]["up"].shape[0] for e in range(E)]
    equal = len(set(sizes)) == 1
    info["experts"] = E
    info["expert_sizes"] = sizes
    flat, mean = {}, {}
    for name in names:
        m = np.full((E, E), np.nan)
        for i in range(E):
            for j in range(E):
                if sizes[i] == sizes[j]:
                    m[i, j] = cos_matrix(ex[i][name].reshape(1, -1), ex[j][name].reshape(1, -1))[0, 0]
        flat[name] = m
        means = np.stack([ex[e][name].mean(1) if name == "down" else ex[e][name].mean(0) for e in range(E)])
        mean[name] = cos_matrix(means, means)
        out.append((site + ".sim." + name, "F64", flat[name]))
        out.append((site + ".mean_sim." + name, "F64", mean[name]))
    iu = np.triu_indices(E, 1)
    if rows is not None:
        rs = cos_matrix(rows.astype(np.float64), rows.astype(np.float64))
        out.append((site + ".router_sim", "F64", rs))

        def r2(x):
            ok = np.isfinite(x[iu]) & np.isfinite(rs[iu])
            if ok.sum() < 2 or np.ptp(x[iu][ok]) == 0 or np.ptp(rs[iu][ok]) == 0:
                return None
            return float(linregress(x[iu][ok], rs[iu][ok]).rvalue ** 2)
        info["router_r2"] = {"sim": {n: r2(flat[n]) for n in names}, "mean_sim": {n: r2(mean[n]) for n in names}}
    else:
        info["router_r2"] = None
    expl = None
    if equal:
        allflat = np.stack([np.concatenate([ex[e][n].ravel() for n in names]) for e in range(E)])
        sc, expl = pca2(allflat)
        out.append((site + ".pca.experts", "F64", sc))
    neurons = [np.concatenate([ex[e][n].T if n == "down" else ex[e][n] for n in names], 1) for e in range(E)]
    C = ex[0]["up"].shape[1]
    sc_n, expl_n = pca2(np.concatenate(neurons, 0))
    out.append((site + ".pca.neurons", "F64", sc_n))
    out.append((site + ".pca.neuron_expert", "I32", np.repeat(np.arange(E), sizes).astype(np.int32)))
    info["pca_explained"] = {"experts": expl, "neurons": expl_n}
    if max(sizes) > match_max:
        return
    P = len(names)
    msim = np.full((E, E), np.nan)
    mproj = np.full((P, E, E), np.nan)
    tau = np.full((E, E), np.nan)
    perm = np.zeros((E, E, sizes[0]), np.int32) if equal else None
    for i in range(E):
        for j in range(E):
            if sizes[i] != sizes[j]:
                continue
            p, msim[i, j], mproj[:, i, j], tau[i, j] = match_pair(neurons[i], neurons[j], C, i == j)
            if equal:
                perm[i, j] = p
    out.append((site + ".match_sim", "F64", msim))
    for q, name in enumerate(names):
        out.append((site + ".match_sim." + name, "F64", mproj[q]))
    out.append((site + ".match_tau", "F64", tau))
    if equal:
        out.append((site + ".match_perm", "I32", perm))


def export_main(argv):
    ap = argparse.ArgumentParser(prog="analyze_ref.py export")
    ap.add_argument("moe")
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fire-eps", type=float, default=0.0)
    ap.add_argument("--oracle", action="store_true")
    a = ap.parse_args(argv)
    with open(os.path.join(a.moe, "config.json")) as f:
        cfg = json.load(f)
    blk = cfg["moefication"]
    act = cfg.get("hidden_act", cfg.get("activation_function", "relu"))
    w, _ = st_io.load(os.path.join(a.moe, "moe.safetensors"))
    xs, _ = st_io.load(a.inputs)
    kind = "oracle" if a.oracle else blk["router"]
    out, sites = [], {}
    gaps = {"score": np.inf, "norm": np.inf, "fire": np.inf}
    chosen_by = []
    hits_total, N, rank_total, same_e = 0, None, None, True
    layers = blk["layers"]
    for idx, l in enumerate(layers):
        site = "blk.%d" % l
        E, K = blk["experts"][idx], blk["top_k"][idx]
        gated = (site + ".experts.0.gate.weight") in w
        rk = blk["router"]
        rows = None
        if rk == "similarity":
            rows = w[site + ".router.centroids"]
        elif rk in ("sigmoid", "dynamic-k"):
            rows = w[site + ".router.w1"]
        info = {"router": rk, "shared_expert": int(w[site + ".shared.up.weight"].shape[0]) if (site + ".shared.up.weight") in w else 0}
        export_static(w, l, E, gated, rows, out, info)
        sites[site] = info
        # Dynamic analyses on the given FFN inputs.
        x = xs[site + ".x"].astype(np.float64)
        n = x.shape[0]
        N = n if N is None else N
        hs, ys, sizes = [], [], []
        for e in range(E):
            p = "%s.experts.%d." % (site, e)
            up = w[p + "up.weight"].astype(np.float64)
            if gated:
                h = _act(act, x @ w[p + "gate.weight"].astype(np.float64).T) * (x @ up.T)
            else:
                b = w[p + "up.bias"].astype(np.float64) if (p + "up.bias") in w else 0.0
                h = _act(act, x @ up.T + b)
            hs.append(h)
            sizes.append(h.shape[1])
            ys.append(h @ w[p + "down.weight"].astype(np.float64).T)
        plain_relu = (not gated) and act == "relu"
        mass = np.stack([(h if plain_relu else np.abs(h)).sum(1) for h in hs], 1)
        if kind == "oracle":
            scores = mass
        elif kind == "similarity":
            scores = _unit(x) @ w[site + ".router.centroids"].astype(np.float64).T
        elif kind == "sigmoid":
            scores = 1 / (1 + np.exp(-(x @ w[site + ".router.w1"].astype(np.float64).T)))
        elif kind == "mlp":
            scores = np.tanh(_unit(x) @ w[site + ".router.w1"].astype(np.float64).T) @ w[site + ".router.w2"].astype(np.float64).T
        elif kind == "dynamic-k":
            scores = np.exp(x @ w[site + ".router.w1"].astype(np.float64).T + w[site + ".router.b1"].astype(np.float64))
        else:
            raise SystemExit("analyze_ref: unknown router " + kind)
        if kind == "dynamic-k":
            chosen = _dynamic_k(scores, blk["dynamic_k"]["tau"][idx], blk["dynamic_k"]["min_k"][idx], K)
        else:
            chosen = np.zeros((n, E), np.uint8)
            np.put_along_axis(chosen, np.argsort(-scores, axis=1, kind="stable")[:, :K], 1, 1)
        fired = []
        for e in range(E):
            routed = chosen[:, e] == 1
            f = np.zeros(sizes[e], bool)
            if routed.any():
                ah = np.abs(hs[e][routed])
                f = (ah > a.fire_eps).any(0)
                gaps["fire"] = min(gaps["fire"], float(np.abs(ah - a.fire_eps).min()))
            fired.append(f.mean())
        d, counts, hits = layer_stats(site, scores, np.stack(ys, 1), chosen, out, gaps, "score")
        if rank_total is not None and rank_total.shape != counts.shape:
            same_e = False
        if same_e:
            rank_total = counts if rank_total is None else rank_total + counts
        hits_total += hits
        d["mean_k"] = float(chosen.sum(1).mean())
        out.append((site + ".channel_usage", "F64", np.array(fired, np.float64)))
        info["dynamic"] = d
        chosen_by.append((l, chosen))
    for (l, ca), (nx, cb) in zip(chosen_by, chosen_by[1:]):
        d = sites["blk.%d" % l]["dynamic"]
        d["next"] = "blk.%d" % nx
        if ca.shape[1] != cb.shape[1]:
            d["overlap_next"] = None
            continue
        both = (ca & cb).sum(1).astype(np.float64)
        d["overlap_next"] = float((both / np.minimum(ca.sum(1), cb.sum(1))).mean())
        out.append(("blk.%d.transition" % l, "I64", ca.T.astype(np.int64) @ cb.astype(np.int64)))
    if same_e:
        out.append(("rank_counts", "I64", rank_total))
    # moefy recomputes the layers in float64 from the given inputs: the ranks, choices and
    # channel usage agree exactly unless a deciding margin is near float64 rounding.
    if gaps["score"] < 1e-9 or gaps["norm"] < 1e-9 or gaps["fire"] < 1e-9:
        raise SystemExit("analyze_ref export: a deciding margin is too small for an exact comparison: %s" % gaps)
    info_all = {"sites": sites, "tokens": N, "top1_norm_share": hits_total / (N * len(layers)), "gaps": gaps,
                "router": kind}
    st_io.write(a.out, out, {"reference": "scripts/ref/analyze_ref.py export"})
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(info_all, f, indent=1)
    print("analyze_ref export: %d layers, %d tokens, router %s, gaps %s" % (len(layers), N, kind, gaps))
    return 0

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ids-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fire-eps", type=float, default=0.0)
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    w = moe_native_ref.load_weights(a.model)
    c = moe_native_ref.moe_config(cfg)
    layers = [l for l in range(c["L"]) if c["layers"][l]]
    with open(a.ids_file) as f:
        seqs = [[int(t) for t in line.split()] for line in f if line.strip()]
    out, sites = [], {}
    for l in layers:
        sites["blk.%d" % l] = {}
        static(cfg, w, l, c["E"], out, sites["blk.%d" % l])
    info = {"sites": sites}
    dynamic(cfg, w, layers, seqs, a.fire_eps, out, info, sites)
    st_io.write(a.out, out, {"reference": "scripts/ref/analyze_ref.py"})
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print("analyze_ref: %d layers, %d tokens, gaps %s" % (len(layers), info["tokens"], info["gaps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
