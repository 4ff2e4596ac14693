#!/usr/bin/env python3
"""Independent float64 numpy reference for T5 (T5ForConditionalGeneration),
and the builder of small random T5 checkpoints in exact Hugging Face layout.

usage:
  t5_ref.py make VARIANT OUT_DIR [--dtype F32|F16|BF16] [--seed S] ...
      (the same as make_checkpoint.py VARIANT OUT_DIR ...; the T5 variants are
      registered there too, so batch.py and the key-table test can make them)
  t5_ref.py forward MODEL_DIR --ids 1,2,3 [--ids ...] --decoder-ids 0,5 [--decoder-ids ...]
                    --out OUT.safetensors
  t5_ref.py generate MODEL_DIR --ids 1,2,3 [--ids ...] --max-new-tokens N [--eos ID ...]
                     --out OUT.safetensors
  t5_ref.py stats MODEL_DIR --ids .. --decoder-ids .. --site dec.blk.L --out OUT.safetensors
      (the recorder's count/sum/sumsq/max/coact of one site over the real tokens)
  t5_ref.py selftest
  t5_ref.py --list

Written from the semantics of Hugging Face's configuration_t5.py and
modeling_t5.py (not from moefy's C++):
- T5Config: feed_forward_proj is "ACT" or "gated-ACT" ("gated-gelu" means
  gelu_new); saved dense_act_fn / is_gated_act win over it (PretrainedConfig
  sets the saved attributes after T5Config derived them); num_decoder_layers
  defaults to num_layers; tie_word_embeddings defaults to true.
- T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w (no mean, no bias).
- T5Attention: no 1/sqrt(d_kv) scaling; relative position bias from block 0's
  relative_attention_bias, bidirectional buckets in the encoder, causal in the
  decoder, the bias plus the mask computed once per stack and reused by every
  block; cross-attention (EncDecAttention) has no relative bias, only the
  source padding mask.
- Blocks: x + SelfAttention(norm(x)); decoder: x + EncDecAttention(norm(x),
  encoder output); x + FFN(norm(x)); then the stack's final_layer_norm.
- FFN (T5DenseActDense / T5DenseGatedActDense): act(wi x) or act(wi_0 x) * wi_1 x, then wo.
- Head: tied embeddings: logits = shared @ (decoder_out * d_model^-0.5);
  untied: lm_head @ decoder_out, no rescale.

Several --ids (and as many --decoder-ids, teacher-forced decoder inputs) make
right-padded batches with masks (pad id 0). Writes F32 `logits` [B, T_dec,
vocab], `enc.blk.L.ffn_in` [B, T_src, d_model], `enc.blk.L.ffn_act` [B, T_src,
d_ff], `dec.blk.L.ffn_in` / `dec.blk.L.ffn_act` [B, T_dec, ...]. Stored
F16/BF16 weights are upcast to F32 first; the arithmetic is float64. The
relative position buckets are computed as HF does, in float32; `forward`
refuses a sequence length at which float32 and float64 put a distance into
different buckets (HF's rounding would decide), so no fixture depends on it.

`generate` is greedy search as HF's generate() (num_beams 1, no sampling)
with T5Attention's past_key_value: the sources a right-padded batch (the
padding masked in the cross-attention), the decoder starting from
decoder_start_token_id with one token per step, its self-attention keys and
values appended to the cache, the cross-attention keys/values projected from
the encoder output once, the relative bias of the step the last row of
compute_bias(past + 1, past + 1); each row takes the argmax, a finished row
emits pad_token_id, and the search ends when every row has emitted an
eos_token_id (or --eos) or after --max-new-tokens. Writes `sequences` I64
[B, 1 + steps] (decoder_start_token_id first, as generate() returns) and
`scores` F32 [B, steps, vocab] (every row's logits at every step).

`selftest` checks the reference against itself without any file: the bucket
function against a scalar transcription of the Mesh TensorFlow definition;
for every variant, that a padded batch equals each sequence run alone, that
extra source padding changes nothing, that decoder position t does not see
positions after t, that a tied checkpoint equals the untied one whose lm_head
is shared * d_model^-0.5, and that a float32 run of the same code stays far
inside the 1e-4 test tolerance.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

V = 101  # vocab (as make_checkpoint.py)

# Variants: v1.0 (relu, tied, old-checkpoint extras), v1.1 / FLAN (gated-gelu,
# untied, save_pretrained's dense_act_fn / is_gated_act), and the two other
# combinations. Small bucket settings put short test sequences into the
# log-spaced buckets.
VARIANTS = {
    # t5-small style config (no dense_act_fn, no num_decoder_layers); its file carries the
    # encoder/decoder embed_tokens aliases and the unused cross-attention relative bias.
    "t5_relu": dict(family="t5", proj="relu", tied=True, C=64, dkv=16, H=4, ff=96, L=2, Ld=None,
                    buckets=32, maxd=128, aliases=True, extra_bias=True),
    # flan-t5 style: gated-gelu, untied lm_head, decoder deeper than the encoder, inner dim != d_model.
    "t5_gated": dict(family="t5", proj="gated-gelu", tied=False, C=64, dkv=24, H=4, ff=80, L=2, Ld=3,
                     buckets=8, maxd=13, aliases=False, extra_bias=False, saved_act=True),
    "t5_relu_untied": dict(family="t5", proj="relu", tied=False, C=48, dkv=12, H=4, ff=64, L=2, Ld=2,
                           buckets=16, maxd=21, aliases=False, extra_bias=False),
    "t5_gated_tied": dict(family="t5", proj="gated-gelu", tied=True, C=64, dkv=16, H=4, ff=72, L=1, Ld=2,
                          buckets=12, maxd=17, aliases=True, extra_bias=False, saved_act=True),
}


# ---------------------------------------------------------------------------
# checkpoint builder (make_checkpoint.py calls build with its Init)

def build(v, I):
    C, D, H, ff, L = v["C"], v["dkv"], v["H"], v["ff"], v["L"]
    Ld = v["Ld"] if v["Ld"] is not None else L
    gated = v["proj"].startswith("gated-")
    t = {"shared.weight": I.embed("shared.weight", V, C)}
    for stack, n in (("encoder", L), ("decoder", Ld)):
        for l in range(n):
            p = "%s.block.%d.layer." % (stack, l)
            subs = ["0.SelfAttention"] + (["1.EncDecAttention"] if stack == "decoder" else [])
            for s in subs:
                a = p + s + "."
                # HF's init scale: q gets (d_model * d_kv)^-0.5 (T5 does not scale the scores).
                t[a + "q.weight"] = I.linear(a + "q.weight", H * D, C, 1.0 / math.sqrt(D))
                t[a + "k.weight"] = I.linear(a + "k.weight", H * D, C)
                t[a + "v.weight"] = I.linear(a + "v.weight", H * D, C)
                t[a + "o.weight"] = I.linear(a + "o.weight", C, H * D)
                t[p + s.split(".")[0] + ".layer_norm.weight"] = I.norm_w(p + s.split(".")[0] + ".layer_norm.weight", C)
            if l == 0:
                n_ = p + "0.SelfAttention.relative_attention_bias.weight"
                t[n_] = I.embed(n_, v["buckets"], H, 1.0)
            f = p + ("2." if stack == "decoder" else "1.")
            if gated:
                t[f + "DenseReluDense.wi_0.weight"] = I.linear(f + "DenseReluDense.wi_0.weight", ff, C)
                t[f + "DenseReluDense.wi_1.weight"] = I.linear(f + "DenseReluDense.wi_1.weight", ff, C)
            else:
                t[f + "DenseReluDense.wi.weight"] = I.linear(f + "DenseReluDense.wi.weight", ff, C)
            t[f + "DenseReluDense.wo.weight"] = I.linear(f + "DenseReluDense.wo.weight", C, ff)
            t[f + "layer_norm.weight"] = I.norm_w(f + "layer_norm.weight", C)
        t[stack + ".final_layer_norm.weight"] = I.norm_w(stack + ".final_layer_norm.weight", C)
    if v.get("aliases"):
        t["encoder.embed_tokens.weight"] = t["shared.weight"].copy()
        t["decoder.embed_tokens.weight"] = t["shared.weight"].copy()
    if v.get("extra_bias"):
        n_ = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
        t[n_] = I.embed(n_, v["buckets"], H, 1.0)
    if not v["tied"]:
        t["lm_head.weight"] = I.linear("lm_head.weight", V, C, 4.0)
    cfg = {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": V, "d_model": C,
        "d_kv": D, "d_ff": ff, "num_layers": L, "num_heads": H,
        "relative_attention_num_buckets": v["buckets"], "relative_attention_max_distance": v["maxd"],
        "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": v["proj"], "is_encoder_decoder": True, "use_cache": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "tie_word_embeddings": v["tied"],
        "n_positions": 512, "output_past": True, "torch_dtype": "float32",
    }
    if v["Ld"] is not None:
        cfg["num_decoder_layers"] = Ld
    if v.get("saved_act"):  # what save_pretrained writes for v1.1 / FLAN
        act = v["proj"].split("-")[-1]
        cfg["dense_act_fn"] = "gelu_new" if v["proj"] == "gated-gelu" else act
        cfg["is_gated_act"] = gated
    return cfg, t


# ---------------------------------------------------------------------------
# reference forward pass (numpy, float64 unless asked otherwise)

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


def t5_config(cfg):
    """The fields T5Config / T5ForConditionalGeneration read, with HF's defaults."""
    proj = cfg.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    if (len(parts) > 1 and parts[0] != "gated") or len(parts) > 2:
        raise SystemExit("t5_ref: feed_forward_proj %r is not ACT or gated-ACT" % proj)
    act, gated = parts[-1], parts[0] == "gated"
    if proj == "gated-gelu":
        act = "gelu_new"
    act = cfg.get("dense_act_fn", act)  # saved attributes override the derived ones
    gated = cfg.get("is_gated_act", gated)
    L = cfg.get("num_layers", 6)
    Ld = cfg.get("num_decoder_layers")
    return dict(C=cfg.get("d_model", 512), D=cfg.get("d_kv", 64), H=cfg.get("num_heads", 8),
                L=L, Ld=L if Ld is None else Ld, eps=cfg.get("layer_norm_epsilon", 1e-6),
                buckets=cfg.get("relative_attention_num_buckets", 32),
                maxd=cfg.get("relative_attention_max_distance", 128),
                act=act, gated=gated, tied=cfg.get("tie_word_embeddings", True))


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


