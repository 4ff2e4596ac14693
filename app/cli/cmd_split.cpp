// moefy split: expert partitions from a recording, comparison, METIS graph export.
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/record/recording.h"
#include "analysis/split/split.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

GraphOptions graphOptions(const Args& a) {
  GraphOptions g;
  g.weighting = a.get("weighting", "raw");
  g.topk = parseTopk(a.get("topk", "auto"));
  return g;
}

double recallAt(const nlohmann::json& m, size_t k) {
  if (!m.contains("recall_at_k") || m["recall_at_k"].size() < k) return -1;
  return m["recall_at_k"][k - 1].get<double>();
}

int runCompare(const Args& a) {
  std::vector<Partition> parts;
  for (const auto& p : a.positional) parts.push_back(Partition::open(p));
  nlohmann::json j = comparePartitions(parts);
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << std::fixed << std::setprecision(4);
  for (size_t i = 0; i < parts.size(); ++i)
    std::cout << "[" << i << "] " << parts[i].dir().string() << ": " << parts[i].method() << ", E "
              << parts[i].experts() << ", seed " << parts[i].json().value("seed", 0) << "\n";
  std::cout << "\nlayer  part  coact_inside      edge_cut  balance  recall@1  recall@E/8  stability_ari\n";
  for (int L : parts[0].layers())
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto& ms = parts[i].json()["metrics"];
      if (!ms.contains(std::to_string(L))) continue;
      const auto& m = ms[std::to_string(L)];
      const size_t k8 = std::max<size_t>(1, static_cast<size_t>(parts[i].experts()) / 8);
      std::cout << std::setw(5) << L << std::setw(6) << i << std::setw(14) << m.value("coact_inside", 0.0)
                << std::setw(14) << std::setprecision(0) << m.value("edge_cut", 0.0) << std::setprecision(4)
                << std::setw(9) << m.value("balance", 0.0) << std::setw(10) << recallAt(m, 1) << std::setw(12)
                << recallAt(m, k8) << std::setw(15)
                << (m.contains("stability_ari") ? m["stability_ari"].get<double>() : -1.0) << "\n";
    }
  std::cout << "\nagreement (ARI / NMI)\n";
  for (const auto& g : j["agreement"])
    std::cout << "  layer " << g["layer"] << ": [" << g["a"] << "] vs [" << g["b"] << "]  ARI "
              << g["ari"].get<double>() << "  NMI " << g["nmi"].get<double>() << "\n";
  return 0;
}

int runExportGraph(const Args& a) {
  Recording rec = Recording::open(a.pos(0, "REC_DIR"));
  if (!a.has("layer")) throw ParameterError("--export-graph needs --layer L");
  const int L = static_cast<int>(a.getInt("layer", 0));
  const std::string src = a.get("graph", "binary");
  if (src != "binary" && src != "soft") throw ParameterError("--graph must be binary or soft");
  if (src == "soft" && !rec.hasSoftCoact())
    throw ParameterError(rec.dir().string() + ": has no soft co-activation; record with --soft-coact");
  CoactGraph g = buildCoactGraph(src == "soft" ? rec.coactSoft(L) : rec.coact(L), rec.count(L), rec.tokens(),
                                 graphOptions(a));
  const fs::path out = a.get("export-graph");
  writeMetisGraph(g, out);
  nlohmann::json j = {{"graph", out.string()}, {"layer", L}, {"vertices", g.n}, {"edges", g.edges()}};
  if (a.json()) printJson(j);
  else std::cout << "wrote " << out.string() << ": " << g.n << " vertices, " << g.edges() << " edges (layer " << L
                 << "); cross-check with: gpmetis " << out.string() << " E\n";
  return 0;
}

