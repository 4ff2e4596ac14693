// Greedy decoding of T5 with the decoder KV cache (Model::startSeq2Seq /
// decodeStep, greedyGenerateSeq2Seq, moefy forward --generate) on small random
// T5ForConditionalGeneration checkpoints built by scripts/ref/t5_ref.py
// (v1.0 relu tied and untied, v1.1 gated-gelu untied and tied):
//  - cached decoding equals uncached decoding (forwardSeq2Seq on the growing
//    prefix, argmax) token for token, per-step logits within 1e-5, and a
//    decodeStep run over a teacher-forced prefix equals decodeHidden;
//  - a batch of sources of different lengths decodes as each source alone;
//  - the independent float64 reference `t5_ref.py generate` (HF generate()
//    greedy search with past_key_values) gives the same ids and logits within
//    1e-4, also with an eos id that stops the sources at different steps;
//  - stopping at eos and at max_new_tokens; the FFN override and the hooks
//    run in the cached steps as in forwardSeq2Seq; bad input is refused.
// Every max difference is printed.
#include <QtTest>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/common/error.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/generate.h"
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

// Sources of 12, 6 and 2 tokens (ids < 101, the fixtures' vocabulary).
const std::vector<std::vector<int64_t>> kSources = {
    {5, 17, 3, 99, 42, 7, 1, 64, 23, 11, 2, 1}, {8, 9, 10, 11, 100, 1}, {44, 1}};
const char* const kVariants[] = {"t5_relu_untied", "t5_gated", "t5_relu", "t5_gated_tied"};
constexpr int kMaxNew = 20;

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }
QString script(const char* name) { return qs(sourceDir() / "scripts" / "ref" / name); }
std::string idList(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t i : ids) s += (s.empty() ? "" : ",") + std::to_string(i);
  return s;
}

double maxAbs(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  const double d = (a - b).abs().max().item<double>();
  return std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
}

// Max logit difference of two generations with identical tokens (infinity otherwise).
double compareGenerations(const Seq2SeqGeneration& a, const Seq2SeqGeneration& b) {
  if (a.tokens != b.tokens || a.stopped != b.stopped) return std::numeric_limits<double>::infinity();
  double m = 0;
  for (size_t i = 0; i < a.logits.size(); ++i) m = std::max(m, maxAbs(a.logits[i], b.logits[i]));
  return m;
}

std::string tokensText(const Seq2SeqGeneration& g) {
  std::string s;
  for (const auto& t : g.tokens) s += "[" + idList(t) + "] ";
  return s;
}

Seq2SeqGeneration generate(const Model& m, const std::vector<std::vector<int64_t>>& src, bool cache,
                           std::vector<int64_t> stops = {}, int maxNew = kMaxNew) {
  Seq2SeqGenerateOptions o;
  o.maxNewTokens = maxNew;
  o.keepLogits = true;
  o.useCache = cache;
  o.stopIds = std::move(stops);
  return greedyGenerateSeq2Seq(m, src, o);
}

// The ParameterError message of f ("" if it does not throw one).
template <class F>
std::string parameterError(F f) {
  try {
    f();
  } catch (const ParameterError& e) {
    return e.what();
  }
  return "";
}

// A T5-shaped tokenizer (t5_tokenizer.h) for the 101-id fixtures: after
// <pad> 0, </s> 1, <unk> 2 the whole-word pieces "▁a0" .. "▁a97" (ids 3 ..
// 100): "a5 a7" is 8,10,1 and ids decode to "a{id-3}" words, the special ids
// skipped.
void writeWordTokenizer(const fs::path& path) {
  std::vector<std::pair<std::string, double>> pieces;
  for (int i = 0; i < 98; ++i) pieces.emplace_back("\u2581a" + std::to_string(i), -1.0);
  moefy::test::writeT5Tokenizer(path, pieces);
}

