// Per-layer budgets through the CLI (issue 17, method 5) on a tiny random
// GPT-2 (2 layers, d_model 64, d_ff 256, ReLU): record, split into 16
// experts, `route --budget 0.25 --allocate activity|greedy`, and eval of the
// routers (no sweep: each layer at its allocated k). The activity allocation
// is checked against scripts/ref/layer_budget_ref.py on the same recording;
// eval's measured FFN FLOP fraction must not exceed the budget. Bad budgets
// exit 2 with one line naming --budget.
#include <QtTest>
#include <nlohmann/json.hpp>

#include "analysis/common/runtime.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "testutil.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace test = moefy::test;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

// Runs moefy with --json: its parsed stdout, or null (the failure logged).
json cliJson(QStringList args) {
  args << "--json";
  const test::RunResult r = test::runCli(args);
  if (r.exitCode == 0) return json::parse(r.out);
  qWarning() << args << "exit" << r.exitCode << r.err.c_str();
  return nullptr;
}

// The eval's measured fraction may exceed the planned one only by float
// rounding: every expert of the coact split holds 256 / 16 = 16 neurons, so
// the neurons that ran are exactly k 16 per token and layer.
constexpr double kRounding = 1e-9;

}  // namespace

class TestLayerBudgetCli : public QObject {
  Q_OBJECT
  fs::path root, model, rec, part, ids;

 private Q_SLOTS:
  void initTestCase() {
    moefy::configureRuntime();
    root = test::freshDir("layer_budget_cli");
    model = root / "model";
    const fs::path ref = test::sourceDir() / "scripts" / "ref";
    auto fx = test::runPython({q(ref / "moe_fixtures.py"), "model", "gpt2", q(model), "--seed", "3"});
    QVERIFY2(fx.exitCode == 0, fx.err.c_str());
    // The recording's token sequences, and held-out ids for eval (one sequence per line).
    auto py = test::runPython({"-c",
                               "import sys; sys.path.insert(0, sys.argv[1]); import st_io, numpy as np\n"
                               "rng = np.random.RandomState(5)\n"
                               "ids = rng.randint(0, 96, size=(48, 16)).astype(np.int64)\n"
                               "st_io.write(sys.argv[2], [('token_ids', 'I64', ids)])\n"
                               "held = rng.randint(0, 96, size=(10, 40))\n"
                               "open(sys.argv[3], 'w').write(''.join(' '.join(map(str, r)) + '\\n' for r in held))\n",
                               q(ref), q(root / "corpus.safetensors"), q(root / "held.ids")});
    QVERIFY2(py.exitCode == 0, py.err.c_str());
    rec = root / "rec";
    auto rr = test::runCli({"record", q(model), q(root / "corpus.safetensors"), "--out", q(rec), "--seq-len", "16",
                            "--samples", "400", "--quiet"});
    QVERIFY2(rr.exitCode == 0, rr.err.c_str());
    part = root / "part";
    QVERIFY(
        cliJson({"split", q(rec), "--method", "coact", "--experts", "16", "--out", q(part), "--quiet"}).is_object());
    ids = root / "held.ids";
  }

  // route --budget 0.25 --allocate activity: top_k equal to numpy's
  // allocation of the same recording, the allocation block, and eval's
  // measured FLOP fraction <= 0.25.
  void activityAllocation() {
    auto r = cliJson({"route", q(model), q(rec), q(part), "--router", "similarity", "--budget", "0.25", "--allocate",
                      "activity", "--out", q(root / "r_act"), "--quiet"});
    QVERIFY(r.is_object());
    auto ref = test::runPython({q(test::sourceDir() / "scripts" / "ref" / "layer_budget_ref.py"), "recording", q(rec),
                                q(part / "partition.json"), "64", "256", "0", "similarity", "0.25"});
    QVERIFY2(ref.exitCode == 0, ref.err.c_str());
    const json want = json::parse(ref.out);
    const json stored = moefy::readJsonFile(root / "r_act" / "router.json");
    qInfo() << "activity" << want["activity"].dump().c_str() << "-> numpy k" << want["k"].dump().c_str()
            << "router.json top_k" << stored["top_k"].dump().c_str() << "planned fraction"
            << stored["allocation"]["flops_fraction"].get<double>() << "numpy" << want["fraction"].get<double>();
    QCOMPARE(stored["top_k"], want["k"]);
    QCOMPARE(r["top_k"], want["k"]);
    const json& a = stored["allocation"];
    QCOMPARE(a["method"].get<std::string>(), std::string("activity"));
    QCOMPARE(a["budget"].get<double>(), 0.25);
    double maxActivity = 0;
    for (size_t i = 0; i < 2; ++i)
      maxActivity = std::max(maxActivity, std::abs(a["activity"][i].get<double>() - want["activity"][i].get<double>()));
    qInfo() << "max |activity - numpy|" << maxActivity;
    QVERIFY(maxActivity <= 1e-12);
    QVERIFY(std::abs(a["flops_fraction"].get<double>() - want["fraction"].get<double>()) <= 1e-12);
    // 2 layers: one expert each costs 2 (2 * 64 * 16 + 64 * 16) of 2 * 32768;
    // 0.25 leaves room for 5 more of 2048 each: 7 experts in all, exactly 0.25.
    QCOMPARE(want["k"][0].get<int>() + want["k"][1].get<int>(), 7);
    // Eval at the allocated k: the FLOPs that ran.
    auto ev = cliJson({"eval", q(model), q(ids), "--partition", q(part), "--router", q(root / "r_act")});
    QVERIFY(ev.is_object());
    const json& res = ev["results"][0];
    QCOMPARE(res["top_k"], want["k"]);
    const double measured = res["ffn_flops_fraction"].get<double>();
    qInfo() << "eval: measured FFN FLOP fraction" << measured << "(budget 0.25, tolerance" << kRounding << "), layers"
            << res["layer_ffn_flops_fraction"].dump().c_str() << "perplexity" << res["perplexity"].get<double>()
            << "dense" << ev["reference"]["perplexity"].get<double>();
    QVERIFY(measured <= 0.25 + kRounding);
    QVERIFY(std::abs(measured - a["flops_fraction"].get<double>()) <= kRounding);
  }

