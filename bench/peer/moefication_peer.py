#!/usr/bin/env python3
"""The MoEfication expert-construction recipe as researchers run it in Python,
written for this project from the description in Zhang et al., "MoEfication:
Transformer Feed-forward Layers are Mixtures of Experts" (Findings of ACL 2022),
section 3 and its released code's described steps. Used by bench/bench_peer.cpp
as the peer pipeline; nothing here is called by the product.

Stages, each timed with time.perf_counter() (process wall clock):
  binary   active mask h > 0 as float32, co-activation counts A^T A (torch.mm)
  soft     relu(h) in consecutive 8-token blocks, sum over blocks of
           min(1, R_b^T R_b) (torch.bmm on groups of blocks); optionally timed
           on the first --soft-tokens tokens and scaled to T (reported as such)
  graph    MoEfication's integer graph from the binary counts: q = the first
           non-zero of the 10th, 20th, ... 90th percentiles of all entries,
           weight floor(C_ij / (0.99 q)), zero-weight edges and the diagonal
           dropped; written as a METIS .graph file by Python, partitioned by
           the gpmetis binary into E parts, then rebalanced to exactly T/E
           neurons per part by moving random members of over-full parts to
           random under-full parts
  kmeans   scikit-learn KMeans (k-means++, --restarts inits) on the
           L2-normalised rows of W1, then an exact equal-size assignment:
           every centroid replicated d_ff/E times and scipy's
           linear_sum_assignment on the squared distances

usage: moefication_peer.py --act ACT.npy --w1 W1.npy --experts E --out DIR
                           [--soft-tokens N] [--threads K] [--restarts R] [--seed S]
                           [--kmeans-seeds N] [--repeats R]
--repeats R runs the binary, soft and graph stages R times each and reports
the medians (binary_s, soft_slice_s, graph_s) with every run's time.
Writes DIR/coact.npy (int32 [n, n]), DIR/soft.npy (float32, the timed slice),
DIR/labels_metis.npy, DIR/labels_kmeans.npy (int32 [n]; the first seed's,
and DIR/labels_kmeans_I.npy for the I-th of --kmeans-seeds fits) and prints one JSON
line of timings on stdout.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans


def stage_binary(h):
    a = (torch.from_numpy(h) > 0).to(torch.float32)
    c = torch.mm(a.t(), a)
    return c.to(torch.int32).numpy()


def stage_soft(h, tokens):
    n = h.shape[1]
    r = torch.relu(torch.from_numpy(h[:tokens])).reshape(-1, 8, n)
    s = torch.zeros(n, n)
    group = max(1, (256 << 20) // (n * n * 4))  # blocks per bmm: at most 256 MiB of products
    for b0 in range(0, r.shape[0], group):
        blk = r[b0:b0 + group]
        s += torch.bmm(blk.transpose(1, 2), blk).clamp_(max=1.0).sum(0)
    return s.numpy()


def metis_graph_file(c, path):
    """MoEfication's percentile-thresholded integer weights, METIS format (fmt 001)."""
    c = c.astype(np.float64)
    q = 0.0
    for p in range(10, 100, 10):
        q = np.percentile(c, p)
        if q > 0:
            break
    if q <= 0:
        q = 1.0
    w = np.floor(c / (0.99 * q)).astype(np.int64)
    np.fill_diagonal(w, 0)
    n = w.shape[0]
    lines = []
    edges = 0
    for i in range(n):
        nz = np.nonzero(w[i])[0]
        edges += len(nz)
        pairs = np.empty(2 * len(nz), dtype=np.int64)
        pairs[0::2] = nz + 1
        pairs[1::2] = w[i, nz]
        lines.append(" ".join(map(str, pairs.tolist())))
    with open(path, "w") as f:
        f.write("%d %d 001\n" % (n, edges // 2))
        f.write("\n".join(lines))
        f.write("\n")
    return edges // 2


def rebalance_random(labels, experts, rng):
    n = len(labels)
    cap = n // experts
    labels = labels.copy()
    sizes = np.bincount(labels, minlength=experts)
    over = [e for e in range(experts) if sizes[e] > cap]
    pool = []
    for e in over:
        members = np.nonzero(labels == e)[0]
        pool.extend(rng.choice(members, sizes[e] - cap, replace=False).tolist())
    under = []
    for e in range(experts):
        under.extend([e] * max(0, cap - sizes[e]))
    rng.shuffle(under)
    for i, e in zip(pool, under):
        labels[i] = e
    return labels


def stage_graph(c, experts, out, seed):
    path = os.path.join(out, "coact.graph")
    edges = metis_graph_file(c, path)
    subprocess.run(["gpmetis", "-seed=%d" % seed, path, str(experts)], check=True, stdout=subprocess.DEVNULL)
    labels = np.loadtxt(path + ".part." + str(experts), dtype=np.int64)
    labels = rebalance_random(labels, experts, np.random.default_rng(seed))
    return labels.astype(np.int32), edges


def stage_kmeans(w1, experts, restarts, seed):
    x = w1 / np.maximum(np.linalg.norm(w1, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=experts, n_init=restarts, random_state=seed).fit(x)
    cent = km.cluster_centers_
    size = x.shape[0] // experts
    xd, cd = x.astype(np.float64), cent.astype(np.float64)
    d2 = (xd * xd).sum(1)[:, None] - 2 * xd @ cd.T + (cd * cd).sum(1)[None, :]
    cost = np.repeat(d2, size, axis=1)  # [n, n]: column e * size + r is a slot of centroid e
    rows, cols = linear_sum_assignment(cost)
    labels = np.empty(x.shape[0], dtype=np.int32)
    labels[rows] = cols // size
    return labels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--act", required=True)
    p.add_argument("--w1", required=True)
    p.add_argument("--experts", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--soft-tokens", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kmeans-seeds", type=int, default=1,
                   help="k-means fits, one per seed from --seed on (kmeans_s is their median)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of the binary, soft and graph stages (their *_s is the median)")
    p.add_argument("--stages", default="binary,soft,graph,kmeans")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    stages = a.stages.split(",")
    h = np.load(a.act, mmap_mode=None).astype(np.float32, copy=False)
    w1 = np.load(a.w1).astype(np.float32, copy=False)
    T = h.shape[0]
    res = {"tokens": T, "d_ff": h.shape[1], "experts": a.experts, "threads": torch.get_num_threads()}
    repeats = max(1, a.repeats)
    res["repeats"] = repeats

    def timed(fn):
        """Runs fn `repeats` times: (its last result, the run times)."""
        runs, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            runs.append(time.perf_counter() - t0)
        return out, runs

    c = None
    if "binary" in stages or "graph" in stages:
        c, runs = timed(lambda: stage_binary(h))
        res["binary_runs_s"] = runs
        res["binary_s"] = float(np.median(runs))
        np.save(os.path.join(a.out, "coact.npy"), c)
    if "soft" in stages:
        st = a.soft_tokens if a.soft_tokens > 0 else T
        st = max(8, min(T, st) // 8 * 8)
        s, runs = timed(lambda: stage_soft(h, st))
        res["soft_slice_tokens"] = st
        res["soft_slice_runs_s"] = runs
        res["soft_slice_s"] = float(np.median(runs))
        res["soft_s"] = res["soft_slice_s"] * (T // 8 * 8) / st
        np.save(os.path.join(a.out, "soft.npy"), s)
    if "graph" in stages:
        (labels, edges), runs = timed(lambda: stage_graph(c, a.experts, a.out, a.seed))
        res["graph_runs_s"] = runs
        res["graph_s"] = float(np.median(runs))
        res["graph_edges"] = int(edges)
        np.save(os.path.join(a.out, "labels_metis.npy"), labels)
    if "kmeans" in stages:
        # One fit per seed (seed, seed + 1, ...): a single timing of a stage
        # this short is at the mercy of the scheduler and of first-call costs,
        # so the median is reported, with every run's time.
        runs = []
        for i in range(a.kmeans_seeds):
            t0 = time.perf_counter()
            labels = stage_kmeans(w1, a.experts, a.restarts, a.seed + i)
            runs.append(time.perf_counter() - t0)
            np.save(os.path.join(a.out, "labels_kmeans_%d.npy" % i), labels)
            if i == 0:
                np.save(os.path.join(a.out, "labels_kmeans.npy"), labels)
        res["kmeans_runs_s"] = runs
        res["kmeans_s"] = float(np.median(runs))
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