// The dense FFN with the odd hidden neurons dropped, on every encoder and
// decoder site; counts the decoder calls and their rows.
class HalfFfn : public FfnOverride {
 public:
  explicit HalfFfn(const Model& m) : model_(m) {}
  at::Tensor forward(int, const at::Tensor&, at::Tensor*) const override {
    throw ParameterError("HalfFfn: encoder-decoder sites only");
  }
  at::Tensor forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const override {
    FfnWeights w = model_.ffnWeights(site);
    at::Tensor h;
    denseFfn(w, x, &h);
    at::Tensor keep = (at::arange(h.size(1)) % 2 == 0).to(at::kFloat);
    h = h * keep;
    if (hidden) *hidden = h;
    if (site.stack == SiteStack::Decoder) ++decoderCalls, decoderRows += x.size(0);
    return at::linear(h, w.down, w.downBias);
  }
  mutable int decoderCalls = 0;
  mutable int64_t decoderRows = 0;

 private:
  const Model& model_;
};

// Keeps every dec.blk.L.ffn_act tensor it sees (per call, in order).
struct DecoderActSink : HookSink {
  int layer = 0;
  std::vector<at::Tensor> acts;
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site& s, HookPoint p) const override {
    return s.stack == SiteStack::Decoder && s.layer == layer && p == HookPoint::FfnAct;
  }
  void onSite(const Site&, HookPoint, const at::Tensor& x) override { acts.push_back(x.clone()); }
};

}  // namespace

class T5Generate : public QObject {
  Q_OBJECT
  fs::path root_;

  std::unique_ptr<Model> load(const char* variant) const { return Model::load(root_ / variant / "model"); }

