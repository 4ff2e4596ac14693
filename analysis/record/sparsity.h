#pragma once
// Sparsity summaries of a recorded layer: the figures the demo report, `moefy`
// and the studio's Sparsity view show, defined once here. Inputs are the
// recording's statistics (docs/formats.md "Recording"): count [d_ff] (tokens
// where each neuron is active) and active_hist [d_ff + 1] (tokens with k
// active neurons).
#include <cstdint>
#include <vector>

namespace moefy {

class Recording;

struct LayerSparsity {
  int64_t tokens = 0;  ///< recorded tokens
  int dFF = 0;
  double meanActiveShare = 0;  ///< mean over tokens of (active neurons / d_ff) = sum(count) / (tokens d_ff)
  double sdActiveShare = 0;    ///< standard deviation over tokens of the same share (from active_hist)
  double q10ActiveShare = 0;   ///< 10th percentile over tokens (histQuantile / d_ff)
  double q90ActiveShare = 0;   ///< 90th percentile over tokens
  int64_t dead = 0;            ///< neurons never active (count == 0)
  int64_t alwaysOn = 0;        ///< neurons active on >= 99% of the tokens
};

/// The q-quantile (q in [0, 1]) of the number of active neurons per token from
/// active_hist [d_ff + 1]: the smallest k whose cumulative token count reaches
/// ceil(q * total). 0 for an empty histogram.
double histQuantile(const std::vector<int64_t>& activeHist, double q);

/// The summary from count [d_ff] and active_hist [d_ff + 1]. Throws
/// ParameterError when the sizes disagree or tokens <= 0. Thread-safe.
LayerSparsity layerSparsity(const std::vector<int64_t>& count, const std::vector<int64_t>& activeHist, int64_t tokens);
/// The same for a recorded site over the tokens its statistics count
/// (Recording::siteTokens). Throws ParameterError for an unrecorded one.
LayerSparsity layerSparsity(const Recording& rec, int layer);

}  // namespace moefy
