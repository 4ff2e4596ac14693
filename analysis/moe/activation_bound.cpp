#include "analysis/moe/activation_bound.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "analysis/common/error.h"

namespace moefy {

int64_t neuronsForBudget(double budget, int64_t dFF) {
  if (!(budget > 0 && budget <= 1)) throw ParameterError("neuron budget " + std::to_string(budget) + " outside (0, 1]");
  const int64_t k = std::llround(budget * static_cast<double>(dFF));
  return std::max<int64_t>(1, std::min<int64_t>(dFF, k));
}

at::Tensor topKActivationFfn(const FfnWeights& w, const at::Tensor& x, int64_t keep, at::Tensor* hidden) {
  at::Tensor h;
  if (w.gated())
    h = applyActivation(at::linear(x, w.gate), w.act) * at::linear(x, w.up);
  else
    h = applyActivation(at::linear(x, w.up, w.upBias), w.act);
  const int64_t F = h.size(-1);
  if (keep < 1 || keep > F)
    throw ParameterError("top-k activation bound: K " + std::to_string(keep) + " outside [1, " + std::to_string(F) +
                         "]");
  if (keep < F) {
    at::Tensor idx = std::get<1>(h.abs().topk(keep, -1, /*largest=*/true, /*sorted=*/false));
    h = h * at::zeros_like(h).scatter_(-1, idx, 1.0);
  }
  if (hidden) *hidden = h;
  return at::linear(h, w.down, w.downBias);
}

ActivationBoundFfn::ActivationBoundFfn(std::vector<FfnWeights> ffn, std::vector<int64_t> keep)
    : ffn_(std::move(ffn)), keep_(std::move(keep)) {
  keep_.resize(ffn_.size(), 0);
  for (size_t L = 0; L < ffn_.size(); ++L) {
    const FfnWeights& w = ffn_[L];
    if (!w.up.defined() || !w.down.defined())
      throw ParameterError("top-k activation bound: layer " + std::to_string(L) + " has no FFN weights");
    if (keep_[L] < 0 || keep_[L] > w.up.size(0))
      throw ParameterError("top-k activation bound: layer " + std::to_string(L) + " keeps " + std::to_string(keep_[L]) +
                           " neurons, outside [0, " + std::to_string(w.up.size(0)) + "]");
  }
}

at::Tensor ActivationBoundFfn::forward(int layer, const at::Tensor& x, at::Tensor* hidden) const {
  if (layer < 0 || layer >= static_cast<int>(ffn_.size()))
    throw ParameterError("top-k activation bound has no layer " + std::to_string(layer));
  if (!isSparse(layer)) return denseFfn(ffn_[layer], x, hidden);
  return topKActivationFfn(ffn_[layer], x, keep_[layer], hidden);
}

std::shared_ptr<ActivationBoundFfn> ActivationBoundFfn::withBudget(double budget,
                                                                   const std::vector<bool>& sparse) const {
  std::vector<int64_t> k(ffn_.size(), 0);
  for (size_t L = 0; L < ffn_.size() && L < sparse.size(); ++L)
    if (sparse[L]) k[L] = neuronsForBudget(budget, ffn_[L].up.size(0));
  return std::make_shared<ActivationBoundFfn>(ffn_, std::move(k));
}

}  // namespace moefy
