#include "analysis/eval/eval_results.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "analysis/common/error.h"
#include "analysis/eval/eval_file.h"

namespace moefy {

namespace fs = std::filesystem;

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
  size_t n = 0;
  for (const auto& r : *res) {
    if (!r.is_object()) throw FormatError(file + ": results[" + std::to_string(n) + "] is not an object");
    std::string name = "router";
    if (r.contains("router") && r["router"].is_string())
      name = r["router"].get<std::string>();
    else if (r.contains("name") && r["name"].is_string())
      name = r["name"].get<std::string>();
    // Encoder-decoder evaluations: one series per router and site group
    // (MoE in the encoder only, the decoder only, or both).
    if (r.contains("site_group") && r["site_group"].is_string())
      name += " (" + r["site_group"].get<std::string>() + ")";
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
  for (auto& s : e.series)
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const Point& a, const Point& b) { return a.fraction < b.fraction; });
  return e;
}

}  // namespace moefy
