// moefy front end to end on the bundled tiny model (4 layers, d_model 256,
// d_ff 1024) with small token counts: it writes a valid front.json whose
// numbers equal those of the corresponding `moefy eval` runs on the
// artefacts it wrote, each operating point within its FLOP budget, the best
// method named per budget; per-layer points spend at most their budget with
// each layer at its allocated k; a front on a reused recording (--recording)
// equals the one that recorded; the reader refuses a corrupted front.json by
// name; bad options exit 2 with one line.
#include <torch/torch.h>

#include <QtTest>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/common/options.h"
#include "analysis/eval/front.h"
#include "analysis/io/fsutil.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

json readJson(const fs::path& p) { return json::parse(readFile(p)); }

QString sweepText(const std::vector<double>& sweep) {
  QStringList items;
  for (double f : sweep) {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", f);
    items << b;
  }
  return items.join(",");
}

// The tolerance of "equal": the front and `moefy eval` run the same code on
// the same sequences; only the thread scheduling of the MoE kernel's
// per-thread output buffers may differ between the processes.
constexpr double kRelTol = 1e-6;

double relDiff(double a, double b) { return std::abs(a - b) / std::max(1e-12, std::abs(b)); }

}  // namespace

class TestFront : public QObject {
  Q_OBJECT
  fs::path root, front, model, train, heldout;
  QStringList common;

 private Q_SLOTS:
  void initTestCase() {
    model = test::sourceDir() / "data" / "models" / "brown-relu";
    train = test::sourceDir() / "data" / "corpus" / "brown" / "train";
    heldout = test::sourceDir() / "data" / "corpus" / "brown" / "heldout";
    if (!fs::exists(model / "config.json")) QFAIL("the bundled model data/models/brown-relu is missing");
    root = test::freshDir("front");
    front = root / "front";
    common = {"--seq-len", "64", "--split", "all", "--seed", "0"};
    QStringList args{"front",         q(model), q(train),   q(heldout), "--out",     q(front),
                     "--experts",     "16",     "--tokens", "2048",     "--samples", "512",
                     "--eval-tokens", "512",    "--epochs", "2",        "--quiet"};
    args << common;
    auto r = test::runCli(args, 600);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo().noquote() << QString::fromStdString(r.out);
    QVERIFY(r.out.find("dense perplexity") != std::string::npos);
    QVERIFY(r.out.find("best at 0.2500: ") != std::string::npos);
  }

