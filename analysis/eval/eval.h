#pragma once
// Quality and speed of MoEfied models against their dense reference, on
// token sequences (the CLI cuts them from held-out text).
//
// Per candidate FFN (a MoeFfn at some top-k), on the same sequences:
//  - LM loss and perplexity: next-token cross-entropy (causal models) or the
//    masked-LM loss on masked positions (BERT: a seeded 15% of the inner
//    positions replaced by the mask token);
//  - top-1 agreement with the reference: share of scored positions where the
//    argmax of the logits is the same;
//  - KL(reference || candidate) of the next-token (or masked-token)
//    distributions, mean over scored positions, in nats;
//  - per layer, the relative error of the FFN output at the candidate's own
//    FFN input: ||moe(x) - ref(x)|| / ||ref(x)|| over all real tokens;
//  - FFN FLOPs per token as a fraction of the dense FFN's (ffnFlops in
//    analysis/moe/ffn_flops.h), per layer and over all FFN layers, from the
//    neurons the candidate computed at those inputs (mean over real tokens).
// A candidate is a MoeFfn or the top-k activation bound
// (analysis/moe/activation_bound.h).
#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

class ActivationBoundFfn;
class FfnOverride;
class JobContext;
class Model;
class MoeFfn;

struct EvalOptions {
  int batch = 8;      ///< sequences per forward
  uint64_t seed = 0;  ///< MLM masking
  double mlmFraction = 0.15;
  int64_t maskTokenId = -1;  ///< required for non-causal (MLM) models
  bool layerErrors = true;
};

struct QualityFigures {
  std::string name;
  double fraction = 1.0;             ///< active-expert fraction, the bound's neuron budget (1 for the reference)
  std::vector<int> topK;             ///< per model layer (0 = dense layer); empty for the bound
  std::vector<int64_t> neuronsKept;  ///< the bound: neurons kept per token, per model layer (0 = dense layer)
  double loss = 0, perplexity = 0;
  double top1Agreement = 1.0, kl = 0.0;
  std::vector<double> layerRelError;  ///< per model layer; null (NaN) for dense layers
  int64_t positions = 0;              ///< scored positions
  /// FFN multiply-adds per token over every FFN layer (layers left dense at
  /// their dense cost) / the dense model's: sum_L ffnFlops_L / sum_L dense_L.
  double ffnFlopsFraction = 1.0;
  std::vector<double> layerFfnFlopsFraction;  ///< per model layer; NaN (null) for dense layers
  std::string ffnFlopsNote;                   ///< set when the count includes the dense hidden
  /// Dynamic-k routers: per model layer, the tokens that took k = 0..max k
  /// experts (empty for other layers); empty when no layer routes dynamically.
  std::vector<std::vector<int64_t>> kHistogram;
  std::vector<double> meanK;  ///< per model layer, mean experts per token of dynamic-k layers (NaN otherwise)
  nlohmann::json toJson() const;
};

struct EvalCandidate {
  std::string name;
  double fraction = 1.0;                            ///< active-expert fraction or neuron budget
  std::shared_ptr<const MoeFfn> moe;                ///< a MoE, or
  std::shared_ptr<const ActivationBoundFfn> bound;  ///< the top-k activation bound
  /// The override to install: moe or bound.
  std::shared_ptr<const FfnOverride> ffn() const;
  /// Whether layer L is sparsified (a MoE layer, or a layer the bound prunes).
  bool isSparse(int layer) const;
  /// Whether its FFN needs the dense hidden (an oracle router, the bound):
  /// it cannot be faster than the dense model, so it has no speed figure.
  bool needsDenseHidden() const;
};

/// A batch with the positions that are scored: causal models predict token
/// t+1 at position t; masked LM replaces a seeded `mlmFraction` of the inner
/// positions (at least one) by `maskTokenId` and predicts the original token.
struct ScoredBatch {
  Batch batch;
  at::Tensor row, pos, target;  ///< [P] int64 each
};
ScoredBatch makeScoredBatch(std::vector<std::vector<int64_t>> sequences, bool causal, int64_t maskTokenId,
                            double mlmFraction, std::mt19937_64& rng);

/// Evaluates the reference (the model with `reference` as FFN override, null
/// = its dense FFNs) and every candidate on `sequences`. Returns the
/// reference's figures first, then one per candidate. The model's own
/// override is restored afterwards. Cancellable, progress per batch. Per-layer
/// figures are indexed by site index (== layer here). Throws ParameterError
/// for an encoder-decoder model (use evaluateSeq2SeqQuality).
std::vector<QualityFigures> evaluateQuality(Model& model, std::shared_ptr<const FfnOverride> reference,
                                            const std::vector<EvalCandidate>& candidates,
                                            const std::vector<std::vector<int64_t>>& sequences,
                                            const EvalOptions& options, JobContext& job);

/// One teacher-forced example of an encoder-decoder model (analysis/text/
/// parallel_corpus.h tokenizePair): encoder ids, decoder input ids
/// (decoder_start + labels shifted right) and the labels it predicts, as long
/// as the decoder input.
struct Seq2SeqExample {
  std::vector<int64_t> source, decoderInput, labels;
  /// The pair's target text as the corpus holds it (BLEU's reference for
  /// `eval --generate`, analysis/eval/translate.h); empty when not known.
  std::string target;
};

