// Per-layer budgets (issue 17, method 5): both allocation rules against an
// independent numpy reference (scripts/ref/layer_budget_ref.py), the greedy
// rule's quality probe against numpy, the bad budgets, and the allocation
// block of router.json (round trip and the reader's checks).
#include <torch/torch.h>

#include <QtTest>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/moe/layer_budget.h"
#include "analysis/route/router.h"
#include "npy.h"
#include "testutil.h"
#include "tiny_gpt2.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path refScript() { return test::sourceDir() / "scripts" / "ref" / "layer_budget_ref.py"; }

// A FLOP table in the form of analysis/moe/ffn_flops.h for a plain FFN with a
// d_model x E router: dense (2 d F), k experts 2 d k F / E + d E.
LayerFlopTable linearTable(double d, double F, int E) {
  LayerFlopTable t;
  t.dense = 2 * d * F;
  for (int k = 1; k <= E; ++k) t.flops.push_back(2 * d * k * F / E + d * E);
  return t;
}

// An increasing table with uneven steps (not of the formula: the rules must
// not assume linear costs).
LayerFlopTable unevenTable(std::mt19937_64& rng, int E) {
  std::uniform_real_distribution<double> u(0.5, 2.0);
  LayerFlopTable t;
  double f = 3 * u(rng);
  for (int k = 1; k <= E; ++k) t.flops.push_back(f), f += u(rng);
  t.dense = f + u(rng);
  return t;
}

std::string budgetError(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ParameterError& e) {
    return e.what();
  }
  return {};
}

}  // namespace

