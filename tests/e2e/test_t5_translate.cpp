// `moefy eval --generate` and `--speed` on a T5 model (issues 13 and 15): a
// small random T5 checkpoint (scripts/ref/t5_ref.py make t5_relu_untied: untied lm_head, whose greedy outputs are not
// all pad as the tied one's are) with a word tokenizer, a .tsv parallel corpus, a coact partition and a similarity
// router over the encoder and decoder sites. Checks that the translations are
// greedyGenerateSeq2Seq's on the same batches, that eval.json's BLEU is
// corpusBleu's (and moefy score's) on those hypotheses exactly, that all
// experts active decode as the dense model, that the length buckets hold every
// sentence once, and the refusals of bad input.
#include <QtTest>

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/bleu.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_file.h"
#include "analysis/eval/generate.h"
#include "analysis/eval/sequences.h"
#include "analysis/eval/translate.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_inputs.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"
#include "analysis/text/tokenizer.h"
#include "t5_tokenizer.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

constexpr int kPairs = 22;
constexpr int kMaxNew = 10;

// Word i of the tokenizer: "a{i}" is id i + 3.
std::string words(int seed, int count) {
  std::string s;
  for (int k = 0; k < count; ++k) s += (k ? " a" : "a") + std::to_string((seed * 37 + k * 11) % 98);
  return s;
}

// The expected error line: exit code, needle, exactly one line on stderr.
void expectRefusal(const QStringList& args, int code, const std::string& needle) {
  auto r = test::runCli(args);
  qInfo("exit %d: %s", r.exitCode, r.err.c_str());
  QVERIFY2(r.exitCode == code, (std::to_string(r.exitCode) + ": " + r.err).c_str());
  QVERIFY2(r.err.find(needle) != std::string::npos, r.err.c_str());
  QVERIFY2(!r.err.empty() && r.err.find('\n') == r.err.size() - 1, r.err.c_str());
}

}  // namespace