  void frontIsValidAndWithinBudgets() {
    const FrontResult f = readFront(front);
    QCOMPARE(f.budgets, (std::vector<double>{0.125, 0.25, 0.5}));
    QCOMPARE(f.experts, 16);
    QVERIFY(f.densePerplexity > 1);
    for (const char* name : {"plain", "per-layer", "shared", "dynamic-k", "bound"}) QVERIFY2(f.method(name), name);
    QCOMPARE(f.methods[1].name, std::string("per-layer"));
    QCOMPARE(f.methods.back().name, std::string("bound"));
    // plain at 0.5 is always reachable (k = 7 of 16: 0.4375 + the router's 0.008).
    QVERIFY(FrontResult::pointAt(*f.method("plain"), 0.5));
    // plain, worked by hand from docs/moe.md "Compute accounting" (d_model 256,
    // d_ff 1024, E 16, plain ReLU FFN, mlp router): FLOPs(k) = k / 16 + (256 * 16
    // + 16^2) / (2 * 256 * 1024) = k / 16 + 0.00830078125, so the largest k
    // within 12.5 %, 25 % and 50 % is 1, 3 and 7.
    {
      const FrontMethod& plain = *f.method("plain");
      const double router = (256.0 * 16 + 16 * 16) / (2.0 * 256 * 1024);
      const int expectK[] = {1, 3, 7};
      QCOMPARE(plain.points.size(), size_t(3));
      for (int i = 0; i < 3; ++i) {
        QCOMPARE(plain.points[i].fraction, expectK[i] / 16.0);
        const double d = std::abs(plain.points[i].ffnFlopsFraction - (expectK[i] / 16.0 + router));
        qInfo("plain at %.3f: k %d, FLOPs %.10f, |FLOPs - hand formula| %.3g", plain.points[i].budget, expectK[i],
              plain.points[i].ffnFlopsFraction, d);
        QVERIFY(d < 1e-12);
      }
    }
    for (const auto& m : f.methods) {
      for (const auto& p : m.points) {
        qInfo("%-10s budget %.4f: FLOPs %.4f, k/E %.4f, mean k %.3f, ppl %.3f, top-1 %.4f", m.name.c_str(), p.budget,
              p.ffnFlopsFraction, p.fraction, p.meanK, p.perplexity, p.top1Agreement);
        if (m.name == "bound") {
          QCOMPARE(p.fraction, p.budget);
          QVERIFY(p.ffnFlopsFraction > 0.5);  // the dense hidden it needs, then W2 on the kept neurons
        } else {
          QVERIFY2(p.ffnFlopsFraction <= p.budget + 1e-9, m.name.c_str());
          // plain: the largest k within the budget, so one expert more (1/16
          // of d_ff) would be over it.
          if (m.name == "plain" && p.fraction < 1) QVERIFY(p.ffnFlopsFraction + 1.0 / 16 > p.budget);
          if (m.name == "plain") QCOMPARE(p.meanK, p.fraction * 16);
          if (m.name == "dynamic-k") QVERIFY(p.meanK <= p.fraction * 16 + 1e-9);
          if (m.name == "per-layer") {
            // Its own router, whose stored allocation planned exactly the FLOPs eval measured.
            QCOMPARE(p.routerDir, m.routerDir + "/" + formatReal(p.budget));
            const json rj = readJson(front / p.routerDir / "router.json");
            const json& alloc = rj.at("allocation");
            QCOMPARE(alloc.at("budget").get<double>(), p.budget);
            QCOMPARE(alloc.at("method").get<std::string>(), std::string("activity"));
            const double d = std::abs(alloc.at("flops_fraction").get<double>() - p.ffnFlopsFraction);
            qInfo("per-layer at %.3f: planned vs measured FLOPs |diff| %.3g", p.budget, d);
            QVERIFY(d < 1e-9);
            QCOMPARE(p.meanK, p.fraction * 16);
          } else {
            QVERIFY(p.routerDir.empty());
          }
        }
      }
    }
    // Best per budget: the lowest perplexity among the methods (the bound excluded).
    for (size_t i = 0; i < f.budgets.size(); ++i) {
      std::string best;
      double ppl = 0;
      for (const auto& m : f.methods) {
        if (m.name == "bound") continue;
        if (const FrontPoint* p = FrontResult::pointAt(m, f.budgets[i]))
          if (best.empty() || p->perplexity < ppl) best = m.name, ppl = p->perplexity;
      }
      QCOMPARE(f.best[i].method, best);
      qInfo("best at %.4f: %s", f.budgets[i], best.c_str());
    }
    QCOMPARE(FrontResult::pointAt(*f.method("plain"), 0.5)->perplexity, f.best[2].plainPerplexity);
    for (const char* fig : {"front_perplexity.svg", "front_top1.svg"})
      QVERIFY2(readFile(front / fig).find("<svg") != std::string::npos, fig);
    for (const char* fig : {"front_perplexity.png", "front_top1.png"})
      QCOMPARE(readFile(front / fig).substr(1, 3), std::string("PNG"));
    QCOMPARE(artefactKindOf(front), std::string("front"));
  }

