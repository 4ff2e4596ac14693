#pragma once
// Routers: per layer, a score for every expert from the FFN input; the MoE FFN
// computes the top-k experts by score. See docs/moe.md.
//
//   oracle      ground truth: the expert's activation mass (sum of h over its
//               neurons for ReLU FFNs, sum of |h| otherwise). Needs the dense
//               hidden, so it is an upper bound for quality, not a fast path.
//   similarity  centroids [E, d_model] = mean of the expert's L2-normalised W1
//               rows (gate rows for gated FFNs); score = normalise(x) . centroid.
//   mlp         MoEfication's router: tanh(normalise(x) W1^T) W2^T, W1 [E, d_model],
//               W2 [E, E], no biases.
//   sigmoid     sigma-MoE's router (Csordas et al. 2023): sigmoid(x W1^T), W1
//               [E, d_model], on the raw FFN input, no bias. As for every kind,
//               the selected experts' outputs are summed unweighted (MoEfication's
//               convention, so that all experts are the dense FFN); sigma-MoE
//               would scale each by its score.
//   dynamic-k   Dense-to-Dynamic-k MoE (Szatkowski et al. 2024, "Exploiting
//               Activation Sparsity with Dense to Dynamic-k Mixture-of-Experts
//               Conversion"): a linear head predicts each expert's output norm
//               ||W2_e h_e|| as exp(x W1^T + b1), W1 [E, d_model], b1 [E], fitted
//               by regression on the log norms of the recorded samples. Each
//               token takes experts in descending predicted norm until a share
//               tau of the predicted total is covered, at least min_k and at
//               most the layer's top-k (dynamicKExperts), so k varies per token.
#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/site.h"

namespace moefy {

struct MoeLayerWeights;

enum class RouterKind { Oracle, Similarity, Mlp, Sigmoid, DynamicK };
const char* routerKindName(RouterKind k);
/// "oracle" | "similarity" | "mlp" | "sigmoid" | "dynamic-k"; throws ParameterError naming `context`.
RouterKind routerKindFromName(const std::string& name, const std::string& context);

struct LayerRouter {
  RouterKind kind = RouterKind::Oracle;
  int experts = 0;       ///< E
  at::Tensor centroids;  ///< similarity: [E, d_model]
  at::Tensor w1;         ///< mlp, sigmoid, dynamic-k: [E, d_model]
  at::Tensor w2;         ///< mlp: [E, E]
  at::Tensor b1;         ///< dynamic-k: [E]
  double tau = 0.9;      ///< dynamic-k: share of the predicted total output norm to cover, in (0, 1]
  int minK = 1;          ///< dynamic-k: fewest experts per token (the most is the layer's top-k)

