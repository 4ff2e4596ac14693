// Issue 12, the reader kinds: every input reader refuses what it cannot read
// exactly, with one line naming the file and key/tensor, instead of guessing
// (duplicates, gaps), using non-finite numbers, narrowing 64-bit integers,
// recursing without bound, or blocking on a FIFO. Each test fails on the
// behaviour before the fix (last entry wins, NaN logits, 2^32 -> 0, SIGSEGV,
// a hang).
#include <ATen/ATen.h>
#include <sys/stat.h>

#include <QtTest>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/eval/eval_file.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/input_file.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/config.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"
#include "analysis/text/corpus.h"
#include "analysis/text/hf_tokenizer.h"
#include "analysis/text/tokenizer.h"
#include "error_of.h"
#include "testutil.h"

using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::sourceDir;
namespace fs = std::filesystem;
using namespace moefy;
using moefy::test::errorOf;

namespace {

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

#define EXPECT_ERROR(expr, ...)                                                                            \
  do {                                                                                                     \
    const std::string msg_ = errorOf([&] { (void)(expr); });                                               \
    QVERIFY2(!msg_.empty(), "accepted: " #expr);                                                           \
    QVERIFY2(msg_.find('\n') == std::string::npos, ("more than one line: " + msg_).c_str());               \
    for (const char* n_ : {__VA_ARGS__})                                                                   \
      QVERIFY2(msg_.find(n_) != std::string::npos, ("'" + std::string(n_) + "' not in: " + msg_).c_str()); \
    qInfo("%s", msg_.c_str());                                                                             \
  } while (0)

// A safetensors file from a header text and a data region of `dataBytes` zero bytes.
std::string safetensorsBytes(const std::string& header, size_t dataBytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(dataBytes, '\0');
}

void parseHeader(const std::string& bytes) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> meta;
  uint64_t start = 0;
  parseSafetensorsHeader(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "m.safetensors", tensors, meta,
                         start);
}

// SentencePiece protobuf, written by hand (sentencepiece_model.proto field numbers).
std::string varint(uint64_t v) {
  std::string s;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    s.push_back(static_cast<char>(b | (v ? 0x80 : 0)));
  } while (v);
  return s;
}
std::string lenField(int num, const std::string& payload) {
  return varint((num << 3) | 2) + varint(payload.size()) + payload;
}
std::string intField(int num, uint64_t v) { return varint(num << 3) + varint(v); }
std::string piece(const std::string& p, float score, int type = 1) {
  std::string f(4, '\0');
  std::memcpy(f.data(), &score, 4);
  return lenField(1, lenField(1, p) + varint((2 << 3) | 5) + f + intField(3, type));
}
std::string spmModel(const std::vector<std::tuple<std::string, float, int>>& pieces) {
  std::string s;
  for (const auto& [p, score, type] : pieces) s += piece(p, score, type);
  s += lenField(2, intField(3, 1) + intField(40, 0) + intField(41, 1) + intField(42, 2));
  s += lenField(3, lenField(1, "identity") + intField(3, 1));
  return s;
}
std::vector<std::tuple<std::string, float, int>> spmPieces() {
  return {{"<unk>", 0.f, 2}, {"<s>", 0.f, 3}, {"</s>", 0.f, 3}, {"\xe2\x96\x81", -1.f, 1},
          {"a", -2.f, 1},    {"b", -2.5f, 1}, {"ab", -1.5f, 1}};
}

// A minimal tokenizer.json with a WordPiece or Unigram model.
std::string wordPieceJson(const std::string& vocab) {
  return R"({"model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {)" + vocab + "}}}";
}

bool makeFifo(const fs::path& p) {
  fs::remove(p);
  return ::mkfifo(p.c_str(), 0600) == 0;
}

}  // namespace

