#!/usr/bin/env python3
"""Deterministic small random checkpoints in exact Hugging Face layout.

usage: make_checkpoint.py VARIANT OUT_DIR [--dtype F32|F16|BF16]
                          [--round-to F16|BF16] [--shards N] [--seed S]

Writes OUT_DIR/config.json and OUT_DIR/model.safetensors (or, with
--shards N > 1, model-0000k-of-0000N.safetensors plus
model.safetensors.index.json), named and shaped as the HF classes save them
(GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
OPTForCausalLM, BertForMaskedLM, Qwen3ForCausalLM, GemmaForCausalLM,
Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, Olmo2ForCausalLM, and
T5ForConditionalGeneration: the t5_* variants, built by t5_ref.py; MixtralForCausalLM,
Qwen2MoeForCausalLM, OlmoeForCausalLM: built by moe_native_ref.py). Tied heads are left out, as
save_pretrained does. --dtype picks the stored dtype; --round-to rounds the
values through F16/BF16 but stores them as --dtype (so a F32 checkpoint can
hold exactly the upcast of a F16/BF16 one). The same VARIANT and --seed
always give the same values.

`make_checkpoint.py --list` prints the variants.
"""
import argparse
import json
import os
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
import moe_native_ref  # noqa: E402
import t5_ref  # noqa: E402

V = 101   # vocab
C = 64    # hidden size
H = 4     # heads
L = 2     # layers
P = 32    # max positions

