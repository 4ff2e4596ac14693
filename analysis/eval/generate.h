#pragma once
// Incremental (KV-cached) decoding over the engine's weights, for greedy
// generation and tokens/s measurements: Model::forwardCached (the same layer
// code as Model::forward, FFN override such as a MoE honoured) plus the head.
// Decoder / greedyGenerate: causal architectures (every supported one except
// bert and t5). greedyGenerateSeq2Seq: encoder-decoder models (t5), through
// Model::startSeq2Seq / decodeStep.
#include <ATen/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

class Model;
class JobContext;

class Decoder {
 public:
  explicit Decoder(const Model& model);
  /// Appends tokens and returns the logits of the last one [vocab].
  at::Tensor step(const std::vector<int64_t>& tokens);
  int64_t length() const { return length_; }
  void reset();

 private:
  const Model& model_;
  KvCache cache_;
  int64_t length_ = 0;
};

/// Greedy decoding: `newTokens` tokens after `prompt`. With useCache=false each
/// step reruns Model::forward on the whole prefix (the reference).
std::vector<int64_t> greedyGenerate(const Model& model, const std::vector<int64_t>& prompt, int newTokens,
                                    bool useCache = true);

/// Options of greedy encoder-decoder generation (the names of HF's generate()).
struct Seq2SeqGenerateOptions {
  int maxNewTokens = 32;  ///< max_new_tokens: tokens generated at most per source, >= 1
  /// eos_token_id: a sequence stops after emitting one of these (the stop id is
  /// its last token). Empty = config.json's eos_token_id (an int or a list; T5's
  /// default 1 when absent).
  std::vector<int64_t> stopIds;
  /// pad_token_id, what a finished sequence "emits" in paddedIds(). Unset =
  /// config.json's pad_token_id (T5's default 0 when absent).
  std::optional<int64_t> padId;
  bool keepLogits = false;  ///< fill Seq2SeqGeneration::logits
  /// false: every step reruns Model::forwardSeq2Seq on the whole prefix of
  /// every sequence, finished ones fed pad as HF does (the uncached
  /// reference; quadratic in the length).
  bool useCache = true;
};

/// The result of greedyGenerateSeq2Seq, one entry per source in input order.
struct Seq2SeqGeneration {
  /// The generated ids, without decoder_start_token_id; ends with the stop id
  /// when the sequence stopped, else has maxNewTokens ids.
  std::vector<std::vector<int64_t>> tokens;
  std::vector<bool> stopped;       ///< whether tokens[b] ends with a stop id
  std::vector<at::Tensor> logits;  ///< keepLogits: [tokens[b].size(), vocab] F32, the logits each id was chosen from
  int64_t decoderStartId = 0;      ///< the decoder's first input
  int64_t padId = 0;               ///< the pad id used
  /// HF generate()'s output: [B, 1 + longest] int64, decoder_start_token_id,
  /// then each sequence's ids, pad after a sequence's end.
  at::Tensor paddedIds() const;
};

/// Greedy decoding of an encoder-decoder model (HF's generate() with
/// num_beams 1, do_sample false): the decoder starts from
/// decoder_start_token_id; at each step every unfinished sequence takes the
/// argmax of its logits (the first maximum on ties, as torch.argmax), a
/// sequence is finished once it has emitted a stop id or maxNewTokens ids,
/// and decoding ends when all are. The sources are right-padded into one
/// batch (their padding masked in the cross-attention). With the cache,
/// the encoder and the cross-attention keys/values run once, each step feeds
/// one token per unfinished sequence, and finished sequences leave the batch
/// (they are not extended): the dec.blk.L hooks then see [B_active, 1, ..]
/// for the unfinished sequences in input order. The model's FFN override
/// (e.g. a MoE) is used as in forwardSeq2Seq. With a `job`, cancel is polled
/// after every step (CancelledError).
/// Throws ParameterError for a single-stack model, no sources, an empty
/// source, an id outside the vocabulary (naming the source and the id),
/// maxNewTokens < 1, or a stop/pad id outside the vocabulary.
/// Thread-safety: const on the model; concurrent calls may share it.
Seq2SeqGeneration greedyGenerateSeq2Seq(const Model& model, const std::vector<std::vector<int64_t>>& sources,
                                        const Seq2SeqGenerateOptions& options = {}, HookSink* hooks = nullptr,
                                        const JobContext* job = nullptr);

}  // namespace moefy