class ReaderHardening : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  // ------------------------------------------------------------ kind 2: no guessing
  void safetensorsTensorNamedTwice() {
    // nlohmann keeps the last entry; the reference reader refuses the file.
    const std::string h =
        R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
    EXPECT_ERROR(parseHeader(safetensorsBytes(h, 4)), "m.safetensors", "'w'", "twice");
  }

  void safetensorsUnreferencedBytes() {
    const std::string gap =
        R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
    EXPECT_ERROR(parseHeader(safetensorsBytes(gap, 6)), "m.safetensors", "2 unreferenced bytes", "'b'");
    const std::string tail = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
    EXPECT_ERROR(parseHeader(safetensorsBytes(tail, 5)), "m.safetensors", "3 unreferenced bytes at the end");
    // Exact coverage, with an empty tensor, is accepted.
    const std::string ok =
        R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}})";
    QCOMPARE(errorOf([&] { parseHeader(safetensorsBytes(ok, 4)); }), std::string());
  }

  void sentencePieceDuplicatesAndNonFiniteScores() {
    const fs::path d = freshDir("reader_hardening/spm");
    spit(d / "ok.model", spmModel(spmPieces()));
    auto tok = Tokenizer::fromFile(d / "ok.model");
    QVERIFY(!tok->encode("ab a", false).empty());

    auto dup = spmPieces();
    dup.emplace_back("a", -0.5f, 1);  // the same piece again, with a better score
    spit(d / "dup.model", spmModel(dup));
    EXPECT_ERROR(Tokenizer::fromFile(d / "dup.model"), "dup.model", "piece 'a' appears twice", "ids 4 and 7");

    // An int32 field holding 2^32 + 3 (low 32 bits: a valid id 3).
    spit(d / "unk.model", spmModel(spmPieces()) + lenField(2, intField(40, (uint64_t{1} << 32) + 3)));
    EXPECT_ERROR(Tokenizer::fromFile(d / "unk.model"), "unk.model", "4294967299", "int32");

    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
      auto p = spmPieces();
      std::get<1>(p[5]) = bad;
      spit(d / "nan.model", spmModel(p));
      EXPECT_ERROR(Tokenizer::fromFile(d / "nan.model"), "nan.model", "piece 'b'", "non-finite score");
    }
  }

  void tokenizerJsonDuplicates() {
    // Duplicate key in a BPE/WordPiece vocab object: refused by the JSON reader.
    EXPECT_ERROR(HfTokenizer::fromJson(wordPieceJson(R"("[UNK]": 0, "a": 1, "a": 2)"), "t.json"), "t.json",
                 "key 'a' appears twice");
    // Two tokens with one id.
    EXPECT_ERROR(HfTokenizer::fromJson(wordPieceJson(R"("[UNK]": 0, "a": 1, "b": 1)"), "t.json"), "t.json",
                 "id 1 is used twice");
    // Unigram: a duplicated piece, a score of 1e999 (parses as Inf).
    const std::string uni =
        R"({"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0], %s]}})";
    auto with = [&](const std::string& extra) {
      std::string s = uni;
      return s.replace(s.find("%s"), 2, extra);
    };
    QCOMPARE(errorOf([&] { HfTokenizer::fromJson(with(R"(["b", -2.0])"), "u.json"); }), std::string());
    EXPECT_ERROR(HfTokenizer::fromJson(with(R"(["a", -2.0])"), "u.json"), "u.json", "piece 'a' appears twice");
    // JSON cannot spell NaN; a score too large for a double is refused by the parser.
    EXPECT_ERROR(HfTokenizer::fromJson(with(R"(["b", 1e999])"), "u.json"), "u.json", "malformed JSON", "1e999");
  }

  void vocabSizeCoversTheLargestId() {
    // Found by fuzz_tokenizer_json: ids with a gap made vocabSize() the entry count (3), below id 10.
    auto wp = HfTokenizer::fromJson(wordPieceJson(R"("[UNK]": 0, "a": 1, "end": 10)"), "g.json");
    QCOMPARE(wp->vocabSize(), 11);
    auto bpe =
        HfTokenizer::fromJson(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 5}, "merges": []}})", "b.json");
    QCOMPARE(bpe->vocabSize(), 6);
  }

  // ------------------------------------------------------------ kind 3: numeric content
  void requireFiniteNamesTensorAndIndex() {
    at::Tensor t = at::zeros({3, 4});
    QCOMPARE(errorOf([&] { requireFinite(t, "f.safetensors", "w"); }), std::string());
    t[1][2] = std::nan("");
    t[2][3] = -INFINITY;
    EXPECT_ERROR(requireFinite(t, "f.safetensors", "w"), "f.safetensors: tensor 'w' has 2 NaN/Inf values",
                 "flat index 6");
    at::Tensor h = at::ones({5}, at::kHalf);
    h[4] = INFINITY;
    EXPECT_ERROR(requireFinite(h, "h.safetensors", "x"), "tensor 'x' has 1 NaN/Inf value", "flat index 4");
    QCOMPARE(errorOf([&] { requireFinite(at::full({4}, -1, at::kLong), "i", "ids"); }), std::string());
    // Cost, for the record: one pass over 16M floats next to the F16->F32 conversion a load already does.
    at::Tensor big = at::randn({16 << 20});
    at::Tensor half = big.to(at::kHalf);
    big[(16 << 20) - 1] = INFINITY;  // the last value: the whole tensor is scanned
    auto t0 = std::chrono::steady_clock::now();
    const std::string e = errorOf([&] { requireFinite(big, "big", "w"); });
    auto t1 = std::chrono::steady_clock::now();
    at::Tensor f = half.to(at::kFloat);
    auto t2 = std::chrono::steady_clock::now();
    QVERIFY(e.find("flat index 16777215") != std::string::npos);
    qInfo("requireFinite over 64 MB of F32: %.1f ms; F16->F32 conversion of the same tensor: %.1f ms",
          std::chrono::duration<double, std::milli>(t1 - t0).count(),
          std::chrono::duration<double, std::milli>(t2 - t1).count());
  }

  void nanWeightRefusedAtLoad() {
    // One NaN in an FFN weight of the bundled model: before, `forward` exited 0 with all-NaN logits.
    const fs::path d = freshDir("reader_hardening/nan_model");
    fs::copy(sourceDir() / "data/models/brown-relu", d / "m", fs::copy_options::recursive);
    const fs::path st = d / "m" / "model.safetensors";
    {
      auto f = SafetensorsFile::open(st);
      const TensorInfo* t = f->find("transformer.h.0.mlp.c_fc.weight");
      QVERIFY(t && (t->dtype == DType::F16 || t->dtype == DType::F32));
      std::string bytes = slurp(st);
      uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
      char* at = bytes.data() + 8 + n + t->begin + dtypeSize(t->dtype) * 12345;
      if (t->dtype == DType::F16) {
        const uint16_t nan16 = 0x7e00;  // IEEE half NaN
        std::memcpy(at, &nan16, 2);
      } else {
        const float nan = std::nanf("");
        std::memcpy(at, &nan, 4);
      }
      f.reset();
      spit(st, bytes);
    }
    auto r = runCli({"forward", qs(d / "m"), "--ids", "1,2,3"}, 300);
    QVERIFY2(r.exitCode == 1, ("exit " + std::to_string(r.exitCode) + ": " + r.err).c_str());
    QVERIFY2(r.err.find("transformer.h.0.mlp.c_fc.weight") != std::string::npos &&
                 r.err.find("NaN/Inf") != std::string::npos && r.err.find("flat index 12345") != std::string::npos,
             r.err.c_str());
  }

  void nanRouterWeightsRefused() {
    const fs::path d = freshDir("reader_hardening/router");
    nlohmann::json j = {
        {"format", "moefy-router"}, {"version", 1}, {"kind", "mlp"}, {"layers", {0}}, {"top_k", {2}}, {"experts", {4}},
        {"model_fingerprint", "0123456789abcdef"}, {"partition", {{"labels_hash", "0123456789abcdef"}}}};
    spit(d / "router.json", j.dump());
    at::Tensor w1 = at::zeros({8, 16}), w2 = at::zeros({4, 8});
    writeSafetensors(d / "router.safetensors", {{"blk.0.w1", w1}, {"blk.0.w2", w2}});
    QCOMPARE(errorOf([&] { RouterSet::read(d); }), std::string());
    w2[3][1] = std::nan("");
    writeSafetensors(d / "router.safetensors", {{"blk.0.w1", w1}, {"blk.0.w2", w2}});
    EXPECT_ERROR(RouterSet::read(d), "router.safetensors", "'blk.0.w2'", "NaN/Inf");
  }

  // Router diagnostics (issue 20): RouterSet::siteReport reads each entry's
  // per-epoch losses (a null held-out loss is NaN) and metrics under the
  // entry's key (the bare layer, or the site name), and refuses a malformed
  // training or metrics block with one line naming router.json and the key;
  // RouterSet::read itself keeps accepting the router.
  void routerSiteReportValidated() {
    const fs::path d = freshDir("reader_hardening/router_report");
    const nlohmann::json epochs =
        nlohmann::json::array({{{"train", 0.7}, {"held_out", 0.75}}, {{"train", 0.5}, {"held_out", nullptr}}});
    nlohmann::json j = {{"format", "moefy-router"},
                        {"version", 1},
                        {"kind", "mlp"},
                        {"layers", {0, 1}},
                        {"top_k", {2, 2}},
                        {"experts", {4, 4}},
                        {"model_fingerprint", "0123456789abcdef"},
                        {"partition", {{"labels_hash", "0123456789abcdef"}}},
                        {"training", {{"0", {{"epochs", epochs}, {"input_scale", 1.5}}}}},
                        {"metrics",
                         {{"0", {{"mass_recall", 0.8}, {"overlap", 0.625}, {"samples", 40}}},
                          {"blk.1", {{"mass_recall", 1.0}, {"overlap", 1.0}}}}}};
    spit(d / "router.json", j.dump());
    writeSafetensors(d / "router.safetensors", {{"blk.0.w1", at::zeros({4, 16})},
                                                {"blk.0.w2", at::zeros({4, 4})},
                                                {"blk.1.w1", at::zeros({4, 16})},
                                                {"blk.1.w2", at::zeros({4, 4})}});
    RouterSet rs = RouterSet::read(d);
    const RouterSiteReport r0 = rs.siteReport(0), r1 = rs.siteReport(1);
    QCOMPARE(r0.trainLoss, (std::vector<double>{0.7, 0.5}));
    QCOMPARE(int(r0.heldOutLoss.size()), 2);
    QCOMPARE(r0.heldOutLoss[0], 0.75);
    QVERIFY(std::isnan(r0.heldOutLoss[1]));
    QCOMPARE(r0.massRecall, 0.8);
    QCOMPARE(r0.overlap, 0.625);
    QCOMPARE(r0.samples, int64_t{40});
    QVERIFY(std::isnan(r0.meanK));
    QVERIFY(r1.trainLoss.empty() && r1.heldOutLoss.empty());  // no training entry
    QCOMPARE(r1.massRecall, 1.0);                             // keyed by the site name
    QCOMPARE(r1.samples, int64_t{0});
    bool outOfRange = false;
    try {
      (void)rs.siteReport(2);
    } catch (const std::out_of_range&) {
      outOfRange = true;
    }
    QVERIFY(outOfRange);
    QVERIFY(routerKindTrained(RouterKind::Mlp) && routerKindTrained(RouterKind::DynamicK));
    QVERIFY(!routerKindTrained(RouterKind::Oracle) && !routerKindTrained(RouterKind::Similarity));
    QCOMPARE(std::string(routerLossName(RouterKind::Sigmoid)), std::string("BCE with logits"));
    QCOMPARE(std::string(routerLossName(RouterKind::DynamicK)), std::string("log-norm MSE"));
    QCOMPARE(std::string(routerLossName(RouterKind::Similarity)), std::string());

    // Malformed blocks: read() accepts the router, siteReport names the key.
    auto damaged = [&](const std::function<void(nlohmann::json&)>& edit) {
      nlohmann::json k = j;
      edit(k);
      spit(d / "router.json", k.dump());
      return RouterSet::read(d);
    };
    rs = damaged([](nlohmann::json& k) { k["training"]["0"]["epochs"][1]["train"] = "low"; });
    EXPECT_ERROR(rs.siteReport(0), "router.json", "training.0.epochs[1].train must be a number");
    QCOMPARE(errorOf([&] { (void)rs.siteReport(1); }), std::string());  // another entry still reads
    rs = damaged([](nlohmann::json& k) { k["training"]["0"]["epochs"] = 3; });
    EXPECT_ERROR(rs.siteReport(0), "router.json", "training.0.epochs must be a list");
    rs = damaged([](nlohmann::json& k) { k["training"]["0"]["epochs"][0] = {0.7, 0.75}; });
    EXPECT_ERROR(rs.siteReport(0), "router.json", "training.0.epochs[0] must be an object");
    rs = damaged([](nlohmann::json& k) { k["training"] = nlohmann::json::array({1, 2}); });
    EXPECT_ERROR(rs.siteReport(0), "router.json", "training must be an object");
    rs = damaged([](nlohmann::json& k) { k["metrics"]["blk.1"] = 0.5; });
    EXPECT_ERROR(rs.siteReport(1), "router.json", "metrics.blk.1 must be an object");
    rs = damaged([](nlohmann::json& k) { k["metrics"]["0"]["samples"] = -3; });
    EXPECT_ERROR(rs.siteReport(0), "router.json", "metrics.0.samples");
    // A number too large for a double (1e999) is refused by the JSON reader itself, naming the file.
    std::string text = j.dump();
    const size_t at = text.find("0.625");
    QVERIFY(at != std::string::npos);
    text.replace(at, 5, "1e999");
    spit(d / "router.json", text);
    EXPECT_ERROR(RouterSet::read(d), "router.json", "malformed JSON", "1e999");
  }

  void evalJsonInvariants() {
    nlohmann::json ok = {{"format", "moefy-eval"},
                         {"reference", {{"loss", 3.0}, {"perplexity", 20.1}}},
                         {"results",
                          {{{"fraction", 0.5},
                            {"loss", 3.1},
                            {"perplexity", 22.2},
                            {"kl", 0.01},
                            {"top1_agreement", 0.9},
                            {"layer_rel_error", {0.2, nullptr}},
                            {"speed", {{"forward_speedup", 1.5}, {"generate_speedup", 1.2}}}}}}};
    QCOMPARE(errorOf([&] { validateEvalDocument(ok, "e.json"); }), std::string());
    auto bad = [&](const char* ptr, nlohmann::json v) {
      nlohmann::json j = ok;
      j[nlohmann::json::json_pointer(ptr)] = v;
      return j;
    };
    EXPECT_ERROR(validateEvalDocument(bad("/results/0/perplexity", -5), "e.json"),
                 "e.json: results[0].perplexity = -5 is below 1");
    EXPECT_ERROR(validateEvalDocument(bad("/results/0/speed/forward_speedup", -1e300), "e.json"),
                 "results[0].speed.forward_speedup", "above 0");
    EXPECT_ERROR(validateEvalDocument(bad("/reference/perplexity", 0.5), "e.json"), "reference.perplexity");
    EXPECT_ERROR(validateEvalDocument(bad("/results/0/fraction", 2), "e.json"), "results[0].fraction = 2 is above 1");
    EXPECT_ERROR(validateEvalDocument(bad("/results/0/layer_rel_error/0", -1), "e.json"), "layer_rel_error[0]");
    // The file reader: a value too large for a double, a perplexity below 1.
    const fs::path d = freshDir("reader_hardening/eval");
    std::string text = ok.dump();
    text.replace(text.find("22.2"), 4, "1e999");
    spit(d / "eval.json", text);
    EXPECT_ERROR(readEvalFile(d / "eval.json"), "eval.json", "malformed JSON", "1e999");
    spit(d / "eval.json", bad("/results/0/perplexity", -5).dump());
    EXPECT_ERROR(readEvalFile(d / "eval.json"), "eval.json: results[0].perplexity = -5 is below 1");
  }

  // ------------------------------------------------------------ kind 5: 64 bits before narrowing
  void jsonIntegerChecksBeforeNarrowing() {
    const auto two32 = nlohmann::json::parse("4294967296");
    EXPECT_ERROR(jsonInt(two32, 0, 100, "f: layer"), "f: layer = 4294967296 is outside [0, 100]");
    EXPECT_ERROR(jsonInt(nlohmann::json::parse("18446744073709551615"), 0, 100, "k"), "18446744073709551615");
    EXPECT_ERROR(jsonInt(nlohmann::json::parse("-4294967295"), 0, 100, "k"), "-4294967295");
    EXPECT_ERROR(jsonInt(nlohmann::json::parse("1.5"), 0, 100, "k"), "k must be an integer");
    QCOMPARE(jsonInt(nlohmann::json::parse("7"), 0, 100, "k"), 7);
  }

  void preTokenisedIdsChecked64() {
    const fs::path d = freshDir("reader_hardening/ids");
    for (int64_t bad : {(int64_t{1} << 32) + 5, -(int64_t{1} << 32) + 3, int64_t{1} << 40}) {
      at::Tensor ids = at::tensor({int64_t{1}, bad, int64_t{7}, int64_t{9}}, at::kLong).view({1, 4});
      writeSafetensors(d / "ids.safetensors", {{"token_ids", ids}});
      SourceInfo info;
      const std::string badText = std::to_string(bad);  // outlives the macro's list of expected substrings
      EXPECT_ERROR(tokenFileSource(d / "ids.safetensors", info), "ids.safetensors", "token_ids[0, 1]", badText.c_str());
    }
    // Padding past a sequence's length is never read and is not checked.
    at::Tensor ids = at::tensor({int64_t{1}, int64_t{2}, int64_t{1} << 40, int64_t{-1}}, at::kLong).view({1, 4});
    writeSafetensors(d / "pad.safetensors", {{"token_ids", ids}, {"lengths", at::tensor({int64_t{2}})}});
    SourceInfo info;
    auto src = tokenFileSource(d / "pad.safetensors", info);
    std::vector<int32_t> seen;
    src([&](const Sequence& s) {
      seen = s.ids;
      return true;
    });
    QCOMPARE(seen, (std::vector<int32_t>{1, 2}));
  }

  void artefactIntegersChecked64() {
    const fs::path d = freshDir("reader_hardening/artefacts");
    // manifest.json: layer 2^32 used to read as layer 0.
    nlohmann::json man = {
        {"format", "moefy-recording"},
        {"version", 1},
        {"model", {{"fingerprint", "x"}, {"path", "/m"}, {"d_ff", 64}, {"d_model", 16}, {"layers", 2}}},
        {"corpus", {{"categories", nlohmann::json::array()}}},
        {"tokens", 10},
        {"sequences", 1},
        {"chunks_done", 1},
        {"layers", {uint64_t{1} << 32}}};
    fs::create_directories(d / "rec");
    spit(d / "rec" / "manifest.json", man.dump());
    EXPECT_ERROR(Recording::open(d / "rec"), "manifest.json", "layer 4294967296");
    man["layers"] = {0};
    man["model"]["d_ff"] = (uint64_t{1} << 32) + 64;
    spit(d / "rec" / "manifest.json", man.dump());
    EXPECT_ERROR(Recording::open(d / "rec"), "manifest.json", "d_ff = 4294967360");
    // partition.json: 2^32 + 4 experts used to read as 4.
    nlohmann::json part = {{"format", "moefy-partition"},
                           {"version", 1},
                           {"experts", (uint64_t{1} << 32) + 4},
                           {"d_ff", 64},
                           {"method", "random"},
                           {"model_fingerprint", "x"},
                           {"layers", {0}}};
    fs::create_directories(d / "part");
    spit(d / "part" / "partition.json", part.dump());
    EXPECT_ERROR(Partition::open(d / "part"), "partition.json", "experts = 4294967300");
    // router.json: a layer 2^32.
    nlohmann::json router = {{"format", "moefy-router"},
                             {"kind", "oracle"},
                             {"layers", {uint64_t{1} << 32}},
                             {"top_k", {1}},
                             {"experts", {4}}};
    fs::create_directories(d / "router");
    spit(d / "router" / "router.json", router.dump());
    EXPECT_ERROR(RouterSet::read(d / "router"), "router.json", "layers[0] = 4294967296");
    // tokenizer.json: a vocab id 2^40 used to become 0.
    EXPECT_ERROR(HfTokenizer::fromJson(wordPieceJson(R"("[UNK]": 0, "a": 1099511627776)"), "t.json"), "t.json",
                 "1099511627776");
    EXPECT_ERROR(HfTokenizer::fromJson(
                     R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1099511627777}, "merges": []}})", "b.json"),
                 "b.json", "'b'", "1099511627777");
  }

  // ------------------------------------------------------------ kind 6: depth limit at parse time
  void deepJsonIsOneLineError() {
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    EXPECT_ERROR(parseJson(deep, "d.json"), "d.json: JSON nested deeper than 256 levels");
    const std::string deepObj =
        R"({"model_type": "gpt2", "x": )" + std::string(200000, '[') + std::string(200000, ']') + "}";
    const fs::path d = freshDir("reader_hardening/deep");
    spit(d / "config.json", deepObj);
    EXPECT_ERROR(ModelConfig::fromFile(d / "config.json"), "config.json", "nested deeper");
    fs::create_directories(d / "part");
    spit(d / "part" / "partition.json", deepObj);
    EXPECT_ERROR(Partition::open(d / "part"), "partition.json", "nested deeper");
    // Through the CLI: before, SIGSEGV.
    fs::copy(sourceDir() / "data/models/brown-relu", d / "m", fs::copy_options::recursive);
    spit(d / "m" / "config.json", deepObj);
    auto r = runCli({"inspect", qs(d / "m")}, 120);
    QVERIFY2(r.exitCode == 1, ("exit " + std::to_string(r.exitCode) + ": " + r.err).c_str());
    QVERIFY2(r.err.find("nested deeper than 256") != std::string::npos, r.err.c_str());
    // 256 levels are fine.
    QCOMPARE(errorOf([&] { parseJson(std::string(256, '[') + std::string(256, ']'), "ok"); }), std::string());
  }

  void duplicateKeysRefusedEverywhere() {
    EXPECT_ERROR(parseJson(R"({"a": {"k": 1}, "b": {"k": 2, "k": 3}})", "x.json"), "x.json: key 'k' appears twice");
    QCOMPARE(errorOf([&] { parseJson(R"({"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]})", "x.json"); }),
             std::string());
    const fs::path d = freshDir("reader_hardening/dupcfg");
    spit(d / "config.json", R"({"model_type": "gpt2", "n_layer": 4, "n_layer": 2})");
    EXPECT_ERROR(ModelConfig::fromFile(d / "config.json"), "config.json", "key 'n_layer' appears twice");
  }

  // ------------------------------------------------------------ kind 7: type before open, never block
  void fifoInputsAreRefusedWithoutBlocking() {
    const fs::path d = freshDir("reader_hardening/fifo");
    QVERIFY(makeFifo(d / "pipe.json"));
    EXPECT_ERROR(readInputFile(d / "pipe.json"), "pipe.json: is a FIFO");
    EXPECT_ERROR(readFile(d / "pipe.json"), "pipe.json: is a FIFO");
    EXPECT_ERROR(SafetensorsFile::open(d / "pipe.json"), "pipe.json: is a FIFO");
    EXPECT_ERROR(readInputFile(d), "is a folder, not a file");
    // Readers that take a path: a corpus file, a tokenizer file.
    QVERIFY(makeFifo(d / "corpus.txt"));
    EXPECT_ERROR(Corpus::open(d / "corpus.txt"), "corpus.txt: is a FIFO");
    QVERIFY(makeFifo(d / "corpus.jsonl"));
    EXPECT_ERROR(Corpus::open(d / "corpus.jsonl"), "corpus.jsonl: is a FIFO");
    QVERIFY(makeFifo(d / "tokenizer.model"));
    EXPECT_ERROR(Tokenizer::fromFile(d / "tokenizer.model"), "tokenizer.model: is a FIFO");
    QVERIFY(makeFifo(d / "tokenizer.json"));
    EXPECT_ERROR(Tokenizer::fromFile(d / "tokenizer.json"), "tokenizer.json: is a FIFO");
    // A model folder whose config.json / model.safetensors is a FIFO (CLI; it used to block forever).
    for (const char* name : {"config.json", "model.safetensors"}) {
      const fs::path m = d / (std::string("m_") + name);
      fs::copy(sourceDir() / "data/models/brown-relu", m, fs::copy_options::recursive);
      QVERIFY(makeFifo(m / name));
      auto r = runCli({"inspect", qs(m)}, 60);
      QVERIFY2(r.exitCode == 1, ("exit " + std::to_string(r.exitCode) + " (-1 = timeout): " + r.err).c_str());
      QVERIFY2(r.err.find(std::string(name) + ": is a FIFO") != std::string::npos, r.err.c_str());
    }
  }
};

QTEST_GUILESS_MAIN(ReaderHardening)
#include "test_reader_hardening.moc"
