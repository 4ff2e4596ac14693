// Tokenizer parity with the reference implementations: @huggingface/tokenizers
// (pure JS) for the first eight files, the Rust `tokenizers` crate itself
// (its Node binding) for cl100k, o200k and phi3. The reference ids were
// generated once by scripts/tokref/make_parity_data.sh and are checked in
// under tests/data/tokenizer/ with the text set (1.2 MB, 1329 documents), the
// chat text set (added tokens next to whitespace; Rust-referenced files only)
// and the tokenizer.json files. For every file the ids must be identical for
// every document, except where the JS reference is documented to deviate from
// the Rust crate that wrote the files (docs/tokenizers.md, "Known differences
// of the JS reference"); those documents are counted and printed.
#include <QtTest>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <fstream>
#include <thread>

#include "analysis/io/safetensors.h"
#include "analysis/text/tokenizer.h"
#include "analysis/text/unicode.h"
#include "analysis/text/utf8.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

fs::path dataDir() { return test::sourceDir() / "tests" / "data" / "tokenizer"; }

std::string gunzip(const fs::path& gz) {
  auto r = test::run("gzip", {"-dc", QString::fromStdString(gz.string())}, 120);
  if (r.exitCode != 0) throw std::runtime_error("gzip -dc " + gz.string() + " failed: " + r.err);
  return r.out;
}

std::vector<std::string> splitNul(const std::string& s) {
  std::vector<std::string> v;
  size_t a = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == '\0') {
      v.push_back(s.substr(a, i - a));
      a = i + 1;
    }
  return v;
}

void writeFile(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

template <typename T>
std::vector<T> tensorVec(const SafetensorsFile& f, const std::string& name) {
  at::Tensor t = f.raw(name).contiguous();
  const T* p = static_cast<const T*>(t.data_ptr());
  return std::vector<T>(p, p + t.numel());
}

// Documents on which the JS reference is known to differ from the Rust crate
// for this tokenizer (see docs/tokenizers.md).
bool referenceDeviates(const std::string& name, const std::string& doc) {
  std::string t = name == "wordpiece_cased" ? uni::normalize(doc, uni::Form::NFKC) : doc;
  size_t i = 0;
  while (i < t.size()) {
    char32_t c = utf8::next(t, i);
    if (name == "gpt2") {
      // JS \s in ByteLevel's built-in GPT-2 regex: U+FEFF is whitespace, U+0085 is not.
      if (c == 0x85 || c == 0xFEFF) return true;
    } else if (name == "bert_wordpiece") {
      // JS lowercases a final sigma contextually and misses CJK ideographs
      // outside the BMP.
      if (c == 0x3A3 || (c >= 0x20000 && c <= 0x2FA1F)) return true;
    } else if (name == "wordpiece_cased") {
      // JS Digits uses ASCII \d (Rust: every numeric character); JS \s in
      // WhitespaceSplit has U+FEFF and lacks U+0085.
      if ((c >= 0x80 && uni::isNumber(c)) || c == 0xFEFF || c == 0x85) return true;
    }
  }
  return false;
}

struct DocResult {
  bool same = true;
  bool roundtripFail = false;
  std::vector<int32_t> ids;
};

}  // namespace

class TestTokenizerParity : public QObject {
  Q_OBJECT
  std::vector<std::string> docs_, invalid_, chat_;
  fs::path tmp_;

