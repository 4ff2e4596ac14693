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
#include "analysis/checkpoint/loader.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/moe/moe_ffn.h"
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

// Max |a - b|; NaN entries must be NaN on both sides (infinity otherwise).
double maxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  if (!at::equal(x.isnan(), y.isnan())) return std::numeric_limits<double>::infinity();
  at::Tensor d = (at::nan_to_num(x, 0.0) - at::nan_to_num(y, 0.0)).abs();
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

  // MoE exports: build them through the CLI from the fixtures, analyse, compare with the reference.
  void exportMatchesReference_data() {
    QTest::addColumn<QString>("variant");
    QTest::addColumn<bool>("oracle");
    // Partitions of this project always have equal-size experts (the partition
    // reader refuses others), so the exports here do too.
    QTest::newRow("llama_similarity") << QString("llama") << false;
    QTest::newRow("llama_oracle") << QString("llama") << true;
    QTest::newRow("gpt2_shared_sigmoid") << QString("gpt2") << false;
  }

  void exportMatchesReference() {
    QFETCH(QString, variant);
    QFETCH(bool, oracle);
    const fs::path d = root_ / ("export_" + variant.toStdString());
    const fs::path moeDir = d / "moe";
    auto py = [](const QStringList& args) { return moefy::test::runFixture(args); };
    auto cli = [](const QStringList& args, std::string* out = nullptr) { return moefy::test::runCliStep(args, out); };
    if (!fs::exists(moeDir)) {
      const bool llama = variant == "llama";
      QVERIFY(py({"model", variant, qs(d / "model"), "--seed", llama ? "5" : "7", "--d-ff", llama ? "96" : "128"}));
      std::string info;
      QVERIFY(cli({"inspect", qs(d / "model"), "--fingerprint", "--json"}, &info));
      const QString fp = QString::fromStdString(nlohmann::json::parse(info)["fingerprint"].get<std::string>());
      QVERIFY(py({"recording", qs(d / "model"), qs(d / "rec"), "--samples", "300", "--fingerprint", fp}));
      if (llama)
        QVERIFY(py({"partition", qs(d / "model"), qs(d / "part"), "--experts", "4", "--fingerprint", fp}));
      else
        QVERIFY(py(
            {"partition", qs(d / "model"), qs(d / "part"), "--experts", "4", "--shared", "32", "--fingerprint", fp}));
      QVERIFY(cli({"route", qs(d / "model"), qs(d / "rec"), qs(d / "part"), "--router",
                   llama ? "similarity" : "sigmoid", "--top-k", "2", "--out", qs(d / "router")}));
      QVERIFY(cli({"export", qs(d / "model"), qs(d / "part"), qs(d / "router"), "--out", qs(moeDir)}));
    }
    const LoadedModel loaded = loadModel(moeDir);
    auto moe = std::dynamic_pointer_cast<const MoeFfn>(loaded.model->ffnOverride());
    QVERIFY(moe);
    std::vector<int> layers;
    for (int L = 0; L < static_cast<int>(moe->layers().size()); ++L)
      if (moe->isMoe(L)) layers.push_back(L);
    QCOMPARE(layers.size(), size_t{2});
    if (variant == "gpt2") QCOMPARE(moe->layers()[0].weights->layout.sharedSize(), int64_t{32});

    // Random FFN inputs (unit scale, as after a LayerNorm), 48 tokens per layer in two batches.
    at::manual_seed(oracle ? 11 : 3);
    std::vector<std::pair<std::string, at::Tensor>> inputs;
    for (int L : layers) inputs.emplace_back("blk." + std::to_string(L) + ".x", at::randn({48, 64}, at::kFloat));
    const fs::path inputsPath = d / (oracle ? "x_oracle.safetensors" : "x.safetensors");
    writeSafetensors(inputsPath, inputs);
    const fs::path refPath = d / (oracle ? "ref_oracle.safetensors" : "ref.safetensors");
    QStringList refArgs{qs(sourceDir() / "scripts" / "ref" / "analyze_ref.py"),
                        "export",
                        qs(moeDir),
                        "--inputs",
                        qs(inputsPath),
                        "--out",
                        qs(refPath),
                        "--fire-eps",
                        kFireEps};
    if (oracle) refArgs << "--oracle";
    auto rr = runPython(refArgs);
    QVERIFY2(rr.exitCode == 0, (rr.out + rr.err).c_str());
    qInfo("%s", rr.out.c_str());

    AnalyzeOptions o;
    o.fireEps = std::stod(kFireEps);
    NamedTensors ours;
    JobContext job;
    nlohmann::json sites = nlohmann::json::object();
    for (int L : layers) sites["blk." + std::to_string(L)] = exportStaticAnalysis(*moe, L, o, ours, job);
    ExportDynamics dyn(oracle ? withOracleRouters(*moe) : moe, layers, o.fireEps);
    for (int half = 0; half < 2; ++half)
      for (size_t i = 0; i < layers.size(); ++i) dyn.add(layers[i], inputs[i].second.narrow(0, half * 24, 24));
    const nlohmann::json dynJson = dyn.finish(48, ours);

    const auto ref = SafetensorsFile::open(refPath);
    const nlohmann::json refJson = readJsonFile(refPath.parent_path() / (refPath.stem().string() + ".json"));
    std::map<std::string, at::Tensor> mine(ours.begin(), ours.end());
    for (const auto& info : ref->tensors()) QVERIFY2(mine.count(info.name), ("missing in ours: " + info.name).c_str());
    for (const auto& [n, t] : mine) QVERIFY2(ref->contains(n), ("not in the reference: " + n).c_str());
    double staticMax = 0, dynamicMax = 0;
    std::string staticWorst, dynamicWorst;
    int nanEntries = 0;
    for (const auto& info : ref->tensors()) {
      const at::Tensor want = ref->raw(info.name), got = mine.at(info.name);
      QVERIFY2(got.sizes() == want.sizes(),
               (info.name + ": shape " + shapeString(got) + " vs reference " + shapeString(want)).c_str());
      const double diff = maxAbsDiff(got, want);
      if (!at::isFloatingType(want.scalar_type())) {
        QVERIFY2(diff == 0, (info.name + ": integer tensor differs from the reference").c_str());
        continue;
      }
      nanEntries += static_cast<int>(want.isnan().sum().item<int64_t>());
      if (isDynamic(info.name)) {
        if (diff >= dynamicMax) dynamicWorst = info.name;
        dynamicMax = std::max(dynamicMax, diff);
      } else {
        if (diff >= staticMax) staticWorst = info.name;
        staticMax = std::max(staticMax, diff);
      }
    }
    double staticJson = 0, dynamicJson = 0;
    std::string worst;
    for (const auto& [site, s] : refJson["sites"].items()) {
      const nlohmann::json& m = sites[site];
      staticJson = std::max(staticJson, jsonDiff(m["router_r2"], s["router_r2"], site + ".router_r2", worst));
      staticJson = std::max(staticJson, jsonDiff(m["pca_explained"], s["pca_explained"], site + ".pca", worst));
      staticJson = std::max(staticJson, jsonDiff(m["expert_sizes"], s["expert_sizes"], site + ".sizes", worst));
      staticJson = std::max(staticJson, jsonDiff(m["shared_expert"], s["shared_expert"], site + ".shared", worst));
      dynamicJson = std::max(dynamicJson, jsonDiff(dynJson["sites"][site], s["dynamic"], site + ".dynamic", worst));
    }
    dynamicJson = std::max(
        dynamicJson, std::abs(dynJson["top1_norm_share"].get<double>() - refJson["top1_norm_share"].get<double>()));
    qInfo(
        "%s: max abs diff static %.3g (%s), dynamic %.3g (%s), analysis.json static %.3g, dynamic %.3g; "
        "%d NaN entries (pairs of unequal size) %s",
        QTest::currentDataTag(), staticMax, staticWorst.c_str(), dynamicMax, dynamicWorst.c_str(), staticJson,
        dynamicJson, nanEntries, worst.c_str());
    QVERIFY2(staticMax <= kStaticTol, qPrintable(QString("static max diff %1 > %2").arg(staticMax).arg(kStaticTol)));
    // The dynamic analyses of an export are float64 computations on the same inputs: the static tolerance.
    QVERIFY2(dynamicMax <= kStaticTol, qPrintable(QString("dynamic max diff %1 > %2").arg(dynamicMax).arg(kStaticTol)));
    QVERIFY2(staticJson <= kStaticTol, worst.c_str());
    QVERIFY2(dynamicJson <= kStaticTol, worst.c_str());

    // What each variant is there to exercise.
    if (variant == "llama") {
      QCOMPARE(nanEntries, 0);
      QVERIFY(mine.count("blk.0.match_perm") && mine.count("blk.0.pca.experts") && mine.count("blk.0.sim.gate"));
      QVERIFY(mine.count("blk.0.router_sim"));  // the similarity router has one centroid per expert
    } else {
      QCOMPARE(nanEntries, 0);
      QVERIFY(mine.count("blk.0.match_perm") && !mine.count("blk.0.sim.gate"));
      QCOMPARE(mine.at("blk.0.channel_usage").size(0), int64_t{4});  // the shared expert is not among them
      QCOMPARE(sites["blk.0"]["shared_expert"].get<int64_t>(), int64_t{32});
    }
    for (int L : layers) {
      const std::string site = "blk." + std::to_string(L);
      QCOMPARE(mine.at(site + ".chosen").to(at::kLong).sum(1).eq(2).all().item<bool>(), true);
      QCOMPARE(mine.at(site + ".rank_counts").sum().item<int64_t>(), int64_t{48 * 4});
    }
  }
};

QTEST_GUILESS_MAIN(Analyze)
#include "test_analyze.moc"
