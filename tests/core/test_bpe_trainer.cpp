// Byte-level BPE trainer: GPT-2 pre-tokenisation, deterministic training, and
// encode parity with the Hugging Face tokenizers reference (JS), both against
// checked-in reference ids (tests/data/train/, made by
// scripts/tokref-train/gen_reference.sh) and live when node and the npm
// package are installed.
#include <QtTest>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/text/tokenizer.h"
#include "analysis/train/bpe_trainer.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

fs::path fixtureDir() { return test::sourceDir() / "tests" / "data" / "train"; }

std::vector<std::string> fixtureTexts() {
  auto j = nlohmann::json::parse(readFile(fixtureDir() / "texts.json"));
  return j.get<std::vector<std::string>>();
}

std::vector<std::vector<int32_t>> refIds() {
  return nlohmann::json::parse(readFile(fixtureDir() / "ref_ids.json")).get<std::vector<std::vector<int32_t>>>();
}

BpeModel trainOn(const fs::path& corpus, int vocab) {
  BpeTrainOptions opt;
  opt.vocabSize = vocab;
  BpeTrainer trainer(opt);
  for (const auto& f : corpusTextFiles(corpus)) trainer.addText(readFile(f));
  return trainer.train(JobContext::none());
}

// Counts sequences whose ids differ and reports the first difference.
int compareIds(const std::vector<std::vector<int32_t>>& ours, const std::vector<std::vector<int32_t>>& ref,
               const std::vector<std::string>& texts, const char* what) {
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ours[i] == ref[i]) continue;
    if (bad++ == 0) {
      size_t k = 0;
      while (k < ours[i].size() && k < ref[i].size() && ours[i][k] == ref[i][k]) ++k;
      qWarning("%s: text %zu differs at token %zu (ours %zu tokens, reference %zu): %s", what, i, k, ours[i].size(),
               ref[i].size(), texts[i].substr(0, 80).c_str());
    }
  }
  qInfo("%s: %d of %zu texts differ from the HF reference", what, bad, ref.size());
  return bad;
}

}  // namespace

