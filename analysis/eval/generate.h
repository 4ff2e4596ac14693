#pragma once
// Incremental (KV-cached) decoding over the engine's weights, for greedy
// generation and tokens/s measurements: Model::forwardCached (the same layer
// code as Model::forward, FFN override such as a MoE honoured) plus the head.
// Causal architectures only (every supported one except bert).
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

class Model;

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

}  // namespace moefy
