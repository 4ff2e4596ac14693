// `moefy analyze` against the independent float64 reference
// scripts/ref/analyze_ref.py (numpy + scipy: linear_sum_assignment,
// kendalltau, linregress; PCA by SVD) on small random native MoE checkpoints
// written by scripts/ref/make_checkpoint.py: a Mixtral (2 MoE layers, 4
// experts of 48 neurons, top-2) and a Qwen2-MoE (MoE layers 0, 2, 3 around a
// dense layer 1, shared expert). Every tensor of analysis.safetensors must be
// in the reference with the same shape and vice versa. Tolerances: the static
// analyses (similarities, matching, tau, router, PCA) 1e-8, both sides being
// float64 computations on the same float32 weights; the dynamic ones (output
// similarity, usage shares, co-occurrence, channel usage) 1e-4, moefy's
// forward pass being float32; the discrete results (matching permutations,
// rank counts, chosen experts, transitions, token ids) exactly, the reference
// checking that their deciding margins are far above float32 rounding. The
// JSON scalars (router R², PCA explained shares, output similarity, top-1 =
// largest norm share, usage perplexity, dead share, overlap) at the same
// tolerances. Prints the max difference of each group.
#include <QtTest>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/analyze/moe_analysis.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

namespace {

constexpr double kStaticTol = 1e-8;
constexpr double kDynamicTol = 1e-4;
const char* kVariants[] = {"mixtral", "qwen2_moe"};
const char* kFireEps = "0.05";

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

bool isDynamic(const std::string& name) {
  for (const char* tail : {".output_sim", ".usage", ".cooccurrence", ".channel_usage"})
    if (name.size() >= std::string(tail).size() &&
        name.compare(name.size() - std::string(tail).size(), std::string::npos, tail) == 0)
      return true;
  return false;
}

double maxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  if (d.numel() == 0) return 0;
  const double m = d.max().item<double>();
  return std::isnan(m) ? std::numeric_limits<double>::infinity() : m;
}

// Max |a - b| over the numbers of two JSON values of the same structure;
// infinity when the structure differs (a key missing, a number against null).
double jsonDiff(const nlohmann::json& a, const nlohmann::json& b, const std::string& where, std::string& worst) {
  if (a.is_number() && b.is_number()) {
    const double d = std::abs(a.get<double>() - b.get<double>());
    return std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  }
  if (a.is_object() && b.is_object()) {
    double m = 0;
    for (const auto& [k, v] : b.items()) {
      const double d =
          a.contains(k) ? jsonDiff(a[k], v, where + "." + k, worst) : std::numeric_limits<double>::infinity();
      if (d > m) {
        m = d;
        if (!a.contains(k)) worst = where + "." + k + " missing";
      }
    }
    return m;
  }
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, jsonDiff(a[i], b[i], where, worst));
    return m;
  }
  if (a == b) return 0;
  worst = where + ": " + a.dump() + " vs " + b.dump();
  return std::numeric_limits<double>::infinity();
}

}  // namespace

