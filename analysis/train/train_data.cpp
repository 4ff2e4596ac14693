// Training data of `moefy train`: the causal token stream and the parallel corpus of T5 models.
#include "analysis/train/train_data.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>
#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/trainer.h"

namespace moefy {

namespace fs = std::filesystem;

TrainTokenizer::TrainTokenizer(const fs::path& path) : path_(path) {
  try {
    tok_ = Tokenizer::fromFile(path);
    vocab_ = tok_->vocabSize();
    kind_ = tok_->kind();
  } catch (const FormatError&) {
    bpe_ = std::make_unique<BpeEncoder>(BpeModel::fromTokenizerJson(path));
    vocab_ = static_cast<int64_t>(bpe_->model().tokens.size());
    kind_ = "byte-level BPE (trainer encoder), " + std::to_string(vocab_) + " tokens";
  }
}

TrainTokenizer::~TrainTokenizer() = default;

std::vector<int32_t> TrainTokenizer::encode(const std::string& text) const {
  return tok_ ? tok_->encode(text, true) : bpe_->encode(text, true);
}

namespace {

// A deterministic RNG for (seed, index, salt): batches and epoch orders.
std::mt19937_64 seededRng(uint64_t seed, int64_t index, uint32_t salt) {
  std::seed_seq sq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(index),
                   static_cast<uint32_t>(static_cast<uint64_t>(index) >> 32), salt};
  return std::mt19937_64(sq);
}

// ---------------------------------------------------------------- causal

std::vector<int32_t> tokenStream(const fs::path& corpus, const TrainTokenizer& enc, int keepMod, bool keep,
                                 JobContext& job, int64_t* docs) {
  auto files = corpusTextFiles(corpus);
  if (keepMod > 0 && files.size() < 2)
    throw FormatError(corpus.string() + ": needs at least 2 documents to hold one out (or give --heldout)");
  std::vector<int32_t> stream;
  *docs = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    // Every keepMod-th document is held out; with fewer documents, the last one.
    const size_t mod = std::min(static_cast<size_t>(keepMod), files.size());
    bool heldOut = keepMod > 0 && i % mod == mod - 1;
    if (keepMod > 0 && heldOut != keep) continue;
    auto ids = enc.encode(readFile(files[i]));
    stream.insert(stream.end(), ids.begin(), ids.end());
    ++*docs;
    job.setProgress(static_cast<double>(i + 1) / static_cast<double>(files.size()));
    job.checkCancel();
  }
  return stream;
}

class CausalData : public TrainData {
 public:
  CausalData(const TrainOptions& o, const TrainTokenizer& enc, JobContext& job)
      : B_(o.batch), T_(o.seqLen), seed_(o.seed) {
    if (o.heldout.empty()) {
      train_ = tokenStream(o.corpus, enc, 20, false, job, &docsTrain_);
      held_ = tokenStream(o.corpus, enc, 20, true, job, &docsHeld_);
    } else {
      train_ = tokenStream(o.corpus, enc, 0, false, job, &docsTrain_);
      held_ = tokenStream(o.heldout, enc, 0, false, job, &docsHeld_);
    }
    if (static_cast<int64_t>(train_.size()) < T_ + 1)
      throw FormatError(o.corpus.string() + ": only " + std::to_string(train_.size()) +
                        " training tokens, need at least seq_len + 1");
    if (static_cast<int64_t>(held_.size()) < T_ + 1)
      throw FormatError((o.heldout.empty() ? o.corpus : o.heldout).string() + ": only " + std::to_string(held_.size()) +
                        " held-out tokens, need at least seq_len + 1");
    kind_ = enc.kind();
  }
  std::string describe() const override {
    return std::to_string(train_.size()) + " tokens in " + std::to_string(docsTrain_) + " documents, held-out " +
           std::to_string(held_.size()) + " tokens in " + std::to_string(docsHeld_) + " documents; tokenizer " + kind_;
  }
  int64_t trainTokens() const override { return static_cast<int64_t>(train_.size()); }
  int64_t trainDocuments() const override { return docsTrain_; }
  int64_t heldoutDocuments() const override { return docsHeld_; }

