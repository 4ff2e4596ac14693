// BLEU and chrF (analysis/eval/bleu.h) against the independent Python
// reference scripts/ref/bleu_ref.py (written from the definitions, no
// sacrebleu) on fixed hypothesis/reference sets: punctuation, numbers,
// entities, empty hypotheses, hypotheses shorter than 4 tokens, Spanish
// accents and non-ASCII whitespace, identical pairs, a corpus with no 4-gram
// match, and 400 verses of the committed Bible corpus with words dropped and
// swapped. Plus values published by sacreBLEU itself (README, test suite).
#include <QtTest>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/eval/bleu.h"
#include "analysis/io/json_input.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string name;
  std::vector<std::string> hyps, refs;
};

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// A degraded "translation" of `ref`: every 7th word dropped, neighbours
// swapped every 5th position, the last 3 words removed in every 4th segment.
std::string degrade(const std::string& ref, size_t seg) {
  auto w = words(ref);
  std::vector<std::string> out;
  for (size_t i = 0; i < w.size(); ++i)
    if ((i + seg) % 7 != 3) out.push_back(w[i]);
  for (size_t i = 1; i < out.size(); i += 5) std::swap(out[i - 1], out[i]);
  if (seg % 4 == 0 && out.size() > 3) out.resize(out.size() - 3);
  std::string s;
  for (const auto& x : out) s += (s.empty() ? "" : " ") + x;
  return s;
}

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"punctuation and numbers",
               {"The cat, which was black, sat on the mat.", "It costs $3.50 (about 1,000 yen) -- really?",
                "He said: \"no\" &amp; left; the 10-year plan [failed]!", "e-mail me at a.b@c.org/x <skipped> now",
                "Tom's dog isn't here... or is it?", "&quot;quoted&quot; &lt;tag&gt; 3-4 2,5 x.y"},
               {"The black cat sat on the mat.", "It costs $3.50 (roughly 1,000 yen) - really?",
                "He said \"no\" and left; the 10-year plan failed!", "email me at a.b@c.org now",
                "Tom's dog is not here ... or is it ?", "\"quoted\" <tag> 3 - 4 2.5 x . y"}});
  c.push_back({"empty hypotheses",
               {"", "the house is small", "", "   "},
               {"a reference sentence", "the house is very small", "x", "another one"}});
  c.push_back({"all hypotheses empty", {"", ""}, {"some words here", "more"}});
  c.push_back({"shorter than 4 tokens",
               {"yes", "a test", "the small house", "no .", "ok"},
               {"yes indeed", "a test", "the small red house", "no!", "fine"}});
  c.push_back(
      {"Spanish accents and non-ASCII whitespace",
       {"¿Dónde está el niño? ¡Aquí está!", "La canción\u00a0del corazón — «bella».", "Él comió\u3000pan y café.",
        "EN el principio crió Dios los cielos y la tierra.", "Y dijo Dios: Sea la luz: y fué la luz."},
       {"¿Dónde está el niño? ¡Está aquí!", "La canción del corazón es «bella».", "Él comió pan con café.",
        "EN el principio crió Dios los cielos y la tierra.", "Y dijo Dios: Sea la luz; y fué la luz."}});
  c.push_back({"identical pairs",
               {"The dog bit the man.", "¿Quién es el que te dijo: Toma tu lecho y anda?", "one two three four five"},
               {"The dog bit the man.", "¿Quién es el que te dijo: Toma tu lecho y anda?", "one two three four five"}});
  c.push_back({"no 4-gram match in the corpus", {"a b c x d e f", "g h i z j k"}, {"a b c y d e f", "g h i w j k"}});
  c.push_back({"trailing whitespace and newlines inside",
               {"ends with spaces   ", "line-\nbreak joins", "two\nlines"},
               {"ends with spaces", "linebreak joins", "two lines"}});
  // Real Spanish text: the committed corpus's first 400 valid pairs.
  Case bible{"Bible valid (first 400 verses, degraded)", {}, {}};
  std::ifstream in(test::sourceDir() / "data/corpus/bible-en-es/valid.tsv");
  std::string line;
  while (bible.refs.size() < 400 && std::getline(in, line)) {
    const auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    bible.refs.push_back(line.substr(tab + 1));
    bible.hyps.push_back(degrade(bible.refs.back(), bible.refs.size()));
  }
  c.push_back(bible);
  return c;
}

double relDiff(double a, double b) { return std::fabs(a - b) / std::max(1.0, std::fabs(b)); }

}  // namespace

