#include "analysis/moe/layer_budget.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "analysis/common/error.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/ffn_flops.h"
#include "analysis/record/recording.h"
#include "analysis/record/sparsity.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_inputs.h"

namespace moefy {

namespace {

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// Refuses a budget outside (0, 1] or below minK experts at every site;
// returns the budget's FLOP limit (with the rounding slack).
double budgetLimit(const std::vector<LayerFlopTable>& tables, double budget, int minK) {
  if (!(budget > 0 && budget <= 1))
    throw ParameterError("--budget " + num(budget) + " is outside (0, 1] (a fraction of the dense FFN FLOPs)");
  if (tables.empty()) throw ParameterError("--budget: no partitioned layer to allocate experts to");
  double dense = 0, total = 0;
  for (const auto& t : tables) {
    if (minK < 1 || minK > t.experts())
      throw ParameterError("--budget: the fewest experts per layer (" + std::to_string(minK) + ") is outside [1, " +
                           std::to_string(t.experts()) + "]");
    dense += t.dense;
    total += t.flops[minK - 1];
  }
  const double limit = budget * dense * (1 + 1e-12);
  if (total > limit)
    throw ParameterError("--budget " + num(budget) + " is below " + num(total / dense) + ", the FFN FLOP fraction of " +
                         std::to_string(minK) + " expert" + (minK == 1 ? "" : "s") + " per layer (router included)");
  return limit;
}

// The shared loop of both rules: every site at minK, then one expert at a
// time to the fitting site of the highest priority (ties: the lower index).
std::vector<int> allocate(const std::vector<LayerFlopTable>& tables, double budget, int minK,
                          const std::function<double(size_t, int)>& priority) {
  const double limit = budgetLimit(tables, budget, minK);
  double total = 0;
  for (const auto& t : tables) total += t.flops[minK - 1];
  std::vector<int> k(tables.size(), minK);
  for (;;) {
    size_t best = tables.size();
    double bestPriority = 0;
    for (size_t i = 0; i < tables.size(); ++i) {
      if (k[i] >= tables[i].experts()) continue;
      const double step = tables[i].flops[k[i]] - tables[i].flops[k[i] - 1];
      if (total + step > limit) continue;
      const double p = priority(i, k[i]);
      if (best == tables.size() || p > bestPriority) best = i, bestPriority = p;
    }
    if (best == tables.size()) return k;
    total += tables[best].flops[k[best]] - tables[best].flops[k[best] - 1];
    ++k[best];
  }
}

}  // namespace

std::vector<LayerFlopTable> layerFlopTables(const Model& model, const PartitionData& part, RouterKind kind) {
  const ModelConfig& c = model.config();
  std::vector<LayerFlopTable> out;
  for (size_t i = 0; i < part.layers.size(); ++i) {
    FfnFlopCount count;
    count.method = FfnFlopCount::Method::Moe;
    count.dModel = c.dModel;
    count.dFF = c.dFF;
    count.gated = c.gated;
    count.router = kind;
    count.experts = part.experts;
    const double shared = i < part.shared.size() ? part.shared[i] : 0;
    const double routed = (static_cast<double>(c.dFF) - shared) / part.experts;
    LayerFlopTable t;
    FfnFlopCount dense = count;
    dense.method = FfnFlopCount::Method::Dense;
    t.dense = ffnFlops(dense);
    for (int k = 1; k <= part.experts; ++k) {
      count.neurons = shared + k * routed;
      t.flops.push_back(ffnFlops(count));
    }
    out.push_back(std::move(t));
  }
  return out;
}

double allocationFlopsFraction(const std::vector<int>& k, const std::vector<LayerFlopTable>& tables) {
  if (k.size() != tables.size())
    throw ParameterError("allocation: " + std::to_string(k.size()) + " values of k for " +
                         std::to_string(tables.size()) + " layers");
  double flops = 0, dense = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    if (k[i] < 1 || k[i] > tables[i].experts())
      throw ParameterError("allocation: k " + std::to_string(k[i]) + " outside [1, " +
                           std::to_string(tables[i].experts()) + "]");
    flops += tables[i].flops[k[i] - 1];
    dense += tables[i].dense;
  }
  return flops / dense;
}

std::vector<int> allocateByActivity(const std::vector<double>& activity, const std::vector<LayerFlopTable>& tables,
                                    double budget, int minK) {
  if (activity.size() != tables.size())
    throw ParameterError("--allocate activity: " + std::to_string(activity.size()) + " activities for " +
                         std::to_string(tables.size()) + " layers");
  for (double a : activity)
    if (!(a >= 0 && std::isfinite(a)))
      throw ParameterError("--allocate activity: activity " + num(a) + " is not a finite share >= 0");
  // Adams' divisor method: w_i / k_i, w_i = a_i E_i (active neurons per token, in experts).
  return allocate(tables, budget, minK,
                  [&](size_t i, int k) { return activity[i] * tables[i].experts() / static_cast<double>(k); });
}

