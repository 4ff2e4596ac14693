#pragma once
// One FFN layer's weights regrouped into experts (MoEfication's layout).
//
// A partition assigns every FFN neuron (hidden unit) i to an expert labels[i].
// Packing reorders the neurons so that expert e owns the contiguous packed
// rows [offsets[e], offsets[e+1]): its rows of W1 (and of the gate for gated
// FFNs), its entries of b1, and its columns of W2 (stored transposed, as rows
// of downT, so that they are contiguous too). Within an expert, neurons keep
// ascending original order. The bias of W2 (b2) is shared and added once.
#include <ATen/Tensor.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/model.h"

namespace moefy {

/// The oracle's expert mass (MoEfication): the per-expert sum of the FFN hidden.
/// True when every FFN hidden h is >= 0 (a plain, non-gated ReLU FFN), so the
/// oracle's expert mass is the sum of h; otherwise (GELU, SiLU, and every gated
/// FFN, whose act(gate) * up is signed even for ReLU) it is the sum of |h|.
/// MoEfication defines the oracle on ReLU FFNs as the sum of h; |h| is its
/// extension to signed hiddens. Thread-safe.
bool plainReluFfn(Activation act, bool gated);
/// The same from a recording manifest's "model" block ("activation", "ffn_kind",
/// docs/formats.md). Older manifests without "activation" are treated as ReLU,
/// without "ffn_kind" as plain.
bool plainReluFfn(const nlohmann::json& manifestModel);

/// Oracle targets [S, E] (F32): per-expert activation mass of hidden [S, d_ff]
/// in original neuron order, labels [d_ff] in [0, E], where label E marks the
/// neurons of a layer's shared expert (docs/formats.md, "Partition"): they are
/// always computed, so routers never score them and they are left out of the
/// mass. plainRelu: sum of h, else sum of |h| (see plainReluFfn).
at::Tensor expertMassFromHidden(const at::Tensor& hidden, const at::Tensor& labels, int experts, bool plainRelu);

/// The expert layout of one layer, derived from its partition labels.
///
/// A layer may have one shared expert (CMoE, DeepSeekMoE: neurons computed for
/// every token, beside the E routed experts a router picks from). Its neurons
/// carry label E and form the last packed block, [offsets[E], offsets[E+1]);
/// `experts` counts the routed experts only, so routers and top-k see E.
struct ExpertLayout {
  int experts = 0;               ///< E, routed experts
  bool shared = false;           ///< whether block E is an always-computed shared expert
  std::vector<int64_t> offsets;  ///< blocks() + 1 packed-row offsets
  at::Tensor labels;             ///< [d_ff] int32, expert of each original neuron (E: shared)
  at::Tensor perm;               ///< [d_ff] int64, packed row r holds original neuron perm[r]
  at::Tensor rowExpert;          ///< [d_ff] int64, expert of packed row r (E: shared)
  at::Tensor invPerm;            ///< [d_ff] int64, packed row of original neuron i

  /// Packed blocks: the E routed experts, then the shared expert if any.
  int blocks() const { return experts + (shared ? 1 : 0); }
  int64_t expertSize(int e) const { return offsets[e + 1] - offsets[e]; }
  /// Neurons of the shared expert (0 without one).
  int64_t sharedSize() const { return shared ? expertSize(experts) : 0; }
  int64_t dFF() const { return offsets.empty() ? 0 : offsets.back(); }
  /// Validates labels (values in [0, E), or [0, E] with a shared expert; every
  /// expert non-empty) and builds the layout. `context` names the file/layer
  /// in errors. Throws FormatError.
  static ExpertLayout fromLabels(const at::Tensor& labels, int experts, const std::string& context,
                                 bool shared = false);
  /// This layout with its index tensors (labels, perm, rowExpert, invPerm) on
  /// `device` (--device; a copy, the tensors shared where already there).
  ExpertLayout to(c10::Device device) const;
};

/// Packed expert weights of one FFN layer (F32, contiguous, CPU).
struct MoeLayerWeights {
  ExpertLayout layout;
  at::Tensor up;        ///< [d_ff, d_model] packed rows of W1 (up_proj / c_fc / fc1)
  at::Tensor gate;      ///< [d_ff, d_model] packed rows of the gate, undefined for plain FFNs
  at::Tensor upBias;    ///< [d_ff] packed b1, or undefined
  at::Tensor downT;     ///< [d_ff, d_model] packed columns of W2, transposed
  at::Tensor downBias;  ///< [d_model] b2, or undefined
  Activation act = Activation::ReLU;

  int64_t dModel() const { return up.size(1); }
  int64_t dFF() const { return up.size(0); }
  bool gated() const { return gate.defined(); }

  /// Regroups a dense FFN by `layout` (copies the weights).
  static std::shared_ptr<MoeLayerWeights> pack(const FfnWeights& dense, ExpertLayout layout);
  /// The dense FFN hidden of x [N, d_model] in packed neuron order [N, d_ff]
  /// (every expert computed).
  at::Tensor packedHidden(const at::Tensor& x) const;
  /// Per-expert activation mass [N, E] of a packed hidden [N, d_ff]: the sum
  /// of h over the expert's neurons for plain ReLU FFNs (all h >= 0), of |h|
  /// otherwise. Routed experts only (a shared expert is never scored).
  at::Tensor expertMass(const at::Tensor& packedHidden) const;
  /// Per-expert output norm [N, E] of a packed hidden [N, d_ff]:
  /// ||W2_e h_e||_2, the L2 norm of routed expert e's contribution to the FFN
  /// output (b2 left out), the target of the dynamic-k router
  /// (Dense-to-Dynamic-k MoE, docs/moe.md). Routed experts only.
  at::Tensor expertOutputNorm(const at::Tensor& packedHidden) const;
  /// Dense weights in the original neuron order (views of fresh tensors).
  FfnWeights unpack() const;
};

}  // namespace moefy
