// The sparse MoE FFN against the dense engine (all experts selected) for every
// architecture, against an independent torch reference (top-k subsets), and
// the KV-cached decoder against full recomputation.
#include <torch/torch.h>

#include <QtTest>
#include <fstream>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/eval/generate.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/router.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

fs::path fixtureScript() { return test::sourceDir() / "scripts" / "ref" / "moe_fixtures.py"; }

fs::path makeModel(const std::string& arch, const std::string& tag, QStringList extra = {}) {
  fs::path dir = test::freshDir("moe_ffn_" + tag);
  QStringList args{QString::fromStdString(fixtureScript().string()), "model", QString::fromStdString(arch),
                   QString::fromStdString(dir.string())};
  args << extra;
  auto r = test::runPython(args);
  if (r.exitCode != 0) qFatal("fixture failed: %s", r.err.c_str());
  return dir;
}

// Balanced random labels [d_ff] for E experts.
at::Tensor randomLabels(int64_t F, int E, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor base = at::arange(F, at::kLong) * E / F;
  return base.index_select(0, at::randperm(F, gen, at::kLong)).to(at::kInt);
}

std::shared_ptr<MoeFfn> similarityMoe(const Model& m, int E, int k, uint64_t seed = 1) {
  const auto& c = m.config();
  std::vector<MoeLayer> layers(c.nLayer);
  for (int L = 0; L < c.nLayer; ++L) {
    auto w = MoeLayerWeights::pack(m.ffnWeights(L), ExpertLayout::fromLabels(randomLabels(c.dFF, E, seed + L), E, "test"));
    auto r = std::make_shared<LayerRouter>();
    r->kind = RouterKind::Similarity;
    r->experts = E;
    r->centroids = similarityCentroids(*w);
    layers[L] = {w, r, k};
  }
  return std::make_shared<MoeFfn>(layers, std::vector<FfnWeights>(c.nLayer));
}

double maxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

