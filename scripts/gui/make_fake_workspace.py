#!/usr/bin/python3
"""Writes a synthetic MoEfy workspace in exactly the artefact formats of
docs/formats.md, for GUI development and the GUI tests.

    /usr/bin/python3 scripts/gui/make_fake_workspace.py OUT_DIR [--seed 0]

Contents: a tiny random GPT-2 checkpoint (4 layers, d_model 64, d_ff 256), a
small directory corpus (3 categories), one recording whose co-activation has a
planted block structure (16 latent groups of 16 neurons, scrambled), three
partitions (coact = the planted groups, kmeans = half right, random), two
routers (oracle, similarity), an eval.json and a front.json (fronts/front-coact).

The statistics are computed from the synthetic activations exactly as the
recorder defines them (counts of h > 0, sums, co-activation counts), so every
number the GUI shows is consistent with the data here.
"""
import argparse
import json
import os
import struct

import numpy as np

LAYERS, D_MODEL, D_FF, GROUPS, VOCAB = 4, 64, 256, 16, 512
CATS = ["fiction_general", "learned", "press_reportage"]
WORDS = ("the of and to a in is was he for it with as his on be at by had that not are but from or have an "
         "they which one you were her all she there would their we him been has when who will more no if out "
         "so said what up its about into than them can only other new some could time these two may then do "
         "first any my now such like our over man me even most made after also did many before must through "
         "back years where much your way well down should because each just those people how too little state "
         "good very make world still own see men work long get here between both life being under never day "
         "same another know while last might us great old year off come since against go came right used take "
         "three").split()


def write_safetensors(path, tensors, metadata=None):
    header = {}
    offset = 0
    blobs = []
    dt = {np.float32: "F32", np.float64: "F64", np.float16: "F16", np.int64: "I64", np.int32: "I32"}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        b = arr.tobytes()
        header[name] = {"dtype": dt[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def make_model(dir_, rng):
    os.makedirs(dir_, exist_ok=True)
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": LAYERS, "n_embd": D_MODEL,
           "n_head": 4, "n_inner": D_FF, "vocab_size": VOCAB, "n_positions": 128,
           "activation_function": "relu", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    write_json(os.path.join(dir_, "config.json"), cfg)
    t = {}
    r = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float32)
    t["transformer.wte.weight"] = r(VOCAB, D_MODEL)
    t["transformer.wpe.weight"] = r(128, D_MODEL)
    t["transformer.ln_f.weight"] = np.ones(D_MODEL, np.float32)
    t["transformer.ln_f.bias"] = np.zeros(D_MODEL, np.float32)
    for L in range(LAYERS):
        p = f"transformer.h.{L}."
        t[p + "ln_1.weight"] = np.ones(D_MODEL, np.float32)
        t[p + "ln_1.bias"] = np.zeros(D_MODEL, np.float32)
        t[p + "attn.c_attn.weight"] = r(D_MODEL, 3 * D_MODEL)
        t[p + "attn.c_attn.bias"] = np.zeros(3 * D_MODEL, np.float32)
        t[p + "attn.c_proj.weight"] = r(D_MODEL, D_MODEL)
        t[p + "attn.c_proj.bias"] = np.zeros(D_MODEL, np.float32)
        t[p + "ln_2.weight"] = np.ones(D_MODEL, np.float32)
        t[p + "ln_2.bias"] = np.zeros(D_MODEL, np.float32)
        t[p + "mlp.c_fc.weight"] = r(D_MODEL, D_FF)
        t[p + "mlp.c_fc.bias"] = np.zeros(D_FF, np.float32)
        t[p + "mlp.c_proj.weight"] = r(D_FF, D_MODEL)
        t[p + "mlp.c_proj.bias"] = np.zeros(D_MODEL, np.float32)
    write_safetensors(os.path.join(dir_, "model.safetensors"), t, {"format": "pt"})


def make_corpus(dir_, rng):
    for c, cat in enumerate(CATS):
        os.makedirs(os.path.join(dir_, cat), exist_ok=True)
        for d in range(3):
            sents = []
            for _ in range(12 + 4 * d):
                n = rng.integers(5, 14)
                w = [WORDS[(rng.integers(0, len(WORDS)) + 7 * c) % len(WORDS)] for _ in range(n)]
                sents.append(" ".join(w).capitalize() + ".")
            with open(os.path.join(dir_, cat, f"c{'kjb'[c]}{d + 1:02d}.txt"), "w") as f:
                f.write("\n".join(sents[:6]) + "\n\n" + "\n".join(sents[6:]) + "\n")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_tokenizer(model_dir, corpus_dir):
    """Trains a small byte-level BPE (GPT-2 style) on the corpus: 256 byte
    tokens + merges up to VOCAB - 1, and <|endoftext|> as the last id."""
    import re
    b2u = bytes_to_unicode()
    text = ""
    for root, _, files in sorted(os.walk(corpus_dir)):
        for fn in sorted(files):
            text += open(os.path.join(root, fn)).read() + "\n"
    pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")
    words = {}
    for w in pat.findall(text):
        key = tuple(b2u[b] for b in w.encode())
        words[key] = words.get(key, 0) + 1
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    merges = []
    while len(vocab) < VOCAB - 1:
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    eot = len(vocab)
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges}}
    write_json(os.path.join(model_dir, "tokenizer.json"), tok)
    return eot + 1