  void numbersEqualEvalRuns() {
    const FrontResult f = readFront(front);
    double maxDiff = 0;
    int compared = 0;
    for (const auto& m : f.methods) {
      QStringList args{"eval", q(model), q(heldout), "--tokens", "512", "--json", "--quiet"};
      args << common;
      if (m.name == "per-layer") {
        // One `moefy eval` per point: its router at its own per-layer k.
        for (const auto& p : m.points) {
          QStringList one = args;
          one << "--partition" << q(front / m.partition) << "--router" << q(front / p.routerDir);
          auto r = test::runCli(one, 600);
          QVERIFY2(r.exitCode == 0, r.err.c_str());
          const json ev = json::parse(r.out);
          QCOMPARE(ev["results"].size(), size_t(1));
          const json& res = ev["results"][0];
          QCOMPARE(res["fraction"].get<double>(), p.fraction);
          for (auto [key, v] : {std::pair<const char*, double>{"perplexity", p.perplexity},
                                {"top1_agreement", p.top1Agreement},
                                {"ffn_flops_fraction", p.ffnFlopsFraction}}) {
            const double d = relDiff(v, res[key].get<double>());
            maxDiff = std::max(maxDiff, d);
            QVERIFY2(d <= kRelTol, (m.name + " " + key).c_str());
            ++compared;
          }
        }
        continue;
      }
      if (m.name == "bound") {
        args << "--bound"
             << "topk-act";
      } else {
        args << "--partition" << q(front / m.partition) << "--router" << q(front / m.routerDir);
      }
      args << "--sweep" << sweepText(m.sweep);
      auto r = test::runCli(args, 600);
      QVERIFY2(r.exitCode == 0, r.err.c_str());
      const json ev = json::parse(r.out);
      QVERIFY(relDiff(ev["reference"]["perplexity"].get<double>(), f.densePerplexity) <= kRelTol);
      for (const auto& p : m.points) {
        const json* hit = nullptr;
        for (const auto& res : ev["results"])
          if (res["fraction"].get<double>() == p.fraction) hit = &res;
        QVERIFY2(hit, (m.name + ": no eval result at its fraction").c_str());
        for (auto [key, v] : {std::pair<const char*, double>{"perplexity", p.perplexity},
                              {"top1_agreement", p.top1Agreement},
                              {"ffn_flops_fraction", p.ffnFlopsFraction}}) {
          const double d = relDiff(v, (*hit)[key].get<double>());
          maxDiff = std::max(maxDiff, d);
          QVERIFY2(d <= kRelTol, (m.name + " " + key).c_str());
          ++compared;
        }
      }
    }
    qInfo("front vs moefy eval: %d numbers, max relative difference %.3g (tolerance %.0e)", compared, maxDiff, kRelTol);
    QVERIFY(compared >= 12);
  }

  // --recording: the same recording, seed and options give the same partition,
  // routers and numbers as the front that recorded it; nothing is recorded.
  void reusedRecordingGivesTheSameFront() {
    const fs::path again = root / "again";
    QStringList args{"front",         q(model),
                     q(train),        q(heldout),
                     "--out",         q(again),
                     "--experts",     "16",
                     "--recording",   q(front / "recording"),
                     "--methods",     "plain,per-layer",
                     "--eval-tokens", "512",
                     "--epochs",      "2",
                     "--quiet"};
    args << common;
    auto r = test::runCli(args, 600);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY(!fs::exists(again / "recording"));
    const FrontResult a = readFront(front), b = readFront(again);
    QCOMPARE(b.document["recording"].get<std::string>(), (front / "recording").lexically_normal().string());
    QCOMPARE(a.document["recording"].get<std::string>(), std::string("recording"));
    // The reused recording's own counts, not the option defaults.
    QCOMPARE(b.document["options"]["record_tokens"].get<int64_t>(), int64_t{2048});
    QCOMPARE(b.document["options"]["samples"].get<int64_t>(), int64_t{512});
    double maxDiff = 0;
    for (const char* name : {"plain", "per-layer"}) {
      const FrontMethod &ma = *a.method(name), &mb = *b.method(name);
      QCOMPARE(mb.points.size(), ma.points.size());
      for (size_t i = 0; i < ma.points.size(); ++i) {
        QCOMPARE(mb.points[i].fraction, ma.points[i].fraction);
        maxDiff = std::max(maxDiff, relDiff(mb.points[i].perplexity, ma.points[i].perplexity));
      }
    }
    qInfo("reused recording vs recorded: max relative perplexity difference %.3g (tolerance %.0e)", maxDiff, kRelTol);
    QVERIFY(maxDiff <= kRelTol);
  }

