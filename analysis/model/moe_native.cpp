// The native MoE block of Mixtral, Qwen2-MoE and OLMoE, after Hugging Face
// modeling_mixtral.py (MixtralSparseMoeBlock), modeling_qwen2_moe.py
// (Qwen2MoeSparseMoeBlock) and modeling_olmoe.py (OlmoeSparseMoeBlock). The
// rest of these models' blocks (attention, norms, RoPE) runs through
// Model::run in model.cpp like the llama family; run() calls nativeMoe() for
// the layers ModelConfig::moeLayer marks.
#include <torch/torch.h>

#include "analysis/common/error.h"
#include "analysis/model/model.h"

namespace moefy {

// Per token x [d_model]: logits = W_router x [E]; p = softmax(logits) in
// float32 (HF: softmax(..., dtype=torch.float)); the k largest p (torch.topk:
// largest first) pick the experts, their p renormalised to sum 1 when
// normTopK; y = sum_j p_j * down_j(act(gate_j x) * up_j x). Qwen2-MoE adds
// sigmoid(w_shared . x) * shared(x). Tokens are grouped by expert (as HF's
// loop over experts): each expert runs one GEMM over its tokens, in ascending
// token order, and its weighted output is scattered back with index_add.
at::Tensor Model::nativeMoe(int L, const at::Tensor& x, int64_t B, int64_t T, HookSink* hooks) const {
  const auto& c = config_;
  const int64_t N = x.size(0), E = c.expertCount, K = c.expertTopK, F = c.dExpert;
  const Site site = Site::ofLayer(L);
  auto wants = [&](const Site& s, HookPoint p) { return hooks && hooks->wantsSite(s, p); };
  const bool every = hooks && hooks->allExperts();

  at::Tensor logits = at::linear(x, t(Role::MoeRouter, L));  // [N, E]
  at::Tensor probs = at::softmax(logits, -1);                // [N, E], float32
  auto [weights, ids] = at::topk(probs, K, -1);              // [N, K] each, most probable first
  if (c.normTopK) weights = weights / weights.sum(-1, true);
  if (wants(site, HookPoint::RouterLogits)) hooks->onSite(site, HookPoint::RouterLogits, logits.view({B, T, E}));
  if (wants(site, HookPoint::TopkIds)) hooks->onSite(site, HookPoint::TopkIds, ids.view({B, T, K}));
  if (wants(site, HookPoint::TopkWeights)) hooks->onSite(site, HookPoint::TopkWeights, weights.view({B, T, K}));

  const bool wantAct = wants(site, HookPoint::FfnAct);
  at::Tensor act;  // [N, E * F]: expert e's hidden in columns [e F, (e + 1) F), zeros where e was not chosen
  if (wantAct) act = at::zeros({N, E * F}, x.options());
  at::Tensor out = at::zeros_like(x);  // [N, d_model]
  for (int e = 0; e < static_cast<int>(E); ++e) {
    const Site es{SiteStack::Single, L, e, false};
    const bool wantExpert = wants(es, HookPoint::FfnAct) || wants(es, HookPoint::ExpertTokens);
    const FfnWeights w = ffnWeights(es);
    // (token, slot) pairs routed to e, tokens ascending; a token picks an expert at most once.
    at::Tensor hit = (ids == e).nonzero();  // [n, 2]
    at::Tensor tokens = hit.select(1, 0);   // [n] int64
    at::Tensor hidden;                      // [n, F]
    // The expert's input rows (ExpertTokens' tokens: all of them in every-expert mode).
    if (wants(es, HookPoint::FfnIn)) hooks->onSite(es, HookPoint::FfnIn, every ? x : x.index_select(0, tokens));
    if (hit.size(0) > 0) {
      at::Tensor xe = x.index_select(0, tokens);  // [n, d_model]
      at::Tensor ye = override_ ? override_->forwardSite(es, xe, &hidden) : denseFfn(w, xe, &hidden);
      at::Tensor we = weights.index({tokens, hit.select(1, 1)}).unsqueeze(1);  // [n, 1]
      out.index_add_(0, tokens, ye * we);
    } else {
      hidden = at::zeros({0, F}, x.options());
    }
    if (every) {
      // Analysis only: every token through expert e, on the side, so that the
      // routed computation above (and the model's output) stays bit-identical.
      if (!wantExpert && !wantAct) continue;
      hidden = applyActivation(at::linear(x, w.gate), w.act) * at::linear(x, w.up);  // [N, F]
      tokens = at::arange(N, x.options().dtype(at::kLong));
      if (wantAct) act.narrow(1, e * F, F).copy_(hidden);
    } else if (wantAct && hit.size(0) > 0) {
      act.narrow(1, e * F, F).index_copy_(0, tokens, hidden);
    }
    if (wants(es, HookPoint::FfnAct)) hooks->onSite(es, HookPoint::FfnAct, hidden);
    if (wants(es, HookPoint::ExpertTokens)) hooks->onSite(es, HookPoint::ExpertTokens, tokens);
  }
  if (c.dShared > 0) {
    // Qwen2-MoE: the shared expert sees every token, scaled by its own sigmoid gate.
    const Site ss{SiteStack::Single, L, -1, true};
    const bool wantShared = wants(ss, HookPoint::FfnAct);
    if (wants(ss, HookPoint::FfnIn)) hooks->onSite(ss, HookPoint::FfnIn, x.view({B, T, -1}));
    at::Tensor hidden;  // [N, d_shared]
    at::Tensor ys = override_ ? override_->forwardSite(ss, x, wantShared ? &hidden : nullptr)
                              : denseFfn(ffnWeights(ss), x, wantShared ? &hidden : nullptr);
    out = out + at::sigmoid(at::linear(x, t(Role::SharedRouter, L))) * ys;  // [N, 1] * [N, d_model]
    if (wantShared) hooks->onSite(ss, HookPoint::FfnAct, hidden.view({B, T, -1}));
  }
  if (wantAct) hooks->onSite(site, HookPoint::FfnAct, act.view({B, T, E * F}));
  return out;
}

}  // namespace moefy
