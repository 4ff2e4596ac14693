#include "analysis/split/split_options.h"

#include <limits>

#include "analysis/common/error.h"
#include "analysis/record/record_options.h"

namespace moefy {

const OptionTable& splitOptionTable() {
  static const OptionTable table = [] {
    const SplitOptions d;
    OptionTable t(
        "split", "split FFN neurons into equal-size experts (coact/METIS, balanced k-means, random)",
        "moefy split REC_DIR --method coact|kmeans|random (--experts E | --expert-size S) --out PART_DIR [options]\n"
        "       moefy split --compare PART_A PART_B [...] [--json]\n"
        "       moefy split REC_DIR --export-graph OUT.graph --layer L [--weighting ..] [--topk auto|K] [--graph ..]\n",
        "Every expert gets exactly d_ff / E neurons (E must divide d_ff). coact partitions the\n"
        "co-activation graph with METIS (recursive bisection; --metis-ptype kway for gpmetis's k-way\n"
        "default) and repairs the balance by moving the neurons with the least affinity to their\n"
        "part. kmeans clusters the L2-normalised rows of W1 (gate/up/both for gated FFNs) with an\n"
        "exact equal-size assignment, keeping the best of --restarts; random is a seeded balanced\n"
        "shuffle. Metrics per layer: coact_inside, edge_cut, balance, recall_at_k (on\n"
        "the recorded samples), stability_ari/nmi against a rerun with seed + 1, and (coact)\n"
        "half_stability_ari/nmi between splits of two disjoint halves of the sampled tokens.\n"
        "--compare prints partitions side by side with their pairwise ARI/NMI. --export-graph writes\n"
        "the weighted co-activation graph in METIS format to cross-check with gpmetis.\n"
        "--shared N|auto first moves each layer's most frequently active neurons into a shared expert\n"
        "that every token computes (label E); the method splits the other neurons into --experts E\n"
        "equal routed experts, so d_ff - N must be a multiple of E (auto rounds N to one).\n"
        "Details: docs/recording-and-splitting.md.\n");
    t.positionals({"REC_DIR"}, -1)
        .choice("method", {"coact", "kmeans", "random"}, d.method,
                "co-activation graph + METIS, balanced k-means on W1 rows, or a seeded random split")
        .integerNoDefault("experts", "E", 1, 1 << 24, "number of experts per layer (must divide d_ff)", "16")
        .integerNoDefault("expert-size", "S", 1, 1 << 24, "neurons per expert, instead of --experts")
        .text("layers", "0,1,..", "", "comma-separated layers (site indices) to split (empty = every recorded site)")
        .text("sites", "SITES", "",
              "recorded sites to split, comma-separated (blk.2, dec.blk.0, blk.1.exp.3, blk.1.shared; blk.1 of a "
              "native MoE layer = its recorded experts); the sites must have one width")
        .integer("seed", "N", static_cast<int64_t>(d.seed), 0, std::numeric_limits<int64_t>::max(), "seed")
        .text("out", "PART_DIR", std::nullopt, "the partition folder to write")
        .flag("force", "replace an existing PART_DIR")
        .choice("weighting", {"raw", "jaccard", "ppmi", "percentile"}, d.graph.weighting,
                "edge weights: counts, Jaccard x 1000, PPMI x 100, or MoEfication's percentile integers", {},
                "coact and --export-graph")
        .text("topk", "auto|K", "auto",
              "keep each neuron's K strongest neighbours (auto: the dense graph up to 1536 neurons, else "
              "max(64, 2 d_ff / E); 0 = every edge)",
              false, "coact and --export-graph")
        .choice("graph", {"binary", "soft"}, d.graphSource,
                "binary co-activation counts, or the soft co-activation (record with --soft-coact)", {},
                "coact and --export-graph")
        .choice("metis-ptype", {"rb", "kway"}, metisPtypeName(d.metisPtype),
                "METIS scheme: recursive bisection, or k-way (gpmetis's default scheme, used by the MoEfication "
                "recipe)",
                {}, "coact")
        .text("model", "MODEL_DIR", "", "the model whose W1 rows are clustered (empty = the recording's model)", false,
              "kmeans")
        .choice("rows", {"gate", "up", "both"}, d.rows, "which W1 rows of a gated FFN to cluster", {}, "kmeans")
        .integer("restarts", "R", d.restarts, 1, 1000, "k-means restarts (the best is kept)", "kmeans")
        .integer("max-iter", "N", d.maxIter, 1, 1000000, "k-means iterations per restart", "kmeans")
        .text("shared", "N|auto", "",
              "move the N most frequently active neurons of each layer into one always-computed shared expert; "
              "--experts E then counts the routed experts, which split the rest (auto: --shared-mass, --shared-max)",
              false, "--shared")
        .real("shared-mass", "F", d.shared.mass, 0.0, 1.0,
              "auto: the fewest most active neurons that hold this share of the recorded activations", true, "--shared")
        .real("shared-max", "F", d.shared.maxFraction, 0.0, 0.99,
              "auto: at most this share of d_ff in the shared expert", false, "--shared")
        .flag("no-stability", "skip the rerun with seed + 1 that measures stability (ARI/NMI)")
        .flag("compare", "compare the partitions given as arguments", "--compare")
        .text("export-graph", "OUT.graph", std::nullopt, "write one layer's co-activation graph in METIS format", false,
              "--export-graph")
        .integerNoDefault("layer", "L", 0, 1000000, "the layer of --export-graph", {}, "--export-graph")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

std::vector<std::string> ignoredSplitOptions(const OptionValues& v) {
  const bool compare = v.flag("compare"), exportGraph = !compare && v.has("export-graph");
  const std::string method = v.text("method");
  const std::string mode = compare ? "--compare" : exportGraph ? "--export-graph" : "--method " + method;
  const bool split = !compare && !exportGraph;
  std::vector<std::string> out;
  for (const OptionSpec& s : splitOptionTable().options()) {
    if (s.group.empty() || s.name == "shared" || s.name == "compare" || s.name == "export-graph" || !v.has(s.name))
      continue;
    bool applies = true;
    std::string where;
    if (s.group == "coact") {
      applies = split && method == "coact", where = "--method coact";
    } else if (s.group == "coact and --export-graph") {
      applies = exportGraph || (split && method == "coact"), where = "--method coact and --export-graph";
    } else if (s.group == "kmeans") {
      applies = split && method == "kmeans", where = "--method kmeans";
    } else if (s.group == "--shared") {
      applies = split && v.has("shared"), where = "--shared";
    } else if (s.group == "--export-graph") {
      applies = exportGraph, where = "--export-graph";
    }
    if (!applies) out.push_back("--" + s.name + " applies to " + where + "; ignored with " + mode);
  }
  return out;
}

SplitOptions splitOptionsFrom(const OptionValues& v) {
  SplitOptions o;
  o.method = v.text("method");
  if (v.has("experts")) o.experts = v.int32("experts");
  if (v.has("expert-size")) o.expertSize = v.int32("expert-size");
  o.layers = parseLayerList(v.text("layers"), "--layers");
  if (v.has("sites")) {
    o.sites = splitListValue(v.text("sites"), "--sites");
    if (o.sites.empty()) throw ParameterError("--sites: empty list");
  }
  if (!o.layers.empty() && !o.sites.empty()) throw ParameterError("--layers and --sites: give one of them");
  o.seed = v.seed("seed");
  o.graph.weighting = v.text("weighting");
  o.graph.topk = parseTopk(v.text("topk"));
  o.graphSource = v.text("graph");
  o.metisPtype = parseMetisPtype(v.text("metis-ptype"));
  o.rows = v.text("rows");
  o.restarts = v.int32("restarts");
  o.maxIter = v.int32("max-iter");
  o.stability = !v.flag("no-stability");
  o.modelPath = v.text("model");
  o.shared = parseShared(v.text("shared"));
  o.shared.mass = v.real("shared-mass");
  o.shared.maxFraction = v.real("shared-max");
  o.force = v.flag("force");
  return o;
}

}  // namespace moefy
