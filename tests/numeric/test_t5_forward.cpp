// T5 (encoder-decoder) against the independent float64 numpy reference
// scripts/ref/t5_ref.py, on small random T5ForConditionalGeneration
// checkpoints that t5_ref.py builds (v1.0 relu and v1.1/FLAN gated-gelu, tied
// and untied, HF names and config keys): `moefy forward --ids .. --decoder-ids
// .. --dump` on right-padded source and decoder batches of two sequences,
// logits and every enc./dec. FFN hook compared on the non-padded positions at
// 1e-4 (F32), printing the max difference of every tensor. Plus the
// refusals: no --decoder-ids, a folder without decoder weights, a missing
// decoder tensor, an alias that differs from shared.weight, an untied config
// without lm_head. And --text / --decoder-text (with a small T5-shaped
// tokenizer.json) against the same ids given by hand. All python work runs in
// one scripts/ref/batch.py call.
#include <QtTest>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "t5_tokenizer.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::freshDir;
using moefy::test::runCli;
using moefy::test::runPython;
using moefy::test::sourceDir;
namespace fs = std::filesystem;

namespace {

// Source lengths 12 and 6 (12 reaches the log-spaced buckets of every variant,
// including 32 buckets / 128 in the encoder), decoder lengths 7 and 4.
const QString kSrcA = "5,17,3,99,42,7,1,64,23,11,2,1";
const QString kSrcB = "8,9,10,11,100,1";
const QString kDecA = "0,4,55,13,8,90,1";
const QString kDecB = "0,71,3,1";
const std::vector<int64_t> kSrcLens = {12, 6};
const std::vector<int64_t> kDecLens = {7, 4};

QString script(const char* name) { return QString::fromStdString((sourceDir() / "scripts" / "ref" / name).string()); }
QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

QStringList forwardArgs(const fs::path& dir) {
  return {"forward", qs(dir), "--ids", kSrcA, "--ids", kSrcB, "--decoder-ids", kDecA, "--decoder-ids", kDecB};
}

struct Row {
  const char* variant;
  const char* dtype;
};
const Row kRows[] = {{"t5_relu", "F32"},       {"t5_gated", "F32"},  {"t5_relu_untied", "F32"},
                     {"t5_gated_tied", "F32"}, {"t5_gated", "BF16"}, {"t5_relu", "F16"}};

std::string rowDir(const Row& r) { return std::string(r.variant) + "_" + r.dtype; }

// Max |a - b| over the valid positions of [B, T, ...] tensors (T: source
// positions for enc.* hooks, decoder positions for dec.* hooks and logits).
double maxDiffValid(const std::string& name, const at::Tensor& a, const at::Tensor& b) {
  const auto& lens = name.rfind("enc.", 0) == 0 ? kSrcLens : kDecLens;
  double m = 0;
  for (int64_t i = 0; i < a.size(0); ++i) {
    at::Tensor d = (a[i].narrow(0, 0, lens[i]) - b[i].narrow(0, 0, lens[i])).abs();
    m = std::max(m, d.max().item<double>());
  }
  return std::isnan(m) ? std::numeric_limits<double>::infinity() : m;
}

// Compares every tensor of `want` with `got` (same names), printing each max difference.
double compareDumps(const fs::path& gotPath, const fs::path& wantPath, double tol, const QString& what) {
  auto got = SafetensorsFile::open(gotPath);
  auto want = SafetensorsFile::open(wantPath);
  std::vector<std::string> gotNames, wantNames;
  for (const auto& t : got->tensors()) gotNames.push_back(t.name);
  for (const auto& t : want->tensors()) wantNames.push_back(t.name);
  std::sort(gotNames.begin(), gotNames.end());
  std::sort(wantNames.begin(), wantNames.end());
  if (gotNames != wantNames) {
    std::string g, w;
    for (const auto& n : gotNames) g += n + " ";
    for (const auto& n : wantNames) w += n + " ";
    QTest::qFail(("tensor names differ: moefy [" + g + "] reference [" + w + "]").c_str(), __FILE__, __LINE__);
    return 1e9;
  }
  double overall = 0;
  for (const auto& info : want->tensors()) {
    at::Tensor g = got->f32(info.name), w = want->f32(info.name);
    if (g.sizes() != w.sizes()) {
      QTest::qFail((info.name + ": shape " + shapeString(g) + " vs " + shapeString(w)).c_str(), __FILE__, __LINE__);
      return 1e9;
    }
    const double d = maxDiffValid(info.name, g, w);
    overall = std::max(overall, d);
    qInfo("%s: %-18s %-18s max abs diff %.3g%s", qPrintable(what), info.name.c_str(), shapeString(w).c_str(), d,
          d > tol ? "  > tolerance" : "");
  }
  return overall;
}

// A failing CLI run: non-zero exit, one line on stderr containing every needle.
void expectOneLineError(const QStringList& args, const std::vector<std::string>& needles) {
  auto r = runCli(args, 120);
  QVERIFY2(r.exitCode > 0, ("exit " + std::to_string(r.exitCode) + " (crash or success): " + r.out + r.err).c_str());
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  QVERIFY2(!err.empty(), "no error message");
  QVERIFY2(err.find('\n') == std::string::npos, ("more than one line: " + r.err).c_str());
  for (const auto& n : needles) QVERIFY2(err.find(n) != std::string::npos, ("'" + n + "' not in: " + err).c_str());
  qInfo("%s -> %s", qPrintable(args.front()), err.c_str());
}

// Copies a checkpoint folder, keeping the tensors `keep` accepts and
// replacing those `edit` returns a defined tensor for.
void rewriteCheckpoint(const fs::path& from, const fs::path& to, const std::function<bool(const std::string&)>& keep,
                       const std::function<at::Tensor(const std::string&, const at::Tensor&)>& edit = nullptr) {
  fs::create_directories(to);
  fs::copy_file(from / "config.json", to / "config.json", fs::copy_options::overwrite_existing);
  auto st = SafetensorsFile::open(from / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& info : st->tensors()) {
    if (!keep(info.name)) continue;
    at::Tensor t = st->f32(info.name).clone();
    if (edit) {
      at::Tensor e = edit(info.name, t);
      if (e.defined()) t = e;
    }
    out.emplace_back(info.name, t);
  }
  writeSafetensors(to / "model.safetensors", out, {{"format", "pt"}});
}

// t5-small's tokenizer shape (t5_tokenizer.h) with a few whole-word pieces, so
// that the ids of a text are known by hand: "hello world" is 4,5,1, "the cat
// sat." 6,7,8,37,1 ("▁sat" then ".").
void writeT5Tokenizer(const fs::path& path) {
  std::vector<std::pair<std::string, double>> pieces = {{"\u2581", -3.0}};
  for (const char* w : {"hello", "world", "the", "cat", "sat", "das", "haus"})
    pieces.emplace_back(std::string("\u2581") + w, -2.0);                          // ids 4..10
  for (char c = 'a'; c <= 'z'; ++c) pieces.emplace_back(std::string(1, c), -4.0);  // ids 11..36
  pieces.emplace_back(".", -4.0);                                                  // id 37
  moefy::test::writeT5Tokenizer(path, pieces);
}

// Whether two --dump files hold the same tensors, bit for bit.
void expectSameDump(const fs::path& gotPath, const fs::path& wantPath) {
  auto got = SafetensorsFile::open(gotPath);
  auto want = SafetensorsFile::open(wantPath);
  QCOMPARE(got->tensors().size(), want->tensors().size());
  for (const auto& info : want->tensors()) {
    at::Tensor g = got->f32(info.name), w = want->f32(info.name);
    QVERIFY2(g.sizes() == w.sizes() && at::equal(g, w), (info.name + " differs").c_str());
  }
}

}  // namespace