ACTS = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
    # gelu_new (= gelu_pytorch_tanh, gelu_fast up to rounding): the tanh approximation
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x / (1 + np.exp(-x)),
}
ACTS["gelu_pytorch_tanh"] = ACTS["gelu_fast"] = ACTS["gelu_new"]
ACTS["swish"] = ACTS["silu"]


def buckets_of(rel, bidirectional, num_buckets, max_distance, dtype):
    """_relative_position_bucket on an int array of (key - query) distances, the
    log evaluated in `dtype` (HF: float32)."""
    out = np.zeros(rel.shape, np.int64)
    if bidirectional:
        num_buckets //= 2
        out += (rel > 0).astype(np.int64) * num_buckets
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    small = rel < max_exact
    safe = np.where(small, max_exact, rel).astype(dtype)  # no log(0) on the entries `small` keeps
    scaled = (np.log(safe / dtype(max_exact)) / dtype(math.log(max_distance / max_exact))
              * dtype(num_buckets - max_exact))
    large = np.minimum(max_exact + np.trunc(scaled).astype(np.int64), num_buckets - 1)
    return out + np.where(small, rel, large)


def relative_buckets(T, S, bidirectional, num_buckets, max_distance):
    rel = np.arange(S)[None, :] - np.arange(T)[:, None]
    b32 = buckets_of(rel, bidirectional, num_buckets, max_distance, np.float32)
    b64 = buckets_of(rel, bidirectional, num_buckets, max_distance, np.float64)
    if not np.array_equal(b32, b64):
        i, j = np.argwhere(b32 != b64)[0]
        raise SystemExit("t5_ref: distance %d sits on a bucket boundary where float32 rounding decides "
                         "(buckets %d, max distance %d, bidirectional %s); use other settings or lengths"
                         % (j - i, num_buckets, max_distance, bidirectional))
    return b32


