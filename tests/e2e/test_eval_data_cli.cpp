// `moefy record` -> `split` -> `route` -> `eval` on a tiny random GPT-2 with a
// text corpus (issue 20, defect 4): eval.json records the corpus fingerprint,
// split, split seed, sequence count and seed; the recording records its
// corpus fingerprint; and `moefy eval` warns when the recording behind its
// router read the documents it evaluates on, and only then.
#include <QtTest>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/io/links.h"
#include "analysis/text/corpus.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

// A folder corpus of `docs` one-paragraph documents (one file each: document id = sorted file index).
void writeCorpus(const fs::path& dir, int docs, int salt) {
  fs::create_directories(dir);
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs", "far", "away"};
  for (int d = 0; d < docs; ++d) {
    char name[32];
    std::snprintf(name, sizeof name, "doc%03d.txt", d);
    std::ofstream f(dir / name);
    for (int w = 0; w < 24; ++w) f << words[(d * 7 + w * 5 + salt) % 12] << (w % 9 == 8 ? ". " : " ");
    f << "\n";
  }
}

json readJson(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

}  // namespace

class TestEvalDataCli : public QObject {
  Q_OBJECT
  fs::path root, model, corpus, other, rec, part, router;

  test::RunResult eval(const fs::path& on, const QString& split, const fs::path& out) {
    return test::runCli({"eval", q(model), q(on), "--partition", q(part), "--router", q(router), "--split", split,
                         "--tokens", "400", "--seq-len", "32", "--seed", "4", "--out", q(out), "--quiet"});
  }

 private Q_SLOTS:
  void initTestCase() {
    root = test::freshDir("eval_data_cli");
    model = root / "model";
    // The tiny random GPT-2 and a WordPiece tokenizer of scripts/ref/moe_fixtures.py.
    const QString fixtures = q(test::sourceDir() / "scripts" / "ref" / "moe_fixtures.py");
    for (const QStringList& args : {QStringList{fixtures, "model", "gpt2", q(model), "--seed", "3"},
                                    QStringList{fixtures, "tokenizer", q(model / "tokenizer.json")}}) {
      const test::RunResult made = test::runPython(args);
      QVERIFY2(made.exitCode == 0, made.err.c_str());
    }
    corpus = root / "corpus";
    other = root / "other";
    writeCorpus(corpus, 60, 0);
    writeCorpus(other, 20, 5);
    rec = root / "rec";
    part = root / "part";
    router = root / "router";
    auto r = test::runCli({"record", q(model), q(corpus), "--out", q(rec), "--tokens", "1500", "--seq-len", "32",
                           "--samples", "300", "--split", "all", "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    r = test::runCli({"split", q(rec), "--method", "random", "--experts", "16", "--out", q(part), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    r = test::runCli(
        {"route", q(model), q(rec), q(part), "--router", "oracle", "--top-k", "4", "--out", q(router), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
  }

  void recordingFingerprintsItsCorpus() {
    const json m = readJson(rec / "manifest.json");
    QCOMPARE(QString::fromStdString(m["corpus"].value("fingerprint", "")),
             QString::fromStdString(contentFingerprint(corpus)));
  }

  void evalRecordsItsDataAndWarnsOnOverlap() {
    // The recording read all of `corpus`; evaluating on all of it is flagged.
    auto r = eval(corpus, "all", root / "e-same");
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo() << "stderr:" << r.err.c_str();
    QVERIFY2(r.err.find("moefy eval: warning: recording " + fs::absolute(rec).lexically_normal().string()) !=
                 std::string::npos,
             r.err.c_str());
    QVERIFY2(r.err.find("overlaps the evaluation data") != std::string::npos, r.err.c_str());
    const json j = readJson(root / "e-same" / "eval.json");
    const json& c = j["corpus"];
    qInfo() << "corpus block:" << c.dump().c_str();
    QCOMPARE(QString::fromStdString(c["split"].get<std::string>()), QString("all"));
    QCOMPARE(QString::fromStdString(c["fingerprint"].get<std::string>()),
             QString::fromStdString(contentFingerprint(corpus)));
    QCOMPARE(c["split_seed"].get<int64_t>(), int64_t(0));
    QCOMPARE(c["held_out_fraction"].get<double>(), 0.05);
    QVERIFY(c["sequences"].get<int64_t>() >= 1);
    QCOMPARE(c["seq_len"].get<int>(), 32);
    QCOMPARE(j["seed"].get<int64_t>(), int64_t(4));
    // 400 tokens in windows of 32: the sequence count matches the token count.
    QVERIFY(c["sequences"].get<int64_t>() * 32 >= c["tokens"].get<int64_t>());

    // Another corpus: no warning.
    r = eval(other, "all", root / "e-other");
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY2(r.err.find("overlaps") == std::string::npos, r.err.c_str());
    QCOMPARE(
        QString::fromStdString(readJson(root / "e-other" / "eval.json")["corpus"]["fingerprint"].get<std::string>()),
        QString::fromStdString(contentFingerprint(other)));
  }

  void trainingRecordingAgainstHeldOutIsNotFlagged() {
    // Documents of `corpus` held out with the evaluation's split (seed 0, 5 %).
    int heldOut = 0;
    for (int d = 0; d < 60; ++d) heldOut += isHeldOut(d, 0, 0.05);
    if (heldOut == 0) QSKIP("no document of this corpus falls in the held-out split");
    const fs::path trainRec = root / "rec-train", trainPart = root / "part-train", trainRouter = root / "router-train";
    auto r = test::runCli({"record", q(model), q(corpus), "--out", q(trainRec), "--tokens", "1500", "--seq-len", "32",
                           "--samples", "300", "--split", "train", "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY(
        test::runCli({"split", q(trainRec), "--method", "random", "--experts", "16", "--out", q(trainPart), "--quiet"})
            .exitCode == 0);
    QVERIFY(test::runCli({"route", q(model), q(trainRec), q(trainPart), "--router", "oracle", "--top-k", "4", "--out",
                          q(trainRouter), "--quiet"})
                .exitCode == 0);
    r = test::runCli({"eval", q(model), q(corpus), "--partition", q(trainPart), "--router", q(trainRouter), "--split",
                      "heldout", "--tokens", "400", "--seq-len", "32", "--out", q(root / "e-held"), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    qInfo() << heldOut << "held-out documents; stderr:" << r.err.c_str();
    QVERIFY2(r.err.find("overlaps") == std::string::npos, r.err.c_str());
    QCOMPARE(QString::fromStdString(readJson(root / "e-held" / "eval.json")["corpus"]["split"].get<std::string>()),
             QString("heldout"));
    // The same router evaluated on the training split is flagged.
    r = test::runCli({"eval", q(model), q(corpus), "--partition", q(trainPart), "--router", q(trainRouter), "--split",
                      "train", "--tokens", "400", "--seq-len", "32", "--out", q(root / "e-train"), "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY2(r.err.find("overlaps the evaluation data") != std::string::npos, r.err.c_str());
  }
};

QTEST_GUILESS_MAIN(TestEvalDataCli)
#include "test_eval_data_cli.moc"
