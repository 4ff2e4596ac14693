#include "analysis/route/router_scores.h"

#include <torch/torch.h>

#include <algorithm>

#include "analysis/common/error.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/io/safetensors.h"
#include "analysis/route/router.h"

namespace moefy {

namespace {

// Top-k ids [S, k] as the MoE FFN picks them, then ordered best first.
at::Tensor orderedTopK(const at::Tensor& scores, int k) {
  at::Tensor sel = topKExperts(scores, k);  // [S, k], the MoE FFN's choice
  at::Tensor val = scores.gather(1, sel);   // [S, k]
  at::Tensor order = std::get<1>(val.sort(1, /*descending=*/true));
  return sel.gather(1, order).to(at::kInt).contiguous();
}

std::vector<int> toInts(const at::Tensor& t) {
  at::Tensor c = t.to(at::kInt).contiguous();
  return std::vector<int>(c.data_ptr<int>(), c.data_ptr<int>() + c.numel());
}

}  // namespace

RouterChoices routeSamples(const RouterSet* router, int layer, const at::Tensor& labels, int experts, int k,
                           const at::Tensor& ffnIn, const at::Tensor& ffnAct, bool plainRelu) {
  at::NoGradGuard ng;
  if (experts <= 0) throw ParameterError("expert count must be positive, got " + std::to_string(experts));
  if (k < 1 || k > experts)
    throw ParameterError("top-k " + std::to_string(k) + " outside [1, " + std::to_string(experts) + "]");
  if (ffnAct.dim() != 2 || labels.dim() != 1 || ffnAct.size(1) != labels.size(0))
    throw ParameterError("layer " + std::to_string(layer) + ": hidden has shape " + shapeString(ffnAct) +
                         ", the partition has " + std::to_string(labels.numel()) + " labels");
  const int64_t S = ffnAct.size(0);
  at::Tensor mass = expertMassFromHidden(ffnAct.to(at::kFloat), labels, experts, plainRelu);  // [S, E]
  at::Tensor scores = mass;
  if (router && router->kind != RouterKind::Oracle) {
    const std::string ctx = "router (partition " + router->partitionPath + ")";
    const int i = router->indexOfLayer(layer);
    if (i < 0) throw FormatError(ctx + ": has no router for layer " + std::to_string(layer));
    const LayerRouter& r = router->routers[static_cast<size_t>(i)];
    if (r.experts != experts)
      throw FormatError(ctx + ": layer " + std::to_string(layer) + " routes " + std::to_string(r.experts) +
                        " experts, the partition has " + std::to_string(experts));
    if (ffnIn.dim() != 2 || ffnIn.size(0) != S)
      throw ParameterError("layer " + std::to_string(layer) + ": FFN input has shape " + shapeString(ffnIn) +
                           ", expected [" + std::to_string(S) + ", d_model]");
    r.validate(ffnIn.size(1), ctx + " layer " + std::to_string(layer));
    // Similarity and MLP scores depend on x only; the expert weights are for the oracle.
    scores = r.scores(ffnIn.to(at::kFloat).contiguous(), MoeLayerWeights());
  }
  RouterChoices c;
  c.samples = static_cast<int>(S);
  c.experts = experts;
  c.k = k;
  at::Tensor sc = scores.to(at::kFloat).contiguous();
  c.scores.assign(sc.data_ptr<float>(), sc.data_ptr<float>() + sc.numel());
  c.top = toInts(orderedTopK(scores, k));
  c.oracleTop = scores.data_ptr() == mass.data_ptr() ? c.top : toInts(orderedTopK(mass, k));
  return c;
}

std::vector<double> expertUsage(const RouterChoices& c) {
  std::vector<double> use(static_cast<size_t>(std::max(0, c.experts)), 0.0);
  if (c.samples <= 0) return use;
  for (int e : c.top) use[static_cast<size_t>(e)] += 1.0 / c.samples;
  return use;
}

CategoryUsage categoryUsage(const RouterChoices& c, const std::vector<int32_t>& categories, int categoryCount) {
  CategoryUsage u;
  u.categories = std::max(1, categoryCount);
  const int C = u.categories, E = c.experts;
  if (static_cast<int64_t>(categories.size()) != c.samples)
    throw ParameterError("category ids: " + std::to_string(categories.size()) + " for " + std::to_string(c.samples) +
                         " samples");
  std::vector<double> counts(static_cast<size_t>(C) * E, 0.0);
  u.tokensPerCategory.assign(C, 0);
  for (int s = 0; s < c.samples; ++s) {
    const int cat = std::clamp(categories[static_cast<size_t>(s)], 0, C - 1);
    ++u.tokensPerCategory[cat];
    for (int j = 0; j < c.k; ++j) counts[static_cast<size_t>(cat) * E + c.top[static_cast<size_t>(s) * c.k + j]] += 1;
  }
  u.share.assign(counts.size(), 0.0);
  for (int cat = 0; cat < C; ++cat)
    for (int e = 0; e < E; ++e)
      if (u.tokensPerCategory[cat] > 0)
        u.share[static_cast<size_t>(cat) * E + e] =
            counts[static_cast<size_t>(cat) * E + e] / static_cast<double>(u.tokensPerCategory[cat]);
  return u;
}

}  // namespace moefy
