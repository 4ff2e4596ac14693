#pragma once
// Analyses of native MoE models (Mixtral, Qwen2-MoE, OLMoE) and of this
// project's MoE exports (below): how similar the experts are, what the router
// prefers, and how evenly the experts are used.
// `moefy analyze` and (later) the studio's Experts view call these functions;
// the results form one analysis folder (docs/formats.md "MoE analysis"):
// analysis.json (metadata, per-site scalars) + analysis.safetensors (matrices).
//
// Static analyses, from the weights of each analysed MoE layer L (site blk.L,
// E experts with gate/up [d_expert, d_model] and down [d_model, d_expert]):
//  - blk.L.sim.{gate,up,down} [E, E]: cosine similarity of the experts'
//    flattened projection matrices;
//  - blk.L.mean_sim.{gate,up,down} [E, E]: the same on the neuron means (the
//    mean of the expert's gate/up rows, of its down columns: [d_model] each);
//  - blk.L.match_sim [E, E]: the neurons of experts i and j (neuron a's vector
//    is [gate row a | up row a | down column a], 3 d_model values) matched one
//    to one so that the total cosine is maximal (maxAssignment), and the mean
//    cosine of the matched pairs; blk.L.match_sim.{gate,up,down} the mean
//    cosine of the matched pairs' rows of one projection; blk.L.match_tau
//    [E, E] Kendall's tau of the matching against the identity;
//    blk.L.match_perm [E, E, d_expert] I32: neuron a of expert i is matched to
//    neuron match_perm[i, j, a] of expert j (the identity on the diagonal);
//    skipped (and said so in analysis.json) when d_expert > matchMaxNeurons;
//  - blk.L.router_sim [E, E]: cosine similarity of the router's rows, and in
//    analysis.json the R² of the least-squares line router_sim ~ sim.P (and
//    ~ mean_sim.P) over the off-diagonal pairs i < j, per projection P;
//  - blk.L.pca.experts [E, 2] (the flattened [gate | up | down] of each
//    expert) and blk.L.pca.neurons [E d_expert, 2] (the neuron vectors above)
//    with blk.L.pca.neuron_expert [E d_expert] I32 (the expert of each row):
//    2-D PCA (pca2), explained variance shares in analysis.json; the neuron
//    PCA is skipped when its matrix would exceed 2^28 values.
// Dynamic analyses, on corpus tokens in every-expert mode
// (HookSink::allExperts: every expert computes every token on the side; the
// routing is the model's own), over the N non-padding tokens:
//  - blk.L.output_sim [E, E]: mean over tokens of the angular similarity
//    1 - arccos(cos(y_i, y_j)) / pi of experts' outputs y_e = down_e h_e
//    (a zero output has cosine 0 with everything);
//  - blk.L.rank_counts [E, E] I64: count of (token, expert) pairs whose
//    router-logit rank is r (row; 0 = highest) and output-norm rank is c
//    (column; 0 = largest |y_e|); "rank_counts" the sum over the analysed
//    layers (when every layer has the same E); analysis.json gives per site
//    and overall the share of tokens whose top-scored expert also has the
//    largest output norm (top1_norm_share);
//  - blk.L.chosen [N, E] U8: 1 where the token selected the expert (top-k);
//    "token_ids" [N] I64 and "token_sequence" [N] I32 (the corpus window the
//    token came from), analysis.json "token_text" the decoded tokens when
//    the model has a tokenizer;
//  - usage health (usageHealth): blk.L.usage [E] F64 selection share,
//    blk.L.cooccurrence [E, E] F64, and in analysis.json usage_perplexity
//    exp(H)/E and dead_share;
//  - selection overlap with the next analysed MoE layer L' (same E):
//    overlap_next, the mean over tokens of |S_L ∩ S_L'| / k, and
//    blk.L.transition [E, E] I64, tokens choosing i at L and j at L';
//  - blk.L.channel_usage [E] F64: the share of an expert's neurons that fire
//    (|h| > fireEps, h the expert's hidden act(gate x) * up x) on at least one
//    of the tokens routed to that expert (0 for an expert never selected).
// Not covered: the shared expert of Qwen2-MoE (it is not routed) and the
// dense layers between MoE layers.
//
// MoE exports of this project (moefy export; loadModel installs their MoeFfn)
// get the same analyses per MoEfied layer blk.L, over its E routed experts
// (the shared expert of a `split --shared` partition is always computed, not
// routed: it is left out, as Qwen2-MoE's, and its size is in analysis.json
// "shared_expert"). What differs:
//  - experts may differ in size (s_e neurons): the flattened-matrix cosine
//    sim.P, the matching (match_sim*, match_tau) are defined for a pair of
//    experts of equal size only and are NaN for the others (no padding: a
//    padded matrix would compare neurons that do not exist); match_perm and
//    pca.experts exist only when all the layer's experts have one size; the
//    neuron means, the neuron PCA and every dynamic analysis are defined for
//    any sizes. The up bias b1 of plain FFNs is left out of the weight
//    analyses (as native experts have none) and kept in the hidden h;
//  - plain (non-gated) FFNs have no gate: the projections are up and down,
//    and a neuron's vector is [up row | down column];
//  - router_sim needs one row per expert: the similarity router's centroids,
//    the sigmoid and dynamic-k routers' W1 rows [E, d_model]; the mlp router
//    (W1 rows are hidden units that W2 mixes) and the oracle (no parameters)
//    have none: router_sim is skipped and analysis.json says why
//    ("router_sim": "skipped: ...", "router_r2": null); the R² use the pairs
//    where both similarities are defined;
//  - the dynamic analyses use the FFN inputs x of the export's own sparse
//    forward pass and recompute the layer from them in float64: h = the
//    layer's packed hidden of x (every expert computed on the side), y_e =
//    down_e h_e, the router scores LayerRouter::scores(x) (the oracle: the
//    expert activation mass, sum of h or of |h|, analysis/experts/moe_layer.h),
//    the chosen experts by MoeFfn::route's rule on those scores (top-k, or
//    dynamic-k: k varies per token, "mean_k" per site); a token within
//    float32 rounding of a tie may be chosen otherwise than in the float32
//    forward pass;
//  - with AnalyzeOptions::oracleRouter the oracle routes instead of the
//    stored routers (withOracleRouters: same experts and top-k), in the
//    forward pass too, so later layers see the oracle MoE's inputs;
//  - overlap_next is the mean over tokens of |S_L ∩ S_L'| / min(|S_L|,
//    |S_L'|) (= / k for a fixed top-k), and with the transition matrix only
//    between layers of the same E ("overlap_skipped" says why otherwise);
//    the summed "rank_counts" needs the same E in every analysed layer.
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace moefy {

class JobContext;
class Model;
class MoeFfn;
class SafetensorsFile;
struct LoadedModel;

/// What to analyse and how.
struct AnalyzeOptions {
  std::vector<int> layers;         ///< MoE layers to analyse; empty = every MoE layer
  bool dynamicAnalyses = true;     ///< false: weights only (no corpus needed)
  int seqLen = 128;                ///< corpus window length in tokens
  int batch = 8;                   ///< windows per forward pass
  int64_t maxTokens = 4096;        ///< corpus token budget (0 = the whole corpus)
  double fireEps = 0.0;            ///< a neuron fires on a token when |h| > fireEps
  int64_t matchMaxNeurons = 1024;  ///< neuron matching only when d_expert <= this (O(d_expert^3) per pair)
  bool oracleRouter = false;       ///< MoE exports: analyse the oracle's choice instead of the stored routers
};

/// Named result tensors (CPU, contiguous) in the order they are written.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// The MoE layers of `model` selected by `layers` (empty = all), ascending.
/// Throws ParameterError when the model has no native MoE layer (naming
/// `modelName`, a dense model or a MoE export) or a requested layer is not a
/// MoE layer (naming it: "--sites: blk.3 is not a MoE layer of MODEL").
std::vector<int> moeLayersToAnalyse(const Model& model, const std::vector<int>& layers, const std::string& modelName);

/// The static analyses of MoE layer `layer` (see the file comment): appends
/// the tensors to `out` and returns the per-site JSON scalars ("experts",
/// "d_expert", "router_r2", "pca_explained", "matching"). Checks `job` for
/// cancel between expert pairs (CancelledError). Thread-safe on a const model.
nlohmann::json staticExpertAnalysis(const Model& model, int layer, const AnalyzeOptions& options, NamedTensors& out,
                                    JobContext& job);

/// The dynamic analyses of `layers` over `sequences` (token ids, unpadded,
/// each >= 1 token), in batches of options.batch windows: appends the tensors
/// to `out` and returns {"sites": {site: scalars}, "tokens": N, "top1_norm_share":
/// overall share}. Progress per batch; cancel between batches. Throws
/// ParameterError when there is no token or a layer is not MoE.
nlohmann::json dynamicExpertAnalysis(const Model& model, const std::vector<int>& layers,
                                     const std::vector<std::vector<int64_t>>& sequences, const AnalyzeOptions& options,
                                     NamedTensors& out, JobContext& job);

/// The static analyses of MoEfied layer `layer` of a MoE export's `moe` (see
/// the file comment for what differs from native layers): appends the
/// tensors to `out`, returns the per-site scalars ("experts", "d_expert" (null
/// for unequal sizes), "expert_sizes", "router", "shared_expert", "router_r2"
/// (null when skipped) and "router_sim" (the reason), "pca_explained",
/// "matching"). Throws ParameterError when the layer is not MoEfied,
/// CancelledError. Thread-safe on a const MoeFfn.
nlohmann::json exportStaticAnalysis(const MoeFfn& moe, int layer, const AnalyzeOptions& options, NamedTensors& out,
                                    JobContext& job);

/// The same MoE FFN with the oracle router in every MoEfied layer (same
/// experts, same top-k; a dynamic-k layer keeps its most experts per token).
std::shared_ptr<const MoeFfn> withOracleRouters(const MoeFfn& moe);

/// The dynamic analyses of a MoE export's layers, accumulated batch by batch
/// from the layers' FFN inputs (the tokens of a batch in the same order at
/// every layer). `moe` is the MoE FFN whose routing is analysed (the export's,
/// or withOracleRouters of it). Not thread-safe.
class ExportDynamics {
 public:
  /// Throws ParameterError for a null `moe` or a layer that is not MoEfied.
  ExportDynamics(std::shared_ptr<const MoeFfn> moe, const std::vector<int>& layers, double fireEps);
  ~ExportDynamics();
  ExportDynamics(const ExportDynamics&) = delete;
  ExportDynamics& operator=(const ExportDynamics&) = delete;
  /// One batch of FFN inputs x [n, d_model] (F32) of `layer`.
  void add(int layer, const at::Tensor& x);
  /// The per-site tensors (appended to `out`: output_sim, rank_counts,
  /// chosen, usage, cooccurrence, channel_usage, transition, rank_counts)
  /// and {"sites", "tokens", "top1_norm_share"}; `tokens` must be the count
  /// every layer received (Error otherwise), ParameterError when 0.
  nlohmann::json finish(int64_t tokens, NamedTensors& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The whole run of `moefy analyze`: static analyses of the selected layers,
/// dynamic ones on `corpus` (readSequences: a text corpus or a .ids file,
/// every document) when options.dynamicAnalyses, then analysis.json and
/// analysis.safetensors written into `out` atomically (writeFolderAtomic:
/// nothing is left on error or cancel; an existing analysis is replaced only
/// with `force`). A native MoE checkpoint or a single-stack MoE export of
/// this project (loaded.isMoe(); while its dynamic analyses run, the model's
/// FFN override is swapped for the analysed one and restored). Returns
/// analysis.json's content. Throws ParameterError (no MoE layer, an
/// encoder-decoder export, options.oracleRouter for a native model, a bad
/// layer, dynamic analyses without corpus),
/// FormatError/IoError (corpus, output), CancelledError.
nlohmann::json analyzeMoeModel(const LoadedModel& loaded, const std::filesystem::path& modelDir,
                               const std::filesystem::path& corpus, const AnalyzeOptions& options,
                               const std::filesystem::path& out, bool force, JobContext& job);

/// An analysis folder, validated: analysis.json has format
/// "moefy-moe-analysis", version 1, a "sites" object; analysis.safetensors
/// holds every tensor analysis.json lists under "tensors" with the listed
/// shape. Throws FormatError/IoError naming the file and key or tensor.
struct MoeAnalysis {
  nlohmann::json meta;                          ///< analysis.json
  std::shared_ptr<const SafetensorsFile> file;  ///< analysis.safetensors
  /// The tensor in its stored dtype; throws FormatError naming it when absent.
  at::Tensor tensor(const std::string& name) const;
  bool has(const std::string& name) const;
};
MoeAnalysis readMoeAnalysis(const std::filesystem::path& dir);

}  // namespace moefy