VARIANTS = {
    "gpt2_relu": dict(family="gpt2", act="relu"),
    "gpt2_gelu": dict(family="gpt2", act="gelu"),
    "gpt2_gelu_new": dict(family="gpt2", act="gelu_new"),
    "llama_silu": dict(family="llama", act="silu", kv=2, theta=50000.0, ff=96),
    "llama_relu": dict(family="llama", act="relu", kv=1, theta=10000.0, ff=80),
    "mistral": dict(family="mistral", act="silu", kv=2, theta=1000000.0, ff=96, window=4),
    "qwen2": dict(family="qwen2", act="silu", kv=2, theta=1000000.0, ff=96),
    "opt_pre": dict(family="opt", act="relu", pre=True, proj=C, ff=128),
    "opt_post_proj": dict(family="opt", act="relu", pre=False, proj=48, ff=128),
    "bert_gelu": dict(family="bert", act="gelu", ff=128),
    "bert_relu": dict(family="bert", act="relu", ff=128),
    # GPT-2 attention-scale flags
    "gpt2_noscale": dict(family="gpt2", act="gelu_new", extra={"scale_attn_weights": False}),
    "gpt2_invlayer": dict(family="gpt2", act="gelu_new", extra={"scale_attn_by_inverse_layer_idx": True}),
    # RoPE scaling and explicit head_dim (llama/mistral/qwen2)
    "llama_llama3": dict(family="llama", act="silu", kv=2, theta=50000.0, ff=96, extra={
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8}}),
    "llama_linear": dict(family="llama", act="silu", kv=2, theta=10000.0, ff=96, extra={
        "rope_scaling": {"type": "linear", "factor": 2.0}}),
    "llama_dynamic": dict(family="llama", act="silu", kv=4, theta=10000.0, ff=96, extra={
        "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 6}),
    "llama_head_dim": dict(family="llama", act="silu", kv=2, theta=10000.0, ff=96, head_dim=24),
    "qwen2_yarn": dict(family="qwen2", act="silu", kv=2, theta=10000.0, ff=96, extra={
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}}),
    "mistral_yarn_hd": dict(family="mistral", act="silu", kv=2, theta=10000.0, ff=96, window=4, head_dim=24, extra={
        "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "beta_fast": 8.0, "beta_slow": 2.0,
                         "attention_factor": 1.3}}),
    # llama3 RoPE with all three frequency bands (checked by llama3_bands() at build time): head_dim 32,
    # theta 1e4, original context 12, low/high freq factor 0.25/1 put wavelength 6.3 and 11.2 (dims 0-1)
    # below 12 (kept), 19.9 and 35.3 (dims 2-3) between 12 and 48 (smoothed), 62.8.. (dims 4-15) above 48
    # (divided by factor 8). The test runs it on 36 tokens, three times the original context.
    "llama_llama3_bands": dict(family="llama", act="silu", kv=2, theta=10000.0, ff=96, head_dim=32, bands=True,
                               extra={"max_position_embeddings": 96, "rope_scaling": {
                                   "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.25,
                                   "high_freq_factor": 1.0, "original_max_position_embeddings": 12}}),
    # yarn attention factor from mscale / mscale_all_dim (HF get_mscale(factor, mscale) /
    # get_mscale(factor, mscale_all_dim) = 1.277 / 1.069), and mscale alone (ignored by HF: the default
    # get_mscale(factor) = 1.139). max_position_embeddings = factor x original context, as every yarn
    # variant here: transformers 4.4x-4.5x replace factor by that ratio when the block names
    # original_max_position_embeddings, v5 keeps factor; the reference refuses configs where they differ.
    "qwen2_yarn_mscale": dict(family="qwen2", act="silu", kv=2, theta=10000.0, ff=96, extra={
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                         "mscale": 2.0, "mscale_all_dim": 0.5}}),
    "qwen2_yarn_mscale_only": dict(family="qwen2", act="silu", kv=2, theta=10000.0, ff=96, extra={
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                         "mscale": 2.0}}),
    # yarn truncate: false: the ramp runs over the unrounded correction range [1.62, 5.62] of the 16
    # frequencies (truncated: [1, 6]).
    "llama_yarn_notrunc": dict(family="llama", act="silu", kv=2, theta=10000.0, ff=96, head_dim=32, extra={
        "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16,
                         "beta_fast": 1.0, "beta_slow": 0.1, "truncate": False}}),
    # newer dense families
    "qwen3": dict(family="qwen3", act="silu", kv=2, theta=1000000.0, ff=96, head_dim=24),
    "qwen3_tied": dict(family="qwen3", act="silu", kv=2, theta=1000000.0, ff=96, head_dim=24, tied=True),
    "gemma": dict(family="gemma", act="gelu_pytorch_tanh", kv=1, theta=10000.0, ff=96, head_dim=16),
    "gemma2": dict(family="gemma2", act="gelu_pytorch_tanh", kv=2, theta=10000.0, ff=96, head_dim=16, extra={
        "query_pre_attn_scalar": 24, "sliding_window": 4, "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 3.0}),
    "gemma3": dict(family="gemma3_text", act="gelu_pytorch_tanh", kv=2, theta=1000000.0, ff=96, head_dim=16, extra={
        "query_pre_attn_scalar": 16, "sliding_window": 4, "sliding_window_pattern": 2, "rope_local_base_freq": 100.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "attn_logit_softcapping": None,
        "final_logit_softcapping": None}),
    "phi3": dict(family="phi3", act="silu", kv=2, theta=10000.0, ff=96, extra={"sliding_window": 5}),
    "phi3_partial": dict(family="phi3", act="silu", kv=4, theta=10000.0, ff=96, extra={
        "partial_rotary_factor": 0.5, "rope_scaling": {"rope_type": "linear", "factor": 3.0}}),
    "olmo2": dict(family="olmo2", act="silu", kv=2, theta=500000.0, ff=96),
    # OLMo 2 with an explicit head_dim (Olmo2Attention: getattr(config, "head_dim", hidden // heads)).
    "olmo2_head_dim": dict(family="olmo2", act="silu", kv=2, theta=500000.0, ff=96, head_dim=24),
}


class Init:
    """Deterministic per-tensor values: each tensor's stream is seeded from the
    seed and the tensor name, so adding tensors never shifts the others."""

    def __init__(self, seed):
        self.seed = seed

    def rng(self, name):
        return np.random.RandomState((self.seed * 1000003 + zlib.crc32(name.encode())) % (2**32))

    def linear(self, name, out_f, in_f, gain=1.0):  # nn.Linear layout [out, in]
        return (self.rng(name).randn(out_f, in_f) * gain / np.sqrt(in_f)).astype(np.float32)

    def embed(self, name, n, d, std=1.0):
        return (self.rng(name).randn(n, d) * std).astype(np.float32)

    def norm_w(self, name, d):
        return (1.0 + 0.1 * self.rng(name).randn(d)).astype(np.float32)

    def bias(self, name, d, std=0.1):
        return (std * self.rng(name).randn(d)).astype(np.float32)


def gpt2(v, I):
    ff = 4 * C
    t = {}
    p = "transformer."
    t[p + "wte.weight"] = I.embed(p + "wte.weight", V, C)
    t[p + "wpe.weight"] = I.embed(p + "wpe.weight", P, C, 0.5)
    for l in range(L):
        q = p + "h.%d." % l
        t[q + "ln_1.weight"] = I.norm_w(q + "ln_1.weight", C)
        t[q + "ln_1.bias"] = I.bias(q + "ln_1.bias", C)
        # Conv1D stores [in, out]: the transpose of nn.Linear.
        t[q + "attn.c_attn.weight"] = I.linear(q + "attn.c_attn.weight", 3 * C, C).T.copy()
        t[q + "attn.c_attn.bias"] = I.bias(q + "attn.c_attn.bias", 3 * C)
        t[q + "attn.c_proj.weight"] = I.linear(q + "attn.c_proj.weight", C, C).T.copy()
        t[q + "attn.c_proj.bias"] = I.bias(q + "attn.c_proj.bias", C)
        t[q + "ln_2.weight"] = I.norm_w(q + "ln_2.weight", C)
        t[q + "ln_2.bias"] = I.bias(q + "ln_2.bias", C)
        t[q + "mlp.c_fc.weight"] = I.linear(q + "mlp.c_fc.weight", ff, C).T.copy()
        t[q + "mlp.c_fc.bias"] = I.bias(q + "mlp.c_fc.bias", ff)
        t[q + "mlp.c_proj.weight"] = I.linear(q + "mlp.c_proj.weight", C, ff).T.copy()
        t[q + "mlp.c_proj.bias"] = I.bias(q + "mlp.c_proj.bias", C)
    t[p + "ln_f.weight"] = I.norm_w(p + "ln_f.weight", C)
    t[p + "ln_f.bias"] = I.bias(p + "ln_f.bias", C)
    cfg = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P,
        "n_ctx": P, "n_embd": C, "n_layer": L, "n_head": H, "n_inner": None,
        "activation_function": v["act"], "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": V - 1, "eos_token_id": V - 1, "torch_dtype": "float32",
    }
    cfg.update(v.get("extra", {}))
    return cfg, t


