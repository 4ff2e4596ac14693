// Quality at a compute budget (issue 17): the top-k activation bound and the
// sigma-MoE sigmoid router against an independent numpy reference
// (scripts/ref/budget_ref.py), the FFN FLOP formula and the fractions eval
// reports against hand-computed values, and all experts (or the bound at
// budget 1) reproducing the dense model.
#include <torch/torch.h>

#include <QtTest>
#include <cmath>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_file.h"
#include "analysis/eval/eval_run.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/moe/activation_bound.h"
#include "analysis/moe/ffn_flops.h"
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

fs::path refScript() { return test::sourceDir() / "scripts" / "ref" / "budget_ref.py"; }

double maxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

constexpr int64_t kD = test::kTinyD, kF = test::kTinyF, kVocab = test::kTinyVocab;
using test::tinyGpt2;

std::vector<std::vector<int64_t>> testSequences() { return test::tinySequences(17, 7, 3); }

// A MoE of layer 0 only (layer 1 stays dense) with the given labels and router kind.
std::shared_ptr<MoeFfn> layer0Moe(const Model& m, const at::Tensor& labels, int E, int k, RouterKind kind) {
  std::vector<MoeLayer> layers(2);
  std::vector<FfnWeights> dense(2);
  dense[1] = m.ffnWeights(1);
  auto w = MoeLayerWeights::pack(m.ffnWeights(0), ExpertLayout::fromLabels(labels, E, "test"));
  auto r = std::make_shared<LayerRouter>();
  r->kind = kind;
  r->experts = E;
  if (kind == RouterKind::Similarity) r->centroids = similarityCentroids(*w);
  if (kind == RouterKind::Sigmoid) r->w1 = similarityCentroids(*w) * 3.0;
  layers[0] = {w, r, k};
  return std::make_shared<MoeFfn>(layers, dense);
}

// Captures the FFN input of one layer (real tokens only) during a forward.
class CaptureIn : public HookSink {
 public:
  CaptureIn(int layer, at::Tensor rows) : layer_(layer), rows_(std::move(rows)) {}
  at::Tensor x;
  bool wants(int layer, HookPoint p) const override { return layer == layer_ && p == HookPoint::FfnIn; }
  void on(int, HookPoint, const at::Tensor& t) override {
    at::Tensor f = t.reshape({-1, t.size(-1)}).index_select(0, rows_);
    x = x.defined() ? at::cat({x, f}, 0) : f.clone();
  }

 private:
  int layer_;
  at::Tensor rows_;
};

}  // namespace

