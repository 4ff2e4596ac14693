#include "analysis/eval/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"

namespace moefy {

Decoder::Decoder(const Model& model) : model_(model) {
  if (!model.config().causal)
    throw ParameterError(std::string("generation needs a causal model, not ") + archName(model.config().arch));
  reset();
}

void Decoder::reset() {
  cache_ = KvCache{};
  length_ = 0;
}

at::Tensor Decoder::step(const std::vector<int64_t>& tokens) {
  c10::InferenceMode guard;
  at::Tensor hidden = model_.forwardCached(tokens, cache_);  // [1, T, d_model]
  length_ = cache_.length;
  return model_.head(hidden.select(1, hidden.size(1) - 1)).view({-1});
}

std::vector<int64_t> greedyGenerate(const Model& model, const std::vector<int64_t>& prompt, int newTokens, bool useCache) {
  if (prompt.empty()) throw ParameterError("generation needs a non-empty prompt");
  std::vector<int64_t> out;
  if (useCache) {
    Decoder dec(model);
    at::Tensor logits = dec.step(prompt);
    for (int i = 0; i < newTokens; ++i) {
      int64_t next = logits.argmax().item<int64_t>();
      out.push_back(next);
      if (i + 1 < newTokens) logits = dec.step({next});
    }
    return out;
  }
  std::vector<int64_t> seq = prompt;
  for (int i = 0; i < newTokens; ++i) {
    at::Tensor logits = model.forward(makeBatch({seq}));
    int64_t next = logits[0][static_cast<int64_t>(seq.size()) - 1].argmax().item<int64_t>();
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

namespace {

// A token id of config.json (`key`: an int, or for eos_token_id a list of
// ints), else `fallback` (T5Config's default).
std::vector<int64_t> configIds(const ModelConfig& c, const char* key, int64_t fallback) {
  auto it = c.raw.find(key);
  if (it == c.raw.end() || it->is_null()) return {fallback};
  std::vector<int64_t> ids;
  if (it->is_number_integer()) ids.push_back(it->get<int64_t>());
  if (it->is_array())
    for (const auto& x : *it)
      if (x.is_number_integer()) ids.push_back(x.get<int64_t>());
  if (ids.empty() || ids.size() != (it->is_array() ? it->size() : 1))
    throw ParameterError(std::string("config.json: ") + key + " " + it->dump() + " is not a token id" +
                         (it->is_array() ? " list" : ""));
  return ids;
}

void checkVocab(int64_t id, int64_t vocab, const std::string& what) {
  if (id < 0 || id >= vocab)
    throw ParameterError(what + " " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                         ")");
}

}  // namespace

at::Tensor Seq2SeqGeneration::paddedIds() const {
  size_t longest = 0;
  for (const auto& t : tokens) longest = std::max(longest, t.size());
  at::Tensor out = at::full({static_cast<int64_t>(tokens.size()), static_cast<int64_t>(longest) + 1}, padId, at::kLong);
  for (size_t b = 0; b < tokens.size(); ++b) {
    out[static_cast<int64_t>(b)][0] = decoderStartId;
    for (size_t i = 0; i < tokens[b].size(); ++i)
      out[static_cast<int64_t>(b)][static_cast<int64_t>(i) + 1] = tokens[b][i];
  }
  return out;
}

Seq2SeqGeneration greedyGenerateSeq2Seq(const Model& model, const std::vector<std::vector<int64_t>>& sources,
                                        const Seq2SeqGenerateOptions& options, HookSink* hooks, const JobContext* job) {
  const ModelConfig& c = model.config();
  if (!c.encoderDecoder)
    throw ParameterError(std::string(archName(c.arch)) +
                         " is not an encoder-decoder model: sequence-to-sequence generation needs one (t5)");
  if (sources.empty()) throw ParameterError("generation needs at least one source sequence");
  if (options.maxNewTokens < 1)
    throw ParameterError("max_new_tokens must be >= 1, not " + std::to_string(options.maxNewTokens));
  for (size_t b = 0; b < sources.size(); ++b) {
    if (sources[b].empty()) throw ParameterError("source sequence " + std::to_string(b) + " is empty");
    for (int64_t id : sources[b]) checkVocab(id, c.vocab, "source sequence " + std::to_string(b) + ": token id");
  }
  Seq2SeqGeneration g;
  g.decoderStartId = c.decoderStartId;
  checkVocab(g.decoderStartId, c.vocab, "decoder_start_token_id");
  const std::vector<int64_t> stops = options.stopIds.empty() ? configIds(c, "eos_token_id", 1) : options.stopIds;
  for (int64_t s : stops) checkVocab(s, c.vocab, "stop (eos) id");
  g.padId = options.padId ? *options.padId : configIds(c, "pad_token_id", 0).front();
  checkVocab(g.padId, c.vocab, "pad id");
  const auto B = static_cast<int64_t>(sources.size());
  g.tokens.assign(static_cast<size_t>(B), {});
  g.stopped.assign(static_cast<size_t>(B), false);
  std::vector<std::vector<at::Tensor>> stepLogits(static_cast<size_t>(B));
  const Batch source = makeBatch(sources, 0);
  c10::InferenceMode guard;

  // Takes the argmax of row r of logits [n, vocab] for sequence b; returns whether b goes on.
  auto emit = [&](int64_t b, const at::Tensor& row) {
    const int64_t next = row.argmax().item<int64_t>();
    auto& toks = g.tokens[static_cast<size_t>(b)];
    toks.push_back(next);
    if (options.keepLogits) stepLogits[static_cast<size_t>(b)].push_back(row.clone());
    const bool stop = std::find(stops.begin(), stops.end(), next) != stops.end();
    g.stopped[static_cast<size_t>(b)] = stop;
    return !stop && static_cast<int>(toks.size()) < options.maxNewTokens;
  };

  if (options.useCache) {
    Seq2SeqCache cache = model.startSeq2Seq(source, hooks);
    std::vector<int64_t> active(static_cast<size_t>(B));  // the input index of each cache row
    for (int64_t b = 0; b < B; ++b) active[static_cast<size_t>(b)] = b;
    at::Tensor ids = at::full({B, 1}, g.decoderStartId, at::kLong);
    while (!active.empty()) {
      at::Tensor logits = model.head(model.decodeStep(ids, cache, hooks)).select(1, 0);  // [n, vocab]
      std::vector<int64_t> keep, next;
      for (size_t r = 0; r < active.size(); ++r)
        if (emit(active[r], logits[static_cast<int64_t>(r)])) {
          keep.push_back(static_cast<int64_t>(r));
          next.push_back(g.tokens[static_cast<size_t>(active[r])].back());
        }
      if (job) job->checkCancel();
      if (keep.empty()) break;
      if (keep.size() != active.size()) {
        // Finished sequences leave the batch: their rows of every cached tensor are dropped.
        cache.keepRows(at::tensor(keep, at::kLong));
        std::vector<int64_t> still;
        for (int64_t r : keep) still.push_back(active[static_cast<size_t>(r)]);
        active = std::move(still);
      }
      ids = at::tensor(next, at::kLong).view({-1, 1});
    }
  } else {
    // HF with use_cache=False: the whole prefix of every sequence each step,
    // a finished sequence fed pad (its outputs ignored).
    std::vector<std::vector<int64_t>> prefix(static_cast<size_t>(B), {g.decoderStartId});
    std::vector<bool> running(static_cast<size_t>(B), true);
    for (int step = 0; step < options.maxNewTokens; ++step) {
      at::Tensor logits = model.forwardSeq2Seq(source, makeBatch(prefix, g.padId), hooks).select(1, step);
      bool any = false;
      for (int64_t b = 0; b < B; ++b) {
        const auto bi = static_cast<size_t>(b);
        if (running[bi]) running[bi] = emit(b, logits[b]);
        prefix[bi].push_back(g.tokens[bi].size() > static_cast<size_t>(step) ? g.tokens[bi].back() : g.padId);
        any = any || running[bi];
      }
      if (job) job->checkCancel();
      if (!any) break;
    }
  }
  if (options.keepLogits)
    for (int64_t b = 0; b < B; ++b) g.logits.push_back(at::stack(stepLogits[static_cast<size_t>(b)]));
  return g;
}

}  // namespace moefy
