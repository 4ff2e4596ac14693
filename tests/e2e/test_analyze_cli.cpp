// `moefy analyze` end to end on small random checkpoints (make_checkpoint.py):
// the weights-only run (--static-only) and its folder, --sites, and the bad
// input: a dense model, a missing CORPUS, a missing corpus file, a corpus
// with --static-only, a non-MoE or malformed site, an existing output. Every
// refusal is one line naming the culprit with exit 1 (bad data) or 2 (bad
// parameters), and leaves no output folder behind. The core entry point as a
// job: cancelled, it throws and leaves nothing; otherwise it reports stages.
// MoE exports (issue 16): a gpt2 export with a similarity router analysed with
// its router and with --router oracle (analysis.json names the model kind and
// the router), an mlp-router export whose router_sim is skipped with a
// reason; refused: an unknown --router, --router oracle on a native model, a
// site that is not MoEfied.
#include <QtTest>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/analyze/moe_analysis.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

namespace {

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

int lineCount(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

class AnalyzeCli : public QObject {
  Q_OBJECT
  fs::path root_;

  // Runs moefy analyze expecting a refusal with `code` whose one-line message contains `needle`,
  // and no folder at `out`.
  void refuses(const QStringList& args, int code, const std::string& needle, const fs::path& out) {
    auto r = runCli(QStringList{"analyze"} + args + QStringList{"--quiet"});
    QVERIFY2(r.exitCode == code, ("exit " + std::to_string(r.exitCode) + ": " + r.err).c_str());
    QVERIFY2(r.err.find(needle) != std::string::npos, ("message lacks '" + needle + "': " + r.err).c_str());
    QVERIFY2(lineCount(r.err) == 1, ("not one line: " + r.err).c_str());
    QVERIFY2(!fs::exists(out), ("left " + out.string()).c_str());
  }

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("analyze_cli");
    nlohmann::json jobs = nlohmann::json::array();
    for (const char* v : {"mixtral", "qwen2_moe", "gpt2_relu"})
      jobs.push_back({"make_checkpoint", v, (root_ / v).string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({qs(sourceDir() / "scripts" / "ref" / "batch.py"), qs(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    std::ofstream(root_ / "seqs.ids") << "5 17 3 99 42 7 1 64\n8 9 10 11 100 1\n";
  }

  void staticOnly() {
    const fs::path out = root_ / "static";
    auto r = runCli({"analyze", qs(root_ / "mixtral"), "--static-only", "--out", qs(out), "--json", "--quiet"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    QCOMPARE(artefactKindOf(out), std::string("MoE analysis"));
    const MoeAnalysis a = readMoeAnalysis(out);
    QVERIFY(a.meta["corpus"].is_null());
    QCOMPARE(a.meta["sites"].size(), size_t{2});
    QVERIFY(a.has("blk.1.sim.down") && a.has("blk.1.match_perm") && a.has("blk.0.pca.neurons"));
    QVERIFY(!a.has("blk.0.chosen") && !a.has("token_ids"));
    // E = 4 experts: [E, E] similarities with a unit diagonal; permutations [E, E, d_expert].
    const at::Tensor sim = a.tensor("blk.0.sim.gate");
    QCOMPARE(sim.sizes().vec(), (std::vector<int64_t>{4, 4}));
    QVERIFY(sim.diagonal().sub(1.0).abs().max().item<double>() < 1e-12);
    QCOMPARE(a.tensor("blk.0.match_perm").sizes().vec(), (std::vector<int64_t>{4, 4, 48}));
    // An existing analysis is replaced only with --force.
    refuses({qs(root_ / "mixtral"), "--static-only", "--out", qs(out)}, 1, "already exists", root_ / "nothing");
    r = runCli({"analyze", qs(root_ / "mixtral"), "--static-only", "--out", qs(out), "--force", "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
  }

  void sitesSelectLayers() {
    const fs::path out = root_ / "qwen_sites";
    auto r = runCli({"analyze", qs(root_ / "qwen2_moe"), qs(root_ / "seqs.ids"), "--sites", "blk.3,blk.0", "--out",
                     qs(out), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const MoeAnalysis a = readMoeAnalysis(out);
    QCOMPARE(a.meta["sites"].size(), size_t{2});
    QVERIFY(a.meta["sites"].contains("blk.0") && a.meta["sites"].contains("blk.3"));
    // Consecutive analysed layers: blk.0 -> blk.3 (blk.1 is dense, blk.2 not asked for).
    QCOMPARE(a.meta["sites"]["blk.0"]["dynamic"]["next"].get<std::string>(), std::string("blk.3"));
    QCOMPARE(a.tensor("token_ids").numel(), int64_t{14});
    QCOMPARE(a.tensor("blk.3.chosen").sizes().vec(), (std::vector<int64_t>{14, 4}));
  }

  // The core entry point as a job: a cancelled job throws CancelledError and
  // leaves no folder; a normal one reports its stages.
  void jobCancelAndStages() {
    const LoadedModel m = loadModel(root_ / "mixtral");
    JobContext cancelled;
    cancelled.cancel();
    AnalyzeOptions weightsOnly;
    weightsOnly.dynamicAnalyses = false;
    QVERIFY_THROWS_EXCEPTION(
        CancelledError, analyzeMoeModel(m, root_ / "mixtral", {}, weightsOnly, root_ / "cancelled", false, cancelled));
    QVERIFY(!fs::exists(root_ / "cancelled"));
    std::vector<std::string> stages;
    JobContext job(
        [&](const std::string& stage, double) {
          if (stages.empty() || stages.back() != stage) stages.push_back(stage);
        },
        [](const std::string&) {});
    analyzeMoeModel(m, root_ / "mixtral", root_ / "seqs.ids", AnalyzeOptions{}, root_ / "staged", false, job);
    for (const char* want : {"read corpus", "static blk.0", "static blk.1", "dynamic analyses", "write"})
      QVERIFY2(std::find(stages.begin(), stages.end(), want) != stages.end(), want);
    QCOMPARE(artefactKindOf(root_ / "staged"), std::string("MoE analysis"));
  }

  // A MoE export of a small gpt2 (4 experts of 32 neurons, top-2) built through the CLI.
  void moeExport() {
    const fs::path d = root_ / "export";
    auto py = [](const QStringList& args) { return moefy::test::runFixture(args); };
    auto cli = [](const QStringList& args, std::string* out = nullptr) { return moefy::test::runCliStep(args, out); };
    QVERIFY(py({"model", "gpt2", qs(d / "model"), "--seed", "4", "--d-ff", "128"}));
    std::string info;
    QVERIFY(cli({"inspect", qs(d / "model"), "--fingerprint", "--json"}, &info));
    const QString fp = QString::fromStdString(nlohmann::json::parse(info)["fingerprint"].get<std::string>());
    QVERIFY(py({"partition", qs(d / "model"), qs(d / "part"), "--experts", "4", "--fingerprint", fp}));
    QVERIFY(py({"recording", qs(d / "model"), qs(d / "rec"), "--samples", "300", "--fingerprint", fp}));
    for (const char* kind : {"similarity", "mlp"}) {
      QVERIFY(cli({"route", qs(d / "model"), qs(d / "rec"), qs(d / "part"), "--router", kind, "--top-k", "2", "--out",
                   qs(d / (std::string("router_") + kind))}));
      QVERIFY(cli({"export", qs(d / "model"), qs(d / "part"), qs(d / (std::string("router_") + kind)), "--out",
                   qs(d / (std::string("moe_") + kind))}));
    }
    // Ids below the fixture's vocabulary of 96.
    std::ofstream(d / "seqs.ids") << "5 17 3 42 7 1 64\n8 9 10 11 90 1\n";
    const int64_t N = 13;

    for (const bool oracle : {false, true}) {
      const fs::path out = d / (oracle ? "an_oracle" : "an_stored");
      QStringList args{"analyze", qs(d / "moe_similarity"), qs(d / "seqs.ids"), "--out", qs(out), "--quiet"};
      if (oracle)
        args << "--router"
             << "oracle";
      auto r = runCli(args);
      QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
      const MoeAnalysis a = readMoeAnalysis(out);
      QCOMPARE(a.meta["model"]["kind"].get<std::string>(), std::string("moefied export"));
      QCOMPARE(a.meta["router"]["kind"].get<std::string>(), std::string(oracle ? "oracle" : "similarity"));
      QCOMPARE(a.meta["router"]["source"].get<std::string>(), std::string(oracle ? "oracle" : "stored"));
      QCOMPARE(a.meta["sites"].size(), size_t{2});
      QCOMPARE(a.meta["model"]["experts"].get<int64_t>(), int64_t{4});
      QCOMPARE(a.meta["sites"]["blk.0"]["expert_sizes"], nlohmann::json({32, 32, 32, 32}));
      QVERIFY(a.has("blk.0.router_sim") && a.has("blk.1.match_perm") && a.has("rank_counts"));
      QVERIFY(!a.has("blk.0.sim.gate"));  // a plain FFN has no gate
      QCOMPARE(a.tensor("blk.0.sim.up").sizes().vec(), (std::vector<int64_t>{4, 4}));
      for (const char* site : {"blk.0", "blk.1"}) {
        const std::string s = site;
        QCOMPARE(a.tensor(s + ".chosen").sizes().vec(), (std::vector<int64_t>{N, 4}));
        QCOMPARE(a.tensor(s + ".chosen").to(at::kLong).sum(1).eq(2).all().item<bool>(), true);
        QCOMPARE(a.tensor(s + ".rank_counts").sum().item<int64_t>(), N * 4);
        QVERIFY(std::abs(a.tensor(s + ".usage").sum().item<double>() - 1.0) < 1e-12);
      }
      QVERIFY(a.meta["sites"]["blk.0"]["dynamic"]["overlap_next"].is_number());
    }
    // For the record: how often each routing's top-1 expert has the largest output norm.
    const MoeAnalysis o = readMoeAnalysis(d / "an_oracle");
    qInfo("export top-1 = largest norm: stored similarity router %.3f, oracle %.3f",
          readMoeAnalysis(d / "an_stored").meta["top1_norm_share"].get<double>(),
          o.meta["top1_norm_share"].get<double>());

    // The mlp router has no row per expert: router_sim skipped, with the reason.
    const fs::path mlpOut = d / "an_mlp";
    auto r = runCli({"analyze", qs(d / "moe_mlp"), "--static-only", "--out", qs(mlpOut), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const MoeAnalysis m = readMoeAnalysis(mlpOut);
    QCOMPARE(m.meta["router"]["kind"].get<std::string>(), std::string("mlp"));
    QVERIFY(m.meta["sites"]["blk.0"]["router_r2"].is_null());
    QVERIFY(m.meta["sites"]["blk.0"]["router_sim"].get<std::string>().rfind("skipped: ", 0) == 0);
    QVERIFY(!m.has("blk.0.router_sim") && m.has("blk.0.sim.up"));

    // Refusals: one line, exit 2, no folder.
    const fs::path bad = d / "bad";
    refuses({qs(d / "moe_similarity"), "--static-only", "--router", "learned", "--out", qs(bad)}, 2, "--router", bad);
    refuses({qs(root_ / "mixtral"), qs(root_ / "seqs.ids"), "--router", "oracle", "--out", qs(bad)}, 2,
            "--router oracle", bad);
    refuses({qs(d / "moe_similarity"), "--static-only", "--sites", "blk.5", "--out", qs(bad)}, 2,
            "--sites: blk.5 is not a MoEfied layer", bad);
  }

  void badInput() {
    const fs::path out = root_ / "bad";
    // A dense model: nothing to analyse.
    refuses({qs(root_ / "gpt2_relu"), "--static-only", "--out", qs(out)}, 2, "has no native MoE layer", out);
    // The dynamic analyses without a corpus, with a missing one, or a corpus with --static-only.
    refuses({qs(root_ / "mixtral"), "--out", qs(out)}, 2, "missing argument CORPUS", out);
    refuses({qs(root_ / "mixtral"), qs(root_ / "no_such.ids"), "--out", qs(out)}, 1, "no_such.ids", out);
    refuses({qs(root_ / "mixtral"), qs(root_ / "seqs.ids"), "--static-only", "--out", qs(out)}, 2, "--static-only",
            out);
    // Sites: a dense layer of Qwen2-MoE, a layer past the end, an expert site, a typo.
    refuses({qs(root_ / "qwen2_moe"), "--static-only", "--sites", "blk.1", "--out", qs(out)}, 2,
            "--sites: blk.1 is not a MoE layer", out);
    refuses({qs(root_ / "mixtral"), "--static-only", "--sites", "blk.7", "--out", qs(out)}, 2,
            "--sites: blk.7 is not a MoE layer", out);
    refuses({qs(root_ / "mixtral"), "--static-only", "--sites", "blk.0.exp.1", "--out", qs(out)}, 2,
            "'blk.0.exp.1' is not a layer site", out);
    refuses({qs(root_ / "mixtral"), "--static-only", "--sites", "blk.0,,blk.1", "--out", qs(out)}, 2,
            "--sites: empty entry", out);
    // A bad option value and a missing model.
    refuses({qs(root_ / "mixtral"), "--static-only", "--fire-eps=-1", "--out", qs(out)}, 2, "--fire-eps", out);
    refuses({qs(root_ / "missing_model"), "--static-only", "--out", qs(out)}, 1, "missing_model", out);
    // The output may not be an input (the model folder).
    refuses({qs(root_ / "mixtral"), "--static-only", "--out", qs(root_ / "mixtral"), "--force"}, 1, "mixtral",
            root_ / "nothing");
  }
};

QTEST_GUILESS_MAIN(AnalyzeCli)
#include "test_analyze_cli.moc"
