#pragma once
// The top-k activation bound: per token, keep the K neurons of an FFN layer
// with the largest |h| and zero the others before W2, where h is the FFN
// hidden (act(x W1^T + b1), or act(x Wg^T) * (x Wu^T) for gated FFNs):
//
//     y = b2 + W2 (h * mask_K(|h|))
//
// It is the per-neuron reference beside every routing method at the same
// budget K / d_ff: a MoE keeps whole experts chosen before h is known, this
// keeps the K individually largest neurons after computing them. It needs
// the dense hidden, so it runs no faster than the dense FFN and has no speed
// figure; its FLOP count says so (analysis/moe/ffn_flops.h). Installed with
// Model::setFfnOverride like the MoE FFN; `moefy eval --bound topk-act`
// evaluates it (docs/moe.md).
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

/// K for a budget in (0, 1]: max(1, min(d_ff, round(budget * d_ff))). Throws
/// ParameterError for a budget outside (0, 1].
int64_t neuronsForBudget(double budget, int64_t dFF);

/// One layer of the bound: x [N, d_model] -> [N, d_model]. `hidden`, if
/// non-null, receives the kept hidden [N, d_ff] (zeros elsewhere). Ties in
/// |h| are broken by at::topk. Throws ParameterError for K outside [1, d_ff].
at::Tensor topKActivationFfn(const FfnWeights& w, const at::Tensor& x, int64_t keep, at::Tensor* hidden);

class ActivationBoundFfn : public FfnOverride {
 public:
  /// `ffn` and `keep` are indexed by model layer: keep[L] neurons per token
  /// (0 = the layer runs its dense FFN unchanged). Throws ParameterError for
  /// a keep outside [0, d_ff] or a layer without FFN weights.
  ActivationBoundFfn(std::vector<FfnWeights> ffn, std::vector<int64_t> keep);

  at::Tensor forward(int layer, const at::Tensor& x, at::Tensor* hidden) const override;

  /// The same weights with keep[L] = neuronsForBudget(budget, d_ff) in every
  /// layer where `sparse[L]` is true, 0 elsewhere.
  std::shared_ptr<ActivationBoundFfn> withBudget(double budget, const std::vector<bool>& sparse) const;

  bool isSparse(int layer) const { return layer >= 0 && layer < static_cast<int>(keep_.size()) && keep_[layer] > 0; }
  const std::vector<int64_t>& keep() const { return keep_; }
  const std::vector<FfnWeights>& ffn() const { return ffn_; }

 private:
  std::vector<FfnWeights> ffn_;
  std::vector<int64_t> keep_;
};

}  // namespace moefy