class T5Forward : public QObject {
  Q_OBJECT
  fs::path root_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("t5_forward");
    nlohmann::json jobs = nlohmann::json::array();
    for (const auto& r : kRows) {
      auto d = root_ / rowDir(r);
      jobs.push_back({"make_checkpoint", r.variant, (d / "model").string(), "--dtype", r.dtype});
      jobs.push_back({"t5_ref", "forward", (d / "model").string(), "--ids", kSrcA.toStdString(), "--ids",
                      kSrcB.toStdString(), "--decoder-ids", kDecA.toStdString(), "--decoder-ids", kDecB.toStdString(),
                      "--out", (d / "ref.safetensors").string()});
    }
    // A half-precision file runs exactly like the F32 file of its upcast values.
    jobs.push_back({"make_checkpoint", "t5_gated", (root_ / "upcast" / "f32").string(), "--round-to", "BF16"});
    jobs.push_back({"make_checkpoint", "gpt2_relu", (root_ / "gpt2").string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({script("batch.py"), qs(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
  }

  void matchesReference_data() {
    QTest::addColumn<QString>("dir");
    for (const auto& r : kRows) QTest::newRow(rowDir(r).c_str()) << QString::fromStdString(rowDir(r));
  }

  void matchesReference() {
    QFETCH(QString, dir);
    const fs::path d = root_ / dir.toStdString();
    auto args = forwardArgs(d / "model");
    args << "--dump" << qs(d / "moefy.safetensors");
    auto r = runCli(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const double diff = compareDumps(d / "moefy.safetensors", d / "ref.safetensors", 1e-4, dir);
    qInfo("%s: max abs diff over logits and hooks %.3g", qPrintable(dir), diff);
    QVERIFY2(diff <= 1e-4, qPrintable(QString("max abs diff %1 > 1e-4").arg(diff)));
  }

  void halfMatchesUpcast() {
    const fs::path half = root_ / "t5_gated_BF16";
    QVERIFY(fs::exists(half / "moefy.safetensors"));  // written by matchesReference
    auto args = forwardArgs(root_ / "upcast" / "f32");
    args << "--dump" << qs(root_ / "upcast" / "f32.safetensors");
    auto r = runCli(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const double d =
        compareDumps(half / "moefy.safetensors", root_ / "upcast" / "f32.safetensors", 0.0, "BF16 vs F32 upcast");
    QCOMPARE(d, 0.0);
  }

  // The engine API: forward() refuses a T5, the sites and their FFN weights,
  // aliases folded into shared.weight, the unused cross-attention bias dropped.
  void engineApi() {
    auto m = Model::load(root_ / "t5_relu_F32" / "model");
    const ModelConfig& c = m->config();
    QVERIFY(c.encoderDecoder);
    QCOMPARE(c.nDecoderLayer, 2);
    QCOMPARE(static_cast<int>(c.ffnSites().size()), 4);
    QCOMPARE(QString::fromStdString(c.ffnSites()[2].name()), QString("dec.blk.0"));
    bool threw = false;
    try {
      m->forward(makeBatch({{1, 2, 3}}));
    } catch (const ParameterError& e) {
      threw = std::string(e.what()).find("encoder-decoder") != std::string::npos;
    }
    QVERIFY(threw);
    FfnWeights w = m->ffnWeights(Site::parse("dec.blk.1"));
    QCOMPARE(w.up.size(0), int64_t(96));
    QVERIFY(!w.gated());
    QVERIFY(m->tensors().count("shared.weight"));
    QVERIFY(!m->tensors().count("encoder.embed_tokens.weight"));
    QVERIFY(!m->tensors().count("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"));
    auto g = Model::load(root_ / "t5_gated_F32" / "model");
    FfnWeights gw = g->ffnWeights(Site::parse("enc.blk.0"));
    QVERIFY(gw.gated());
    QCOMPARE(QString::fromStdString(g->tensorName(Role::FfnGate, 1, SiteStack::Decoder)),
             QString("decoder.block.1.layer.2.DenseReluDense.wi_0.weight"));
    QCOMPARE(g->config().nDecoderLayer, 3);
    QCOMPARE(g->config().headScale, 1.0);                          // untied: no rescale
    QVERIFY(std::abs(m->config().headScale - 1.0 / 8.0) < 1e-15);  // tied, d_model 64
    // Site-keyed hooks reach a sink; a sink that only knows layers sees nothing of a T5.
    struct LayerSink : HookSink {
      int calls = 0;
      bool wants(int, HookPoint) const override { return true; }
      void on(int, HookPoint, const at::Tensor&) override { ++calls; }
    } layerSink;
    m->forwardSeq2Seq(makeBatch({{5, 6, 7}}), makeBatch({{0, 4}}), &layerSink);
    QCOMPARE(layerSink.calls, 0);
  }

  void inspectShowsBothStacks() {
    auto r = runCli({"inspect", qs(root_ / "t5_gated_F32" / "model"), "--json"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    for (const char* want : {"\"decoder_layers\": 3", "\"positions\": \"relative\"", "\"family\": \"t5\"",
                             "\"ffn_kind\": \"gated\"", "\"activation\": \"gelu_new\""})
      QVERIFY2(r.out.find(want) != std::string::npos, (std::string(want) + " not in " + r.out).c_str());
    auto text = runCli({"inspect", qs(root_ / "t5_gated_F32" / "model")});
    QVERIFY2(text.exitCode == 0 && text.out.find("encoder-decoder") != std::string::npos, text.out.c_str());
  }

  // --text / --decoder-text against --ids / --decoder-ids: the text is
  // tokenised as HF's T5 tokenizer does (ids + eos), the decoder is fed
  // decoder_start_token_id (0) + the labels shifted right; logits and every
  // hook are bit-identical to feeding those ids by hand.
  void decoderText() {
    const fs::path dir = root_ / "with_tokenizer";
    fs::create_directories(dir);
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(root_ / "t5_relu_F32" / "model" / f, dir / f, fs::copy_options::overwrite_existing);
    writeT5Tokenizer(dir / "tokenizer.json");
    auto text = runCli({"forward", qs(dir), "--text", "hello world", "--text", "das haus", "--decoder-text",
                        "the cat sat.", "--decoder-text", "cat", "--dump", qs(dir / "text.safetensors"), "--json"});
    QVERIFY2(text.exitCode == 0, (text.out + text.err).c_str());
    const auto j = nlohmann::json::parse(text.out);
    using Rows = std::vector<std::vector<int64_t>>;
    QCOMPARE(j.at("decoder_ids").get<Rows>(), (Rows{{0, 6, 7, 8, 37}, {0, 7}}));
    QCOMPARE(j.at("labels").get<Rows>(), (Rows{{6, 7, 8, 37, 1}, {7, 1}}));
    QCOMPARE(j.at("decoder_len").get<int64_t>(), int64_t(5));
    auto ids = runCli({"forward", qs(dir), "--ids", "4,5,1", "--ids", "9,10,1", "--decoder-ids", "0,6,7,8,37",
                       "--decoder-ids", "0,7", "--dump", qs(dir / "ids.safetensors"), "--json"});
    QVERIFY2(ids.exitCode == 0, (ids.out + ids.err).c_str());
    const auto k = nlohmann::json::parse(ids.out);
    QVERIFY2(k.at("next_token") == j.at("next_token"), (k.dump() + " vs " + j.dump()).c_str());
    QVERIFY(!k.contains("labels"));
    expectSameDump(dir / "text.safetensors", dir / "ids.safetensors");
    // Refusals: both decoder options, one text too few, no tokenizer, not an encoder-decoder model.
    expectOneLineError({"forward", qs(dir), "--ids", "4,5,1", "--decoder-ids", "0,6", "--decoder-text", "cat"},
                       {"--decoder-ids or --decoder-text, not both"});
    expectOneLineError({"forward", qs(dir), "--ids", "4,5,1", "--ids", "9,1", "--decoder-text", "cat"},
                       {"--decoder-text", "one per source sequence", "decoder sequences: 1"});
    expectOneLineError({"forward", qs(root_ / "t5_relu_F32" / "model"), "--ids", "4,5,1", "--decoder-text", "cat"},
                       {"--decoder-text needs a tokenizer"});
    expectOneLineError({"forward", qs(root_ / "gpt2"), "--ids", "4,5", "--decoder-text", "cat"},
                       {"--decoder-text", "not an encoder-decoder model"});
  }

  void refusals() {
    const fs::path relu = root_ / "t5_relu_F32" / "model";
    // forward without decoder inputs, with too few, and decoder inputs for a decoder-only model.
    expectOneLineError({"forward", qs(relu), "--ids", kSrcA}, {"encoder-decoder", "--decoder-ids"});
    expectOneLineError({"forward", qs(relu), "--ids", kSrcA, "--ids", kSrcB, "--decoder-ids", kDecA},
                       {"--decoder-ids", "one per source sequence"});
    expectOneLineError({"forward", qs(root_ / "gpt2"), "--ids", kSrcA, "--decoder-ids", kDecA},
                       {"--decoder-ids", "not an encoder-decoder model"});
    expectOneLineError({"forward", qs(relu), "--ids", "5,101", "--decoder-ids", kDecA}, {"token id 101", "vocabulary"});
    // record takes T5 now (tests/e2e/test_t5_pipeline.cpp); a text corpus for a
    // model folder without a tokenizer is refused by name, and nothing is written.
    expectOneLineError(
        {"record", qs(relu), qs(root_ / "no_such_corpus.txt"), "--out", qs(root_ / "bad" / "rec"), "--quiet"},
        {"has no usable tokenizer", "pre-tokenised"});
    QVERIFY(!fs::exists(root_ / "bad" / "rec"));
    // No decoder at all (an encoder-only export).
    const fs::path noDecoder = root_ / "bad" / "no_decoder";
    rewriteCheckpoint(relu, noDecoder, [](const std::string& n) { return n.rfind("decoder.", 0) != 0; });
    expectOneLineError({"forward", qs(noDecoder), "--ids", kSrcA, "--decoder-ids", kDecA},
                       {"model.safetensors", "no decoder weights", "decoder.block.0.layer.0.SelfAttention.q.weight"});
    expectOneLineError({"inspect", qs(noDecoder)}, {"no decoder weights"});
    // One decoder tensor missing.
    const char* missing = "decoder.block.1.layer.1.EncDecAttention.k.weight";
    const fs::path oneMissing = root_ / "bad" / "one_missing";
    rewriteCheckpoint(relu, oneMissing, [&](const std::string& n) { return n != missing; });
    expectOneLineError({"forward", qs(oneMissing), "--ids", kSrcA, "--decoder-ids", kDecA},
                       {"model.safetensors", std::string("missing tensor '") + missing + "'"});
    // An embed_tokens alias holding other values than shared.weight.
    const fs::path alias = root_ / "bad" / "alias";
    rewriteCheckpoint(
        relu, alias, [](const std::string&) { return true; },
        [](const std::string& n, const at::Tensor& t) {
          return n == "decoder.embed_tokens.weight" ? t + 1.0 : at::Tensor();
        });
    expectOneLineError({"inspect", qs(alias)}, {"'decoder.embed_tokens.weight' differs from 'shared.weight'"});
    // An alias alone stands in for shared.weight.
    const fs::path aliasOnly = root_ / "bad" / "alias_only";
    rewriteCheckpoint(relu, aliasOnly, [](const std::string& n) { return n != "shared.weight"; });
    auto ok = runCli({"inspect", qs(aliasOnly)});
    QVERIFY2(ok.exitCode == 0, (ok.out + ok.err).c_str());
    // An untied config without lm_head.weight; a shape error names the tensor and both shapes.
    const fs::path noHead = root_ / "bad" / "no_head";
    rewriteCheckpoint(root_ / "t5_gated_F32" / "model", noHead,
                      [](const std::string& n) { return n != "lm_head.weight"; });
    expectOneLineError({"inspect", qs(noHead)}, {"missing tensor 'lm_head.weight'"});
    const fs::path badShape = root_ / "bad" / "bad_shape";
    rewriteCheckpoint(
        relu, badShape, [](const std::string&) { return true; },
        [](const std::string& n, const at::Tensor& t) {
          return n == "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
                     ? t.narrow(0, 0, 16).contiguous()
                     : at::Tensor();
        });
    expectOneLineError({"inspect", qs(badShape)},
                       {"decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "[16, 4]", "[32, 4]"});
  }
};

QTEST_GUILESS_MAIN(T5Forward)
#include "test_t5_forward.moc"
