#pragma once
// FFN compute accounting for quality at a compute budget: the multiply-adds
// one token costs in one FFN layer, and their fraction of the dense FFN's.
// `moefy eval` reports every result's FFN FLOPs through this one function
// (docs/moe.md, "Compute accounting").
#include <cstdint>

#include "analysis/route/router.h"

namespace moefy {

/// What one FFN layer computes for one token.
struct FfnFlopCount {
  enum class Method {
    Dense,            ///< the dense FFN
    Moe,              ///< the MoE FFN: a router, then the selected experts
    ActivationBound,  ///< the top-k activation bound (analysis/moe/activation_bound.h)
  };
  Method method = Method::Dense;
  int64_t dModel = 0, dFF = 0;
  bool gated = false;  ///< act(x Wg^T) * (x Wu^T): two input projections
  /// Moe: the neurons of the selected experts and of a shared expert (mean
  /// over tokens, from what ran); ActivationBound: K, the neurons kept.
  double neurons = 0;
  RouterKind router = RouterKind::Oracle;  ///< Moe
  int experts = 0;                         ///< Moe: E
};

/// Multiply-adds per token of one FFN layer. Matrix products only: biases,
/// the activation, the gate product, the router's nonlinearity and the top-k
/// selection are O(d_ff) or less per token and not counted.
///
///   m = 2 for gated FFNs, 1 for plain ones (input projections per neuron)
///   Dense:            (m + 1) d_model d_ff
///   Moe:              (m + 1) d_model n + R       n = `neurons`
///       R similarity: d_model E                   (normalise(x) . centroids)
///       R sigmoid:    d_model E                   (x W1^T)
///       R dynamic-k:  d_model E                   (x W1^T + b1; n then varies per token)
///       R mlp:        d_model E + E^2             (its two matmuls)
///       R oracle:     m d_model d_ff              (its scores need the dense hidden)
///   ActivationBound:  m d_model d_ff + d_model K  K = `neurons`: the dense hidden
///                                                 it needs, then W2 on the kept neurons
/// Throws ParameterError for a non-positive d_model or d_ff.
double ffnFlops(const FfnFlopCount& count);

/// ffnFlops(count) / ffnFlops of the dense FFN of the same shape.
double ffnFlopsFraction(const FfnFlopCount& count);

/// Whether the count includes the dense hidden (an oracle router, the bound):
/// such a method cannot be faster than the dense FFN.
bool needsDenseHidden(const FfnFlopCount& count);

}  // namespace moefy