class T5Ref:
    def __init__(self, cfg, weights, dtype=np.float64):
        self.c = t5_config(cfg)
        self.dtype = dtype
        self.w = {k: np.asarray(a, dtype=np.float32).astype(dtype) for k, a in weights.items()}
        for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if "shared.weight" not in self.w and alias in self.w:
                self.w["shared.weight"] = self.w[alias]
        self.hooks = {}

    def norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c["eps"]) * self.w[name]

    def attention(self, x, kv, prefix, bias):
        c = self.c
        B, T, _ = x.shape
        S = kv.shape[1]
        H, D = c["H"], c["D"]
        q = (x @ self.w[prefix + "q.weight"].T).reshape(B, T, H, D).transpose(0, 2, 1, 3)
        k = (kv @ self.w[prefix + "k.weight"].T).reshape(B, S, H, D).transpose(0, 2, 1, 3)
        v = (kv @ self.w[prefix + "v.weight"].T).reshape(B, S, H, D).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) + bias  # no 1/sqrt(D)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        return o @ self.w[prefix + "o.weight"].T

    def ffn_hidden(self, h, f):
        """T5DenseActDense / T5DenseGatedActDense up to wo: act(wi h) or act(wi_0 h) * wi_1 h."""
        act = ACTS[self.c["act"]]
        if self.c["gated"]:
            return act(h @ self.w[f + "DenseReluDense.wi_0.weight"].T) * (h @ self.w[f + "DenseReluDense.wi_1.weight"].T)
        return act(h @ self.w[f + "DenseReluDense.wi.weight"].T)

    def stack(self, which, ids, mask, enc_out=None, enc_mask=None):
        c = self.c
        dec = which == "decoder"
        x = self.w["shared.weight"][ids]  # no scaling, no absolute positions
        T = ids.shape[1]
        bk = relative_buckets(T, T, not dec, c["buckets"], c["maxd"])
        rel = self.w[which + ".block.0.layer.0.SelfAttention.relative_attention_bias.weight"][bk]  # [T, T, H]
        hide = (mask == 0)[:, None, None, :]
        if dec:
            hide = hide | (np.arange(T)[None, :] > np.arange(T)[:, None])[None, None]
        bias = rel.transpose(2, 0, 1)[None] + np.where(hide, -np.inf, 0.0).astype(self.dtype)  # [B, H, T, T]
        if dec:
            cross = np.where((enc_mask == 0)[:, None, None, :], -np.inf, 0.0).astype(self.dtype)
        site = "dec" if dec else "enc"
        for l in range(c["Ld"] if dec else c["L"]):
            p = "%s.block.%d.layer." % (which, l)
            x = x + self.attention(self.norm(x, p + "0.layer_norm.weight"), self.norm(x, p + "0.layer_norm.weight"),
                                   p + "0.SelfAttention.", bias)
            if dec:
                x = x + self.attention(self.norm(x, p + "1.layer_norm.weight"), enc_out, p + "1.EncDecAttention.",
                                       cross)
            f = p + ("2." if dec else "1.")
            h = self.norm(x, f + "layer_norm.weight")
            a = self.ffn_hidden(h, f)
            self.hooks["%s.blk.%d.ffn_in" % (site, l)] = h
            self.hooks["%s.blk.%d.ffn_act" % (site, l)] = a
            x = x + a @ self.w[f + "DenseReluDense.wo.weight"].T
        return self.norm(x, which + ".final_layer_norm.weight")

    def forward(self, src, src_mask, tgt, tgt_mask):
        enc = self.stack("encoder", src, src_mask)
        out = self.stack("decoder", tgt, tgt_mask, enc, src_mask)
        if self.c["tied"]:
            return (out * self.c["C"] ** -0.5) @ self.w["shared.weight"].T
        return out @ self.w["lm_head.weight"].T


    # -- greedy generation with a decoder cache, after HF's generate() (greedy
    # search: num_beams 1, do_sample false) and T5Attention with past_key_value.

    def head(self, out):
        if self.c["tied"]:
            return (out * self.c["C"] ** -0.5) @ self.w["shared.weight"].T
        return out @ self.w["lm_head.weight"].T

    def proj(self, x, name):
        B, S, _ = x.shape
        return (x @ self.w[name].T).reshape(B, S, self.c["H"], self.c["D"]).transpose(0, 2, 1, 3)  # [B, H, S, D]

    def attend(self, x, k, v, prefix, bias):
        B, T, _ = x.shape
        q = self.proj(x, prefix + "q.weight")
        s = q @ k.transpose(0, 1, 3, 2) + bias
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(B, T, -1) @ self.w[prefix + "o.weight"].T

    def decoder_step(self, ids, past, cross, enc_mask):
        """One token per sequence, ids [B, 1], at position len(past); `past` is
        HF's past_key_values: per layer (self k, self v, cross k, cross v), the
        self ones [B, H, past, D] (None at the first step), the cross ones
        projected from the encoder output at the first step and reused."""
        c = self.c
        x = self.w["shared.weight"][ids]
        past_len = 0 if past[0][0] is None else past[0][0].shape[2]
        real = past_len + 1
        # compute_bias(real_seq_length, key_length), then its last query row(s):
        # position_bias[:, :, -seq_length:, :]. No causal mask is needed: the
        # one query sees every key up to itself.
        bk = relative_buckets(real, real, False, c["buckets"], c["maxd"])
        rel = self.w["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][bk]
        bias = rel.transpose(2, 0, 1)[None][:, :, -1:, :]  # [1, H, 1, real]
        cross_bias = np.where((enc_mask == 0)[:, None, None, :], -np.inf, 0.0).astype(self.dtype)
        new = []
        for l in range(c["Ld"]):
            p = "decoder.block.%d.layer." % l
            n = self.norm(x, p + "0.layer_norm.weight")
            k = self.proj(n, p + "0.SelfAttention.k.weight")
            v = self.proj(n, p + "0.SelfAttention.v.weight")
            if past[l][0] is not None:
                k = np.concatenate([past[l][0], k], axis=2)
                v = np.concatenate([past[l][1], v], axis=2)
            x = x + self.attend(n, k, v, p + "0.SelfAttention.", bias)
            n = self.norm(x, p + "1.layer_norm.weight")
            x = x + self.attend(n, cross[l][0], cross[l][1], p + "1.EncDecAttention.", cross_bias)
            f = p + "2."
            x = x + self.ffn_hidden(self.norm(x, f + "layer_norm.weight"), f) @ self.w[f + "DenseReluDense.wo.weight"].T
            new.append((k, v))
        return self.norm(x, "decoder.final_layer_norm.weight"), new

    def generate(self, src_seqs, max_new_tokens, eos_ids, pad_id, start_id):
        """-> (sequences [B, 1 + steps] int64 starting with start_id, pad after a
        sequence's eos, as generate() returns; scores [B, steps, vocab], the
        logits of every step for every row, finished rows included)."""
        src, src_mask = batch(src_seqs)
        enc = self.stack("encoder", src, src_mask)
        B = len(src_seqs)
        cross = [(self.proj(enc, "decoder.block.%d.layer.1.EncDecAttention.k.weight" % l),
                  self.proj(enc, "decoder.block.%d.layer.1.EncDecAttention.v.weight" % l)) for l in range(self.c["Ld"])]
        past = [(None, None)] * self.c["Ld"]
        seqs = np.full((B, 1), start_id, np.int64)
        unfinished = np.ones(B, bool)
        scores = []
        while True:
            out, past = self.decoder_step(seqs[:, -1:], past, cross, src_mask)
            logits = self.head(out)[:, -1]  # [B, vocab]
            scores.append(logits)
            nxt = np.where(unfinished, logits.argmax(-1), pad_id)  # finished rows emit pad
            seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
            unfinished &= ~np.isin(nxt, eos_ids)
            if not unfinished.any() or seqs.shape[1] - 1 >= max_new_tokens:
                return seqs, np.stack(scores, axis=1)

    def generate_uncached(self, src_seqs, max_new_tokens, eos_ids, pad_id, start_id):
        """The same search without a cache: the whole forward pass on the growing prefix."""
        src, src_mask = batch(src_seqs)
        B = len(src_seqs)
        seqs = np.full((B, 1), start_id, np.int64)
        unfinished = np.ones(B, bool)
        scores = []
        while True:
            logits = self.forward(src, src_mask, seqs, np.ones_like(seqs))[:, -1]
            scores.append(logits)
            nxt = np.where(unfinished, logits.argmax(-1), pad_id)
            seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
            unfinished &= ~np.isin(nxt, eos_ids)
            if not unfinished.any() or seqs.shape[1] - 1 >= max_new_tokens:
                return seqs, np.stack(scores, axis=1)


def batch(seqs):
    T = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), T), np.int64)
    mask = np.zeros((len(seqs), T), np.int64)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = s
        mask[b, :len(s)] = 1
    return ids, mask


