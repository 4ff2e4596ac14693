// `moefy record` and `moefy split` against an independent numpy reference
// (scripts/ref/record_ref.py) computed from `moefy forward --dump` of the same
// token batches: exact integer equality for counts and co-activations, max
// differences printed for sums; split metrics and agreement recomputed.
#include <QtTest>

#include <nlohmann/json.hpp>

#include "analysis/io/fsutil.h"
#include "cli_output.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }
QString script(const char* name) { return q(test::sourceDir() / "scripts/ref" / name); }
QString cli() {
  QString c = qEnvironmentVariable("MOEFY_CLI");
  return c.isEmpty() ? q(test::binaryDir() / "app" / "moefy") : c;
}

using test::expectOk;
using test::printLines;

}  // namespace

class TestRecordNumeric : public QObject {
  Q_OBJECT
  fs::path dir_;

 private Q_SLOTS:
  void initTestCase() {
    dir_ = test::freshDir("record_numeric");
    expectOk(test::runPython({script("rec_tiny_gpt2.py"), q(dir_ / "model"), "--seed", "21"}), "tiny model");
    expectOk(test::runPython({script("record_ref.py"), "make-ids", q(dir_ / "ids.safetensors"), "--n", "8", "--t",
                              "24", "--vocab", "64", "--seed", "2", "--categories", "3", "--ragged"}),
             "ids");
  }

  void recordMatchesNumpy_data() {
    QTest::addColumn<QString>("active");
    QTest::addColumn<bool>("soft");
    QTest::newRow("positive+soft") << "positive" << true;
    QTest::newRow("threshold") << "threshold:0.05" << false;
    QTest::newRow("top") << "top:0.2" << false;
  }

  void recordMatchesNumpy() {
    QFETCH(QString, active);
    QFETCH(bool, soft);
    const fs::path rec = dir_ / ("rec_" + active.toStdString().substr(0, 3));
    QStringList args = {"record", q(dir_ / "model"), q(dir_ / "ids.safetensors"), "--out", q(rec), "--batch", "4",
                        "--seq-len", "24", "--samples", "1000", "--active", active, "--json", "--quiet"};
    if (soft) args << "--soft-coact";
    auto r = test::runCli(args);
    expectOk(r, "moefy record");
    auto j = nlohmann::json::parse(r.out);
    qInfo() << "recorded" << j["tokens"].get<int64_t>() << "tokens, density layer 0"
            << j["density"]["0"].get<double>();
    QStringList check = {script("record_ref.py"), "check-record", "--cli", cli(), "--model", q(dir_ / "model"),
                         "--ids", q(dir_ / "ids.safetensors"), "--rec", q(rec), "--batch", "4", "--active", active};
    if (soft) check << "--soft";
    r = test::runPython(check);
    printLines(r.out);
    printLines(r.err);
    QCOMPARE(r.exitCode, 0);
  }

  void splitMetricsMatchNumpy() {
    const fs::path rec = dir_ / "rec_pos";
    for (const char* m : {"coact", "kmeans", "random"}) {
      const fs::path part = dir_ / (std::string("part_") + m);
      auto r = test::runCli({"split", q(rec), "--method", m, "--experts", "16", "--out", q(part), "--json", "--quiet"});
      expectOk(r, m);
      auto j = nlohmann::json::parse(r.out);
      QCOMPARE(j["experts"].get<int>(), 16);
    }
    auto r = test::runPython({script("record_ref.py"), "check-split", "--cli", cli(), "--rec", q(rec), "--part",
                              q(dir_ / "part_coact"), "--part2", q(dir_ / "part_kmeans")});
    printLines(r.out);
    printLines(r.err);
    QCOMPARE(r.exitCode, 0);
    r = test::runPython({script("record_ref.py"), "check-split", "--rec", q(rec), "--part", q(dir_ / "part_random")});
    printLines(r.out);
    QCOMPARE(r.exitCode, 0);
    // Human-readable comparison prints one row per partition and layer.
    r = test::runCli({"split", "--compare", q(dir_ / "part_coact"), q(dir_ / "part_kmeans"), q(dir_ / "part_random")});
    expectOk(r, "compare");
    printLines(r.out);
    QVERIFY(r.out.find("agreement") != std::string::npos);
    // A metric a partition lacks (stability with --no-stability) prints as
    // n/a, not as a number.
    r = test::runCli({"split", q(rec), "--method", "random", "--experts", "16", "--no-stability", "--out",
                      q(dir_ / "part_nostab"), "--quiet"});
    expectOk(r, "split --no-stability");
    r = test::runCli({"split", "--compare", q(dir_ / "part_coact"), q(dir_ / "part_nostab")});
    expectOk(r, "compare without stability");
    QVERIFY2(r.out.find("n/a") != std::string::npos, r.out.c_str());
    QVERIFY2(r.out.find("-1.0000") == std::string::npos, r.out.c_str());
  }

