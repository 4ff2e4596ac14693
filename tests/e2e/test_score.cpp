// `moefy score`: corpus and per-segment BLEU/chrF of two text files, in text
// and JSON, against the core functions (analysis/eval/bleu.h, themselves
// checked against scripts/ref/bleu_ref.py in tests/numeric/test_bleu.cpp), and
// its refusals: missing file, folder, empty file, line-count mismatch,
// invalid UTF-8, NUL byte, unknown metric, missing option.
#include <QtTest>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/eval/bleu.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

QString q(const fs::path& p) { return QString::fromStdString(p.string()); }

void writeBytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::string joinLines(const std::vector<std::string>& lines, const char* eol = "\n") {
  std::string s;
  for (const auto& l : lines) s += l + eol;
  return s;
}

int lineCount(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

class TestScore : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() {
    dir_ = test::freshDir("score_e2e");
    // 120 Spanish verses of the committed corpus as references; hypotheses
    // with words dropped, plus an empty hypothesis and a short one.
    std::ifstream in(test::sourceDir() / "data/corpus/bible-en-es/test.tsv");
    std::string line;
    while (refs_.size() < 120 && std::getline(in, line)) {
      const auto tab = line.find('\t');
      QVERIFY(tab != std::string::npos);
      refs_.push_back(line.substr(tab + 1));
      std::istringstream ws(refs_.back());
      std::string w, h;
      for (int i = 0; ws >> w; ++i)
        if (i % 5 != 2) h += (h.empty() ? "" : " ") + w;
      hyps_.push_back(h);
    }
    QCOMPARE(refs_.size(), size_t(120));
    hyps_[7] = "";
    hyps_[8] = "Y dijo";
    writeBytes(dir_ / "hyp.txt", joinLines(hyps_));
    writeBytes(dir_ / "ref.txt", joinLines(refs_));
    writeBytes(dir_ / "ref_crlf.txt", "\xEF\xBB\xBF" + joinLines(refs_, "\r\n"));  // BOM + CRLF: same segments
  }

  void corpusJson() {
    auto r = test::runCli({"score", "--hyp", q(dir_ / "hyp.txt"), "--ref", q(dir_ / "ref_crlf.txt"), "--json"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const auto j = nlohmann::json::parse(r.out);
    const BleuScore b = corpusBleu(hyps_, refs_);
    const double c = corpusChrf(hyps_, refs_);
    qInfo("moefy score: BLEU %.6f chrF %.6f over %zu segments (core: %.6f, %.6f)", j["bleu"]["score"].get<double>(),
          j["chrf"]["score"].get<double>(), hyps_.size(), b.score, c);
    QCOMPARE(j["segments"].get<size_t>(), hyps_.size());
    QCOMPARE(j["bleu"]["score"].get<double>(), b.score);
    QCOMPARE(j["chrf"]["score"].get<double>(), c);
    QCOMPARE(j["bleu"]["hyp_len"].get<int64_t>(), b.stats.hypLen);
    QCOMPARE(j["bleu"]["ref_len"].get<int64_t>(), b.stats.refLen);
    for (int n = 0; n < 4; ++n) {
      QCOMPARE(j["bleu"]["matches"][n].get<int64_t>(), b.stats.matches[n]);
      QCOMPARE(j["bleu"]["totals"][n].get<int64_t>(), b.stats.totals[n]);
      QCOMPARE(j["bleu"]["precisions"][n].get<double>(), b.precisions[n]);
    }
    QCOMPARE(j["bleu"]["bp"].get<double>(), b.bp);
    QVERIFY(b.bp < 1.0 && b.score > 20.0 && b.score < 90.0);  // dropped words: a real, imperfect score
    QCOMPARE(j["bleu"]["signature"].get<std::string>(), std::string("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp"));
  }

  void corpusText() {
    auto r = test::runCli({"score", "--hyp", q(dir_ / "hyp.txt"), "--ref", q(dir_ / "ref.txt")});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const BleuScore b = corpusBleu(hyps_, refs_);
    char want[256];
    std::snprintf(want, sizeof want,
                  "BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = %lld)", b.score,
                  b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3], b.bp, b.ratio,
                  static_cast<long long>(b.stats.hypLen), static_cast<long long>(b.stats.refLen));
    QVERIFY2(r.out.find(want) != std::string::npos, (r.out + "\nexpected: " + want).c_str());
    char chrf[64];
    std::snprintf(chrf, sizeof chrf, "chrF2 = %.2f", corpusChrf(hyps_, refs_));
    QVERIFY2(r.out.find(chrf) != std::string::npos, r.out.c_str());
    // --metric bleu leaves chrF out.
    r = test::runCli({"score", "--hyp", q(dir_ / "hyp.txt"), "--ref", q(dir_ / "ref.txt"), "--metric", "bleu"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY(r.out.find("BLEU = ") != std::string::npos && r.out.find("chrF") == std::string::npos);
  }

  void sentences() {
    auto r = test::runCli({"score", "--hyp", q(dir_ / "hyp.txt"), "--ref", q(dir_ / "ref.txt"), "--sentence"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QCOMPARE(lineCount(r.out), static_cast<int>(hyps_.size()) + 1);  // header + one line per segment
    std::istringstream in(r.out);
    std::string header;
    std::getline(in, header);
    QCOMPARE(QString::fromStdString(header), QString("segment\tBLEU\tchrF2"));
    double maxDiff = 0;
    for (size_t i = 0; i < hyps_.size(); ++i) {
      size_t seg = 0;
      double bleu = -1, chrf = -1;
      in >> seg >> bleu >> chrf;
      QCOMPARE(seg, i + 1);
      maxDiff = std::max({maxDiff, std::fabs(bleu - sentenceBleu(hyps_[i], refs_[i]).score),
                          std::fabs(chrf - sentenceChrf(hyps_[i], refs_[i]))});
    }
    qInfo("--sentence: max |printed - core| = %.3g (printed with 4 decimals)", maxDiff);
    QVERIFY(maxDiff <= 5.1e-5);
    // JSON form: the corpus scores plus one entry per segment.
    r = test::runCli({"score", "--hyp", q(dir_ / "hyp.txt"), "--ref", q(dir_ / "ref.txt"), "--sentence", "--json"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j["sentences"].size(), hyps_.size());
    QCOMPARE(j["sentences"][7]["bleu"]["score"].get<double>(), 0.0);  // the empty hypothesis
    QCOMPARE(j["sentences"][8]["bleu"]["score"].get<double>(), sentenceBleu(hyps_[8], refs_[8]).score);
  }

  void smoothing() {
    // No 4-gram matches anywhere: 'exp' (default) gives a positive score, none gives 0.
    writeBytes(dir_ / "h4.txt", "a b c x d e f\ng h i z j k\n");
    writeBytes(dir_ / "r4.txt", "a b c y d e f\ng h i w j k\n");
    auto e = test::runCli({"score", "--hyp", q(dir_ / "h4.txt"), "--ref", q(dir_ / "r4.txt"), "--json"});
    auto n =
        test::runCli({"score", "--hyp", q(dir_ / "h4.txt"), "--ref", q(dir_ / "r4.txt"), "--json", "--smooth", "none"});
    QVERIFY2(e.exitCode == 0 && n.exitCode == 0, (e.err + n.err).c_str());
    QVERIFY(nlohmann::json::parse(e.out)["bleu"]["score"].get<double>() > 10.0);
    QCOMPARE(nlohmann::json::parse(n.out)["bleu"]["score"].get<double>(), 0.0);
  }

  void badInput_data() {
    QTest::addColumn<QString>("hyp");
    QTest::addColumn<QString>("ref");
    QTest::addColumn<QStringList>("extra");
    QTest::addColumn<int>("code");
    QTest::addColumn<QString>("message");
    struct Row {
      const char* name;
      QString hyp, ref;
      QStringList extra;
      int code;
      QString message;
    };
    const Row rows[] = {
        {"missing hypothesis file", "missing.txt", "ref.txt", {}, 1, "missing.txt: no such file"},
        {"missing reference file", "hyp.txt", "gone.txt", {}, 1, "gone.txt: no such file"},
        {"folder", ".", "ref.txt", {}, 1, "is a folder, not a file"},
        {"line-count mismatch",
         "short.txt",
         "ref.txt",
         {},
         1,
         "short.txt has 3 lines, " + q(dir_ / "ref.txt") + " has 120 lines"},
        {"invalid UTF-8", "latin1.txt", "two.txt", {}, 1, "latin1.txt:2: invalid UTF-8 at column 3"},
        {"NUL byte", "two.txt", "nul.txt", {}, 1, "nul.txt:1: binary file (NUL byte"},
        {"empty file", "empty.txt", "empty.txt", {}, 1, "empty.txt: no segments"},
        {"unknown metric", "two.txt", "two.txt", {"--metric", "bleu,ter"}, 2, "--metric: unknown metric 'ter'"},
        {"unknown smoothing", "two.txt", "two.txt", {"--smooth", "floor"}, 2, "--smooth"},
    };
    for (const Row& r : rows) QTest::newRow(r.name) << r.hyp << r.ref << r.extra << r.code << r.message;
  }

  void badInput() {
    QFETCH(QString, hyp);
    QFETCH(QString, ref);
    QFETCH(QStringList, extra);
    QFETCH(int, code);
    QFETCH(QString, message);
    writeBytes(dir_ / "short.txt", joinLines({hyps_[0], hyps_[1], hyps_[2]}));
    writeBytes(dir_ / "latin1.txt", "ok\nNi\xf1o\n");  // "Niño" in Latin-1
    writeBytes(dir_ / "two.txt", "a\nb\n");
    writeBytes(dir_ / "nul.txt", std::string("a\0b\nc\n", 6));
    writeBytes(dir_ / "empty.txt", "");
    QStringList args{"score", "--hyp", q(dir_ / hyp.toStdString()), "--ref", q(dir_ / ref.toStdString())};
    args += extra;
    auto r = test::runCli(args);
    qInfo("exit %d: %s", r.exitCode, r.err.c_str());
    QCOMPARE(r.exitCode, code);
    QVERIFY2(r.err.find(message.toStdString()) != std::string::npos, r.err.c_str());
    QCOMPARE(lineCount(r.err), 1);  // one line
    QVERIFY(r.out.empty());
  }

  void missingOption() {
    auto r = test::runCli({"score", "--ref", q(dir_ / "ref.txt")});
    QCOMPARE(r.exitCode, 2);
    QVERIFY2(r.err.find("--hyp is required") != std::string::npos, r.err.c_str());
  }

 private:
  fs::path dir_;
  std::vector<std::string> hyps_, refs_;
};

QTEST_GUILESS_MAIN(TestScore)
#include "test_score.moc"
