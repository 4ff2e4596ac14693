#pragma once
// Incremental (KV-cached) decoding over the engine's weights, for greedy
// generation and tokens/s measurements. It uses only Model's public API
// (tensors, roles, FFN override, head) and mirrors Model::forwardHidden for a
// single unpadded sequence, so the FFN override (e.g. a MoE) is honoured.
// Causal architectures only (gpt2, llama, mistral, qwen2, opt).
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

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
  at::Tensor w(int role, int layer) const;
  const Model& model_;
  std::vector<at::Tensor> k_, v_;  // per layer [KV, T, D]
  int64_t length_ = 0;
};

/// Greedy decoding: `newTokens` tokens after `prompt`. With useCache=false each
/// step reruns Model::forward on the whole prefix (the reference).
std::vector<int64_t> greedyGenerate(const Model& model, const std::vector<int64_t>& prompt, int newTokens,
                                    bool useCache = true);

}  // namespace moefy
