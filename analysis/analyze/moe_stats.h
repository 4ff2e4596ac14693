#pragma once
// The linear algebra of the MoE analyses (analysis/analyze/moe_analysis.h),
// on Eigen matrices in float64: cosine-similarity matrices, the optimal
// one-to-one matching of two experts' neurons (linear assignment) and its
// Kendall's tau against the identity, the R² of a simple linear fit, a 2-D
// PCA through Eigen::SelfAdjointEigenSolver, and the usage-health metrics of
// a router's selections. Free of libtorch, so the functions are easy to test
// and reuse. All functions are pure and thread-safe.
//
// Sources: the analyses of Lo et al., "A Closer Look into Mixture-of-Experts
// in Large Language Models" (arXiv 2406.18219: expert/neuron similarity,
// router-versus-norm ranks, angular output similarity) and the standard MoE
// usage metrics (Switch/OLMoE: selection share, usage entropy, dead experts,
// co-occurrence).
#include <Eigen/Dense>
#include <cstdint>
#include <optional>
#include <vector>

namespace moefy {

using MatrixXdR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Cosine similarity of every pair of rows of X [N, D]: S [N, N], S_ij =
/// x_i . x_j / (|x_i| |x_j|). A zero row has similarity 0 with every row
/// (itself included), so the result never holds NaN.
Eigen::MatrixXd cosineMatrix(const MatrixXdR& X);
/// Cosine similarity of every row of A [N, D] with every row of B [M, D]:
/// [N, M], zero rows giving 0 as in cosineMatrix. Throws ParameterError when
/// the column counts differ.
Eigen::MatrixXd cosineMatrix(const MatrixXdR& A, const MatrixXdR& B);

/// The optimal one-to-one assignment that MAXIMISES sum_i score(i, p[i]) over
/// the permutations p of a square score matrix [n, n] (shortest augmenting
/// paths with row/column potentials, the Hungarian method in the form of
/// Jonker and Volgenant, 1987; O(n^3) time, O(n^2) memory). Returns p [n]:
/// row i is assigned to column p[i]. Throws ParameterError for a non-square
/// or non-finite matrix. n = 0 gives an empty permutation.
std::vector<int64_t> maxAssignment(const Eigen::MatrixXd& score);

/// Cosine similarities from a Gram matrix G [N, N] of dot products:
/// S_ij = G_ij / sqrt(G_ii G_jj), 0 where G_ii or G_jj is 0 (as cosineMatrix).
Eigen::MatrixXd cosineFromGram(const Eigen::MatrixXd& G);

/// Kendall's tau of a permutation p [n] against the identity:
/// (concordant - discordant) / (n (n - 1) / 2) over the pairs a < b, where a
/// pair is concordant when p[a] < p[b] (tau-a, which equals tau-b here since a
/// permutation has no ties). 1 for the identity, -1 for the reversal; 1 for
/// n < 2 (the identity trivially). O(n^2).
double kendallTauToIdentity(const std::vector<int64_t>& p);

/// R² of the least-squares line y = a + b x (the squared Pearson
/// correlation). nullopt when x or y has zero variance or fewer than 2 points
/// (the fit is undefined). Throws ParameterError when the lengths differ.
std::optional<double> linearFitR2(const std::vector<double>& x, const std::vector<double>& y);

/// The strict upper-triangle entries S_ij, i < j, of a square matrix, row by
/// row (the off-diagonal entries of a symmetric similarity matrix, once each).
std::vector<double> upperOffDiagonal(const Eigen::MatrixXd& S);

/// A 2-D principal-component projection of the rows of X [N, D].
struct Pca2 {
  MatrixXdR scores;       ///< [N, 2]: centred rows projected on the first two components
  double explained[2]{};  ///< share of the total variance of each component (0 when there is none)
};
/// PCA of the rows of X [N, D] through Eigen::SelfAdjointEigenSolver: of the
/// covariance Xc^T Xc [D, D] when D <= N, else of the Gram matrix Xc Xc^T
/// [N, N] (scores = u sqrt(lambda)); both give the same scores. Components
/// beyond the data's rank are zero. Sign convention (so that results are
/// reproducible): each component's score of largest magnitude is positive.
Pca2 pca2(const MatrixXdR& X);

/// The same projection from the Gram matrix G = X X^T [N, N] of the rows
/// alone (the rows may be too long to hold, e.g. flattened experts): the rows
/// are centred through G (J G J, J = I - 11^T/N) and the scores are
/// u sqrt(lambda) of its eigenpairs. Throws ParameterError when G is not square.
Pca2 pca2FromGram(const Eigen::MatrixXd& G);

/// The usage health of one MoE layer from its selections: `chosen` [N, E]
/// (1 where token n selected expert e, k ones per row).
struct UsageHealth {
  std::vector<double> share;     ///< [E] selection share: count_e / (N k), sums to 1
  double perplexity = 0;         ///< exp(H) / E with H = -sum share_e ln share_e (0 ln 0 = 0); 1 = perfectly even
  double deadShare = 0;          ///< share of the experts that no token selected
  Eigen::MatrixXd cooccurrence;  ///< [E, E] tokens selecting both i and j, diagonal 0, each row divided by its sum (a
                                 ///< zero row stays 0)
};
/// Throws ParameterError when `chosen` has no rows or no selections.
UsageHealth usageHealth(const Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& chosen);

}  // namespace moefy
