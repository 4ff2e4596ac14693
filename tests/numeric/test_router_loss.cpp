// The router losses of native MoE training (analysis/train/router_loss.h)
// against an independent float64 numpy reference (scripts/ref/router_loss_ref.py,
// written from HF's load_balancing_loss_func and the ST-MoE z-loss): values and
// autograd gradients on fixed router logits of several layers.
#include <torch/torch.h>

#include <QtTest>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/train/router_loss.h"
#include "npy.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

struct Case {
  int64_t experts, topK;
  std::vector<int64_t> rows;  // tokens per layer
  double scale;               // logits ~ scale * N(0, 1)
  double skew;                // added to expert 0's logit (an unbalanced router)
  uint64_t seed;
};

}  // namespace

class TestRouterLoss : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void matchesNumpyReference() {
    // Differences are relative to max(1, max |reference|): float32 against
    // float64, the losses O(1..100), the gradients O(1 / M) up to O(1) for
    // the z-loss of large logits. Measured in python torch float32 on 80
    // cases of these shapes: at most 1.9e-7 (losses) and 8.2e-7 (gradients).
    const double tolLoss = 2e-5, tolGrad = 4e-6;
    auto rel = [](const at::Tensor& got, const at::Tensor& want) {
      return (got - want).abs().max().item<double>() / std::max(1.0, want.abs().max().item<double>());
    };
    const std::vector<Case> cases = {{8, 2, {10, 7, 13}, 2.0, 0.0, 1},
                                     {4, 1, {17}, 1.0, 3.0, 2},
                                     {6, 3, {11, 5}, 5.0, 0.0, 3},
                                     {8, 2, {64, 64, 64, 64}, 1.0, 2.0, 4}};
    double worstLoss = 0, worstGrad = 0;
    for (size_t c = 0; c < cases.size(); ++c) {
      const Case& k = cases[c];
      const fs::path dir = test::freshDir("router_loss_" + std::to_string(c));
      auto gen = at::make_generator<at::CPUGeneratorImpl>(k.seed);
      std::vector<at::Tensor> leaves, logits;
      for (size_t l = 0; l < k.rows.size(); ++l) {
        at::Tensor z = at::randn({k.rows[l], k.experts}, gen) * k.scale;
        z.select(1, 0).add_(k.skew);
        test::writeNpy(dir / ("logits_" + std::to_string(l) + ".npy"), z);
        at::Tensor leaf = z.clone().set_requires_grad(true);
        leaves.push_back(leaf);
        // The trainer passes [B, T, E] views; a [1, N, E] view exercises the reshape.
        logits.push_back(leaf.unsqueeze(0));
      }
      writeFileAtomic(dir / "meta.json",
                      nlohmann::json({{"experts", k.experts}, {"top_k", k.topK}, {"layers", k.rows.size()}}).dump());
      auto r = test::runPython(
          {QString::fromStdString((test::sourceDir() / "scripts" / "ref" / "router_loss_ref.py").string()), "losses",
           QString::fromStdString(dir.string())});
      QVERIFY2(r.exitCode == 0, r.err.c_str());
      const auto ref = nlohmann::json::parse(r.out);

      at::Tensor aux = loadBalancingLoss(logits, k.experts, k.topK);
      at::Tensor zl = routerZLoss(logits);
      QCOMPARE(aux.dim(), 0);
      const double dAux = rel(aux, at::tensor(ref["aux"].get<double>()));
      const double dZ = rel(zl, at::tensor(ref["z"].get<double>()));
      double dGradAux = 0, dGradZ = 0;
      aux.backward();
      for (size_t l = 0; l < leaves.size(); ++l) {
        at::Tensor g = test::readNpy(dir / ("grad_aux_" + std::to_string(l) + ".npy"), k.rows[l], k.experts);
        QVERIFY(g.defined());
        dGradAux = std::max(dGradAux, rel(leaves[l].grad(), g));
        leaves[l].mutable_grad() = at::Tensor();
      }
      zl.backward();
      for (size_t l = 0; l < leaves.size(); ++l) {
        at::Tensor g = test::readNpy(dir / ("grad_z_" + std::to_string(l) + ".npy"), k.rows[l], k.experts);
        QVERIFY(g.defined());
        dGradZ = std::max(dGradZ, rel(leaves[l].grad(), g));
      }
      qInfo(
          "E=%lld k=%lld layers=%zu: aux %.6f (ref %.6f), z %.6f; relative differences: aux %.2e, z %.2e, "
          "gradients aux %.2e, z %.2e",
          static_cast<long long>(k.experts), static_cast<long long>(k.topK), k.rows.size(), aux.item<double>(),
          ref["aux"].get<double>(), zl.item<double>(), dAux, dZ, dGradAux, dGradZ);
      QVERIFY(dAux <= tolLoss);
      QVERIFY(dZ <= tolLoss);
      QVERIFY(dGradAux <= tolGrad);
      QVERIFY(dGradZ <= tolGrad);
      worstLoss = std::max({worstLoss, dAux, dZ});
      worstGrad = std::max({worstGrad, dGradAux, dGradZ});
    }
    qInfo("max relative difference against router_loss_ref.py: losses %.3g (tol %.0e), gradients %.3g (tol %.0e)",
          worstLoss, tolLoss, worstGrad, tolGrad);
  }

  void knownValues() {
    // Row m favours expert m (p = 4/7 there, 1/7 elsewhere): every expert is
    // the top-1 of one row and P is uniform, so the balanced value E * sum
    // (1/E)(1/E) = 1 = k. Sending every row to expert 0 gives E * P_0 = 4 * 4/7.
    at::Tensor even = at::log(at::eye(4) * 3 + 1);
    QVERIFY(std::abs(loadBalancingLoss({even}, 4, 1).item<double>() - 1.0) < 1e-6);
    // Every row p = (4, 1, 1, 1) / 7.
    at::Tensor skewed = at::log(at::tensor({4.0f, 1.0f, 1.0f, 1.0f})).unsqueeze(0).expand({4, 4}).contiguous();
    QVERIFY(std::abs(loadBalancingLoss({skewed}, 4, 1).item<double>() - 16.0 / 7.0) < 1e-6);
    // z-loss of zero logits: logsumexp = ln E.
    QVERIFY(std::abs(routerZLoss({at::zeros({5, 8})}).item<double>() - std::pow(std::log(8.0), 2)) < 1e-6);
  }

  void badInput() {
    at::Tensor z = at::randn({3, 4});
    QVERIFY_THROWS_EXCEPTION(ParameterError, loadBalancingLoss({}, 4, 2));
    QVERIFY_THROWS_EXCEPTION(ParameterError, loadBalancingLoss({z}, 4, 0));
    QVERIFY_THROWS_EXCEPTION(ParameterError, loadBalancingLoss({z}, 4, 5));
    QVERIFY_THROWS_EXCEPTION(ParameterError, loadBalancingLoss({z}, 8, 2));
    QVERIFY_THROWS_EXCEPTION(ParameterError, loadBalancingLoss({z, at::randn({3, 5})}, 4, 2));
    QVERIFY_THROWS_EXCEPTION(ParameterError, routerZLoss({}));
  }
};

QTEST_GUILESS_MAIN(TestRouterLoss)
#include "test_router_loss.moc"
