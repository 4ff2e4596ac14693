// Fixtures of the compute-budget tests (test_compute_budget,
// test_shared_expert, test_dynamic_k): a tiny random GPT-2 (plain ReLU FFN
// with biases, 2 layers, d_model 32, d_ff 128, vocab 50, 4 heads, 64
// positions), its token sequences, and random FFNs written for numpy.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "npy.h"

namespace moefy::test {

inline constexpr int64_t kTinyD = 32, kTinyF = 128, kTinyVocab = 50;

/// Weights drawn from N(0, std) with a generator seeded by `seed`.
inline std::unique_ptr<Model> tinyGpt2(uint64_t seed) {
  const int64_t D = kTinyD, F = kTinyF, V = kTinyVocab;
  ModelConfig c = ModelConfig::fromJson({{"model_type", "gpt2"},
                                         {"n_layer", 2},
                                         {"n_embd", D},
                                         {"n_head", 4},
                                         {"n_inner", F},
                                         {"vocab_size", V},
                                         {"n_positions", 64},
                                         {"activation_function", "relu"}},
                                        "test");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto rnd = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, gen) * std; };
  std::map<std::string, at::Tensor> t;
  t["wte.weight"] = rnd({V, D}, 0.5);
  t["wpe.weight"] = rnd({64, D}, 0.1);
  t["ln_f.weight"] = at::ones({D});
  t["ln_f.bias"] = at::zeros({D});
  for (int L = 0; L < 2; ++L) {
    const std::string p = "h." + std::to_string(L) + ".";
    t[p + "ln_1.weight"] = at::ones({D});
    t[p + "ln_1.bias"] = at::zeros({D});
    t[p + "ln_2.weight"] = at::ones({D});
    t[p + "ln_2.bias"] = at::zeros({D});
    t[p + "attn.c_attn.weight"] = rnd({D, 3 * D}, 0.2);
    t[p + "attn.c_attn.bias"] = rnd({3 * D}, 0.05);
    t[p + "attn.c_proj.weight"] = rnd({D, D}, 0.2);
    t[p + "attn.c_proj.bias"] = rnd({D}, 0.05);
    t[p + "mlp.c_fc.weight"] = rnd({D, F}, 0.3);
    t[p + "mlp.c_fc.bias"] = rnd({F}, 0.1);
    t[p + "mlp.c_proj.weight"] = rnd({F, D}, 0.2);
    t[p + "mlp.c_proj.bias"] = rnd({D}, 0.05);
  }
  return Model::fromTensors(c, std::move(t));
}

/// Six token sequences of 9..14 ids below kTinyVocab: id (i a + t b + c) mod vocab.
inline std::vector<std::vector<int64_t>> tinySequences(int64_t a, int64_t b, int64_t c) {
  std::vector<std::vector<int64_t>> s;
  for (int i = 0; i < 6; ++i) {
    std::vector<int64_t> q;
    for (int t = 0; t < 9 + i; ++t) q.push_back((i * a + t * b + c) % kTinyVocab);
    s.push_back(q);
  }
  return s;
}

/// A random FFN [d_ff F, d_model d]: up (std 0.4), down (0.3), then gate
/// (0.4, gated) and b1 (0.2), b2 (0.1) (bias), drawn in that order from `gen`.
inline FfnWeights randomFfn(at::Generator& gen, int64_t d, int64_t F, bool gated, bool bias, Activation act) {
  FfnWeights w;
  w.up = at::randn({F, d}, gen) * 0.4;
  w.down = at::randn({d, F}, gen) * 0.3;
  if (gated) w.gate = at::randn({F, d}, gen) * 0.4;
  if (bias) {
    w.upBias = at::randn({F}, gen) * 0.2;
    w.downBias = at::randn({d}, gen) * 0.1;
  }
  w.act = act;
  return w;
}

/// Writes x and w as the .npy files the numpy references read: x, up, down,
/// gate (gated), b1 [1, d_ff] and b2 [1, d_model] (biases), into `dir` (created).
inline void writeFfnNpy(const std::filesystem::path& dir, const FfnWeights& w, const at::Tensor& x) {
  std::filesystem::create_directories(dir);
  writeNpy(dir / "x.npy", x);
  writeNpy(dir / "up.npy", w.up);
  writeNpy(dir / "down.npy", w.down);
  if (w.gate.defined()) writeNpy(dir / "gate.npy", w.gate);
  if (w.upBias.defined()) writeNpy(dir / "b1.npy", w.upBias.reshape({1, -1}).contiguous());
  if (w.downBias.defined()) writeNpy(dir / "b2.npy", w.downBias.reshape({1, -1}).contiguous());
}

}  // namespace moefy::test
