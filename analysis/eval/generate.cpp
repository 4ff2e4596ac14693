#include "analysis/eval/generate.h"

#include <torch/torch.h>

#include <cmath>

#include "analysis/common/error.h"
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

}  // namespace moefy
