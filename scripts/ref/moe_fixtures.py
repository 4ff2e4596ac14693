#!/usr/bin/python3
"""Fixtures for the MoE tests (issue 5), written from the formats in docs/formats.md.

  moe_fixtures.py model ARCH OUT_DIR [--seed S] [--layers L] [--d-model C] [--d-ff F] [--vocab V] [--act A]
      A small random Hugging Face checkpoint (config.json + model.safetensors, F32).
      ARCH: gpt2 | llama | mistral | qwen2 | opt | bert.
  moe_fixtures.py models OUT_ROOT
      All test checkpoints in one process: OUT_ROOT/{gpt2,gpt2-gelu,llama,mistral,qwen2,opt,bert}.
  moe_fixtures.py bundle ARCH OUT
      OUT/model (with a 59-token WordPiece tokenizer.json), OUT/part, OUT/rec (no fingerprints).
  moe_fixtures.py tokenizer PATH
      Writes that tokenizer.json.
  moe_fixtures.py engine_variants OUT_ROOT
      Every variant of scripts/ref/make_checkpoint.py (the engine's reference checkpoints).
  moe_fixtures.py moe_ref_many SPEC_JSON
      moe_ref for each entry [MODEL_DIR, LABELS_ST, LAYER, X_NPY, K, OUT_NPY] of a JSON list.
  moe_fixtures.py partition MODEL_DIR OUT_DIR --experts E [--seed S] [--fingerprint FP] [--uneven]
      A partition folder: partition.json + labels.safetensors (blk.L.labels I32 [d_ff],
      blk.L.perm I32 [d_ff]); balanced random labels (--uneven: the first E/2 experts twice
      the size of the others).
  moe_fixtures.py recording MODEL_DIR OUT_DIR --samples S [--seed S] [--fingerprint FP]
      A recording folder: manifest.json + samples.safetensors with blk.L.ffn_in F16 [S, d_model]
      and blk.L.ffn_act F16 [S, d_ff]. ffn_in is synthetic (random LayerNorm-like vectors with a
      few shared directions), ffn_act is the model's real FFN hidden of that input
      (act(x W1^T + b1), or act(x Wg^T) * (x Wu^T) for gated FFNs).
  moe_fixtures.py moe_ref MODEL_DIR LABELS_ST LAYER X_NPY K OUT_NPY [ROUTER_ST]
      Reference MoE FFN output of one layer for inputs X [N, d_model]: top-K experts by the
      similarity router (centroids of L2-normalised W1 rows, as docs/moe.md defines) or by the
      given router.safetensors centroids; neurons of unselected experts contribute nothing.

Only numpy and torch (Debian's python3); safetensors files are read/written by hand.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402



def save_st(path, tensors, metadata=None):
    st_io.save(path, tensors, metadata)


def load_st(path):
    return st_io.load(path)[0]


def arg(name, default, cast=int):
    if name in sys.argv:
        return cast(sys.argv[sys.argv.index(name) + 1])
    return default


def make_model(arch, out):
    import os
    os.makedirs(out, exist_ok=True)
    seed = arg("--seed", 0)
    L = arg("--layers", 2)
    C = arg("--d-model", 64)
    F = arg("--d-ff", 256)
    V = arg("--vocab", 96)
    H = 4
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.08):
        return (torch.randn(*shape, generator=g) * std).numpy().astype(np.float32)

    def ln():
        return (1.0 + torch.randn(C, generator=g) * 0.05).numpy().astype(np.float32), rnd(C, std=0.02)

    t = {}
    if arch == "gpt2":
        act = arg("--act", "relu", str)
        cfg = {"model_type": "gpt2", "n_layer": L, "n_embd": C, "n_head": H, "n_inner": F, "vocab_size": V,
               "n_positions": 64, "activation_function": act, "layer_norm_epsilon": 1e-5}
        t["transformer.wte.weight"] = rnd(V, C)
        t["transformer.wpe.weight"] = rnd(64, C, std=0.02)
        for i in range(L):
            p = f"transformer.h.{i}."
            t[p + "ln_1.weight"], t[p + "ln_1.bias"] = ln()
            t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"] = rnd(C, 3 * C), rnd(3 * C, std=0.02)
            t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = rnd(C, C), rnd(C, std=0.02)
            t[p + "ln_2.weight"], t[p + "ln_2.bias"] = ln()
            t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = rnd(C, F, std=0.15), rnd(F, std=0.1)
            t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = rnd(F, C), rnd(C, std=0.02)
        t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = ln()
    elif arch in ("llama", "mistral", "qwen2"):
        cfg = {"model_type": arch, "num_hidden_layers": L, "hidden_size": C, "num_attention_heads": H,
               "num_key_value_heads": 2, "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 64,
               "hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": arch == "qwen2"}
        t["model.embed_tokens.weight"] = rnd(V, C)
        D = C // H
        for i in range(L):
            p = f"model.layers.{i}."
            t[p + "input_layernorm.weight"] = ln()[0]
            t[p + "self_attn.q_proj.weight"] = rnd(H * D, C)
            t[p + "self_attn.k_proj.weight"] = rnd(2 * D, C)
            t[p + "self_attn.v_proj.weight"] = rnd(2 * D, C)
            if arch == "qwen2":
                t[p + "self_attn.q_proj.bias"] = rnd(H * D, std=0.02)
                t[p + "self_attn.k_proj.bias"] = rnd(2 * D, std=0.02)
                t[p + "self_attn.v_proj.bias"] = rnd(2 * D, std=0.02)
            t[p + "self_attn.o_proj.weight"] = rnd(C, H * D)
            t[p + "post_attention_layernorm.weight"] = ln()[0]
            t[p + "mlp.gate_proj.weight"] = rnd(F, C, std=0.15)
            t[p + "mlp.up_proj.weight"] = rnd(F, C, std=0.15)
            t[p + "mlp.down_proj.weight"] = rnd(C, F)
        t["model.norm.weight"] = ln()[0]
        if arch != "qwen2":
            t["lm_head.weight"] = rnd(V, C)
    elif arch == "opt":
        cfg = {"model_type": "opt", "num_hidden_layers": L, "hidden_size": C, "num_attention_heads": H, "ffn_dim": F,
               "vocab_size": V, "max_position_embeddings": 64, "activation_function": "relu",
               "do_layer_norm_before": True, "word_embed_proj_dim": C, "enable_bias": True}
        t["model.decoder.embed_tokens.weight"] = rnd(V, C)
        t["model.decoder.embed_positions.weight"] = rnd(66, C, std=0.02)
        for i in range(L):
            p = f"model.decoder.layers.{i}."
            t[p + "self_attn_layer_norm.weight"], t[p + "self_attn_layer_norm.bias"] = ln()
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                t[p + f"self_attn.{n}.weight"], t[p + f"self_attn.{n}.bias"] = rnd(C, C), rnd(C, std=0.02)
            t[p + "final_layer_norm.weight"], t[p + "final_layer_norm.bias"] = ln()
            t[p + "fc1.weight"], t[p + "fc1.bias"] = rnd(F, C, std=0.15), rnd(F, std=0.1)
            t[p + "fc2.weight"], t[p + "fc2.bias"] = rnd(C, F), rnd(C, std=0.02)
        t["model.decoder.final_layer_norm.weight"], t["model.decoder.final_layer_norm.bias"] = ln()
    elif arch == "bert":
        cfg = {"model_type": "bert", "num_hidden_layers": L, "hidden_size": C, "num_attention_heads": H,
               "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 64, "type_vocab_size": 2,
               "hidden_act": "gelu", "layer_norm_eps": 1e-12}
        p = "bert."
        t[p + "embeddings.word_embeddings.weight"] = rnd(V, C)
        t[p + "embeddings.position_embeddings.weight"] = rnd(64, C, std=0.02)
        t[p + "embeddings.token_type_embeddings.weight"] = rnd(2, C, std=0.02)
        t[p + "embeddings.LayerNorm.weight"], t[p + "embeddings.LayerNorm.bias"] = ln()
        for i in range(L):
            q = p + f"encoder.layer.{i}."
            for n in ("query", "key", "value"):
                t[q + f"attention.self.{n}.weight"], t[q + f"attention.self.{n}.bias"] = rnd(C, C), rnd(C, std=0.02)
            t[q + "attention.output.dense.weight"], t[q + "attention.output.dense.bias"] = rnd(C, C), rnd(C, std=0.02)
            t[q + "attention.output.LayerNorm.weight"], t[q + "attention.output.LayerNorm.bias"] = ln()
            t[q + "intermediate.dense.weight"], t[q + "intermediate.dense.bias"] = rnd(F, C, std=0.15), rnd(F, std=0.1)
            t[q + "output.dense.weight"], t[q + "output.dense.bias"] = rnd(C, F), rnd(C, std=0.02)
            t[q + "output.LayerNorm.weight"], t[q + "output.LayerNorm.bias"] = ln()
        t["cls.predictions.transform.dense.weight"] = rnd(C, C)
        t["cls.predictions.transform.dense.bias"] = rnd(C, std=0.02)
        t["cls.predictions.transform.LayerNorm.weight"], t["cls.predictions.transform.LayerNorm.bias"] = ln()
        t["cls.predictions.bias"] = rnd(V, std=0.02)
    else:
        raise SystemExit("unknown arch " + arch)
    save_st(f"{out}/model.safetensors", t, {"format": "pt"})
    with open(f"{out}/config.json", "w") as f:
        json.dump(cfg, f, indent=2)


def ffn_weights(model_dir, layer):
    """(W1 [F, C], b1 or None, Wg [F, C] or None, act name) in nn.Linear orientation."""
    cfg = json.load(open(f"{model_dir}/config.json"))
    t = load_st(f"{model_dir}/model.safetensors")
    mt = cfg["model_type"]
    if mt == "gpt2":
        p = f"transformer.h.{layer}.mlp."
        if p + "c_fc.weight" not in t:
            p = f"h.{layer}.mlp."
        return t[p + "c_fc.weight"].T, t[p + "c_fc.bias"], None, cfg.get("activation_function", "gelu_new"), cfg
    if mt in ("llama", "mistral", "qwen2"):
        p = f"model.layers.{layer}.mlp."
        return t[p + "up_proj.weight"], None, t[p + "gate_proj.weight"], cfg.get("hidden_act", "silu"), cfg
    if mt == "opt":
        p = f"model.decoder.layers.{layer}."
        return t[p + "fc1.weight"], t[p + "fc1.bias"], None, cfg.get("activation_function", "relu"), cfg
    if mt == "bert":
        p = f"bert.encoder.layer.{layer}."
        return t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"], None, cfg.get("hidden_act", "gelu"), cfg
    raise SystemExit("unknown model_type " + mt)


def down_weights(model_dir, layer):
    cfg = json.load(open(f"{model_dir}/config.json"))
    t = load_st(f"{model_dir}/model.safetensors")
    mt = cfg["model_type"]
    if mt == "gpt2":
        p = f"transformer.h.{layer}.mlp."
        return t[p + "c_proj.weight"].T, t[p + "c_proj.bias"]
    if mt in ("llama", "mistral", "qwen2"):
        return t[f"model.layers.{layer}.mlp.down_proj.weight"], None
    if mt == "opt":
        p = f"model.decoder.layers.{layer}."
        return t[p + "fc2.weight"], t[p + "fc2.bias"]
    p = f"bert.encoder.layer.{layer}."
    return t[p + "output.dense.weight"], t[p + "output.dense.bias"]


def act_fn(name, x):
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return torch.nn.functional.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return torch.nn.functional.silu(x)
    raise SystemExit("unknown activation " + name)


def hidden(model_dir, layer, x):
    w1, b1, wg, act, _ = ffn_weights(model_dir, layer)
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    u = x @ torch.from_numpy(np.ascontiguousarray(w1)).T
    if wg is not None:
        return act_fn(act, x @ torch.from_numpy(np.ascontiguousarray(wg)).T) * u
    return act_fn(act, u + torch.from_numpy(b1))


def n_layers(cfg):
    return cfg.get("n_layer", cfg.get("num_hidden_layers"))


def write_wordpiece(path):
    """A lowercase WordPiece tokenizer.json with 59 tokens (fits the fixtures' vocab of 96)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(specials + letters + ["##" + c for c in letters] + [".", ","])}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(specials)],
           "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                          "strip_accents": None, "lowercase": True},
           "pre_tokenizer": {"type": "BertPreTokenizer"},
           "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
           "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
           "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                     "max_input_chars_per_word": 100, "vocab": vocab}}
    with open(path, "w") as f:
        json.dump(tok, f)


def make_partition(model_dir, out):
    import os
    os.makedirs(out, exist_ok=True)
    E = arg("--experts", 16)
    seed = arg("--seed", 0)
    fp = arg("--fingerprint", "", str)
    uneven = "--uneven" in sys.argv
    cfg = json.load(open(f"{model_dir}/config.json"))
    L = n_layers(cfg)
    tensors = {}
    F = None
    for layer in range(L):
        w1 = ffn_weights(model_dir, layer)[0]
        F = w1.shape[0]
        rng = np.random.default_rng(seed + layer)
        if uneven:
            # The first half of the experts twice the size of the others (pairs of equal and of unequal size).
            wts = np.array([2 if e < E // 2 else 1 for e in range(E)])
            sizes = F * wts // wts.sum()
            sizes[-1] += F - sizes.sum()
            labels = np.repeat(np.arange(E), sizes)[rng.permutation(F)].astype(np.int32)
        else:
            labels = (np.arange(F) * E // F)[rng.permutation(F)].astype(np.int32)
        perm = np.concatenate([np.sort(np.nonzero(labels == e)[0]) for e in range(E)]).astype(np.int32)
        tensors[f"blk.{layer}.labels"] = labels
        tensors[f"blk.{layer}.perm"] = perm
    save_st(f"{out}/labels.safetensors", tensors)
    meta = {"format": "moefy-partition", "version": 1, "method": "random", "options": {}, "seed": seed,
            "experts": E, "expert_size": F // E, "d_ff": F, "layers": list(range(L)), "model_fingerprint": fp,
            "recording": "", "metrics": {}, "tool_version": "fixture"}
    json.dump(meta, open(f"{out}/partition.json", "w"), indent=2)


def make_recording(model_dir, out):
    import os
    os.makedirs(out, exist_ok=True)
    S = arg("--samples", 512)
    seed = arg("--seed", 0)
    fp = arg("--fingerprint", "", str)
    cfg = json.load(open(f"{model_dir}/config.json"))
    L = n_layers(cfg)
    g = torch.Generator().manual_seed(seed)
    tensors = {"token_id": np.zeros(S, np.int32), "doc_id": np.arange(S, dtype=np.int64),
               "position": np.zeros(S, np.int32), "category": np.full(S, -1, np.int32)}
    for layer in range(L):
        w1 = ffn_weights(model_dir, layer)[0]
        C = w1.shape[1]
        # Inputs near a few shared directions, so that routing has structure to learn.
        centers = torch.randn(8, C, generator=g)
        pick = torch.randint(0, 8, (S,), generator=g)
        x = centers[pick] + 0.6 * torch.randn(S, C, generator=g)
        h = hidden(model_dir, layer, x.numpy())
        tensors[f"blk.{layer}.ffn_in"] = x.numpy().astype(np.float16)
        tensors[f"blk.{layer}.ffn_act"] = h.numpy().astype(np.float16)
    save_st(f"{out}/samples.safetensors", tensors)
    man = {"format": "moefy-recording", "version": 1,
           "model": {"path": model_dir, "fingerprint": fp, "layers": L, "d_model": int(C), "d_ff": int(w1.shape[0])},
           "tokens": S, "sequences": 1, "layers": list(range(L)),
           "options": {"samples": S, "seed": seed, "active": {"rule": "positive"}}, "tool_version": "fixture"}
    json.dump(man, open(f"{out}/manifest.json", "w"), indent=2)


def moe_ref(model_dir, labels_st, layer, x_npy, k, out_npy, router_st=None):
    layer, k = int(layer), int(k)
    w1, b1, wg, act, cfg = ffn_weights(model_dir, layer)
    w2, b2 = down_weights(model_dir, layer)
    labels = load_st(labels_st)[f"blk.{layer}.labels"].astype(np.int64)
    E = int(labels.max()) + 1
    x = torch.from_numpy(np.load(x_npy).astype(np.float32))
    if router_st:
        cent = torch.from_numpy(load_st(router_st)[f"blk.{layer}.centroids"].astype(np.float32))
    else:
        # Gated FFNs: the gate decides which neurons fire, so its rows define the centroids.
        rows = torch.from_numpy(np.ascontiguousarray(wg if wg is not None else w1, dtype=np.float32))
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cent = torch.stack([rows[torch.from_numpy(labels == e)].mean(0) for e in range(E)])
    scores = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ cent.T
    top = scores.topk(k, dim=1).indices  # [N, k]
    sel = torch.zeros(x.shape[0], E, dtype=torch.bool)
    sel.scatter_(1, top, True)
    neuron_mask = sel[:, torch.from_numpy(labels)]  # [N, F]
    h = hidden(model_dir, layer, x.numpy()) * neuron_mask
    y = h @ torch.from_numpy(np.ascontiguousarray(w2, dtype=np.float32)).T
    if b2 is not None:
        y = y + torch.from_numpy(b2)
    np.save(out_npy, y.numpy())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "model":
        make_model(sys.argv[2], sys.argv[3])
    elif cmd == "models":
        for a in ("gpt2", "llama", "mistral", "qwen2", "opt", "bert"):
            make_model(a, f"{sys.argv[2]}/{a}")
        sys.argv += ["--act", "gelu_new"]
        make_model("gpt2", f"{sys.argv[2]}/gpt2-gelu")
    elif cmd == "bundle":
        # model + partition + recording (no fingerprint) + a WordPiece tokenizer.json, in one process.
        arch, out = sys.argv[2], sys.argv[3]
        make_model(arch, f"{out}/model")
        write_wordpiece(f"{out}/model/tokenizer.json")
        make_partition(f"{out}/model", f"{out}/part")
        make_recording(f"{out}/model", f"{out}/rec")
    elif cmd == "tokenizer":
        write_wordpiece(sys.argv[2])
    elif cmd == "engine_variants":
        # Every variant of the engine's reference checkpoints (scripts/ref/make_checkpoint.py).
        import os
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import make_checkpoint
        for v in sorted(make_checkpoint.VARIANTS):
            make_checkpoint.main([v, f"{sys.argv[2]}/{v}"])
    elif cmd == "moe_ref_many":
        for spec in json.load(open(sys.argv[2])):
            moe_ref(*spec)
    elif cmd == "partition":
        make_partition(sys.argv[2], sys.argv[3])
    elif cmd == "recording":
        make_recording(sys.argv[2], sys.argv[3])
    elif cmd == "moe_ref":
        moe_ref(*sys.argv[2:9])
    else:
        raise SystemExit("unknown command " + cmd)