  void cliMergeAndExport() {
    // Two shards via --tokens windows are not expressible with one ids file, so
    // record the file twice and merge: every count doubles exactly.
    const fs::path rec = dir_ / "rec_pos";
    auto r = test::runCli({"record", "--merge", q(rec), q(rec), "--out", q(dir_ / "twice"), "--json", "--quiet"});
    expectOk(r, "merge");
    auto j = nlohmann::json::parse(r.out);
    auto one = nlohmann::json::parse(readFile(rec / "manifest.json"));
    QCOMPARE(j["tokens"].get<int64_t>(), 2 * one["tokens"].get<int64_t>());
    r = test::runCli({"split", q(rec), "--export-graph", q(dir_ / "l0.graph"), "--layer", "0", "--json"});
    expectOk(r, "export-graph");
    std::string g = readFile(dir_ / "l0.graph");
    QVERIFY(g.find(" 001\n") != std::string::npos);
  }

  void cliErrors() {
    const fs::path rec = dir_ / "rec_pos";
    struct Case {
      QStringList args;
      int code;
      const char* needle;
    };
    fs::create_directories(dir_ / "badrec");
    writeFileAtomic(dir_ / "badrec" / "manifest.json", "{\"format\": \"moefy-recording\", \"version\": 1, \"mod");
    std::vector<Case> cases = {
        {{"split", q(rec), "--method", "coact", "--experts", "256", "--out", q(dir_ / "x")}, 2, "larger than d_ff"},
        {{"split", q(rec), "--method", "coact", "--experts", "12", "--out", q(dir_ / "x")}, 2, "does not divide"},
        {{"split", q(rec), "--method", "metis", "--experts", "8", "--out", q(dir_ / "x")}, 2, "--method"},
        {{"split", q(dir_ / "badrec"), "--experts", "8", "--out", q(dir_ / "x")}, 1, "manifest.json"},
        {{"record", q(dir_ / "model"), q(dir_ / "ids.safetensors"), "--out", q(dir_ / "y"), "--active", "top:2"},
         2,
         "--active"},
        {{"record", q(dir_ / "model"), q(dir_ / "ids.safetensors"), "--out", q(dir_ / "y"), "--seq-len", "8"},
         2,
         "--seq-len"},
        {{"record", q(dir_ / "model"), q(dir_ / "ids.safetensors"), "--out", q(rec), "--seq-len", "24"}, 1, "already exists"},
        {{"record", q(dir_ / "model"), q(dir_ / "ids.safetensors"), "--out", q(dir_ / "y")}, 2, "positions"},
    };
    for (const auto& c : cases) {
      auto r = test::runCli(c.args);
      qInfo() << c.args.join(' ') << "->" << r.exitCode << QString::fromStdString(r.err).trimmed();
      QCOMPARE(r.exitCode, c.code);
      QVERIFY2(r.err.find(c.needle) != std::string::npos, r.err.c_str());
      QVERIFY(!fs::exists(dir_ / "x") && !fs::exists(dir_ / "y"));
    }
  }
};

QTEST_GUILESS_MAIN(TestRecordNumeric)
#include "test_record_numeric.moc"
