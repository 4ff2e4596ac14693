// The linear algebra of the MoE analyses (analysis/analyze/moe_stats.h)
// against independent computations: the optimal assignment against a brute
// force over all permutations (n <= 7) on random score matrices, Kendall's
// tau against an O(n^2) pair count written here from the definition and known
// values, the R² against the closed form of a hand-made example, the PCA
// against a direct SVD (Eigen::JacobiSVD of the centred rows) with its sign
// convention and both of its paths (covariance and Gram), and the usage
// health on a hand-counted selection matrix. Prints the max differences.
#include <QtTest>

#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "analysis/analyze/moe_stats.h"
#include "analysis/common/error.h"

using namespace moefy;

namespace {

double bruteForceBest(const Eigen::MatrixXd& S) {
  std::vector<int> p(S.rows());
  std::iota(p.begin(), p.end(), 0);
  double best = -1e300;
  do {
    double t = 0;
    for (int i = 0; i < S.rows(); ++i) t += S(i, p[i]);
    best = std::max(best, t);
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}

// Scores from an SVD of the centred rows, first two columns, each column's
// entry of largest magnitude positive.
MatrixXdR svdScores(const MatrixXdR& X) {
  const Eigen::MatrixXd Xc = X.rowwise() - X.colwise().mean();
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(Xc, Eigen::ComputeThinU);
  MatrixXdR s = MatrixXdR::Zero(X.rows(), 2);
  for (int c = 0; c < 2 && c < svd.singularValues().size(); ++c) {
    s.col(c) = svd.matrixU().col(c) * svd.singularValues()[c];
    Eigen::Index at = 0;
    s.col(c).cwiseAbs().maxCoeff(&at);
    if (s(at, c) < 0) s.col(c) *= -1.0;
  }
  return s;
}

}  // namespace

class MoeStats : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void assignmentIsOptimal() {
    std::mt19937 rng(7);
    std::normal_distribution<double> g;
    double worst = 0;
    for (int n = 1; n <= 7; ++n) {
      for (int rep = 0; rep < 20; ++rep) {
        Eigen::MatrixXd S(n, n);
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) S(i, j) = rep % 4 == 3 ? std::round(g(rng)) : g(rng);  // ties too
        const std::vector<int64_t> p = maxAssignment(S);
        std::vector<int64_t> sorted = p;
        std::sort(sorted.begin(), sorted.end());
        for (int i = 0; i < n; ++i) QCOMPARE(sorted[i], int64_t{i});  // a permutation
        double t = 0;
        for (int i = 0; i < n; ++i) t += S(i, p[i]);
        worst = std::max(worst, std::abs(t - bruteForceBest(S)));
      }
    }
    qInfo("assignment: max |total - brute-force optimum| %.3g over n = 1..7", worst);
    QVERIFY(worst < 1e-12);
    QVERIFY(maxAssignment(Eigen::MatrixXd(0, 0)).empty());
    QVERIFY_THROWS_EXCEPTION(ParameterError, maxAssignment(Eigen::MatrixXd::Zero(2, 3)));
    Eigen::MatrixXd bad = Eigen::MatrixXd::Zero(2, 2);
    bad(0, 1) = std::nan("");
    QVERIFY_THROWS_EXCEPTION(ParameterError, maxAssignment(bad));
  }

  void kendallTau() {
    QCOMPARE(kendallTauToIdentity({0, 1, 2, 3}), 1.0);
    QCOMPARE(kendallTauToIdentity({3, 2, 1, 0}), -1.0);
    QCOMPARE(kendallTauToIdentity({0}), 1.0);
    // {3,0,2,1,4}: 4 inversions of 10 pairs -> (6 - 4) / 10 (scipy.stats.kendalltau: 0.2).
    QVERIFY(std::abs(kendallTauToIdentity({3, 0, 2, 1, 4}) - 0.2) < 1e-15);
    // {1,0,2}: 1 inversion of 3 pairs -> 1/3.
    QVERIFY(std::abs(kendallTauToIdentity({1, 0, 2}) - 1.0 / 3.0) < 1e-15);
  }

  void cosineAndFit() {
    MatrixXdR X(3, 2);
    X << 1, 0, 0, 2, 0, 0;  // the zero row has cosine 0 with everything
    const Eigen::MatrixXd S = cosineMatrix(X);
    QCOMPARE(S(0, 0), 1.0);
    QCOMPARE(S(0, 1), 0.0);
    QCOMPARE(S(2, 2), 0.0);
    QCOMPARE(cosineFromGram(X * X.transpose()), S);
    QCOMPARE(upperOffDiagonal(S), (std::vector<double>{0.0, 0.0, 0.0}));
    // y = 2x + 1 exactly -> R² 1; {1,2,3,4} vs {2,4.5,5.5,9}: r² = 0.9584158415841584 (closed form).
    QVERIFY(std::abs(*linearFitR2({1, 2, 3}, {3, 5, 7}) - 1.0) < 1e-15);
    QVERIFY(std::abs(*linearFitR2({1, 2, 3, 4}, {2, 4.5, 5.5, 9}) - 0.9584158415841584) < 1e-14);
    QVERIFY(!linearFitR2({1, 1, 1}, {1, 2, 3}));
    QVERIFY(!linearFitR2({1}, {2}));
  }

  void pcaMatchesSvd() {
    std::mt19937 rng(3);
    std::normal_distribution<double> g;
    double worst = 0, worstGram = 0;
    for (auto [n, d] : {std::pair{30, 5}, std::pair{6, 40}, std::pair{12, 12}}) {
      MatrixXdR X(n, d);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) X(i, j) = g(rng) * (j + 1);
      const Pca2 p = pca2(X);
      worst = std::max(worst, (p.scores - svdScores(X)).cwiseAbs().maxCoeff());
      worstGram = std::max(worstGram, (pca2FromGram(X * X.transpose()).scores - p.scores).cwiseAbs().maxCoeff());
      QVERIFY(p.explained[0] >= p.explained[1] && p.explained[0] + p.explained[1] <= 1 + 1e-12);
    }
    qInfo("pca: max |scores - SVD| %.3g, |Gram path - covariance path| %.3g", worst, worstGram);
    QVERIFY(worst < 1e-9);
    QVERIFY(worstGram < 1e-9);
    // Rank 1: the second component is zero.
    MatrixXdR line(4, 2);
    line << 1, 2, 2, 4, 3, 6, 4, 8;
    const Pca2 p = pca2(line);
    QVERIFY(std::abs(p.explained[0] - 1.0) < 1e-12);
    QCOMPARE(p.explained[1], 0.0);
    QCOMPARE(p.scores.col(1).cwiseAbs().maxCoeff(), 0.0);
  }

  void usage() {
    Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> chosen(3, 4);
    chosen << 1, 1, 0, 0,  //
        1, 0, 1, 0,        //
        1, 1, 0, 0;
    const UsageHealth h = usageHealth(chosen);
    // Counts 3, 2, 1, 0 of 6 selections.
    QCOMPARE(h.share, (std::vector<double>{0.5, 2.0 / 6, 1.0 / 6, 0.0}));
    const double H = -(0.5 * std::log(0.5) + (2.0 / 6) * std::log(2.0 / 6) + (1.0 / 6) * std::log(1.0 / 6));
    QVERIFY(std::abs(h.perplexity - std::exp(H) / 4) < 1e-15);
    QCOMPARE(h.deadShare, 0.25);
    // Expert 0 co-occurs twice with 1 and once with 2; 1 and 2 only with 0; 3 never.
    Eigen::MatrixXd want = Eigen::MatrixXd::Zero(4, 4);
    want(0, 1) = 2.0 / 3;
    want(0, 2) = 1.0 / 3;
    want(1, 0) = 1;
    want(2, 0) = 1;
    QVERIFY((h.cooccurrence - want).cwiseAbs().maxCoeff() < 1e-15);
    QVERIFY_THROWS_EXCEPTION(
        ParameterError, usageHealth(Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>(0, 4)));
  }
};

QTEST_GUILESS_MAIN(MoeStats)
#include "test_moe_stats.moc"
