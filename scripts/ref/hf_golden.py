#!/usr/bin/env python3
"""Golden outputs from Hugging Face transformers for the small checkpoints the tests make.

usage: hf_golden.py ROOT [--ids 5,17,3,99,42,7,1,64,23] [--ids 8,9,10,11,100] [--device cpu|cuda]

Walks ROOT for model folders (config.json + model.safetensors), loads each with
transformers' AutoModelForCausalLM (AutoModelForMaskedLM for bert) in float32,
eager attention, and writes hf_logits.safetensors next to its config.json:
`logits` [B, T, vocab] for the right-padded batch of the --ids sequences (pad
id 0, attention mask given), plus `blk.L.ffn_in` / `blk.L.ffn_act` from forward
hooks on each layer's MLP and its down projection. A folder transformers
cannot load is reported and skipped; the exit status is 1 if any failed.
Compare with `moefy forward MODEL --ids ... --dump` or ref_forward.py's output
on the non-padded positions (scripts/ref/compare_golden.py does both).

This script needs transformers (not a test dependency); the tests use the
independent reference ref_forward.py instead.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def find_models(root):
    for d, _, files in os.walk(root):
        if "config.json" in files and ("model.safetensors" in files or "model.safetensors.index.json" in files):
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            if "moefication" in cfg:
                continue  # moefy MoE exports are not HF checkpoints
            yield d, cfg


def mlp_of(layer):
    for name in ("mlp", "intermediate"):
        if hasattr(layer, name):
            return getattr(layer, name)
    return None


def run_one(d, cfg, seqs, device):
    import transformers
    masked = cfg.get("model_type") == "bert"
    cls = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM
    model = cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").to(device).eval()
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
    base = getattr(model, model.base_model_prefix)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None and hasattr(base, "decoder"):
        layers = base.decoder.layers
    if layers is None and hasattr(base, "encoder"):
        layers = base.encoder.layer
    hooks, handles = {}, []
    for l, layer in enumerate(layers or []):
        m = mlp_of(layer)
        if m is None:
            continue
        down = getattr(m, "down_proj", None) or getattr(m, "c_proj", None)
        if down is not None:
            handles.append(m.register_forward_pre_hook(
                lambda mod, a, l=l: hooks.__setitem__("blk.%d.ffn_in" % l, a[0].detach().float().cpu())))
            handles.append(down.register_forward_pre_hook(
                lambda mod, a, l=l: hooks.__setitem__("blk.%d.ffn_act" % l, a[0].detach().float().cpu())))
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
    for h in handles:
        h.remove()
    tensors = [("logits", "F32", out.logits.float().cpu().numpy())]
    for k in sorted(hooks, key=lambda n: (int(n.split(".")[1]), n)):
        tensors.append((k, "F32", hooks[k].numpy().astype(np.float32)))
    st_io.write(os.path.join(d, "hf_logits.safetensors"), tensors,
                {"transformers": transformers.__version__, "ids": json.dumps(seqs)})
    return out.logits.shape


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--ids", action="append")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    seqs = [[int(t) for t in s.split(",")] for s in (a.ids or ["5,17,3,99,42,7,1,64,23", "8,9,10,11,100"])]
    failed = 0
    for d, cfg in sorted(find_models(a.root)):
        try:
            shape = run_one(d, cfg, seqs, a.device)
            print("ok     %-12s %s -> %s" % (cfg.get("model_type"), d, tuple(shape)))
        except Exception as e:  # report and continue with the next folder
            failed += 1
            print("FAILED %-12s %s: %s" % (cfg.get("model_type"), d, str(e).splitlines()[0] if str(e) else repr(e)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
