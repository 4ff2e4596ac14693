#include "analysis/project/python_snippet.h"

#include <nlohmann/json.hpp>

namespace moefy {

namespace {

// The safetensors reader every snippet starts with: u64 little-endian header
// length, the JSON header, then the data region (data_offsets relative to it).
// BF16 has no numpy dtype: it stays uint16 bit patterns.
const char* kReader = R"PY(import json, os, struct
import numpy as np

def load_st(path):
    """A safetensors file as {name: numpy array}, as safetensors.numpy.load_file gives it."""
    dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    # Memory-mapped: only the tensors used are read (a recording's coact.safetensors can hold GBs).
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    return {name: data[t["data_offsets"][0]:t["data_offsets"][1]].view(dtypes[t["dtype"]]).reshape(t["shape"])
            for name, t in header.items() if name != "__metadata__"}

)PY";

// Per kind: the body after the reader; ARTEFACT is set to the path first.
struct Body {
  const char* kind;
  const char* code;
};

const Body kBodies[] = {
    {"model", R"PY(# config.json and the tensors' names and shapes (headers only: no weights are read)
config = json.load(open(os.path.join(ARTEFACT, "config.json")))
print({k: config[k] for k in ("model_type", "num_hidden_layers", "n_layer", "num_layers", "hidden_size", "n_embd",
                             "d_model", "intermediate_size", "n_inner", "d_ff") if k in config})
for name in sorted(os.listdir(ARTEFACT)):
    if name.endswith(".safetensors"):
        with open(os.path.join(ARTEFACT, name), "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        tensors = [(k, t["dtype"], t["shape"]) for k, t in header.items() if k != "__metadata__"]
        print(name, len(tensors), "tensors, e.g.", tensors[:3])
)PY"},
    {"corpus", R"PY(# a corpus folder (one file per document) or a corpus file (.txt, .jsonl, .tsv, ...)
if os.path.isdir(ARTEFACT):
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(ARTEFACT) for f in names)
    print(len(files), "files, e.g.", files[:3])
else:
    with open(ARTEFACT, "rb") as f:
        for line in f.read(4096).decode("utf-8", "replace").splitlines()[:3]:
            print(line[:120])
)PY"},
    {"recording", R"PY(manifest = json.load(open(os.path.join(ARTEFACT, "manifest.json")))
sites = manifest.get("sites") or ["blk.%d" % L for L in manifest["layers"]]
stats = load_st(os.path.join(ARTEFACT, "stats.safetensors"))
site = sites[0]
count = stats[site + ".count"]              # I64 [d_ff]: tokens on which each neuron is active
total = stats[site + ".sum"]                # F64 [d_ff]: sum of the hidden activation h
peak = stats[site + ".max"]                 # F32 [d_ff]: max of h
active_hist = stats[site + ".active_hist"]  # I64 [d_ff + 1]: tokens by number of active neurons
print(site, "of", sites, "tokens", manifest["tokens"], "d_ff", count.shape[0], "mean firing frequency", float(count.mean()) / manifest["tokens"])
coact_file = os.path.join(ARTEFACT, "coact.safetensors")
if os.path.exists(coact_file):
    coact = load_st(coact_file)[site + ".coact"]
    if coact.ndim == 1:  # format version 2: the upper triangle, row i holding columns i..d_ff-1
        iu, packed = np.triu_indices(count.shape[0]), coact
        coact = np.zeros((count.shape[0], count.shape[0]), packed.dtype)
        coact[iu] = packed
        coact.T[iu] = packed
    # coact: I32 [d_ff, d_ff], tokens on which i and j are both active (symmetric)
    print("coact", coact.shape, "diagonal == count:", bool((np.diag(coact) == count).all()))
)PY"},
    {"partition", R"PY(meta = json.load(open(os.path.join(ARTEFACT, "partition.json")))
sites = meta.get("sites") or ["blk.%d" % L for L in meta["layers"]]
tensors = load_st(os.path.join(ARTEFACT, "labels.safetensors"))
for site in sites:
    labels = tensors[site + ".labels"]  # I32 [d_ff]: expert of each neuron (E = the shared expert, if any)
    perm = tensors[site + ".perm"]      # I32 [d_ff]: neuron ids grouped by expert
    print(site, meta["method"], "E", meta["experts"], "sizes", np.bincount(labels).tolist())
)PY"},
    {"router", R"PY(meta = json.load(open(os.path.join(ARTEFACT, "router.json")))
sites = meta.get("sites") or ["blk.%d" % L for L in meta["layers"]]
names = {"oracle": [], "similarity": ["centroids"], "mlp": ["w1", "w2"], "sigmoid": ["w1"],
         "dynamic-k": ["w1", "b1"]}[meta["kind"]]
weights = load_st(os.path.join(ARTEFACT, "router.safetensors")) if names else {}
for site, top_k in zip(sites, meta["top_k"]):
    # centroids [E, d_model]; w1 [E, d_model]; w2 [E, E]; b1 [E]
    print(site, meta["kind"], "top_k", top_k, {n: weights[site + "." + n].shape for n in names})
)PY"},
    {"evaluation", R"PY(ev = json.load(open(os.path.join(ARTEFACT, "eval.json")))
# one row per router and active-expert fraction (None where a figure was not measured)
results = [(r["name"], r["fraction"], r.get("perplexity"), r.get("top1_agreement"), r.get("ffn_flops_fraction"))
           for r in ev["results"]]
print("dense perplexity", ev.get("reference", {}).get("perplexity"))
for row in results:
    print(row)
)PY"},
    {"export", R"PY(config = json.load(open(os.path.join(ARTEFACT, "config.json")))
block = config["moefication"]
sites = block.get("sites") or ["blk.%d" % L for L in block["layers"]]
moe = load_st(os.path.join(ARTEFACT, block.get("weights", "moe.safetensors")))
for site, experts, top_k in zip(sites, block["experts"], block["top_k"]):
    labels = moe[site + ".labels"]  # I32 [d_ff]: expert of each neuron (E = the shared expert, if any)
    up0 = moe[site + ".experts.0.up.weight"]  # [s_0, d_model]; .down.weight [d_model, s_0]
    print(site, "E", experts, "top_k", top_k, "sizes", np.bincount(labels).tolist(), "expert 0 up", up0.shape)
)PY"},
    {"front", R"PY(front = json.load(open(os.path.join(ARTEFACT, "front.json")))
print("budgets", front["budgets"], "dense perplexity", front["dense"]["perplexity"])
points = [(m["name"], p["budget"], p["ffn_flops_fraction"], p["perplexity"], p["top1_agreement"])
          for m in front["methods"] for p in m["points"]]
for row in points:
    print(row)
for best in front["best"]:
    print("best", best)
)PY"},
    {"analysis", R"PY(meta = json.load(open(os.path.join(ARTEFACT, "analysis.json")))
tensors = load_st(os.path.join(ARTEFACT, "analysis.safetensors"))
site = sorted(meta["sites"])[0]
sim = tensors[site + ".sim.up"]    # F64 [E, E]: cosine of the experts' up projections
usage = tensors.get(site + ".usage")  # F64 [E]: selection share (only when analysed on a corpus)
print(site, "of", sorted(meta["sites"]), "sim", sim.shape, "usage", None if usage is None else usage.round(3).tolist())
)PY"},
};

}  // namespace

const std::vector<std::string>& pythonSnippetKinds() {
  static const std::vector<std::string> kinds = [] {
    std::vector<std::string> k;
    for (const Body& b : kBodies) k.emplace_back(b.kind);
    return k;
  }();
  return kinds;
}

std::string pythonSnippet(const std::string& kind, const std::string& path) {
  for (const Body& b : kBodies)
    if (kind == b.kind)
      // A JSON string is a valid Python string literal (\uXXXX escapes included).
      return std::string("# ") + kind + " (docs/formats.md); needs numpy\n" + kReader +
             "ARTEFACT = " + nlohmann::json(path).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
             "\n" + b.code;
  return {};
}

}  // namespace moefy