class Analyze : public QObject {
  Q_OBJECT
  fs::path root_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("analyze_numeric");
    // Sequences shorter than --seq-len (one window each), ids < the vocabulary of 101.
    std::ofstream(root_ / "seqs.ids") << "5 17 3 99 42 7 1 64 23 11\n8 9 10 11 100 1\n33 2 71 45 12 90 6 18\n";
    nlohmann::json jobs = nlohmann::json::array();
    for (const char* v : kVariants) {
      const fs::path d = root_ / v;
      jobs.push_back({"make_checkpoint", v, (d / "model").string()});
      jobs.push_back({"analyze_ref", (d / "model").string(), "--ids-file", (root_ / "seqs.ids").string(), "--out",
                      (d / "ref.safetensors").string(), "--fire-eps", kFireEps});
    }
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({qs(sourceDir() / "scripts" / "ref" / "batch.py"), qs(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    qInfo("%s", r.out.c_str());
  }

  void matchesReference_data() {
    QTest::addColumn<QString>("variant");
    for (const char* v : kVariants) QTest::newRow(v) << QString(v);
  }

  void matchesReference() {
    QFETCH(QString, variant);
    const fs::path d = root_ / variant.toStdString();
    auto r = runCli({"analyze", qs(d / "model"), qs(root_ / "seqs.ids"), "--out", qs(d / "analysis"), "--fire-eps",
                     kFireEps, "--quiet"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const MoeAnalysis a = readMoeAnalysis(d / "analysis");
    const auto ref = SafetensorsFile::open(d / "ref.safetensors");
    const nlohmann::json refJson = readJsonFile(d / "ref.json");

    std::set<std::string> ours, theirs;
    for (const auto& t : a.file->tensors()) ours.insert(t.name);
    for (const auto& t : ref->tensors()) theirs.insert(t.name);
    for (const auto& n : theirs) QVERIFY2(ours.count(n), ("missing in analysis.safetensors: " + n).c_str());
    for (const auto& n : ours) QVERIFY2(theirs.count(n), ("not in the reference: " + n).c_str());

    double staticMax = 0, dynamicMax = 0, discreteMax = 0;
    std::string staticWorst, dynamicWorst;
    for (const auto& info : ref->tensors()) {
      const at::Tensor want = ref->raw(info.name), got = a.tensor(info.name);
      QVERIFY2(got.sizes() == want.sizes(),
               (info.name + ": shape " + shapeString(got) + " vs reference " + shapeString(want)).c_str());
      const double diff = maxAbsDiff(got, want);
      if (!at::isFloatingType(want.scalar_type())) {
        discreteMax = std::max(discreteMax, diff);
        QVERIFY2(diff == 0,
                 (info.name + ": integer tensor differs from the reference by " + std::to_string(diff)).c_str());
      } else if (isDynamic(info.name)) {
        if (diff >= dynamicMax) dynamicWorst = info.name;
        dynamicMax = std::max(dynamicMax, diff);
      } else {
        if (diff >= staticMax) staticWorst = info.name;
        staticMax = std::max(staticMax, diff);
      }
    }
    qInfo("%s: max abs diff static %.3g (%s), dynamic %.3g (%s), discrete %.3g", qPrintable(variant), staticMax,
          staticWorst.c_str(), dynamicMax, dynamicWorst.c_str(), discreteMax);
    QVERIFY2(staticMax <= kStaticTol, qPrintable(QString("static max diff %1 > %2").arg(staticMax).arg(kStaticTol)));
    QVERIFY2(dynamicMax <= kDynamicTol,
             qPrintable(QString("dynamic max diff %1 > %2").arg(dynamicMax).arg(kDynamicTol)));

    // JSON scalars: per site the static ones (router R², PCA explained) and the dynamic block.
    double staticJson = 0, dynamicJson = 0;
    std::string worst;
    for (const auto& [site, s] : refJson["sites"].items()) {
      QVERIFY2(a.meta["sites"].contains(site), ("analysis.json lacks site " + site).c_str());
      const nlohmann::json& mine = a.meta["sites"][site];
      staticJson = std::max(staticJson, jsonDiff(mine["router_r2"], s["router_r2"], site + ".router_r2", worst));
      staticJson = std::max(staticJson, jsonDiff(mine["pca_explained"], s["pca_explained"], site + ".pca", worst));
      dynamicJson = std::max(dynamicJson, jsonDiff(mine["dynamic"], s["dynamic"], site + ".dynamic", worst));
    }
    QCOMPARE(a.meta["sites"].size(), refJson["sites"].size());
    dynamicJson = std::max(
        dynamicJson, std::abs(a.meta["top1_norm_share"].get<double>() - refJson["top1_norm_share"].get<double>()));
    QCOMPARE(a.meta["corpus"]["tokens"].get<int64_t>(), refJson["tokens"].get<int64_t>());
    qInfo("%s: analysis.json max abs diff static %.3g, dynamic %.3g %s", qPrintable(variant), staticJson, dynamicJson,
          worst.c_str());
    QVERIFY2(staticJson <= kStaticTol, worst.c_str());
    QVERIFY2(dynamicJson <= kDynamicTol, worst.c_str());

    // Internal consistency the reference comparison would not show if both were wrong alike.
    const int64_t N = refJson["tokens"].get<int64_t>();
    const int64_t k = a.meta["model"]["top_k"].get<int64_t>();
    for (const auto& [site, s] : a.meta["sites"].items()) {
      QCOMPARE(a.tensor(site + ".rank_counts").sum().item<int64_t>(), N * a.meta["model"]["experts"].get<int64_t>());
      QCOMPARE(a.tensor(site + ".chosen").to(at::kLong).sum(1).eq(k).all().item<bool>(), true);
      QVERIFY(std::abs(a.tensor(site + ".usage").sum().item<double>() - 1.0) < 1e-12);
      QCOMPARE(a.tensor(site + ".match_tau").diagonal().eq(1.0).all().item<bool>(), true);
    }
  }
};

QTEST_GUILESS_MAIN(Analyze)
#include "test_analyze.moc"
