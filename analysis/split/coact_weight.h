#pragma once
// Normalised co-activation: the one definition of the Jaccard and PPMI
// weights of a neuron pair. The splitter's graph (buildCoactGraph,
// `split --weighting jaccard|ppmi`) scales and rounds these values into its
// integer edge weights; the studio's Co-activation heatmap draws them
// unscaled, so the map shows exactly what the splitter partitions.
// Header-only and free of torch and Qt: the views include it directly.
// Definitions: docs/recording-and-splitting.md, "Methods" (edge weightings).
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

namespace moefy {

/// The measure of a neuron pair's co-activation.
enum class CoactMeasure {
  Count,    ///< c_ij: tokens on which both neurons are active
  Jaccard,  ///< coactJaccard
  Ppmi,     ///< coactPpmi
};

/// Jaccard index of two neurons' active-token sets: c_ij / (c_i + c_j - c_ij),
/// with c_ij the tokens on which both are active and c_i, c_j the tokens on
/// which each is (the diagonal of the binary co-activation matrix, equal to
/// stats.safetensors `count`). 0 when the union c_i + c_j - c_ij is not
/// positive. In [0, 1] for consistent counts (c_ij <= min(c_i, c_j)). Pure,
/// thread-safe.
inline double coactJaccard(double cij, double ci, double cj) {
  const double den = ci + cj - cij;
  return den > 0 && cij > 0 ? cij / den : 0.0;
}

/// Positive pointwise mutual information of two neurons' activity:
/// max(0, ln(c_ij T / (c_i c_j))) in nats, T the tokens the counts are over
/// (the site's token count, Recording::siteTokens). 0 when c_ij, c_i or c_j
/// is 0 or T is not positive (Church & Hanks 1990, PMI; clipped at 0 as in
/// Bullinaria & Levy 2007). Pure, thread-safe.
inline double coactPpmi(double cij, double ci, double cj, double tokens) {
  if (cij <= 0 || ci <= 0 || cj <= 0 || tokens <= 0) return 0.0;
  return std::max(0.0, std::log(cij * tokens / (ci * cj)));
}

/// The measure's value for one pair: c_ij itself, coactJaccard or coactPpmi.
inline double coactWeight(CoactMeasure measure, double cij, double ci, double cj, double tokens) {
  switch (measure) {
    case CoactMeasure::Jaccard:
      return coactJaccard(cij, ci, cj);
    case CoactMeasure::Ppmi:
      return coactPpmi(cij, ci, cj, tokens);
    case CoactMeasure::Count:
      break;
  }
  return cij;
}

/// The splitter's integer edge weights are round(scale x value):
/// Jaccard x 1000, PPMI x 100 (edges below 1 dropped), raw counts as they are.
inline constexpr double kJaccardGraphScale = 1000.0;
inline constexpr double kPpmiGraphScale = 100.0;

/// "counts" | "jaccard" | "ppmi" (file names, CSV, the CLI's --weighting uses "raw" for counts).
inline const char* coactMeasureName(CoactMeasure measure) {
  switch (measure) {
    case CoactMeasure::Jaccard:
      return "jaccard";
    case CoactMeasure::Ppmi:
      return "ppmi";
    case CoactMeasure::Count:
      break;
  }
  return "counts";
}

/// The measure a name means ("counts" or "raw", "jaccard", "ppmi"); nullopt otherwise.
inline std::optional<CoactMeasure> parseCoactMeasure(const std::string& name) {
  if (name == "counts" || name == "raw") return CoactMeasure::Count;
  if (name == "jaccard") return CoactMeasure::Jaccard;
  if (name == "ppmi") return CoactMeasure::Ppmi;
  return std::nullopt;
}

}  // namespace moefy