std::vector<int> allocateGreedy(const std::vector<std::vector<double>>& error,
                                const std::vector<LayerFlopTable>& tables, double budget, int minK) {
  if (error.size() != tables.size())
    throw ParameterError("--allocate greedy: " + std::to_string(error.size()) + " probe curves for " +
                         std::to_string(tables.size()) + " layers");
  for (size_t i = 0; i < error.size(); ++i) {
    if (static_cast<int>(error[i].size()) != tables[i].experts())
      throw ParameterError("--allocate greedy: layer entry " + std::to_string(i) + " has " +
                           std::to_string(error[i].size()) + " probe errors for " +
                           std::to_string(tables[i].experts()) + " experts");
    for (double e : error[i])
      if (!std::isfinite(e)) throw ParameterError("--allocate greedy: a probe error is not finite");
  }
  // The error drop of one more expert per FLOP it costs.
  return allocate(tables, budget, minK, [&](size_t i, int k) {
    return (error[i][k - 1] - error[i][k]) / (tables[i].flops[k] - tables[i].flops[k - 1]);
  });
}

std::vector<double> probeLayerError(const MoeLayerWeights& w, const LayerRouter& router, const at::Tensor& xIn) {
  at::NoGradGuard ng;
  const int64_t N = xIn.size(0), d = w.dModel();
  const int E = w.layout.experts;
  if (N == 0) throw ParameterError("quality probe: no held-out samples");
  at::Tensor x = xIn.to(at::kFloat).contiguous();
  std::vector<double> sq(E, 0.0);
  double den = 0;
  // Rows in chunks: the per-expert contributions take chunk x E x d_model floats.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / (int64_t{E} * d));
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t n = std::min(chunk, N - r0);
    at::Tensor xc = x.narrow(0, r0, n);
    at::Tensor h = w.packedHidden(xc);          // [n, d_ff] packed order
    at::Tensor contrib = at::empty({n, E, d});  // [n, E, d_model]: W2_e h_e
    for (int e = 0; e < E; ++e) {
      const int64_t off = w.layout.offsets[e], size = w.layout.expertSize(e);
      contrib.select(1, e).copy_(at::mm(h.narrow(1, off, size), w.downT.narrow(0, off, size)));
    }
    // The dense output: every routed expert, the shared one, b2.
    at::Tensor y = contrib.sum(1);  // [n, d_model]
    if (w.layout.shared) {
      const int64_t off = w.layout.offsets[E], size = w.layout.sharedSize();
      y += at::mm(h.narrow(1, off, size), w.downT.narrow(0, off, size));
    }
    if (w.downBias.defined()) y += w.downBias;
    den += y.to(at::kDouble).pow(2).sum().item<double>();
    // y - y_k is the sum of the experts not among the token's k best.
    at::Tensor order = std::get<1>(router.scores(xc, w).to(at::kDouble).sort(/*stable=*/true, 1, true));  // [n, E]
    at::Tensor rows = at::arange(n, at::kLong);
    at::Tensor missing = contrib.sum(1);
    for (int k = 1; k <= E; ++k) {
      missing -= contrib.index({rows, order.select(1, k - 1)});
      sq[k - 1] += missing.to(at::kDouble).pow(2).sum().item<double>();
    }
  }
  std::vector<double> err(E);
  for (int k = 0; k < E; ++k) err[k] = den > 0 ? std::sqrt(sq[k] / den) : 0.0;
  return err;
}

