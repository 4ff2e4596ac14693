// Shared experts (issue 17, `split --shared N|auto`) against an independent
// numpy reference (scripts/ref/shared_ref.py): the shared-neuron choice from
// activation counts, the MoE kernel with a shared expert (and tokens that use
// fewer than k experts), the FFN FLOP fractions eval reports, and all routed
// experts plus the shared one reproducing the dense model.
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
#include "analysis/moe/ffn_flops.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/router.h"
#include "analysis/split/split.h"
#include "npy.h"
#include "testutil.h"
#include "tiny_gpt2.h"

using namespace moefy;
namespace fs = std::filesystem;
using test::readNpy;
using test::writeNpy;

namespace {

fs::path refScript() { return test::sourceDir() / "scripts" / "ref" / "shared_ref.py"; }

double maxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

nlohmann::json runRef(const QStringList& args) {
  QStringList a{QString::fromStdString(refScript().string())};
  a << args;
  auto r = test::runPython(a);
  if (r.exitCode != 0) {
    qWarning() << "shared_ref.py failed:" << r.err.c_str();
    return nullptr;
  }
  return args.front() == "moe" ? nlohmann::json::object() : nlohmann::json::parse(r.out);
}

// Labels [F] with a shared expert: `shared` random neurons get label E, the
// others E equal routed experts in a seeded random order.
at::Tensor sharedLabels(int64_t F, int E, int64_t shared, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(F, gen, at::kLong);
  at::Tensor lab = at::empty({F}, at::kInt);
  const int64_t routedSize = (F - shared) / E;
  for (int64_t r = 0; r < F; ++r) {
    const int64_t i = perm[r].item<int64_t>();
    lab[i] = r < shared ? E : static_cast<int>((r - shared) / routedSize);
  }
  return lab;
}

constexpr int64_t kD = test::kTinyD, kF = test::kTinyF, kVocab = test::kTinyVocab;
using test::tinyGpt2;

std::vector<std::vector<int64_t>> testSequences() { return test::tinySequences(13, 5, 1); }

// Layer 0 as a MoE with a shared expert (similarity router), layer 1 dense.
std::shared_ptr<MoeFfn> layer0SharedMoe(const Model& m, const at::Tensor& labels, int E, int k) {
  std::vector<MoeLayer> layers(2);
  std::vector<FfnWeights> dense(2);
  dense[1] = m.ffnWeights(1);
  auto w = MoeLayerWeights::pack(m.ffnWeights(0), ExpertLayout::fromLabels(labels, E, "test", true));
  auto r = std::make_shared<LayerRouter>();
  r->kind = RouterKind::Similarity;
  r->experts = E;
  r->centroids = similarityCentroids(*w);
  layers[0] = {w, r, k};
  return std::make_shared<MoeFfn>(layers, dense);
}

}  // namespace