class T5Translate : public QObject {
  Q_OBJECT
  fs::path root_, model_, corpus_, part_, router_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = test::freshDir("t5_translate");
    model_ = root_ / "model";
    auto r = test::runPython(
        {qs(test::sourceDir() / "scripts" / "ref" / "t5_ref.py"), "make", "t5_relu_untied", qs(model_)});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    std::vector<std::pair<std::string, double>> pieces;
    for (int i = 0; i < 98; ++i) pieces.emplace_back("\u2581a" + std::to_string(i), -1.0);
    test::writeT5Tokenizer(model_ / "tokenizer.json", pieces);
    // Sources of 1..8 words (2..9 tokens with eos), so the quartile buckets differ.
    corpus_ = root_ / "pairs.tsv";
    {
      std::ofstream f(corpus_);
      for (int i = 0; i < kPairs; ++i) f << words(i, 1 + (i * 5) % 8) << "\t" << words(i + 50, 2 + i % 5) << "\n";
    }
    // A coact partition (4 experts) and a similarity router (top-1) over all four sites.
    LoadedModel loaded = loadModel(model_);
    QVERIFY(loaded.tokenizer != nullptr);
    const auto ex = readSeq2SeqPairs(corpus_, "", "source", "target", loaded, 32, 0, Split::All, nullptr);
    QCOMPARE(static_cast<int>(ex.size()), kPairs);
    PairSource src = [&ex](const std::function<bool(const SequencePair&)>& fn) {
      for (size_t i = 0; i < ex.size(); ++i) {
        SequencePair p;
        p.source.ids.assign(ex[i].source.begin(), ex[i].source.end());
        p.source.docId = static_cast<int64_t>(i);
        p.decoder.assign(ex[i].decoderInput.begin(), ex[i].decoderInput.end());
        if (!fn(p)) return;
      }
    };
    JobContext job;
    RecordOptions o;
    o.batch = 4;
    o.samples = 64;
    o.seqLen = 32;
    recordSeq2SeqActivations(*loaded.model, src, SourceInfo{"pairs", "parallel-test", {}, ""}, o, root_ / "rec", job);
    Recording rec = Recording::open(root_ / "rec");
    SplitOptions so;
    so.method = "coact";
    so.experts = 4;
    so.stability = false;
    part_ = root_ / "part";
    runSplit(rec, loaded.model.get(), so, part_, job);
    PartitionData part = PartitionData::read(part_);
    SampleData samples =
        SampleData::read(root_ / "rec", part.sites, loaded.model->config().dModel, loaded.model->config().dFF);
    RouteOptions ro;
    ro.kind = RouterKind::Similarity;
    ro.topK = 1;
    RouterSet rs = buildRouters(*loaded.model, part, samples, ro, job);
    router_ = root_ / "router";
    fs::create_directories(router_);
    rs.writeInto(router_);
  }

  // translatePairs against greedyGenerateSeq2Seq on the same batches, the
  // buckets, BLEU against corpusBleu, and all experts == dense.
  void translateMatchesGreedy() {
    LoadedModel loaded = loadModel(model_);
    Model& m = *loaded.model;
    const auto pairs = readSeq2SeqPairs(corpus_, "", "source", "target", loaded, 32, 0, Split::All, nullptr);
    const auto buckets = sourceLengthBuckets(pairs, 4);
    size_t total = 0;
    int64_t previousMax = 0;
    for (const auto& b : buckets) {
      qInfo("bucket %lld-%lld: %zu sentences", static_cast<long long>(b.minTokens), static_cast<long long>(b.maxTokens),
            b.sentences.size());
      QVERIFY(b.minTokens > previousMax && b.minTokens <= b.maxTokens && !b.sentences.empty());
      for (size_t i : b.sentences) {
        const auto len = static_cast<int64_t>(pairs[i].source.size());
        QVERIFY(len >= b.minTokens && len <= b.maxTokens);
      }
      previousMax = b.maxTokens;
      total += b.sentences.size();
    }
    QCOMPARE(total, pairs.size());
    QVERIFY(buckets.size() >= 3);  // lengths 2..9: the quartiles differ
    const auto batches = translationBatches(buckets, 3);
    JobContext job;
    const Translation dense = translatePairs(m, nullptr, pairs, *loaded.tokenizer, batches, kMaxNew, job);
    QVERIFY(m.ffnOverride() == nullptr);
    Seq2SeqGenerateOptions go;
    go.maxNewTokens = kMaxNew;
    int nonEmpty = 0;
    for (const auto& batch : batches) {
      QVERIFY(batch.size() <= 3);
      std::vector<std::vector<int64_t>> src;
      for (size_t i : batch) src.push_back(pairs[i].source);
      const Seq2SeqGeneration g = greedyGenerateSeq2Seq(m, src, go);
      for (size_t k = 0; k < batch.size(); ++k) {
        QCOMPARE(dense.ids[batch[k]], g.tokens[k]);
        QCOMPARE(static_cast<bool>(dense.stopped[batch[k]]), static_cast<bool>(g.stopped[k]));
        const std::vector<int32_t> ids(g.tokens[k].begin(), g.tokens[k].end());
        QCOMPARE(QString::fromStdString(dense.texts[batch[k]]),
                 QString::fromStdString(loaded.tokenizer->decode(ids, true)));
        nonEmpty += dense.texts[batch[k]].empty() ? 0 : 1;
        QVERIFY(dense.seconds[batch[k]] > 0);
      }
    }
    QVERIFY(nonEmpty > 0);
    std::vector<std::string> refs;
    for (const auto& p : pairs) refs.push_back(p.target);
    const nlohmann::json fig = translationFigures(dense, nullptr, pairs, buckets);
    const BleuScore bleu = corpusBleu(dense.texts, refs);
    qInfo("dense: BLEU %.4f chrF %.4f, %s", bleu.score, corpusChrf(dense.texts, refs), dense.texts[0].c_str());
    QCOMPARE(fig["bleu"].get<double>(), bleu.score);
    QCOMPARE(fig["chrf"].get<double>(), corpusChrf(dense.texts, refs));
    QCOMPARE(fig["identical_to_reference"].get<double>(), 1.0);
    QCOMPARE(fig["sentences"].get<int64_t>(), static_cast<int64_t>(kPairs));
    // All experts active decode as the dense model; one expert of four need not.
    PartitionData part = PartitionData::read(part_);
    RouterSet rs = RouterSet::read(router_);
    auto moe = buildMoeFfn(m, part, rs, 1);
    const Translation all = translatePairs(m, moe->withFraction(1.0), pairs, *loaded.tokenizer, batches, kMaxNew, job);
    QCOMPARE(all.ids, dense.ids);
    const nlohmann::json allFig = translationFigures(all, &dense, pairs, buckets);
    QCOMPARE(allFig["identical_to_reference"].get<double>(), 1.0);
    QCOMPARE(allFig["bleu"].get<double>(), fig["bleu"].get<double>());
    const Translation quarter = translatePairs(m, moe, pairs, *loaded.tokenizer, batches, kMaxNew, job);
    const nlohmann::json qFig = translationFigures(quarter, &dense, pairs, buckets);
    int same = 0;
    for (size_t i = 0; i < pairs.size(); ++i) same += quarter.ids[i] == dense.ids[i] ? 1 : 0;
    qInfo("top-1 of 4 experts: BLEU %.4f, identical %d of %d", qFig["bleu"].get<double>(), same, kPairs);
    QCOMPARE(qFig["identical_to_reference"].get<double>(), double(same) / kPairs);
    QCOMPARE(qFig["bleu"].get<double>(), corpusBleu(quarter.texts, refs).score);
    // A generation needs at least one new token.
    bool threw = false;
    try {
      translatePairs(m, nullptr, pairs, *loaded.tokenizer, batches, 0, job);
    } catch (const ParameterError&) {
      threw = true;
    }
    QVERIFY(threw);
  }

  // moefy eval --generate --speed: eval.json validated by readEvalFile, BLEU
  // equal to bleu.h and moefy score on the same hypotheses, fraction 1 = dense.
  void cliGenerate() {
    const fs::path out = root_ / "eval";
    auto r = test::runCli({"eval",
                           qs(model_),
                           qs(corpus_),
                           "--partition",
                           qs(part_),
                           "--router",
                           qs(router_),
                           "--sweep",
                           "0.25,1.0",
                           "--generate",
                           QString::number(kMaxNew),
                           "--batch",
                           "3",
                           "--split",
                           "all",
                           "--seq-len",
                           "32",
                           "--speed",
                           "--speed-seconds",
                           "0.01",
                           "--out",
                           qs(out),
                           "--json",
                           "--quiet"});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    const nlohmann::json j = readEvalFile(out / "eval.json");
    const auto& refGen = j["reference"]["generation"];
    QCOMPARE(refGen["sentences"].get<int64_t>(), static_cast<int64_t>(kPairs));
    int64_t inBuckets = 0;
    for (const auto& b : refGen["buckets"]) inBuckets += b["sentences"].get<int64_t>();
    QCOMPARE(inBuckets, static_cast<int64_t>(kPairs));
    QCOMPARE(j["provenance"]["options"]["generate"].get<int>(), kMaxNew);
    // The same hypotheses in this process: the same batches (buckets, batch 3).
    LoadedModel loaded = loadModel(model_);
    const auto pairs = readSeq2SeqPairs(corpus_, "", "source", "target", loaded, 32, 0, Split::All, nullptr);
    JobContext job;
    const auto buckets = sourceLengthBuckets(pairs, 4);
    const Translation dense =
        translatePairs(*loaded.model, nullptr, pairs, *loaded.tokenizer, translationBatches(buckets, 3), kMaxNew, job);
    std::vector<std::string> refs;
    for (const auto& p : pairs) refs.push_back(p.target);
    const double bleu = corpusBleu(dense.texts, refs).score;
    qInfo("eval.json BLEU %.6f, bleu.h %.6f", refGen["bleu"].get<double>(), bleu);
    QCOMPARE(refGen["bleu"].get<double>(), bleu);
    QCOMPARE(refGen["chrf"].get<double>(), corpusChrf(dense.texts, refs));
    for (size_t k = 0; k < buckets.size(); ++k) {
      std::vector<std::string> h, rf;
      for (size_t i : buckets[k].sentences) h.push_back(dense.texts[i]), rf.push_back(refs[i]);
      QCOMPARE(refGen["buckets"][k]["bleu"].get<double>(), corpusBleu(h, rf).score);
      QCOMPARE(refGen["buckets"][k]["min_source_tokens"].get<int64_t>(), buckets[k].minTokens);
    }
    // moefy score on the same hypotheses (one segment per line).
    if (!dense.texts.back().empty()) {
      std::ofstream(root_ / "hyp.txt") << [&] {
        std::string s;
        for (const auto& t : dense.texts) s += t + "\n";
        return s;
      }();
      std::ofstream(root_ / "ref.txt") << [&] {
        std::string s;
        for (const auto& t : refs) s += t + "\n";
        return s;
      }();
      auto sc = test::runCli({"score", "--hyp", qs(root_ / "hyp.txt"), "--ref", qs(root_ / "ref.txt"), "--json"});
      QVERIFY2(sc.exitCode == 0, (sc.out + sc.err).c_str());
      QCOMPARE(nlohmann::json::parse(sc.out)["bleu"]["score"].get<double>(), refGen["bleu"].get<double>());
    } else {
      qInfo("last hypothesis empty: moefy score comparison skipped (bleu.h compared above)");
    }
    const auto& res = j["results"];
    QCOMPARE(static_cast<int>(res.size()), 6);  // {enc, dec, both} x {0.25, 1}
    int full = 0;
    for (const auto& x : res) {
      const auto& g = x["generation"];
      qInfo(
          "%s f=%.2f: BLEU %.3f chrF %.3f identical %.3f, %.3f ms/sentence, speedup %.2f, forward x%.2f, "
          "decode x%.2f",
          x["site_group"].get<std::string>().c_str(), x["fraction"].get<double>(), g["bleu"].get<double>(),
          g["chrf"].get<double>(), g["identical_to_reference"].get<double>(),
          1000 * g["seconds_per_sentence"].get<double>(), g.value("speedup", 0.0),
          x["speed"]["forward_speedup"].get<double>(), x["speed"]["generate_speedup"].get<double>());
      QVERIFY(x["speed"]["forward_tokens_per_s"].get<double>() > 0);
      QVERIFY(x["speed"]["generate_tokens_per_s"].get<double>() > 0);
      int64_t sum = 0;
      for (const auto& b : g["buckets"]) sum += b["sentences"].get<int64_t>();
      QCOMPARE(sum, static_cast<int64_t>(kPairs));
      if (x["fraction"].get<double>() == 1.0) {
        QCOMPARE(g["identical_to_reference"].get<double>(), 1.0);
        QCOMPARE(g["bleu"].get<double>(), refGen["bleu"].get<double>());
        QCOMPARE(g["chrf"].get<double>(), refGen["chrf"].get<double>());
        ++full;
      }
    }
    QCOMPARE(full, 3);
    // The reader refuses damaged generation blocks.
    auto refused = [&](const std::function<void(nlohmann::json&)>& damage, const std::string& needle) {
      nlohmann::json bad = j;
      damage(bad);
      std::string e;
      try {
        validateEvalDocument(bad, "eval.json");
      } catch (const FormatError& err) {
        e = err.what();
      }
      qInfo("damaged: %s", e.c_str());
      QVERIFY2(e.find(needle) != std::string::npos, e.c_str());
    };
    refused([](nlohmann::json& d) { d["results"][0]["generation"]["bleu"] = 101.0; }, "results[0].generation.bleu");
    refused([](nlohmann::json& d) { d["reference"]["generation"]["buckets"][0]["sentences"] = 1000; },
            "reference.generation.buckets hold");
    refused([](nlohmann::json& d) { d["results"][1]["generation"]["identical_to_reference"] = 1.5; },
            "identical_to_reference");
    // The text summary: the translation table and the length buckets.
    auto t = test::runCli({"eval", qs(model_), qs(corpus_), "--partition", qs(part_), "--router", qs(router_),
                           "--sweep", "1.0", "--generate", "4", "--split", "all", "--quiet"});
    QVERIFY2(t.exitCode == 0, (t.out + t.err).c_str());
    qInfo("%s", t.out.c_str());
    QVERIFY2(t.out.find("greedy translation: at most 4 new tokens") != std::string::npos, t.out.c_str());
    QVERIFY2(t.out.find("by source length (tokens)") != std::string::npos, t.out.c_str());
  }

  // `moefy inspect` on an artefact that is not a model says which it is (it said "no config.json").
  void inspectNamesOtherArtefacts() {
    auto r = test::runCli({"inspect", qs(router_)});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QVERIFY2(r.out.find("a router (router.json), not a model folder") != std::string::npos, r.out.c_str());
    r = test::runCli({"inspect", qs(part_), "--json"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    QCOMPARE(nlohmann::json::parse(r.out)["artefact"].get<std::string>(), std::string("partition"));
  }

  void badInput() {
    const QStringList base = {"eval",    qs(model_), qs(corpus_), "--partition",
                              qs(part_), "--router", qs(router_), "--quiet"};
    expectRefusal(QStringList(base) << "--generate"
                                    << "0",
                  2, "--generate");
    std::ofstream(root_ / "mono.txt") << "a1 a2 a3\na4 a5\n";
    expectRefusal({"eval", qs(model_), qs(root_ / "mono.txt"), "--partition", qs(part_), "--router", qs(router_),
                   "--generate", "4", "--quiet"},
                  2, "single-text corpus");
    fs::create_directories(root_ / "folder");
    expectRefusal({"eval", qs(model_), qs(root_ / "folder"), "--partition", qs(part_), "--router", qs(router_),
                   "--generate", "4", "--quiet"},
                  2, "single-text corpus");
  }
};

QTEST_GUILESS_MAIN(T5Translate)
#include "test_t5_translate.moc"
