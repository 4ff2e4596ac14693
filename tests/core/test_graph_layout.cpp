// Graph layout through Graphviz sfdp: seeded (the same layout every run),
// normalised, structure-preserving, errors and cancellation.
#include <QtTest>
#include <chrono>
#include <cmath>
#include <random>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/report/graph_layout.h"

using namespace moefy;
using namespace moefy::report;

namespace {
double dist(const std::array<double, 2>& a, const std::array<double, 2>& b) {
  return std::hypot(a[0] - b[0], a[1] - b[1]);
}

/// Two cliques of `n` nodes joined by one edge.
std::vector<LayoutEdge> twoCliques(int n) {
  std::vector<LayoutEdge> e;
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) e.push_back({c * n + i, c * n + j});
  e.push_back({0, n});
  return e;
}
}  // namespace

class TestGraphLayout : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void seededAndNormalised() {
    const auto edges = twoCliques(12);
    LayoutOptions o;
    o.seed = 5;
    auto a = layoutGraph(24, edges, o, JobContext::none());
    auto b = layoutGraph(24, edges, o, JobContext::none());
    QCOMPARE(a.size(), size_t(24));
    QVERIFY(a == b);  // bit-identical on a second run
    o.seed = 6;
    auto c = layoutGraph(24, edges, o, JobContext::none());
    QVERIFY(a != c);
    double lo = 1e9, hi = -1e9;
    for (const auto& p : a) lo = std::min({lo, p[0], p[1]}), hi = std::max({hi, p[0], p[1]});
    qInfo() << "coordinate range" << lo << hi;
    QVERIFY(lo >= -1.0 - 1e-9 && hi <= 1.0 + 1e-9);
    QVERIFY(hi - lo > 1.9);  // the longer side spans [-1, 1]
  }

  void keepsClustersTogether() {
    const int n = 15;
    auto p = layoutGraph(2 * n, twoCliques(n), {}, JobContext::none());
    double inside = 0, across = 0;
    int ni = 0, na = 0;
    for (int i = 0; i < 2 * n; ++i)
      for (int j = i + 1; j < 2 * n; ++j)
        ((i < n) == (j < n) ? (inside += dist(p[i], p[j]), ++ni) : (across += dist(p[i], p[j]), ++na));
    inside /= ni, across /= na;
    qInfo() << "mean distance inside a clique" << inside << "across" << across;
    QVERIFY(inside < 0.6 * across);
  }

  void thousandsOfNodesInSeconds() {
    // A d_ff 3072 layer's neurons with three links each (not a timed test:
    // the time is printed; the old O(n^2)-per-iteration loop took minutes).
    const int n = 3072;
    std::mt19937 rng(1);
    std::vector<LayoutEdge> e;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < 3; ++k) e.push_back({i, int(rng() % n)});
    auto t0 = std::chrono::steady_clock::now();
    auto p = layoutGraph(n, e, {}, JobContext::none());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    qInfo() << n << "nodes," << e.size() << "edges laid out in" << secs << "s";
    QCOMPARE(p.size(), size_t(n));
    for (const auto& q : p) QVERIFY(std::isfinite(q[0]) && std::isfinite(q[1]));
  }

  void trivialGraphs() {
    QVERIFY(layoutGraph(0, {}, {}, JobContext::none()).empty());
    auto one = layoutGraph(1, {}, {}, JobContext::none());
    QCOMPARE(one.size(), size_t(1));
    QCOMPARE(one[0][0], 0.0);
    // Self-loops and repeated edges are ignored.
    auto p = layoutGraph(3, {{0, 0}, {0, 1}, {1, 0}, {1, 2}}, {}, JobContext::none());
    QCOMPARE(p.size(), size_t(3));
  }

  void errorsAndCancel() {
    QVERIFY_THROWS_EXCEPTION(ParameterError, layoutGraph(3, {{0, 3}}, {}, JobContext::none()));
    QVERIFY_THROWS_EXCEPTION(ParameterError, layoutGraph(3, {{-1, 0}}, {}, JobContext::none()));
    LayoutOptions o;
    o.radius = {1, 2};
    QVERIFY_THROWS_EXCEPTION(ParameterError, layoutGraph(3, {}, o, JobContext::none()));
    JobContext job;
    job.cancel();
    QVERIFY_THROWS_EXCEPTION(CancelledError, layoutGraph(30, twoCliques(15), {}, job));
  }
};

QTEST_GUILESS_MAIN(TestGraphLayout)
#include "test_graph_layout.moc"