def hook_order(name):
    site, _, layer, what = name.split(".")
    return (site != "enc", int(layer), what)


def cmd_forward(argv):
    ap = argparse.ArgumentParser(prog="t5_ref.py forward")
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--decoder-ids", action="append", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if len(a.ids) != len(a.decoder_ids):
        raise SystemExit("t5_ref: give one --decoder-ids per --ids")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "t5":
        raise SystemExit("t5_ref: model_type %r is not t5" % cfg.get("model_type"))
    parse = lambda s: [int(t) for t in s.split(",")]  # noqa: E731
    src, src_mask = batch([parse(s) for s in a.ids])
    tgt, tgt_mask = batch([parse(s) for s in a.decoder_ids])
    ref = T5Ref(cfg, load_weights(a.model))
    logits = ref.forward(src, src_mask, tgt, tgt_mask)
    out = [("logits", "F32", logits.astype(np.float32))]
    for name in sorted(ref.hooks, key=hook_order):
        out.append((name, "F32", ref.hooks[name].astype(np.float32)))
    st_io.write(a.out, out, {"reference": "scripts/ref/t5_ref.py"})
    return 0


def config_ids(cfg, key, default):
    v = cfg.get(key, default)
    return list(v) if isinstance(v, list) else [v]


def cmd_generate(argv):
    ap = argparse.ArgumentParser(prog="t5_ref.py generate")
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--eos", type=int, action="append", help="stop id (default: config eos_token_id, else 1)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.max_new_tokens < 1:
        raise SystemExit("t5_ref: --max-new-tokens must be >= 1")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "t5":
        raise SystemExit("t5_ref: model_type %r is not t5" % cfg.get("model_type"))
    eos = a.eos if a.eos else config_ids(cfg, "eos_token_id", 1)
    pad = config_ids(cfg, "pad_token_id", 0)[0]
    start = cfg.get("decoder_start_token_id", 0)
    ref = T5Ref(cfg, load_weights(a.model))
    seqs, scores = ref.generate([[int(t) for t in s.split(",")] for s in a.ids], a.max_new_tokens, eos, pad, start)
    st_io.write(a.out, [("sequences", "I64", seqs), ("scores", "F32", scores.astype(np.float32))],
                {"reference": "scripts/ref/t5_ref.py generate"})
    return 0


