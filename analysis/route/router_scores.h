#pragma once
// The router figures every consumer shows: per-token expert scores and top-k
// for every router kind, the oracle's activation mass, expert usage and the
// category x expert usage table. `moefy route` (its metrics), the MoE FFN and
// the studio's Router view call these; nobody re-implements them. The oracle's
// expert mass (plainReluFfn, expertMassFromHidden) lives with the expert
// layout in experts/moe_layer.h.
#include <ATen/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/experts/moe_layer.h"
#include "analysis/model/model.h"

namespace moefy {

struct RouterSet;

/// Per-token router choices on recorded samples of one layer.
struct RouterChoices {
  int samples = 0;             ///< S
  int experts = 0;             ///< E
  int k = 0;                   ///< experts chosen per token
  std::vector<float> scores;   ///< [S * E] row-major: the router's scores (the mass for the oracle)
  std::vector<int> top;        ///< [S * k] the router's top-k, best first
  std::vector<int> oracleTop;  ///< [S * k] the oracle's top-k (by expert mass), best first
};

/// Scores recorded samples with `router` (nullptr: the oracle) at model layer
/// `layer`: ffnIn [S, d_model] and ffnAct [S, d_ff] (any float dtype),
/// labels [d_ff] of the partition, E experts, k in [1, E]. The top-k sets are
/// exactly those the MoE FFN picks (topKExperts), ordered by descending score.
/// Throws ParameterError (k, shapes) or FormatError (router lacks the layer or
/// its tensors do not fit d_model / E), naming the router folder when known.
/// Thread-safe (no shared state).
RouterChoices routeSamples(const RouterSet* router, int layer, const at::Tensor& labels, int experts, int k,
                           const at::Tensor& ffnIn, const at::Tensor& ffnAct, bool plainRelu);

/// Share of tokens routed to each expert [E]: count of e in `top` / samples.
std::vector<double> expertUsage(const RouterChoices& c);

/// Category x expert usage [C * E] row-major: share of the category's sampled
/// tokens that chose expert e (each token counts once per chosen expert), and
/// tokensPerCategory [C]. categories: [S] category id per sample (ids outside
/// [0, C) are counted in the nearest valid row, as the recorder stores -1 for
/// uncategorised text).
struct CategoryUsage {
  int categories = 0;
  std::vector<double> share;               ///< [C * E]
  std::vector<int64_t> tokensPerCategory;  ///< [C]
};
CategoryUsage categoryUsage(const RouterChoices& c, const std::vector<int32_t>& categories, int categoryCount);

}  // namespace moefy
