#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/*).
Seeds are small valid inputs of each reader plus the bad inputs of issue 12
(duplicates, gaps, NaN, 2^32 values, deep nesting) so that the regression run
replays them. Re-run after changing a format: python3 fuzz/make_seeds.py"""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st_header(tensors, pad=True, extra=b""):
    """tensors: list of (name, dtype, shape, begin, end); data bytes follow."""
    h = {n: {"dtype": d, "shape": s, "data_offsets": [b, e]} for n, d, s, b, e in tensors}
    text = json.dumps(h).encode()
    end = max([e for *_, e in tensors] + [0])
    return struct.pack("<Q", len(text)) + text + b"\0" * end + extra


def raw_header(text, data_len):
    return struct.pack("<Q", len(text)) + text.encode() + b"\0" * data_len


# ---------------------------------------------------------------- safetensors header
T = "safetensors_header"
out(T, "valid", st_header([("a", "F32", [2, 2], 0, 16), ("b", "I64", [1], 16, 24)]))
out(T, "empty_tensor", st_header([("e", "F16", [0, 4], 0, 0), ("x", "BF16", [3], 0, 6)]))
out(T, "metadata", raw_header('{"__metadata__":{"format":"pt"},"w":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}', 3))
out(T, "duplicate_name", raw_header('{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}', 4))
out(T, "gap", raw_header('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}', 6))
out(T, "trailing", raw_header('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', 5))
out(T, "overlap", raw_header('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}', 4))
out(T, "deep", raw_header("[" * 300 + "]" * 300, 0))
out(T, "huge_dim", raw_header('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}', 0))
out(T, "short", b"\x05\x00\x00")

# ---------------------------------------------------------------- json
T = "json"
out(T, "object", '{"a": 1, "b": [true, null, 2.5, "x"], "c": {"d": -3}}')
out(T, "duplicate_key", '{"a": 1, "a": 2}')
out(T, "nested_duplicate", '{"a": {"k": 1}, "b": {"k": 2, "k": 3}}')
out(T, "deep_ok", "[" * 200 + "]" * 200)
out(T, "deep_refused", "[" * 300 + "]" * 300)
out(T, "int_2pow32", "4294967296")
out(T, "int_2pow64m1", "18446744073709551615")
out(T, "float_inf", "1e999")
out(T, "number_int", "7")
out(T, "bad", '{"a": }')

# ---------------------------------------------------------------- config.json
T = "config_json"
with open(os.path.join(ROOT, "data/models/brown-relu/config.json")) as f:
    gpt2 = json.load(f)
out(T, "gpt2", json.dumps(gpt2, indent=1))
llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
         "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu", "rope_theta": 10000.0,
         "tie_word_embeddings": False}
out(T, "llama", json.dumps(llama))
out(T, "gpt2_layers_2pow32", json.dumps(dict(gpt2, n_layer=4294967297)))
out(T, "gpt2_nested_deep", '{"model_type": "gpt2", "x": ' + "[" * 300 + "]" * 300 + "}")
out(T, "llama_dup_key", json.dumps(llama)[:-1] + ', "hidden_size": 32}')

# ---------------------------------------------------------------- tokenizer.json
T = "tokenizer_json"
bytes_vocab = {}
def byte_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
b2u = byte_to_unicode()
vocab = {"<|endoftext|>": 0}
for b in range(256):
    vocab[b2u[b]] = len(vocab)
merges = []
for a, b in [("H", "e"), ("l", "l"), ("He", "ll"), ("o", ","), ("\u0120", "w")]:
    merges.append(a + " " + b)
    vocab[a + b] = len(vocab)
bpe = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
       "rstrip": False, "normalized": True, "special": True}], "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
       "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges}}
out(T, "bpe_bytelevel", json.dumps(bpe))
wp = {"normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                         "pair": [], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}}},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3, "world": 4, "##s": 5, ",": 6, "!": 7, "caf": 8, "##e": 9, "end": 10}}}
out(T, "wordpiece_bert", json.dumps(wp))
uni = {"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
       "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
       "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": False,
                 "vocab": [["<unk>", 0.0], ["\u2581", -2.0], ["\u2581Hello", -3.0], ["H", -5.0], ["e", -4.0], ["l", -4.0], ["o", -4.0], [",", -3.5], ["w", -4.2], ["d", -4.3], ["r", -4.1]]}}
out(T, "unigram_metaspace", json.dumps(uni))
split = dict(bpe, pre_tokenizer={"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]})
out(T, "bpe_split_regex", json.dumps(split))
# issue 12 regressions: duplicated vocab entry, id 2^40, NaN-like score (1e999), deep nesting
dup = json.dumps(bpe).replace('"vocab": {', '"vocab": {"He": 7, ', 1)
out(T, "bpe_duplicate_vocab_key", dup)
out(T, "bpe_vocab_id_2pow40", json.dumps(bpe).replace('"Hell": 259', '"Hell": 1099511627776'))
out(T, "unigram_inf_score", json.dumps(uni).replace("-5.0", "1e999"))
uni_dup = json.loads(json.dumps(uni)); uni_dup["model"]["vocab"].append(["e", -1.0])
out(T, "unigram_duplicate_piece", json.dumps(uni_dup))
out(T, "deep", '{"model": ' + "[" * 300 + "]" * 300 + "}")
# Finding of fuzz_regress_tokenizer_json --mutate (fixed): a WordPiece vocab whose ids skip
# one made vocabSize() the entry count, smaller than its largest id.
wp_gap = json.loads(json.dumps(wp)); del wp_gap["model"]["vocab"]["world"]
out(T, "wordpiece_vocab_gap", json.dumps(wp_gap))
# Finding (fixed): encoding with a Unigram model without unk_id threw a message naming no file.
uni_nounk = json.loads(json.dumps(uni)); del uni_nounk["model"]["unk_id"]
out(T, "unigram_no_unk_encode", json.dumps(uni_nounk))

# ---------------------------------------------------------------- SentencePiece .model
T = "sentencepiece_model"
def varint(v):
    b = b""
    while True:
        x = v & 0x7F; v >>= 7
        if v: b += bytes([x | 0x80])
        else: return b + bytes([x])
def field(num, wt, payload):
    tag = varint((num << 3) | wt)
    if wt == 0: return tag + varint(payload)
    if wt == 2: return tag + varint(len(payload)) + payload
    if wt == 5: return tag + payload
def piece(p, score, typ=1):
    return field(1, 2, field(1, 2, p.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, typ))
def spm(pieces, model_type=1, byte_fallback=False, normalizer=b"identity", extra=b""):
    body = b"".join(piece(*p) for p in pieces)
    body += field(2, 2, field(3, 0, model_type) + field(35, 0, int(byte_fallback)) + field(40, 0, 0) + field(41, 0, 1) + field(42, 0, 2))
    body += field(3, 2, field(1, 2, normalizer) + field(3, 0, 1) + field(4, 0, 1) + field(5, 0, 1))
    return body + extra
base = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("\u2581", -1.0), ("\u2581Hello", -2.0), ("H", -4.0), ("e", -3.0),
        ("l", -3.0), ("o", -3.0), (",", -3.5), ("w", -3.9), ("r", -3.8), ("d", -3.7), ("\u2581w", -2.5)]
out(T, "unigram", spm(base))
out(T, "bpe", spm(base, model_type=2))
bytes_pieces = base + [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
out(T, "unigram_byte_fallback", spm(bytes_pieces, byte_fallback=True))
out(T, "duplicate_piece", spm(base + [("e", -1.0)]))
out(T, "nan_score", spm(base[:5] + [("H", float("nan"))] + base[6:]))
out(T, "inf_score", spm(base[:5] + [("H", float("inf"))] + base[6:]))
out(T, "unk_id_outside", spm(base) + field(2, 2, field(40, 0, 4294967296 + 99)))
with open(os.path.join(ROOT, "tests/data/tokenizer/spm_bpe.model"), "rb") as f:
    out(T, "real_prefix_truncated", f.read()[:4096])

# ---------------------------------------------------------------- corpus .jsonl
T = "corpus_jsonl"
out(T, "plain", '{"text": "hello world", "label": "a"}\n{"text": "second doc\\nwith two lines", "label": "b"}\n')
out(T, "unicode", '{"text": "caf\u00e9 \\u00e9\\ud83d\\ude00", "label": 3}\n\n{"text": "x", "label": null}\n')
out(T, "duplicate_key", '{"text": "a", "text": "b"}\n')
out(T, "deep", '{"text": "a", "x": ' + "[" * 300 + "]" * 300 + "}\n")
out(T, "not_object", '[1, 2]\n"text"\n')
out(T, "crlf", '{"text": "a"}\r\n{"text": "b"}\r\n')
out(T, "binary", b'{"text": "a\x00b"}\n')

# ---------------------------------------------------------------- eval.json
T = "eval_json"
ev = {"format": "moefy-eval", "version": 1, "reference": {"loss": 3.2, "perplexity": 24.5},
      "results": [{"router": "mlp", "name": "mlp", "fraction": 0.25, "top_k": [4, 0], "loss": 3.4, "perplexity": 29.9,
                   "loss_delta": 0.2, "top1_agreement": 0.8, "kl": 0.05, "layer_rel_error": [0.3, None], "positions": 1000,
                   "speed": {"forward_tokens_per_s": 1000.0, "dense_forward_tokens_per_s": 800.0, "forward_speedup": 1.25,
                             "generate_tokens_per_s": 50.0, "dense_generate_tokens_per_s": 45.0, "generate_speedup": 1.11}}]}
out(T, "valid", json.dumps(ev, indent=1))
bad = json.loads(json.dumps(ev)); bad["results"][0]["perplexity"] = -5
out(T, "perplexity_negative", json.dumps(bad))
bad = json.loads(json.dumps(ev)); bad["results"][0]["speed"]["forward_speedup"] = -1e300
out(T, "speedup_negative", json.dumps(bad))
out(T, "ppl_inf", json.dumps(ev).replace("29.9", "1e999"))
out(T, "deep", '{"format": "moefy-eval", "results": ' + "[" * 300 + "]" * 300 + "}")

# ---------------------------------------------------------------- artefact metadata (first byte: kind)
T = "artefact_metadata"
manifest = {"format": "moefy-recording", "version": 1, "tool_version": "0.1.0",
            "model": {"path": "/m", "fingerprint": "abc", "arch": "gpt2", "layers": 4, "d_model": 256, "d_ff": 1024},
            "corpus": {"path": "/c", "kind": "txt", "categories": ["a", "b"]}, "tokens": 4096, "sequences": 64,
            "chunks_done": 1, "complete": True, "layers": [0, 1, 2, 3],
            "options": {"active": {"rule": "positive"}, "soft_coact": False, "samples": 256, "seed": 0}}
out(T, "recording", b"\x00" + json.dumps(manifest).encode())
m2 = json.loads(json.dumps(manifest)); m2["layers"] = [4294967296]
out(T, "recording_layer_2pow32", b"\x00" + json.dumps(m2).encode())
m3 = json.loads(json.dumps(manifest)); m3["model"]["d_ff"] = 4294967296 + 1024
out(T, "recording_dff_2pow32", b"\x00" + json.dumps(m3).encode())
part = {"format": "moefy-partition", "version": 1, "method": "coact", "experts": 16, "d_ff": 1024, "model_fingerprint": "abc",
        "layers": [0, 1], "seed": 0}
out(T, "partition", b"\x01" + json.dumps(part).encode())
out(T, "partition_experts_2pow32", b"\x01" + json.dumps(dict(part, experts=4294967296 + 16)).encode())
router = {"format": "moefy-router", "version": 1, "kind": "oracle", "layers": [0, 1], "top_k": [4, 4], "experts": [16, 16],
          "model_fingerprint": "abc", "partition": {"path": "/p", "labels_hash": "x"}}
out(T, "router_oracle", b"\x02" + json.dumps(router).encode())
out(T, "router_mlp", b"\x02" + json.dumps(dict(router, kind="mlp")).encode())
out(T, "router_layer_2pow32", b"\x02" + json.dumps(dict(router, layers=[4294967296, 1])).encode())
out(T, "eval", b"\x03" + json.dumps(ev).encode())
out(T, "deep", b"\x00" + ("[" * 300 + "]" * 300).encode())
print("seeds written under", os.path.join(HERE, "corpus"))