def cmd_stats(argv):
    """The recorder's statistics of one FFN site (docs/formats.md "Recording")
    over the real (unpadded) tokens of a teacher-forced batch: count (h > 0,
    the `positive` rule), sum, sumsq and max of h, and the binary co-activation
    counts, from this reference's float64 hidden."""
    ap = argparse.ArgumentParser(prog="t5_ref.py stats")
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--decoder-ids", action="append", required=True)
    ap.add_argument("--site", required=True, help="enc.blk.L or dec.blk.L")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if len(a.ids) != len(a.decoder_ids):
        raise SystemExit("t5_ref: give one --decoder-ids per --ids")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    parse = lambda s: [int(t) for t in s.split(",")]  # noqa: E731
    src, src_mask = batch([parse(s) for s in a.ids])
    tgt, tgt_mask = batch([parse(s) for s in a.decoder_ids])
    ref = T5Ref(cfg, load_weights(a.model))
    ref.forward(src, src_mask, tgt, tgt_mask)
    name = a.site + ".ffn_act"
    if name not in ref.hooks:
        raise SystemExit("t5_ref: no hook %r" % name)
    h = ref.hooks[name]  # [B, T, d_ff] float64
    mask = src_mask if a.site.startswith("enc.") else tgt_mask
    rows = h[mask.astype(bool)]  # [N, d_ff]: padding positions dropped
    act = (rows > 0).astype(np.float64)
    out = [("count", "F64", act.sum(0)), ("sum", "F64", rows.sum(0)), ("sumsq", "F64", (rows * rows).sum(0)),
           ("max", "F64", rows.max(0)), ("coact", "F64", act.T @ act),
           ("tokens", "F64", np.array([float(rows.shape[0])]))]
    st_io.write(a.out, out, {"reference": "scripts/ref/t5_ref.py stats"})
    return 0


