#include "analysis/eval/eval_results.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "analysis/common/error.h"
#include "analysis/eval/eval_file.h"
#include "analysis/io/json_input.h"
#include "analysis/io/links.h"
#include "analysis/model/site.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

/// Site names by site index from the partition the evaluation links to
/// (source.partition): its own sites, and for an encoder-decoder partition
/// (a dec.blk.L site fixes the encoder's layer count) every whole-FFN index
/// up to `count`. Empty when there is no such link or it cannot be read.
std::map<int, std::string> sourcePartitionSites(const nlohmann::json& doc, const fs::path& dir, size_t count) {
  std::map<int, std::string> out;
  const auto src = doc.find("source");
  if (src == doc.end() || !src->is_object() || !src->contains("partition")) return out;
  try {
    const fs::path part = resolveLinkPath(dir, (*src)["partition"]);
    if (part.empty() || !fs::is_regular_file(part / "partition.json")) return out;
    const nlohmann::json j = readJsonFile(part / "partition.json");
    const std::vector<int> layers = j.at("layers").get<std::vector<int>>();
    const std::vector<Site> sites = readSiteList(j, layers, (part / "partition.json").string());
    int encoderLayers = -1;
    for (size_t i = 0; i < layers.size() && i < sites.size(); ++i)
      if (sites[i].stack == SiteStack::Decoder && sites[i].expert < 0 && !sites[i].shared)
        encoderLayers = layers[i] - sites[i].layer;  // readSiteList checked it is one count
    if (encoderLayers > 0)
      for (int i = 0; i < static_cast<int>(count); ++i)
        out[i] = Site{i < encoderLayers ? SiteStack::Encoder : SiteStack::Decoder,
                      i < encoderLayers ? i : i - encoderLayers, -1, false}
                     .name();
    for (size_t i = 0; i < layers.size() && i < sites.size(); ++i) out[layers[i]] = sites[i].name();
  } catch (const std::exception&) {
    // names only: an unreadable or moved partition leaves the fallback names
  }
  return out;
}

}  // namespace

size_t EvalResults::resultCount() const {
  size_t n = 0;
  for (const auto& s : series) n += s.points.size();
  return n;
}

std::string EvalResults::dataCaption(bool brief) const { return describeData(data, brief); }

EvalResults EvalResults::read(const fs::path& dir) {
  const fs::path ef = dir / "eval.json";
  const std::string file = ef.string();
  if (!fs::is_regular_file(ef)) throw IoError(file + ": missing (not an evaluation folder)");
  EvalResults e;
  e.dir = dir;
  e.json = readEvalFile(ef);
  e.data = evalDataSelection(e.json, dir);
  const double nan = std::nan("");
  auto num = [&](const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : nan;
  };
  e.densePerplexity = e.denseLoss = nan;
  const auto ref = e.json.find("reference");
  if (ref != e.json.end() && ref->is_object()) {
    e.densePerplexity = num(*ref, "perplexity");
    e.denseLoss = num(*ref, "loss");
  }
  const auto res = e.json.find("results");
  if (res == e.json.end() || !res->is_array()) throw FormatError(file + ": 'results' is missing or not a list");
  std::map<std::string, size_t> index;
  size_t n = 0, sites = 0;
  bool siteGroups = false;
  for (const auto& r : *res) {
    if (!r.is_object()) throw FormatError(file + ": results[" + std::to_string(n) + "] is not an object");
    std::string name = "router";
    if (r.contains("router") && r["router"].is_string())
      name = r["router"].get<std::string>();
    else if (r.contains("name") && r["name"].is_string())
      name = r["name"].get<std::string>();
    // Encoder-decoder evaluations: one series per router and site group
    // (MoE in the encoder only, the decoder only, or both).
    if (r.contains("site_group") && r["site_group"].is_string()) {
      name += " (" + r["site_group"].get<std::string>() + ")";
      siteGroups = true;
    }
    Point p;
    p.fraction = num(r, "fraction");
    if (!(p.fraction > 0 && p.fraction <= 1))
      throw FormatError(file + ": results[" + std::to_string(n) + "] (router '" + name +
                        "') has no fraction in (0, 1]");
    p.topK = r.contains("top_k") ? r["top_k"].dump() : std::string();
    p.loss = num(r, "loss");
    p.perplexity = num(r, "perplexity");
    p.lossDelta = num(r, "loss_delta");
    if (std::isnan(p.lossDelta) && !std::isnan(e.denseLoss)) p.lossDelta = p.loss - e.denseLoss;
    p.top1 = num(r, "top1_agreement");
    p.kl = num(r, "kl");
    p.ffnFlopsFraction = num(r, "ffn_flops_fraction");
    // Validated by readEvalFile: a list of nulls and finite numbers >= 0.
    if (r.contains("layer_rel_error") && r["layer_rel_error"].is_array()) {
      for (const auto& v : r["layer_rel_error"]) p.layerRelError.push_back(v.is_number() ? v.get<double>() : nan);
      sites = std::max(sites, p.layerRelError.size());
    }
    p.forwardSpeedup = p.generateSpeedup = nan;
    p.forwardSpeedupMin = p.forwardSpeedupMax = p.generateSpeedupMin = p.generateSpeedupMax = nan;
    if (r.contains("speed_note") && r["speed_note"].is_string()) p.speedNote = r["speed_note"].get<std::string>();
    if (r.contains("speed") && r["speed"].is_object()) {
      const auto& sp = r["speed"];
      p.forwardSpeedup = num(sp, "forward_speedup");
      p.generateSpeedup = num(sp, "generate_speedup");
      p.forwardSpeedupMin = num(sp, "forward_speedup_min");
      p.forwardSpeedupMax = num(sp, "forward_speedup_max");
      p.generateSpeedupMin = num(sp, "generate_speedup_min");
      p.generateSpeedupMax = num(sp, "generate_speedup_max");
      const double fr = num(sp, "forward_runs"), gr = num(sp, "generate_runs");
      p.forwardRuns = std::isnan(fr) ? 0 : static_cast<int>(fr);
      p.generateRuns = std::isnan(gr) ? 0 : static_cast<int>(gr);
      e.hasSpeed |= !std::isnan(p.forwardSpeedup);
      e.hasGenerateSpeed |= !std::isnan(p.generateSpeedup);
    }
    auto [it, fresh] = index.emplace(name, e.series.size());
    if (fresh) e.series.push_back({name, {}});
    e.series[it->second].points.push_back(p);
    ++n;
  }
  if (sites > 0) {
    const std::map<int, std::string> named = sourcePartitionSites(e.json, dir, sites);
    for (size_t i = 0; i < sites; ++i) {
      auto it = named.find(static_cast<int>(i));
      e.siteNames.push_back(it != named.end() ? it->second
                            : siteGroups      ? "site " + std::to_string(i)
                                              : Site::ofLayer(static_cast<int>(i)).name());
    }
  }
  for (auto& s : e.series)
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const Point& a, const Point& b) { return a.fraction < b.fraction; });
  return e;
}

}  // namespace moefy