class TestComputeBudget : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() { configureRuntime(); }

  // The bound of random small FFNs (plain ReLU with biases, GELU, tanh-GELU,
  // gated SiLU) at several K against numpy.
  void activationBoundMatchesNumpy() {
    struct Case {
      const char* name;
      const char* act;
      bool gated, bias;
      int64_t d, F, n, keep;
    };
    const std::vector<Case> cases = {{"relu+bias K=24", "relu", false, true, 24, 96, 37, 24},
                                     {"relu+bias K=1", "relu", false, true, 24, 96, 5, 1},
                                     {"gelu K=30", "gelu", false, false, 16, 80, 21, 30},
                                     {"gelu_tanh K=10", "gelu_tanh", false, true, 16, 64, 13, 10},
                                     {"gated silu K=12", "silu", true, false, 24, 48, 19, 12},
                                     {"gated silu K=d_ff", "silu", true, false, 24, 48, 7, 48}};
    const fs::path root = test::freshDir("compute_budget_bound");
    nlohmann::json spec = nlohmann::json::array();
    std::vector<FfnWeights> ws;
    std::vector<at::Tensor> xs;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + i);
      const Activation act = std::string(c.act) == "relu"   ? Activation::ReLU
                             : std::string(c.act) == "gelu" ? Activation::GELU
                             : std::string(c.act) == "silu" ? Activation::SiLU
                                                            : Activation::GELUTanh;
      FfnWeights w = test::randomFfn(gen, c.d, c.F, c.gated, c.bias, act);
      at::Tensor x = at::randn({c.n, c.d}, gen);
      const fs::path dir = root / std::to_string(i);
      test::writeFfnNpy(dir, w, x);
      spec.push_back({{"dir", dir.string()}, {"act", c.act}, {"gated", c.gated}, {"bias", c.bias}, {"keep", c.keep}});
      ws.push_back(w);
      xs.push_back(x);
    }
    writeFileAtomic(root / "spec.json", spec.dump());
    auto r = test::runPython(
        {QString::fromStdString(refScript().string()), "bound", QString::fromStdString((root / "spec.json").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const fs::path dir = root / std::to_string(i);
      at::Tensor want = readNpy(dir / "y.npy", c.n, c.d), wantH = readNpy(dir / "h.npy", c.n, c.F);
      QVERIFY(want.defined() && wantH.defined());
      at::Tensor h;
      at::Tensor y = topKActivationFfn(ws[i], xs[i], c.keep, &h);
      const double dy = maxDiff(y, want), dh = maxDiff(h, wantH);
      qInfo() << c.name << ": max |bound - numpy| output" << dy << "hidden" << dh;
      QVERIFY(dy <= 1e-5);
      QVERIFY(dh <= 1e-5);
      // Exactly K kept per row (ReLU rows may have fewer non-zeros than K).
      QVERIFY((h != 0).sum(1).le(c.keep).all().item<bool>());
      // Through the FfnOverride (layer 0 sparse, layer 1 dense).
      ActivationBoundFfn bound({ws[i], ws[i]}, {c.keep, 0});
      QCOMPARE(maxDiff(bound.forward(0, xs[i], nullptr), y), 0.0);
      QCOMPARE(maxDiff(bound.forward(1, xs[i], nullptr), denseFfn(ws[i], xs[i], nullptr)), 0.0);
    }
    QCOMPARE(neuronsForBudget(0.25, 96), int64_t{24});
    QCOMPARE(neuronsForBudget(0.001, 96), int64_t{1});
    QCOMPARE(neuronsForBudget(1.0, 96), int64_t{96});
    QVERIFY_EXCEPTION_THROWN(neuronsForBudget(0.0, 96), ParameterError);
    QVERIFY_EXCEPTION_THROWN(topKActivationFfn(ws[0], xs[0], 97, nullptr), ParameterError);
    QVERIFY_EXCEPTION_THROWN(ActivationBoundFfn({ws[0]}, {97}), ParameterError);
  }

  // sigma-MoE router: scores and top-k against numpy; router.safetensors round trip.
  void sigmoidRouterMatchesNumpy() {
    const fs::path dir = test::freshDir("compute_budget_sigmoid");
    const int64_t N = 41, d = 24, E = 12;
    const int k = 3;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    at::Tensor x = at::randn({N, d}, gen) * 2.0;
    LayerRouter r;
    r.kind = RouterKind::Sigmoid;
    r.experts = static_cast<int>(E);
    r.w1 = at::randn({E, d}, gen) * 0.3;
    writeNpy(dir / "x.npy", x);
    writeNpy(dir / "w1.npy", r.w1);
    auto res = test::runPython({QString::fromStdString(refScript().string()), "sigmoid",
                                QString::fromStdString(dir.string()), QString::number(k)});
    QVERIFY2(res.exitCode == 0, res.err.c_str());
    at::Tensor want = readNpy(dir / "scores.npy", N, E), wantTop = readNpy(dir / "top.npy", N, k);
    QVERIFY(want.defined() && wantTop.defined());
    at::Tensor s = r.scores(x, MoeLayerWeights());
    const double ds = maxDiff(s, want);
    qInfo() << "sigmoid router: max |scores - numpy|" << ds;
    QVERIFY(ds <= 1e-6);
    QCOMPARE(maxDiff(r.logits(x), at::mm(x, r.w1.t())), 0.0);
    // The top-k sets the MoE FFN picks equal numpy's.
    at::Tensor sel = std::get<0>(topKExperts(s, k).sort(1));
    at::Tensor ref = std::get<0>(wantTop.to(at::kLong).sort(1));
    QVERIFY(at::equal(sel, ref));
    // router.json / router.safetensors round trip.
    RouterSet rs;
    rs.kind = RouterKind::Sigmoid;
    rs.layers = {1};
    rs.topK = {k};
    rs.experts = {static_cast<int>(E)};
    rs.routers = {r};
    rs.modelFingerprint = "0123456789abcdef";
    rs.partitionLabelsHash = "fedcba9876543210";
    fs::create_directories(dir / "router");
    rs.writeInto(dir / "router");
    RouterSet back = RouterSet::read(dir / "router");
    QCOMPARE(back.kind, RouterKind::Sigmoid);
    QCOMPARE(std::string(routerKindName(back.kind)), std::string("sigmoid"));
    QCOMPARE(maxDiff(back.routers[0].w1, r.w1), 0.0);
    QVERIFY(!back.routers[0].w2.defined());
    QCOMPARE(routerKindFromName("sigmoid", "test"), RouterKind::Sigmoid);
  }

  // Training on a learnable target lowers the held-out loss, and the stored
  // W1 (= V / s) gives the trained logits on the raw inputs.
  void sigmoidRouterTrains() {
    const int64_t S = 600, d = 16, E = 8;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    at::Tensor x = at::randn({S, d}, gen) * 5.0;  // raw inputs of norm ~20
    at::Tensor teacher = at::randn({E, d}, gen);
    at::Tensor mass = at::relu(at::mm(x, teacher.t()));  // [S, E], a mass-like target
    LayerRouter r;
    r.kind = RouterKind::Sigmoid;
    r.experts = static_cast<int>(E);
    r.w1 = at::randn({E, d}, gen) * 0.01;
    at::Tensor train, held;
    splitSamples(S, 0.2, 0, train, held);
    RouteOptions o;
    o.kind = RouterKind::Sigmoid;
    o.epochs = 15;
    o.batch = 64;
    nlohmann::json t = trainSigmoidRouter(r, x, mass, train, held, o, JobContext::none(), "test");
    const auto& ep = t["epochs"];
    const double first = ep.front()["held_out"].get<double>(), last = ep.back()["held_out"].get<double>();
    qInfo() << "sigmoid router held-out BCE" << first << "->" << last << "input scale"
            << t["input_scale"].get<double>();
    QVERIFY(last < first);
    QVERIFY(t["input_scale"].get<double>() > 10);
    // The oracle's top-1 expert is found far more often than by chance (1/8).
    at::Tensor xs = x.index_select(0, held), ms = mass.index_select(0, held);
    const double hit = (r.scores(xs, MoeLayerWeights()).argmax(1) == ms.argmax(1)).to(at::kFloat).mean().item<double>();
    qInfo() << "held-out top-1 agreement with the oracle" << hit;
    QVERIFY(hit > 0.5);
  }

  // All experts through the sigmoid router, and the bound at budget 1, are the dense model.
  void allExpertsAndFullBudgetEqualDense() {
    auto m = tinyGpt2(3);
    Batch b = makeBatch(testSequences(), 0);
    at::Tensor valid = b.mask.to(at::kBool);
    at::Tensor dense = m->forward(b).index({valid});
    const int E = 8;
    at::Tensor labels = (at::arange(kF, at::kLong) % E).to(at::kInt);
    m->setFfnOverride(layer0Moe(*m, labels, E, E, RouterKind::Sigmoid));
    const double dAll = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(layer0Moe(*m, labels, E, 2, RouterKind::Sigmoid));
    const double d2 = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(std::make_shared<ActivationBoundFfn>(std::vector<FfnWeights>{m->ffnWeights(0), m->ffnWeights(1)},
                                                           std::vector<int64_t>{kF, kF}));
    const double dBound = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(nullptr);
    qInfo() << "sigmoid router, all experts vs dense: max |logit diff|" << dAll << "; top-2 of 8:" << d2
            << "; bound at budget 1 vs dense:" << dBound;
    QVERIFY(dAll <= 1e-5);
    QVERIFY(d2 > 1e-4);
    QCOMPARE(dBound, 0.0);
  }

  // The formula on hand-computed cases (docs/moe.md, "Compute accounting").
  void flopFormulaByHand() {
    using M = FfnFlopCount::Method;
    // GPT-2 small (plain): d 768, F 3072, dense 2 * 768 * 3072 = 4718592.
    FfnFlopCount g{M::Dense, 768, 3072, false, 0, RouterKind::Oracle, 0};
    QCOMPARE(ffnFlops(g), 4718592.0);
    QCOMPARE(ffnFlopsFraction(g), 1.0);
    g.method = M::Moe;
    g.neurons = 768;  // 8 of 32 experts of 96 neurons
    g.experts = 32;
    g.router = RouterKind::Similarity;  // 2*768*768 + 768*32 = 1204224
    QCOMPARE(ffnFlops(g), 1204224.0);
    QVERIFY(std::abs(ffnFlopsFraction(g) - 1204224.0 / 4718592.0) < 1e-15);
    QVERIFY(std::abs(ffnFlopsFraction(g) - 0.2552083333333333) < 1e-12);
    g.router = RouterKind::Sigmoid;
    QCOMPARE(ffnFlops(g), 1204224.0);
    g.router = RouterKind::Mlp;  // + 32 * 32
    QCOMPARE(ffnFlops(g), 1205248.0);
    g.router = RouterKind::Oracle;  // 768 * 3072 + 2 * 768 * 768 = 3538944: 0.75
    QCOMPARE(ffnFlopsFraction(g), 0.75);
    QVERIFY(needsDenseHidden(g));
    // A gated FFN (m = 2): d 2048, F 5632, dense 3 * 2048 * 5632.
    FfnFlopCount l{M::ActivationBound, 2048, 5632, true, 1408, RouterKind::Oracle, 0};
    // bound, K = F / 4: (2 * 5632 + 1408) / (3 * 5632) = 0.75
    QCOMPARE(ffnFlopsFraction(l), 0.75);
    QVERIFY(needsDenseHidden(l));
    l.method = M::Moe;
    l.router = RouterKind::Sigmoid;
    l.experts = 64;  // (3 * 1408 + 64) / (3 * 5632) = 4288 / 16896
    QVERIFY(std::abs(ffnFlopsFraction(l) - 4288.0 / 16896.0) < 1e-15);
    QVERIFY(!needsDenseHidden(l));
    l.method = M::Dense;
    QCOMPARE(ffnFlops(l), 3.0 * 2048 * 5632);
    FfnFlopCount bad;
    QVERIFY_EXCEPTION_THROWN(ffnFlops(bad), ParameterError);
  }

  // The fractions evaluateQuality reports: d 32, F 128 (dense 8192 per layer),
  // layer 0 MoEfied with 8 experts of 16 neurons, layer 1 dense.
  void evalReportsFlopFractions() {
    auto m = tinyGpt2(5);
    const auto seqs = testSequences();
    const int E = 8;
    at::Tensor equal = (at::arange(kF, at::kLong) % E).to(at::kInt);
    auto sim = layer0Moe(*m, equal, E, 2, RouterKind::Similarity);
    auto oracle = layer0Moe(*m, equal, E, 2, RouterKind::Oracle);
    // Unequal experts: expert e owns 2 + 4e neurons (2, 6, ..., 30: 128 in all).
    std::vector<int> lab;
    for (int e = 0; e < E; ++e)
      for (int j = 0; j < 2 + 4 * e; ++j) lab.push_back(e);
    at::Tensor unequalLabels = at::tensor(lab, at::kInt).index_select(0, at::randperm(kF, at::kLong));
    auto unequal = layer0Moe(*m, unequalLabels, E, 2, RouterKind::Similarity);
    auto bound = std::make_shared<ActivationBoundFfn>(std::vector<FfnWeights>{m->ffnWeights(0), m->ffnWeights(1)},
                                                      std::vector<int64_t>{32, 0});
    std::vector<EvalCandidate> cands = {{"similarity", 0.25, sim, nullptr},
                                        {"oracle", 0.25, oracle, nullptr},
                                        {"unequal", 0.25, unequal, nullptr},
                                        {"topk-act", 0.25, nullptr, bound}};
    EvalOptions eo;
    eo.batch = 4;
    auto figs = evaluateQuality(*m, nullptr, cands, seqs, eo, JobContext::none());
    QCOMPARE(figs.size(), size_t(5));
    QCOMPARE(figs[0].ffnFlopsFraction, 1.0);
    // similarity, k = 2: 2*32*32 + 32*8 = 2304 -> 0.28125; model (2304 + 8192) / 16384.
    // oracle, k = 2: 32*128 + 2*32*32 = 6144 -> 0.75; model 0.875.
    // bound, K = 32: 32*128 + 32*32 = 5120 -> 0.625; model 0.8125.
    const std::vector<std::pair<double, double>> want = {{0.28125, 0.640625}, {0.75, 0.875}, {0, 0}, {0.625, 0.8125}};
    for (size_t i : {size_t(0), size_t(1), size_t(3)}) {
      const auto& f = figs[i + 1];
      qInfo() << f.name.c_str() << "layer 0 FLOP fraction" << f.layerFfnFlopsFraction[0] << "(hand" << want[i].first
              << "), model" << f.ffnFlopsFraction << "(hand" << want[i].second << ")";
      QVERIFY(std::abs(f.layerFfnFlopsFraction[0] - want[i].first) < 1e-12);
      QVERIFY(std::abs(f.ffnFlopsFraction - want[i].second) < 1e-12);
      QVERIFY(std::isnan(f.layerFfnFlopsFraction[1]));
    }
    QVERIFY(figs[1].ffnFlopsNote.empty());
    QVERIFY(!figs[2].ffnFlopsNote.empty() && !figs[4].ffnFlopsNote.empty());
    QCOMPARE(figs[4].neuronsKept, (std::vector<int64_t>{32, 0}));
    // Unequal experts count at the size of those each token was routed to:
    // recompute the routing by hand at the MoE model's own layer-0 inputs.
    {
      m->setFfnOverride(unequal);
      at::Tensor xs;
      for (size_t b0 = 0; b0 < seqs.size(); b0 += 4) {  // eval's batches (eo.batch)
        Batch b = makeBatch({seqs.begin() + b0, seqs.begin() + std::min(seqs.size(), b0 + 4)}, 0);
        CaptureIn cap(0, b.mask.reshape({-1}).nonzero().reshape({-1}));
        m->forward(b, &cap);
        xs = xs.defined() ? at::cat({xs, cap.x}, 0) : cap.x;
      }
      m->setFfnOverride(nullptr);
      const auto& w = *unequal->layers()[0].weights;
      at::Tensor scores = at::mm(l2Normalize(xs), similarityCentroids(w).t());
      at::Tensor sel = std::get<1>(scores.topk(2, 1));
      double total = 0;
      for (int64_t t = 0; t < sel.size(0); ++t)
        for (int j = 0; j < 2; ++j) total += w.layout.expertSize(static_cast<int>(sel[t][j].item<int64_t>()));
      const double n = total / static_cast<double>(sel.size(0));
      const double wantLayer = (2.0 * 32 * n + 32 * 8) / 8192.0;
      qInfo() << "unequal experts: mean neurons per token" << n << "-> layer fraction" << wantLayer << ", reported"
              << figs[3].layerFfnFlopsFraction[0];
      QVERIFY(std::abs(figs[3].layerFfnFlopsFraction[0] - wantLayer) < 1e-9);
      QVERIFY(std::abs(figs[3].ffnFlopsFraction - (wantLayer * 8192 + 8192) / 16384) < 1e-9);
    }
    // The eval.json shape through runEvaluation: the bound at the router's budget.
    EvalRunSpec spec;
    spec.bases = {{"similarity", sim}};
    spec.activationBound = true;
    spec.options = eo;
    nlohmann::json j = runEvaluation(*m, spec, seqs, JobContext::none());
    validateEvalDocument(j, "eval.json");
    QCOMPARE(j["results"].size(), size_t(2));
    const auto& rb = j["results"][1];
    QCOMPARE(rb["router"].get<std::string>(), std::string("topk-act"));
    QCOMPARE(rb["fraction"].get<double>(), 0.25);
    QCOMPARE(rb["neurons_kept"], nlohmann::json({32, 0}));
    QVERIFY(!rb.contains("top_k") && rb.contains("ffn_flops_note"));
    QCOMPARE(rb["ffn_flops_fraction"].get<double>(), 0.8125);
    QVERIFY(rb["layer_ffn_flops_fraction"][1].is_null());
    QCOMPARE(j["results"][0]["ffn_flops_fraction"].get<double>(), 0.640625);
    QCOMPARE(j["reference"]["ffn_flops_fraction"].get<double>(), 1.0);
    // Without a router: every layer, at each sweep budget.
    EvalRunSpec only;
    only.activationBound = true;
    only.sweep = {0.5, 0.125};
    only.options = eo;
    nlohmann::json jo = runEvaluation(*m, only, seqs, JobContext::none());
    QCOMPARE(jo["results"].size(), size_t(2));
    QCOMPARE(jo["results"][0]["neurons_kept"], nlohmann::json({16, 16}));  // ascending budgets
    QCOMPARE(jo["results"][1]["neurons_kept"], nlohmann::json({64, 64}));
    // 0.125: (32*128 + 32*16) / 8192 = 0.5625 in both layers.
    QCOMPARE(jo["results"][0]["ffn_flops_fraction"].get<double>(), 0.5625);
    only.sweep.clear();
    QVERIFY_EXCEPTION_THROWN(runEvaluation(*m, only, seqs, JobContext::none()), ParameterError);
    // The reader refuses a FLOP fraction no evaluation produces.
    nlohmann::json badDoc = j;
    badDoc["results"][0]["ffn_flops_fraction"] = 0.0;
    QVERIFY_EXCEPTION_THROWN(validateEvalDocument(badDoc, "eval.json"), FormatError);
  }
};

QTEST_GUILESS_MAIN(TestComputeBudget)
#include "test_compute_budget.moc"
