#pragma once
// Architectures are data: each one is a table mapping tensor roles to Hugging
// Face tensor-name patterns ("{L}" stands for the layer index), plus the
// config adapter in config.cpp. See docs/adding-an-architecture.md.
#include <optional>
#include <string>
#include <vector>

#include "analysis/model/config.h"

namespace moefy {

// Roles grouped on lines by kind.
// clang-format off
enum class Role {
  // global
  TokEmbd, PosEmbd, TypeEmbd, EmbNorm, EmbNormB, ProjIn, ProjOut, OutNorm, OutNormB,
  LmHead, LmHeadB, HeadDense, HeadDenseB, HeadNorm, HeadNormB,
  // per layer
  AttnNorm, AttnNormB, AttnQKV, AttnQKVB, AttnQ, AttnQB, AttnK, AttnKB, AttnV, AttnVB,
  AttnOut, AttnOutB, FfnNorm, FfnNormB, FfnUp, FfnUpB, FfnGate, FfnDown, FfnDownB,
  // per layer, newer families
  AttnPostNorm,  ///< norm of the attention output before the residual add (Gemma2/3, OLMo 2)
  FfnPostNorm,   ///< norm of the FFN output before the residual add (Gemma2/3, OLMo 2)
  AttnQNorm, AttnKNorm,  ///< q/k RMSNorm before RoPE (Qwen3, Gemma3: [head_dim]; OLMo 2: [heads * head_dim])
  // encoder-decoder models (T5)
  RelBias,  ///< relative_attention_bias [num_buckets, heads], global per stack (held by block 0)
  CrossNorm, CrossQ, CrossK, CrossV, CrossOut,  ///< the decoder's cross-attention over the encoder output
  // native MoE blocks (Mixtral, Qwen2-MoE, OLMoE); the Exp* rows repeat per expert ({E})
  MoeRouter,                ///< router [E, d_model] (Mixtral block_sparse_moe.gate, Qwen2-MoE / OLMoE mlp.gate)
  ExpGate, ExpUp, ExpDown,  ///< expert E: gate / up [d_expert, d_model], down [d_model, d_expert] (Mixtral w1 / w3 / w2)
  SharedGate, SharedUp, SharedDown,  ///< the shared expert (Qwen2-MoE): [d_shared, d_model] x2, [d_model, d_shared]
  SharedRouter,             ///< shared_expert_gate [1, d_model]: sigmoid(w . x) scales the shared expert's output
};
// clang-format on

struct TensorRow {
  Role role;
  const char* pattern;  ///< e.g. "h.{L}.mlp.c_fc.weight"
  bool perLayer;
  bool conv1d;          ///< stored [in, out] (GPT-2 Conv1D), the transpose of nn.Linear
  /// The stack the row belongs to: Single for single-stack models; Encoder or
  /// Decoder for encoder-decoder models, whose roles repeat once per stack
  /// ({L} then runs over that stack's blocks).
  SiteStack stack = SiteStack::Single;
  /// The row repeats per routed expert of a native MoE layer ({E} = expert
  /// index, 0 .. expertCount - 1).
  bool perExpert = false;
};

/// Another name that real checkpoints may store for the tensor of a global
/// role (T5's encoder.embed_tokens / decoder.embed_tokens, which are
/// shared.weight). The loader accepts it in place of the role's own name, or
/// next to it when the two hold the same values, and refuses it otherwise.
struct AliasRow {
  Role role;
  const char* pattern;
};

/// A stored tensor that holds several roles concatenated along dim 0 (Phi-3's
/// qkv_proj = [q; k; v] and gate_up_proj = [gate; up]). The loader splits it
/// into the parts' own row names (views, no copy), so hooks, MoE conversion
/// and the rest of the engine see ordinary roles; Model::save fuses them back.
struct FusedRow {
  const char* pattern;      ///< e.g. "model.layers.{L}.mlp.gate_up_proj.weight"
  std::vector<Role> parts;  ///< in storage order; sizes from expectedShape()
};

struct ArchTable {
  Arch arch;
  /// Prefixes tried in order when resolving names ("transformer." for
  /// GPT2LMHeadModel, "" for GPT2Model; "bert." for BertForMaskedLM, ...).
  std::vector<std::string> prefixes;
  /// Roles that never take the prefix (heads outside the base model).
  std::vector<TensorRow> rows;
  /// Name patterns that may be present and are ignored (buffers, poolers).
  std::vector<std::string> ignorable;
  std::vector<FusedRow> fused = {};
  std::vector<AliasRow> aliases = {};
};

const ArchTable& archTable(Arch arch);
/// The table of a parsed config: the same as archTable(config.arch) except
/// where the rows depend on the config (T5's FFN is wi/wo, or wi_0/wi_1/wo
/// when gated).
const ArchTable& archTable(const ModelConfig& config);
/// How many times a row is expanded: 1 for global rows, else the block count
/// of the row's stack.
int rowLayerCount(const TensorRow& row, const ModelConfig& config);
/// True if role belongs to the head outside the base model (lm_head, cls.*).
bool roleIsHead(Role role);
const char* roleName(Role role);
/// Whether `role` must be present for `cfg`, and its logical shape in
/// nn.Linear orientation ([out, in]); nullopt if the role is unused.
std::optional<std::vector<int64_t>> expectedShape(Role role, const ModelConfig& cfg);
/// Pattern with {L} replaced (and {E} by `expert` when given).
std::string expandPattern(const std::string& pattern, int layer, int expert = -1);
/// Whether a per-layer role has a tensor in block `layer`: native MoE models
/// mix blocks (Qwen2-MoE's mlp_only_layers / decoder_sparse_step), whose dense
/// MLP rows (FfnUp, FfnGate, FfnDown, ...) exist only in dense blocks and whose
/// MoE rows (MoeRouter, Exp*, Shared*) only in MoE blocks. True for every
/// other role.
bool roleInLayer(Role role, const ModelConfig& cfg, int layer);

}  // namespace moefy