 private Q_SLOTS:
  void initTestCase() {
    tmp_ = test::freshDir("tokenizer_parity");
    docs_ = splitNul(gunzip(dataDir() / "textset.txt.gz"));
    std::ifstream in(dataDir() / "textset.invalid.bin", std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    invalid_ = splitNul(raw);
    size_t bytes = 0;
    for (const auto& d : docs_) bytes += d.size();
    qInfo("text set: %zu documents, %zu bytes; %zu invalid-UTF-8 documents", docs_.size(), bytes, invalid_.size());
    QVERIFY(bytes >= 1000000);
    QCOMPARE(docs_.size(), size_t(1329));
    size_t invalidCount = 0;
    for (const auto& d : invalid_) invalidCount += !utf8::isValid(d);
    QVERIFY(invalidCount > 150);
    chat_ = splitNul(gunzip(dataDir() / "textset.chat.txt.gz"));
    QCOMPARE(chat_.size(), size_t(3547));
  }

  void parity_data() {
    QTest::addColumn<QString>("name");
    for (const char* n : {"llama3", "qwen3", "gpt2", "llama2", "gemma3", "bert_wordpiece", "wordpiece_cased", "unigram",
                          "cl100k", "o200k", "phi3"})
      QTest::newRow(n) << QString(n);
  }

  void parity() {
    QFETCH(QString, name);
    const std::string n = name.toStdString();
    const fs::path json = tmp_ / (n + ".tokenizer.json");
    writeFile(json, gunzip(dataDir() / (n + ".tokenizer.json.gz")));
    const fs::path refPath = tmp_ / ("ref_" + n + ".safetensors");
    writeFile(refPath, gunzip(dataDir() / ("ref_" + n + ".safetensors.gz")));
    QElapsedTimer timer;
    timer.start();
    auto tok = Tokenizer::fromFile(json);
    const double loadS = timer.elapsed() / 1000.0;
    auto ref = SafetensorsFile::open(refPath);
    auto ids = tensorVec<int32_t>(*ref, "ids");
    auto offsets = tensorVec<int64_t>(*ref, "offsets");
    auto roundtrip = tensorVec<uint8_t>(*ref, "roundtrip");
    auto invIds = tensorVec<int32_t>(*ref, "invalid_ids");
    auto invOffsets = tensorVec<int64_t>(*ref, "invalid_offsets");
    QCOMPARE(offsets.size(), docs_.size() + 1);
    QCOMPARE(invOffsets.size(), invalid_.size() + 1);

    // Encode on two threads (the tokenizer is const and thread-safe).
    std::vector<DocResult> res(docs_.size());
    timer.restart();
    auto work = [&](size_t begin, size_t step) {
      for (size_t d = begin; d < docs_.size(); d += step) {
        DocResult& r = res[d];
        r.ids = tok->encode(docs_[d], true);
        r.same = r.ids.size() == static_cast<size_t>(offsets[d + 1] - offsets[d]) &&
                 std::equal(r.ids.begin(), r.ids.end(), ids.begin() + offsets[d]);
        if (r.same && roundtrip[d]) r.roundtripFail = tok->decode(r.ids, true) != docs_[d];
      }
    };
    std::thread t1(work, 0, 2), t2(work, 1, 2);
    t1.join();
    t2.join();
    const double encS = timer.elapsed() / 1000.0;

    // Unigram: a different segmentation with the same total score (to the last
    // ulp of the summation order) is a tie, not a mismatch.
    std::vector<double> scores;
    if (n == "unigram") {
      std::ifstream in(json);
      auto j = nlohmann::json::parse(in);
      for (const auto& e : j["model"]["vocab"]) scores.push_back(e[1].get<double>());
    }
    auto total = [&](const int32_t* p, size_t k) {
      double s = 0;
      for (size_t i = 0; i < k; ++i) s += p[i] >= 0 && static_cast<size_t>(p[i]) < scores.size() ? scores[p[i]] : 0;
      return s;
    };

    int mismatches = 0, documented = 0, ties = 0, rtFail = 0, rtChecked = 0;
    for (size_t d = 0; d < docs_.size(); ++d) {
      const DocResult& r = res[d];
      if (roundtrip[d] && r.same) ++rtChecked;
      rtFail += r.roundtripFail;
      if (r.same) continue;
      if (referenceDeviates(n, docs_[d])) {
        ++documented;
        continue;
      }
      if (!scores.empty()) {
        double a = total(r.ids.data(), r.ids.size()), b = total(ids.data() + offsets[d], static_cast<size_t>(offsets[d + 1] - offsets[d]));
        if (std::abs(a - b) <= 1e-12 * std::abs(a)) {
          ++ties;
          continue;
        }
      }
      if (mismatches < 3) {
        size_t k = 0;
        const int32_t* rp = ids.data() + offsets[d];
        size_t rn = static_cast<size_t>(offsets[d + 1] - offsets[d]);
        while (k < r.ids.size() && k < rn && r.ids[k] == rp[k]) ++k;
        qWarning("%s: document %zu differs at id %zu: ours %d '%s', reference %d '%s'", n.c_str(), d, k,
                 k < r.ids.size() ? r.ids[k] : -1, k < r.ids.size() ? tok->idToToken(r.ids[k]).c_str() : "",
                 k < rn ? rp[k] : -1, k < rn ? tok->idToToken(rp[k]).c_str() : "");
      }
      ++mismatches;
    }
    int invMismatch = 0;
    for (size_t d = 0; d < invalid_.size(); ++d) {
      auto mine = tok->encode(invalid_[d], true);
      bool same = mine.size() == static_cast<size_t>(invOffsets[d + 1] - invOffsets[d]) &&
                  std::equal(mine.begin(), mine.end(), invIds.begin() + invOffsets[d]);
      if (!same && !referenceDeviates(n, utf8::sanitized(invalid_[d]))) {
        if (!scores.empty()) {
          double a = total(mine.data(), mine.size()), b = total(invIds.data() + invOffsets[d], static_cast<size_t>(invOffsets[d + 1] - invOffsets[d]));
          if (std::abs(a - b) <= 1e-12 * std::abs(a)) continue;
        }
        ++invMismatch;
      }
    }
    // Chat text set (files whose reference is the Rust crate): every document
    // identical, and round-tripping wherever the reference does.
    int chatMismatch = 0, chatRtFail = 0;
    size_t chatIds = 0;
    if (ref->contains("chat_ids")) {
      auto cIds = tensorVec<int32_t>(*ref, "chat_ids");
      auto cOffsets = tensorVec<int64_t>(*ref, "chat_offsets");
      auto cRoundtrip = tensorVec<uint8_t>(*ref, "chat_roundtrip");
      QCOMPARE(cOffsets.size(), chat_.size() + 1);
      chatIds = cIds.size();
      for (size_t d = 0; d < chat_.size(); ++d) {
        auto mine = tok->encode(chat_[d], true);
        const size_t rn = static_cast<size_t>(cOffsets[d + 1] - cOffsets[d]);
        const int32_t* rp = cIds.data() + cOffsets[d];
        if (mine.size() != rn || !std::equal(mine.begin(), mine.end(), rp)) {
          if (chatMismatch < 3) {
            size_t k = 0;
            while (k < mine.size() && k < rn && mine[k] == rp[k]) ++k;
            qWarning("%s: chat document %zu differs at id %zu: ours %d '%s', reference %d '%s'", n.c_str(), d, k,
                     k < mine.size() ? mine[k] : -1, k < mine.size() ? tok->idToToken(mine[k]).c_str() : "",
                     k < rn ? rp[k] : -1, k < rn ? tok->idToToken(rp[k]).c_str() : "");
          }
          ++chatMismatch;
        } else if (cRoundtrip[d] && tok->decode(mine, true) != chat_[d]) {
          ++chatRtFail;
        }
      }
    }
    size_t bytes = 0;
    for (const auto& d : docs_) bytes += d.size();
    qInfo(
        "%-16s %s: %d mismatches, %d documented reference deviations, %d score ties, %zu ids; "
        "invalid UTF-8: %d mismatches; chat: %d mismatches, %zu ids, %d round-trip failures; "
        "round trip: %d failures of %d; load %.1f s, encode %.2f MB/s (2 threads)",
        n.c_str(), tok->kind().c_str(), mismatches, documented, ties, ids.size(), invMismatch, chatMismatch, chatIds,
        chatRtFail, rtFail, rtChecked, loadS, bytes / 1e6 / encS);
    QCOMPARE(mismatches, 0);
    QCOMPARE(invMismatch, 0);
    QCOMPARE(chatMismatch, 0);
    QCOMPARE(chatRtFail, 0);
    QCOMPARE(rtFail, 0);
    // The exclusions must stay the exception.
    QVERIFY2(documented + ties < static_cast<int>(docs_.size()) / 8, "too many documents excluded");
  }

  void cleanupTestCase() { fs::remove_all(tmp_); }
};

QTEST_GUILESS_MAIN(TestTokenizerParity)
#include "test_tokenizer_parity.moc"
