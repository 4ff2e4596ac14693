#!/usr/bin/env python3
"""Independent reference forward pass for the architectures moefy supports.

usage: ref_forward.py MODEL_DIR --ids 1,2,3 [--ids 4,5 ...] --out OUT.safetensors
                      [--precision float64|float32]

Written from the Hugging Face modeling semantics (GPT2LMHeadModel,
LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM,
Olmo2ForCausalLM, OPTForCausalLM, BertForMaskedLM and modeling_rope_utils'
linear / dynamic / llama3 / yarn RoPE), in plain torch tensor algebra,
without moefy's code. Several
--ids make a right-padded batch with an attention mask (pad id 0). Writes F32
`logits` [B, T, vocab], `blk.L.ffn_in` [B, T, d_model] (the FFN input after
its norm) and `blk.L.ffn_act` [B, T, d_ff] (the hidden entering the down
projection). Stored F16/BF16 weights are upcast to F32 first; the arithmetic
runs in float64 by default.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def load_weights(d):
    index = os.path.join(d, "model.safetensors.index.json")
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(index) as f:
            files = sorted({os.path.join(d, v) for v in json.load(f)["weight_map"].values()})
    w = {}
    for path in files:
        w.update(st_io.read_f32(path))
    return w


class Ref:
    def __init__(self, cfg, weights, dtype):
        self.cfg = cfg
        self.dtype = dtype
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(dtype) for k, v in weights.items()}
        self.hooks = {}

    def get(self, name):
        return self.w[name]

    def opt_get(self, name):
        return self.w.get(name)

    # --- building blocks, as the HF modules define them -----------------
    @staticmethod
    def layer_norm(x, w, b, eps):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as nn.LayerNorm
        return (x - mu) / torch.sqrt(var + eps) * w + b

    @staticmethod
    def rms_norm(x, w, eps):
        return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    @staticmethod
    def act(x, name):
        if name == "relu":
            return torch.clamp(x, min=0)
        if name == "gelu":  # exact, erf-based
            return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
        if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        if name in ("silu", "swish"):
            return x / (1.0 + torch.exp(-x))
        raise SystemExit("ref_forward: unsupported activation " + name)

    @staticmethod
    def lin(x, w, b=None):  # nn.Linear: w is [out, in]
        y = torch.einsum("...i,oi->...o", x, w)
        return y if b is None else y + b

    @staticmethod
    def attend(q, k, v, allowed):
        """q [B,H,T,D], k/v [B,H,T,D], allowed [B,1,T,T] bool -> [B,T,H*D]."""
        d = q.shape[-1]
        s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
        # A large finite negative, not -inf: a padded query whose window holds only
        # padding must not turn into NaN (0 * NaN would reach the valid positions
        # through the next layer's values); HF adds finfo.min likewise.
        s = s.masked_fill(~allowed, -1e30)
        p = torch.softmax(s, dim=-1)
        o = torch.einsum("bhij,bhjd->bhid", p, v)
        B, Hh, T, D = o.shape
        return o.permute(0, 2, 1, 3).reshape(B, T, Hh * D)

    @staticmethod
    def heads(x, n):
        B, T, F = x.shape
        return x.reshape(B, T, n, F // n).permute(0, 2, 1, 3)

    def record(self, l, ffn_in, ffn_act):
        self.hooks["blk.%d.ffn_in" % l] = ffn_in
        self.hooks["blk.%d.ffn_act" % l] = ffn_act

    # --- masks -----------------------------------------------------------
    @staticmethod
    def allowed(mask, causal, window=None):
        B, T = mask.shape
        i = torch.arange(T).view(T, 1)
        j = torch.arange(T).view(1, T)
        ok = mask.bool().view(B, 1, 1, T).expand(B, 1, T, T).clone()
        if causal:
            ok &= (j <= i).view(1, 1, T, T)
        if window:
            ok &= (j > i - window).view(1, 1, T, T)
        return ok

    # --- architectures ---------------------------------------------------
    def gpt2(self, ids, mask):
        c = self.cfg
        p = "transformer." if "transformer.wte.weight" in self.w else ""
        C, H = c["n_embd"], c["n_head"]
        eps = c.get("layer_norm_epsilon", 1e-5)
        act = c.get("activation_function", "gelu_new")
        B, T = ids.shape
        x = self.get(p + "wte.weight")[ids] + self.get(p + "wpe.weight")[torch.arange(T)].unsqueeze(0)
        ok = self.allowed(mask, True)
        for l in range(c["n_layer"]):
            q = p + "h.%d." % l
            a = self.layer_norm(x, self.get(q + "ln_1.weight"), self.get(q + "ln_1.bias"), eps)
            # Conv1D: y = x @ W + b with W stored [in, out]
            qkv = a @ self.get(q + "attn.c_attn.weight") + self.get(q + "attn.c_attn.bias")
            qq, kk, vv = qkv.split(C, dim=-1)
            # GPT2Attention: / sqrt(head_dim) only if scale_attn_weights; / (layer + 1) if
            # scale_attn_by_inverse_layer_idx. attend() divides by sqrt(head_dim) itself.
            sc = 1.0 if c.get("scale_attn_weights", True) else math.sqrt(C // H)
            if c.get("scale_attn_by_inverse_layer_idx", False):
                sc /= float(l + 1)
            o = self.attend(self.heads(qq, H) * sc, self.heads(kk, H), self.heads(vv, H), ok)
            x = x + o @ self.get(q + "attn.c_proj.weight") + self.get(q + "attn.c_proj.bias")
            m = self.layer_norm(x, self.get(q + "ln_2.weight"), self.get(q + "ln_2.bias"), eps)
            h = self.act(m @ self.get(q + "mlp.c_fc.weight") + self.get(q + "mlp.c_fc.bias"), act)
            self.record(l, m, h)
            x = x + h @ self.get(q + "mlp.c_proj.weight") + self.get(q + "mlp.c_proj.bias")
        x = self.layer_norm(x, self.get(p + "ln_f.weight"), self.get(p + "ln_f.bias"), eps)
        head = self.opt_get("lm_head.weight")
        if head is None:
            head = self.get(p + "wte.weight")
        return self.lin(x, head)

    # --- RoPE (HF modeling_rope_utils semantics) ---------------------------
    @staticmethod
    def rope_inv_freq(theta, dim, scaling, max_pos, seq_len):
        """Inverse frequencies [dim/2] (float64) and the cos/sin attention factor."""
        def default(base):
            return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))

        if not scaling:
            return default(theta), 1.0
        kind = scaling.get("rope_type", scaling.get("type"))
        f = scaling.get("factor", 1.0)
        if kind == "default":
            return default(theta), 1.0
        if kind == "linear":  # positions divided by factor
            return default(theta) / f, 1.0
        if kind == "dynamic":  # NTK-aware base, grown once the sequence passes max_position_embeddings
            base = theta
            if seq_len > max_pos:
                base = theta * ((f * seq_len / max_pos) - (f - 1)) ** (dim / (dim - 2))
            return default(base), 1.0
        if kind == "llama3":
            inv = default(theta)
            old = scaling["original_max_position_embeddings"]
            lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
            out = inv.clone()
            for i, w in enumerate((2 * math.pi / inv).tolist()):
                if w < old / hi:  # high frequency: unchanged
                    continue
                if w > old / lo:  # low frequency: interpolated by factor
                    out[i] = inv[i] / f
                else:  # in between: smooth mix
                    sm = (old / w - lo) / (hi - lo)
                    out[i] = (1 - sm) * inv[i] / f + sm * inv[i]
            return out, 1.0
        if kind == "yarn":
            orig = scaling.get("original_max_position_embeddings") or max_pos
            # transformers 4.4x-4.5x replace factor by max_position_embeddings / original when the block
            # names original_max_position_embeddings; v5 uses factor as given. Model only configs where
            # both agree.
            if "original_max_position_embeddings" in scaling and abs(max_pos / orig - f) > 1e-12:
                raise SystemExit("ref_forward: yarn factor %g != max_position_embeddings / "
                                 "original_max_position_embeddings (%d / %d): transformers versions differ" %
                                 (f, max_pos, orig))
            bf = scaling.get("beta_fast") or 32
            bs = scaling.get("beta_slow") or 1

            def ms(scale, m=1.0):
                return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

            att = scaling.get("attention_factor")
            if att is None:
                m, mall = scaling.get("mscale"), scaling.get("mscale_all_dim")
                att = ms(f, m) / ms(f, mall) if (m and mall) else ms(f)

            def cdim(rot):  # dimension index whose wavelength fits `rot` turns in the original context
                return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))

            lo, hi = cdim(bf), cdim(bs)
            if scaling.get("truncate", True):
                lo, hi = math.floor(lo), math.ceil(hi)
            lo, hi = max(lo, 0), min(hi, dim - 1)
            if lo == hi:
                hi += 0.001
            ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float64) - lo) / (hi - lo), 0, 1)
            keep = 1 - ramp  # share of the unscaled (extrapolated) frequency
            inv = default(theta)
            return (inv / f) * (1 - keep) + inv * keep, att
        raise SystemExit("ref_forward: rope_type %r is not modelled" % kind)

    def decoder(self, ids, mask):
        """LLaMA-style decoders: llama, mistral, qwen2, qwen3, gemma, gemma2,
        gemma3_text, phi3, olmo2 (HF modeling_<type>.py semantics)."""
        c = self.cfg
        mt = c["model_type"]
        gemma = mt in ("gemma", "gemma2", "gemma3_text")
        C, H = c["hidden_size"], c["num_attention_heads"]
        KV = c.get("num_key_value_heads") or H
        default_hd = 128 if mt == "qwen3" else (256 if gemma else C // H)
        # Olmo2Attention: getattr(config, "head_dim", hidden_size // num_heads), like the llama family.
        D = c.get("head_dim") or default_hd
        eps = c.get("rms_norm_eps", 1e-5 if mt in ("phi3", "olmo2") else 1e-6)
        if gemma:
            act = c.get("hidden_activation") or (c.get("hidden_act") if mt == "gemma" else None) or "gelu_pytorch_tanh"
        else:
            act = c.get("hidden_act", "silu")
        nl = c["num_hidden_layers"]
        max_pos = c.get("max_position_embeddings")
        B, T = ids.shape

        # Which layers use a sliding window, and its size.
        window = None
        sliding = [False] * nl
        if mt == "mistral":
            window = c.get("sliding_window", 4096)
            sliding = [True] * nl
        elif mt == "phi3":
            window = c.get("sliding_window")
            sliding = [True] * nl
        elif mt in ("gemma2", "gemma3_text"):
            window = c.get("sliding_window", 4096)
            if c.get("layer_types"):
                sliding = [lt == "sliding_attention" for lt in c["layer_types"]]
            elif mt == "gemma2":
                sliding = [i % 2 == 0 for i in range(nl)]
            else:
                pat = c.get("sliding_window_pattern", 6)
                sliding = [(i + 1) % pat != 0 for i in range(nl)]
        elif mt in ("qwen2", "qwen3") and c.get("use_sliding_window"):
            raise SystemExit("ref_forward: qwen use_sliding_window is not modelled")

        # Attention scaling and soft-capping.
        scaling = D ** -0.5
        if mt in ("gemma2", "gemma3_text"):
            scaling = c.get("query_pre_attn_scalar", 256) ** -0.5
        softcap = c.get("attn_logit_softcapping", 50.0 if mt == "gemma2" else None) if mt in ("gemma2", "gemma3_text") else None
        final_cap = c.get("final_logit_softcapping", 30.0 if mt == "gemma2" else None) if mt in ("gemma2", "gemma3_text") else None

        # RoPE tables: the rotated part of each head is int(head_dim * partial_rotary_factor) dims.
        rot = int(D * c.get("partial_rotary_factor", 1.0))
        theta = c.get("rope_theta", 1000000.0 if mt == "gemma3_text" else 10000.0)

        def tables(th, sc):
            inv, att = self.rope_inv_freq(th, rot, sc, max_pos, T)
            ang = torch.arange(T, dtype=torch.float64).view(T, 1) * inv.view(1, -1)
            ang = torch.cat([ang, ang], dim=-1)
            return (torch.cos(ang) * att).to(self.dtype), (torch.sin(ang) * att).to(self.dtype)

        rope_global = tables(theta, c.get("rope_scaling"))
        rope_local = rope_global
        if mt == "gemma3_text":  # sliding layers: default RoPE on the local base
            rope_local = tables(c.get("rope_local_base_freq", 10000.0), None)

        def rope(t, cs):
            cos, sin = cs
            r, rest = t[..., :rot], t[..., rot:]
            half = rot // 2
            rr = torch.cat([-r[..., half:], r[..., :half]], dim=-1)
            return torch.cat([r * cos + rr * sin, rest], dim=-1)

        def norm(x, name):
            w = self.get(name)
            if gemma:  # Gemma RMSNorm: (1 + w)
                w = 1.0 + w
            return self.rms_norm(x, w, eps)

        x = self.get("model.embed_tokens.weight")[ids]
        if gemma:
            x = x * math.sqrt(C)
        ok_full = self.allowed(mask, True)
        ok_win = self.allowed(mask, True, window)
        for l in range(nl):
            q = "model.layers.%d." % l
            sa = q + "self_attn."

            def attention(a):
                if mt == "phi3":  # fused [q; k; v]
                    qkv = self.lin(a, self.get(sa + "qkv_proj.weight"))
                    qq, kk, vv = qkv[..., :H * D], qkv[..., H * D:(H + KV) * D], qkv[..., (H + KV) * D:]
                else:
                    qq = self.lin(a, self.get(sa + "q_proj.weight"), self.opt_get(sa + "q_proj.bias"))
                    kk = self.lin(a, self.get(sa + "k_proj.weight"), self.opt_get(sa + "k_proj.bias"))
                    vv = self.lin(a, self.get(sa + "v_proj.weight"), self.opt_get(sa + "v_proj.bias"))
                if mt == "olmo2":  # q/k norms over the whole projection
                    qq, kk = norm(qq, sa + "q_norm.weight"), norm(kk, sa + "k_norm.weight")
                qh, kh, vh = self.heads(qq, H), self.heads(kk, KV), self.heads(vv, KV)
                if mt in ("qwen3", "gemma3_text"):  # per-head q/k norms
                    qh, kh = norm(qh, sa + "q_norm.weight"), norm(kh, sa + "k_norm.weight")
                cs = rope_local if sliding[l] else rope_global
                qh, kh = rope(qh, cs), rope(kh, cs)
                rep = H // KV
                kh = kh.repeat_interleave(rep, dim=1)
                vh = vh.repeat_interleave(rep, dim=1)
                s = torch.einsum("bhid,bhjd->bhij", qh, kh) * scaling
                if softcap:
                    s = torch.tanh(s / softcap) * softcap
                s = s.masked_fill(~(ok_win if (sliding[l] and window) else ok_full), -1e30)
                o = torch.einsum("bhij,bhjd->bhid", torch.softmax(s, dim=-1), vh)
                o = o.permute(0, 2, 1, 3).reshape(B, T, H * D)
                return self.lin(o, self.get(sa + "o_proj.weight"), self.opt_get(sa + "o_proj.bias"))

            def mlp(m):
                if mt == "phi3":  # fused [gate; up]
                    gu = self.lin(m, self.get(q + "mlp.gate_up_proj.weight"))
                    g, u = gu.chunk(2, dim=-1)
                else:
                    g = self.lin(m, self.get(q + "mlp.gate_proj.weight"))
                    u = self.lin(m, self.get(q + "mlp.up_proj.weight"))
                h = self.act(g, act) * u
                self.record(l, m, h)
                return self.lin(h, self.get(q + "mlp.down_proj.weight"))

            if mt == "olmo2":  # norms on the sub-layer outputs
                x = x + norm(attention(x), q + "post_attention_layernorm.weight")
                x = x + norm(mlp(x), q + "post_feedforward_layernorm.weight")
            elif mt in ("gemma2", "gemma3_text"):  # pre and post norms around both sub-layers
                x = x + norm(attention(norm(x, q + "input_layernorm.weight")), q + "post_attention_layernorm.weight")
                x = x + norm(mlp(norm(x, q + "pre_feedforward_layernorm.weight")), q + "post_feedforward_layernorm.weight")
            else:
                x = x + attention(norm(x, q + "input_layernorm.weight"))
                x = x + mlp(norm(x, q + "post_attention_layernorm.weight"))
        x = norm(x, "model.norm.weight")
        head = self.opt_get("lm_head.weight")
        if head is None:
            head = self.get("model.embed_tokens.weight")
        logits = self.lin(x, head)
        if final_cap:
            logits = torch.tanh(logits / final_cap) * final_cap
        return logits

    def opt(self, ids, mask):
        c = self.cfg
        p = "model.decoder." if "model.decoder.embed_tokens.weight" in self.w else "decoder."
        H = c["num_attention_heads"]
        pre = c.get("do_layer_norm_before", True)
        act = c.get("activation_function", "relu")
        eps = 1e-5
        B, T = ids.shape
        x = self.get(p + "embed_tokens.weight")[ids]
        if self.opt_get(p + "project_in.weight") is not None:
            x = self.lin(x, self.get(p + "project_in.weight"))
        # Learned positions count non-padding tokens, offset by 2.
        pos = (torch.cumsum(mask, dim=1) * mask - 1).long() + 2
        x = x + self.get(p + "embed_positions.weight")[pos]
        ok = self.allowed(mask, True)
        for l in range(c["num_hidden_layers"]):
            q = p + "layers.%d." % l
            sa = q + "self_attn."
            ln1 = (self.get(q + "self_attn_layer_norm.weight"), self.get(q + "self_attn_layer_norm.bias"))
            ln2 = (self.get(q + "final_layer_norm.weight"), self.get(q + "final_layer_norm.bias"))
            res = x
            if pre:
                x = self.layer_norm(x, *ln1, eps)
            D = x.shape[-1] // H
            qq = self.lin(x, self.get(sa + "q_proj.weight"), self.get(sa + "q_proj.bias")) * D ** -0.5
            kk = self.lin(x, self.get(sa + "k_proj.weight"), self.get(sa + "k_proj.bias"))
            vv = self.lin(x, self.get(sa + "v_proj.weight"), self.get(sa + "v_proj.bias"))
            # q is pre-scaled: undo attend()'s own 1/sqrt(D)
            o = self.attend(self.heads(qq, H) * math.sqrt(D), self.heads(kk, H), self.heads(vv, H), ok)
            x = res + self.lin(o, self.get(sa + "out_proj.weight"), self.get(sa + "out_proj.bias"))
            if not pre:
                x = self.layer_norm(x, *ln1, eps)
            res = x
            if pre:
                x = self.layer_norm(x, *ln2, eps)
            h = self.act(self.lin(x, self.get(q + "fc1.weight"), self.get(q + "fc1.bias")), act)
            self.record(l, x, h)
            x = res + self.lin(h, self.get(q + "fc2.weight"), self.get(q + "fc2.bias"))
            if not pre:
                x = self.layer_norm(x, *ln2, eps)
        if self.opt_get(p + "final_layer_norm.weight") is not None:
            x = self.layer_norm(x, self.get(p + "final_layer_norm.weight"), self.get(p + "final_layer_norm.bias"), eps)
        if self.opt_get(p + "project_out.weight") is not None:
            x = self.lin(x, self.get(p + "project_out.weight"))
        head = self.opt_get("lm_head.weight")
        if head is None:
            head = self.get(p + "embed_tokens.weight")
        return self.lin(x, head)

    def bert(self, ids, mask):
        c = self.cfg
        p = "bert." if "bert.embeddings.word_embeddings.weight" in self.w else ""
        H = c["num_attention_heads"]
        eps = c.get("layer_norm_eps", 1e-12)
        act = c.get("hidden_act", "gelu")
        B, T = ids.shape
        e = p + "embeddings."
        x = (self.get(e + "word_embeddings.weight")[ids] + self.get(e + "position_embeddings.weight")[torch.arange(T)]
             + self.get(e + "token_type_embeddings.weight")[torch.zeros_like(ids)])
        x = self.layer_norm(x, self.get(e + "LayerNorm.weight"), self.get(e + "LayerNorm.bias"), eps)
        ok = self.allowed(mask, False)
        for l in range(c["num_hidden_layers"]):
            q = p + "encoder.layer.%d." % l

            def L_(name, v):
                return self.lin(v, self.get(q + name + ".weight"), self.get(q + name + ".bias"))

            qq, kk, vv = L_("attention.self.query", x), L_("attention.self.key", x), L_("attention.self.value", x)
            o = self.attend(self.heads(qq, H), self.heads(kk, H), self.heads(vv, H), ok)
            x = self.layer_norm(L_("attention.output.dense", o) + x, self.get(q + "attention.output.LayerNorm.weight"),
                                self.get(q + "attention.output.LayerNorm.bias"), eps)
            h = self.act(L_("intermediate.dense", x), act)
            self.record(l, x, h)
            x = self.layer_norm(L_("output.dense", h) + x, self.get(q + "output.LayerNorm.weight"),
                                self.get(q + "output.LayerNorm.bias"), eps)
        t = "cls.predictions."
        y = self.act(self.lin(x, self.get(t + "transform.dense.weight"), self.get(t + "transform.dense.bias")), act)
        y = self.layer_norm(y, self.get(t + "transform.LayerNorm.weight"), self.get(t + "transform.LayerNorm.bias"), eps)
        dec = self.opt_get(t + "decoder.weight")
        if dec is None:
            dec = self.get(e + "word_embeddings.weight")
        return self.lin(y, dec, self.get(t + "bias"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--precision", default="float64", choices=["float64", "float32"])
    a = ap.parse_args(argv)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    seqs = [[int(t) for t in s.split(",")] for s in a.ids]
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
    ref = Ref(cfg, load_weights(a.model), torch.float64 if a.precision == "float64" else torch.float32)
    fam = {"gpt2": ref.gpt2, "opt": ref.opt, "bert": ref.bert}.get(cfg.get("model_type"))
    if cfg.get("model_type") in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
                                 "olmo2"):
        fam = ref.decoder
    if fam is None:
        raise SystemExit("ref_forward: unsupported model_type %r" % cfg.get("model_type"))
    with torch.no_grad():
        logits = fam(ids, mask)
    out = [("logits", "F32", logits.float().numpy())]
    for name in sorted(ref.hooks, key=lambda n: (int(n.split(".")[1]), n)):
        out.append((name, "F32", ref.hooks[name].float().numpy()))
    st_io.write(a.out, out, {"reference": "scripts/ref/ref_forward.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
