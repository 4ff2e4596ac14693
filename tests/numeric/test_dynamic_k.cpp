// Dynamic-k routing (issue 17, Dense-to-Dynamic-k MoE) against an
// independent numpy reference (scripts/ref/dynamic_k_ref.py): the selection
// rule, the experts' output norms the router regresses, the router's training
// and artefact round trip, a varying k through the MoE FFN and eval's mean k,
// k histogram and FLOP fraction, and tau = 1 reproducing the dense model.
#include <torch/torch.h>

#include <QtTest>
#include <cmath>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/eval/eval.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/route_build.h"
#include "analysis/route/router.h"
#include "npy.h"
#include "testutil.h"
#include "tiny_gpt2.h"

using namespace moefy;
namespace fs = std::filesystem;
using test::readNpy;
using test::writeNpy;

namespace {

fs::path refScript() { return test::sourceDir() / "scripts" / "ref" / "dynamic_k_ref.py"; }

double maxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

bool runRef(const QStringList& args) {
  QStringList a{QString::fromStdString(refScript().string())};
  a << args;
  auto r = test::runPython(a);
  if (r.exitCode != 0) qWarning() << "dynamic_k_ref.py failed:" << r.err.c_str();
  return r.exitCode == 0;
}

constexpr int64_t kD = test::kTinyD, kF = test::kTinyF, kVocab = test::kTinyVocab;
using test::tinyGpt2;

std::vector<std::vector<int64_t>> testSequences() { return test::tinySequences(11, 3, 2); }

// Layer 0 as a MoE of 8 equal experts with a dynamic-k router (random head), layer 1 dense.
std::shared_ptr<MoeFfn> layer0DynamicMoe(const Model& m, double tau, int minK, int maxK) {
  const int E = 8;
  std::vector<MoeLayer> layers(2);
  std::vector<FfnWeights> dense(2);
  dense[1] = m.ffnWeights(1);
  auto w = MoeLayerWeights::pack(m.ffnWeights(0),
                                 ExpertLayout::fromLabels((at::arange(kF, at::kLong) % E).to(at::kInt), E, "test"));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  auto r = std::make_shared<LayerRouter>();
  r->kind = RouterKind::DynamicK;
  r->experts = E;
  r->w1 = at::randn({E, kD}, gen) * 0.5;
  r->b1 = at::randn({E}, gen) * 0.3;
  r->tau = tau;
  r->minK = minK;
  layers[0] = {w, r, maxK};
  return std::make_shared<MoeFfn>(layers, dense);
}

}  // namespace