  BatchLoss stepLoss(const Model& model, int64_t step, HookSink* hooks) const override {
    at::Tensor w = sampleBatch(step);  // [B, T+1]
    Batch batch;
    batch.ids = w.slice(1, 0, T_);
    batch.mask = torch::ones_like(batch.ids);
    at::Tensor logits = model.forward(batch, hooks);  // [B, T, V], on the model's device
    at::Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                           w.slice(1, 1, T_ + 1).reshape({-1}).to(logits.device()));
    return {loss, int64_t{B_} * T_, int64_t{B_} * T_};
  }

  std::pair<double, int64_t> heldoutLoss(const Model& model, int64_t maxTokens, JobContext& job,
                                         HookSink* hooks) const override {
    torch::NoGradGuard ng;
    std::vector<at::Tensor> windows;
    int64_t predicted = 0;
    // Full windows only (equal shapes); the tail is < T tokens.
    for (int64_t s = 0; s + T_ + 1 <= static_cast<int64_t>(held_.size()); s += T_) {
      windows.push_back(
          torch::from_blob(const_cast<int32_t*>(held_.data() + s), {T_ + 1}, torch::kInt).to(torch::kLong));
      predicted += T_;
      if (maxTokens > 0 && predicted >= maxTokens) break;
    }
    double total = 0;
    int64_t count = 0;
    for (size_t i = 0; i < windows.size(); i += B_) {
      size_t n = std::min(windows.size() - i, static_cast<size_t>(B_));
      at::Tensor w = torch::stack(std::vector<at::Tensor>(windows.begin() + i, windows.begin() + i + n));  // [n, T+1]
      Batch batch;
      batch.ids = w.slice(1, 0, T_);
      batch.mask = torch::ones_like(batch.ids);
      at::Tensor logits = model.forward(batch, hooks);  // [n, T, V]
      at::Tensor loss = torch::nn::functional::cross_entropy(
          logits.reshape({-1, logits.size(-1)}), w.slice(1, 1, T_ + 1).reshape({-1}).to(logits.device()),
          torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      total += loss.item<double>();
      count += static_cast<int64_t>(n) * T_;
      job.checkCancel();
    }
    return {total / static_cast<double>(count), count};
  }

 private:
  // A [B, T+1] batch of random windows of the stream, drawn from an RNG seeded by (seed, step).
  at::Tensor sampleBatch(int64_t step) const {
    std::mt19937_64 rng = seededRng(seed_, step, 0x5eedu);
    std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(train_.size()) - (T_ + 1));
    at::Tensor out = torch::empty({B_, T_ + 1}, torch::kLong);
    auto acc = out.accessor<int64_t, 2>();
    for (int b = 0; b < B_; ++b) {
      int64_t s = pick(rng);
      for (int t = 0; t <= T_; ++t) acc[b][t] = train_[s + t];
    }
    return out;
  }

  int B_, T_;
  uint64_t seed_;
  std::vector<int32_t> train_, held_;
  int64_t docsTrain_ = 0, docsHeld_ = 0;
  std::string kind_;
};

// ---------------------------------------------------------------- sequence-to-sequence

// Truncates ids to at most n tokens, the last one being eos again.
void truncateKeepEos(std::vector<int32_t>& ids, int n, int32_t eos) {
  if (static_cast<int>(ids.size()) <= n) return;
  ids.resize(static_cast<size_t>(n - 1));
  ids.push_back(eos);
}