def synth_layer(rng, n_tok, cats, L):
    """Activations [n_tok, D_FF] with planted groups; returns (h, x, groups_of_neuron)."""
    scramble = rng.permutation(D_FF)
    group_of = np.empty(D_FF, np.int64)
    group_of[scramble] = np.repeat(np.arange(GROUPS), D_FF // GROUPS)
    emb = rng.standard_normal((GROUPS, D_MODEL)).astype(np.float32)
    # Categories prefer different groups (so category x expert usage has structure).
    pref = rng.dirichlet(np.ones(GROUPS) * 0.5, size=len(CATS))
    pref[:, 0] += 0.02  # a few groups barely used
    pref /= pref.sum(1, keepdims=True)
    h = np.zeros((n_tok, D_FF), np.float32)
    x = rng.standard_normal((n_tok, D_MODEL)).astype(np.float32) * 0.3
    density = 0.45 - 0.07 * L
    for t in range(n_tok):
        k = rng.integers(1, 4)
        gs = rng.choice(GROUPS, size=k, replace=False, p=pref[cats[t]])
        for g in gs:
            idx = np.nonzero(group_of == g)[0]
            on = idx[rng.random(len(idx)) < density + 0.3]
            h[t, on] = rng.gamma(2.0, 0.5, size=len(on))
            x[t] += emb[g]
        noise = rng.random(D_FF) < 0.015
        h[t, noise] = rng.gamma(1.0, 0.2, size=noise.sum())
    h[:, group_of == GROUPS - 1] *= (rng.random((n_tok, 1)) < 0.01)  # a nearly dead group
    dead = scramble[:3]
    h[:, dead] = 0.0  # dead neurons
    h[:, scramble[3]] = rng.gamma(2.0, 0.5, size=n_tok)  # always on
    return h, x, group_of


def labels_hash(labels):
    """The core's hashLabels (analysis/route/route_inputs.cpp): FNV-1a 64 over
    each layer's int32 labels (little-endian bytes), 0xff after each layer."""
    h = 1469598103934665603
    for lab in labels:
        for b in np.asarray(lab, dtype="<i4").tobytes():
            h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ 0xFF) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=3000)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    make_model(os.path.join(out, "model"), rng)
    make_corpus(os.path.join(out, "corpus"), rng)
    make_tokenizer(os.path.join(out, "model"), os.path.join(out, "corpus"))

    n_tok = a.tokens
    S = 400
    docs = rng.integers(0, 9, size=n_tok)
    cats = docs // 3
    stats, coact, samples = {}, {}, {}
    sample_idx = np.sort(rng.choice(n_tok, size=S, replace=False))
    samples["token_id"] = rng.integers(0, VOCAB, size=S).astype(np.int32)
    samples["doc_id"] = docs[sample_idx].astype(np.int64)
    samples["position"] = (sample_idx % 128).astype(np.int32)
    samples["category"] = cats[sample_idx].astype(np.int32)
    groups = {}
    acts = {}
    for L in range(LAYERS):
        h, x, g = synth_layer(rng, n_tok, cats, L)
        groups[L] = g
        acts[L] = (h[sample_idx], x[sample_idx])
        A = (h > 0)
        p = f"blk.{L}."
        stats[p + "count"] = A.sum(0).astype(np.int64)
        stats[p + "sum"] = h.astype(np.float64).sum(0)
        stats[p + "sumsq"] = (h.astype(np.float64) ** 2).sum(0)
        stats[p + "max"] = h.max(0).astype(np.float32)
        stats[p + "active_hist"] = np.bincount(A.sum(1), minlength=D_FF + 1).astype(np.int64)
        cc = np.zeros((len(CATS), D_FF), np.int64)
        ct = np.zeros(len(CATS), np.int64)
        for c in range(len(CATS)):
            cc[c] = A[cats == c].sum(0)
            ct[c] = (cats == c).sum()
        stats[p + "category_count"] = cc
        stats[p + "category_tokens"] = ct
        Ai = A.astype(np.int32)
        coact[p + "coact"] = (Ai.T @ Ai).astype(np.int32)
        samples[p + "ffn_in"] = x[sample_idx].astype(np.float16)
        samples[p + "ffn_act"] = h[sample_idx].astype(np.float16)

    ws = out
    rec = os.path.join(ws, "recordings", "rec-brown")
    os.makedirs(rec, exist_ok=True)
    write_safetensors(os.path.join(rec, "stats.safetensors"), stats)
    # Format version 1 (the full [n, n] co-activation matrices), on purpose: the
    # GUI tests keep the old format's reading path tested (moefy record writes
    # version 2, the packed upper triangles; docs/formats.md "Recording").
    write_safetensors(os.path.join(rec, "coact.safetensors"), coact)
    write_safetensors(os.path.join(rec, "samples.safetensors"), samples)
    fp = "0123456789abcdef"
    write_json(os.path.join(rec, "manifest.json"), {
        "format": "moefy-recording", "version": 1, "tool_version": "fake",
        "model": {"path": os.path.join(ws, "model"), "fingerprint": fp, "arch": "gpt2", "layers": LAYERS,
                  "d_model": D_MODEL, "d_ff": D_FF, "activation": "relu", "ffn_kind": "plain"},
        "corpus": {"path": os.path.join(ws, "corpus"), "kind": "dir", "categories": CATS},
        "tokens": n_tok, "sequences": n_tok // 128, "layers": list(range(LAYERS)),
        "options": {"seq_len": 128, "batch": 8, "active": {"rule": "positive", "tau": 0.0, "p": 0.0},
                    "soft_coact": False, "samples": S, "seed": a.seed, "split": "all"},
        "chunks_done": n_tok // 128})

    E = GROUPS
    def partition(kind, seed):
        prng = np.random.default_rng(100 + seed)
        labels = {}
        for L in range(LAYERS):
            if kind == "coact":
                lab = groups[L].copy()
            elif kind == "kmeans":
                lab = groups[L].copy()
                flip = prng.permutation(D_FF)[: D_FF // 2]
                lab[flip] = lab[prng.permutation(flip)]
            else:
                lab = np.repeat(np.arange(E), D_FF // E)[prng.permutation(D_FF)]
            labels[L] = lab.astype(np.int32)
        return labels

    def metrics(labels):
        m = {}
        for L in range(LAYERS):
            C = coact[f"blk.{L}.coact"].astype(np.float64)
            lab = labels[L]
            same = lab[:, None] == lab[None, :]
            off = ~np.eye(D_FF, dtype=bool)
            inside = C[same & off].sum() / max(C[off].sum(), 1)
            sizes = np.bincount(lab, minlength=E)
            h = np.abs(acts[L][0].astype(np.float64))
            mass = np.stack([h[:, lab == e].sum(1) for e in range(E)], 1)  # [S, E]
            srt = -np.sort(-mass, 1)
            tot = np.maximum(mass.sum(1), 1e-12)
            rec = [float((srt[:, :k].sum(1) / tot).mean()) for k in range(1, E + 1)]
            m[str(L)] = {"coact_inside": float(inside), "edge_cut": float(1 - inside),
                         "balance": float(sizes.max() / sizes.mean()), "recall_at_k": rec}
        return m

    parts = []
    for kind, seed in [("coact", 0), ("kmeans", 0), ("kmeans", 1), ("random", 0)]:
        labels = partition(kind, seed)
        pdir = os.path.join(ws, "partitions", f"{kind}-E{E}-s{seed}")
        os.makedirs(pdir, exist_ok=True)
        t = {}
        for L in range(LAYERS):
            t[f"blk.{L}.labels"] = labels[L]
            t[f"blk.{L}.perm"] = np.argsort(labels[L], kind="stable").astype(np.int32)
        write_safetensors(os.path.join(pdir, "labels.safetensors"), t)
        write_json(os.path.join(pdir, "partition.json"), {
            "format": "moefy-partition", "version": 1, "tool_version": "fake", "method": kind,
            "options": {"weighting": "count", "topk": 0, "restarts": 1}, "seed": seed, "experts": E,
            "expert_size": D_FF // E, "d_ff": D_FF, "layers": list(range(LAYERS)),
            "model_fingerprint": fp, "recording": rec, "metrics": metrics(labels)})
        parts.append((pdir, labels))

    coact_dir, coact_labels = parts[0]
    for kind in ["oracle", "similarity"]:
        rdir = os.path.join(ws, "routers", f"{kind}-coact")
        os.makedirs(rdir, exist_ok=True)
        t = {}
        if kind == "similarity":
            for L in range(LAYERS):
                h, x = acts[L]
                lab = coact_labels[L]
                mass = np.stack([h[:, lab == e].sum(1) for e in range(E)], 1)
                top = mass.argmax(1)
                cen = np.stack([x[top == e].mean(0) if (top == e).any() else np.zeros(D_MODEL) for e in range(E)])
                t[f"blk.{L}.centroids"] = cen.astype(np.float32)
            write_safetensors(os.path.join(rdir, "router.safetensors"), t)
        write_json(os.path.join(rdir, "router.json"), {
            "format": "moefy-router", "version": 1, "tool_version": "fake", "kind": kind,
            "top_k": [4] * LAYERS, "experts": [E] * LAYERS, "layers": list(range(LAYERS)), "model_fingerprint": fp,
            "partition": {"path": coact_dir, "labels_hash": labels_hash([coact_labels[L] for L in range(LAYERS)])},
            "training": {},
            "metrics": {str(L): {"mass_recall": 0.9 if kind == "oracle" else 0.7, "overlap": 1.0 if kind == "oracle" else 0.6}
                        for L in range(LAYERS)}})

    # Evaluation (docs/formats.md "Evaluation"): quality falls as fewer experts run; speed rises.
    edir = os.path.join(ws, "evaluations", "eval-coact")
    os.makedirs(edir, exist_ok=True)
    dense_ppl = 42.0
    dense_loss = float(np.log(dense_ppl))
    results = []
    for name, loss_scale in [("oracle-coact", 0.6), ("similarity-coact", 1.0), ("random-partition", 1.8)]:
        for k in [1, 2, 4, 8, 12, 16]:
            f = k / E
            loss = dense_loss + loss_scale * (1 - f) ** 2 * 0.9
            fwd = 1 / (0.35 + 0.65 * f)
            results.append({"router": name, "name": name, "fraction": f, "top_k": [k] * LAYERS, "loss": loss,
                            "perplexity": float(np.exp(loss)), "loss_delta": loss - dense_loss,
                            "top1_agreement": float(1 - 0.5 * loss_scale * (1 - f) ** 1.5),
                            "kl": float(loss_scale * (1 - f) ** 2 * 0.8), "layer_rel_error": [float(1 - f)] * LAYERS,
                            "positions": 20000,
                            "speed": {"forward_tokens_per_s": 5000 * fwd, "dense_forward_tokens_per_s": 5000.0,
                                      "forward_speedup": fwd, "generate_tokens_per_s": 80 * (1 + 0.6 * (fwd - 1)),
                                      "dense_generate_tokens_per_s": 80.0, "generate_speedup": 1 + 0.6 * (fwd - 1)}})
    write_json(os.path.join(edir, "eval.json"), {
        "format": "moefy-eval", "version": 1, "tool_version": "fake",
        "model": {"path": os.path.join(ws, "model"), "fingerprint": fp, "arch": "gpt2", "objective": "next-token"},
        "corpus": {"path": os.path.join(ws, "corpus"), "sequences": 100, "tokens": 20000, "seq_len": 128},
        "source": {"partition": coact_dir, "routers": [os.path.join(ws, "routers", "oracle-coact")]},
        "reference": {"name": "dense", "fraction": 1.0, "loss": dense_loss, "perplexity": dense_ppl,
                      "top1_agreement": 1.0, "kl": 0.0, "positions": 20000},
        "results": results})

    # Front (docs/formats.md "Front"): the methods at three FFN FLOP budgets.
    # Only front.json: the front's inner artefacts are not part of this
    # fixture (the Front view reads front.json alone; the scan does not
    # descend into a front).
    budgets = [0.125, 0.25, 0.5]
    methods, best_ppl = [], {}
    for name, router, scale, first in [("plain", "mlp", 1.0, 0), ("shared", "mlp", 0.7, 1),
                                       ("dynamic-k", "dynamic-k", 0.6, 1), ("bound", "topk-act", 0.3, 0)]:
        points = []
        for b in budgets[first:]:
            loss = dense_loss + scale * (1 - b) ** 2 * 0.9
            frac = b if name == "bound" else b * 0.94
            points.append({"budget": b, "ffn_flops_fraction": 0.5 + b / 2 if name == "bound" else frac,
                           "perplexity": float(np.exp(loss)), "top1_agreement": float(1 - 0.5 * scale * (1 - b) ** 1.5),
                           "fraction": frac, "mean_k": 0.0 if name == "bound" else frac * E * (0.8 if name == "dynamic-k" else 1.0)})
            if name != "bound" and (b not in best_ppl or points[-1]["perplexity"] < best_ppl[b][1]):
                best_ppl[b] = (name, points[-1]["perplexity"])
        m = {"name": name, "router": router, "eval": "eval/" + name, "sweep": [p["fraction"] for p in points],
             "unreached": budgets[:first], "points": points}
        if name != "bound":
            m["partition"] = "partitions/" + ("plain" if name == "plain" else "shared")
            m["router_dir"] = "routers/" + {"plain": "plain-mlp", "shared": "shared-mlp", "dynamic-k": "shared-dynamic-k"}[name]
        methods.append(m)
    plain_ppl = {p["budget"]: p["perplexity"] for p in methods[0]["points"]}
    os.makedirs(os.path.join(ws, "fronts", "front-coact"), exist_ok=True)
    write_json(os.path.join(ws, "fronts", "front-coact", "front.json"), {
        "format": "moefy-front", "version": 1, "tool_version": "fake",
        "model": {"path": os.path.join(ws, "model"), "fingerprint": fp},
        "train_corpus": os.path.join(ws, "corpus"), "heldout_corpus": os.path.join(ws, "corpus"),
        "budgets": budgets, "experts": E,
        "options": {"split_method": "coact", "record_tokens": 1500, "samples": 512, "eval_tokens": 2048, "seq_len": 128,
                    "split": "heldout", "epochs": 5, "tau": 0.8, "batch": 8, "seed": 0},
        "dense": {"perplexity": dense_ppl, "loss": dense_loss},
        "methods": methods,
        "best": [{"budget": b, "method": best_ppl[b][0], "perplexity": best_ppl[b][1],
                  "plain_perplexity": plain_ppl.get(b)} for b in budgets]})

    # A MoE analysis (docs/formats.md "MoE analysis") of a notional 4-expert
    # MoE at two layers, in the format `moefy analyze` writes: symmetric
    # similarities with a unit diagonal, rank counts, usage shares summing to 1,
    # a row-normalised co-occurrence with a zero diagonal, PCA scores.
    E, DE, N, K = 4, 8, 64, 2
    adir = os.path.join(ws, "analyses", "analysis-fake")
    os.makedirs(adir, exist_ok=True)
    at, sites = {}, {}
    total = np.zeros((E, E), np.int64)
    for L in range(2):
        p = "blk.%d." % L
        def sim():
            a = rng.uniform(-0.2, 0.6, (E, E))
            a = (a + a.T) / 2
            np.fill_diagonal(a, 1.0)
            return a
        for proj in ("gate", "up", "down"):
            at[p + "sim." + proj] = sim()
            at[p + "mean_sim." + proj] = sim()
            at[p + "match_sim." + proj] = sim()
        at[p + "match_sim"] = sim()
        at[p + "router_sim"] = sim()
        at[p + "pca.experts"] = rng.normal(size=(E, 2))
        at[p + "pca.neurons"] = rng.normal(size=(E * DE, 2))
        at[p + "pca.neuron_expert"] = np.repeat(np.arange(E, dtype=np.int32), DE)
        chosen = np.zeros((N, E), np.uint8)
        for t in range(N):
            chosen[t, rng.choice(E, K, replace=False, p=[0.4, 0.3, 0.2, 0.1])] = 1
        usage = chosen.sum(0) / float(N * K)
        co = chosen.T.astype(np.float64) @ chosen.astype(np.float64)
        np.fill_diagonal(co, 0)
        co = co / np.maximum(co.sum(1, keepdims=True), 1)
        rc = rng.integers(0, 20, (E, E)).astype(np.int64)
        total += rc
        at[p + "rank_counts"] = rc
        at[p + "usage"] = usage
        at[p + "cooccurrence"] = co
        h = -np.sum(usage[usage > 0] * np.log(usage[usage > 0]))
        sites["blk.%d" % L] = {
            "experts": E, "d_expert": DE, "matching": "optimal",
            "router_r2": {m: {q: float(rng.uniform()) for q in ("gate", "up", "down")} for m in ("sim", "mean_sim")},
            "pca_explained": {"experts": [0.4, 0.3], "neurons": [0.2, 0.1]},
            "dynamic": {"top1_norm_share": float(np.trace(rc) / max(1, rc.sum())), "usage_perplexity": float(np.exp(h) / E),
                        "dead_share": float(np.mean(usage == 0)), "output_similarity": 0.5}}
    at["rank_counts"] = total
    write_safetensors(os.path.join(adir, "analysis.safetensors"), at, {"format": "moefy-moe-analysis"})
    write_json(os.path.join(adir, "analysis.json"), {
        "format": "moefy-moe-analysis", "version": 1, "tool_version": "fake",
        "model": {"dir": os.path.join(ws, "model"), "fingerprint": fp, "model_type": "mixtral", "experts": E, "top_k": K,
                  "d_expert": DE, "d_model": 32},
        "options": {"static_only": False, "seq_len": 128, "batch": 8, "tokens": N, "fire_eps": 0.0, "match_max": 1024},
        "corpus": {"path": os.path.join(ws, "corpus"), "sequences": 1, "tokens": N},
        "top1_norm_share": float(np.trace(total) / max(1, total.sum())),
        "tensors": {k: list(v.shape) for k, v in at.items()}, "sites": sites})

    write_json(os.path.join(ws, "workspace.json"), {
        "format": "moefy-workspace", "version": 1, "tool_version": "fake", "name": "Synthetic workspace",
        "model": "model", "corpus": "corpus", "settings": {},
        "folders": {"recordings": "recordings", "partitions": "partitions", "routers": "routers",
                    "evaluations": "evaluations", "fronts": "fronts", "analyses": "analyses", "exports": "exports",
                    "figures": "figures"}})
    print(ws)


if __name__ == "__main__":
    main()
