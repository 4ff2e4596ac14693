#pragma once
// Agreement between partitions of one FFN site: the adjusted Rand index (ARI)
// and the normalised mutual information (NMI) of their neuron labelings, for
// one pair or for every pair of n partitions (the studio's agreement matrix,
// `moefy split --compare`, the stability metrics of partition.json).
// Definitions: docs/recording-and-splitting.md "Metrics". Plain C++ (no ATen,
// no Qt), so the studio's widgets include it directly. Implemented in
// split/metrics.cpp.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace moefy {

/// Adjusted Rand index between two labelings of the same neurons (Hubert &
/// Arabie 1985; scikit-learn's adjusted_rand_score): 1 = the same partition
/// (up to renaming the experts), ~0 = unrelated, may be negative. Labels are
/// any int32 ids (label E of a shared expert counts as one more group). 1.0
/// when both labelings are trivial (one group, or all singletons). Throws
/// ParameterError when the lengths differ. Thread-safe.
double adjustedRandIndex(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

/// Normalised mutual information, arithmetic-mean normalisation
/// I(a; b) / ((H(a) + H(b)) / 2) in nats (scikit-learn's default
/// normalized_mutual_info_score): 1 = the same partition, 0 = independent.
/// 1.0 when both entropies are 0. Throws ParameterError when the lengths
/// differ. Thread-safe.
double normalizedMutualInfo(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

/// ARI and NMI of one pair of labelings.
struct LabelAgreement {
  double ari = 1;
  double nmi = 1;
};

/// Both measures from one contingency table: the same values, bit for bit, as
/// adjustedRandIndex and normalizedMutualInfo. Throws ParameterError when the
/// lengths differ. Thread-safe.
LabelAgreement labelAgreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

/// Pairwise agreement of n labelings of the same neurons (n partitions of one
/// site): two symmetric n x n matrices, row-major.
struct AgreementMatrix {
  int n = 0;
  std::vector<double> ari;  ///< [n * n]; ari[i * n + j] = adjustedRandIndex(labelings[i], labelings[j])
  std::vector<double> nmi;  ///< [n * n]; likewise normalizedMutualInfo
  double ariAt(int i, int j) const { return ari[static_cast<std::size_t>(i) * n + j]; }
  double nmiAt(int i, int j) const { return nmi[static_cast<std::size_t>(i) * n + j]; }
};

/// The agreement matrix of `labelings` (each [d], the neurons of one site):
/// labelAgreement of every pair i < j, mirrored; the diagonal is exactly 1
/// (a partition agrees with itself). n(n - 1) / 2 contingency tables of
/// O(d) each. n = 0 gives an empty matrix. Throws ParameterError naming the
/// labeling whose length differs from the first's. Thread-safe.
AgreementMatrix agreementMatrix(const std::vector<std::vector<int32_t>>& labelings);

}  // namespace moefy