class Seq2SeqData : public TrainData {
 public:
  Seq2SeqData(const TrainOptions& o, const ModelConfig& cfg, const nlohmann::json& cfgJson, const TrainTokenizer& enc,
              JobContext& job)
      : B_(o.batch), seed_(o.seed), decoderStart_(cfg.decoderStartId), kind_(enc.kind()) {
    const std::string ext = o.corpus.extension().string();
    if (ext != ".tsv" && ext != ".jsonl" && ext != ".ndjson")
      throw ParameterError(
          "CORPUS: " + o.corpus.string() +
          " is not a parallel corpus; an encoder-decoder model trains on pairs (.tsv source<TAB>target, "
          "or .jsonl)");
    const Tokenizer* tok = enc.tokenizer();
    if (!tok)
      throw FormatError(o.tokenizer.string() +
                        ": the project's tokenizer cannot read this file (needed to tokenise the pairs of an "
                        "encoder-decoder model)");
    auto eos = tok->eosId();
    if (!eos)
      throw FormatError(o.tokenizer.string() +
                        ": has no end-of-sequence token (train it with `moefy train-tokenizer --style t5`)");
    eos_ = *eos;
    // T5 generation starts from decoder_start_token_id and stops at eos: the two must differ, and the
    // config's eos_token_id (what generation stops at) must be the tokenizer's.
    if (eos_ == decoderStart_)
      throw FormatError(o.tokenizer.string() + ": its end-of-sequence id " + std::to_string(eos_) +
                        " is the config's decoder_start_token_id; a decoder would stop at its first step (train "
                        "the tokenizer with `moefy train-tokenizer --style t5`: </s> = 1, <pad> = 0)");
    if (cfgJson.contains("eos_token_id") && cfgJson["eos_token_id"].is_number_integer() &&
        cfgJson["eos_token_id"].get<int64_t>() != eos_)
      throw FormatError(o.config.string() + ": eos_token_id " + cfgJson["eos_token_id"].dump() +
                        " is not the tokenizer's end-of-sequence id " + std::to_string(eos_) + " (" +
                        o.tokenizer.string() + ")");
    pad_ = tok->padId().value_or(0);
    const int srcLen = o.seqLen, tgtLen = o.targetLen > 0 ? o.targetLen : o.seqLen;
    auto read = [&](const fs::path& path, Split split, std::vector<Seq2SeqIds>& out) {
      auto corpus = ParallelCorpus::open(path);
      Seq2SeqOptions so;
      so.decoderStartId = decoderStart_;
      so.eosId = eos_;
      so.split = split;
      so.seed = 0;  // the corpus split is the corpus's own (isHeldOut of the pair id), not the training seed
      forEachTokenizedPair(
          *corpus, *tok, so,
          [&](const TokenizedPair& p) {
            Seq2SeqIds ids = p.ids;
            truncateKeepEos(ids.source, srcLen, eos_);
            truncateKeepEos(ids.labels, tgtLen, eos_);
            ids.decoderInput = shiftRight(ids.labels, decoderStart_);
            out.push_back(std::move(ids));
            return true;
          },
          &job);
    };
    if (o.heldout.empty()) {
      read(o.corpus, Split::Train, train_);
      read(o.corpus, Split::HeldOut, held_);
    } else {
      read(o.corpus, Split::All, train_);
      read(o.heldout, Split::All, held_);
    }
    const fs::path heldFile = o.heldout.empty() ? o.corpus : o.heldout;
    if (train_.empty()) throw FormatError(o.corpus.string() + ": no training pairs");
    if (held_.empty())
      throw FormatError(heldFile.string() + ": no held-out pairs (give --heldout, or use a larger corpus)");
    for (const auto& p : train_) {
      trainLabels_ += static_cast<int64_t>(p.labels.size());
      trainSource_ += static_cast<int64_t>(p.source.size());
    }
  }
  std::string describe() const override {
    int64_t heldLabels = 0;
    for (const auto& p : held_) heldLabels += static_cast<int64_t>(p.labels.size());
    return std::to_string(train_.size()) + " pairs (" + std::to_string(trainSource_) + " source, " +
           std::to_string(trainLabels_) + " target tokens), held-out " + std::to_string(held_.size()) + " pairs (" +
           std::to_string(heldLabels) + " target tokens); tokenizer " + kind_;
  }
  int64_t trainTokens() const override { return trainLabels_; }
  int64_t trainDocuments() const override { return static_cast<int64_t>(train_.size()); }
  int64_t heldoutDocuments() const override { return static_cast<int64_t>(held_.size()); }

  BatchLoss stepLoss(const Model& model, int64_t step, HookSink* hooks) const override {
    std::vector<const Seq2SeqIds*> pairs;
    const auto n = static_cast<int64_t>(train_.size());
    for (int b = 0; b < B_; ++b) {
      const int64_t g = step * B_ + b;
      pairs.push_back(&train_[static_cast<size_t>(epochOrder(g / n)[static_cast<size_t>(g % n)])]);
    }
    return lossOf(model, pairs, hooks, false);
  }