  // Runs t5_ref.py generate on kSources into OUT (with --eos ids if given).
  void runReference(const char* variant, const fs::path& out, const std::vector<int64_t>& eos) {
    QStringList args = {script("t5_ref.py"),
                        "generate",
                        qs(root_ / variant / "model"),
                        "--max-new-tokens",
                        QString::number(kMaxNew),
                        "--out",
                        qs(out)};
    for (const auto& s : kSources) args << "--ids" << QString::fromStdString(idList(s));
    for (int64_t e : eos) args << "--eos" << QString::number(e);
    auto r = runPython(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
  }

  // Compares a generation of kSources with a t5_ref.py generate file: the
  // padded ids exactly, each sequence's logits at 1e-4. Returns the max diff.
  double compareWithReference(const Seq2SeqGeneration& g, const fs::path& refPath, const QString& what) {
    auto ref = SafetensorsFile::open(refPath);
    at::Tensor seqs = ref->raw("sequences").to(at::kLong), scores = ref->f32("scores");
    at::Tensor ids = g.paddedIds();
    if (!(ids.sizes() == seqs.sizes() && at::equal(ids, seqs))) {
      QTest::qFail(qPrintable(what + ": ids differ from the reference: moefy " + QString::fromStdString(tokensText(g))),
                   __FILE__, __LINE__);
      return std::numeric_limits<double>::infinity();
    }
    double m = 0;
    for (size_t b = 0; b < g.tokens.size(); ++b) {
      const auto n = static_cast<int64_t>(g.tokens[b].size());
      m = std::max(m, maxAbs(g.logits[b], scores[static_cast<int64_t>(b)].narrow(0, 0, n)));
    }
    qInfo("%s: ids equal (%lld steps), max |logit - reference| %.3g", qPrintable(what),
          static_cast<long long>(ids.size(1) - 1), m);
    return m;
  }

 private Q_SLOTS:
  void initTestCase() {
    root_ = freshDir("t5_generate");
    nlohmann::json jobs = nlohmann::json::array();
    for (const char* v : kVariants) {
      jobs.push_back({"make_checkpoint", v, (root_ / v / "model").string()});
      nlohmann::json gen = {"t5_ref",
                            "generate",
                            (root_ / v / "model").string(),
                            "--max-new-tokens",
                            std::to_string(kMaxNew),
                            "--out",
                            (root_ / v / "ref.safetensors").string()};
      for (const auto& s : kSources) gen.push_back("--ids"), gen.push_back(idList(s));
      jobs.push_back(gen);
    }
    jobs.push_back({"make_checkpoint", "gpt2_relu", (root_ / "gpt2").string()});
    std::ofstream(root_ / "jobs.json") << jobs.dump(1);
    auto r = runPython({script("batch.py"), qs(root_ / "jobs.json")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
  }

  void variants_data() {
    QTest::addColumn<QString>("variant");
    for (const char* v : kVariants) QTest::newRow(v) << QString(v);
  }

  // (a) cached == uncached (greedyGenerateSeq2Seq's forwardSeq2Seq path, and a
  // loop written here over forwardSeq2Seq), and decodeStep == decodeHidden.
  void cachedEqualsUncached_data() { variants_data(); }
  void cachedEqualsUncached() {
    QFETCH(QString, variant);
    auto m = load(qPrintable(variant));
    const auto cached = generate(*m, kSources, true);
    const auto uncached = generate(*m, kSources, false);
    const double d = compareGenerations(cached, uncached);
    qInfo("%s: cached %s| max |logit cached - uncached| %.3g", qPrintable(variant), tokensText(cached).c_str(), d);
    QVERIFY2(d <= 1e-5, qPrintable(QString("max diff %1 > 1e-5 (or tokens differ)").arg(d)));
    for (const auto& t : cached.tokens) QCOMPARE(static_cast<int>(t.size()), kMaxNew);  // eos 1 never comes

    // Source 1 alone, the argmax of forwardSeq2Seq's last position on the growing prefix.
    std::vector<int64_t> prefix = {m->config().decoderStartId};
    double loopDiff = 0;
    for (int i = 0; i < kMaxNew; ++i) {
      at::Tensor logits = m->forwardSeq2Seq(makeBatch({kSources[1]}), makeBatch({prefix}))[0][i];
      loopDiff = std::max(loopDiff, maxAbs(logits, cached.logits[1][i]));
      prefix.push_back(logits.argmax().item<int64_t>());
    }
    const std::vector<int64_t> loopTokens(prefix.begin() + 1, prefix.end());
    QCOMPARE(loopTokens, cached.tokens[1]);
    qInfo("%s: forwardSeq2Seq loop on source 1: same ids, max logit diff %.3g", qPrintable(variant), loopDiff);
    QVERIFY(loopDiff <= 1e-5);

    // The raw API: the teacher-forced prefix fed 3 tokens, then one at a time,
    // equals decodeHidden on the whole prefix (the step's bias rows included).
    Seq2SeqCache cache = m->startSeq2Seq(makeBatch(kSources));
    QCOMPARE(cache.batchSize(), int64_t(3));
    at::Tensor dec = cached.paddedIds().narrow(1, 0, 9);  // [3, 9]: start + 8 generated ids
    std::vector<at::Tensor> parts = {m->decodeStep(dec.narrow(1, 0, 3), cache)};
    for (int64_t t = 3; t < 9; ++t) parts.push_back(m->decodeStep(dec.narrow(1, t, 1), cache));
    QCOMPARE(cache.length, int64_t(9));
    QCOMPARE(cache.selfK[0].size(2), int64_t(9));
    Batch src = makeBatch(kSources);
    at::Tensor full = m->decodeHidden(m->encode(src), src.mask, Batch{dec, at::ones_like(dec), at::Tensor()});
    const double stepDiff = maxAbs(at::cat(parts, 1), full);
    qInfo("%s: decodeStep (3 + 6 x 1 tokens) vs decodeHidden: max diff %.3g", qPrintable(variant), stepDiff);
    QVERIFY(stepDiff <= 1e-5);
  }

  // (b) a padded batch of sources of lengths 12, 6, 2 equals each alone.
  void batchEqualsAlone_data() { variants_data(); }
  void batchEqualsAlone() {
    QFETCH(QString, variant);
    auto m = load(qPrintable(variant));
    const auto batched = generate(*m, kSources, true);
    double worst = 0;
    for (size_t b = 0; b < kSources.size(); ++b) {
      const auto alone = generate(*m, {kSources[b]}, true);
      QCOMPARE(alone.tokens[0], batched.tokens[b]);
      worst = std::max(worst, maxAbs(alone.logits[0], batched.logits[b]));
    }
    qInfo("%s: batched vs alone: same ids, max logit diff %.3g", qPrintable(variant), worst);
    QVERIFY(worst <= 1e-5);
  }

  // (c) the independent float64 reference (HF generate() semantics).
  void matchesReference_data() { variants_data(); }
  void matchesReference() {
    QFETCH(QString, variant);
    auto m = load(qPrintable(variant));
    const double d = compareWithReference(generate(*m, kSources, true), root_ / qPrintable(variant) / "ref.safetensors",
                                          variant + " vs t5_ref.py generate");
    QVERIFY2(d <= 1e-4, qPrintable(QString("max diff %1 > 1e-4").arg(d)));
  }

  // (d) stopping: an eos id taken from the generation itself (the third id
  // of source 0) stops each source right after its first occurrence, pad
  // after it in paddedIds; the reference with --eos agrees; max_new_tokens
  // cuts every source at N.
  void stopping_data() {
    QTest::addColumn<QString>("variant");
    QTest::newRow("t5_relu_untied") << "t5_relu_untied";
    QTest::newRow("t5_gated") << "t5_gated";
  }
  void stopping() {
    QFETCH(QString, variant);
    auto m = load(qPrintable(variant));
    const auto free = generate(*m, kSources, true);
    const int64_t stop = free.tokens[0][2];
    const auto stopped = generate(*m, kSources, true, {stop});
    std::set<size_t> lengths;
    for (size_t b = 0; b < kSources.size(); ++b) {
      const auto& all = free.tokens[b];
      const auto it = std::find(all.begin(), all.end(), stop);
      const std::vector<int64_t> want(all.begin(), it == all.end() ? all.end() : it + 1);
      QCOMPARE(stopped.tokens[b], want);
      QCOMPARE(static_cast<bool>(stopped.stopped[b]), it != all.end());
      QVERIFY(maxAbs(stopped.logits[b], free.logits[b].narrow(0, 0, static_cast<int64_t>(want.size()))) <= 1e-5);
      lengths.insert(want.size());
    }
    qInfo("%s: eos %lld: %s", qPrintable(variant), static_cast<long long>(stop), tokensText(stopped).c_str());
    QVERIFY(stopped.stopped[0] && stopped.tokens[0].size() <= 3);
    QVERIFY2(lengths.size() > 1, "the sources should stop at different steps");
    // The uncached path stops the same way.
    QVERIFY(compareGenerations(stopped, generate(*m, kSources, false, {stop})) <= 1e-5);
    const fs::path refPath = root_ / qPrintable(variant) / "ref_eos.safetensors";
    runReference(qPrintable(variant), refPath, {stop});
    const double d = compareWithReference(stopped, refPath, variant + " eos vs t5_ref.py generate --eos");
    QVERIFY(d <= 1e-4);
    // max_new_tokens 5: every source cut at 5 ids, the prefix of the longer run.
    const auto five = generate(*m, kSources, true, {}, 5);
    for (size_t b = 0; b < kSources.size(); ++b) {
      QCOMPARE(five.tokens[b], std::vector<int64_t>(free.tokens[b].begin(), free.tokens[b].begin() + 5));
      QVERIFY(!five.stopped[b]);
    }
    QCOMPARE(five.paddedIds().size(1), int64_t(6));
  }

  // The FFN override runs in the cached steps (a MoE decodes through the
  // same code), changes the result, and cached == uncached under it; the
  // dec hooks of the steps, concatenated, equal forwardSeq2Seq's hooks on
  // the generated prefix.
  void overrideAndHooks() {
    auto m = load("t5_relu_untied");
    const auto dense = generate(*m, kSources, true);
    auto half = std::make_shared<HalfFfn>(*m);
    m->setFfnOverride(half);
    const auto cached = generate(*m, kSources, true);
    QVERIFY(half->decoderCalls > 0);
    QCOMPARE(half->decoderRows, static_cast<int64_t>(3 * kMaxNew * m->config().nDecoderLayer));  // one row per token
    const auto uncached = generate(*m, kSources, false);
    const double d = compareGenerations(cached, uncached);
    qInfo("override: %s| cached vs uncached max diff %.3g", tokensText(cached).c_str(), d);
    QVERIFY(d <= 1e-5);
    QVERIFY2(maxAbs(cached.logits[0], dense.logits[0]) > 1e-2, "the override did not change the logits");

    DecoderActSink sink;
    sink.layer = 1;
    Seq2SeqGenerateOptions o;
    o.maxNewTokens = 6;
    const auto g = greedyGenerateSeq2Seq(*m, {kSources[0]}, o, &sink);
    QCOMPARE(static_cast<int>(sink.acts.size()), 6);
    for (const auto& a : sink.acts) QCOMPARE(a.sizes().vec(), (std::vector<int64_t>{1, 1, m->config().dFF}));
    DecoderActSink full;
    full.layer = 1;
    at::Tensor dec = g.paddedIds().narrow(1, 0, 6);
    m->forwardSeq2Seq(makeBatch({kSources[0]}), Batch{dec, at::ones_like(dec), at::Tensor()}, &full);
    QCOMPARE(static_cast<int>(full.acts.size()), 1);
    const double hd = maxAbs(at::cat(sink.acts, 1), full.acts[0]);
    qInfo("dec.blk.1.ffn_act of the steps vs teacher-forced: max diff %.3g", hd);
    QVERIFY(hd <= 1e-5);
    // Finished sequences leave the batch: the hooks see only the running rows.
    DecoderActSink rows;
    o.maxNewTokens = kMaxNew;
    o.stopIds = {cached.tokens[0][2]};
    const auto s = greedyGenerateSeq2Seq(*m, kSources, o, &rows);
    int64_t seen = 0;
    for (const auto& a : rows.acts) seen += a.size(0);
    int64_t generated = 0;
    for (const auto& t : s.tokens) generated += static_cast<int64_t>(t.size());
    QCOMPARE(seen, generated);
    m->setFfnOverride(nullptr);
  }

  void badInput() {
    auto m = load("t5_gated");
    Seq2SeqGenerateOptions o;
    auto expect = [](const std::string& msg, const char* needle) {
      QVERIFY2(msg.find(needle) != std::string::npos, ("'" + std::string(needle) + "' not in: '" + msg + "'").c_str());
      qInfo("refused: %s", msg.c_str());
    };
    expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {}, o); }), "at least one source");
    expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {{5, 1}, {}}, o); }), "source sequence 1 is empty");
    expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {{5, 101}}, o); }), "token id 101 is outside the vocabulary");
    expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {{-3, 1}}, o); }), "token id -3");
    for (int n : {0, -1}) {
      o.maxNewTokens = n;
      expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {{5, 1}}, o); }), "max_new_tokens must be >= 1");
    }
    o.maxNewTokens = 4;
    o.stopIds = {500};
    expect(parameterError([&] { greedyGenerateSeq2Seq(*m, {{5, 1}}, o); }), "stop (eos) id 500");
    auto gpt2 = Model::load(root_ / "gpt2");
    expect(parameterError([&] { greedyGenerateSeq2Seq(*gpt2, {{5, 1}}, {}); }), "not an encoder-decoder model");
    expect(parameterError([&] { gpt2->startSeq2Seq(makeBatch({{5, 1}})); }), "not an encoder-decoder model");
    Seq2SeqCache cache = m->startSeq2Seq(makeBatch({{5, 6, 1}, {7, 1}}));
    expect(parameterError([&] {
             m->decodeStep(at::zeros({3, 1}, at::kLong), cache);
           }),
           "decoder step of 3 sequences on a cache of 2");
    expect(parameterError([&] { m->decodeStep(at::full({2, 1}, 101, at::kLong), cache); }), "token id 101");
    expect(parameterError([&] {
             cache.keepRows(at::tensor(std::vector<int64_t>{0, 2}, at::kLong));
           }),
           "must be indices in [0, 2)");
    QCOMPARE(cache.length, int64_t(0));
  }

  // moefy forward --generate: the ids of the API, the text through the
  // tokenizer; the refusals; eval --generate refuses what it cannot translate.
  void cli() {
    const fs::path dir = root_ / "with_tokenizer";
    fs::create_directories(dir);
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(root_ / "t5_relu_untied" / "model" / f, dir / f, fs::copy_options::overwrite_existing);
    writeWordTokenizer(dir / "tokenizer.json");
    auto m = Model::load(dir);
    // "a5 a7" -> 8,10,1 and "a41" -> 44,1 (the template appends </s>).
    const auto want = generate(*m, {{8, 10, 1}, {44, 1}}, true, {}, 12);
    auto r = runCli({"forward", qs(dir), "--text", "a5 a7", "--text", "a41", "--generate", "12", "--json"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const auto j = nlohmann::json::parse(r.out);
    QCOMPARE(j.at("generated").get<std::vector<std::vector<int64_t>>>(), want.tokens);
    for (size_t b = 0; b < want.tokens.size(); ++b) {
      std::string text;
      for (int64_t id : want.tokens[b])
        if (id > 2) text += (text.empty() ? "a" : " a") + std::to_string(id - 3);
      QCOMPARE(QString::fromStdString(j.at("text")[b].get<std::string>()), QString::fromStdString(text));
    }
    auto ids = runCli({"forward", qs(dir), "--ids", "8,10,1", "--generate", "12"});
    QVERIFY2(ids.exitCode == 0 && ids.out.find("seq 0: [" + idList(want.tokens[0]) + "]") != std::string::npos,
             (ids.out + ids.err).c_str());
    qInfo("%s", ids.out.c_str());
    auto refuse = [](const QStringList& args, int code, const char* needle) {
      auto e = runCli(args);
      QVERIFY2(e.exitCode == code && e.err.find(needle) != std::string::npos,
               (std::to_string(e.exitCode) + ": " + e.err).c_str());
    };
    refuse({"forward", qs(dir), "--ids", "8,1", "--generate", "0"}, 2, "--generate");
    refuse({"forward", qs(dir), "--ids", "8,1", "--generate", "3", "--decoder-ids", "0,5"}, 2, "give no --decoder-ids");
    refuse({"forward", qs(dir), "--ids", "8,101", "--generate", "3"}, 2, "token id 101");
    refuse({"forward", qs(root_ / "gpt2"), "--ids", "8,1", "--generate", "3"}, 2, "not an encoder-decoder model");
    // eval scores a T5 teacher-forced (test_t5_pipeline) and translates with
    // --generate (test_t5_translate); what it cannot do is refused by name
    // before any input is read.
    refuse({"eval", qs(dir), qs(dir / "no_corpus.txt"), "--partition", qs(dir / "no_partition"), "--router",
            qs(dir / "no_router"), "--generate", "4", "--quiet"},
           2, "no_corpus.txt is a single-text corpus; translations are scored against the targets");
    refuse({"eval", qs(root_ / "gpt2"), qs(dir / "no_corpus.txt"), "--partition", qs(dir / "no_partition"), "--router",
            qs(dir / "no_router"), "--generate", "4", "--quiet"},
           2, "is a single-stack model; eval --generate translates a parallel corpus");
    refuse({"eval", qs(dir), qs(dir / "no_corpus.txt"), "--bound", "topk-act", "--sweep", "0.5", "--quiet"}, 2,
           "t5 is an encoder-decoder model; eval --bound");
    // generationSpeed (eval --speed's timing) decodes a T5 with the cache.
    const SpeedStats s = generationSpeed(*m, nullptr, {8, 10, 1}, 8, 0.0, 3);
    QVERIFY(s.runs >= 3 && s.median > 0);
  }
};

QTEST_GUILESS_MAIN(T5Generate)
#include "test_t5_generate.moc"
