// Router auxiliary losses of native MoE training (see router_loss.h).
#include "analysis/train/router_loss.h"

#include <torch/torch.h>

#include "analysis/common/error.h"

namespace moefy {

namespace {

// All layers' logits as one [M, E] matrix (HF: torch.cat(gate_logits, dim=0)).
at::Tensor concatenated(const std::vector<at::Tensor>& routerLogits, const char* what) {
  if (routerLogits.empty()) throw ParameterError(std::string(what) + ": no router logits (not a native MoE model?)");
  const int64_t E = routerLogits.front().size(-1);
  std::vector<at::Tensor> rows;
  rows.reserve(routerLogits.size());
  for (const auto& z : routerLogits) {
    if (z.size(-1) != E)
      throw ParameterError(std::string(what) + ": router logits with " + std::to_string(z.size(-1)) + " and " +
                           std::to_string(E) + " experts");
    rows.push_back(z.reshape({-1, E}).to(at::kFloat));
  }
  return at::cat(rows, 0);
}

}  // namespace

at::Tensor loadBalancingLoss(const std::vector<at::Tensor>& routerLogits, int64_t experts, int64_t topK) {
  if (topK < 1 || topK > experts)
    throw ParameterError("load-balancing loss: top-k " + std::to_string(topK) + " outside [1, " +
                         std::to_string(experts) + "]");
  at::Tensor z = concatenated(routerLogits, "load-balancing loss");  // [M, E]
  if (z.size(1) != experts)
    throw ParameterError("load-balancing loss: router logits have " + std::to_string(z.size(1)) +
                         " experts, expected " + std::to_string(experts));
  at::Tensor p = at::softmax(z, -1);                       // [M, E]
  at::Tensor chosen = std::get<1>(at::topk(p, topK, -1));  // [M, k], as HF: topk of the probabilities
  // The selection counts are not differentiable (HF's one_hot of topk indices).
  at::Tensor mask = at::one_hot(chosen, experts).to(at::kFloat);  // [M, k, E]
  at::Tensor tokensPerExpert = mask.mean(0);                      // [k, E]
  at::Tensor probPerExpert = p.mean(0);                           // [E]
  return (tokensPerExpert * probPerExpert.unsqueeze(0)).sum() * static_cast<double>(experts);
}

at::Tensor routerZLoss(const std::vector<at::Tensor>& routerLogits) {
  at::Tensor z = concatenated(routerLogits, "router z-loss");  // [M, E]
  return at::logsumexp(z, -1).pow(2).mean();
}

bool RouterLogitsCapture::wantsSite(const Site& site, HookPoint point) const {
  return point == HookPoint::RouterLogits && site.stack == SiteStack::Single && site.expert < 0 && !site.shared;
}

void RouterLogitsCapture::onSite(const Site& site, HookPoint point, const at::Tensor& x) {
  if (wantsSite(site, point)) logits.push_back(x);
}

}  // namespace moefy
