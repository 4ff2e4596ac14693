// Data-parallel record and eval under Open MPI (issue 18; docs/scale.md
// "Several processes"): `mpirun -np 2|3 moefy record` on the bundled model
// equals the single-process recording bit for bit, for every tensor of the
// folder (statistics, exact sums, co-activation, soft co-activation, the
// sample reservoir); a run killed mid-way resumes per rank to the same bits;
// a rank that fails stops every rank and leaves no output; `mpirun moefy
// eval` gives the single-process figures within summation rounding.
//
// CI runs as root: Open MPI then needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), set
// here for the child processes. --oversubscribe lets 3 ranks share 2 cores.
#include <QtTest>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "analysis/common/distributed.h"
#include "analysis/io/safetensors.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

// The moefy of this build (CTest sets MOEFY_CLI; by hand, the build tree's).
QString cli() {
  const QByteArray env = qgetenv("MOEFY_CLI");
  return env.isEmpty() ? q(test::binaryDir() / "app" / "moefy") : QString::fromLocal8Bit(env);
}

json readJson(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

// Every tensor of the three files of two recordings: same names, and each
// bitwise equal. Returns the names that differ (with their max difference).
std::vector<std::string> tensorDifferences(const fs::path& a, const fs::path& b) {
  std::vector<std::string> out;
  for (const char* file : {"stats.safetensors", "coact.safetensors", "samples.safetensors"}) {
    const auto fa = SafetensorsFile::open(a / file), fb = SafetensorsFile::open(b / file);
    std::set<std::string> na, nb;
    for (const TensorInfo& t : fa->tensors()) na.insert(t.name);
    for (const TensorInfo& t : fb->tensors()) nb.insert(t.name);
    if (na != nb) {
      out.push_back(std::string(file) + ": tensor names differ");
      continue;
    }
    for (const std::string& name : na) {
      at::Tensor ta = fa->raw(name), tb = fb->raw(name);
      if (!at::equal(ta, tb))
        out.push_back(std::string(file) + ":" + name + " max diff " +
                      std::to_string((ta.to(at::kDouble) - tb.to(at::kDouble)).abs().max().item<double>()));
    }
  }
  return out;
}

}  // namespace

class TestMpi : public QObject {
  Q_OBJECT
  fs::path root, model, corpus;
  QString mpirun;

  QStringList recordArgs(const fs::path& out) const {
    return {"record",  q(model), q(corpus),   "--tokens", "6000",         "--seq-len", "64",   "--batch", "4",
            "--chunk", "8",      "--samples", "700",      "--soft-coact", "--out",     q(out), "--quiet"};
  }

  // mpirun -np N moefy ARGS, one thread per rank.
  test::RunResult mpi(int ranks, const QStringList& args, int timeoutSec = 300) const {
    QStringList full{"--oversubscribe", "-np", QString::number(ranks), "-x", "MOEFY_THREADS=1", cli()};
    full << args;
    return test::run(mpirun, full, timeoutSec);
  }

  // The single-process recording every MPI run is compared with (one thread, as the ranks).
  fs::path single() {
    const fs::path out = root / "single";
    if (!fs::exists(out / "manifest.json")) {
      qputenv("MOEFY_THREADS", "1");
      const test::RunResult r = test::runCli(recordArgs(out));
      qunsetenv("MOEFY_THREADS");
      if (r.exitCode != 0) qWarning() << r.err.c_str();
    }
    return out;
  }

  void checkEqual(const fs::path& got, const fs::path& want) {
    const std::vector<std::string> diffs = tensorDifferences(got, want);
    for (const auto& d : diffs) qWarning() << d.c_str();
    QVERIFY2(diffs.empty(), "an MPI recording differs from the single-process one");
    json mg = readJson(got / "manifest.json"), mw = readJson(want / "manifest.json");
    for (const char* key : {"tokens", "sequences", "chunks_done", "samples", "corpus", "layers", "options"})
      QVERIFY2(mg[key] == mw[key], key);
  }

 private Q_SLOTS:
  void initTestCase() {
    if (!dist::built()) QSKIP("this build has no MPI (libopenmpi-dev was not found at configure time)");
    mpirun = QStandardPaths::findExecutable("mpirun");
    QVERIFY2(!mpirun.isEmpty(),
             "the build links MPI but mpirun is not on PATH (scripts/setup.sh installs openmpi-bin)");
    qputenv("OMPI_ALLOW_RUN_AS_ROOT", "1");
    qputenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    // Containers often forbid the cross-memory attach of Open MPI's shared-memory transport.
    qputenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    root = test::freshDir("mpi");
    model = test::sourceDir() / "data" / "models" / "brown-relu";
    corpus = test::sourceDir() / "data" / "corpus" / "brown";
    QVERIFY(fs::exists(single() / "manifest.json"));
  }