class TestSharedExpert : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() { configureRuntime(); }

  // sharedNeuronCount / mostActiveNeurons against numpy on random counts with
  // ties, for fixed counts and the auto rule (mass share, cap, rounding).
  void sharedChoiceMatchesNumpy() {
    struct Case {
      int64_t F;
      int E;
      const char* mode;
      int neurons;
      double mass, maxFraction;
    };
    const std::vector<Case> cases = {
        {128, 8, "count", 16, 0, 0},    {128, 8, "count", 20, 0, 0},       {96, 6, "count", 12, 0, 0},
        {128, 8, "count", 121, 0, 0},   {128, 8, "auto", 0, 0.25, 0.125},  {128, 8, "auto", 0, 0.5, 0.25},
        {120, 7, "auto", 0, 0.3, 0.2},  {256, 16, "auto", 0, 0.1, 0.125},  {64, 4, "auto", 0, 0.9, 0.05},
        {100, 9, "auto", 0, 0.25, 0.5}, {1024, 32, "auto", 0, 0.25, 0.125}};
    const fs::path root = test::freshDir("shared_choice");
    nlohmann::json spec = nlohmann::json::array();
    std::vector<at::Tensor> counts;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      auto gen = at::make_generator<at::CPUGeneratorImpl>(40 + i);
      // Skewed counts (a few very active neurons) with many ties: integers in [0, 60].
      at::Tensor cnt = (at::rand({c.F}, gen).pow(3) * 60).floor().to(at::kLong);
      const fs::path dir = root / std::to_string(i);
      fs::create_directories(dir);
      writeNpy(dir / "count.npy", cnt.to(at::kFloat).reshape({1, -1}).contiguous());
      spec.push_back({{"dir", dir.string()},
                      {"experts", c.E},
                      {"mode", c.mode},
                      {"neurons", c.neurons},
                      {"mass", c.mass},
                      {"max_fraction", c.maxFraction}});
      counts.push_back(cnt);
    }
    writeFileAtomic(root / "spec.json", spec.dump());
    nlohmann::json ref = runRef({"choose", QString::fromStdString((root / "spec.json").string())});
    QVERIFY(ref.is_array() && ref.size() == cases.size());
    int withShared = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      SharedOptions o;
      o.mode = c.mode;
      o.neurons = c.neurons;
      o.mass = c.mass;
      o.maxFraction = c.maxFraction;
      if (ref[i].contains("error")) {
        QVERIFY_EXCEPTION_THROWN(sharedNeuronCount(counts[i], c.E, o, "test"), ParameterError);
        qInfo() << "case" << i << ": --shared" << c.neurons << "refused for d_ff" << c.F << "E" << c.E
                << "(numpy agrees)";
        continue;
      }
      const int n = sharedNeuronCount(counts[i], c.E, o, "test");
      const std::vector<int32_t> ids = mostActiveNeurons(counts[i], n);
      const auto want = ref[i]["ids"].get<std::vector<int32_t>>();
      qInfo() << "case" << i << c.mode << "d_ff" << c.F << "E" << c.E << ": N" << n << "(numpy"
              << ref[i]["n"].get<int>() << "), ids equal" << (ids == want);
      QCOMPARE(n, ref[i]["n"].get<int>());
      QVERIFY(ids == want);
      QVERIFY((c.F - n) % c.E == 0);
      if (n > 0) ++withShared;
    }
    QVERIFY(withShared >= 6);  // the cases exercise the rule, not only its zero
    // Option text.
    QCOMPARE(parseShared("").enabled(), false);
    QCOMPARE(parseShared("auto").mode, std::string("auto"));
    QCOMPARE(parseShared("64").neurons, 64);
    QVERIFY_EXCEPTION_THROWN(parseShared("0"), ParameterError);
    QVERIFY_EXCEPTION_THROWN(parseShared("12x"), ParameterError);
    QVERIFY_EXCEPTION_THROWN(parseShared("-3"), ParameterError);
  }

  // The kernel (BLAS and few-token paths) and the autograd path with a shared
  // expert, selections with -1 entries included, against numpy. On one thread
  // and on four, where the kernel runs a shared expert of several routed
  // experts' size as pieces over the threads (the first, fourth and fifth
  // cases: 32 / 12, 24 / 6 and 16 / 8 neurons -> 3, 4 and 2 pieces).
  void sharedKernelMatchesNumpy() {
    struct Case {
      const char* name;
      const char* act;
      bool gated, bias;
      int64_t d, F, n, shared;
      int E, k;
    };
    const std::vector<Case> cases = {
        {"relu+bias E=8 k=2 shared 32", "relu", false, true, 32, 128, 37, 32, 8, 2},
        {"relu+bias E=6 k=3 shared 6 (batch 1)", "relu", false, true, 16, 96, 1, 6, 6, 3},
        {"gated silu E=4 k=1 shared 8", "silu", true, false, 24, 48, 19, 8, 4, 1},
        {"gated silu E=4 k=2 shared 24", "silu", true, false, 24, 48, 5, 24, 4, 2},
        {"relu+bias E=4 k=1 shared 16 (batch 1)", "relu", false, true, 16, 48, 1, 16, 4, 1}};
    const fs::path root = test::freshDir("shared_kernel");
    const int64_t savedFew = fewTokenMax();
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Case& c = cases[ci];
      auto gen = at::make_generator<at::CPUGeneratorImpl>(200 + ci);
      FfnWeights w = test::randomFfn(gen, c.d, c.F, c.gated, c.bias,
                                     std::string(c.act) == "relu" ? Activation::ReLU : Activation::SiLU);
      at::Tensor x = at::randn({c.n, c.d}, gen);
      at::Tensor labels = sharedLabels(c.F, c.E, c.shared, 300 + ci);
      // Distinct routed experts per token; every third token drops its last one (-1).
      at::Tensor sel = std::get<1>(at::rand({c.n, c.E}, gen).topk(c.k, 1));
      for (int64_t t = 0; t < c.n; t += 3) sel[t][c.k - 1] = -1;
      const fs::path dir = root / std::to_string(ci);
      test::writeFfnNpy(dir, w, x);
      writeNpy(dir / "labels.npy", labels.to(at::kFloat).reshape({1, -1}).contiguous());
      writeNpy(dir / "sel.npy", sel.to(at::kFloat).contiguous());
      writeFileAtomic(dir / "meta.json",
                      nlohmann::json{{"experts", c.E}, {"act", c.act}, {"gated", c.gated}, {"bias", c.bias}}.dump());
      QVERIFY(runRef({"moe", QString::fromStdString(dir.string())}).is_object());
      at::Tensor want = readNpy(dir / "y.npy", c.n, c.d), wantH = readNpy(dir / "h.npy", c.n, c.F);
      QVERIFY(want.defined() && wantH.defined());

      auto packed = MoeLayerWeights::pack(w, ExpertLayout::fromLabels(labels, c.E, "test", true));
      QCOMPARE(packed->layout.sharedSize(), c.shared);
      QCOMPARE(packed->layout.blocks(), c.E + 1);
      auto r = std::make_shared<LayerRouter>();
      r->kind = RouterKind::Similarity;
      r->experts = c.E;
      r->centroids = similarityCentroids(*packed);
      QCOMPARE(r->centroids.size(0), int64_t{c.E});  // routers score routed experts only
      MoeFfn moe({MoeLayer{packed, r, c.k}}, {FfnWeights()});
      const int savedThreads = at::get_num_threads();
      for (int threads : {1, 4}) {
        at::set_num_threads(threads);
        for (int64_t few : {int64_t{0}, int64_t{16}}) {
          setFewTokenMax(few);
          at::Tensor h;
          at::Tensor y = moe.compute(0, x, sel, &h);
          const double dy = maxDiff(y, want), dh = maxDiff(h, wantH);
          qInfo() << c.name << (few ? "(few-token kernels)" : "(BLAS only)") << threads
                  << "threads: max |kernel - numpy| output" << dy << "hidden" << dh;
          QVERIFY(dy <= 1e-5);
          QVERIFY(dh <= 1e-5);
        }
      }
      at::set_num_threads(savedThreads);
      setFewTokenMax(savedFew);
      // The autograd (calibration) path computes the same.
      at::Tensor xg = x.clone().set_requires_grad(true);
      at::Tensor yg = moe.compute(0, xg, sel, nullptr);
      const double dg = maxDiff(yg.detach(), want);
      qInfo() << c.name << ": max |autograd path - numpy|" << dg;
      QVERIFY(dg <= 1e-5);
      // The oracle's mass leaves the shared neurons out: [N, E].
      QCOMPARE(packed->expertMass(packed->packedHidden(x)).size(1), int64_t{c.E});
      QCOMPARE(expertMassFromHidden(wantH, labels, c.E, true).size(1), int64_t{c.E});
    }
    // A layout without the shared flag refuses label E; one with it needs a non-empty shared expert.
    at::Tensor lab = sharedLabels(64, 4, 16, 1);
    QVERIFY_EXCEPTION_THROWN(ExpertLayout::fromLabels(lab, 4, "labels"), FormatError);
    QVERIFY_EXCEPTION_THROWN(ExpertLayout::fromLabels((at::arange(64) % 4).to(at::kInt), 4, "labels", true),
                             FormatError);
  }

  // All routed experts plus the shared one are the dense model; fewer are not.
  void allExpertsPlusSharedEqualDense() {
    auto m = tinyGpt2(9);
    Batch b = makeBatch(testSequences(), 0);
    at::Tensor valid = b.mask.to(at::kBool);
    at::Tensor dense = m->forward(b).index({valid});
    const int E = 8;
    at::Tensor labels = sharedLabels(kF, E, 32, 5);  // 32 shared + 8 experts of 12
    m->setFfnOverride(layer0SharedMoe(*m, labels, E, E));
    const double dAll = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(layer0SharedMoe(*m, labels, E, 2));
    const double d2 = maxDiff(m->forward(b).index({valid}), dense);
    m->setFfnOverride(nullptr);
    qInfo() << "shared expert + all 8 routed vs dense: max |logit diff|" << dAll << "; shared + top-2:" << d2;
    QVERIFY(dAll <= 1e-5);
    QVERIFY(d2 > 1e-4);
  }

  // eval's FLOP fractions with a shared expert against numpy's formula:
  // d 32, F 128, 32 shared neurons + 8 routed experts of 12, similarity router.
  void evalFlopsCountSharedExpert() {
    auto m = tinyGpt2(11);
    const int E = 8;
    at::Tensor labels = sharedLabels(kF, E, 32, 6);
    const fs::path root = test::freshDir("shared_flops");
    nlohmann::json spec = nlohmann::json::array();
    for (int k : {1, 2, 8})
      spec.push_back(
          {{"d", kD}, {"F", kF}, {"E", E}, {"shared", 32}, {"k", k}, {"router", "similarity"}, {"gated", false}});
    // The formula alone, on a GPT-2-small-like shape with an mlp router and a gated one.
    spec.push_back(
        {{"d", 768}, {"F", 3072}, {"E", 30}, {"shared", 192}, {"k", 7}, {"router", "mlp"}, {"gated", false}});
    spec.push_back(
        {{"d", 2048}, {"F", 5632}, {"E", 60}, {"shared", 352}, {"k", 15}, {"router", "sigmoid"}, {"gated", true}});
    writeFileAtomic(root / "spec.json", spec.dump());
    nlohmann::json ref = runRef({"flops", QString::fromStdString((root / "spec.json").string())});
    QVERIFY(ref.is_array() && ref.size() == 5);
    std::vector<EvalCandidate> cands;
    const std::vector<int> ks = {1, 2, 8};
    for (int k : ks) cands.push_back({"shared", double(k) / E, layer0SharedMoe(*m, labels, E, k), nullptr});
    EvalOptions eo;
    eo.batch = 4;
    auto figs = evaluateQuality(*m, nullptr, cands, testSequences(), eo, JobContext::none());
    QCOMPARE(figs.size(), size_t(4));
    for (size_t i = 0; i < ks.size(); ++i) {
      const auto& f = figs[i + 1];
      const double want = ref[i].get<double>();
      qInfo() << "shared 32 + top-" << ks[i] << "of 8: layer 0 FLOP fraction" << f.layerFfnFlopsFraction[0] << "numpy"
              << want << "diff" << std::abs(f.layerFfnFlopsFraction[0] - want) << "; model" << f.ffnFlopsFraction;
      QVERIFY(std::abs(f.layerFfnFlopsFraction[0] - want) < 1e-12);
      QVERIFY(std::abs(f.ffnFlopsFraction - (want + 1.0) / 2.0) < 1e-12);
    }
    // All experts + shared: the loss is the dense one.
    QVERIFY(std::abs(figs[3].loss - figs[0].loss) < 1e-5);
    // ffnFlops itself, with n = shared + k * routed size, on the larger shapes.
    using M = FfnFlopCount::Method;
    const FfnFlopCount g{M::Moe, 768, 3072, false, 192 + 7 * 96.0, RouterKind::Mlp, 30};
    const FfnFlopCount l{M::Moe, 2048, 5632, true, 352 + 15 * 88.0, RouterKind::Sigmoid, 60};
    qInfo() << "formula: gpt2-small shared 192 + 7 of 30 (mlp)" << ffnFlopsFraction(g) << "numpy"
            << ref[3].get<double>() << "; gated shared 352 + 15 of 60 (sigmoid)" << ffnFlopsFraction(l) << "numpy"
            << ref[4].get<double>();
    QVERIFY(std::abs(ffnFlopsFraction(g) - ref[3].get<double>()) < 1e-12);
    QVERIFY(std::abs(ffnFlopsFraction(l) - ref[4].get<double>()) < 1e-12);
  }
};

QTEST_GUILESS_MAIN(TestSharedExpert)
#include "test_shared_expert.moc"
