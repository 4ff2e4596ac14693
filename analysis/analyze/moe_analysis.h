#pragma once
// Analyses of native MoE models (Mixtral, Qwen2-MoE, OLMoE): how similar the
// experts are, what the router prefers, and how evenly the experts are used.
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
// dense layers between MoE layers; MoE exports of this project (their
// routers are not linear maps with one row per expert, and their experts may
// differ in size): analyzeMoeModel refuses them with a message.
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

/// The whole run of `moefy analyze`: static analyses of the selected layers,
/// dynamic ones on `corpus` (readSequences: a text corpus or a .ids file,
/// every document) when options.dynamicAnalyses, then analysis.json and
/// analysis.safetensors written into `out` atomically (writeFolderAtomic:
/// nothing is left on error or cancel; an existing analysis is replaced only
/// with `force`). Returns analysis.json's content. Throws ParameterError
/// (no MoE layer, a MoE export, a bad layer, dynamic analyses without corpus),
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