  std::pair<double, int64_t> heldoutLoss(const Model& model, int64_t maxTokens, JobContext& job,
                                         HookSink* hooks) const override {
    torch::NoGradGuard ng;
    double total = 0;
    int64_t count = 0;
    for (size_t i = 0; i < held_.size(); i += static_cast<size_t>(B_)) {
      std::vector<const Seq2SeqIds*> pairs;
      for (size_t j = i; j < std::min(held_.size(), i + static_cast<size_t>(B_)); ++j) pairs.push_back(&held_[j]);
      BatchLoss l = lossOf(model, pairs, hooks, true);
      total += l.loss.item<double>();
      count += l.predicted;
      job.checkCancel();
      if (maxTokens > 0 && count >= maxTokens) break;
    }
    return {total / static_cast<double>(count), count};
  }

 private:
  // The pair order of epoch e: a permutation seeded by (seed, e); the last one is cached.
  const std::vector<int64_t>& epochOrder(int64_t e) const {
    if (e != cachedEpoch_) {
      order_.resize(train_.size());
      std::iota(order_.begin(), order_.end(), int64_t{0});
      std::mt19937_64 rng = seededRng(seed_, e, 0xe90cu);
      std::shuffle(order_.begin(), order_.end(), rng);
      cachedEpoch_ = e;
    }
    return order_;
  }

  // Teacher-forced cross-entropy of a batch of pairs (mean, or the sum when `sum`).
  BatchLoss lossOf(const Model& model, const std::vector<const Seq2SeqIds*>& pairs, HookSink* hooks, bool sum) const {
    std::vector<std::vector<int64_t>> src, dec;
    size_t T = 0;
    for (const auto* p : pairs) {
      src.emplace_back(p->source.begin(), p->source.end());
      dec.emplace_back(p->decoderInput.begin(), p->decoderInput.end());
      T = std::max(T, p->labels.size());
    }
    Batch source = makeBatch(src, pad_), decoder = makeBatch(dec, pad_);
    at::Tensor labels = torch::full({static_cast<int64_t>(pairs.size()), static_cast<int64_t>(T)}, -100, torch::kLong);
    auto acc = labels.accessor<int64_t, 2>();
    int64_t predicted = 0;
    for (size_t b = 0; b < pairs.size(); ++b)
      for (size_t t = 0; t < pairs[b]->labels.size(); ++t, ++predicted) acc[b][t] = pairs[b]->labels[t];
    if (auto* masked = dynamic_cast<MaskedSink*>(hooks)) masked->setMasks(source.mask, decoder.mask);
    at::Tensor logits = model.forwardSeq2Seq(source, decoder, hooks);  // [B, T_dec, V]
    namespace F = torch::nn::functional;
    auto opts = F::CrossEntropyFuncOptions().ignore_index(-100);
    if (sum) opts = opts.reduction(torch::kSum);  // the default is the mean over the non-ignored labels
    at::Tensor loss =
        F::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}).to(logits.device()), opts);
    const int64_t tokens = source.mask.sum().item<int64_t>() + decoder.mask.sum().item<int64_t>();
    return {loss, predicted, tokens};
  }

  int B_;
  uint64_t seed_;
  int32_t decoderStart_, eos_ = 1, pad_ = 0;
  std::vector<Seq2SeqIds> train_, held_;
  int64_t trainLabels_ = 0, trainSource_ = 0;
  std::string kind_;
  mutable std::vector<int64_t> order_;
  mutable int64_t cachedEpoch_ = -1;
};

}  // namespace

std::unique_ptr<TrainData> loadTrainData(const TrainOptions& o, const ModelConfig& cfg, const nlohmann::json& cfgJson,
                                         const TrainTokenizer& tokenizer, JobContext& job) {
  if (cfg.encoderDecoder) return std::make_unique<Seq2SeqData>(o, cfg, cfgJson, tokenizer, job);
  if (o.targetLen > 0)
    throw ParameterError("--target-len: applies to encoder-decoder (T5) models only; " + o.config.string() +
                         " is a causal model (use --seq-len)");
  return std::make_unique<CausalData>(o, tokenizer, job);
}

}  // namespace moefy