  // --allocate greedy: within the budget, one probe curve of 16 errors per
  // layer, the allocated k where the probe put it, eval within the budget.
  void greedyAllocation() {
    auto r = cliJson({"route", q(model), q(rec), q(part), "--router", "similarity", "--budget", "0.25", "--allocate",
                      "greedy", "--out", q(root / "r_greedy"), "--quiet"});
    QVERIFY(r.is_object());
    const json& a = r["allocation"];
    qInfo() << "greedy: top_k" << r["top_k"].dump().c_str() << "planned fraction" << a["flops_fraction"].get<double>()
            << "probe errors at k" << a["probe_error"][0][r["top_k"][0].get<int>() - 1].get<double>()
            << a["probe_error"][1][r["top_k"][1].get<int>() - 1].get<double>();
    QCOMPARE(a["method"].get<std::string>(), std::string("greedy"));
    QCOMPARE(a["probe_error"].size(), size_t(2));
    QCOMPARE(a["probe_error"][0].size(), size_t(16));
    // All 16 experts reproduce the dense FFN.
    QVERIFY(a["probe_error"][0][15].get<double>() < 1e-4 && a["probe_error"][1][15].get<double>() < 1e-4);
    QVERIFY(a["flops_fraction"].get<double>() <= 0.25 + kRounding);
    QCOMPARE(r["top_k"][0].get<int>() + r["top_k"][1].get<int>(), 7);  // the whole budget (see above)
    auto ev = cliJson({"eval", q(model), q(ids), "--partition", q(part), "--router", q(root / "r_greedy")});
    QVERIFY(ev.is_object());
    const double measured = ev["results"][0]["ffn_flops_fraction"].get<double>();
    qInfo() << "greedy eval: measured FFN FLOP fraction" << measured;
    QVERIFY(measured <= 0.25 + kRounding);
  }

  // Bad budgets: exit 2, one line naming --budget, nothing written.
  void badBudgets() {
    auto expect2 = [&](QStringList extra, const std::string& needle) {
      const fs::path out = root / "r_bad";
      QStringList args{"route", q(model), q(rec), q(part), "--router", "similarity"};
      args << extra << "--out" << q(out) << "--quiet";
      auto r = test::runCli(args);
      std::string err = r.err;
      while (!err.empty() && err.back() == '\n') err.pop_back();
      qInfo() << extra << "-> exit" << r.exitCode << err.c_str();
      QCOMPARE(r.exitCode, 2);
      QVERIFY2(err.find('\n') == std::string::npos, err.c_str());  // one line
      QVERIFY2(err.rfind("moefy route: ", 0) == 0, err.c_str());
      QVERIFY2(err.find(needle) != std::string::npos, err.c_str());
      QVERIFY(!fs::exists(out));
    };
    expect2({"--budget", "0"}, "--budget");
    expect2({"--budget=-0.1"}, "--budget");
    expect2({"--budget", "1.5"}, "--budget");
    // One expert per layer is (2 * 64 * 16 + 64 * 16) / (2 * 64 * 256) = 0.09375 of dense.
    expect2({"--budget", "0.05"}, "--budget 0.05 is below 0.09375");
    expect2({"--budget", "0.05", "--allocate", "greedy"}, "--budget 0.05 is below 0.09375");
    expect2({"--budget", "0.25", "--top-k", "4"}, "--budget");
    expect2({"--allocate", "greedy"}, "--allocate needs --budget");
  }
};

QTEST_GUILESS_MAIN(TestLayerBudgetCli)
#include "test_layer_budget_cli.moc"
