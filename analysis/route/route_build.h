#pragma once
// Building routers from a model, its partition and recorded samples
// (`moefy route`), and their quality metrics against the oracle.
#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/route/route_inputs.h"
#include "analysis/route/router.h"
#include "analysis/route/router_scores.h"

namespace moefy {

class JobContext;
class Model;
struct MoeLayerWeights;

struct RouteOptions {
  RouterKind kind = RouterKind::Similarity;
  int topK = 0;              ///< experts per token; 0 = use topFraction
  double topFraction = 0.25; ///< used when topK == 0
  // mlp and sigmoid training (MoEfication's recipe)
  int epochs = 30;
  int batch = 512;
  double lr = 0.01;
  double heldOut = 0.1;      ///< fraction of samples held out (also used for the metrics)
  // dynamic-k (topK / topFraction give the most experts a token may take)
  double tau = 0.9;  ///< share of the predicted total output norm to cover
  int minK = 1;      ///< fewest experts per token
  uint64_t seed = 0;
  /// Where the mlp, sigmoid and dynamic-k routers train (--device): the
  /// samples, targets and router parameters go there for the Adam loop and
  /// the trained router comes back to the host (the metrics and the files
  /// are computed there). The oracle and similarity routers train nothing.
  c10::Device device = c10::Device(c10::kCPU);
  // Per-layer budgets (analysis/moe/layer_budget.h buildRoutersWithBudget)
  double budget = 0;                  ///< global FFN FLOP budget in (0, 1], router included; 0 = off
  std::string allocate = "activity";  ///< how the budget is shared out: "activity" | "greedy"
  /// Experts per token of each partition entry (empty: topK / topFraction
  /// everywhere); set by the budget allocation. Each in [1, E].
  std::vector<int> layerTopK;
};

/// Packs every partitioned layer of `model` into experts (entry i = part.layers[i]).
/// The model must have its dense FFN weights.
std::vector<std::shared_ptr<MoeLayerWeights>> packExperts(const Model& model, const PartitionData& part);

/// Builds (and for mlp and sigmoid trains) one router per partitioned layer. `samples`
/// holds part.layers in order. Reports per-layer metrics on the held-out
/// samples. Cancellable; progress per layer and epoch.
RouterSet buildRouters(const Model& model, const PartitionData& part, const SampleData& samples,
                       const RouteOptions& options, JobContext& job);

/// The metrics buildRouters reports for partition entry i at top-k k (on
/// the held-out samples of splitSamples(options.heldOut, options.seed), all
/// samples when none are held out): routerMetrics against the oracle's
/// expert mass, plus mean_k for dynamic-k routers (their largest k is k).
nlohmann::json heldOutRouterMetrics(const Model& model, const PartitionData& part, const SampleData& samples, size_t i,
                                    const LayerRouter& router, const MoeLayerWeights& weights,
                                    const RouteOptions& options, int k);

/// Router quality on samples: {"mass_recall": captured mass / oracle top-k mass,
/// "overlap": mean |router top-k ∩ oracle top-k| / k}.
nlohmann::json routerMetrics(const at::Tensor& scores, const at::Tensor& mass, int k);

/// The held-out sample indices (seeded) and the training ones.
void splitSamples(int64_t samples, double heldOut, uint64_t seed, at::Tensor& train, at::Tensor& held);

/// Trains an MLP router in place (w1, w2 must be set: the initial weights) on
/// inputs x [S, d_model] (raw FFN inputs) and mass [S, E]. Returns
/// {"epochs": [{"train": loss, "held_out": loss}, ...]}.
nlohmann::json trainMlpRouter(LayerRouter& router, const at::Tensor& x, const at::Tensor& mass,
                              const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& options,
                              JobContext& job, const std::string& label);

/// Trains a sigma-MoE sigmoid router in place (w1 must be set: the initial
/// weights) on raw inputs x [S, d_model] and mass [S, E]: BCE-with-logits of
/// x W1^T against the oracle target mass / its per-sample maximum (the mlp
/// router's target; sigma-MoE itself trains its router end to end with the LM
/// loss). Internally the inputs are divided by their mean norm s over the
/// training samples (W1 = V / s). Returns {"epochs": [...], "input_scale": s}.
nlohmann::json trainSigmoidRouter(LayerRouter& router, const at::Tensor& x, const at::Tensor& mass,
                                  const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& options,
                                  JobContext& job, const std::string& label);

/// Trains a dynamic-k router's linear head in place (w1 [E, d_model] and b1
/// [E] must be set: the initial weights) by regression: MSE between
/// x W1^T + b1 and log(norm + eps), norm [S, E] the experts' output norms
/// ||W2_e h_e|| of the samples (MoeLayerWeights::expertOutputNorm), eps =
/// 1e-6 times the mean norm (so an expert that stays silent has a finite
/// target). Inputs are divided by their mean norm s over the training
/// samples, as for the sigmoid router (W1 = V / s). Adam, options' epochs,
/// batch, lr. Returns {"epochs": [{"train", "held_out"}, ...] (MSE of the log
/// norms), "input_scale": s, "log_eps": log eps}.
nlohmann::json trainDynamicKRouter(LayerRouter& router, const at::Tensor& x, const at::Tensor& norm,
                                   const at::Tensor& trainIdx, const at::Tensor& heldIdx, const RouteOptions& options,
                                   JobContext& job, const std::string& label);

}  // namespace moefy