int runSplitCmd(const Args& a) {
  if (a.has("compare")) return runCompare(a);
  if (a.has("export-graph")) return runExportGraph(a);
  auto job = makeCliJob(a);
  Recording rec = Recording::open(a.pos(0, "REC_DIR"));
  if (!a.has("out")) throw ParameterError("--out PART_DIR is required");
  SplitOptions o;
  o.method = a.get("method", "coact");
  o.experts = static_cast<int>(a.getInt("experts", 0));
  o.expertSize = static_cast<int>(a.getInt("expert-size", 0));
  if (a.has("layers"))
    for (long long L : parseIntList(a.get("layers"), "--layers")) o.layers.push_back(static_cast<int>(L));
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  o.graph = graphOptions(a);
  o.graphSource = a.get("graph", "binary");
  o.rows = a.get("rows", "up");
  o.restarts = static_cast<int>(a.getInt("restarts", 4));
  o.maxIter = static_cast<int>(a.getInt("max-iter", 50));
  o.stability = !a.has("no-stability");
  o.force = a.has("force");
  // Validate E before loading anything heavy.
  resolveExperts(rec.dFF(), o.experts, o.expertSize);
  std::unique_ptr<Model> model;
  if (o.method == "kmeans") {
    const fs::path mp = a.has("model") ? fs::path(a.get("model")) : fs::path(rec.modelPath());
    job->setStage("load model");
    model = Model::load(mp);
  }
  nlohmann::json j = runSplit(rec, model.get(), o, a.get("out"), *job);
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << std::fixed << std::setprecision(4) << "wrote " << a.get("out") << ": " << o.method << ", "
            << j["experts"] << " experts of " << j["expert_size"] << " neurons\n";
  for (auto& [L, m] : j["metrics"].items()) {
    std::cout << "  layer " << L << ": coact inside " << m["coact_inside"].get<double>() << ", edge cut "
              << std::setprecision(0) << m["edge_cut"].get<double>() << std::setprecision(4) << ", balance "
              << m["balance"].get<double>() << ", recall@1 " << recallAt(m, 1);
    if (m.contains("stability_ari")) std::cout << ", stability ARI " << m["stability_ari"].get<double>();
    if (m.contains("half_stability_ari"))
      std::cout << ", halves ARI " << m["half_stability_ari"].get<double>();
    std::cout << "\n";
  }
  return 0;
}

CommandRegistrar splitCmd(
    {"split", "split FFN neurons into equal-size experts (coact/METIS, balanced k-means, random)",
     "usage: moefy split REC_DIR --method coact|kmeans|random (--experts E | --expert-size S)\n"
     "                   [--layers 0,1,..] [--seed N] --out PART_DIR [--force] [--json]\n"
     "         coact:  [--weighting raw|jaccard|ppmi|percentile] [--topk auto|K] [--graph binary|soft]\n"
     "         kmeans: [--model MODEL_DIR] [--rows gate|up|both] [--restarts R] [--max-iter N]\n"
     "                 [--no-stability]\n"
     "       moefy split --compare PART_A PART_B [...] [--json]\n"
     "       moefy split REC_DIR --export-graph OUT.graph --layer L [--weighting ..] [--topk auto|K] [--graph ..]\n\n"
     "Every expert gets exactly d_ff / E neurons (E must divide d_ff). coact partitions the\n"
     "co-activation graph with METIS k-way and repairs the balance by moving the neurons with the\n"
     "least affinity to their part. --topk auto (default) keeps the dense graph up to 1536 neurons\n"
     "and each neuron's max(64, 2 d_ff / E) strongest neighbours above that; 0 keeps every edge.\n"
     "kmeans clusters the L2-normalised rows of W1 (gate/up/both for\n"
     "gated FFNs) with an exact equal-size assignment, keeping the best of --restarts (default 4);\n"
     "random is a seeded balanced shuffle. Metrics per layer: coact_inside, edge_cut, balance,\n"
     "recall_at_k (on the recorded samples), stability_ari/nmi against a rerun with seed + 1, and\n"
     "(coact) half_stability_ari/nmi between splits of two disjoint halves of the sampled tokens.\n"
     "--compare prints partitions side by side with their pairwise ARI/NMI. --export-graph writes\n"
     "the weighted co-activation graph in METIS format to cross-check with gpmetis.\n"
     "Details: docs/recording-and-splitting.md.\n",
     {"json", "quiet", "force", "compare", "no-stability"},
     runSplitCmd});

}  // namespace

}  // namespace moefy::cli