def cmd_loss(argv):
    """Teacher-forced cross-entropy as T5ForConditionalGeneration computes it
    with labels (modeling_t5.py: decoder_input_ids = _shift_right(labels),
    CrossEntropyLoss(ignore_index=-100) over the padded labels), summed over
    the label tokens of all pairs, and the active (> 0) share of every FFN
    site's hidden units over the real tokens. Prints JSON."""
    ap = argparse.ArgumentParser(prog="t5_ref.py loss")
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True, help="source ids (with </s>)")
    ap.add_argument("--labels", action="append", required=True, help="target ids (with </s>)")
    a = ap.parse_args(argv)
    if len(a.ids) != len(a.labels):
        raise SystemExit("t5_ref: give one --labels per --ids")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    parse = lambda s: [int(t) for t in s.split(",")]  # noqa: E731
    start = cfg.get("decoder_start_token_id", 0)
    labels = [parse(s) for s in a.labels]
    # _shift_right: decoder_start_token_id, then the labels without their last token.
    src, src_mask = batch([parse(s) for s in a.ids])
    tgt, tgt_mask = batch([[start] + l[:-1] for l in labels])
    ref = T5Ref(cfg, load_weights(a.model))
    logits = ref.forward(src, src_mask, tgt, tgt_mask)  # [B, T, V] float64
    total, count = 0.0, 0
    for b, l in enumerate(labels):
        z = logits[b, :len(l)]
        m = z.max(-1, keepdims=True)
        logp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
        total -= float(logp[np.arange(len(l)), l].sum())
        count += len(l)
    active = {}
    for name in sorted(ref.hooks, key=hook_order):
        if not name.endswith(".ffn_act"):
            continue
        site = name[:-len(".ffn_act")]
        mask = src_mask if site.startswith("enc.") else tgt_mask
        rows = ref.hooks[name][mask.astype(bool)]
        active[site] = float((rows > 0).mean())
    print(json.dumps({"loss_sum": total, "tokens": count, "loss": total / count, "active_fraction": active}))
    return 0