def llama_like(v, I):
    fam = v["family"]
    kv, ff = v["kv"], v["ff"]
    D = v.get("head_dim", C // H)
    qkv_bias = fam == "qwen2"
    tied = fam == "qwen2"
    t = {"model.embed_tokens.weight": I.embed("model.embed_tokens.weight", V, C)}
    for l in range(L):
        q = "model.layers.%d." % l
        t[q + "input_layernorm.weight"] = I.norm_w(q + "input_layernorm.weight", C)
        for proj, out in (("q_proj", H * D), ("k_proj", kv * D), ("v_proj", kv * D)):
            n = q + "self_attn.%s." % proj
            t[n + "weight"] = I.linear(n + "weight", out, C)
            if qkv_bias:
                t[n + "bias"] = I.bias(n + "bias", out, 0.3)
        t[q + "self_attn.o_proj.weight"] = I.linear(q + "self_attn.o_proj.weight", C, H * D)
        t[q + "post_attention_layernorm.weight"] = I.norm_w(q + "post_attention_layernorm.weight", C)
        t[q + "mlp.gate_proj.weight"] = I.linear(q + "mlp.gate_proj.weight", ff, C)
        t[q + "mlp.up_proj.weight"] = I.linear(q + "mlp.up_proj.weight", ff, C)
        t[q + "mlp.down_proj.weight"] = I.linear(q + "mlp.down_proj.weight", C, ff)
    t["model.norm.weight"] = I.norm_w("model.norm.weight", C)
    if not tied:
        t["lm_head.weight"] = I.linear("lm_head.weight", V, C, 4.0)
    cfg = {
        "architectures": [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                           "qwen2": "Qwen2ForCausalLM"}[fam]],
        "model_type": fam, "vocab_size": V, "hidden_size": C, "intermediate_size": ff,
        "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": kv, "hidden_act": v["act"],
        "max_position_embeddings": P, "rms_norm_eps": 1e-6, "rope_theta": v["theta"], "rope_scaling": None,
        "tie_word_embeddings": tied, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    if fam == "llama":
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    if fam == "mistral":
        cfg["sliding_window"] = v["window"]
    if fam == "qwen2":
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = P
        cfg["max_window_layers"] = L
    if "head_dim" in v:
        cfg["head_dim"] = D
    cfg.update(v.get("extra", {}))
    return cfg, t


def newer_decoder(v, I):
    """qwen3, gemma, gemma2, gemma3_text, phi3, olmo2 in their HF layouts."""
    fam = v["family"]
    kv, ff = v["kv"], v["ff"]
    D = v.get("head_dim", C // H)
    gemma = fam.startswith("gemma")
    tied = gemma or v.get("tied", False)
    sandwich = fam in ("gemma2", "gemma3_text")
    # Gemma stores RMSNorm weights as offsets from 1 (applied as 1 + w).
    nw = (lambda n, d: (0.1 * I.rng(n).randn(d)).astype(np.float32)) if gemma else I.norm_w
    t = {"model.embed_tokens.weight": I.embed("model.embed_tokens.weight", V, C, 0.2 if gemma else 1.0)}
    for l in range(L):
        q = "model.layers.%d." % l
        a = q + "self_attn."
        if fam == "phi3":
            t[a + "qkv_proj.weight"] = I.linear(a + "qkv_proj.weight", (H + 2 * kv) * D, C)
            t[q + "mlp.gate_up_proj.weight"] = I.linear(q + "mlp.gate_up_proj.weight", 2 * ff, C)
        else:
            for proj, out in (("q_proj", H * D), ("k_proj", kv * D), ("v_proj", kv * D)):
                t[a + proj + ".weight"] = I.linear(a + proj + ".weight", out, C)
            t[q + "mlp.gate_proj.weight"] = I.linear(q + "mlp.gate_proj.weight", ff, C)
            t[q + "mlp.up_proj.weight"] = I.linear(q + "mlp.up_proj.weight", ff, C)
        t[a + "o_proj.weight"] = I.linear(a + "o_proj.weight", C, H * D)
        t[q + "mlp.down_proj.weight"] = I.linear(q + "mlp.down_proj.weight", C, ff)
        norms = []
        if fam != "olmo2":
            norms.append("input_layernorm")
        norms.append("post_attention_layernorm")
        if sandwich:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        if fam == "olmo2":
            norms.append("post_feedforward_layernorm")
        for n in norms:
            t[q + n + ".weight"] = nw(q + n + ".weight", C)
        if fam in ("qwen3", "gemma3_text"):
            t[a + "q_norm.weight"] = nw(a + "q_norm.weight", D)
            t[a + "k_norm.weight"] = nw(a + "k_norm.weight", D)
        if fam == "olmo2":
            t[a + "q_norm.weight"] = nw(a + "q_norm.weight", H * D)
            t[a + "k_norm.weight"] = nw(a + "k_norm.weight", kv * D)
    t["model.norm.weight"] = nw("model.norm.weight", C)
    if not tied:
        t["lm_head.weight"] = I.linear("lm_head.weight", V, C, 4.0)
    arch = {"qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
            "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM", "olmo2": "Olmo2ForCausalLM"}[fam]
    cfg = {
        "architectures": [arch], "model_type": fam, "vocab_size": V, "hidden_size": C, "intermediate_size": ff,
        "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": kv,
        "max_position_embeddings": P, "rms_norm_eps": 1e-6, "rope_theta": v["theta"], "rope_scaling": None,
        "tie_word_embeddings": tied, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
    }
    if fam != "olmo2" or "head_dim" in v:  # OLMo 2 configs derive it unless they say otherwise
        cfg["head_dim"] = D
    if fam != "phi3":
        cfg["attention_bias"] = False
    if fam == "gemma":  # gemma v1 configs name it hidden_act (hidden_activation absent)
        cfg["hidden_act"] = v["act"]
    elif gemma:
        cfg["hidden_activation"] = v["act"]
    else:
        cfg["hidden_act"] = v["act"]
    if fam == "qwen3":
        cfg.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": L})
    if fam == "phi3":
        cfg.update({"original_max_position_embeddings": P, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                    "rms_norm_eps": 1e-5, "sliding_window": None})
    cfg.update(v.get("extra", {}))
    return cfg, t


def opt(v, I):
    ff, E, pre = v["ff"], v["proj"], v["pre"]
    p = "model.decoder."
    t = {p + "embed_tokens.weight": I.embed(p + "embed_tokens.weight", V, E)}
    t[p + "embed_positions.weight"] = I.embed(p + "embed_positions.weight", P + 2, C, 0.5)
    if E != C:
        t[p + "project_in.weight"] = I.linear(p + "project_in.weight", C, E)
        t[p + "project_out.weight"] = I.linear(p + "project_out.weight", E, C)
    for l in range(L):
        q = p + "layers.%d." % l
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            n = q + "self_attn.%s." % proj
            t[n + "weight"] = I.linear(n + "weight", C, C)
            t[n + "bias"] = I.bias(n + "bias", C)
        t[q + "self_attn_layer_norm.weight"] = I.norm_w(q + "self_attn_layer_norm.weight", C)
        t[q + "self_attn_layer_norm.bias"] = I.bias(q + "self_attn_layer_norm.bias", C)
        t[q + "fc1.weight"] = I.linear(q + "fc1.weight", ff, C)
        t[q + "fc1.bias"] = I.bias(q + "fc1.bias", ff)
        t[q + "fc2.weight"] = I.linear(q + "fc2.weight", C, ff)
        t[q + "fc2.bias"] = I.bias(q + "fc2.bias", C)
        t[q + "final_layer_norm.weight"] = I.norm_w(q + "final_layer_norm.weight", C)
        t[q + "final_layer_norm.bias"] = I.bias(q + "final_layer_norm.bias", C)
    if pre:
        t[p + "final_layer_norm.weight"] = I.norm_w(p + "final_layer_norm.weight", C)
        t[p + "final_layer_norm.bias"] = I.bias(p + "final_layer_norm.bias", C)
    cfg = {
        "architectures": ["OPTForCausalLM"], "model_type": "opt", "vocab_size": V, "hidden_size": C,
        "num_hidden_layers": L, "ffn_dim": ff, "num_attention_heads": H, "max_position_embeddings": P,
        "do_layer_norm_before": pre, "word_embed_proj_dim": E, "activation_function": v["act"],
        "enable_bias": True, "layer_norm_elementwise_affine": True, "tie_word_embeddings": True,
        "dropout": 0.0, "attention_dropout": 0.0, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    return cfg, t


def bert(v, I):
    ff = v["ff"]
    p = "bert."
    t = {}
    t[p + "embeddings.word_embeddings.weight"] = I.embed(p + "embeddings.word_embeddings.weight", V, C)
    t[p + "embeddings.position_embeddings.weight"] = I.embed(p + "embeddings.position_embeddings.weight", P, C, 0.5)
    t[p + "embeddings.token_type_embeddings.weight"] = I.embed(p + "embeddings.token_type_embeddings.weight", 2, C, 0.5)
    t[p + "embeddings.LayerNorm.weight"] = I.norm_w(p + "embeddings.LayerNorm.weight", C)
    t[p + "embeddings.LayerNorm.bias"] = I.bias(p + "embeddings.LayerNorm.bias", C)
    for l in range(L):
        q = p + "encoder.layer.%d." % l
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[q + n + ".weight"] = I.linear(q + n + ".weight", C, C)
            t[q + n + ".bias"] = I.bias(q + n + ".bias", C)
        t[q + "attention.output.LayerNorm.weight"] = I.norm_w(q + "attention.output.LayerNorm.weight", C)
        t[q + "attention.output.LayerNorm.bias"] = I.bias(q + "attention.output.LayerNorm.bias", C)
        t[q + "intermediate.dense.weight"] = I.linear(q + "intermediate.dense.weight", ff, C)
        t[q + "intermediate.dense.bias"] = I.bias(q + "intermediate.dense.bias", ff)
        t[q + "output.dense.weight"] = I.linear(q + "output.dense.weight", C, ff)
        t[q + "output.dense.bias"] = I.bias(q + "output.dense.bias", C)
        t[q + "output.LayerNorm.weight"] = I.norm_w(q + "output.LayerNorm.weight", C)
        t[q + "output.LayerNorm.bias"] = I.bias(q + "output.LayerNorm.bias", C)
    h = "cls.predictions."
    t[h + "transform.dense.weight"] = I.linear(h + "transform.dense.weight", C, C)
    t[h + "transform.dense.bias"] = I.bias(h + "transform.dense.bias", C)
    t[h + "transform.LayerNorm.weight"] = I.norm_w(h + "transform.LayerNorm.weight", C)
    t[h + "transform.LayerNorm.bias"] = I.bias(h + "transform.LayerNorm.bias", C)
    t[h + "bias"] = I.bias(h + "bias", V)
    cfg = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": V, "hidden_size": C,
        "num_hidden_layers": L, "num_attention_heads": H, "intermediate_size": ff, "hidden_act": v["act"],
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": P,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute",
        "pad_token_id": 0, "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    return cfg, t


VARIANTS.update(t5_ref.VARIANTS)
VARIANTS.update(moe_native_ref.VARIANTS)

BUILDERS = {"t5": t5_ref.build, "gpt2": gpt2, "llama": llama_like, "mistral": llama_like, "qwen2": llama_like, "opt": opt, "bert": bert,
            "qwen3": newer_decoder, "gemma": newer_decoder, "gemma2": newer_decoder, "gemma3_text": newer_decoder,
            "phi3": newer_decoder, "olmo2": newer_decoder, "mixtral": moe_native_ref.build,
            "qwen2_moe": moe_native_ref.build, "olmoe": moe_native_ref.build}


def llama3_bands(cfg):
    """How many RoPE frequencies of a llama3 config fall in each band, from the HF definition
    (modeling_rope_utils._compute_llama3_parameters): wavelength 2 pi / inv_freq below
    original / high_freq_factor is kept, above original / low_freq_factor divided by factor,
    in between smoothed. Returns (kept, smoothed, divided)."""
    s = cfg["rope_scaling"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    wave = 2 * np.pi * cfg["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    orig = s["original_max_position_embeddings"]
    kept = int((wave < orig / s["high_freq_factor"]).sum())
    divided = int((wave > orig / s["low_freq_factor"]).sum())
    return kept, len(wave) - kept - divided, divided


def build(variant, seed):
    v = VARIANTS[variant]
    cfg, tensors = BUILDERS[v["family"]](v, Init(seed))
    if v.get("bands"):
        bands = llama3_bands(cfg)
        assert min(bands) > 0, "%s: llama3 bands (kept, smoothed, divided) = %s" % (variant, bands)
    return cfg, tensors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    ap.add_argument("--round-to", choices=["F16", "BF16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        print("\n".join(sorted(VARIANTS)))
        return 0
    if a.variant not in VARIANTS or not a.out:
        ap.error("give VARIANT OUT_DIR; variants: " + ", ".join(sorted(VARIANTS)))
    cfg, tensors = build(a.variant, a.seed)
    dt = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    cfg["torch_dtype"] = dt[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    names = list(tensors)
    stored = []
    for n in names:
        x = tensors[n]
        if a.round_to:
            x = st_io.upcast(st_io.to_storage(x, a.round_to), a.round_to)
        stored.append((n, a.dtype, st_io.to_storage(x, a.dtype)))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    for old in os.listdir(a.out):
        if old.endswith(".safetensors") or old == "model.safetensors.index.json":
            os.remove(os.path.join(a.out, old))
    meta = {"format": "pt"}
    if a.shards <= 1:
        st_io.write(os.path.join(a.out, "model.safetensors"), stored, meta)
    else:
        k = a.shards
        groups = [stored[i * len(stored) // k:(i + 1) * len(stored) // k] for i in range(k)]
        weight_map, total = {}, 0
        for i, g in enumerate(groups):
            fname = "model-%05d-of-%05d.safetensors" % (i + 1, k)
            total += st_io.write(os.path.join(a.out, fname), g, meta)
            for n, _, _ in g:
                weight_map[n] = fname
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
