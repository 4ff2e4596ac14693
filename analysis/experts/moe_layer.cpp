#include "analysis/experts/moe_layer.h"

#include <torch/torch.h>

#include "analysis/common/error.h"
#include "analysis/io/safetensors.h"

namespace moefy {

bool plainReluFfn(Activation act, bool gated) { return act == Activation::ReLU && !gated; }

bool plainReluFfn(const nlohmann::json& m) {
  if (!m.is_object()) return true;
  const auto a = m.find("activation");
  const auto k = m.find("ffn_kind");
  const bool relu = a == m.end() || !a->is_string() || a->get<std::string>() == "relu";
  const bool gated = k != m.end() && k->is_string() && k->get<std::string>() == "gated";
  return relu && !gated;
}

at::Tensor expertMassFromHidden(const at::Tensor& hidden, const at::Tensor& labels, int experts, bool plainRelu) {
  // clamp_min(0) rather than h: a plain ReLU hidden is >= 0 already, but F16
  // rounding of a recorded -0.0 must not count.
  at::Tensor v = plainRelu ? hidden.clamp_min(0) : hidden.abs();
  // One spare column catches the shared expert's neurons (label E); a label
  // beyond E is an index error of index_add_.
  at::Tensor out = at::zeros({hidden.size(0), experts + 1}, hidden.options());
  out.index_add_(1, labels.to(at::kLong), v);
  return out.narrow(1, 0, experts).contiguous();
}

ExpertLayout ExpertLayout::fromLabels(const at::Tensor& labelsIn, int experts, const std::string& ctx, bool shared) {
  if (experts <= 0) throw FormatError(ctx + ": expert count must be positive, got " + std::to_string(experts));
  if (labelsIn.dim() != 1 || labelsIn.numel() == 0)
    throw FormatError(ctx + ": labels must be a non-empty 1-D tensor, got shape " + shapeString(labelsIn));
  at::Tensor labels = labelsIn.to(at::kLong).contiguous();
  const int64_t F = labels.numel();
  if (experts > F)
    throw FormatError(ctx + ": " + std::to_string(experts) + " experts for " + std::to_string(F) + " neurons");
  const int64_t* lp = labels.data_ptr<int64_t>();
  const int blocks = experts + (shared ? 1 : 0);
  std::vector<int64_t> counts(blocks, 0);
  for (int64_t i = 0; i < F; ++i) {
    if (lp[i] < 0 || lp[i] >= blocks)
      throw FormatError(ctx + ": neuron " + std::to_string(i) + " has expert label " + std::to_string(lp[i]) +
                        ", outside [0, " + std::to_string(blocks) + ")" +
                        (shared ? " (label " + std::to_string(experts) + " is the shared expert)" : ""));
    ++counts[lp[i]];
  }
  for (int e = 0; e < blocks; ++e)
    if (counts[e] == 0)
      throw FormatError(ctx + ": " + (e == experts ? std::string("the shared expert") : "expert " + std::to_string(e)) +
                        " has no neurons");
  ExpertLayout out;
  out.experts = experts;
  out.shared = shared;
  out.offsets.assign(blocks + 1, 0);
  for (int e = 0; e < blocks; ++e) out.offsets[e + 1] = out.offsets[e] + counts[e];
  out.perm = at::empty({F}, at::kLong);
  out.rowExpert = at::empty({F}, at::kLong);
  int64_t* pp = out.perm.data_ptr<int64_t>();
  int64_t* rp = out.rowExpert.data_ptr<int64_t>();
  std::vector<int64_t> fill(out.offsets.begin(), out.offsets.end() - 1);
  for (int64_t i = 0; i < F; ++i) {  // ascending i: neurons keep their order inside an expert
    int64_t r = fill[lp[i]]++;
    pp[r] = i;
    rp[r] = lp[i];
  }
  out.invPerm = at::empty({F}, at::kLong);
  int64_t* ip = out.invPerm.data_ptr<int64_t>();
  for (int64_t r = 0; r < F; ++r) ip[pp[r]] = r;
  out.labels = labels.to(at::kInt);
  return out;
}

ExpertLayout ExpertLayout::to(c10::Device device) const {
  ExpertLayout out = *this;
  for (at::Tensor* t : {&out.labels, &out.perm, &out.rowExpert, &out.invPerm})
    if (t->defined()) *t = t->to(device);
  return out;
}

std::shared_ptr<MoeLayerWeights> MoeLayerWeights::pack(const FfnWeights& w, ExpertLayout layout) {
  at::NoGradGuard guard;  // normal tensors: calibration may train them
  auto m = std::make_shared<MoeLayerWeights>();
  const int64_t F = w.up.size(0);
  if (layout.dFF() != F)
    throw FormatError("partition has " + std::to_string(layout.dFF()) + " neurons, the FFN has d_ff " + std::to_string(F));
  // Packed where the weights are (a model on --device packs there); the layout's
  // index tensors follow them.
  layout = layout.to(w.up.device());
  const at::Tensor& perm = layout.perm;
  m->up = w.up.detach().index_select(0, perm).contiguous();
  if (w.gated()) m->gate = w.gate.detach().index_select(0, perm).contiguous();
  if (w.upBias.defined()) m->upBias = w.upBias.detach().index_select(0, perm).contiguous();
  m->downT = w.down.detach().index_select(1, perm).t().contiguous();
  if (w.downBias.defined()) m->downBias = w.downBias.detach().contiguous().clone();
  m->act = w.act;
  m->layout = std::move(layout);
  return m;
}

at::Tensor MoeLayerWeights::packedHidden(const at::Tensor& x) const {
  if (gated()) return applyActivation(at::linear(x, gate), act) * at::linear(x, up);
  return applyActivation(at::linear(x, up, upBias), act);
}

at::Tensor MoeLayerWeights::expertMass(const at::Tensor& h) const {
  at::Tensor v = plainReluFfn(act, gated()) ? h : h.abs();  // [N, d_ff], the rule of plainReluFfn
  const int E = layout.experts;
  at::Tensor out = at::zeros({h.size(0), layout.blocks()}, h.options());
  out.index_add_(1, layout.rowExpert, v);
  return layout.shared ? out.narrow(1, 0, E) : out;
}

at::Tensor MoeLayerWeights::expertOutputNorm(const at::Tensor& h) const {
  const int E = layout.experts;
  std::vector<at::Tensor> cols;
  cols.reserve(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    const int64_t off = layout.offsets[e], s = layout.expertSize(e);
    // [N, s] x [s, d_model]: expert e's share of the output, then its row norms.
    cols.push_back(at::mm(h.narrow(1, off, s), downT.narrow(0, off, s)).norm(2, {1}));
  }
  return at::stack(cols, 1);
}

FfnWeights MoeLayerWeights::unpack() const {
  const at::Tensor& inv = layout.invPerm;
  FfnWeights w;
  w.up = up.index_select(0, inv);
  if (gated()) w.gate = gate.index_select(0, inv);
  if (upBias.defined()) w.upBias = upBias.index_select(0, inv);
  w.down = downT.index_select(0, inv).t();
  w.downBias = downBias;
  w.act = act;
  return w;
}

}  // namespace moefy