  void recordTwoAndThreeRanksEqualOneProcess() {
    for (int ranks : {2, 3}) {
      const fs::path out = root / ("ranks" + std::to_string(ranks));
      const test::RunResult r = mpi(ranks, recordArgs(out));
      QVERIFY2(r.exitCode == 0, r.err.c_str());
      checkEqual(out, single());
      // No rank's checkpoint is left behind.
      for (const auto& e : fs::directory_iterator(root))
        QVERIFY2(e.path().filename().string().find(".partial") == std::string::npos, e.path().c_str());
      qInfo() << ranks << "ranks: every tensor equal to the single-process recording";
    }
    // The reservoir replaced samples (700 slots for 6000 tokens), and each
    // row's token index is the single run's.
    const auto s = SafetensorsFile::open(single() / "samples.safetensors");
    QVERIFY(s->raw("token_index").max().item<int64_t>() > 700);
  }

  void killedRunResumesPerRank() {
    const fs::path out = root / "resumed";
    QStringList args = recordArgs(out);
    args << "--checkpoint-every"
         << "1";
    // Start, wait for both ranks' checkpoints, kill the whole job.
    QProcess p;
    QStringList full{"--oversubscribe", "-np", "2", "-x", "MOEFY_THREADS=1", cli()};
    full << args;
    p.start(mpirun, full);
    QVERIFY(p.waitForStarted());
    const fs::path c0 = out.string() + ".partial.rank-0-of-2", c1 = out.string() + ".partial.rank-1-of-2";
    const auto t0 = std::chrono::steady_clock::now();
    while (!(fs::exists(c0 / "manifest.json") && fs::exists(c1 / "manifest.json")) &&
           p.state() != QProcess::NotRunning && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    QVERIFY2(p.state() != QProcess::NotRunning, "the run ended before both ranks had checkpointed");
    p.kill();  // SIGKILL to mpirun; its ranks go with it
    p.waitForFinished(30000);
    // mpirun's ranks may outlive it by a moment.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    QVERIFY(!fs::exists(out / "manifest.json"));
    const int64_t done0 = readJson(c0 / "manifest.json")["chunks_done"],
                  done1 = readJson(c1 / "manifest.json")["chunks_done"];
    qInfo() << "killed after rank checkpoints at chunks" << done0 << done1;
    QVERIFY(done0 < 24 && done1 < 24);  // 94 sequences of 8 per chunk: 12 chunks; the run was cut
    args << "--resume";
    // Another number of ranks finds no checkpoint of its own, and is told which -np has one.
    const test::RunResult three = mpi(3, args);
    QVERIFY(three.exitCode != 0);
    QVERIFY2(three.err.find("resume with mpirun -np 2") != std::string::npos, three.err.c_str());
    const test::RunResult r = mpi(2, args);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    checkEqual(out, single());
    QVERIFY(!fs::exists(c0) && !fs::exists(c1));
  }

  // How often `needle` occurs in `hay`.
  static int count(const std::string& hay, const std::string& needle) {
    int n = 0;
    for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
    return n;
  }

  void failingRankStopsAll() {
    // MPMD launches with a working directory per rank: the same command line
    // (a relative corpus path) reads another file on rank 1.
    const fs::path wa = root / "wdir_a", wb = root / "wdir_b", wc = root / "wdir_c";
    for (const fs::path& d : {wa, wb, wc}) fs::create_directories(d);
    auto text = [](const fs::path& f, const char* word) {
      std::ofstream o(f);
      for (int i = 0; i < 300; ++i) o << "the " << word << " line number " << i << " with other words.\n\n";
    };
    text(wa / "corpus.txt", "first");
    text(wb / "corpus.txt", "second");  // wdir_c has none
    const fs::path out = root / "mismatch";
    QStringList rec = recordArgs(out);
    rec[2] = "corpus.txt";
    auto mpmd = [&](const fs::path& w1, const QStringList& a0, const QStringList& a1) {
      QStringList full{"--oversubscribe", "-np", "1", "-wdir", q(wa), "-x", "MOEFY_THREADS=1", cli()};
      full << a0 << ":"
           << "-np"
           << "1"
           << "-wdir" << q(w1) << "-x"
           << "MOEFY_THREADS=1" << cli() << a1;
      const test::RunResult r = test::run(mpirun, full, 300);
      qInfo() << r.err.c_str();
      return r;
    };
    // Rank 1 reads other sequences: the ranks find it before reducing; one message, nothing written.
    test::RunResult r = mpmd(wb, rec, rec);
    QVERIFY(r.exitCode != 0);
    QVERIFY2(count(r.err, "rank 1 read other sequences") == 1, r.err.c_str());
    QVERIFY(!fs::exists(out));
    // A setup error on rank 1 alone (no corpus there) stops both before any
    // work, reported once by rank 0 and naming rank 1.
    r = mpmd(wc, rec, rec);
    QVERIFY(r.exitCode != 0);
    QVERIFY2(count(r.err, "corpus.txt") == 1 && r.err.find("rank 1: ") != std::string::npos, r.err.c_str());
    QVERIFY(!fs::exists(out));
    // Other options on one rank are refused before anything is read.
    QStringList seeded = rec;
    seeded << "--seed"
           << "9";
    r = mpmd(wb, rec, seeded);
    QVERIFY(r.exitCode == 2);
    QVERIFY2(count(r.err, "rank 1 was started with other arguments") == 1, r.err.c_str());
    // A bad option and a command that does not shard: one line each, from rank 0.
    const test::RunResult bad = mpi(3, {"record", q(model), q(corpus), "--tokenz", "5", "--out", q(out)});
    QVERIFY(bad.exitCode == 2);
    QVERIFY2(count(bad.err, "unknown option --tokenz") == 1, bad.err.c_str());
    const test::RunResult split =
        mpi(2, {"split", q(single()), "--method", "random", "--experts", "8", "--out", q(root / "p"), "--quiet"});
    QVERIFY(split.exitCode == 2);
    QVERIFY2(count(split.err, "does not run under mpirun") == 1, split.err.c_str());
    QVERIFY(!fs::exists(root / "p"));
  }

  void completedRecordingRemovesStaleCheckpoints() {
    // Checkpoints of OUT written by another number of ranks can never be
    // resumed once OUT is complete: the finished run removes them.
    const fs::path out = root / "stale";
    const fs::path stale = out.string() + ".partial.rank-0-of-4";
    fs::create_directories(stale);
    std::ofstream(stale / "manifest.json") << "{}";
    const test::RunResult r = mpi(2, {"record", q(model), q(corpus), "--tokens", "2000", "--out", q(out), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY(fs::exists(out / "manifest.json"));
    QVERIFY(!fs::exists(stale));
  }

  void evalRanksEqualOneProcess() {
    const fs::path part = root / "part", router = root / "router";
    QVERIFY(test::runCliStep({"split", q(single()), "--method", "kmeans", "--experts", "16", "--out", q(part)}));
    QVERIFY(test::runCliStep({"route", q(model), q(single()), q(part), "--router", "mlp", "--out", q(router)}));
    const QStringList args{"eval",    q(model),  q(corpus),  "--partition", q(part),     "--router", q(router),
                           "--split", "heldout", "--tokens", "3000",        "--seq-len", "64",       "--batch",
                           "4",       "--sweep", "0.25,0.5", "--json",      "--quiet"};
    qputenv("MOEFY_THREADS", "1");
    const test::RunResult one = test::runCli(args);
    qunsetenv("MOEFY_THREADS");
    QVERIFY2(one.exitCode == 0, one.err.c_str());
    const json want = json::parse(one.out);
    for (int ranks : {2, 3}) {
      const test::RunResult r = mpi(ranks, args);
      QVERIFY2(r.exitCode == 0, r.err.c_str());
      const json got = json::parse(r.out);  // rank 0 alone prints
      double maxRel = 0;
      auto close = [&](double a, double b) {
        const double rel = std::abs(a - b) / std::max(1e-300, std::abs(b));
        maxRel = std::max(maxRel, rel);
        return rel < 1e-9;
      };
      QCOMPARE(got["reference"]["positions"], want["reference"]["positions"]);
      QVERIFY(close(got["reference"]["loss"], want["reference"]["loss"]));
      QCOMPARE(got["results"].size(), want["results"].size());
      for (size_t i = 0; i < want["results"].size(); ++i) {
        const json &g = got["results"][i], &w = want["results"][i];
        for (const char* key : {"loss", "perplexity", "kl", "top1_agreement", "ffn_flops_fraction"})
          QVERIFY2(close(g[key], w[key]), key);
        for (size_t L = 0; L < w["layer_rel_error"].size(); ++L)
          if (!w["layer_rel_error"][L].is_null()) QVERIFY(close(g["layer_rel_error"][L], w["layer_rel_error"][L]));
      }
      qInfo() << ranks << "ranks: eval max relative difference" << maxRel << "(tolerance 1e-9)";
    }
    // Timings are not sharded: refused by name.
    QStringList speed = args;
    speed << "--speed";
    const test::RunResult r = mpi(2, speed);
    QVERIFY(r.exitCode != 0);
    QVERIFY2(r.err.find("--speed") != std::string::npos, r.err.c_str());
  }
};

QTEST_GUILESS_MAIN(TestMpi)
#include "test_mpi.moc"
