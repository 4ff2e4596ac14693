"""Writes a tiny random Hugging Face GPT-2 checkpoint with ReLU FFNs.

usage: rec_tiny_gpt2.py OUT_DIR [--seed N] [--layers L] [--d-model C] [--d-ff F] [--vocab V]
                         [--positions P] [--heads H] [--bias B]

The FFN biases are negative (about --bias, default -1.1) so that 10-30% of the
neurons are active per token, like trained ReLU models; weights are N(0, 0.2).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io as rec_st  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--d-ff", type=int, default=128)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--positions", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--bias", type=float, default=-1.1)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    C, F, V, P = a.d_model, a.d_ff, a.vocab, a.positions

    def w(*shape, s=0.2):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    t = {"wte.weight": w(V, C), "wpe.weight": w(P, C, s=0.05),
         "ln_f.weight": (1 + w(C, s=0.05)), "ln_f.bias": w(C, s=0.05)}
    for L in range(a.layers):
        h = f"h.{L}."
        t[h + "ln_1.weight"] = 1 + w(C, s=0.05)
        t[h + "ln_1.bias"] = w(C, s=0.05)
        t[h + "attn.c_attn.weight"] = w(C, 3 * C)
        t[h + "attn.c_attn.bias"] = w(3 * C, s=0.05)
        t[h + "attn.c_proj.weight"] = w(C, C)
        t[h + "attn.c_proj.bias"] = w(C, s=0.05)
        t[h + "ln_2.weight"] = 1 + w(C, s=0.05)
        t[h + "ln_2.bias"] = w(C, s=0.05)
        t[h + "mlp.c_fc.weight"] = w(C, F)
        t[h + "mlp.c_fc.bias"] = (a.bias + w(F, s=0.5 * 0.2)).astype(np.float32)
        t[h + "mlp.c_proj.weight"] = w(F, C)
        t[h + "mlp.c_proj.bias"] = w(C, s=0.05)
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V, "n_positions": P,
           "n_embd": C, "n_layer": a.layers, "n_head": a.heads, "n_inner": F, "activation_function": "relu",
           "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    rec_st.save(os.path.join(a.out, "model.safetensors"), t, {"format": "pt"})


if __name__ == "__main__":
    main()
