// SentencePiece .model files (read without libsentencepiece) against
// libsentencepiece itself: the reference ids were produced once by Debian's
// spm_encode (scripts/tokref/make_spm_data.sh) for every line of the parity
// text set and of the invalid-UTF-8 documents.
#include <QtTest>

#include <fstream>

#include "analysis/common/error.h"
#include "analysis/text/tokenizer.h"
#include "analysis/text/utf8.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

fs::path dataDir() { return test::sourceDir() / "tests" / "data" / "tokenizer"; }

std::string gunzip(const fs::path& gz) {
  auto r = test::run("gzip", {"-dc", QString::fromStdString(gz.string())}, 120);
  if (r.exitCode != 0) throw std::runtime_error("gzip -dc " + gz.string() + " failed");
  return r.out;
}

std::vector<std::string> lines(std::string s) {
  std::vector<std::string> v;
  size_t a = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') {
      v.push_back(s.substr(a, i - a));
      a = i + 1;
    }
  if (a < s.size()) v.push_back(s.substr(a));
  return v;
}

std::string joinIds(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

}  // namespace

class TestSentencePieceModel : public QObject {
  Q_OBJECT
  std::vector<std::string> text_, invalid_;

 private Q_SLOTS:
  void initTestCase() {
    std::string t = gunzip(dataDir() / "textset.txt.gz");
    std::replace(t.begin(), t.end(), '\0', '\n');
    text_ = lines(t);
    std::ifstream in(dataDir() / "textset.invalid.bin", std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(raw.begin(), raw.end(), '\0', '\n');
    invalid_ = lines(raw);
  }

  void parity_data() {
    QTest::addColumn<QString>("name");
    QTest::newRow("spm_bpe") << "spm_bpe";
    QTest::newRow("spm_unigram") << "spm_unigram";
  }

  void parity() {
    QFETCH(QString, name);
    const std::string n = name.toStdString();
    auto tok = Tokenizer::fromFile(dataDir() / (n + ".model"));
    auto ref = lines(gunzip(dataDir() / (n + "_ids.txt.gz")));
    auto refInv = lines(gunzip(dataDir() / (n + "_invalid_ids.txt.gz")));
    QCOMPARE(ref.size(), text_.size());
    QCOMPARE(refInv.size(), invalid_.size());
    int mismatches = 0, invMismatches = 0, rtFail = 0, rtChecked = 0;
    for (size_t i = 0; i < text_.size(); ++i) {
      auto ids = tok->encode(text_[i], false);
      if (joinIds(ids) != ref[i]) {
        if (mismatches < 3) qWarning("%s line %zu: ours '%s', spm_encode '%s'", n.c_str(), i, joinIds(ids).c_str(), ref[i].c_str());
        ++mismatches;
      }
      // The BPE model normalizes nothing (identity, whitespace kept), so
      // decoding gives the line back, except where the line itself has
      // U+2581, which SentencePiece decodes as a space (as spm_decode does).
      if (n == "spm_bpe" && !text_[i].empty() && text_[i].find("\xE2\x96\x81") == std::string::npos) {
        ++rtChecked;
        rtFail += tok->decode(ids) != text_[i];
      }
    }
    for (size_t i = 0; i < invalid_.size(); ++i) invMismatches += joinIds(tok->encode(invalid_[i], false)) != refInv[i];
    qInfo("%s (%s): %d of %zu lines differ from spm_encode; invalid UTF-8: %d of %zu; round trip failures: %d of %d", n.c_str(),
          tok->kind().c_str(), mismatches, text_.size(), invMismatches, invalid_.size(), rtFail, rtChecked);
    QCOMPARE(mismatches, 0);
    QCOMPARE(invMismatches, 0);
    QCOMPARE(rtFail, 0);
  }

  void modelFolderAndSpecials() {
    auto dir = test::freshDir("spm_folder");
    fs::copy_file(dataDir() / "spm_bpe.model", dir / "tokenizer.model");
    auto tok = Tokenizer::fromModelDir(dir);
    auto ids = tok->encode("Hello world", true);
    QCOMPARE(ids.front(), *tok->bosId());  // BOS by default, as HF's Llama tokenizer
    QCOMPARE(tok->idToToken(*tok->bosId()), std::string("<s>"));
    QCOMPARE(tok->decode(ids, true), std::string("Hello world"));
    QCOMPARE(tok->encode("<s>", false).front() != *tok->bosId(), true);  // control pieces are not matched in text
    std::ofstream(dir / "tokenizer_config.json") << "{\"add_bos_token\": false, \"add_eos_token\": true}";
    tok = Tokenizer::fromModelDir(dir);
    ids = tok->encode("Hello world", true);
    QVERIFY(ids.front() != *tok->bosId());
    QCOMPARE(ids.back(), *tok->eosId());
    // A flag that is not a boolean is refused by name, as on the tokenizer.json path.
    std::ofstream(dir / "tokenizer_config.json", std::ios::trunc) << "{\"add_bos_token\": \"yes\"}";
    try {
      Tokenizer::fromModelDir(dir);
      QFAIL("expected FormatError for a non-boolean add_bos_token");
    } catch (const FormatError& e) {
      QVERIFY2(
          std::string(e.what()).find("tokenizer_config.json: add_bos_token must be true or false") != std::string::npos,
          e.what());
    }
    std::ofstream(dir / "tokenizer_config.json", std::ios::trunc) << "[true]";
    try {
      Tokenizer::fromModelDir(dir);
      QFAIL("expected FormatError for a tokenizer_config.json that is not an object");
    } catch (const FormatError& e) {
      QVERIFY2(std::string(e.what()).find("not a JSON object") != std::string::npos, e.what());
    }
    std::filesystem::remove(dir / "tokenizer_config.json");
    // Not a model: a clear error naming the file.
    std::ofstream(dir / "bad.model") << "this is not a protobuf \xff\xff\xff";
    try {
      Tokenizer::fromFile(dir / "bad.model");
      QFAIL("expected FormatError");
    } catch (const FormatError& e) {
      QVERIFY(std::string(e.what()).find("bad.model: not a SentencePiece model") != std::string::npos);
    }
    auto empty = test::freshDir("spm_empty");
    QVERIFY_THROWS_EXCEPTION(FormatError, Tokenizer::fromModelDir(empty));
  }
};

QTEST_GUILESS_MAIN(TestSentencePieceModel)
#include "test_sentencepiece_model.moc"