  /// Expert scores [N, E] for FFN inputs x [N, d_model]. The oracle computes
  /// the dense hidden with `experts`' packed weights; dynamic-k gives the
  /// predicted output norms exp(x W1^T + b1).
  at::Tensor scores(const at::Tensor& x, const MoeLayerWeights& experts) const;
  /// The scores before their last nonlinearity, the logits a BCE-with-logits
  /// loss trains (calibration): mlp and sigmoid their pre-sigmoid logits, similarity
  /// its scores; dynamic-k its predicted log norms x W1^T + b1 (a regression
  /// target). Not for the oracle (it has no parameters). Differentiable.
  at::Tensor logits(const at::Tensor& x) const;
  /// Checks the tensor shapes against E and d_model; `context` names the file/layer.
  void validate(int64_t dModel, const std::string& context) const;
  /// This router with its tensors on `device` (--device; a copy, the tensors
  /// shared where already there).
  LayerRouter to(c10::Device device) const;
};

/// Centroids of the L2-normalised W1 rows (gate rows for gated FFNs) per expert: [E, d_model].
at::Tensor similarityCentroids(const MoeLayerWeights& w);
/// Rows of x [N, d] scaled to unit L2 norm (zero rows stay zero).
at::Tensor l2Normalize(const at::Tensor& x);
/// Top-k expert ids [N, k] (int64) of scores [N, E].
at::Tensor topKExperts(const at::Tensor& scores, int k);
/// Dynamic-k selection of non-negative scores [N, E] (predicted output
/// norms): per token, the experts in descending score, k_t of them with k_t
/// the smallest k whose k largest scores sum to >= tau * the row's total,
/// clamped to [minK, maxK]. Returns [N, maxK] int64, each row's k_t experts
/// first (descending score) and -1 after them (the MoE FFN skips -1).
/// Ties: the lower expert id first. Throws ParameterError for tau outside
/// (0, 1] or not 1 <= minK <= maxK <= E.
at::Tensor dynamicKExperts(const at::Tensor& scores, double tau, int minK, int maxK);
/// top-k for a fraction of E experts: max(1, min(E, round(fraction * E))).
int topKForFraction(double fraction, int experts);

/// Whether routers of `kind` are trained on the recorded samples (mlp,
/// sigmoid, dynamic-k: router.json then has a `training` block per site);
/// oracle and similarity routers have no training.
bool routerKindTrained(RouterKind kind);
/// The loss routers of `kind` are trained with (route_build.cpp): "BCE with
/// logits" (mlp, sigmoid: against the oracle mass divided by its row maximum),
/// "log-norm MSE" (dynamic-k: the log expert output norms); "" for the
/// untrained kinds.
const char* routerLossName(RouterKind kind);

/// One router entry's record of its training and of how well it routes, from
/// router.json's `training` and `metrics` blocks (docs/formats.md "Router";
/// written by buildRouters, analysis/route/route_build.cpp): the figures of
/// the studio's router diagnostics and of `moefy route`'s table.
struct RouterSiteReport {
  /// Mean training loss of each epoch [epochs] (training[site].epochs[e].train,
  /// the loss of routerLossName). Empty when the entry has no training block
  /// (oracle, similarity, or a router written without one).
  std::vector<double> trainLoss;
  /// The loss on the held-out samples after each epoch [epochs], parallel to
  /// trainLoss (training[site].epochs[e].held_out); NaN where router.json has
  /// null (route --held-out 0: no held-out samples).
  std::vector<double> heldOutLoss;
  /// metrics[site].mass_recall: the oracle expert mass the router's top-k
  /// captures over the mass of the oracle's own top-k (route_build.h
  /// routerMetrics, on the held-out samples); NaN when absent.
  double massRecall = std::numeric_limits<double>::quiet_NaN();
  /// metrics[site].overlap: share of the router's top-k that is in the
  /// oracle's top-k; NaN when absent.
  double overlap = std::numeric_limits<double>::quiet_NaN();
  int64_t samples = 0;  ///< metrics[site].samples: the samples both were measured on (0 when absent)
  /// dynamic-k: metrics[site].mean_k, the experts per token it takes; NaN otherwise.
  double meanK = std::numeric_limits<double>::quiet_NaN();
};

/// A router artefact (router.json + router.safetensors), see docs/formats.md.
struct RouterSet {
  RouterKind kind = RouterKind::Oracle;
  std::vector<int> layers;             ///< site index of each entry (analysis/model/site.h "Site indices")
  std::vector<Site> sites;             ///< the site of each entry (empty = the single-stack sites of `layers`)
  /// Native MoE models (expert sites blk.L.exp.E / blk.L.shared): the model's
  /// layer count and routed experts per MoE layer, from which the expert
  /// sites' indices derive (analysis/model/site.h "Expert site indices");
  /// written as model_layers / native_experts when set, 0 otherwise.
  int modelLayers = 0, nativeExperts = 0;
  std::vector<int> topK;               ///< per entry
  std::vector<int> experts;            ///< per entry
  std::vector<LayerRouter> routers;    ///< per entry
  std::string modelFingerprint;
  std::string partitionPath;  ///< absolute (read() resolves the stored link, analysis/io/links.h)
  std::string partitionLabelsHash;
  nlohmann::json provenance;        ///< written as "provenance" when set (analysis/io/links.h provenanceBlock)
  std::filesystem::path sourceDir;  ///< the folder read() read (empty for a freshly built set)
  nlohmann::json training = nlohmann::json::object();  ///< mlp, sigmoid, dynamic-k: per-layer per-epoch losses
  nlohmann::json metrics = nlohmann::json::object();   ///< {"L": {mass_recall, overlap}}
  std::vector<double> dynamicTau;                      ///< dynamic-k, read(): per entry (router.json dynamic_k.tau)
  std::vector<int> dynamicMinK;                        ///< dynamic-k, read(): per entry (router.json dynamic_k.min_k)
  /// A per-layer budget's allocation (analysis/moe/layer_budget.h,
  /// docs/formats.md "Router"): null when top_k came from --top-k/--top-fraction.
  /// read() validates it: budget in (0, 1], method activity|greedy, one entry
  /// per layer in every per-layer list, fractions and shares in [0, 1].
  nlohmann::json allocation;

  int indexOfLayer(int layer) const;  ///< -1 if absent
  /// The site of entry i: sites[i], or blk.L when `sites` is empty.
  Site siteAt(size_t i) const;
  /// Writes router.json (format version 2: the partition as a link relative
  /// to `dir` with its content fingerprint) and router.safetensors into an
  /// existing folder (the final folder or its atomic-write sibling).
  void writeInto(const std::filesystem::path& dir) const;
  /// Reads and validates a router folder (versions 1 and 2). Throws FormatError naming the file.
  /// The `training` and `metrics` blocks are kept as read; siteReport validates them.
  static RouterSet read(const std::filesystem::path& dir);
  /// The training losses and metrics of entry i (0 <= i < layers.size(),
  /// else std::out_of_range), looked up under the entry's key in `training`
  /// and `metrics` (siteJsonKey(siteAt(i)): the bare layer for single-stack
  /// sites, the site name otherwise; the site name is accepted for
  /// single-stack sites too). Validated: each block present must be an
  /// object, the entry's training an object whose `epochs` is a list of
  /// {"train": number or null, "held_out": number or null} (null -> NaN), the
  /// metrics finite numbers and `samples` a non-negative integer. An absent
  /// block, entry or key gives the empty/NaN field. Throws FormatError naming
  /// router.json (under sourceDir) and the key, e.g.
  /// "DIR/router.json: training.2.epochs[3].train must be a number (got string)".
  /// Const, no shared state: thread-safe.
  RouterSiteReport siteReport(size_t i) const;
};

}  // namespace moefy