/// evaluateQuality for encoder-decoder models (T5) on teacher-forced pairs:
/// the loss and perplexity are the cross-entropy of labels[t] at decoder
/// position t over every label (padding of the right-padded source and
/// decoder batches excluded), top-1 agreement and KL compare the decoder's
/// next-token distributions with the reference's; layer errors and FFN FLOPs
/// are per site index (ModelConfig::ffnSites: encoder sites over source
/// tokens, decoder sites over decoder tokens). Throws ParameterError for a
/// single-stack model, a pair without source or with labels and decoder input
/// of different lengths, or no target token.
std::vector<QualityFigures> evaluateSeq2SeqQuality(Model& model, std::shared_ptr<const FfnOverride> reference,
                                                   const std::vector<EvalCandidate>& candidates,
                                                   const std::vector<Seq2SeqExample>& pairs, const EvalOptions& options,
                                                   JobContext& job);

/// Throughput of repeated timed runs, in tokens per second. A single timing
/// is at the mercy of the scheduler, so speed figures carry the run count and
/// the spread.
struct SpeedStats {
  int runs = 0;                         ///< timed runs (the warm-up not counted)
  double min = 0, median = 0, max = 0;  ///< tokens/s over the runs
  /// Summary of per-run rates (tokens/s); empty -> all zero.
  static SpeedStats of(std::vector<double> rates);
};

/// FFN overrides timed together (null = the model's dense FFNs).
using FfnOverrides = std::vector<std::shared_ptr<const FfnOverride>>;

/// Forward throughput of each of `ffns` (one SpeedStats per override, in
/// order): each run is one pass over `sequences` in batches of `batch`. After
/// one untimed warm-up batch per override, the overrides take turns, one run
/// each per round, the order reversed every other round (A B B A ...), until
/// each has at least `minRuns` runs that together last at least `minSeconds`:
/// a drift in the machine's speed falls on all of them alike, so time a
/// candidate and its baseline in one call. The model's override is restored
/// afterwards. Throws ParameterError for no overrides, no sequences or
/// batch < 1. With a `job`, cancel is polled after every batch
/// (CancelledError). Not thread-safe: it sets the model's override.
std::vector<SpeedStats> forwardSpeeds(Model& model, const FfnOverrides& ffns,
                                      const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds,
                                      int minRuns = 3, const JobContext* job = nullptr);

/// forwardSpeeds of the one override `ffn`.
SpeedStats forwardSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn,
                        const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds,
                        int minRuns = 3, const JobContext* job = nullptr);

/// forwardSpeeds for encoder-decoder models (t5): each run is one
/// teacher-forced pass (Model::forwardSeq2Seq: encoder, decoder, head) over
/// `pairs` in right-padded batches of `batch` pairs; tokens/s counts the real
/// source tokens plus the real decoder-input tokens of the pass. Warm-up,
/// interleaving, run counts and cancel as forwardSpeeds. Throws ParameterError
/// for no overrides, no pairs, a pair without source or decoder input,
/// batch < 1 or a single-stack model.
std::vector<SpeedStats> forwardSeq2SeqSpeeds(Model& model, const FfnOverrides& ffns,
                                             const std::vector<Seq2SeqExample>& pairs, int batch, double minSeconds,
                                             int minRuns = 3, const JobContext* job = nullptr);

/// forwardSeq2SeqSpeeds of the one override `ffn`.
SpeedStats forwardSeq2SeqSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn,
                               const std::vector<Seq2SeqExample>& pairs, int batch, double minSeconds, int minRuns = 3,
                               const JobContext* job = nullptr);

/// Greedy generation speed (new tokens/s, KV-cached, batch 1) after `prompt`
/// for each of `ffns`: each run one generation of `newTokens` (only the steps
/// timed); one warm-up run per override, then the interleaved rounds of
/// forwardSpeeds. With a `job`, cancel is polled after every generated token
/// (CancelledError). An encoder-decoder model (t5) takes `prompt` as its
/// source: startSeq2Seq (encoder, cross-attention keys/values) is untimed, then
/// `newTokens` decodeStep steps from decoder_start_token_id are timed (eos
/// does not stop a timing run). Throws ParameterError for no overrides or
/// newTokens < 1.
std::vector<SpeedStats> generationSpeeds(Model& model, const FfnOverrides& ffns, const std::vector<int64_t>& prompt,
                                         int newTokens, double minSeconds = 0.3, int minRuns = 3,
                                         const JobContext* job = nullptr);

/// generationSpeeds of the one override `ffn`.
SpeedStats generationSpeed(Model& model, std::shared_ptr<const FfnOverride> ffn, const std::vector<int64_t>& prompt,
                           int newTokens, double minSeconds = 0.3, int minRuns = 3, const JobContext* job = nullptr);

/// forwardSpeed(...).median.
double forwardTokensPerSecond(Model& model, std::shared_ptr<const FfnOverride> ffn,
                              const std::vector<std::vector<int64_t>>& sequences, int batch, double minSeconds,
                              const JobContext* job = nullptr);

/// generationSpeed(...).max: the best of at least 3 timed runs (after a
/// warm-up) that together last at least `minSeconds`.
double generationTokensPerSecond(Model& model, std::shared_ptr<const FfnOverride> ffn,
                                 const std::vector<int64_t>& prompt, int newTokens, double minSeconds = 0.3,
                                 const JobContext* job = nullptr);

}  // namespace moefy