class TestMoeFfn : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void initTestCase() { configureRuntime(); }

  void allExpertsReproduceDense_data() {
    QTest::addColumn<QString>("arch");
    for (const char* a : {"gpt2", "llama", "mistral", "qwen2", "opt", "bert"}) QTest::newRow(a) << a;
  }
  void allExpertsReproduceDense() {
    QFETCH(QString, arch);
    fs::path dir = makeModel(arch.toStdString(), arch.toStdString());
    auto m = Model::load(dir);
    const int E = 16;
    // Batch 1 (one token, the GEMV path), one sequence, and a padded batch (grouped GEMMs).
    std::vector<std::vector<std::vector<int64_t>>> batches = {
        {{5}}, {{1, 7, 3, 9, 11, 2, 40, 41}}, {{1, 7, 3, 9, 11, 2, 40, 41, 8, 12}, {4, 5, 6}, {90, 3, 3, 3, 17}}};
    for (const auto& seqs : batches) {
      Batch b = makeBatch(seqs, 0);
      m->setFfnOverride(nullptr);
      at::Tensor dense = m->forward(b);
      m->setFfnOverride(similarityMoe(*m, E, E));
      at::Tensor moe = m->forward(b);
      // Compare real tokens only (padding rows are never used).
      at::Tensor valid = b.mask.to(at::kBool);
      double d = maxDiff(dense.index({valid}), moe.index({valid}));
      qInfo() << arch << "batch" << b.batchSize() << "x" << b.seqLen() << "all experts vs dense: max |logit diff|" << d;
      QVERIFY(d <= 1e-5);
      // With fewer experts the output must actually change (experts are skipped).
      m->setFfnOverride(similarityMoe(*m, E, 4));
      double d4 = maxDiff(dense.index({valid}), m->forward(b).index({valid}));
      qInfo() << arch << "top-4 of 16 vs dense: max |logit diff|" << d4;
      QVERIFY(d4 > 1e-4);
    }
  }

  // Top-k subsets against an independent torch implementation of the MoE FFN.
  void topKMatchesTorchReference_data() {
    QTest::addColumn<QString>("arch");
    QTest::addColumn<int>("tokens");
    QTest::addColumn<int>("k");
    QTest::newRow("gpt2 relu+bias, 1 token") << "gpt2" << 1 << 4;
    QTest::newRow("gpt2 relu+bias, 37 tokens") << "gpt2" << 37 << 4;
    QTest::newRow("gpt2 gelu_new, 37 tokens") << "gpt2-gelu" << 37 << 6;
    QTest::newRow("llama gated silu, 1 token") << "llama" << 1 << 3;
    QTest::newRow("llama gated silu, 37 tokens") << "llama" << 37 << 5;
    QTest::newRow("opt relu+bias, 20 tokens") << "opt" << 20 << 2;
    QTest::newRow("bert gelu, 20 tokens") << "bert" << 20 << 8;
  }
  void topKMatchesTorchReference() {
    QFETCH(QString, arch);
    QFETCH(int, tokens);
    QFETCH(int, k);
    std::string a = arch.toStdString();
    fs::path dir = a == "gpt2-gelu" ? makeModel("gpt2", "ref_gpt2g", {"--act", "gelu_new"})
                                    : makeModel(a, "ref_" + a);
    auto m = Model::load(dir);
    const int E = 16, L = 1;
    at::Tensor labels = randomLabels(m->config().dFF, E, 7);
    writeSafetensors(dir / "labels.safetensors", {{"blk.1.labels", labels}});
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    at::Tensor x = at::randn({tokens, m->config().dModel}, gen);
    // x to .npy via a tiny writer (float32, C order).
    {
      std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(tokens) + ", " +
                        std::to_string(m->config().dModel) + "), }";
      while ((10 + hdr.size() + 1) % 64) hdr += ' ';
      hdr += '\n';
      std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
      uint16_t n = static_cast<uint16_t>(hdr.size());
      bytes += std::string(reinterpret_cast<char*>(&n), 2) + hdr;
      bytes.append(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
      std::ofstream(dir / "x.npy", std::ios::binary) << bytes;
    }
    auto r = test::runPython({QString::fromStdString(fixtureScript().string()), "moe_ref", QString::fromStdString(dir.string()),
                              QString::fromStdString((dir / "labels.safetensors").string()), QString::number(L),
                              QString::fromStdString((dir / "x.npy").string()), QString::number(k),
                              QString::fromStdString((dir / "y.npy").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    // Read y.npy (float32, header length at bytes 8..9).
    std::ifstream in(dir / "y.npy", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), {});
    uint16_t hl = static_cast<uint8_t>(all[8]) | (static_cast<uint8_t>(all[9]) << 8);
    at::Tensor want = at::from_blob(all.data() + 10 + hl, {tokens, m->config().dModel}, at::kFloat).clone();

    auto w = MoeLayerWeights::pack(m->ffnWeights(L), ExpertLayout::fromLabels(labels, E, "test"));
    auto router = std::make_shared<LayerRouter>();
    router->kind = RouterKind::Similarity;
    router->experts = E;
    router->centroids = similarityCentroids(*w);
    std::vector<MoeLayer> layers(m->config().nLayer);
    std::vector<FfnWeights> dense(m->config().nLayer);
    for (int i = 0; i < m->config().nLayer; ++i) dense[i] = m->ffnWeights(i);
    layers[L] = {w, router, k};
    MoeFfn moe(layers, dense);
    at::Tensor hidden;
    at::Tensor got = moe.forward(L, x, &hidden);
    double d = maxDiff(got, want);
    qInfo() << arch << tokens << "tokens, top" << k << "of" << E << ": max |MoE - torch reference|" << d;
    QVERIFY(d <= 1e-5);
    // The hidden output is the dense hidden with unselected experts' neurons zeroed.
    at::Tensor dh;
    denseFfn(m->ffnWeights(L), x, &dh);
    at::Tensor sel = moe.route(L, x);
    at::Tensor em = at::zeros({tokens, E}).scatter_(1, sel, 1.0);
    at::Tensor nm = em.index_select(1, labels.to(at::kLong));
    double dh2 = maxDiff(hidden, dh * nm);
    qInfo() << "hidden vs masked dense hidden: max diff" << dh2;
    QVERIFY(dh2 <= 1e-5);
    // The autograd (masked dense) path agrees with the sparse kernel.
    at::Tensor xg = x.clone().set_requires_grad(true);
    at::Tensor yg = moe.compute(L, xg, sel, nullptr);
    double dg = maxDiff(yg.detach(), got);
    qInfo() << "autograd path vs kernel: max diff" << dg;
    QVERIFY(dg <= 1e-5);
  }

  void kernelRejectsBadSelections() {
    fs::path dir = makeModel("gpt2", "bad_sel");
    auto m = Model::load(dir);
    QVERIFY_EXCEPTION_THROWN(similarityMoe(*m, 16, 0), ParameterError);
    QVERIFY_EXCEPTION_THROWN(similarityMoe(*m, 16, 17), ParameterError);
    try {
      similarityMoe(*m, 16, 17);
    } catch (const ParameterError& e) {
      qInfo() << "top-k 17 of 16:" << e.what();
      QVERIFY(std::string(e.what()).find("top-k 17 outside [1, 16]") != std::string::npos);
    }
    at::Tensor labels = randomLabels(m->config().dFF, 16, 1);
    labels[3] = 16;
    QVERIFY_EXCEPTION_THROWN(ExpertLayout::fromLabels(labels, 16, "labels"), FormatError);
  }

  void kvCacheMatchesFullRecompute_data() {
    QTest::addColumn<QString>("arch");
    for (const char* a : {"gpt2", "llama", "qwen2", "opt"}) QTest::newRow(a) << a;
  }
  void kvCacheMatchesFullRecompute() {
    QFETCH(QString, arch);
    fs::path dir = makeModel(arch.toStdString(), "kv_" + arch.toStdString());
    auto m = Model::load(dir);
    for (int moe = 0; moe < 2; ++moe) {
      if (moe) m->setFfnOverride(similarityMoe(*m, 16, 4));
      std::vector<int64_t> prompt = {3, 14, 15, 92, 65};
      // Logits of the cached decoder vs the full forward at every step.
      Decoder dec(*m);
      at::Tensor l0 = dec.step(prompt);
      std::vector<int64_t> seq = prompt;
      double worst = maxDiff(l0, m->forward(makeBatch({seq}))[0][4]);
      for (int i = 0; i < 8; ++i) {
        int64_t next = (i * 37 + 11) % m->config().vocab;
        seq.push_back(next);
        at::Tensor lc = dec.step({next});
        at::Tensor lf = m->forward(makeBatch({seq}))[0][static_cast<int64_t>(seq.size()) - 1];
        worst = std::max(worst, maxDiff(lc, lf));
      }
      qInfo() << arch << (moe ? "MoE" : "dense") << "KV-cached vs full forward: max |logit diff|" << worst;
      QVERIFY(worst <= 1e-4);
      auto g1 = greedyGenerate(*m, prompt, 10, true);
      auto g2 = greedyGenerate(*m, prompt, 10, false);
      QCOMPARE(g1, g2);
    }
  }
};

QTEST_GUILESS_MAIN(TestMoeFfn)
#include "test_moe_ffn.moc"