  void readerRefusesCorruption() {
    const json good = readJson(front / "front.json");
    auto refuse = [&](const std::string& what, const std::function<void(json&)>& edit, const std::string& key) {
      const fs::path dir = root / ("bad-" + what);
      fs::create_directories(dir);
      json bad = good;
      edit(bad);
      writeFileAtomic(dir / "front.json", bad.dump(2));
      try {
        readFront(dir);
        QFAIL(("accepted a front.json with " + what).c_str());
      } catch (const FormatError& e) {
        const std::string msg = e.what();
        qInfo() << "refused:" << msg.c_str();
        QVERIFY2(msg.find("front.json") != std::string::npos, msg.c_str());
        QVERIFY2(msg.find(key) != std::string::npos, msg.c_str());
        QVERIFY(msg.find('\n') == std::string::npos);
      }
    };
    refuse(
        "string-perplexity", [](json& j) { j["methods"][0]["points"][0]["perplexity"] = "low"; },
        "methods[0].points[0].perplexity");
    refuse(
        "top1-above-one", [](json& j) { j["methods"][0]["points"][0]["top1_agreement"] = 1.5; }, "top1_agreement");
    refuse(
        "unknown-method", [](json& j) { j["methods"][1]["name"] = "magic"; }, "methods[1].name");
    refuse(
        "best-not-a-method", [](json& j) { j["best"][1]["method"] = "bound"; }, "best[1].method");
    refuse(
        "budget-zero", [](json& j) { j["budgets"][0] = 0; }, "budgets[0]");
    refuse(
        "no-dense", [](json& j) { j.erase("dense"); }, "dense");
    refuse(
        "wrong-format", [](json& j) { j["format"] = "moefy-eval"; }, "format");
    refuse(
        "missing-point", [](json& j) { j["methods"][0]["points"].erase(0); }, "methods[0]");
  }

  void badOptionsExitTwo() {
    const fs::path out = root / "never";
    auto bad = [&](const QStringList& extra, const std::string& expect) {
      QStringList args{"front", q(model), q(train), q(heldout), "--out", q(out), "--quiet"};
      args << extra;
      auto r = test::runCli(args, 60);
      qInfo() << extra << "->" << r.exitCode << r.err.c_str();
      QCOMPARE(r.exitCode, 2);
      QVERIFY2(r.err.find(expect) != std::string::npos, r.err.c_str());
      QCOMPARE(std::count(r.err.begin(), r.err.end(), '\n'), 1L);
      QVERIFY(!fs::exists(out));
    };
    bad({"--budgets", "0"}, "--budgets: '0'");
    bad({"--budgets", "0.25,1.5"}, "--budgets: '1.5'");
    bad({"--budgets", "0.25,,0.5"}, "--budgets");
    bad({"--methods", "plain,magic"}, "unknown method 'magic'");
    bad({"--methods", "plain,plain"}, "'plain' given twice");
    bad({"--experts", "0"}, "--experts");
    bad({"--allocate", "evenly"}, "--allocate");
    bad({"--recording", q(front / "recording"), "--tokens", "100"}, "--tokens: not used with --recording");
    bad({"--recording", q(front / "recording"), "--tokens", "100", "--samples", "9"},
        "--tokens and --samples: not used with --recording");
    // A recording of another corpus than TRAIN_CORPUS.
    {
      QStringList args{
          "front", q(model), q(heldout), q(heldout), "--out", q(out), "--recording", q(front / "recording"), "--quiet"};
      auto r = test::runCli(args, 120);
      qInfo() << "recording of another corpus ->" << r.exitCode << r.err.c_str();
      QCOMPARE(r.exitCode, 2);
      QVERIFY2(r.err.find("--recording") != std::string::npos && r.err.find("not TRAIN_CORPUS") != std::string::npos,
               r.err.c_str());
      QVERIFY(!fs::exists(out));
    }
  }
};

QTEST_GUILESS_MAIN(TestFront)
#include "test_front.moc"