def cmd_make(argv):
    import make_checkpoint  # registers the T5 variants; imported here to avoid a cycle
    return make_checkpoint.main(argv)


# ---------------------------------------------------------------------------
# selftest

def mesh_tf_bucket(rel, bidirectional, num_buckets, max_distance):
    """Scalar transcription of Mesh TensorFlow's _relative_position_bucket
    (transformer_layers.py), in python floats."""
    ret = 0
    n = -rel
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    v = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(v, num_buckets - 1)


def selftest():
    import make_checkpoint
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    # 1. buckets: scalar Mesh TF definition vs the vectorised float32 / float64 ones.
    for nb, md in ((32, 128), (8, 13), (16, 21), (12, 17)):
        for bidir in (True, False):
            rel = np.arange(-300, 301)
            want = np.array([mesh_tf_bucket(int(r), bidir, nb, md) for r in rel])
            got64 = buckets_of(rel, bidir, nb, md, np.float64)
            got32 = buckets_of(rel, bidir, nb, md, np.float32)
            edge = rel[got32 != want]
            check(np.array_equal(got64, want), "buckets %d/%d %s: float64 = Mesh TF definition" %
                  (nb, md, "bidirectional" if bidir else "causal"))
            check(got32.min() >= 0 and got32.max() < nb, "buckets %d/%d in [0, %d)" % (nb, md, nb))
            print("     float32 differs from float64 at distances %s (HF's float32 decides there)" % list(edge)
                  if len(edge) else "     float32 agrees everywhere in [-300, 300]")
    b = buckets_of(np.arange(-300, 1), False, 32, 128, np.float32)
    check(np.all(np.diff(b[::-1]) >= 0) and b[0] == 31 and b[-1] == 0, "causal buckets grow with distance, far keys share 31")

    # 2. per variant: invariances of the forward pass.
    seqs_src = [[5, 17, 3, 99, 42, 7, 1, 64, 23, 11, 2, 1], [8, 9, 10, 11, 100, 1]]
    seqs_tgt = [[0, 4, 55, 13, 8, 1], [0, 71, 3, 1]]
    for name in sorted(VARIANTS):
        cfg, t = build(VARIANTS[name], make_checkpoint.Init(1))
        ref = T5Ref(cfg, t)
        src, sm = batch(seqs_src)
        tgt, tm = batch(seqs_tgt)
        logits = ref.forward(src, sm, tgt, tm)
        hooks = dict(ref.hooks)
        worst = 0.0
        for b in range(2):
            one = T5Ref(cfg, t)
            s1, m1 = batch([seqs_src[b]])
            t1, n1 = batch([seqs_tgt[b]])
            l1 = one.forward(s1, m1, t1, n1)
            worst = max(worst, np.abs(l1[0] - logits[b, :len(seqs_tgt[b])]).max())
            for k, v in one.hooks.items():
                n = len(seqs_src[b]) if k.startswith("enc") else len(seqs_tgt[b])
                worst = max(worst, np.abs(v[0] - hooks[k][b, :n]).max())
        check(worst < 1e-12, "%s: padded batch = each sequence alone (max diff %.2g)" % (name, worst))
        src2, sm2 = batch([s + [0, 0, 0] for s in seqs_src])
        sm2[:, src.shape[1]:] = 0
        for b, s in enumerate(seqs_src):
            sm2[b, len(s):] = 0
        l2 = T5Ref(cfg, t).forward(src2, sm2, tgt, tm)
        d = max(np.abs(l2[b, :len(seqs_tgt[b])] - logits[b, :len(seqs_tgt[b])]).max() for b in range(2))
        check(d < 1e-12, "%s: extra source padding changes nothing (max diff %.2g)" % (name, d))
        tgt3 = tgt.copy()
        tgt3[0, len(seqs_tgt[0]) - 1] = 77
        l3 = T5Ref(cfg, t).forward(src, sm, tgt3, tm)
        n = len(seqs_tgt[0]) - 1
        check(np.abs(l3[0, :n] - logits[0, :n]).max() < 1e-12 and np.abs(l3[0, n] - logits[0, n]).max() > 1e-6,
              "%s: decoder position t sees positions <= t only" % name)
        l32 = T5Ref(cfg, t, np.float32).forward(src, sm, tgt, tm)
        d32 = max(np.abs(l32[b, :len(seqs_tgt[b])] - logits[b, :len(seqs_tgt[b])]).max() for b in range(2))
        check(d32 < 1e-5, "%s: float32 run within %.2g of float64 (test tolerance 1e-4)" % (name, d32))
        check(np.abs(logits).max() > 0.5, "%s: logits are not trivially small (max |logit| %.3g)" % (name, np.abs(logits).max()))
        if cfg["tie_word_embeddings"]:
            u = dict(cfg, tie_word_embeddings=False)
            tu = dict(t)
            tu["lm_head.weight"] = (t["shared.weight"].astype(np.float64) * cfg["d_model"] ** -0.5)
            lu = T5Ref(u, tu).forward(src, sm, tgt, tm)
            d = np.abs(lu - logits).max()
            check(d < 1e-9, "%s: tied = untied with lm_head = shared * d_model^-0.5 (max diff %.2g)" % (name, d))
    # 3. generation: the cached search (HF's past_key_values, the bias row of the
    # last query) equals the uncached one, a batch equals each source alone,
    # and an eos id stops a sequence (pad after it) while the others go on.
    srcs = [[5, 17, 3, 99, 42, 7, 1, 64, 23, 11, 2, 1], [8, 9, 10, 11, 100, 1], [44, 1]]
    for name in sorted(VARIANTS):
        cfg, t = build(VARIANTS[name], make_checkpoint.Init(1))
        ref = T5Ref(cfg, t)
        seqs, sc = ref.generate(srcs, 20, [1], 0, 0)
        seqs2, sc2 = ref.generate_uncached(srcs, 20, [1], 0, 0)
        d = np.abs(sc - sc2).max() if sc.shape == sc2.shape else np.inf
        check(np.array_equal(seqs, seqs2) and d < 1e-10,
              "%s: cached generation = uncached (%d steps, max logit diff %.2g)" % (name, seqs.shape[1] - 1, d))
        worst = 0.0
        for b, s1 in enumerate(srcs):
            one, sc1 = ref.generate([s1], 20, [1], 0, 0)
            n = one.shape[1]
            same = np.array_equal(one[0], seqs[b, :n]) and np.all(seqs[b, n:] == 0)
            worst = max(worst, np.abs(sc1[0] - sc[b, :n - 1]).max() if same else np.inf)
        check(worst < 1e-10, "%s: batched generation = each source alone (max logit diff %.2g)" % (name, worst))
        stop = int(seqs[0, 3])  # the third generated token of source 0 as the stop id
        first = next(i for i in range(1, seqs.shape[1]) if seqs[0, i] == stop)
        st, _ = ref.generate(srcs, 20, [stop], 0, 0)
        check(st.shape[1] - 1 <= 20 and np.array_equal(st[0, :first + 1], seqs[0, :first + 1]) and
              np.all(st[0, first + 1:] == 0), "%s: eos id %d stops source 0 after %d tokens" % (name, stop, first))
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
    cmds = {"make": cmd_make, "forward": cmd_forward, "generate": cmd_generate, "stats": cmd_stats, "loss": cmd_loss,
            "selftest": lambda a: selftest()}
    if argv[0] not in cmds:
        raise SystemExit("t5_ref: unknown command %r (make, forward, generate, stats, selftest, --list)" % argv[0])
    return cmds[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
