#!/usr/bin/env python3
"""Independent float64 numpy reference for the native MoE decoders (Mixtral,
Qwen2-MoE, OLMoE), and the builder of small random checkpoints of them in
exact Hugging Face layout.

usage:
  moe_native_ref.py make VARIANT OUT_DIR [--dtype F32|F16|BF16] [--seed S] ...
      (the same as make_checkpoint.py VARIANT OUT_DIR ...; the variants are
      registered there too, so batch.py and the key-table test can make them)
  moe_native_ref.py forward MODEL_DIR --ids 1,2,3 [--ids ...] --out OUT.safetensors [--all-experts]
  moe_native_ref.py check-record MODEL_DIR --ids IDS.safetensors --rec REC_DIR [--rtol R]
      recomputes the routing statistics and every recorded site's statistics of a `moefy record`
      of MODEL_DIR over the pre-tokenised IDS (record_ref.py make-ids) and compares them with
      REC_DIR (integers exactly, sums to R relative); prints the max difference of each, exit 1
      on any mismatch
  moe_native_ref.py moefied MODEL_DIR --part PART_DIR --router ROUTER_DIR --ids 1,2,3 [--ids ...]
                   --out OUT.safetensors
      the logits with the experts a `moefy split --sites blk.L.exp.E` partition
      MoEfies replaced by their finer experts under a similarity router (see
      "MoEfied experts" below)
  moe_native_ref.py selftest
  moe_native_ref.py --list

MoEfied experts (moefied): a native expert E of layer L split into E' finer
experts (labels.safetensors `blk.L.exp.E.labels` [d_expert], finer expert of
each neuron) runs, for each token routed to E, only the neurons of the top_k
finer experts with the highest similarity-router scores, score_j =
(x / max(||x||, 1e-12)) . centroid_j (router.safetensors
`blk.L.exp.E.centroids` [E', d_model]; top_k from router.json); the other
neurons' hidden is zero. The native routing and mixing are unchanged. The
score margin at each top-k cut must be >= 1e-4 (else the command refuses).

Written from the semantics of Hugging Face's configuration_/modeling_
mixtral.py, qwen2_moe.py and olmoe.py (not from moefy's C++):
- Blocks as llama: x + attn(rmsnorm(x)), then x + moe(rmsnorm(x)); final
  RMSNorm; lm_head (tie_word_embeddings defaults to false for all three).
- Attention: GQA, default RoPE (rotate-half, inv_freq = theta^(-2i/D)),
  scores / sqrt(head_dim), causal + padding mask; Mixtral: a query sees keys
  with q - k < sliding_window when it is not null; Qwen2-MoE: q/k/v biases
  (qkv_bias, default true), no o_proj bias; OLMoE: RMSNorm over the whole
  projected q ([hidden]) and k ([kv_heads * head_dim]) before the head split
  and RoPE, head_dim = hidden / heads, optional attention_bias on q/k/v/o.
- MoE block: router logits = W_gate x [E]; probabilities = softmax (HF: float32);
  torch.topk(k) (largest first); Mixtral always renormalises the k
  probabilities to sum 1, Qwen2-MoE / OLMoE only with norm_topk_prob; output =
  sum_j p_j * down_j(silu(gate_j x) * up_j x). Qwen2-MoE adds
  sigmoid(shared_expert_gate x) * shared_expert(x), and a layer is MoE only
  when it is not in mlp_only_layers and (layer + 1) % decoder_sparse_step == 0
  (else a dense MLP of intermediate_size).

Several --ids make a right-padded batch with masks (pad id 0). Writes F32
`logits` [B, T, vocab] and, per layer L: `blk.L.ffn_in` [B, T, d_model];
dense layers `blk.L.ffn_act` [B, T, d_ff]; MoE layers `blk.L.router_logits`
[B, T, E], `blk.L.topk_ids` (I64) / `blk.L.topk_weights` [B, T, k],
`blk.L.ffn_act` [B, T, E * d_expert] (expert e's hidden in columns
e*d_expert.., zeros where e was not chosen), `blk.L.exp.E.ffn_in` [n, d_model]
and `blk.L.exp.E.ffn_act` [n, d_expert] with `blk.L.exp.E.tokens` [n] (I64,
flat positions b * T + t of the tokens routed to E, ascending),
`blk.L.shared.ffn_in` [B, T, d_model] and `blk.L.shared.ffn_act`
[B, T, d_shared]. With --all-experts every token goes through every expert for
these hooks (tokens = 0 .. B*T-1, ffn_in and ffn_act full); the logits do not
change. Stored F16/BF16 weights
are upcast to F32 first; the arithmetic is float64. `forward` refuses inputs
where a non-padded token's top-k choice (ranks 1 .. k + 1) has a margin below
1e-3 in router logits (float32 rounding could decide), so no fixture depends
on it.

`selftest` checks the reference against itself: a padded batch equals each
sequence alone, every-expert mode leaves the logits unchanged, the grouped
expert loop equals a dense sum over all experts with a [N, E] weight matrix
that is zero off the top-k, k = E with renormalisation equals the full
softmax mixture, and a float32 run stays far inside the 1e-4 test tolerance.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

V = 101  # vocab (as make_checkpoint.py)
MARGIN = 1e-3  # in router logits (softmax is monotonic: the ranks are the logits' ranks)

# Router gain: logits with a standard deviation of a few units, so the top-k
# choices are far apart in probability.
ROUTER_GAIN = 6.0

VARIANTS = {
    "mixtral": dict(family="mixtral", C=64, H=4, kv=2, L=2, E=4, k=2, ff=48, theta=1000000.0, window=None),
    # window on every layer, k = 1 (weight 1 after renormalisation), explicit head_dim
    "mixtral_window": dict(family="mixtral", C=64, H=4, kv=1, L=2, E=3, k=1, ff=40, theta=10000.0, window=4,
                           head_dim=24),
    # a dense layer among MoE ones (mlp_only_layers), shared expert, no renormalisation
    "qwen2_moe": dict(family="qwen2_moe", C=64, H=4, kv=2, L=4, E=4, k=2, ff=80, moe_ff=32, shared_ff=48,
                      theta=1000000.0, step=1, only=[1], norm=False),
    # decoder_sparse_step 2: only layer 1 is MoE; norm_topk_prob; qkv_bias written out
    "qwen2_moe_step2": dict(family="qwen2_moe", C=64, H=4, kv=4, L=3, E=5, k=3, ff=72, moe_ff=24, shared_ff=40,
                            theta=10000.0, step=2, only=[], norm=True, qkv_bias=True),
    "olmoe": dict(family="olmoe", C=64, H=4, kv=2, L=2, E=8, k=3, ff=32, theta=10000.0, norm=False, bias=False),
    "olmoe_norm_bias": dict(family="olmoe", C=64, H=4, kv=4, L=2, E=4, k=2, ff=40, theta=10000.0, norm=True,
                            bias=True),
}


# ---------------------------------------------------------------------------
# checkpoint builder (make_checkpoint.py calls build with its Init)

def moe_layers(v):
    if v["family"] != "qwen2_moe":
        return [True] * v["L"]
    return [l not in v["only"] and (l + 1) % v["step"] == 0 for l in range(v["L"])]


def build(v, I):
    fam, C, H, kv, L, E = v["family"], v["C"], v["H"], v["kv"], v["L"], v["E"]
    D = v.get("head_dim", C // H)
    bias = fam == "qwen2_moe" or v.get("bias", False)
    t = {"model.embed_tokens.weight": I.embed("model.embed_tokens.weight", V, C)}
    for l, moe in enumerate(moe_layers(v)):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = I.norm_w(p + "input_layernorm.weight", C)
        t[p + "post_attention_layernorm.weight"] = I.norm_w(p + "post_attention_layernorm.weight", C)
        for proj, out in (("q_proj", H * D), ("k_proj", kv * D), ("v_proj", kv * D)):
            n = p + "self_attn." + proj + "."
            t[n + "weight"] = I.linear(n + "weight", out, C)
            if bias:
                t[n + "bias"] = I.bias(n + "bias", out, 0.3)
        t[p + "self_attn.o_proj.weight"] = I.linear(p + "self_attn.o_proj.weight", C, H * D)
        if fam == "olmoe" and bias:
            t[p + "self_attn.o_proj.bias"] = I.bias(p + "self_attn.o_proj.bias", C, 0.3)
        if fam == "olmoe":
            t[p + "self_attn.q_norm.weight"] = I.norm_w(p + "self_attn.q_norm.weight", H * D)
            t[p + "self_attn.k_norm.weight"] = I.norm_w(p + "self_attn.k_norm.weight", kv * D)
        if not moe:
            for proj, shape in (("gate_proj", (v["ff"], C)), ("up_proj", (v["ff"], C)), ("down_proj", (C, v["ff"]))):
                n = p + "mlp." + proj + ".weight"
                t[n] = I.linear(n, shape[0], shape[1])
            continue
        F = v.get("moe_ff", v["ff"])
        if fam == "mixtral":
            m = p + "block_sparse_moe."
            names = (("w1", (F, C)), ("w3", (F, C)), ("w2", (C, F)))
        else:
            m = p + "mlp."
            names = (("gate_proj", (F, C)), ("up_proj", (F, C)), ("down_proj", (C, F)))
        t[m + "gate.weight"] = I.linear(m + "gate.weight", E, C, ROUTER_GAIN)
        for e in range(E):
            for proj, shape in names:
                n = m + "experts.%d.%s.weight" % (e, proj)
                t[n] = I.linear(n, shape[0], shape[1])
        if fam == "qwen2_moe":
            S = v["shared_ff"]
            for proj, shape in (("gate_proj", (S, C)), ("up_proj", (S, C)), ("down_proj", (C, S))):
                n = m + "shared_expert." + proj + ".weight"
                t[n] = I.linear(n, shape[0], shape[1])
            t[m + "shared_expert_gate.weight"] = I.linear(m + "shared_expert_gate.weight", 1, C, 2.0)
    t["model.norm.weight"] = I.norm_w("model.norm.weight", C)
    t["lm_head.weight"] = I.linear("lm_head.weight", V, C, 4.0)
    cfg = {
        "architectures": [{"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
                           "olmoe": "OlmoeForCausalLM"}[fam]],
        "model_type": fam, "vocab_size": V, "hidden_size": C, "intermediate_size": v["ff"],
        "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": kv, "hidden_act": "silu",
        "max_position_embeddings": 32, "initializer_range": 0.02, "rms_norm_eps": 1e-5 if fam != "qwen2_moe" else 1e-6,
        "use_cache": True, "tie_word_embeddings": False, "rope_theta": v["theta"], "attention_dropout": 0.0,
        "num_experts_per_tok": v["k"], "output_router_logits": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": None, "torch_dtype": "float32",
    }
    if fam == "mixtral":
        cfg.update({"num_local_experts": E, "sliding_window": v["window"], "router_aux_loss_coef": 0.02,
                    "router_jitter_noise": 0.0})
        if "head_dim" in v:
            cfg["head_dim"] = D
    if fam == "qwen2_moe":
        cfg.update({"num_experts": E, "moe_intermediate_size": v["moe_ff"],
                    "shared_expert_intermediate_size": v["shared_ff"], "decoder_sparse_step": v["step"],
                    "mlp_only_layers": v["only"], "norm_topk_prob": v["norm"], "router_aux_loss_coef": 0.001,
                    "use_sliding_window": False, "sliding_window": 32, "max_window_layers": L, "rope_scaling": None})
        if "qkv_bias" in v:
            cfg["qkv_bias"] = v["qkv_bias"]
    if fam == "olmoe":
        cfg.update({"num_experts": E, "norm_topk_prob": v["norm"], "attention_bias": v["bias"], "clip_qkv": None,
                    "router_aux_loss_coef": 0.01, "rope_scaling": None})
    return cfg, t


# ---------------------------------------------------------------------------
# reference forward pass

def load_weights(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            files = sorted({os.path.join(d, n) for n in json.load(f)["weight_map"].values()})
    w = {}
    for path in files:
        w.update(st_io.read_f32(path))
    return w


def moe_config(cfg):
    """The fields the three HF config classes define, with their defaults."""
    fam = cfg["model_type"]
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or H
    D = C // H if fam == "olmoe" else (cfg.get("head_dim") or C // H)
    L = cfg["num_hidden_layers"]
    if fam == "mixtral":
        E, k, norm = cfg.get("num_local_experts", 8), cfg.get("num_experts_per_tok", 2), True
        F, layers = cfg["intermediate_size"], [True] * L
    elif fam == "olmoe":
        E, k, norm = cfg.get("num_experts", 64), cfg.get("num_experts_per_tok", 8), cfg.get("norm_topk_prob", False)
        F, layers = cfg["intermediate_size"], [True] * L
    elif fam == "qwen2_moe":
        E, k, norm = cfg.get("num_experts", 60), cfg.get("num_experts_per_tok", 4), cfg.get("norm_topk_prob", False)
        F = cfg.get("moe_intermediate_size", 1408)
        only = cfg.get("mlp_only_layers") or []
        step = cfg.get("decoder_sparse_step", 1)
        layers = [l not in only and E > 0 and (l + 1) % step == 0 for l in range(L)]
    else:
        raise SystemExit("moe_native_ref: model_type %r is not mixtral, qwen2_moe or olmoe" % fam)
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise SystemExit("moe_native_ref: only silu experts are modelled")
    if fam == "olmoe" and cfg.get("clip_qkv") is not None:
        raise SystemExit("moe_native_ref: clip_qkv is not modelled")
    return dict(fam=fam, C=C, H=H, kv=kv, D=D, L=L, E=E, k=k, norm=norm, F=F, layers=layers,
                eps=cfg.get("rms_norm_eps", 1e-6 if fam == "qwen2_moe" else 1e-5),
                theta=cfg.get("rope_theta", 1e6 if fam == "mixtral" else 1e4),
                window=cfg.get("sliding_window") if fam == "mixtral" else None,
                qkv_bias=cfg.get("qkv_bias", True) if fam == "qwen2_moe" else cfg.get("attention_bias", False),
                o_bias=fam == "olmoe" and cfg.get("attention_bias", False),
                tied=cfg.get("tie_word_embeddings", False))


def silu(x):
    return x / (1 + np.exp(-x))


def softmax(s):
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(-1, keepdims=True)


class MoeRef:
    def __init__(self, cfg, weights, dtype=np.float64, every=False):
        self.c = moe_config(cfg)
        self.dtype = dtype
        self.every = every
        self.w = {k: np.asarray(a, dtype=np.float32).astype(dtype) for k, a in weights.items()}
        self.hooks = {}
        self.min_margin = np.inf
        self.moefied = {}  # expert site -> (labels [F], centroids [E', C], top_k): finer experts
        self.min_fine_margin = np.inf

    def finer_mask(self, x, labels, centroids, k, valid):
        # Similarity router over the finer experts of one native expert: [n, F] 0/1.
        # The margin at the top-k cut counts the non-padded tokens (valid [n]).
        xn = x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), 1e-12)
        sc = xn @ centroids.T  # [n, E']
        order = np.argsort(-sc, axis=-1, kind="stable")
        if k < sc.shape[1] and valid.any():
            srt = np.take_along_axis(sc, order, -1)
            self.min_fine_margin = min(self.min_fine_margin, float((srt[:, k - 1] - srt[:, k])[valid].min()))
        chosen = np.zeros(sc.shape, bool)
        np.put_along_axis(chosen, order[:, :k], True, -1)
        return chosen[:, labels].astype(self.dtype)

    def norm(self, x, name):
        return self.w[name] * (x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c["eps"]))

    def lin(self, x, name, bias=False):
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if bias else y

    def attention(self, x, p, mask):
        c = self.c
        B, T, _ = x.shape
        H, KV, D = c["H"], c["kv"], c["D"]
        a = p + "self_attn."
        q = self.lin(x, a + "q_proj", c["qkv_bias"])
        k = self.lin(x, a + "k_proj", c["qkv_bias"])
        v = self.lin(x, a + "v_proj", c["qkv_bias"])
        if c["fam"] == "olmoe":  # over the whole projection, before the head split
            q = self.norm(q, a + "q_norm.weight")
            k = self.norm(k, a + "k_norm.weight")
        q = q.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        k = k.reshape(B, T, KV, D).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, KV, D).transpose(0, 2, 1, 3)
        inv = 1.0 / c["theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D)
        ang = np.arange(T)[:, None] * inv[None, :]
        cos = np.cos(np.concatenate([ang, ang], -1)).astype(self.dtype)
        sin = np.sin(np.concatenate([ang, ang], -1)).astype(self.dtype)

        def rope(t):
            rot = np.concatenate([-t[..., D // 2:], t[..., :D // 2]], -1)
            return t * cos + rot * sin

        q, k = rope(q), rope(k)
        rep = H // KV
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        hide = (j > i)[None, None] | (mask == 0)[:, None, None, :]
        if c["window"]:
            hide = hide | (i - j >= c["window"])[None, None]
        # HF adds finfo.min: a padded query whose window holds only padding gets a finite
        # (meaningless) row instead of NaN; no compared position depends on it.
        s = np.where(hide, -1e30, s)
        o = (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        return self.lin(o, a + "o_proj", c["o_bias"])

    def mlp(self, x, m):
        h = silu(self.lin(x, m + "gate_proj")) * self.lin(x, m + "up_proj")
        return h, self.lin(h, m + "down_proj")

    def moe(self, x, l, mask):
        c = self.c
        B, T, C = x.shape
        N, E, K, F = B * T, c["E"], c["k"], c["F"]
        mix = c["fam"] == "mixtral"
        m = "model.layers.%d.%s" % (l, "block_sparse_moe." if mix else "mlp.")
        names = ("w1", "w3", "w2") if mix else ("gate_proj", "up_proj", "down_proj")
        xf = x.reshape(N, C)
        logits = self.lin(xf, m + "gate")  # [N, E]
        probs = softmax(logits)
        order = np.argsort(-probs, axis=-1, kind="stable")
        ids = order[:, :K]
        weights = np.take_along_axis(probs, ids, -1)
        # Margins between consecutive ranks up to k + 1, on the non-padded tokens.
        ranked = np.take_along_axis(logits, order[:, :min(K + 1, E)], -1)
        valid = mask.reshape(N) == 1
        if ranked.shape[1] > 1:
            self.min_margin = min(self.min_margin, float((ranked[:, :-1] - ranked[:, 1:])[valid].min()))
        if c["norm"]:
            weights = weights / weights.sum(-1, keepdims=True)
        site = "blk.%d." % l
        self.hooks[site + "router_logits"] = logits.reshape(B, T, E)
        self.hooks[site + "topk_ids"] = ids.reshape(B, T, K).astype(np.int64)
        self.hooks[site + "topk_weights"] = weights.reshape(B, T, K)
        out = np.zeros((N, C), self.dtype)
        act = np.zeros((N, E * F), self.dtype)
        for e in range(E):
            tok, slot = np.nonzero(ids == e)
            pre = m + "experts.%d." % e
            gate, up, down = (pre + n for n in names)
            h = silu(self.lin(xf[tok], gate)) * self.lin(xf[tok], up)
            fine = self.moefied.get("blk.%d.exp.%d" % (l, e))
            if fine is not None and len(tok):
                h = h * self.finer_mask(xf[tok], *fine, valid=valid[tok])
            out[tok] += (h @ self.w[down + ".weight"].T) * weights[tok, slot][:, None]
            if self.every:
                tok = np.arange(N)
                h = silu(self.lin(xf, gate)) * self.lin(xf, up)
            act[tok, e * F:(e + 1) * F] = h
            self.hooks[site + "exp.%d.ffn_in" % e] = xf[tok]
            self.hooks[site + "exp.%d.ffn_act" % e] = h
            self.hooks[site + "exp.%d.tokens" % e] = tok.astype(np.int64)
        self.hooks[site + "ffn_act"] = act.reshape(B, T, E * F)
        if c["fam"] == "qwen2_moe":
            hs, ys = self.mlp(xf, m + "shared_expert.")
            g = 1 / (1 + np.exp(-self.lin(xf, m + "shared_expert_gate")))  # [N, 1]
            out = out + g * ys
            self.hooks[site + "shared.ffn_in"] = xf.reshape(B, T, -1)
            self.hooks[site + "shared.ffn_act"] = hs.reshape(B, T, -1)
        return out.reshape(B, T, C)

    def forward(self, ids, mask):
        c = self.c
        x = self.w["model.embed_tokens.weight"][ids]
        for l in range(c["L"]):
            p = "model.layers.%d." % l
            x = x + self.attention(self.norm(x, p + "input_layernorm.weight"), p, mask)
            h = self.norm(x, p + "post_attention_layernorm.weight")
            self.hooks["blk.%d.ffn_in" % l] = h
            if c["layers"][l]:
                x = x + self.moe(h, l, mask)
            else:
                a, y = self.mlp(h, p + "mlp.")
                self.hooks["blk.%d.ffn_act" % l] = a
                x = x + y
        x = self.norm(x, "model.norm.weight")
        head = self.w["model.embed_tokens.weight"] if c["tied"] else self.w["lm_head.weight"]
        return x @ head.T


def batch(seqs):
    T = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), T), np.int64)
    mask = np.zeros((len(seqs), T), np.int64)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = s
        mask[b, :len(s)] = 1
    return ids, mask


def cmd_forward(argv):
    ap = argparse.ArgumentParser(prog="moe_native_ref.py forward")
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--all-experts", action="store_true")
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    ids, mask = batch([[int(t) for t in s.split(",")] for s in a.ids])
    ref = MoeRef(cfg, load_weights(a.model), every=a.all_experts)
    logits = ref.forward(ids, mask)
    if ref.min_margin < MARGIN:
        raise SystemExit("moe_native_ref: a top-k choice has a router-logit margin of %.3g < %g (float32 rounding "
                         "could decide it); use other weights or ids" % (ref.min_margin, MARGIN))
    out = [("logits", "F32", logits.astype(np.float32))]
    for name in sorted(ref.hooks):
        h = ref.hooks[name]
        out.append((name, "I64", h) if h.dtype == np.int64 else (name, "F32", h.astype(np.float32)))
    st_io.write(a.out, out, {"reference": "scripts/ref/moe_native_ref.py", "min_topk_margin": ref.min_margin})
    return 0


def cmd_moefied(argv):
    ap = argparse.ArgumentParser(prog="moe_native_ref.py moefied")
    ap.add_argument("model")
    ap.add_argument("--part", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(a.part, "partition.json")) as f:
        part = json.load(f)
    with open(os.path.join(a.router, "router.json")) as f:
        router = json.load(f)
    if router["kind"] != "similarity":
        raise SystemExit("moe_native_ref: moefied needs a similarity router, not %r" % router["kind"])
    labels, _ = st_io.read(os.path.join(a.part, "labels.safetensors"))
    cents = st_io.read_f32(os.path.join(a.router, "router.safetensors"))
    ids, mask = batch([[int(t) for t in s.split(",")] for s in a.ids])
    ref = MoeRef(cfg, load_weights(a.model))
    for i, site in enumerate(part["sites"]):
        if ".exp." not in site:
            raise SystemExit("moe_native_ref: moefied covers expert sites only, not %s" % site)
        ri = router["sites"].index(site)
        ref.moefied[site] = (np.asarray(labels[site + ".labels"][1]).astype(np.int64),
                             np.asarray(cents[site + ".centroids"], np.float64), int(router["top_k"][ri]))
    logits = ref.forward(ids, mask)
    if ref.min_margin < MARGIN or ref.min_fine_margin < 1e-4:
        raise SystemExit("moe_native_ref: a top-k choice has a margin of %.3g (native) / %.3g (finer) too small "
                         "for float32 rounding; use other weights or ids" % (ref.min_margin, ref.min_fine_margin))
    st_io.write(a.out, [("logits", "F32", logits.astype(np.float32))],
                {"reference": "scripts/ref/moe_native_ref.py moefied", "min_finer_margin": ref.min_fine_margin})
    print("moefied reference: %d sites, min finer-expert score margin %.3g" % (len(ref.moefied),
                                                                              ref.min_fine_margin))
    return 0


def cmd_check_record(argv):
    """Recomputes a `moefy record` of a native MoE model from this float64 reference.

    Per recorded MoE layer (manifest moe.layers), from the reference's chosen
    experts of every real token: expert_usage[e] = tokens with e among their
    top-k, expert_cooccur[i, j] = tokens choosing both i and j (diagonal =
    usage), expert_category_usage[c, e] = usage among the tokens of category c.
    Per recorded site, the neuron statistics (docs/formats.md "Recording")
    over its tokens: an expert site blk.L.exp.E over the tokens routed to E,
    blk.L.shared and dense blk.L over every token. Integer statistics must
    match exactly, sums to --rtol (float32 engine against float64 here).
    Each sequence runs alone (a right-padded batch gives its real tokens the
    same values: causal attention, masked padding)."""
    import record_ref
    ap = argparse.ArgumentParser(prog="moe_native_ref.py check-record")
    ap.add_argument("model")
    ap.add_argument("--ids", required=True, help="the pre-tokenised corpus the recording read")
    ap.add_argument("--rec", required=True)
    ap.add_argument("--rtol", type=float, default=1e-4)
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    ids, meta = st_io.load(a.ids)
    tok = ids["token_ids"]
    N, T = tok.shape
    lengths = ids.get("lengths", np.full(N, T))
    cats = ids.get("category", np.full(N, -1))
    ncat = len(json.loads(meta["categories"])) if "categories" in meta else 0
    man = json.load(open(os.path.join(a.rec, "manifest.json")))
    stats, _ = st_io.load(os.path.join(a.rec, "stats.safetensors"))
    co = st_io.load_coact(a.rec)  # full [n, n] matrices (format version 1 or 2)
    ref = MoeRef(cfg, load_weights(a.model))
    c = ref.c
    E, K = c["E"], c["k"]
    chosen = {}   # layer -> [tokens, k]
    hidden = {}   # site name -> list of [n, width] float32 rows
    tokcat = {}   # site name -> list of categories of those rows
    for r in range(N):
        seq = tok[r, :lengths[r]].astype(np.int64)[None, :]
        ref.hooks = {}
        ref.forward(seq, np.ones_like(seq))
        cat = int(cats[r])
        for l in range(c["L"]):
            if c["layers"][l]:
                chosen.setdefault(l, []).append(ref.hooks["blk.%d.topk_ids" % l][0])
                for e in range(E):
                    n = "blk.%d.exp.%d" % (l, e)
                    h = ref.hooks[n + ".ffn_act"]
                    hidden.setdefault(n, []).append(h)
                    tokcat.setdefault(n, []).append(np.full(len(h), cat))
                if "blk.%d.shared.ffn_act" % l in ref.hooks:
                    n = "blk.%d.shared" % l
                    h = ref.hooks[n + ".ffn_act"][0]
                    hidden.setdefault(n, []).append(h)
                    tokcat.setdefault(n, []).append(np.full(len(h), cat))
            else:
                n = "blk.%d" % l
                h = ref.hooks[n + ".ffn_act"][0]
                hidden.setdefault(n, []).append(h)
                tokcat.setdefault(n, []).append(np.full(len(h), cat))
    if ref.min_margin < MARGIN:
        raise SystemExit("moe_native_ref: a top-k choice has a router-logit margin of %.3g < %g; use other weights "
                         "or ids" % (ref.min_margin, MARGIN))
    tokens = int(lengths.sum())
    record_ref.cmp_exact("tokens", man["tokens"], tokens)
    moe = man.get("moe", {})
    want_layers = sorted({int(s.split(".")[1]) for s in man["sites"] if ".exp." in s or s.endswith(".shared")})
    record_ref.cmp_exact("moe.layers", np.array(moe.get("layers", [])), np.array(want_layers))
    for l in want_layers:
        ch = np.concatenate(chosen[l])  # [tokens, k]
        tc = np.concatenate([np.full(lengths[r], cats[r]) for r in range(N)])
        onehot = np.zeros((len(ch), E), np.int64)
        np.put_along_axis(onehot, ch, 1, axis=1)
        pre = "blk.%d." % l
        record_ref.cmp_exact(pre + "expert_usage", stats[pre + "expert_usage"], onehot.sum(0))
        record_ref.cmp_exact(pre + "expert_cooccur", stats[pre + "expert_cooccur"], onehot.T @ onehot)
        cu = np.zeros((ncat, E), np.int64)
        for k in range(ncat):
            cu[k] = onehot[tc == k].sum(0)
        record_ref.cmp_exact(pre + "expert_category_usage", stats[pre + "expert_category_usage"], cu)
    rule = man["options"]["active"]
    rule = {"positive": "positive", "threshold": "threshold:%r" % rule["tau"], "top_p": "top:%r" % rule["p"]}[
        rule["rule"]]
    for name in man["sites"]:
        pre = name + "."
        h = np.concatenate(hidden[name]).astype(np.float64)  # [n_site, width]
        cat = np.concatenate(tokcat[name])
        n = h.shape[1]
        m = record_ref.active_mask(h, rule).astype(np.int64)
        record_ref.cmp_exact(pre + "count", stats[pre + "count"], m.sum(0))
        record_ref.cmp_exact(pre + "active_hist", stats[pre + "active_hist"], np.bincount(m.sum(1), minlength=n + 1))
        record_ref.cmp_close(pre + "sum", stats[pre + "sum"], h.sum(0), a.rtol)
        record_ref.cmp_close(pre + "sumsq", stats[pre + "sumsq"], (h ** 2).sum(0), a.rtol)
        record_ref.cmp_close(pre + "max", stats[pre + "max"], h.max(0) if len(h) else np.zeros(n), a.rtol)
        cc = np.zeros((ncat, n), np.int64)
        ct = np.zeros(ncat, np.int64)
        for k in range(ncat):
            cc[k] = m[cat == k].sum(0)
            ct[k] = (cat == k).sum()
        record_ref.cmp_exact(pre + "category_count", stats[pre + "category_count"], cc)
        record_ref.cmp_exact(pre + "category_tokens", stats[pre + "category_tokens"], ct)
        record_ref.cmp_exact(pre + "coact", co[pre + "coact"], m.T @ m)
    print("min top-k router-logit margin %.4g" % ref.min_margin)
    if record_ref.FAIL:
        print("FAILED: " + ", ".join(record_ref.FAIL))
        return 1
    print("all statistics match")
    return 0


def cmd_make(argv):
    import make_checkpoint  # registers the variants; imported here to avoid a cycle
    return make_checkpoint.main(argv)


# ---------------------------------------------------------------------------
# selftest

SEQS = [[5, 17, 3, 99, 42, 7, 1, 64, 23, 11], [8, 9, 10, 11, 100, 1]]


def selftest():
    import make_checkpoint
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    for name in sorted(VARIANTS):
        cfg, t = build(VARIANTS[name], make_checkpoint.Init(1))
        ids, mask = batch(SEQS)
        ref = MoeRef(cfg, t)
        logits = ref.forward(ids, mask)
        check(ref.min_margin >= MARGIN, "%s: top-k margins on the test ids >= %g (min %.3g)" % (name, MARGIN,
                                                                                                ref.min_margin))
        worst = 0.0
        for b, s in enumerate(SEQS):
            one = MoeRef(cfg, t)
            i1, m1 = batch([s])
            worst = max(worst, np.abs(one.forward(i1, m1)[0] - logits[b, :len(s)]).max())
        check(worst < 1e-12, "%s: padded batch = each sequence alone (max diff %.2g)" % (name, worst))
        every = MoeRef(cfg, t, every=True)
        le = every.forward(ids, mask)
        check(np.array_equal(le, logits), "%s: every-expert mode leaves the logits unchanged" % name)
        c = ref.c
        for l in range(c["L"]):
            if not c["layers"][l]:
                continue
            # the grouped expert loop = a dense sum over all experts with zero weights off the top-k
            site = "blk.%d." % l
            full = every.hooks[site + "ffn_act"].reshape(-1, c["E"], c["F"])
            W = np.zeros((full.shape[0], c["E"]))
            np.put_along_axis(W, ref.hooks[site + "topk_ids"].reshape(-1, c["k"]),
                              ref.hooks[site + "topk_weights"].reshape(-1, c["k"]), -1)
            routed = ref.hooks[site + "ffn_act"].reshape(-1, c["E"], c["F"])
            chosen = W > 0
            check(np.abs(routed[chosen] - full[chosen]).max() < 1e-12 and not routed[~chosen].any(),
                  "%s layer %d: routed hiddens = every-expert hiddens on the chosen experts, zero elsewhere" % (name, l))
            if c["norm"]:
                check(np.abs(W.sum(-1) - 1).max() < 1e-12, "%s layer %d: renormalised weights sum to 1" % (name, l))
            n = sum(len(ref.hooks[site + "exp.%d.tokens" % e]) for e in range(c["E"]))
            check(n == full.shape[0] * c["k"], "%s layer %d: every token routed to k experts" % (name, l))
        l32 = MoeRef(cfg, t, np.float32).forward(ids, mask)
        d32 = max(np.abs(l32[b, :len(s)] - logits[b, :len(s)]).max() for b, s in enumerate(SEQS))
        check(d32 < 3e-5, "%s: float32 run within %.2g of float64 (test tolerance 1e-4)" % (name, d32))
        check(np.abs(logits).max() > 0.5, "%s: logits are not trivially small" % name)
    # k = E with renormalisation is the full softmax mixture.
    v = dict(VARIANTS["olmoe_norm_bias"], k=4)
    cfg, t = build(v, make_checkpoint.Init(2))
    ids, mask = batch(SEQS)
    ref = MoeRef(cfg, t)
    ref.forward(ids, mask)
    x = ref.hooks["blk.0.ffn_in"].reshape(-1, v["C"])
    p = softmax(x @ ref.w["model.layers.0.mlp.gate.weight"].T)
    y = np.zeros_like(x)
    for e in range(v["E"]):
        pre = "model.layers.0.mlp.experts.%d." % e
        h = silu(x @ ref.w[pre + "gate_proj.weight"].T) * (x @ ref.w[pre + "up_proj.weight"].T)
        y += p[:, e:e + 1] * (h @ ref.w[pre + "down_proj.weight"].T)
    got = ref.moe(ref.hooks["blk.0.ffn_in"], 0, mask).reshape(-1, v["C"])
    check(np.abs(got - y).max() < 1e-12, "k = E renormalised = the full softmax mixture")
    print("selftest: %d failures" % len(failures))
    return 1 if failures else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--list":
        print("\n".join(sorted(VARIANTS)))
        return 0
    cmds = {"make": cmd_make, "forward": cmd_forward, "moefied": cmd_moefied, "check-record": cmd_check_record,
            "selftest": lambda a: selftest()}
    if argv[0] not in cmds:
        raise SystemExit("moe_native_ref: unknown command %r (make, forward, moefied, check-record, selftest, --list)" % argv[0])
    return cmds[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
