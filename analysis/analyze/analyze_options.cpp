#include "analysis/analyze/analyze_options.h"

#include <limits>

#include "analysis/common/error.h"
#include "analysis/model/site.h"

namespace moefy {

const OptionTable& analyzeOptionTable() {
  static const OptionTable table = [] {
    const AnalyzeOptions d;
    OptionTable t("analyze",
                  "expert similarity, router preference and expert usage of a native MoE model or a MoE export",
                  "moefy analyze MODEL_DIR [CORPUS] --out DIR [--sites blk.0,blk.1] [--static-only] [options]\n",
                  "Analyses of a native MoE checkpoint (Mixtral, Qwen2-MoE, OLMoE) or of a MoE export of moefy\n"
                  "(its routed experts and routers, or with --router oracle the oracle's choice) after Lo et al.\n"
                  "(arXiv 2406.18219).\n"
                  "From the weights, per MoE layer: cosine similarity of the experts' flattened gate/up/down\n"
                  "matrices and of their neuron means, neuron-level similarity after the optimal one-to-one\n"
                  "matching of two experts' neurons with Kendall's tau of the matching, the router rows'\n"
                  "similarity and its R^2 against each projection's, and 2-D PCA of experts and neurons.\n"
                  "On CORPUS (a text corpus or a token-id file *.ids; every expert computes every token on the\n"
                  "side): the experts' output similarity, router-score rank against output-norm rank, the chosen\n"
                  "experts per token and usage health (selection share, usage perplexity, dead experts,\n"
                  "co-occurrence, overlap between consecutive layers, channel usage). Writes analysis.json and\n"
                  "analysis.safetensors into DIR atomically (docs/formats.md). Ctrl-C cancels cleanly.\n");
    t.positionals({"MODEL_DIR", "CORPUS"}, 2)
        .text("out", "DIR", std::nullopt, "the analysis folder to write (required)")
        .text("sites", "blk.0,blk.1", "", "comma-separated MoE layer sites to analyse (empty = every MoE layer)")
        .flag("static-only", "weight analyses only (no CORPUS)")
        .integer("tokens", "N", d.maxTokens, 0, int64_t{1} << 50, "corpus tokens analysed (0 = the whole corpus)")
        .integer("seq-len", "S", d.seqLen, 2, 1 << 20, "window length in tokens")
        .integer("batch", "B", d.batch, 1, 1 << 16, "windows per forward pass")
        .real("fire-eps", "EPS", d.fireEps, 0, std::numeric_limits<double>::max(),
              "channel usage: a neuron fires on a token when |h| > EPS (h = act(gate x) * up x)")
        .integer("match-max", "N", d.matchMaxNeurons, 0, 1 << 20,
                 "neuron matching only for experts of at most N neurons (it costs N^3 per expert pair)")
        .choice("router", {"stored", "oracle"}, "stored",
                "MoE exports: analyse the stored routers' choice or the oracle's (experts by activation mass)")
        .flag("force", "replace an existing analysis DIR")
        .flag("json", "print analysis.json's summary as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

AnalyzeOptions analyzeOptionsFrom(const OptionValues& v) {
  AnalyzeOptions o;
  for (const std::string& name : splitListValue(v.text("sites"), "--sites")) {
    const std::optional<Site> s = Site::tryParse(name);
    if (!s || s->stack != SiteStack::Single || s->expert >= 0 || s->shared)
      throw ParameterError("--sites: '" + name + "' is not a layer site blk.L (e.g. blk.0,blk.3)");
    o.layers.push_back(s->layer);
  }
  o.dynamicAnalyses = !v.flag("static-only");
  o.maxTokens = v.integer("tokens");
  o.seqLen = v.int32("seq-len");
  o.batch = v.int32("batch");
  o.fireEps = v.real("fire-eps");
  o.matchMaxNeurons = v.integer("match-max");
  o.oracleRouter = v.text("router") == "oracle";
  return o;
}

}  // namespace moefy