class TestBpeTrainer : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void pretokenizeGpt2() {
    // Hand-derived from the GPT-2 regex: of a run of spaces before a word, the last
    // space goes to the word (\s+(?!\S)); contractions split; digits, letters and
    // punctuation group separately; "\n\nx" gives "\n" (lookahead) then "\n" (\s+).
    // (Checked against JavaScript's /u regex with the same pattern.)
    std::vector<std::string> want = {"Hello", " world", "'s", " ", " end", "!!", " 1961", "\n", "\n", "x", " \xC3\xA9t\xC3\xA9"};
    QCOMPARE(gpt2PreTokenize("Hello world's  end!! 1961\n\nx \xC3\xA9t\xC3\xA9"), want);
    QCOMPARE(gpt2PreTokenize("a  \n b"), (std::vector<std::string>{"a", "  \n", " b"}));
    QCOMPARE(gpt2PreTokenize("trailing  "), (std::vector<std::string>{"trailing", "  "}));
    // Invalid UTF-8 becomes U+FFFD.
    QCOMPARE(gpt2PreTokenize("a\xFF"), (std::vector<std::string>{"a", "\xEF\xBF\xBD"}));
    QCOMPARE(byteLevelEncode(" \n"), std::string("\xC4\xA0\xC4\x8A"));  // "ĠĊ"
  }

  void retrainReproducesFixture() {
    BpeModel m = trainOn(test::sourceDir() / "data" / "corpus" / "brown" / "heldout", 1000);
    QCOMPARE(static_cast<int>(m.tokens.size()), 1000);
    QCOMPARE(static_cast<int>(m.merges.size()), 1000 - 257);
    const std::string json = m.toTokenizerJson();
    const std::string fixture = readFile(fixtureDir() / "tokenizer.json");
    QVERIFY2(json == fixture, "retraining on the Brown held-out split no longer reproduces tests/data/train/tokenizer.json");
    BpeModel back = BpeModel::fromTokenizerJson(fixtureDir() / "tokenizer.json");
    QCOMPARE(back.tokens, m.tokens);
    QCOMPARE(back.merges, m.merges);
  }

  void encodeMatchesCheckedInReference() {
    auto texts = fixtureTexts();
    auto ref = refIds();
    QCOMPARE(ref.size(), texts.size());
    BpeEncoder enc(BpeModel::fromTokenizerJson(fixtureDir() / "tokenizer.json"));
    std::vector<std::vector<int32_t>> ours;
    for (const auto& t : texts) ours.push_back(enc.encode(t, true));
    QCOMPARE(compareIds(ours, ref, texts, "BpeEncoder"), 0);
    // Lossless: decode(encode(x)) == x for text without the special token.
    for (const auto& t : texts) {
      std::string plain = t;
      for (size_t p; (p = plain.find("<|endoftext|>")) != std::string::npos;) plain.erase(p, 13);
      QCOMPARE(enc.decode(enc.encode(plain, true)), plain);
    }
  }

  void projectTokenizerMatchesReference() {
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = Tokenizer::fromFile(fixtureDir() / "tokenizer.json");
    } catch (const FormatError& e) {
      QSKIP(qPrintable(QString("Tokenizer::fromFile cannot load tokenizer.json in this build yet: ") + e.what()));
    }
    auto texts = fixtureTexts();
    auto ref = refIds();
    std::vector<std::vector<int32_t>> ours;
    for (const auto& t : texts) ours.push_back(tok->encode(t, true));
    QCOMPARE(compareIds(ours, ref, texts, "Tokenizer"), 0);
    QCOMPARE(tok->vocabSize(), 1000);
    QCOMPARE(tok->bosId().value_or(-1), 0);
  }

  void liveHfReference() {
    // A tokenizer trained here (other corpus and size than the fixture), encoded by
    // the HF JS implementation now.
    const fs::path here = test::sourceDir() / "scripts" / "tokref-train";
    if (!fs::exists(here / "node_modules" / "@huggingface" / "tokenizers"))
      QSKIP("npm package @huggingface/tokenizers is not installed (cd scripts/tokref-train && npm install)");
    if (test::run("node", {"--version"}, 30).exitCode != 0) QSKIP("node is not installed");
    auto dir = test::freshDir("bpe_live");
    fs::create_directories(dir / "corpus");
    auto files = corpusTextFiles(test::sourceDir() / "data" / "corpus" / "brown" / "train");
    std::string text;
    for (size_t i = 0; i < files.size(); i += files.size() / 3) text += readFile(files[i]) + "\n\n";
    writeFileAtomic(dir / "corpus" / "a.txt", text);
    BpeModel m = trainOn(dir / "corpus", 700);
    writeFileAtomic(dir / "tokenizer.json", m.toTokenizerJson());
    auto res = test::run("node",
                         {QString::fromStdString((here / "encode.mjs").string()),
                          QString::fromStdString((dir / "tokenizer.json").string()),
                          QString::fromStdString((fixtureDir() / "texts.json").string())},
                         120);
    QVERIFY2(res.exitCode == 0, res.err.c_str());
    auto ref = nlohmann::json::parse(res.out).get<std::vector<std::vector<int32_t>>>();
    auto texts = fixtureTexts();
    BpeEncoder enc(m);
    std::vector<std::vector<int32_t>> ours;
    for (const auto& t : texts) ours.push_back(enc.encode(t, true));
    QCOMPARE(compareIds(ours, ref, texts, "BpeEncoder (live)"), 0);
  }

  void badInput() {
    BpeTrainOptions small;
    small.vocabSize = 100;
    QVERIFY_THROWS_EXCEPTION(ParameterError, BpeTrainer{small});
    auto dir = test::freshDir("bpe_bad");
    writeFileAtomic(dir / "broken.json", "{\"model\": ");
    QVERIFY_THROWS_EXCEPTION(FormatError, BpeModel::fromTokenizerJson(dir / "broken.json"));
    writeFileAtomic(dir / "wordpiece.json", R"({"model": {"type": "WordPiece"}})");
    QVERIFY_THROWS_EXCEPTION(FormatError, BpeModel::fromTokenizerJson(dir / "wordpiece.json"));
    QVERIFY_THROWS_EXCEPTION(IoError, corpusTextFiles(dir / "missing"));
    fs::create_directories(dir / "empty");
    QVERIFY_THROWS_EXCEPTION(FormatError, corpusTextFiles(dir / "empty"));
    // CLI: one-line error, non-zero exit (2 for a bad parameter).
    auto r = test::runCli({"train-tokenizer", QString::fromStdString((dir / "missing").string()), "--out",
                           QString::fromStdString((dir / "t.json").string())});
    QVERIFY(r.exitCode != 0);
    QVERIFY2(r.err.find("missing") != std::string::npos, r.err.c_str());
    r = test::runCli({"train-tokenizer", QString::fromStdString((dir / "empty").string()), "--vocab", "5", "--out", "x.json"});
    QCOMPARE(r.exitCode, 2);
  }
};

QTEST_GUILESS_MAIN(TestBpeTrainer)
#include "test_bpe_trainer.moc"
