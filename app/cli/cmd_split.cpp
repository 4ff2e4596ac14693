// moefy split: expert partitions from a recording, comparison, METIS graph export.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/model/site.h"
#include "analysis/record/recording.h"
#include "analysis/split/split.h"
#include "analysis/split/split_options.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

namespace fs = std::filesystem;

// recall@k as printed: "n/a" where the partition has none (no recorded samples).
std::string recallAt(const nlohmann::json& m, size_t k) {
  if (!m.contains("recall_at_k") || m["recall_at_k"].size() < k) return "n/a";
  return metricText(m["recall_at_k"][k - 1]);
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
  for (size_t i = 0; i < parts.size(); ++i) {
    // A coact split's graph source and METIS scheme (partitions written before 2026-12-03 record no
    // scheme: k-way).
    const nlohmann::json& opts = parts[i].json().value("options", nlohmann::json::object());
    std::string method = parts[i].method();
    if (method == "coact")
      method += " (" + opts.value("graph", std::string("binary")) + " graph, " +
                opts.value("metis_ptype", std::string("kway")) + ")";
    std::cout << "[" << i << "] " << parts[i].dir().string() << ": " << method << ", E " << parts[i].experts()
              << ", seed " << parts[i].json().value("seed", 0) << "\n";
  }
  std::cout << "\nlayer  part  coact_inside      edge_cut  balance  recall@1  recall@E/8  stability_ari\n";
  for (int L : parts[0].layers())
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto& ms = parts[i].json()["metrics"];
      // The bare layer number for single-stack sites, the site name otherwise (siteJsonKey).
      const std::vector<int>& pl = parts[i].layers();
      if (std::find(pl.begin(), pl.end(), L) == pl.end()) continue;
      const std::string key = siteJsonKey(parts[i].site(L));
      if (!ms.contains(key)) continue;
      const auto& m = ms[key];
      const size_t k8 = std::max<size_t>(1, static_cast<size_t>(parts[i].experts()) / 8);
      std::cout << std::setw(5) << L << std::setw(6) << i << std::setw(14) << m.value("coact_inside", 0.0)
                << std::setw(14) << std::setprecision(0) << m.value("edge_cut", 0.0) << std::setprecision(4)
                << std::setw(9) << m.value("balance", 0.0) << std::setw(10) << recallAt(m, 1) << std::setw(12)
                << recallAt(m, k8) << std::setw(15) << metricText(m.value("stability_ari", nlohmann::json())) << "\n";
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
  const int L = a.int32("layer");
  const SplitOptions o = splitOptionsFrom(a);
  const std::string src = o.graphSource;
  if (src == "soft" && !rec.hasSoftCoact())
    throw ParameterError(rec.dir().string() + ": has no soft co-activation; record with --soft-coact");
  CoactGraph g =
      buildCoactGraph(src == "soft" ? rec.coactSoft(L) : rec.coact(L), rec.count(L), rec.siteTokens(L), o.graph);
  const fs::path out = a.text("export-graph");
  writeMetisGraph(g, out);
  nlohmann::json j = {
      {"graph", out.string()}, {"layer", L}, {"vertices", g.n}, {"edges", g.edges()}, {"weight_scale", g.weightScale}};
  if (a.json()) {
    printJson(j);
  } else {
    std::cout << "wrote " << out.string() << ": " << g.n << " vertices, " << g.edges() << " edges (layer " << L
              << "); cross-check with: gpmetis " << out.string() << " E (or -ptype=rb, as split)\n";
    if (g.weightScale < 1.0)
      std::cout << "  the weights are scaled by " << g.weightScale
                << " to keep METIS's 32-bit sums from overflowing (gpmetis's edge cut is in these scaled units)\n";
  }
  return 0;
}

int runSplitCmd(const Args& a) {
  // An option the mode does not read is named, not silently dropped.
  for (const std::string& w : ignoredSplitOptions(a)) std::cerr << "moefy split: warning: " << w << "\n";
  if (a.flag("compare")) return runCompare(a);
  if (a.has("export-graph")) return runExportGraph(a);
  // Every option is checked before the recording is opened.
  const fs::path recDir = a.pos(0, "REC_DIR");
  if (a.positional.size() > 1)
    throw ParameterError("unexpected argument '" + a.positional[1] + "' (split takes one REC_DIR)");
  const std::string outDir = a.text("out");
  const SplitOptions o = splitOptionsFrom(a);
  auto job = makeCliJob(a);
  Recording rec = Recording::open(recDir);
  warnLinkProblems("split", ArtefactKind::Recording, recDir);
  // Validate E before loading anything heavy.
  // (With --shared, E counts the routed experts and need not divide d_ff: runSplit checks it per layer.)
  const std::vector<int> splitSites = resolveSplitSites(rec, o);
  if (!o.shared.enabled()) resolveExperts(rec.width(splitSites.front()), o.experts, o.expertSize);
  // A refused output costs no model load (runSplit checks again under its lock).
  checkOutput(outDir, o.force, "partition", {recDir});
  std::unique_ptr<Model> model;
  if (o.method == "kmeans") {
    const fs::path mp = o.modelPath.empty() ? fs::path(rec.modelPath()) : o.modelPath;
    std::error_code ec;
    if (o.modelPath.empty() && !fs::is_directory(mp, ec))
      throw ParameterError((recDir / "manifest.json").string() + ": the recording's model " + mp.string() +
                           " is not there (recordings name their model by absolute path); give --model MODEL_DIR");
    job->setStage("load model");
    model = Model::load(mp);
  }
  nlohmann::json j = runSplit(rec, model.get(), o, outDir, *job);
  if (a.json()) {
    printJson(j);
    return 0;
  }
  const int64_t experts = j["experts"].get<int64_t>(), size = j["expert_size"].get<int64_t>();
  std::cout << std::fixed << std::setprecision(4) << "wrote " << outDir << ": " << o.method << ", " << experts
            << (experts == 1 ? " expert of " : " experts of ") << size << (size == 1 ? " neuron\n" : " neurons\n");
  for (auto& [L, m] : j["metrics"].items()) {
    std::cout << "  layer " << L << ": coact inside " << m["coact_inside"].get<double>() << ", edge cut "
              << std::setprecision(0) << m["edge_cut"].get<double>() << std::setprecision(4) << ", balance "
              << m["balance"].get<double>() << ", recall@1 " << recallAt(m, 1);
    if (m.contains("stability_ari")) std::cout << ", stability ARI " << m["stability_ari"].get<double>();
    if (m.contains("half_stability_ari")) std::cout << ", halves ARI " << m["half_stability_ari"].get<double>();
    if (m.contains("shared_neurons"))
      std::cout << ", shared expert " << m["shared_neurons"].get<int>() << " neurons (" << std::setprecision(1)
                << 100.0 * m["shared_mass"].get<double>() << "% of activations)" << std::setprecision(4);
    std::cout << "\n";
  }
  return 0;
}

CommandRegistrar splitCmd(splitOptionTable(), runSplitCmd);

}  // namespace

}  // namespace moefy::cli