class TestDynamicK : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() { configureRuntime(); }

  // dynamicKExperts against numpy on skewed scores (ties included).
  void selectionMatchesNumpy() {
    struct Case {
      int64_t n;
      int E;
      double tau;
      int minK, maxK;
    };
    const std::vector<Case> cases = {
        {50, 8, 0.5, 1, 8}, {50, 8, 0.9, 2, 5}, {40, 16, 0.75, 1, 16}, {30, 12, 1.0, 1, 12}, {30, 12, 0.2, 3, 6}};
    const fs::path root = test::freshDir("dynamic_k_select");
    nlohmann::json spec = nlohmann::json::array();
    std::vector<at::Tensor> scores;
    for (size_t i = 0; i < cases.size(); ++i) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(60 + i);
      // exp of a wide normal: a few dominant experts; rounded to create ties.
      at::Tensor s = (at::exp(at::randn({cases[i].n, cases[i].E}, gen) * 1.5) * 8).round() / 8;
      const fs::path dir = root / std::to_string(i);
      fs::create_directories(dir);
      writeNpy(dir / "scores.npy", s.to(at::kFloat).contiguous());
      spec.push_back(
          {{"dir", dir.string()}, {"tau", cases[i].tau}, {"min_k", cases[i].minK}, {"max_k", cases[i].maxK}});
      scores.push_back(s.to(at::kFloat));
    }
    writeFileAtomic(root / "spec.json", spec.dump());
    QVERIFY(runRef({"select", QString::fromStdString((root / "spec.json").string())}));
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      at::Tensor want = readNpy(root / std::to_string(i) / "sel.npy", c.n, c.maxK);
      QVERIFY(want.defined());
      at::Tensor sel = dynamicKExperts(scores[i], c.tau, c.minK, c.maxK);
      const double d = maxDiff(sel.to(at::kFloat), want);
      const double meanK = (sel >= 0).sum(1).to(at::kDouble).mean().item<double>();
      qInfo() << "tau" << c.tau << "k in [" << c.minK << "," << c.maxK << "] of" << c.E << ": mean k" << meanK
              << "; max |selection - numpy|" << d;
      QCOMPARE(d, 0.0);
      QVERIFY(meanK >= c.minK && meanK <= c.maxK);
    }
    // tau = 1 with positive scores takes every expert up to max k.
    QVERIFY((dynamicKExperts(scores[3] + 1e-3, 1.0, 1, 12) >= 0).all().item<bool>());
    QVERIFY_EXCEPTION_THROWN(dynamicKExperts(scores[0], 0.0, 1, 8), ParameterError);
    QVERIFY_EXCEPTION_THROWN(dynamicKExperts(scores[0], 0.5, 3, 2), ParameterError);
    QVERIFY_EXCEPTION_THROWN(dynamicKExperts(scores[0], 0.5, 1, 9), ParameterError);
  }

  // MoeLayerWeights::expertOutputNorm against numpy, with a shared expert
  // (whose neurons belong to no routed expert).
  void outputNormsMatchNumpy() {
    const int64_t S = 23, d = 16, F = 64;
    const int E = 6;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
    FfnWeights w;
    w.up = at::randn({F, d}, gen) * 0.4;
    w.down = at::randn({d, F}, gen) * 0.3;
    w.act = Activation::ReLU;
    std::vector<int> lab;
    for (int64_t i = 0; i < F; ++i) lab.push_back(i < 4 ? E : static_cast<int>((i - 4) / 10));  // 4 shared + 6 x 10
    at::Tensor labels = at::tensor(lab, at::kInt).index_select(0, at::randperm(F, gen, at::kLong));
    auto packed = MoeLayerWeights::pack(w, ExpertLayout::fromLabels(labels, E, "test", true));
    at::Tensor h = at::relu(at::randn({S, F}, gen));  // original neuron order
    const fs::path dir = test::freshDir("dynamic_k_norms");
    writeNpy(dir / "h.npy", h);
    writeNpy(dir / "down.npy", w.down);
    writeNpy(dir / "labels.npy", labels.to(at::kFloat).reshape({1, -1}).contiguous());
    writeFileAtomic(dir / "meta.json", nlohmann::json{{"experts", E}}.dump());
    QVERIFY(runRef({"norms", QString::fromStdString(dir.string())}));
    at::Tensor want = readNpy(dir / "norms.npy", S, E);
    QVERIFY(want.defined());
    at::Tensor got = packed->expertOutputNorm(h.index_select(1, packed->layout.perm));
    const double diff = maxDiff(got, want);
    qInfo() << "expert output norms: max |C++ - numpy|" << diff;
    QVERIFY(diff <= 1e-5);
  }

  // Training lowers the held-out log-norm MSE; router.json round trip keeps
  // w1, b1, tau and min k.
  void routerTrainsAndRoundTrips() {
    const int64_t S = 500, d = 12;
    const int E = 6;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(31);
    at::Tensor x = at::randn({S, d}, gen) * 4.0;
    at::Tensor teacher = at::randn({E, d}, gen) * 0.3;
    at::Tensor norm = at::exp(at::mm(x, teacher.t()) / 4.0);  // log-linear in x: learnable
    LayerRouter r;
    r.kind = RouterKind::DynamicK;
    r.experts = E;
    r.w1 = at::zeros({E, d});
    r.b1 = at::zeros({E});
    at::Tensor train, held;
    splitSamples(S, 0.2, 0, train, held);
    RouteOptions o;
    o.kind = RouterKind::DynamicK;
    o.epochs = 40;
    o.batch = 64;
    o.lr = 0.05;
    nlohmann::json t = trainDynamicKRouter(r, x, norm, train, held, o, JobContext::none(), "test");
    const auto& ep = t["epochs"];
    const double first = ep.front()["held_out"].get<double>(), last = ep.back()["held_out"].get<double>();
    qInfo() << "dynamic-k head held-out log-norm MSE" << first << "->" << last;
    QVERIFY(last < 0.3 * first);
    // The head's scores rank the experts like the true norms.
    at::Tensor xs = x.index_select(0, held), ns = norm.index_select(0, held);
    const double top1 =
        (r.scores(xs, MoeLayerWeights()).argmax(1) == ns.argmax(1)).to(at::kFloat).mean().item<double>();
    qInfo() << "held-out top-1 agreement with the true largest norm" << top1;
    QVERIFY(top1 > 0.8);
    QVERIFY(maxDiff(r.logits(xs), at::mm(xs, r.w1.t()) + r.b1) < 1e-5);
    r.tau = 0.7;
    r.minK = 2;
    RouterSet rs;
    rs.kind = RouterKind::DynamicK;
    rs.layers = {0};
    rs.topK = {4};
    rs.experts = {E};
    rs.routers = {r};
    rs.modelFingerprint = "0123456789abcdef";
    rs.partitionLabelsHash = "fedcba9876543210";
    const fs::path dir = test::freshDir("dynamic_k_router");
    rs.writeInto(dir);
    RouterSet back = RouterSet::read(dir);
    QCOMPARE(back.kind, RouterKind::DynamicK);
    QCOMPARE(maxDiff(back.routers[0].w1, r.w1), 0.0);
    QCOMPARE(maxDiff(back.routers[0].b1, r.b1), 0.0);
    QCOMPARE(back.routers[0].tau, 0.7);
    QCOMPARE(back.routers[0].minK, 2);
    QCOMPARE(routerKindFromName("dynamic-k", "test"), RouterKind::DynamicK);
  }

  // Through the model: tau = 1 is the dense model; tau = 0.5 uses fewer
  // experts, and eval's mean k, histogram and FLOP fraction follow what ran.
  void varyingKThroughEval() {
    auto m = tinyGpt2(4);
    Batch b = makeBatch(testSequences(), 0);
    at::Tensor valid = b.mask.to(at::kBool);
    at::Tensor dense = m->forward(b).index({valid});
    m->setFfnOverride(layer0DynamicMoe(*m, 1.0, 1, 8));
    const double dAll = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(nullptr);
    qInfo() << "dynamic-k tau = 1 (all 8 experts) vs dense: max |logit diff|" << dAll;
    QVERIFY(dAll <= 1e-5);

    auto half = layer0DynamicMoe(*m, 0.5, 1, 6);
    std::vector<EvalCandidate> cands = {{"dynamic-k", 0.75, half, nullptr}};
    EvalOptions eo;
    eo.batch = 4;
    auto figs = evaluateQuality(*m, nullptr, cands, testSequences(), eo, JobContext::none());
    QCOMPARE(figs.size(), size_t(2));
    const QualityFigures& f = figs[1];
    QCOMPARE(f.kHistogram.size(), size_t(2));
    QVERIFY(f.kHistogram[1].empty());  // layer 1 is dense
    const auto& hist = f.kHistogram[0];
    QCOMPARE(hist.size(), size_t(7));  // k = 0..6
    int64_t tokens = 0;
    double sumK = 0;
    for (size_t k = 0; k < hist.size(); ++k) tokens += hist[k], sumK += double(k) * hist[k];
    QCOMPARE(hist[0], int64_t{0});  // min k 1
    QCOMPARE(tokens, valid.sum().item<int64_t>());
    const double meanK = sumK / tokens;
    // 8 equal experts of 16 neurons: n = 16 mean k; FLOPs (2 * 32 * n + 32 * 8) / (2 * 32 * 128).
    const double want = (2.0 * 32 * 16 * meanK + 32 * 8) / 8192.0;
    qInfo() << "tau 0.5, k in [1, 6]: mean k" << f.meanK[0] << "histogram"
            << QString::fromStdString(nlohmann::json(hist).dump()) << "; layer 0 FLOP fraction"
            << f.layerFfnFlopsFraction[0] << "(from the histogram" << want << ")";
    QVERIFY(std::abs(f.meanK[0] - meanK) < 1e-12);
    QVERIFY(meanK > 1.0 && meanK < 6.0);  // the k varies
    QVERIFY(std::abs(f.layerFfnFlopsFraction[0] - want) < 1e-9);
    const nlohmann::json j = f.toJson();
    QVERIFY(j.contains("mean_k") && j.contains("k_histogram") && j["mean_k"][1].is_null());
    // The autograd (calibration) path computes the same as the kernel for a varying k.
    at::Tensor x = at::randn({9, kD});
    at::Tensor sel = half->route(0, x);
    QCOMPARE(sel.size(1), int64_t{6});
    at::Tensor xg = x.clone().set_requires_grad(true);
    const double dg = maxDiff(half->compute(0, xg, sel, nullptr).detach(), half->compute(0, x, sel, nullptr));
    qInfo() << "varying k: max |autograd path - kernel|" << dg;
    QVERIFY(dg <= 1e-5);
  }
};

QTEST_GUILESS_MAIN(TestDynamicK)
#include "test_dynamic_k.moc"
