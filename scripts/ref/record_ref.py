"""Independent numpy reference for `moefy record` and `moefy split` metrics.

  record_ref.py make-ids OUT.safetensors --n N --t T --vocab V [--seed S] [--categories C] [--ragged]
      random token ids (optionally ragged lengths and category labels) as a pre-tokenised corpus.
  record_ref.py check-record --cli MOEFY --model DIR --ids IDS --rec REC --batch B [--active RULE] [--soft]
      runs `moefy forward --dump` on the same batches, recomputes every statistic from the dumped
      ffn_act/ffn_in in numpy and compares with REC (integers exactly; sums to 1e-9 relative).
  record_ref.py check-split --rec REC --part PART [--part2 PART2]
      recomputes sizes, coact_inside, edge_cut, balance and recall@k of PART from REC, and the
      ARI/NMI between PART and PART2.

Semantics come from docs/formats.md and docs/recording-and-splitting.md, not from the C++ code.
Exit status 1 on any mismatch; every comparison prints its max difference.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io as rec_st  # noqa: E402

FAIL = []


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAIL.append(name)


def cmp_exact(name, got, want):
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        report(name, False, f"shape {got.shape} vs {want.shape}")
        return
    d = np.abs(got.astype(np.int64) - want.astype(np.int64)).max() if got.size else 0
    report(name, d == 0, f"max abs diff {d}")


def cmp_close(name, got, want, rtol):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        report(name, False, f"shape {got.shape} vs {want.shape}")
        return
    d = np.abs(got - want)
    tol = rtol * np.maximum(1.0, np.abs(want))
    report(name, bool((d <= tol).all()), f"max abs diff {d.max() if d.size else 0:.3e} (rtol {rtol})")


def make_ids(a):
    rng = np.random.default_rng(a.seed)
    ids = rng.integers(0, a.vocab, size=(a.n, a.t)).astype(np.int32)
    t = {"token_ids": ids, "doc_id": (np.arange(a.n) // 2).astype(np.int64)}
    meta = {}
    if a.ragged:
        t["lengths"] = rng.integers(max(2, a.t // 3), a.t + 1, size=a.n).astype(np.int32)
    if a.categories:
        t["category"] = (rng.integers(-1, a.categories, size=a.n)).astype(np.int32)
        meta["categories"] = json.dumps([f"cat{i}" for i in range(a.categories)])
    rec_st.save(a.out, t, meta)


def active_mask(h, rule):
    if rule == "positive":
        return h > 0
    if rule.startswith("threshold:"):
        return np.abs(h) > float(rule.split(":")[1])
    if rule.startswith("top:"):
        p = float(rule.split(":")[1])
        n = h.shape[1]
        k = max(1, min(n, int(math.floor(p * n + 0.5))))
        a = np.abs(h)
        m = np.zeros_like(h, dtype=bool)
        # the k largest |h|; ties broken by lower neuron index (stable sort on -|h|)
        order = np.argsort(-a, axis=1, kind="stable")[:, :k]
        np.put_along_axis(m, order, True, axis=1)
        return m
    raise SystemExit("unknown rule " + rule)


def check_record(a):
    ids, meta = rec_st.load(a.ids)
    tok = ids["token_ids"]
    N, T = tok.shape
    lengths = ids.get("lengths", np.full(N, T))
    docs = ids.get("doc_id", np.arange(N))
    cats = ids.get("category", np.full(N, -1))
    ncat = len(json.loads(meta["categories"])) if "categories" in meta else 0
    man = json.load(open(os.path.join(a.rec, "manifest.json")))
    layers = man["layers"]
    stats, _ = rec_st.load(os.path.join(a.rec, "stats.safetensors"))
    co = rec_st.load_coact(a.rec)  # full [n, n] matrices (format version 1 or 2)
    samples, _ = rec_st.load(os.path.join(a.rec, "samples.safetensors"))
    acts = {L: [] for L in layers}
    ins = {L: [] for L in layers}
    seq_of_row = []
    tmp = tempfile.mkdtemp()
    for b0 in range(0, N, a.batch):
        args = [a.cli, "forward", a.model]
        rows = range(b0, min(N, b0 + a.batch))
        for r in rows:
            args += ["--ids", ",".join(str(int(x)) for x in tok[r, :lengths[r]])]
        dump = os.path.join(tmp, f"dump{b0}.safetensors")
        subprocess.run(args + ["--dump", dump, "--json"], check=True, stdout=subprocess.DEVNULL)
        d, _ = rec_st.load(dump)
        for q, r in enumerate(rows):
            for L in layers:
                acts[L].append(d[f"blk.{L}.ffn_act"][q, :lengths[r]])
                ins[L].append(d[f"blk.{L}.ffn_in"][q, :lengths[r]])
            seq_of_row.append(r)
    total = int(lengths.sum())
    report("tokens", man["tokens"] == total, f"{man['tokens']} vs {total}")
    for L in layers:
        h = np.concatenate(acts[L]).astype(np.float32)  # [tokens, d_ff]
        m = active_mask(h, a.active)
        n = h.shape[1]
        pre = f"blk.{L}."
        cmp_exact(pre + "count", stats[pre + "count"], m.sum(0))
        cmp_close(pre + "sum", stats[pre + "sum"], h.astype(np.float64).sum(0), 1e-9)
        cmp_close(pre + "sumsq", stats[pre + "sumsq"], (h.astype(np.float64) ** 2).sum(0), 1e-9)
        cmp_exact(pre + "max (bitwise)", stats[pre + "max"].view(np.int32), h.max(0).view(np.int32))
        cmp_exact(pre + "active_hist", stats[pre + "active_hist"], np.bincount(m.sum(1), minlength=n + 1))
        tc = np.concatenate([np.full(lengths[r], cats[r]) for r in range(N)])
        cc = np.zeros((ncat, n), np.int64)
        ct = np.zeros(ncat, np.int64)
        for c in range(ncat):
            cc[c] = m[tc == c].sum(0)
            ct[c] = (tc == c).sum()
        cmp_exact(pre + "category_count", stats[pre + "category_count"], cc)
        cmp_exact(pre + "category_tokens", stats[pre + "category_tokens"], ct)
        mi = m.astype(np.int64)
        cmp_exact(pre + "coact", co[pre + "coact"], mi.T @ mi)
        if a.soft:
            r = np.maximum(h, 0).astype(np.float64)
            soft = np.zeros((n, n))
            start = 0
            for s in range(N):
                ln = lengths[s]
                for t0 in range(0, ln, 8):
                    blk = r[start + t0:start + min(ln, t0 + 8)]
                    soft += np.minimum(1.0, blk.T @ blk)
                start += ln
            cmp_close(pre + "coact_soft", co[pre + "coact_soft"], soft, 1e-4)
        S = samples["token_id"].shape[0]
        if S == total:  # every token kept, in stream order
            cmp_exact(pre + "samples ffn_act (F16 bits)", samples[pre + "ffn_act"].view(np.int16),
                      h.astype(np.float16).view(np.int16))
            hin = np.concatenate(ins[L]).astype(np.float32)
            cmp_exact(pre + "samples ffn_in (F16 bits)", samples[pre + "ffn_in"].view(np.int16),
                      hin.astype(np.float16).view(np.int16))
    S = samples["token_id"].shape[0]
    if S == total:
        cmp_exact("samples token_id", samples["token_id"], np.concatenate([tok[r, :lengths[r]] for r in range(N)]))
        cmp_exact("samples doc_id", samples["doc_id"], np.concatenate([np.full(lengths[r], docs[r]) for r in range(N)]))
        cmp_exact("samples position", samples["position"], np.concatenate([np.arange(lengths[r]) for r in range(N)]))
        cmp_exact("samples category", samples["category"], np.concatenate([np.full(lengths[r], cats[r]) for r in range(N)]))
    else:
        report("samples size", S == min(total, man["options"]["samples"]), f"{S}")


def ari(x, y):
    from math import comb
    n = len(x)
    cont = {}
    for i, j in zip(x, y):
        cont[(i, j)] = cont.get((i, j), 0) + 1
    a = np.bincount(x)
    b = np.bincount(y)
    sij = sum(comb(v, 2) for v in cont.values())
    sa = sum(comb(int(v), 2) for v in a)
    sb = sum(comb(int(v), 2) for v in b)
    exp = sa * sb / comb(n, 2)
    mx = (sa + sb) / 2
    return 1.0 if mx == exp else (sij - exp) / (mx - exp)


def nmi(x, y):
    n = len(x)
    cont = {}
    for i, j in zip(x, y):
        cont[(i, j)] = cont.get((i, j), 0) + 1
    a = np.bincount(x) / n
    b = np.bincount(y) / n
    mi = sum((v / n) * math.log((v / n) / (a[i] * b[j])) for (i, j), v in cont.items())
    ha = -sum(p * math.log(p) for p in a if p > 0)
    hb = -sum(p * math.log(p) for p in b if p > 0)
    den = (ha + hb) / 2
    return 1.0 if den <= 0 else max(0.0, mi / den)


def check_split(a):
    part = json.load(open(os.path.join(a.part, "partition.json")))
    labs, _ = rec_st.load(os.path.join(a.part, "labels.safetensors"))
    co = rec_st.load_coact(a.rec)  # full [n, n] matrices (format version 1 or 2)
    samples, _ = rec_st.load(os.path.join(a.rec, "samples.safetensors"))
    E = part["experts"]
    # Site names (docs/formats.md "Recording", Sites): blk.L when absent; metrics are keyed by the bare
    # layer for whole single-stack sites and by the site name otherwise (expert sites blk.L.exp.E).
    names = part.get("sites", [f"blk.{L}" for L in part["layers"]])
    for L, site in zip(part["layers"], names):
        whole = site.startswith("blk.") and site.count(".") == 1
        key = str(L) if whole else site
        lab = labs[f"{site}.labels"].astype(np.int64)
        perm = labs[f"{site}.perm"]
        sizes = np.bincount(lab, minlength=E)
        report(f"{site} sizes equal", sizes.min() == sizes.max() == len(lab) // E, f"min {sizes.min()} max {sizes.max()}")
        cmp_exact(f"{site} perm", perm, np.argsort(lab, kind="stable"))
        C = co[f"{site}.coact"].astype(np.float64)
        iu = np.triu_indices(C.shape[0], 1)
        same = lab[iu[0]] == lab[iu[1]]
        tot = C[iu].sum()
        inside = C[iu][same].sum()
        m = part["metrics"][key]
        cmp_close(f"{site} coact_inside", m["coact_inside"], inside / tot if tot > 0 else 0, 1e-9)
        cmp_close(f"{site} edge_cut", m["edge_cut"], tot - inside, 1e-9)
        cmp_close(f"{site} balance", m["balance"], sizes.max() / (len(lab) / E), 1e-12)
        h = np.abs(samples[f"{site}.ffn_act"].astype(np.float64))
        if f"{site}.routed" in samples:  # an expert site: only the sampled tokens routed to it
            h = h[samples[f"{site}.routed"] == 1]
        onehot = np.zeros((len(lab), E))
        onehot[np.arange(len(lab)), lab] = 1
        mass = h @ onehot
        tot_t = mass.sum(1)
        keep = tot_t > 0
        srt = -np.sort(-mass[keep], axis=1)
        if len(h) == 0:  # no sampled token (routed to the expert): no recall curve
            cmp_close(f"{site} recall_at_k", m["recall_at_k"], np.zeros(0), 1e-5)
            continue
        rec = (np.cumsum(srt, axis=1) / tot_t[keep, None]).mean(0)
        cmp_close(f"{site} recall_at_k", m["recall_at_k"], np.minimum(rec, 1.0), 1e-5)
    if a.part2:
        labs2, _ = rec_st.load(os.path.join(a.part2, "labels.safetensors"))
        out = json.loads(subprocess.run([a.cli, "split", "--compare", a.part, a.part2, "--json"], check=True,
                                        capture_output=True, text=True).stdout)
        for g in out["agreement"]:
            L = g["layer"]
            x = labs[f"blk.{L}.labels"].astype(np.int64)
            y = labs2[f"blk.{L}.labels"].astype(np.int64)
            cmp_close(f"layer {L} agreement ARI", g["ari"], ari(x, y), 1e-9)
            cmp_close(f"layer {L} agreement NMI", g["nmi"], nmi(x, y), 1e-9)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-ids")
    m.add_argument("out")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--t", type=int, required=True)
    m.add_argument("--vocab", type=int, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--categories", type=int, default=0)
    m.add_argument("--ragged", action="store_true")
    c = sub.add_parser("check-record")
    c.add_argument("--cli", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--ids", required=True)
    c.add_argument("--rec", required=True)
    c.add_argument("--batch", type=int, required=True)
    c.add_argument("--active", default="positive")
    c.add_argument("--soft", action="store_true")
    s = sub.add_parser("check-split")
    s.add_argument("--cli", default="")
    s.add_argument("--rec", required=True)
    s.add_argument("--part", required=True)
    s.add_argument("--part2", default="")
    a = p.parse_args()
    {"make-ids": make_ids, "check-record": check_record, "check-split": check_split}[a.cmd](a)
    if FAIL:
        print("FAILED:", ", ".join(FAIL))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
