#pragma once
// A small valid front.json (docs/formats.md "Front") built by hand, for the
// core and GUI tests of the Front artefact kind and the studio's Front view.
// Header-only.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "analysis/common/options.h"
#include "analysis/eval/front.h"
#include "analysis/io/fsutil.h"

namespace moefy::test {

/// A front at budgets 0.125, 0.25, 0.5 with E = 16 and dense perplexity 100:
/// one method per name of frontMethodNames(), in that order (so a method the
/// core adds, such as "per-layer", is in the document too), the bound last.
/// "shared" and "dynamic-k" have no point at 0.125 (unreached: their shared
/// expert alone costs more). Every other number is a smooth made-up function
/// of the budget and the method's index, distinct per method. "per-layer"'s
/// router_dir is a folder of per-budget router folders ("routers/per-layer",
/// each point's router_dir "routers/per-layer/<budget>", as runFront writes it). `best` is computed here, as runFront
/// defines it: the lowest perplexity per budget, the bound excluded, with plain's. `heldoutCorpus` ("" = not recorded)
/// goes into heldout_corpus.
inline nlohmann::json frontDocument(const std::string& heldoutCorpus = "") {
  using nlohmann::json;
  const std::vector<double> budgets{0.125, 0.25, 0.5};
  json methods = json::array();
  std::map<double, std::pair<std::string, double>> best;  // budget -> (method, perplexity)
  std::map<double, double> plain;
  int index = 0;
  std::vector<std::string> names;
  for (const std::string& n : frontMethodNames())
    if (n != "bound") names.push_back(n);
  if (std::find(frontMethodNames().begin(), frontMethodNames().end(), "bound") != frontMethodNames().end())
    names.push_back("bound");
  for (const std::string& name : names) {
    const bool bound = name == "bound";
    const bool sharedExpert = name == "shared" || name == "dynamic-k";
    json m = {{"name", name},
              {"router", bound                 ? "topk-act"
                         : name == "dynamic-k" ? "dynamic-k"
                                               : "mlp"},
              {"eval", "eval/" + name}};
    if (!bound) {
      m["partition"] = sharedExpert ? "partitions/shared" : "partitions/plain";
      m["router_dir"] = name == "per-layer" ? "routers/per-layer" : "routers/" + name;
    }
    json points = json::array(), sweep = json::array(), unreached = json::array();
    for (double b : budgets) {
      if (sharedExpert && b == 0.125) {
        unreached.push_back(b);
        continue;
      }
      json p;
      p["budget"] = b;
      if (bound) {
        p["ffn_flops_fraction"] = 0.5 + b / 2;
        p["perplexity"] = 100 + 40 * (1 - b) * (1 - b);
        p["top1_agreement"] = 0.9 + 0.1 * b;
        p["fraction"] = b;
        p["mean_k"] = 0.0;
      } else {
        const double frac = b * (0.86 + 0.02 * index);
        p["ffn_flops_fraction"] = frac;
        p["perplexity"] = 100 + 300 * (1 - b) * (1 - b) * (1 - 0.12 * index);
        p["top1_agreement"] = 0.45 + 0.4 * b + 0.03 * index;
        p["fraction"] = frac;
        p["mean_k"] = frac * 16 * (name == "dynamic-k" ? 0.75 : 1.0);
        // per-layer: each point names its own router (runFront's layout).
        if (name == "per-layer") p["router_dir"] = "routers/per-layer/" + formatReal(b);
      }
      if (name != "per-layer") sweep.push_back(p["fraction"]);  // per-layer's evaluation has no sweep
      const double ppl = p["perplexity"].get<double>();
      if (!bound && (!best.count(b) || ppl < best[b].second)) best[b] = {name, ppl};
      if (name == "plain") plain[b] = ppl;
      points.push_back(p);
    }
    m["sweep"] = sweep;
    m["unreached"] = unreached;
    m["points"] = points;
    methods.push_back(m);
    ++index;
  }
  json bestList = json::array();
  for (double b : budgets) {
    json e = {{"budget", b}};
    e["method"] = best.count(b) ? json(best[b].first) : json(nullptr);
    e["perplexity"] = best.count(b) ? json(best[b].second) : json(nullptr);
    e["plain_perplexity"] = plain.count(b) ? json(plain[b]) : json(nullptr);
    bestList.push_back(e);
  }
  json doc = {{"format", "moefy-front"},
              {"version", 1},
              {"tool_version", "test"},
              {"budgets", budgets},
              {"experts", 16},
              {"options",
               {{"split_method", "coact"},
                {"record_tokens", 4096},
                {"samples", 512},
                {"eval_tokens", 2048},
                {"seq_len", 128},
                {"split", "all"},
                {"epochs", 3},
                {"tau", 0.8},
                {"batch", 8},
                {"seed", 0}}},
              {"dense", {{"perplexity", 100.0}, {"loss", std::log(100.0)}}},
              {"methods", methods},
              {"best", bestList}};
  if (!heldoutCorpus.empty()) doc["heldout_corpus"] = heldoutCorpus;
  return doc;
}

/// Writes DIR/front.json (creating DIR).
inline void writeFront(const std::filesystem::path& dir, const nlohmann::json& doc) {
  std::filesystem::create_directories(dir);
  writeFileAtomic(dir / "front.json", doc.dump(2) + "\n");
}

}  // namespace moefy::test
