#pragma once
// The training data of `moefy train`, one class per kind of model (used by
// trainer.cpp; not part of the engine's public API):
//
//  - CausalData: decoder-only language models. Documents are encoded (BOS
//    first) and concatenated into one token stream; step s draws `batch`
//    random windows of seqLen + 1 tokens from an RNG seeded with (seed, s).
//    The held-out loss is the mean next-token cross-entropy over consecutive
//    full windows of the held-out stream.
//
//  - Seq2SeqData: encoder-decoder models (T5) on a parallel corpus (.tsv,
//    .jsonl; parallel_corpus.h). Every pair is tokenised as HF's T5
//    fine-tuning does (tokenizePair: source + </s>, labels = target + </s>,
//    decoder input = shiftRight(labels) from decoder_start_token_id), the
//    source truncated to seqLen and the labels to targetLen tokens (the last
//    kept token is </s> again, as the tokenizer's truncation with
//    max_length keeps the template's </s>). Step s takes pairs s*batch ..
//    s*batch + batch - 1 of an endless sequence of epochs, each a permutation
//    of the training pairs seeded with (seed, epoch), so a resumed run sees
//    the same batches. Batches are right-padded with pad_token_id; padded
//    label positions are ignored by the loss (HF's -100), padded source
//    positions are masked out of the attention. The loss is the mean
//    cross-entropy over the batch's label tokens (T5ForConditionalGeneration
//    with labels). The held-out loss is the same over the held-out pairs in
//    order.
//
// Both report the predicted tokens (the loss's denominator) and the tokens
// processed (inputs: window tokens, or source + decoder tokens) of a step.
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace moefy {

class JobContext;
class HookSink;
class Model;
struct ModelConfig;
struct TrainOptions;
class Tokenizer;
class BpeEncoder;

/// The tokenizer of a training run, loaded once: the project's Tokenizer when
/// it can read the file, else the trainer's own byte-level BPE encoder (same
/// ids: both are checked against the HF reference in
/// tests/core/test_bpe_trainer.cpp). Throws FormatError/IoError naming the
/// file when neither can. Const methods are thread-safe.
class TrainTokenizer {
 public:
  explicit TrainTokenizer(const std::filesystem::path& path);
  ~TrainTokenizer();
  /// The ids of `text` with the post-processor's special tokens.
  std::vector<int32_t> encode(const std::string& text) const;
  int64_t vocab() const { return vocab_; }
  /// "BPE (byte-level), 8000 tokens", for the log and training.json.
  const std::string& kind() const { return kind_; }
  /// The project's Tokenizer; nullptr when only the trainer's encoder reads the file.
  const Tokenizer* tokenizer() const { return tok_.get(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<BpeEncoder> bpe_;
  int64_t vocab_ = 0;
  std::string kind_;
};

/// The loss of one batch.
struct BatchLoss {
  at::Tensor loss;        ///< scalar: mean cross-entropy over the predicted tokens (autograd graph attached)
  int64_t predicted = 0;  ///< tokens the loss averages over
  int64_t tokens = 0;     ///< input tokens the model processed (for tokens/s)
};

/// A hook sink that sees the masks of the batch being run, so statistics can
/// leave out padding (Seq2SeqData sets them before each forward; CausalData
/// has no padding and leaves them undefined).
class MaskedSink {
 public:
  virtual ~MaskedSink() = default;
  /// sourceMask [B, T_src] / decoderMask [B, T_dec] int64 (1 = token); for a
  /// causal batch only `decoderMask` undefined and `sourceMask` undefined.
  virtual void setMasks(const at::Tensor& sourceMask, const at::Tensor& decoderMask) = 0;
};

class TrainData {
 public:
  virtual ~TrainData() = default;
  /// One line for the log: counts of tokens, documents or pairs.
  virtual std::string describe() const = 0;
  virtual int64_t trainTokens() const = 0;     ///< training tokens (causal: the stream; seq2seq: labels)
  virtual int64_t trainDocuments() const = 0;  ///< documents or pairs
  virtual int64_t heldoutDocuments() const = 0;
  /// The loss of step `step`'s batch (deterministic in seed and step).
  virtual BatchLoss stepLoss(const Model& model, int64_t step, HookSink* hooks) const = 0;
  /// Mean held-out cross-entropy (nats per predicted token) over up to
  /// maxTokens predicted tokens (0 = all), and the count. `hooks` (may be
  /// null) sees every forward; when it is also a MaskedSink it gets the masks.
  virtual std::pair<double, int64_t> heldoutLoss(const Model& model, int64_t maxTokens, JobContext& job,
                                                 HookSink* hooks) const = 0;
};

/// Reads and tokenises the training and held-out data of `options` for a
/// model of `config` (encoder-decoder configs take a parallel corpus, the
/// others documents), with `tokenizer` (options.tokenizer, loaded once by the
/// caller); `configJson` is options.config as read (its eos_token_id is
/// checked against the tokenizer's for encoder-decoder models). Throws
/// FormatError/IoError naming the file (too little data, unreadable corpus, a
/// T5 tokenizer without </s> or whose </s> is decoder_start_token_id),
/// ParameterError naming the option (a .txt corpus for T5, --target-len for a
/// causal model).
std::unique_ptr<TrainData> loadTrainData(const TrainOptions& options, const ModelConfig& config,
                                         const nlohmann::json& configJson, const TrainTokenizer& tokenizer,
                                         JobContext& job);

}  // namespace moefy
