// The MoEfication pipeline on a T5 (encoder-decoder) model, issue 13: record
// the enc.blk.L and dec.blk.L FFN sites over teacher-forced pairs, split
// (coact/METIS and kmeans), route (similarity, mlp), and evaluate per site
// group. The recorded statistics of one site are checked against
// scripts/ref/t5_ref.py stats (float64, written from HF modeling_t5.py), and
// all experts active must equal the dense model.
#include <QtTest>

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_run.h"
#include "analysis/io/safetensors.h"
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
#include "t5_pairs.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

QString script(const char* name) {
  return QString::fromStdString((test::sourceDir() / "scripts" / "ref" / name).string());
}
QString qs(const fs::path& p) { return QString::fromStdString(p.string()); }

// Pairs of different lengths, so both batches are padded (tests/t5_pairs.h).
const std::vector<std::vector<int32_t>>& kSrc = test::kT5Src;
const std::vector<std::vector<int32_t>>& kDec = test::kT5Dec;

std::string idsText(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

PairSource pairs(int repeat) { return test::t5Pairs(repeat); }

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

class T5Pipeline : public QObject {
  Q_OBJECT
  fs::path root_;
  std::unique_ptr<Model> model_;

 private Q_SLOTS:
  void initTestCase() {
    root_ = test::freshDir("t5_pipeline");
    auto r = test::runPython({script("t5_ref.py"), "make", "t5_relu", qs(root_ / "model")});
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    QStringList args = {script("t5_ref.py"),
                        "stats",
                        qs(root_ / "model"),
                        "--site",
                        "dec.blk.1",
                        "--out",
                        qs(root_ / "ref_stats.safetensors")};
    for (size_t i = 0; i < kSrc.size(); ++i)
      args << "--ids" << QString::fromStdString(idsText(kSrc[i])) << "--decoder-ids"
           << QString::fromStdString(idsText(kDec[i]));
    r = test::runPython(args);
    QVERIFY2(r.exitCode == 0, (r.out + r.err).c_str());
    model_ = Model::load(root_ / "model");
    QVERIFY(model_->config().encoderDecoder);
  }

  void recordMatchesReference() {
    JobContext job;
    RecordOptions o;
    o.batch = 2;  // the three pairs run in two padded batches
    o.samples = 1000;
    o.seqLen = 16;
    recordSeq2SeqActivations(*model_, pairs(1), SourceInfo{"pairs", "parallel-test", {}, ""}, o, root_ / "rec1", job);
    Recording rec = Recording::open(root_ / "rec1");
    QCOMPARE(static_cast<int>(rec.sites().size()), 4);  // enc.blk.0, enc.blk.1, dec.blk.0, dec.blk.1
    QCOMPARE(QString::fromStdString(rec.sites()[3].name()), QString("dec.blk.1"));
    const int L = rec.layerOf(Site::parse("dec.blk.1"));
    QCOMPARE(L, 3);
    // Padding is never counted: 5 + 2 + 4 decoder tokens, 7 + 3 + 5 source tokens.
    QCOMPARE(rec.tokens(L), int64_t{11});
    QCOMPARE(rec.tokens(rec.layerOf(Site::parse("enc.blk.0"))), int64_t{15});
    QCOMPARE(rec.sampleCount(L), int64_t{11});
    auto ref = SafetensorsFile::open(root_ / "ref_stats.safetensors");
    QCOMPARE(ref->f32("tokens").item<double>(), 11.0);
    double maxDiff = 0;
    auto diff = [&](const at::Tensor& got, const char* name) {
      at::Tensor want = ref->raw(name).to(at::kDouble);
      const double d = (got.to(at::kDouble) - want).abs().max().item<double>();
      qInfo("dec.blk.1 %s: max |recorder - t5_ref.py| = %.3g", name, d);
      maxDiff = std::max(maxDiff, d);
    };
    diff(rec.count(L), "count");
    diff(rec.sum(L), "sum");
    diff(rec.sumsq(L), "sumsq");
    diff(rec.max(L), "max");
    diff(rec.coact(L), "coact");
    // Counts must be exact; sums are F32 hiddens (1e-4 relative per the forward test) added in F64.
    QCOMPARE((rec.count(L).to(at::kDouble) - ref->raw("count").to(at::kDouble)).abs().max().item<double>(), 0.0);
    QCOMPARE((rec.coact(L).to(at::kDouble) - ref->raw("coact").to(at::kDouble)).abs().max().item<double>(), 0.0);
    QVERIFY2(maxDiff < 1e-3, std::to_string(maxDiff).c_str());
    QVERIFY(rec.count(L).sum().item<int64_t>() > 0);  // a real, non-trivial activation pattern
  }

  void encoderOnlyAndBadInput() {
    JobContext job;
    RecordOptions o;
    o.seqLen = 16;
    o.sites = {"enc"};
    std::vector<Sequence> mono;
    for (size_t i = 0; i < kSrc.size(); ++i) mono.push_back(Sequence{kSrc[i], static_cast<int64_t>(i)});
    recordActivations(*model_, vectorSource(mono), SourceInfo{"mono.txt", "txt", {}, ""}, o, root_ / "rec_enc", job);
    Recording rec = Recording::open(root_ / "rec_enc");
    QCOMPARE(static_cast<int>(rec.sites().size()), 2);
    QCOMPARE(rec.tokens(), int64_t{15});
    // A monolingual corpus asked for decoder sites: one line naming the site and the corpus.
    o.sites = {"enc", "dec"};
    std::string e = errorOf([&] {
      recordActivations(*model_, vectorSource(mono), SourceInfo{"mono.txt", "txt", {}, ""}, o, root_ / "rec_bad", job);
    });
    qInfo("monolingual + dec: %s", e.c_str());
    QVERIFY2(e.find("dec.blk.0") != std::string::npos && e.find("mono.txt") != std::string::npos &&
                 e.find("parallel corpus") != std::string::npos && e.find('\n') == std::string::npos,
             e.c_str());
    QVERIFY(!fs::exists(root_ / "rec_bad"));
    // A site the model lacks.
    e = errorOf([&] { resolveRecordSites(model_->config(), {}, {"dec.blk.7"}); });
    qInfo("missing site: %s", e.c_str());
    QVERIFY2(e.find("--sites") != std::string::npos && e.find("dec.blk.7") != std::string::npos &&
                 e.find("dec.blk.0..dec.blk.1") != std::string::npos,
             e.c_str());
    e = errorOf([&] { resolveRecordSites(model_->config(), {}, {"blk"}); });
    QVERIFY2(e.find("no 'blk' FFN sites") != std::string::npos, e.c_str());
    e = errorOf([&] { resolveRecordSites(model_->config(), {0}, {}); });
    QVERIFY2(e.find("--layers") != std::string::npos && e.find("--sites") != std::string::npos, e.c_str());
  }

  void splitRouteEval() {
    JobContext job;
    RecordOptions o;
    o.batch = 4;
    o.samples = 64;
    o.seqLen = 16;
    recordSeq2SeqActivations(*model_, pairs(8), SourceInfo{"pairs8", "parallel-test", {}, ""}, o, root_ / "rec8", job);
    Recording rec = Recording::open(root_ / "rec8");
    QCOMPARE(rec.tokens(rec.layerOf(Site::parse("dec.blk.0"))), int64_t{88});
    QCOMPARE(rec.sampleCount(rec.layerOf(Site::parse("dec.blk.0"))), int64_t{64});
    for (const char* method : {"coact", "kmeans"}) {
      SplitOptions so;
      so.method = method;
      so.experts = 4;
      so.stability = false;
      runSplit(rec, model_.get(), so, root_ / (std::string("part_") + method), job);
      PartitionData part = PartitionData::read(root_ / (std::string("part_") + method));
      QCOMPARE(static_cast<int>(part.sites.size()), 4);
      QCOMPARE(QString::fromStdString(part.sites[2].name()), QString("dec.blk.0"));
      part.checkModel(*model_);
    }
    PartitionData part = PartitionData::read(root_ / "part_coact");
    SampleData samples = SampleData::read(root_ / "rec8", part.sites, model_->config().dModel, model_->config().dFF);
    QCOMPARE(samples.ffnIn[0].size(0), int64_t{64});
    for (RouterKind kind : {RouterKind::Similarity, RouterKind::Mlp}) {
      RouteOptions ro;
      ro.kind = kind;
      ro.topK = 1;
      ro.epochs = 2;
      RouterSet rs = buildRouters(*model_, part, samples, ro, job);
      const fs::path rdir = root_ / (std::string("router_") + routerKindName(kind));
      fs::create_directories(rdir);
      rs.writeInto(rdir);
      RouterSet back = RouterSet::read(rdir);
      QCOMPARE(QString::fromStdString(back.siteAt(3).name()), QString("dec.blk.1"));
    }
    RouterSet rs = RouterSet::read(root_ / "router_similarity");
    auto moe = buildMoeFfn(*model_, part, rs, 1);
    // All experts active equals dense (summation order only), on padded batches.
    std::vector<Seq2SeqExample> ex;
    for (size_t i = 0; i < kSrc.size(); ++i) {
      Seq2SeqExample e;
      e.source.assign(kSrc[i].begin(), kSrc[i].end());
      e.decoderInput.assign(kDec[i].begin(), kDec[i].end());
      e.labels.assign(kDec[i].begin() + 1, kDec[i].end());
      e.labels.push_back(1);
      ex.push_back(e);
    }
    Batch src = makeBatch({ex[0].source, ex[1].source}, 0),
          dec = makeBatch({ex[0].decoderInput, ex[1].decoderInput}, 0);
    model_->setFfnOverride(nullptr);
    at::Tensor dense = model_->forwardSeq2Seq(src, dec);
    model_->setFfnOverride(moe->withFraction(1.0));
    at::Tensor all = model_->forwardSeq2Seq(src, dec);
    model_->setFfnOverride(nullptr);
    const double d = (all - dense).abs().max().item<double>();
    qInfo("all experts vs dense, logits: max diff %.3g", d);
    QVERIFY2(d < 1e-4, std::to_string(d).c_str());

    EvalRunSpec spec;
    spec.bases.emplace_back("similarity", moe);
    spec.sweep = {0.25, 1.0};
    spec.options.batch = 2;
    nlohmann::json j = runSeq2SeqEvaluation(*model_, spec, ex, job);
    QCOMPARE(j["model"]["objective"].get<std::string>(), std::string("seq2seq"));
    QCOMPARE(j["reference"]["positions"].get<int64_t>(), int64_t{11});  // labels only, no padding
    const auto& res = j["results"];
    QCOMPARE(static_cast<int>(res.size()), 6);  // {enc, dec, both} x {0.25, 1}
    int checked = 0;
    for (const auto& r : res) {
      qInfo("%s f=%.2f: loss %.4f ppl %.3f top1 %.3f (dense loss %.4f)", r["site_group"].get<std::string>().c_str(),
            r["fraction"].get<double>(), r["loss"].get<double>(), r["perplexity"].get<double>(),
            r["top1_agreement"].get<double>(), j["reference"]["loss"].get<double>());
      if (r["fraction"].get<double>() == 1.0) {
        QVERIFY(std::abs(r["loss_delta"].get<double>()) < 1e-4);
        QCOMPARE(r["top1_agreement"].get<double>(), 1.0);
        ++checked;
      }
      const auto& le = r["layer_rel_error"];
      QCOMPARE(static_cast<int>(le.size()), 4);
      if (r["site_group"] == "enc") QVERIFY(le[2].is_null() && le[3].is_null() && !le[0].is_null());
      if (r["site_group"] == "dec") QVERIFY(le[0].is_null() && !le[3].is_null());
    }
    QCOMPARE(checked, 3);
    // Export and reload of the T5 MoE: the sites are named in the block, the
    // experts prefixed by their site; the reloaded model computes what the
    // MoE it was written from computes (the same kernel on the same weights).
    std::map<std::string, double> lossOf;  // site group at the router's top-1 (0.25 of 4 experts)
    for (const auto& r : res)
      if (r["fraction"].get<double>() == 0.25) lossOf[r["site_group"].get<std::string>()] = r["loss"].get<double>();
    ExportOptions eo;
    const nlohmann::json block = exportMoe(*model_, part, rs, root_ / "export", eo, job);
    QCOMPARE(block["sites"].get<std::vector<std::string>>(),
             (std::vector<std::string>{"enc.blk.0", "enc.blk.1", "dec.blk.0", "dec.blk.1"}));
    auto moeFile = SafetensorsFile::open(root_ / "export" / "moe.safetensors");
    QVERIFY(moeFile->contains("dec.blk.1.experts.3.down.weight") && moeFile->contains("enc.blk.0.router.centroids"));
    LoadedModel back = loadModel(root_ / "export");
    QVERIFY(back.isMoe());
    auto reloaded = std::dynamic_pointer_cast<const MoeFfn>(back.model->ffnOverride());
    QVERIFY(reloaded);
    QCOMPARE(static_cast<int>(reloaded->sites().size()), 4);
    model_->setFfnOverride(moe);
    const at::Tensor want = model_->forwardSeq2Seq(src, dec);
    model_->setFfnOverride(nullptr);
    const at::Tensor got = back.model->forwardSeq2Seq(src, dec);
    const double dBack = (got - want).abs().max().item<double>();
    qInfo("reloaded export vs the MoE it was written from, logits: max diff %.3g", dBack);
    QVERIFY2(dBack <= 1e-5, std::to_string(dBack).c_str());
    back.model->setFfnOverride(reloaded->withFraction(1.0));
    const double dAll = (back.model->forwardSeq2Seq(src, dec) - dense).abs().max().item<double>();
    qInfo("reloaded export with all experts vs the dense model: max diff %.3g", dAll);
    QVERIFY2(dAll <= 1e-4, std::to_string(dAll).c_str());
    // eval of the export as MODEL_DIR (its reference: all experts) gives the
    // losses the evaluation of the partition and router gave.
    EvalRunSpec again;
    again.reference = reloaded->withFraction(1.0);
    again.bases.emplace_back("export", reloaded);
    again.options.batch = 2;
    back.model->setFfnOverride(reloaded);
    nlohmann::json j2 = runSeq2SeqEvaluation(*back.model, again, ex, job);
    QCOMPARE(static_cast<int>(j2["results"].size()), 3);  // enc, dec, both at the exported top-1
    for (const auto& r : j2["results"]) {
      const std::string g = r["site_group"].get<std::string>();
      qInfo("export %s: loss %.6f (from the partition and router: %.6f)", g.c_str(), r["loss"].get<double>(),
            lossOf.at(g));
      QVERIFY(std::abs(r["loss"].get<double>() - lossOf.at(g)) <= 1e-5);
    }
  }
};

QTEST_GUILESS_MAIN(T5Pipeline)
#include "test_t5_pipeline.moc"