RouterSet buildRoutersWithBudget(const Model& model, const PartitionData& part, const SampleData& samples,
                                 const std::string& recordingDir, const RouteOptions& options, JobContext& job) {
  if (options.budget == 0) return buildRouters(model, part, samples, options, job);
  if (options.topK != 0 || !options.layerTopK.empty())
    throw ParameterError("give --budget or --top-k/--top-fraction, not both");
  if (options.allocate != "activity" && options.allocate != "greedy")
    throw ParameterError("--allocate '" + options.allocate + "' is not activity or greedy");
  for (const Site& site : part.sites)
    if (site.expert >= 0 || site.shared)
      throw ParameterError("--budget: " + site.name() +
                           " is an expert site of a native MoE layer; its experts see different token counts, and "
                           "per-layer budgets are allocated across whole-FFN layers only (give --top-k or "
                           "--top-fraction)");
  const std::vector<LayerFlopTable> tables = layerFlopTables(model, part, options.kind);
  const int minK = options.kind == RouterKind::DynamicK ? options.minK : 1;
  budgetLimit(tables, options.budget, minK);  // a budget too small fails before any router is trained
  nlohmann::json block = {{"budget", options.budget}, {"method", options.allocate}, {"min_k", minK}};
  RouteOptions o = options;
  std::vector<int> k;
  RouterSet rs;
  if (options.allocate == "activity") {
    // From the recording's statistics, before any router is built.
    job.setStage("route: allocate the budget by activity");
    const Recording rec = Recording::open(recordingDir);
    std::vector<double> activity;
    for (const Site& site : part.sites) {
      const int L = rec.layerOf(site);
      if (L < 0) throw FormatError(recordingDir + ": the recording has no site " + site.name());
      activity.push_back(layerSparsity(rec, L).meanActiveShare);
    }
    k = allocateByActivity(activity, tables, options.budget, minK);
    o.layerTopK = k;
    rs = buildRouters(model, part, samples, o, job);
    block["activity"] = activity;
    block["source"] =
        "recorded activity: mean share of active neurons per token, sum(count) / (tokens d_ff), per layer";
  } else {
    // The probe needs the routers: build them (their training does not
    // depend on k), then measure every k on the held-out samples.
    o.layerTopK.assign(part.layers.size(), part.experts);
    rs = buildRouters(model, part, samples, o, job);
    job.setStage("route: quality probe for the budget");
    const auto packed = packExperts(model, part);
    std::vector<std::vector<double>> error;
    for (size_t i = 0; i < part.layers.size(); ++i) {
      job.checkCancel();
      at::Tensor trainIdx, heldIdx;
      const int64_t S = samples.ffnIn[i].size(0);
      splitSamples(S, options.heldOut, options.seed, trainIdx, heldIdx);
      at::Tensor evalIdx = heldIdx.numel() > 0 ? heldIdx : at::arange(S, at::kLong);
      error.push_back(probeLayerError(*packed[i], rs.routers[i], samples.ffnIn[i].index_select(0, evalIdx)));
      job.setProgress(double(i + 1) / part.layers.size());
    }
    k = allocateGreedy(error, tables, options.budget, minK);
    o.layerTopK = k;
    for (size_t i = 0; i < part.layers.size(); ++i)
      rs.metrics[siteJsonKey(part.sites.at(i))] =
          heldOutRouterMetrics(model, part, samples, i, rs.routers[i], *packed[i], o, k[i]);
    rs.topK = k;
    block["probe_error"] = error;
    block["source"] =
        "held-out quality probe: relative FFN output error of the top-k MoE against dense on the held-out samples";
  }
  double spent = 0;
  std::vector<double> layerFraction, share;
  for (size_t i = 0; i < k.size(); ++i) spent += tables[i].flops[k[i] - 1];
  for (size_t i = 0; i < k.size(); ++i) {
    layerFraction.push_back(tables[i].flops[k[i] - 1] / tables[i].dense);
    share.push_back(tables[i].flops[k[i] - 1] / spent);
  }
  block["flops_fraction"] = allocationFlopsFraction(k, tables);
  block["layer_flops_fraction"] = layerFraction;
  block["flops_share"] = share;
  rs.allocation = block;
  job.log("budget " + num(options.budget) + " (" + options.allocate + "): planned FFN FLOPs " +
          num(block["flops_fraction"].get<double>()) + " of dense");
  return rs;
}

void allocationTable(const RouterSet& rs, std::vector<std::string>& header,
                     std::vector<std::vector<std::string>>& rows) {
  header.clear();
  rows.clear();
  const nlohmann::json& a = rs.allocation;
  if (a.is_null()) return;
  const bool activity = a.value("method", "") == "activity";
  header = {"layer", activity ? "active neurons per token" : "probe error at k", "k / E", "FLOPs of the layer's dense",
            "share of the spent FLOPs"};
  auto pct = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f %%", v * 100);
    return std::string(b);
  };
  for (size_t i = 0; i < rs.layers.size(); ++i) {
    const int k = rs.topK.at(i);
    std::string second;
    if (activity) {
      second = pct(a.at("activity").at(i).get<double>());
    } else {
      char b[32];
      std::snprintf(b, sizeof b, "%.4f", a.at("probe_error").at(i).at(k - 1).get<double>());
      second = b;
    }
    rows.push_back({rs.siteAt(i).name(), second, std::to_string(k) + " / " + std::to_string(rs.experts.at(i)),
                    pct(a.at("layer_flops_fraction").at(i).get<double>()),
                    pct(a.at("flops_share").at(i).get<double>())});
  }
}

}  // namespace moefy
