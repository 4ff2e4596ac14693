#include "analysis/analyze/moe_stats.h"

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "analysis/common/error.h"

namespace moefy {

namespace {

// Row norms with zero rows mapped to an infinite norm, so that x / |x| is 0
// and a zero row's cosine with anything is 0 instead of NaN.
Eigen::VectorXd inverseNorms(const MatrixXdR& X) {
  Eigen::VectorXd n = X.rowwise().norm();
  for (Eigen::Index i = 0; i < n.size(); ++i) n[i] = n[i] > 0 ? 1.0 / n[i] : 0.0;
  return n;
}

}  // namespace

Eigen::MatrixXd cosineMatrix(const MatrixXdR& X) { return cosineMatrix(X, X); }

Eigen::MatrixXd cosineMatrix(const MatrixXdR& A, const MatrixXdR& B) {
  if (A.cols() != B.cols())
    throw ParameterError("cosineMatrix: rows of length " + std::to_string(A.cols()) + " and " +
                         std::to_string(B.cols()));
  const Eigen::VectorXd ia = inverseNorms(A), ib = inverseNorms(B);
  Eigen::MatrixXd S = A * B.transpose();  // [N, M]
  S = ia.asDiagonal() * S * ib.asDiagonal();
  return S.cwiseMax(-1.0).cwiseMin(1.0);  // rounding can leave |cos| a few ulps above 1
}

// No Debian package gives a float-cost assignment solver usable from C++ here:
// dlib's max_cost_assignment (libdlib-dev) needs an integer cost matrix, so the
// similarities would have to be quantised (and the whole of dlib pulled in for
// one function), and LEMON / OR-tools are not packaged for bookworm. Hence
// this compact O(n^3) shortest-augmenting-path Hungarian method (the
// Jonker-Volgenant augmentation with dual potentials, without their
// initialisation heuristics), on the cost -score.
std::vector<int64_t> maxAssignment(const Eigen::MatrixXd& score) {
  if (score.rows() != score.cols())
    throw ParameterError("maxAssignment: score matrix is " + std::to_string(score.rows()) + " x " +
                         std::to_string(score.cols()) + ", not square");
  if (!score.allFinite()) throw ParameterError("maxAssignment: score matrix has a NaN or infinite entry");
  const int64_t n = score.rows();
  if (n == 0) return {};
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based arrays; column 0 is the virtual start of each augmenting path.
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0);  // row / column potentials
  std::vector<int64_t> rowOfCol(n + 1, 0), prevCol(n + 1, 0);
  std::vector<double> minSlack(n + 1);
  std::vector<char> used(n + 1);
  for (int64_t i = 1; i <= n; ++i) {
    // Grow a shortest alternating path from row i until it reaches a free column.
    rowOfCol[0] = i;
    int64_t j0 = 0;
    std::fill(minSlack.begin(), minSlack.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int64_t i0 = rowOfCol[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = -score(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minSlack[j]) {
          minSlack[j] = cur;
          prevCol[j] = j0;
        }
        if (minSlack[j] < delta) {
          delta = minSlack[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (used[j]) {
          u[rowOfCol[j]] += delta;
          v[j] -= delta;
        } else {
          minSlack[j] -= delta;
        }
      }
      j0 = j1;
    } while (rowOfCol[j0] != 0);
    // Flip the path: every column on it takes the row of its predecessor.
    do {
      const int64_t j1 = prevCol[j0];
      rowOfCol[j0] = rowOfCol[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> p(n);
  for (int64_t j = 1; j <= n; ++j) p[rowOfCol[j] - 1] = j - 1;
  return p;
}

double kendallTauToIdentity(const std::vector<int64_t>& p) {
  const int64_t n = static_cast<int64_t>(p.size());
  if (n < 2) return 1.0;
  int64_t concordant = 0, discordant = 0;
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = a + 1; b < n; ++b) (p[a] < p[b] ? concordant : discordant)++;
  return static_cast<double>(concordant - discordant) / (0.5 * static_cast<double>(n) * (n - 1));
}

std::optional<double> linearFitR2(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size())
    throw ParameterError("linearFitR2: " + std::to_string(x.size()) + " x values but " + std::to_string(y.size()) +
                         " y values");
  if (x.size() < 2) return std::nullopt;
  const Eigen::Map<const Eigen::VectorXd> X(x.data(), x.size()), Y(y.data(), y.size());
  const Eigen::VectorXd xc = X.array() - X.mean(), yc = Y.array() - Y.mean();
  const double sxx = xc.squaredNorm(), syy = yc.squaredNorm(), sxy = xc.dot(yc);
  if (!(sxx > 0) || !(syy > 0)) return std::nullopt;
  return sxy * sxy / (sxx * syy);
}

std::vector<double> upperOffDiagonal(const Eigen::MatrixXd& S) {
  std::vector<double> out;
  for (Eigen::Index i = 0; i < S.rows(); ++i)
    for (Eigen::Index j = i + 1; j < S.cols(); ++j) out.push_back(S(i, j));
  return out;
}

Eigen::MatrixXd cosineFromGram(const Eigen::MatrixXd& G) {
  Eigen::VectorXd inv = G.diagonal();
  for (Eigen::Index i = 0; i < inv.size(); ++i) inv[i] = inv[i] > 0 ? 1.0 / std::sqrt(inv[i]) : 0.0;
  Eigen::MatrixXd S = inv.asDiagonal() * G * inv.asDiagonal();
  return S.cwiseMax(-1.0).cwiseMin(1.0);
}

namespace {

// Explained shares and the sign convention of pca2/pca2FromGram, from the
// eigenvalues in ascending order (the solver's) and the unsigned scores.
void finishPca(Pca2& r, const Eigen::VectorXd& lambda) {
  const double total = lambda.cwiseMax(0.0).sum();
  const Eigen::Index m = lambda.size();
  for (int c = 0; c < 2; ++c) {
    const double l = c < m ? std::max(0.0, lambda[m - 1 - c]) : 0.0;
    // A component of (numerically) zero variance carries no direction: zero it.
    if (!(total > 0) || l <= 1e-12 * total) {
      r.scores.col(c).setZero();
      continue;
    }
    r.explained[c] = l / total;
    Eigen::Index at = 0;
    r.scores.col(c).cwiseAbs().maxCoeff(&at);
    if (r.scores(at, c) < 0) r.scores.col(c) *= -1.0;
  }
}

}  // namespace

Pca2 pca2FromGram(const Eigen::MatrixXd& G) {
  if (G.rows() != G.cols()) throw ParameterError("pca2FromGram: Gram matrix is not square");
  Pca2 r;
  const Eigen::Index N = G.rows();
  r.scores = MatrixXdR::Zero(N, 2);
  if (N == 0) return r;
  // J G J: the Gram matrix of the centred rows.
  const Eigen::VectorXd rowMean = G.rowwise().mean();
  const double allMean = G.mean();
  Eigen::MatrixXd Gc = G;
  Gc.colwise() -= rowMean;
  Gc.rowwise() -= rowMean.transpose();
  Gc.array() += allMean;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(Gc);
  const Eigen::VectorXd& lambda = es.eigenvalues();
  for (int c = 0; c < 2 && c < N; ++c)
    r.scores.col(c) = es.eigenvectors().col(N - 1 - c) * std::sqrt(std::max(0.0, lambda[N - 1 - c]));
  finishPca(r, lambda);
  return r;
}

Pca2 pca2(const MatrixXdR& X) {
  const Eigen::Index N = X.rows(), D = X.cols();
  // Fewer samples than dimensions: the [N, N] Gram matrix is the smaller problem.
  if (D > N) return pca2FromGram(X * X.transpose());
  Pca2 r;
  r.scores = MatrixXdR::Zero(N, 2);
  if (N == 0 || D == 0) return r;
  const MatrixXdR Xc = X.rowwise() - X.colwise().mean();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(Xc.transpose() * Xc);  // [D, D]
  const Eigen::VectorXd& lambda = es.eigenvalues();
  for (int c = 0; c < 2 && c < D; ++c) r.scores.col(c) = Xc * es.eigenvectors().col(D - 1 - c);
  finishPca(r, lambda);
  return r;
}

UsageHealth usageHealth(const Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& chosen) {
  const Eigen::Index N = chosen.rows(), E = chosen.cols();
  if (N == 0 || E == 0) throw ParameterError("usageHealth: no tokens or no experts");
  const Eigen::MatrixXd c = chosen.cast<double>();  // [N, E]
  const Eigen::VectorXd count = c.colwise().sum().transpose();
  const double total = count.sum();
  if (!(total > 0)) throw ParameterError("usageHealth: no expert was selected");
  UsageHealth h;
  h.share.resize(E);
  double entropy = 0;
  int dead = 0;
  for (Eigen::Index e = 0; e < E; ++e) {
    const double p = count[e] / total;
    h.share[e] = p;
    if (p > 0) entropy -= p * std::log(p);
    if (count[e] == 0) ++dead;
  }
  h.perplexity = std::exp(entropy) / static_cast<double>(E);
  h.deadShare = static_cast<double>(dead) / static_cast<double>(E);
  h.cooccurrence = c.transpose() * c;  // [E, E] tokens choosing both
  h.cooccurrence.diagonal().setZero();
  for (Eigen::Index i = 0; i < E; ++i) {
    const double s = h.cooccurrence.row(i).sum();
    if (s > 0) h.cooccurrence.row(i) /= s;
  }
  return h;
}

}  // namespace moefy