class TestLayerBudget : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() { configureRuntime(); }

  // Both rules on fixed and random cases: k equal to numpy's, the FLOP
  // fraction within 1e-12, never above the budget.
  void allocationMatchesNumpy() {
    struct Case {
      std::string method;
      double budget;
      int minK;
      std::vector<LayerFlopTable> tables;
      std::vector<double> activity;
      std::vector<std::vector<double>> error;
    };
    std::vector<Case> cases;
    // The issue's shape: layer 0 with 44 % active neurons, the others 12-16 %.
    const std::vector<double> issue = {0.44, 0.16, 0.12, 0.14, 0.13, 0.15};
    for (double b : {0.125, 0.25, 0.5}) {
      std::vector<LayerFlopTable> t(issue.size(), linearTable(768, 3072, 16));
      cases.push_back({"activity", b, 1, t, issue, {}});
    }
    // Ties: equal activity everywhere (the lower index wins each tie).
    cases.push_back(
        {"activity", 0.3, 1, std::vector<LayerFlopTable>(4, linearTable(64, 256, 16)), {0.2, 0.2, 0.2, 0.2}, {}});
    // A dead layer (activity 0) and a full budget.
    cases.push_back({"activity", 1.0, 1, std::vector<LayerFlopTable>(3, linearTable(64, 256, 8)), {0.0, 0.3, 0.1}, {}});
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> u(0, 1);
    for (int c = 0; c < 24; ++c) {
      const int layers = 1 + c % 7, minK = 1 + c % 3;
      std::vector<LayerFlopTable> t;
      std::vector<double> a;
      std::vector<std::vector<double>> err;
      for (int i = 0; i < layers; ++i) {
        const int E = 4 + (c + i) % 13;
        t.push_back(c % 2 ? unevenTable(rng, E) : linearTable(32 + 16 * i, 128, E));
        a.push_back(u(rng));
        // Decreasing on the whole, with bumps (a router is not monotone).
        std::vector<double> e;
        double v = 1 + u(rng);
        for (int k = 1; k <= E; ++k)
          e.push_back(v), v = std::max(0.0, v * (0.5 + 0.45 * u(rng)) + 0.05 * (u(rng) - 0.5));
        err.push_back(e);
      }
      cases.push_back({c % 3 == 0 ? "greedy" : "activity", 0.15 + 0.85 * u(rng), minK, t, a, err});
    }
    json spec = json::array();
    for (const auto& c : cases) {
      json dense = json::array(), flops = json::array();
      for (const auto& t : c.tables) dense.push_back(t.dense), flops.push_back(t.flops);
      json j = {{"method", c.method}, {"budget", c.budget}, {"min_k", c.minK}, {"dense", dense}, {"flops", flops}};
      if (c.method == "activity")
        j["activity"] = c.activity;
      else
        j["error"] = c.error;
      spec.push_back(j);
    }
    const fs::path dir = test::freshDir("layer_budget_alloc");
    writeFileAtomic(dir / "spec.json", spec.dump());
    auto r = test::runPython(
        {QString::fromStdString(refScript().string()), "alloc", QString::fromStdString((dir / "spec.json").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const json want = json::parse(r.out);
    QCOMPARE(want.size(), cases.size());
    int equal = 0, infeasible = 0;
    double maxFracDiff = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      auto run = [&] {
        return c.method == "activity" ? allocateByActivity(c.activity, c.tables, c.budget, c.minK)
                                      : allocateGreedy(c.error, c.tables, c.budget, c.minK);
      };
      if (want[i].contains("error")) {
        const std::string msg = budgetError([&] { run(); });
        QVERIFY2(msg.find("--budget") != std::string::npos, msg.c_str());
        ++infeasible;
        continue;
      }
      const std::vector<int> k = run();
      const auto wantK = want[i]["k"].get<std::vector<int>>();
      if (k != wantK)
        qWarning() << "case" << i << c.method.c_str() << "C++" << json(k).dump().c_str() << "numpy"
                   << want[i]["k"].dump().c_str();
      QCOMPARE(k, wantK);
      ++equal;
      const double f = allocationFlopsFraction(k, c.tables);
      maxFracDiff = std::max(maxFracDiff, std::abs(f - want[i]["fraction"].get<double>()));
      QVERIFY(f <= c.budget * (1 + 1e-12));
      for (size_t l = 0; l < k.size(); ++l) QVERIFY(k[l] >= c.minK && k[l] <= c.tables[l].experts());
    }
    qInfo() << "allocation vs numpy:" << equal << "cases with equal k," << infeasible
            << "infeasible in both; max |FLOP fraction - numpy|" << maxFracDiff;
    QVERIFY(equal >= 20);
    QVERIFY(maxFracDiff <= 1e-12);
    // The issue's shape at 25 %: layer 0 gets the most experts.
    const std::vector<int> k25 = allocateByActivity(issue, cases[1].tables, 0.25);
    qInfo() << "issue-shaped activities" << json(issue).dump().c_str() << "at budget 0.25 -> k"
            << json(k25).dump().c_str();
    for (size_t l = 1; l < k25.size(); ++l) QVERIFY(k25[0] > k25[l]);
  }

  // Budgets the rules refuse, each naming --budget.
  void badBudgets() {
    const std::vector<LayerFlopTable> t(2, linearTable(64, 256, 16));
    const std::vector<double> a = {0.3, 0.1};
    for (double b : {0.0, -0.5, 1.5, std::nan("")}) {
      const std::string msg = budgetError([&] { allocateByActivity(a, t, b); });
      qInfo() << "budget" << b << "->" << msg.c_str();
      QVERIFY2(msg.rfind("--budget", 0) == 0, msg.c_str());
    }
    // One expert per layer costs (2 * 64 * 16 + 64 * 16) / (2 * 64 * 256) = 0.09375 of dense.
    const std::string msg = budgetError([&] { allocateByActivity(a, t, 0.09); });
    qInfo() << msg.c_str();
    QVERIFY2(msg.find("--budget 0.09 is below 0.09375") != std::string::npos, msg.c_str());
    QCOMPARE(allocateByActivity(a, t, 0.09375), (std::vector<int>{1, 1}));
    QVERIFY(!budgetError([&] { allocateGreedy({{1.0}}, t, 0.5); }).empty());    // probe sizes disagree
    QVERIFY(!budgetError([&] { allocateByActivity(a, t, 0.5, 17); }).empty());  // min k above E
  }

  // The quality probe of a plain ReLU FFN with biases and a similarity router
  // against numpy; err(E) ~ 0.
  void probeMatchesNumpy() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    const int64_t d = 24, F = 96, N = 53;
    const int E = 8;
    FfnWeights w = test::randomFfn(gen, d, F, false, true, Activation::ReLU);
    at::Tensor x = at::randn({N, d}, gen);
    at::Tensor labels = (at::arange(F, at::kInt) % E).index_select(0, at::randperm(F, gen, at::kLong)).contiguous();
    auto packed = MoeLayerWeights::pack(w, ExpertLayout::fromLabels(labels, E, "test"));
    LayerRouter r;
    r.kind = RouterKind::Similarity;
    r.experts = E;
    r.centroids = similarityCentroids(*packed);
    const at::Tensor scores = r.scores(x, *packed);
    const fs::path dir = test::freshDir("layer_budget_probe");
    test::writeFfnNpy(dir, w, x);
    test::writeNpy(dir / "labels.npy", labels.to(at::kFloat).reshape({1, F}).contiguous());
    test::writeNpy(dir / "scores.npy", scores.contiguous());
    auto rr =
        test::runPython({QString::fromStdString(refScript().string()), "probe", QString::fromStdString(dir.string())});
    QVERIFY2(rr.exitCode == 0, rr.err.c_str());
    at::Tensor want = test::readNpy(dir / "err.npy", 1, E);
    QVERIFY(want.defined());
    const std::vector<double> err = probeLayerError(*packed, r, x);
    QCOMPARE(static_cast<int>(err.size()), E);
    double maxDiff = 0;
    for (int k = 0; k < E; ++k) maxDiff = std::max(maxDiff, std::abs(err[k] - want[0][k].item<double>()));
    qInfo() << "probe error per k" << json(err).dump().c_str() << "; max |C++ - numpy|" << maxDiff;
    QVERIFY(maxDiff <= 1e-5);
    QVERIFY(err[E - 1] <= 1e-5);
    QVERIFY(err[0] > 0.05);  // one expert of eight misses much of the output
    QVERIFY_EXCEPTION_THROWN(probeLayerError(*packed, r, x.narrow(0, 0, 0)), ParameterError);
  }

  // router.json's allocation block: written, read back, and refused when it
  // does not fit the router.
  void allocationBlockInRouterJson() {
    const fs::path dir = test::freshDir("layer_budget_router");
    RouterSet rs;
    rs.kind = RouterKind::Oracle;
    rs.layers = {0, 1};
    rs.topK = {5, 2};
    rs.experts = {16, 16};
    rs.routers.resize(2);
    for (auto& r : rs.routers) r.kind = RouterKind::Oracle, r.experts = 16;
    rs.modelFingerprint = "0123456789abcdef";
    rs.partitionLabelsHash = "fedcba9876543210";
    rs.allocation = {{"budget", 0.25},
                     {"method", "activity"},
                     {"min_k", 1},
                     {"source", "test"},
                     {"activity", {0.44, 0.12}},
                     {"flops_fraction", 0.24},
                     {"layer_flops_fraction", {0.34, 0.14}},
                     {"flops_share", {0.7, 0.3}}};
    rs.writeInto(dir);
    RouterSet back = RouterSet::read(dir);
    QCOMPARE(back.topK, rs.topK);
    QCOMPARE(back.allocation.dump(), rs.allocation.dump());
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;
    allocationTable(back, header, rows);
    QCOMPARE(rows.size(), size_t(2));
    QCOMPARE(rows[0][2], std::string("5 / 16"));
    QCOMPARE(rows[1][3], std::string("14.0 %"));
    // Tampered copies: each read fails with one line naming router.json and the key.
    const json good = readJsonFile(dir / "router.json");
    auto refuse = [&](const std::function<void(json&)>& edit, const std::string& needle) {
      json j = good;
      edit(j);
      writeFileAtomic(dir / "router.json", j.dump());
      std::string msg;
      try {
        RouterSet::read(dir);
      } catch (const FormatError& e) {
        msg = e.what();
      }
      qInfo() << "refused:" << msg.c_str();
      QVERIFY2(msg.find("router.json") != std::string::npos && msg.find(needle) != std::string::npos, msg.c_str());
    };
    refuse([](json& j) { j["allocation"]["flops_share"] = {1.0}; }, "allocation.flops_share");
    refuse([](json& j) { j["allocation"]["activity"] = {0.1, 0.2, 0.3}; }, "allocation.activity");
    refuse([](json& j) { j["allocation"]["budget"] = 0; }, "allocation.budget");
    refuse([](json& j) { j["allocation"]["method"] = "even"; }, "allocation.method");
    refuse([](json& j) { j["top_k"] = {17, 2}; }, "top_k 17");
    refuse([](json& j) { j["top_k"] = {0, 2}; }, "top_k 0");
    refuse(
        [](json& j) {
          j["allocation"]["method"] = "greedy";
          j["allocation"]["probe_error"] = {std::vector<double>(16, 0.1), std::vector<double>(3, 0.1)};
        },
        "allocation.probe_error[1]");
  }
};

QTEST_GUILESS_MAIN(TestLayerBudget)
#include "test_layer_budget.moc"
