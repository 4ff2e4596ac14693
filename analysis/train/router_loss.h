#pragma once
// The auxiliary router losses of native MoE training (Mixtral, Qwen2-MoE,
// OLMoE), on the router logits that Model::forward exposes through the
// RouterLogits hook (model.h; RouterLogitsCapture collects them).
//
// Both functions are differentiable (libtorch autograd) in the logits; they
// return a float32 scalar tensor. Pure and thread-safe.
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

/// The load-balancing loss exactly as Hugging Face's
/// load_balancing_loss_func (modeling_mixtral.py, copied unchanged into
/// modeling_qwen2_moe.py and modeling_olmoe.py; Switch Transformer eqs. 4-6),
/// without the attention-mask variant (training windows have no padding):
/// the logits of all layers are concatenated to Z [M, E] (M = layers x
/// tokens); p = softmax(Z) per row; the top-k of p (torch.topk) give a one-hot
/// mask [M, k, E]; f = the mean of the mask over the M rows [k, E];
/// P = the mean of p over the rows [E]; loss = E * sum_{k,e} f[k, e] * P[e].
/// The mask is constant (no gradient), so the gradient reaches the logits
/// through P. It is k for perfectly balanced routing and grows with
/// imbalance (at most k * E). `routerLogits`: one tensor [..., E] per MoE
/// layer (e.g. [B, T, E]). Throws ParameterError for an empty list, a
/// tensor whose last dimension is not `experts`, or k outside [1, experts].
at::Tensor loadBalancingLoss(const std::vector<at::Tensor>& routerLogits, int64_t experts, int64_t topK);

/// The router z-loss of ST-MoE (Zoph et al. 2022, eq. 5; HF
/// router_z_loss_func of modeling_switch_transformers.py): the mean over the
/// rows of the concatenated logits Z [M, E] of logsumexp(Z_m)^2. Throws
/// ParameterError for an empty list or tensors with different last dimensions.
at::Tensor routerZLoss(const std::vector<at::Tensor>& routerLogits);

/// A hook sink that keeps the router logits [B, T, E] of every native MoE
/// layer of one forward pass (in layer order; clear() before the next pass).
/// On a trainable model the tensors carry their autograd graph, so the losses
/// above can be back-propagated; the forward pass itself is unchanged. Not
/// thread-safe: one sink per forward pass.
class RouterLogitsCapture : public HookSink {
 public:
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site& site, HookPoint point) const override;
  void onSite(const Site& site, HookPoint point, const at::Tensor& x) override;
  std::vector<at::Tensor> logits;  ///< per MoE layer, [B, T, E]
  void clear() { logits.clear(); }
};

}  // namespace moefy
