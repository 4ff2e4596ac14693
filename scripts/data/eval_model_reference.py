#!/usr/bin/env python3
"""Independent check of a trained GPT-2 (ReLU) checkpoint's held-out loss and
FFN sparsity, written from the GPT-2 semantics with torch (no moefy code).

usage: eval_model_reference.py MODEL_DIR IDS_JSON SEQ_LEN [BATCH]
  IDS_JSON: the held-out token stream (scripts/tokref-train/encode_corpus.mjs).
Windows are consecutive, non-overlapping T+1 token slices of the stream (step
T, full windows only), as `moefy train` evaluates. Prints JSON: loss (nats per
token), perplexity, tokens, active_fraction per layer (share of FFN hidden
units > 0 after the activation).
"""
import json
import math
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "BF16": None}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def main():
    model_dir, ids_path, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
    B = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = load_safetensors(f"{model_dir}/model.safetensors")
    p = "transformer." if "transformer.wte.weight" in w else ""
    L, C, H = cfg["n_layer"], cfg["n_embd"], cfg["n_head"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = {"relu": torch.relu, "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[
        cfg.get("activation_function", "gelu_new")]
    stream = json.load(open(ids_path))
    windows = [stream[s:s + T + 1] for s in range(0, len(stream) - T, T) if len(stream[s:s + T + 1]) == T + 1]
    x_all = torch.tensor(windows, dtype=torch.long)
    total, count = 0.0, 0
    active = [0.0] * L
    units = 0
    wte = w[p + "wte.weight"]
    head = w.get("lm_head.weight", wte)
    mask = torch.full((T, T), float("-inf")).triu(1)
    with torch.no_grad():
        for i in range(0, len(windows), B):
            ids = x_all[i:i + B, :T]
            tgt = x_all[i:i + B, 1:]
            n = ids.shape[0]
            h = wte[ids] + w[p + "wpe.weight"][:T]
            for l in range(L):
                q = f"{p}h.{l}."
                a = torch.nn.functional.layer_norm(h, (C,), w[q + "ln_1.weight"], w[q + "ln_1.bias"], eps)
                qkv = a @ w[q + "attn.c_attn.weight"] + w[q + "attn.c_attn.bias"]  # Conv1D: x @ W[in, out]
                qq, kk, vv = qkv.split(C, dim=-1)
                sh = lambda t: t.view(n, T, H, C // H).transpose(1, 2)
                att = (sh(qq) @ sh(kk).transpose(-1, -2)) / math.sqrt(C // H) + mask
                o = (att.softmax(-1) @ sh(vv)).transpose(1, 2).reshape(n, T, C)
                h = h + o @ w[q + "attn.c_proj.weight"] + w[q + "attn.c_proj.bias"]
                m = torch.nn.functional.layer_norm(h, (C,), w[q + "ln_2.weight"], w[q + "ln_2.bias"], eps)
                hid = act(m @ w[q + "mlp.c_fc.weight"] + w[q + "mlp.c_fc.bias"])
                active[l] += float((hid > 0).sum())
                if l == 0:
                    units += hid.numel()
                h = h + hid @ w[q + "mlp.c_proj.weight"] + w[q + "mlp.c_proj.bias"]
            h = torch.nn.functional.layer_norm(h, (C,), w[p + "ln_f.weight"], w[p + "ln_f.bias"], eps)
            logits = h @ head.T
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                             reduction="sum"))
            count += tgt.numel()
    loss = total / count
    print(json.dumps({"loss": loss, "perplexity": math.exp(loss), "tokens": count,
                      "active_fraction": [a / units for a in active]}))


if __name__ == "__main__":
    main()
