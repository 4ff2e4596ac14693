#!/usr/bin/env python3
"""Independent reference forward pass for the architectures moefy supports.

usage: ref_forward.py MODEL_DIR --ids 1,2,3 [--ids 4,5 ...] --out OUT.safetensors
                      [--precision float64|float32]

Written from the Hugging Face modeling semantics (GPT2LMHeadModel,
LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, OPTForCausalLM,
BertForMaskedLM), in plain torch tensor algebra, without moefy's code. Several
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
        s = s.masked_fill(~allowed, float("-inf"))
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
            o = self.attend(self.heads(qq, H), self.heads(kk, H), self.heads(vv, H), ok)
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

    def llama(self, ids, mask):
        c = self.cfg
        mt = c["model_type"]
        C, H = c["hidden_size"], c["num_attention_heads"]
        KV = c.get("num_key_value_heads") or H
        D = c.get("head_dim") or C // H
        eps = c.get("rms_norm_eps", 1e-6)
        theta = c.get("rope_theta", 10000.0)
        act = c.get("hidden_act", "silu")
        window = None
        if mt == "mistral":
            window = c.get("sliding_window")
        elif mt == "qwen2" and c.get("use_sliding_window"):
            raise SystemExit("ref_forward: qwen2 use_sliding_window is not modelled")
        B, T = ids.shape
        x = self.get("model.embed_tokens.weight")[ids]
        # RoPE (rotate-half form): angle = pos * theta^(-2i/D), applied to (x_i, x_{i+D/2}).
        inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        ang = torch.arange(T, dtype=torch.float64).view(T, 1) * inv.view(1, -1)
        ang = torch.cat([ang, ang], dim=-1).to(self.dtype)
        cos, sin = torch.cos(ang), torch.sin(ang)

        def rope(t):
            half = t.shape[-1] // 2
            rot = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
            return t * cos + rot * sin

        ok = self.allowed(mask, True, window)
        for l in range(c["num_hidden_layers"]):
            q = "model.layers.%d." % l
            a = self.rms_norm(x, self.get(q + "input_layernorm.weight"), eps)
            sa = q + "self_attn."
            qq = self.lin(a, self.get(sa + "q_proj.weight"), self.opt_get(sa + "q_proj.bias"))
            kk = self.lin(a, self.get(sa + "k_proj.weight"), self.opt_get(sa + "k_proj.bias"))
            vv = self.lin(a, self.get(sa + "v_proj.weight"), self.opt_get(sa + "v_proj.bias"))
            qh, kh, vh = rope(self.heads(qq, H)), rope(self.heads(kk, KV)), self.heads(vv, KV)
            rep = H // KV  # key/value head g serves query heads g*rep .. g*rep+rep-1
            kh = kh.repeat_interleave(rep, dim=1)
            vh = vh.repeat_interleave(rep, dim=1)
            o = self.attend(qh, kh, vh, ok)
            x = x + self.lin(o, self.get(sa + "o_proj.weight"), self.opt_get(sa + "o_proj.bias"))
            m = self.rms_norm(x, self.get(q + "post_attention_layernorm.weight"), eps)
            h = self.act(self.lin(m, self.get(q + "mlp.gate_proj.weight")), act) * self.lin(
                m, self.get(q + "mlp.up_proj.weight"))
            self.record(l, m, h)
            x = x + self.lin(h, self.get(q + "mlp.down_proj.weight"))
        x = self.rms_norm(x, self.get("model.norm.weight"), eps)
        head = self.opt_get("lm_head.weight")
        if head is None:
            head = self.get("model.embed_tokens.weight")
        return self.lin(x, head)

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
    fam = {"gpt2": ref.gpt2, "llama": ref.llama, "mistral": ref.llama, "qwen2": ref.llama, "opt": ref.opt,
           "bert": ref.bert}.get(cfg.get("model_type"))
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