class TestBleu : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void againstPythonReference() {
    const auto cs = cases();
    QVERIFY2(cs.back().refs.size() == 400, "data/corpus/bible-en-es/valid.tsv should give 400 pairs");
    // The reference first checks itself against values sacreBLEU publishes
    // (README example with two references: 48.530827, chrF2 59.73).
    auto self = test::runPython(
        {QString::fromStdString((test::sourceDir() / "scripts/ref/bleu_ref.py").string()), "--self-test"});
    QVERIFY2(self.exitCode == 0, (self.out + self.err).c_str());
    qInfo("%s", self.out.c_str());
    const fs::path dir = test::freshDir("bleu_ref");
    nlohmann::json j;
    for (const auto& c : cs) j["corpora"].push_back({{"name", c.name}, {"hyps", c.hyps}, {"refs", c.refs}});
    {
      std::ofstream out(dir / "cases.json", std::ios::binary);
      out << j.dump();
    }
    auto r = test::runPython({QString::fromStdString((test::sourceDir() / "scripts/ref/bleu_ref.py").string()),
                              QString::fromStdString((dir / "cases.json").string()),
                              QString::fromStdString((dir / "ref.json").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    const nlohmann::json ref = readJsonFile(dir / "ref.json");
    QCOMPARE(ref["corpora"].size(), cs.size());

    double maxBleu = 0, maxChrf = 0, maxSentBleu = 0, maxSentChrf = 0, maxParts = 0;
    for (size_t k = 0; k < cs.size(); ++k) {
      const Case& c = cs[k];
      const auto& rc = ref["corpora"][k];
      for (auto [key, smoothing] :
           {std::pair{"bleu_exp", BleuSmoothing::Exp}, std::pair{"bleu_none", BleuSmoothing::None}}) {
        const BleuScore b = corpusBleu(c.hyps, c.refs, smoothing);
        const auto& e = rc[key];
        QVERIFY2(b.stats.hypLen == e["hyp_len"].get<int64_t>() && b.stats.refLen == e["ref_len"].get<int64_t>(),
                 (c.name + ": lengths").c_str());
        for (int n = 0; n < 4; ++n) {
          QVERIFY2(b.stats.matches[n] == e["matches"][n].get<int64_t>(), (c.name + ": matches").c_str());
          QVERIFY2(b.stats.totals[n] == e["totals"][n].get<int64_t>(), (c.name + ": totals").c_str());
          maxParts = std::max(maxParts, relDiff(b.precisions[n], e["precisions"][n].get<double>()));
        }
        maxParts =
            std::max({maxParts, relDiff(b.bp, e["bp"].get<double>()), relDiff(b.ratio, e["ratio"].get<double>())});
        const double d = relDiff(b.score, e["score"].get<double>());
        maxBleu = std::max(maxBleu, d);
        qInfo("%-45s %s BLEU %.6f (ref %.6f)", c.name.c_str(), key, b.score, e["score"].get<double>());
      }
      const double chrf = corpusChrf(c.hyps, c.refs);
      maxChrf = std::max(maxChrf, relDiff(chrf, rc["chrf"].get<double>()));
      qInfo("%-45s chrF %.6f (ref %.6f)", c.name.c_str(), chrf, rc["chrf"].get<double>());
      for (size_t i = 0; i < c.hyps.size(); ++i) {
        const auto& s = rc["sentences"][i];
        QCOMPARE(QString::fromStdString(tokenize13a(c.hyps[i])),
                 QString::fromStdString(s["tok_hyp"].get<std::string>()));
        maxSentBleu = std::max(maxSentBleu, relDiff(sentenceBleu(c.hyps[i], c.refs[i]).score, s["bleu"].get<double>()));
        maxSentChrf = std::max(maxSentChrf, relDiff(sentenceChrf(c.hyps[i], c.refs[i]), s["chrf"].get<double>()));
      }
    }
    qInfo(
        "max relative difference vs scripts/ref/bleu_ref.py: corpus BLEU %.3g, corpus chrF %.3g, sentence BLEU %.3g, "
        "sentence chrF %.3g, precisions/BP/ratio %.3g",
        maxBleu, maxChrf, maxSentBleu, maxSentChrf, maxParts);
    QVERIFY(maxBleu < 1e-9);
    QVERIFY(maxChrf < 1e-9);
    QVERIFY(maxSentBleu < 1e-9);
    QVERIFY(maxSentChrf < 1e-9);
    QVERIFY(maxParts < 1e-9);
  }

  void edgeCases() {
    // Identical pairs: 100 for both metrics.
    const std::vector<std::string> same = {"The dog bit the man.", "¿Quién es? ¡Él!", "a b c d e"};
    QVERIFY(std::fabs(corpusBleu(same, same).score - 100.0) < 1e-9);
    QVERIFY(std::fabs(corpusChrf(same, same) - 100.0) < 1e-9);
    QVERIFY(std::fabs(sentenceBleu("a b", "a b").score - 100.0) < 1e-9);  // effective order: 2 orders
    // No 4-gram match: unsmoothed corpus BLEU is 0, 'exp' gives p4 = 100 / (2 * totals_4).
    const std::vector<std::string> h = {"a b c x d e f"}, r = {"a b c y d e f"};
    const BleuScore none = corpusBleu(h, r, BleuSmoothing::None);
    const BleuScore exp = corpusBleu(h, r, BleuSmoothing::Exp);
    QCOMPARE(none.stats.matches[3], int64_t(0));
    QVERIFY(none.stats.matches[2] > 0);
    QCOMPARE(none.score, 0.0);
    QCOMPARE(exp.precisions[3], 100.0 / (2.0 * 4.0));
    QVERIFY(exp.score > 10.0);
    // Empty hypothesis: BLEU 0 (BP 0), chrF 0; an empty corpus too.
    QCOMPARE(corpusBleu({""}, {"x y"}).score, 0.0);
    QCOMPARE(corpusBleu({""}, {"x y"}).bp, 0.0);
    QCOMPARE(corpusChrf({""}, {"x y"}), 0.0);
    QCOMPARE(corpusBleu({}, {}).score, 0.0);
    // Code points, not bytes: "ñ" vs "n" share nothing; "añ" vs "añ" is 100.
    QCOMPARE(sentenceChrf("ñ", "n"), 0.0);
    QVERIFY(std::fabs(sentenceChrf("añ", "añ") - 100.0) < 1e-12);
    const ChrfStats st = chrfStatistics("añb", "añb");
    QCOMPARE(st.hyp[0], int64_t(3));  // 3 code points (4 bytes)
    QCOMPARE(st.hyp[2], int64_t(1));
    QCOMPARE(st.hyp[3], int64_t(0));
    // Bad input.
    bool threw = false;
    try {
      corpusBleu({"a", "b"}, {"a"});
    } catch (const ParameterError& e) {
      threw = std::string(e.what()).find("2 hypotheses but 1 references") != std::string::npos;
    }
    QVERIFY2(threw, "different segment counts must be refused");
    threw = false;
    try {
      corpusChrf({"ok", std::string("bad \xff byte")}, {"ok", "ref"});
    } catch (const FormatError& e) {
      threw = std::string(e.what()).find("hypothesis 2: invalid UTF-8") != std::string::npos;
    }
    QVERIFY2(threw, "invalid UTF-8 must be refused naming the segment");
  }

  void publishedSacrebleuValues() {
    // sacreBLEU test/test_sentence_bleu.py (#98): sentence BLEU, exp smoothing,
    // effective order, 13a: 8.493 (sacreBLEU's own tolerance 1e-3).
    const double s = sentenceBleu("Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;",
                                  "producţia de zahăr brut se exprimă în zahăr alb;")
                         .score;
    qInfo("sentence BLEU #98: %.6f (sacreBLEU 8.493)", s);
    QVERIFY(std::fabs(s - 8.493) < 1e-3);
    QCOMPARE(sentenceBleu("this is a cat", "okay thanks").score, 0.0);  // #141
    // test/test_chrf.py test_chrf_eff_order: corpus chrF with sacreBLEU's default
    // effective-order averaging (tolerance 1e-4 there). (Its sentence-level
    // cases use eps_smoothing=True, not the default, so they are not used.)
    QVERIFY(std::fabs(corpusChrf({"aa"}, {"ab"}) - 25.0) < 1e-4);
    QVERIFY(std::fabs(corpusChrf({"a", "b"}, {"a", "c"}) - 50.0) < 1e-4);
    QVERIFY(std::fabs(corpusChrf({"a b c"}, {"abc"}) - 100.0) < 1e-4);
    QVERIFY(std::fabs(corpusChrf({"a"}, {"a"}) - 100.0) < 1e-4);
    QCOMPARE(corpusChrf({""}, {"reference"}), 0.0);
  }
};

QTEST_GUILESS_MAIN(TestBleu)
#include "test_bleu.moc"
